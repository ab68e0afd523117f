"""An SDP that describes a one-way RTP stream for whoever receives it (a media fork).

No offer/answer happens with a fork's destination: the engine sends to an address given by API.
What the receiver needs is what an RTSP DESCRIBE or ffmpeg's RTP muxer writes: where the stream
goes (`c=` and `m=`: the destination, so `ffmpeg -i stream.sdp` listens on that port), its
payload type and codec (`a=rtpmap`, RFC 4566 6; Opus as opus/48000/2, RFC 7587 7), its packet
time, that the receiver only receives (`a=recvonly`, RFC 3264 5.1), where the sender's RTCP goes
(`a=rtcp`, RFC 3605), and with SRTP the sender's key (`a=crypto`, RFC 4568 9.1; `RTP/SAVP`).
"""
from __future__ import annotations

import ipaddress
import secrets

from mixer.sdp.crypto import CryptoAttribute, format_crypto
from mixer.sdp.offer_answer import OPUS_FMTP, SUPPORTED_CODECS
from mixer.sdp.session import (
    Connection, MediaDescription, Origin, RtcpAttribute, SessionDescription, Timing,
)

# Payload types of a described stream: RFC 3551's static ones for G.711, a dynamic one for Opus.
STREAM_PAYLOAD_TYPES = {"opus": 111, "PCMU": 0, "PCMA": 8}


def _addrtype(address: str) -> str:
    return "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"


def describe_stream(*, origin_ip: str, destination: tuple[str, int], codec: str,
                    ptime_ms: int = 20, crypto: CryptoAttribute | None = None,
                    name: str = "voicemix stream") -> str:
    """The SDP of an RTP (or, with `crypto`, SRTP) stream of `codec` sent from `origin_ip` to
    `destination` (an IP literal and a port)."""
    host, port = destination
    if codec not in SUPPORTED_CODECS:
        raise ValueError(f"unsupported codec {codec!r}")
    payload_type = STREAM_PAYLOAD_TYPES[codec]
    encoding, clock, channels = SUPPORTED_CODECS[codec]
    session = SessionDescription(
        origin=Origin(username="-", session_id=secrets.randbelow(1 << 62), session_version=1,
                      addrtype=_addrtype(origin_ip), address=origin_ip),
        name=name,
        connection=Connection(addrtype=_addrtype(host), address=host),
        timing=[Timing()],
    )
    media = MediaDescription(media="audio", port=port,
                             proto="RTP/SAVP" if crypto is not None else "RTP/AVP",
                             formats=[payload_type])
    media.add_attribute("rtpmap", f"{payload_type} {encoding}/{clock}" + (f"/{channels}" if channels > 1 else ""))
    if codec == "opus":
        media.add_attribute("fmtp", f"{payload_type} {OPUS_FMTP}")
    media.add_attribute("ptime", str(ptime_ms))
    media.add_attribute("recvonly")
    media.add_attribute("rtcp", RtcpAttribute(port=port + 1).serialize())
    if crypto is not None:
        media.add_attribute("crypto", format_crypto(crypto))
    session.media.append(media)
    return session.serialize()
