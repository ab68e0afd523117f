"""SRTP/SRTCP per-leg contexts against real libsrtp (RFC 3711)."""

import struct

import pylibsrtp
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mixer.rtp.srtp import (
    MASTER_KEY_LENGTHS,
    SRTP_PROFILES,
    SrtpContext,
    SrtpError,
    generate_master_key,
)

SUITES = sorted(SRTP_PROFILES)
AES_CM_80 = "AES_CM_128_HMAC_SHA1_80"
AES_CM_32 = "AES_CM_128_HMAC_SHA1_32"


def rtp_packet(seq: int, ssrc: int = 0x1234_5678, payload: bytes = b"\x55" * 160) -> bytes:
    """RFC 3550 section 5.1 header, PT 0 (PCMU)."""
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, ssrc) + payload


def rtcp_packet(ssrc: int = 0x1234_5678) -> bytes:
    """A receiver report without blocks (RFC 3550 section 6.4.2)."""
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


def leg_pair(suite: str, **options) -> tuple[SrtpContext, SrtpContext]:
    """Our context and the peer's: the same two keys, swapped."""
    ours, theirs = generate_master_key(suite), generate_master_key(suite)
    return (
        SrtpContext(suite, ours, theirs, **options),
        SrtpContext(suite, theirs, ours, **options),
    )


@pytest.fixture(autouse=True, scope="module", params=["direct", "pylibsrtp"])
def per_packet_path(request):
    """Every test runs on both per-packet paths: direct libsrtp calls and pylibsrtp's methods."""
    import mixer.rtp.srtp as module

    original = module._calls
    if request.param == "pylibsrtp":
        module._calls = module._SessionMethods
    yield request.param
    module._calls = original


def nonzero(stats: dict) -> dict:
    return {name: value for name, value in stats.items() if value}


# ---------------------------------------------------------------- suites and keys

def test_required_suites_present():
    assert {AES_CM_80, AES_CM_32, "AEAD_AES_128_GCM"} <= set(SRTP_PROFILES)
    assert MASTER_KEY_LENGTHS[AES_CM_80] == MASTER_KEY_LENGTHS[AES_CM_32] == 30
    assert set(MASTER_KEY_LENGTHS) == set(SRTP_PROFILES)


@pytest.mark.parametrize("suite", SUITES)
def test_key_lengths_agree_with_libsrtp(suite):
    profile = SRTP_PROFILES[suite]
    lib = pylibsrtp.lib
    expected = lib.srtp_profile_get_master_key_length(
        profile
    ) + lib.srtp_profile_get_master_salt_length(profile)
    assert MASTER_KEY_LENGTHS[suite] == expected


@pytest.mark.parametrize("suite", SUITES)
def test_generate_master_key(suite):
    keys = {generate_master_key(suite) for _ in range(8)}
    assert len(keys) == 8
    assert all(len(key) == MASTER_KEY_LENGTHS[suite] for key in keys)


def test_unknown_suite():
    with pytest.raises(SrtpError):
        generate_master_key("F8_128_HMAC_SHA1_80")
    with pytest.raises(SrtpError):
        SrtpContext("NULL", bytes(30), bytes(30))


@pytest.mark.parametrize("length", [0, 29, 31, 46])
def test_key_of_wrong_length(length):
    good = bytes(30)
    with pytest.raises(SrtpError, match="30-byte"):
        SrtpContext(AES_CM_80, bytes(length), good)
    with pytest.raises(SrtpError, match="30-byte"):
        SrtpContext(AES_CM_80, good, bytes(length))


def test_key_must_be_bytes():
    with pytest.raises(SrtpError):
        SrtpContext(AES_CM_80, "0" * 30, bytes(30))


@pytest.mark.parametrize("window", [0, 63, 32768])
def test_replay_window_out_of_range(window):
    with pytest.raises(SrtpError, match="replay window"):
        SrtpContext(AES_CM_80, bytes(30), bytes(30), replay_window=window)


# ---------------------------------------------------------------- known answer

# libsrtp's own srtp_validate() vectors: AES_CM_128_HMAC_SHA1_80, SSRC 0xcafebabe.
KAT_KEY = bytes.fromhex("e1f97a0d3e018be0d64fa32c06de41390ec675ad498afeebb6960b3aabe6")
KAT_RTP = bytes.fromhex("800f1234decafbadcafebabe") + b"\xab" * 16
KAT_SRTP = bytes.fromhex(
    "800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb"
)
KAT_RTCP = bytes.fromhex("81c8000bcafebabe") + b"\xab" * 16
KAT_SRTCP = bytes.fromhex(
    "81c8000bcafebabe7128035be487b9bdbef89041f977a5a880000001993e08cd54d6c1230798"
)


