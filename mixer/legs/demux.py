"""One port, several protocols: what a datagram is, by its first byte (RFC 7983 section 7).

A WebRTC leg receives STUN (ICE checks), DTLS (the key exchange) and SRTP/SRTCP on one UDP port.
RFC 7983 (updating RFC 5764 section 5.1.2) assigns disjoint ranges of the first byte:

    0..3     STUN           (RFC 8489: the two top bits of a message are zero, method bits small)
    16..19   ZRTP           (RFC 6189; not spoken here)
    20..63   DTLS           (record content types 20..63: change_cipher_spec, alert, handshake, ...)
    64..79   TURN channel   (RFC 8656 ChannelData; only on a TURN client's own socket)
    128..191 RTP / RTCP     (version 2; RTCP told from RTP by the packet type, RFC 5761 section 4)

Anything else is dropped and counted. The table is built once; the hot path is one tuple index.
"""
from __future__ import annotations

STUN = 0
DTLS = 1
RTP = 2          # RTP or RTCP: RFC 5761 tells them apart
ZRTP = 3
TURN_CHANNEL = 4
UNKNOWN = 5

KIND_NAMES = ("stun", "dtls", "rtp", "zrtp", "turn_channel", "unknown")


def _kind(first: int) -> int:
    if first <= 3:
        return STUN
    if 16 <= first <= 19:
        return ZRTP
    if 20 <= first <= 63:
        return DTLS
    if 64 <= first <= 79:
        return TURN_CHANNEL
    if 128 <= first <= 191:
        return RTP
    return UNKNOWN


#: the kind of a datagram by its first byte (RFC 7983 section 7)
KIND_BY_FIRST_BYTE: tuple[int, ...] = tuple(_kind(first) for first in range(256))


def classify(data: bytes) -> int:
    """The RFC 7983 kind of one datagram (UNKNOWN for an empty one)."""
    return KIND_BY_FIRST_BYTE[data[0]] if data else UNKNOWN
