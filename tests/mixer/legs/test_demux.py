"""RFC 7983 section 7: the first byte says what a datagram on a WebRTC leg's port is."""
from __future__ import annotations

from hypothesis import given, strategies as st

from mixer.legs import demux


def test_ranges_of_rfc_7983() -> None:
    expected = {0: demux.STUN, 3: demux.STUN, 4: demux.UNKNOWN, 16: demux.ZRTP, 19: demux.ZRTP,
                20: demux.DTLS, 22: demux.DTLS, 63: demux.DTLS, 64: demux.TURN_CHANNEL,
                79: demux.TURN_CHANNEL, 80: demux.UNKNOWN, 127: demux.UNKNOWN, 128: demux.RTP,
                144: demux.RTP, 191: demux.RTP, 192: demux.UNKNOWN, 255: demux.UNKNOWN}
    for first, kind in expected.items():
        assert demux.classify(bytes([first, 0])) == kind, first
    assert demux.classify(b"") == demux.UNKNOWN


@given(st.binary(max_size=64))
def test_every_datagram_has_exactly_one_kind(data: bytes) -> None:
    assert demux.classify(data) in range(len(demux.KIND_NAMES))