def test_known_answer_aes_cm_80():
    ctx = SrtpContext(AES_CM_80, KAT_KEY, KAT_KEY)
    assert ctx.protect(KAT_RTP) == KAT_SRTP
    assert ctx.protect_rtcp(KAT_RTCP) == KAT_SRTCP
    assert ctx.unprotect(KAT_SRTP) == KAT_RTP
    assert ctx.unprotect_rtcp(KAT_SRTCP) == KAT_RTCP


def test_known_answer_aes_cm_32_truncates_rtp_tag_only():
    ctx = SrtpContext(AES_CM_32, KAT_KEY, KAT_KEY)
    assert ctx.protect(KAT_RTP) == KAT_SRTP[:-6]  # 32-bit tag instead of 80
    assert ctx.protect_rtcp(KAT_RTCP) == KAT_SRTCP  # SRTCP keeps the 80-bit tag


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("suite", SUITES)
def test_rtp_round_trip_between_peers(suite):
    ours, theirs = leg_pair(suite)
    for seq in range(1, 51):
        packet = rtp_packet(seq, payload=bytes([seq]) * 160)
        protected = ours.protect(packet)
        assert protected != packet
        assert protected[:12] == packet[:12]  # header stays in clear (RFC 3711 section 3.1)
        assert theirs.unprotect(protected) == packet
    assert nonzero(ours.stats()) == {"protected": 50}
    assert nonzero(theirs.stats()) == {"unprotected": 50}


@pytest.mark.parametrize("suite", SUITES)
def test_rtcp_round_trip_between_peers(suite):
    ours, theirs = leg_pair(suite)
    for _ in range(5):
        assert theirs.unprotect_rtcp(ours.protect_rtcp(rtcp_packet())) == rtcp_packet()
    assert ours.unprotect_rtcp(theirs.protect_rtcp(rtcp_packet(7))) == rtcp_packet(7)
    assert ours.stats()["rtcp_protected"] == 5
    assert theirs.stats()["rtcp_unprotected"] == 5
    assert ours.stats()["rtcp_unprotected"] == 1


@pytest.mark.parametrize("suite", SUITES)
def test_both_directions_are_independent(suite):
    ours, theirs = leg_pair(suite)
    # Same SSRC and sequence in both directions: separate sessions keep them apart.
    assert theirs.unprotect(ours.protect(rtp_packet(1))) == rtp_packet(1)
    assert ours.unprotect(theirs.protect(rtp_packet(1))) == rtp_packet(1)
    # Our own packet reflected back does not authenticate with the peer's key.
    assert ours.unprotect(ours.protect(rtp_packet(2))) is None
    assert ours.stats()["auth_failures"] == 1


def test_several_inbound_ssrcs():
    ours, theirs = leg_pair(AES_CM_80)
    for ssrc in (1, 2, 0xFFFFFFFF):
        for seq in (10, 11):
            packet = rtp_packet(seq, ssrc=ssrc)
            assert theirs.unprotect(ours.protect(packet)) == packet
    assert theirs.stats()["unprotected"] == 6


def test_accepts_bytearray_and_memoryview():
    ours, theirs = leg_pair(AES_CM_80)
    protected = ours.protect(bytearray(rtp_packet(1)))
    assert theirs.unprotect(memoryview(protected)) == rtp_packet(1)
    srtcp = ours.protect_rtcp(memoryview(rtcp_packet()))
    assert theirs.unprotect_rtcp(bytearray(srtcp)) == rtcp_packet()


# ---------------------------------------------------------------- authentication failures

@pytest.mark.parametrize("suite", SUITES)
def test_tampered_rtp_is_dropped_and_counted(suite):
    ours, theirs = leg_pair(suite)
    protected = ours.protect(rtp_packet(1))
    for index in (2, 8, 12, len(protected) // 2, len(protected) - 1):
        tampered = bytearray(protected)
        tampered[index] ^= 0x01
        assert theirs.unprotect(bytes(tampered)) is None
    assert nonzero(theirs.stats()) == {"auth_failures": 5}
    # A forgery does not burn the genuine packet's index.
    assert theirs.unprotect(protected) == rtp_packet(1)


@pytest.mark.parametrize("suite", SUITES)
def test_tampered_rtcp_is_dropped_and_counted(suite):
    ours, theirs = leg_pair(suite)
    protected = ours.protect_rtcp(rtcp_packet())
    tampered = bytearray(protected)
    tampered[9] ^= 0x80
    assert theirs.unprotect_rtcp(bytes(tampered)) is None
    assert nonzero(theirs.stats()) == {"rtcp_auth_failures": 1}
    assert theirs.unprotect_rtcp(protected) == rtcp_packet()


@pytest.mark.parametrize("suite", SUITES)
def test_wrong_key_fails_authentication(suite):
    ours, _ = leg_pair(suite)
    stranger, _ = leg_pair(suite)
    assert stranger.unprotect(ours.protect(rtp_packet(1))) is None
    assert stranger.unprotect_rtcp(ours.protect_rtcp(rtcp_packet())) is None
    assert nonzero(stranger.stats()) == {"auth_failures": 1, "rtcp_auth_failures": 1}


def test_truncated_tag_fails_authentication():
    ours, theirs = leg_pair(AES_CM_80)
    assert theirs.unprotect(ours.protect(rtp_packet(1))[:-1]) is None
    assert theirs.stats()["auth_failures"] == 1


# ---------------------------------------------------------------- replay protection

@pytest.mark.parametrize("suite", SUITES)
def test_replayed_rtp_is_dropped_and_counted(suite):
    ours, theirs = leg_pair(suite)
    protected = ours.protect(rtp_packet(1))
    assert theirs.unprotect(protected) is not None
    assert theirs.unprotect(protected) is None
    assert theirs.unprotect(protected) is None
    assert nonzero(theirs.stats()) == {"unprotected": 1, "replays": 2}


@pytest.mark.parametrize("suite", SUITES)
def test_replayed_rtcp_is_dropped_and_counted(suite):
    ours, theirs = leg_pair(suite)
    protected = ours.protect_rtcp(rtcp_packet())
    assert theirs.unprotect_rtcp(protected) == rtcp_packet()
    assert theirs.unprotect_rtcp(protected) is None
    assert nonzero(theirs.stats()) == {"rtcp_unprotected": 1, "rtcp_replays": 1}


def test_reordering_inside_the_window_is_accepted():
    ours, theirs = leg_pair(AES_CM_80)
    packets = {seq: ours.protect(rtp_packet(seq)) for seq in range(1, 11)}
    for seq in (1, 5, 3, 2, 10, 4, 9, 6, 8, 7):
        assert theirs.unprotect(packets[seq]) == rtp_packet(seq)


@pytest.mark.parametrize("window, accepted", [(64, False), (128, True), (1024, True)])
def test_replay_window_size(window, accepted):
    ours, theirs = leg_pair(AES_CM_80, replay_window=window)
    packets = {seq: ours.protect(rtp_packet(seq)) for seq in (100, 150, 200)}
    assert theirs.unprotect(packets[200]) is not None
    assert theirs.unprotect(packets[150]) is not None  # 50 behind: inside every window
    assert (theirs.unprotect(packets[100]) is not None) is accepted  # 100 behind
    assert theirs.stats()["replays"] == (0 if accepted else 1)


def test_packet_older_than_the_window_counts_as_replay():
    ours, theirs = leg_pair(AES_CM_80)
    old = ours.protect(rtp_packet(1))
    for seq in range(2, 300):
        theirs.unprotect(ours.protect(rtp_packet(seq)))
    assert theirs.unprotect(old) is None
    assert nonzero(theirs.stats()) == {"unprotected": 298, "replays": 1}


def test_protecting_the_same_sequence_twice():
    ours, _ = leg_pair(AES_CM_80)
    ours.protect(rtp_packet(1))
    with pytest.raises(SrtpError, match="replay"):
        ours.protect(rtp_packet(1))
    assert ours.stats()["protect_errors"] == 1

    resender, peer = leg_pair(AES_CM_80, allow_repeat_tx=True)
    first = resender.protect(rtp_packet(1))
    assert resender.protect(rtp_packet(1)) == first
    assert peer.unprotect(first) == rtp_packet(1)


# ---------------------------------------------------------------- garbage in

GARBAGE = [
    b"",
    b"\x80",
    b"\x80\x00",
    bytes(11),
    b"\x80" * 11,
    bytes(12),  # version 0
    b"\x40" + bytes(30),  # version 1
    b"\x80\x00" + bytes(10),  # bare RTP header, no tag
    b"\x80\x00" + bytes(20),
    b"\x90\x00" + bytes(10) + b"\xbe\xde\xff\xff" + bytes(10),  # extension longer than packet
    b"\x8f\x00" + bytes(20),  # 15 CSRCs announced, not present
    b"\xff" * 100,
    b"\x80\x00" + bytes(2000),  # longer than pylibsrtp's 1500-byte buffer
]


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("data", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_is_dropped_never_raises(suite, data):
    _, theirs = leg_pair(suite)
    assert theirs.unprotect(data) is None
    assert theirs.unprotect_rtcp(data) is None
    stats = theirs.stats()
    assert stats["unprotected"] == stats["rtcp_unprotected"] == 0
    assert stats["malformed"] + stats["auth_failures"] + stats["replays"] == 1
    assert stats["rtcp_malformed"] + stats["rtcp_auth_failures"] + stats["rtcp_replays"] == 1


def test_short_input_counts_as_malformed():
    _, theirs = leg_pair(AES_CM_80)
    for data in (b"", b"\x80\x00", bytes(12)):
        assert theirs.unprotect(data) is None
        assert theirs.unprotect_rtcp(data) is None
    assert nonzero(theirs.stats()) == {"malformed": 3, "rtcp_malformed": 3}


def test_non_bytes_input_is_dropped():
    _, theirs = leg_pair(AES_CM_80)
    assert theirs.unprotect(None) is None
    assert theirs.unprotect_rtcp(12) is None
    assert nonzero(theirs.stats()) == {"malformed": 1, "rtcp_malformed": 1}


@pytest.mark.parametrize(
    "data", [b"", bytes(11), b"\x00" * 20, b"\x40" + bytes(20), b"\x80" * 1400, "text"]
)
def test_protect_rejects_malformed_rtp(data):
    ours, _ = leg_pair(AES_CM_80)
    with pytest.raises(SrtpError):
        ours.protect(data)
    assert ours.stats()["protect_errors"] == 1


@pytest.mark.parametrize("data", [b"", bytes(7), b"\x00" * 8, b"\x80" * 1400, None])
def test_protect_rtcp_rejects_malformed_rtcp(data):
    ours, _ = leg_pair(AES_CM_80)
    with pytest.raises(SrtpError):
        ours.protect_rtcp(data)
    assert ours.stats()["rtcp_protect_errors"] == 1


def test_largest_protectable_packets():
    ours, theirs = leg_pair(AES_CM_80)
    big = rtp_packet(1, payload=bytes(1356 - 12))
    assert theirs.unprotect(ours.protect(big)) == big
    with pytest.raises(SrtpError):
        ours.protect(rtp_packet(2, payload=bytes(1357 - 12)))


def test_stats_is_a_plain_dict_of_counters():
    ours, _ = leg_pair(AES_CM_80)
    stats = ours.stats()
    assert type(stats) is dict
    assert {
        "protected",
        "unprotected",
        "auth_failures",
        "replays",
        "malformed",
        "rtcp_protected",
        "rtcp_unprotected",
        "rtcp_auth_failures",
    } <= set(stats)
    assert all(type(value) is int for value in stats.values())


# ---------------------------------------------------------------- properties

@pytest.fixture(scope="module")
def receivers():
    """One receiving context per suite, shared by the fuzz tests.

    Dropped at module teardown: pylibsrtp's session finalizer needs its module
    alive, and sessions still referenced at interpreter exit print warnings.
    """
    contexts = {suite: leg_pair(suite)[1] for suite in SUITES}
    yield contexts
    contexts.clear()


@given(suite=st.sampled_from(SUITES), data=st.binary(max_size=1600))
@example(suite=AES_CM_80, data=b"\x80\x00" + bytes(40))
@settings(max_examples=300)
def test_unprotect_arbitrary_bytes_never_raises(receivers, suite, data):
    theirs = receivers[suite]
    assert theirs.unprotect(data) is None
    assert theirs.unprotect_rtcp(data) is None


@given(
    suite=st.sampled_from(SUITES),
    first=st.integers(0x80, 0xBF),
    second=st.integers(0, 255),
    rest=st.binary(max_size=300),
)
@settings(max_examples=300)
def test_unprotect_version_2_garbage_never_raises(receivers, suite, first, second, rest):
    theirs = receivers[suite]
    data = bytes((first, second)) + rest
    assert theirs.unprotect(data) is None
    assert theirs.unprotect_rtcp(data) is None


@given(suite=st.sampled_from(SUITES), payload=st.binary(max_size=1200), data=st.data())
@settings(max_examples=100)
def test_any_single_bit_flip_is_rejected(suite, payload, data):
    ours, theirs = leg_pair(suite)
    packet = rtp_packet(7, payload=payload)
    protected = bytearray(ours.protect(packet))
    index = data.draw(st.integers(0, len(protected) - 1))
    protected[index] ^= 1 << data.draw(st.integers(0, 7))
    assert theirs.unprotect(bytes(protected)) is None
    stats = theirs.stats()
    assert stats["unprotected"] == 0
    assert stats["auth_failures"] + stats["malformed"] == 1
