"""RFC 3264 offer/answer for one audio leg of the media engine.

The engine answers; simulated clients and tests offer. An answer either
accepts the first usable `m=audio` line with exactly one codec (plus
telephone-event) or fails with `SdpNotAcceptable` (SIP's 488 Not Acceptable
Here), whose `code` says why. Every other m-line is answered with port 0
(RFC 3264 section 6), so the answer always has as many m-lines as the offer.

Transports:
- `RTP/AVP`, `RTP/AVPF`: plain RTP; if the offer still carries a usable
  `a=crypto` (Opportunistic SRTP, RFC 8643; ffmpeg's `srtp://`
  output does this too) the answer adds our key and the leg uses SRTP.
- `RTP/SAVP`, `RTP/SAVPF`: SDES-keyed SRTP (RFC 4568); a usable crypto line is required.
- anything else (notably WebRTC's DTLS-SRTP `UDP/TLS/RTP/SAVPF`) is not supported.
"""

from __future__ import annotations

import copy
import ipaddress
import secrets
from dataclasses import dataclass, field

from mixer.sdp.crypto import (
    SUPPORTED_SUITES,
    CryptoAttribute,
    format_crypto,
    generate_crypto,
    parse_crypto,
)
from mixer.sdp.session import (
    ADDRTYPE_IP4,
    ADDRTYPE_IP6,
    DIRECTION_INACTIVE,
    DIRECTION_RECVONLY,
    DIRECTION_SENDONLY,
    DIRECTION_SENDRECV,
    Connection,
    Extmap,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    Timing,
    parse,
)

CODEC_OPUS = "opus"
CODEC_PCMU = "PCMU"
CODEC_PCMA = "PCMA"
# (encoding name, clock rate, channels) as written in a=rtpmap.
# RFC 7587 section 7: Opus is always signalled as opus/48000/2.
# RFC 3551 section 4.5.14: G.711 mu-law / A-law at 8000 Hz, one channel.
SUPPORTED_CODECS: dict[str, tuple[str, int, int]] = {
    CODEC_OPUS: ("opus", 48000, 2),
    CODEC_PCMU: ("PCMU", 8000, 1),
    CODEC_PCMA: ("PCMA", 8000, 1),
}
DEFAULT_CODECS = (CODEC_OPUS, CODEC_PCMU, CODEC_PCMA)
# RFC 7587 section 6.1: our Opus receive parameters (10 ms frames allowed, in-band FEC wanted).
OPUS_FMTP = "minptime=10;useinbandfec=1"
# RFC 4733 section 7.1.1: the media subtype; section 2.4.1: the fmtp event list,
# here the DTMF digits 0-15 (RFC 4734).
TELEPHONE_EVENT = "telephone-event"
TELEPHONE_EVENT_FMTP = "0-15"
# RFC 4566 section 6 a=ptime: the engine packetizes 20 ms frames.
DEFAULT_PTIME_MS = 20
# RFC 6464 section 4: client-to-mixer audio level header extension.
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
# RFC 8285 section 4.2: IDs usable with the one-byte header form our RTP layer writes.
ONE_BYTE_EXTMAP_IDS = range(1, 15)
# RFC 3264 section 6.1: how the answerer mirrors the offered direction.
ANSWER_DIRECTION = {
    DIRECTION_SENDRECV: DIRECTION_SENDRECV,
    DIRECTION_SENDONLY: DIRECTION_RECVONLY,
    DIRECTION_RECVONLY: DIRECTION_SENDONLY,
    DIRECTION_INACTIVE: DIRECTION_INACTIVE,
}
# RFC 3551 (AVP), RFC 4585 (AVPF), RFC 3711 (SAVP), RFC 5124 (SAVPF).
PLAIN_RTP_PROTOS = ("RTP/AVP", "RTP/AVPF")
SDES_RTP_PROTOS = ("RTP/SAVP", "RTP/SAVPF")
# RFC 4568 section 6.3: WSH (window size hint) is advisory, and KDR=0 is the
# default key derivation rate; any other session parameter changes SRTP
# processing we do not implement, so that crypto line is not usable.
HARMLESS_SESSION_PARAM_PREFIXES = ("WSH=", "KDR=0")
# Payload types used by offer_audio. 111 is the common Opus choice (browsers);
# 101 is the SIP world's usual telephone-event/8000 and 110 Chrome's
# telephone-event/48000, so our offers look like what each kind of peer expects.
OFFER_PT_OPUS = 111
OFFER_PT_PCMU = 0  # RFC 3551 static
OFFER_PT_PCMA = 8  # RFC 3551 static
OFFER_PT_TELEPHONE_EVENT_48K = 110
OFFER_PT_TELEPHONE_EVENT_8K = 101
_OFFER_PTS = {CODEC_OPUS: OFFER_PT_OPUS, CODEC_PCMU: OFFER_PT_PCMU, CODEC_PCMA: OFFER_PT_PCMA}
# RFC 3264 section 5: o= numbers fit a signed 64-bit integer and the initial
# version is below 2^62-1; ids are drawn below 2^62 as well.
SESSION_ID_LIMIT = 2**62


class SdpNotAcceptable(SdpError):
    """A well-formed offer this engine cannot accept (SIP 488 Not Acceptable Here).

    `code` is a stable machine code for the API's error body: `no_audio`,
    `audio_disabled`, `unsupported_transport`, `no_common_codec`,
    `no_supported_crypto`, `srtp_required`, `bad_address`.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class AudioAnswer:
    """What the engine agreed to for one audio leg, and the answer SDP that says so."""

    sdp: str = field(repr=False)  # carries our SRTP key; keep it out of logs
    description: SessionDescription = field(repr=False)
    codec: str
    payload_type: int
    clock_rate: int
    channels: int
    fmtp: dict[str, str]  # the offer's fmtp for payload_type (e.g. useinbandfec)
    telephone_event_pt: int | None
    remote_rtp: tuple[str, int]
    remote_rtcp: tuple[str, int]
    rtcp_mux: bool
    ptime_ms: int  # the offer's a=ptime, or 20
    direction: str  # OUR direction, as written in the answer
    audio_level_ext_id: int | None
    local_crypto: CryptoAttribute | None
    remote_crypto: CryptoAttribute | None


def _canonical_codecs(codecs: tuple[str, ...] | list[str]) -> list[str]:
    if isinstance(codecs, str):
        raise ValueError("codecs must be a sequence of codec names, not a string")
    by_lower = {name.lower(): name for name in SUPPORTED_CODECS}
    result = []
    for name in codecs:
        canonical = by_lower.get(str(name).lower())
        if canonical is None:
            raise ValueError(f"unsupported codec {name!r}; choose from {tuple(SUPPORTED_CODECS)}")
        if canonical not in result:
            result.append(canonical)
    if not result:
        raise ValueError("codecs must name at least one codec")
    return result


def _local_addrtype(local_ip: str) -> str:
    try:
        address = ipaddress.ip_address(local_ip)
    except ValueError:
        raise ValueError(f"local_ip must be an IP address literal, got {local_ip!r}") from None
    return ADDRTYPE_IP4 if address.version == 4 else ADDRTYPE_IP6


def _check_local_port(local_port: int) -> None:
    if not isinstance(local_port, int) or not 0 < local_port <= 65535:
        raise ValueError(f"local_port must be 1..65535, got {local_port!r}")


def _new_session(local_ip: str, session_id: int | None, timing: list[Timing]) -> SessionDescription:
    addrtype = _local_addrtype(local_ip)
    if session_id is None:
        session_id = secrets.randbelow(SESSION_ID_LIMIT)
    elif not 0 <= session_id < SESSION_ID_LIMIT:
        raise ValueError(f"session_id must be 0..2^62-1, got {session_id}")
    return SessionDescription(
        origin=Origin(username="-", session_id=session_id, session_version=1,
                      addrtype=addrtype, address=local_ip),
        name="-",
        connection=Connection(addrtype=addrtype, address=local_ip),
        timing=timing,
    )


def _match_codec(rtpmap: tuple[str, int, int], enabled: list[str]) -> str | None:
    encoding, clock, channels = rtpmap
    for name in enabled:
        want_encoding, want_clock, want_channels = SUPPORTED_CODECS[name]
        if encoding.lower() != want_encoding.lower() or clock != want_clock:
            continue
        # RFC 7587 requires /2 for Opus, but some peers omit it; the stream is the same.
        if channels == want_channels or (name == CODEC_OPUS and channels == 1):
            return name
    return None


def _safe_rtpmap(media: MediaDescription, pt: int) -> tuple[str, int, int] | None:
    try:
        return media.rtpmap(pt)
    except SdpError:  # only possible for hand-built descriptions; parse() validated rtpmaps
        return None


def _usable_crypto(media: MediaDescription) -> CryptoAttribute | None:
    """The first offered crypto line we can run (RFC 4568 section 7.1.2: offer order is preference)."""
    for value in media.attributes("crypto"):
        try:
            offered = parse_crypto(value or "")
        except SdpError:
            continue  # a suite or format we do not know: skip the line, not the offer
        if offered.suite not in SUPPORTED_SUITES:
            continue
        if any(not param.startswith(HARMLESS_SESSION_PARAM_PREFIXES) for param in offered.session_params):
            continue
        return offered
    return None


def _ip_literal(address: str, what: str) -> str:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise SdpNotAcceptable(
            "bad_address", f"{what} {address!r} is not an IP address (the engine does not resolve names)"
        ) from None
    return address


def _choose_audio(offer: SessionDescription) -> int:
    """Index of the first m=audio line the offerer has not disabled."""
    audio = [index for index, media in enumerate(offer.media) if media.media == "audio"]
    if not audio:
        raise SdpNotAcceptable("no_audio", "offer has no m=audio line")
    for index in audio:
        if offer.media[index].port != 0:
            return index
    raise SdpNotAcceptable("audio_disabled", "offer's m=audio line has port 0 (stream disabled)")


def _choose_codec(media: MediaDescription, enabled: list[str]) -> tuple[str, int]:
    """(codec, offered PT) of the first offered format we support: RFC 3264 section 6.1."""
    for fmt in media.formats:
        if not isinstance(fmt, int):
            continue
        rtpmap = _safe_rtpmap(media, fmt)
        codec = _match_codec(rtpmap, enabled) if rtpmap is not None else None
        if codec is not None:
            return codec, fmt
    offered = []
    for fmt in media.formats:
        rtpmap = _safe_rtpmap(media, fmt) if isinstance(fmt, int) else None
        offered.append(f"{fmt} {'/'.join(map(str, rtpmap))}" if rtpmap else str(fmt))
    raise SdpNotAcceptable("no_common_codec", f"no common codec: offer has {offered}, engine supports {enabled}")


def _choose_telephone_event(media: MediaDescription, clock_rate: int) -> int | None:
    """The offered RFC 4733 PT at the codec's clock rate (events share the codec's timestamps)."""
    for fmt in media.formats:
        if not isinstance(fmt, int):
            continue
        rtpmap = _safe_rtpmap(media, fmt)
        if rtpmap is not None and rtpmap[0].lower() == TELEPHONE_EVENT and rtpmap[1] == clock_rate:
            return fmt
    return None


def _remote_addresses(
    description: SessionDescription, media: MediaDescription
) -> tuple[tuple[str, int], tuple[str, int]]:
    """Where to send RTP and RTCP: c= and m= port; RTCP per rtcp-mux, a=rtcp, or port+1."""
    connection = description.connection_of(media)
    if connection is None:  # parse() guarantees one; a hand-built description may not
        raise SdpError("audio m-line has no c= line and there is no session-level c=")
    address = _ip_literal(connection.address, "remote media address")
    rtp = (address, media.port)
    if media.rtcp_mux:
        return rtp, rtp  # RFC 5761 section 5.1.1: mux is used once the answer echoes it
    rtcp_attr = media.rtcp
    if rtcp_attr is not None:  # RFC 3605
        rtcp_address = address if rtcp_attr.address is None else _ip_literal(rtcp_attr.address, "a=rtcp address")
        return rtp, (rtcp_address, rtcp_attr.port)
    if media.port >= 65535:
        raise SdpNotAcceptable("bad_address", "RTP port 65535 leaves no port for RTCP")
    return rtp, (address, media.port + 1)  # RFC 3550 section 11: RTCP on the next port up


def _audio_level_extmap(description: SessionDescription, media: MediaDescription) -> Extmap | None:
    """The offered RFC 6464 mapping, if its ID fits the one-byte header we write."""
    for extmap in media.extmaps + description.extmaps:
        if extmap.uri == AUDIO_LEVEL_URI and extmap.id in ONE_BYTE_EXTMAP_IDS:
            return extmap
    return None


def answer_audio(
    offer: SessionDescription | str,
    *,
    local_ip: str,
    local_port: int,
    codecs: tuple[str, ...] = DEFAULT_CODECS,
    session_id: int | None = None,
    srtp_required: bool = False,
    local_crypto: CryptoAttribute | None = None,
) -> AudioAnswer:
    """Answer `offer` for one audio leg at `local_ip:local_port` (RFC 3264 section 6).

    `local_crypto` (a re-offer): keep this SDES key of ours when the offer's suite is the same.

    The offerer's format order wins (RFC 3264 section 6.1): the first offered
    payload type that maps to an enabled codec is chosen, with the offer's PT
    number. Raises SdpError for malformed SDP and SdpNotAcceptable (an
    SdpError) when nothing acceptable is offered; ValueError for bad arguments.
    """
    enabled = _canonical_codecs(codecs)
    _check_local_port(local_port)
    description = parse(offer) if isinstance(offer, str) else offer
    if not isinstance(description, SessionDescription):
        raise TypeError(f"offer must be str or SessionDescription, not {type(offer).__name__}")

    index = _choose_audio(description)
    media = description.media[index]
    if media.proto not in PLAIN_RTP_PROTOS + SDES_RTP_PROTOS:
        raise SdpNotAcceptable(
            "unsupported_transport",
            f"transport {media.proto!r} is not supported (RTP/AVP, RTP/SAVP with SDES only; no DTLS-SRTP)",
        )
    remote_crypto = _usable_crypto(media)
    if media.proto in SDES_RTP_PROTOS and remote_crypto is None:
        raise SdpNotAcceptable(
            "no_supported_crypto",
            f"{media.proto} offer has no a=crypto line with a supported suite {SUPPORTED_SUITES}",
        )
    if srtp_required and remote_crypto is None:
        raise SdpNotAcceptable("srtp_required", f"SRTP is required but the {media.proto} offer has no SDES key")

    codec, payload_type = _choose_codec(media, enabled)
    _, clock_rate, channels = SUPPORTED_CODECS[codec]
    telephone_event_pt = _choose_telephone_event(media, clock_rate)
    remote_rtp, remote_rtcp = _remote_addresses(description, media)
    direction = ANSWER_DIRECTION[description.direction_of(media)]
    audio_level = _audio_level_extmap(description, media)
    if remote_crypto is None:
        local_crypto = None
    elif local_crypto is not None and local_crypto.suite == remote_crypto.suite:
        local_crypto = CryptoAttribute(tag=remote_crypto.tag, suite=local_crypto.suite,
                                       key=local_crypto.key)
    else:
        local_crypto = generate_crypto(remote_crypto.tag, remote_crypto.suite)

    accepted = MediaDescription(media="audio", port=local_port, proto=media.proto, formats=[payload_type])
    accepted.add_attribute("rtpmap", _rtpmap_value(payload_type, codec))
    if codec == CODEC_OPUS:
        accepted.add_attribute("fmtp", f"{payload_type} {OPUS_FMTP}")
    if telephone_event_pt is not None:
        accepted.formats.append(telephone_event_pt)
        accepted.add_attribute("rtpmap", f"{telephone_event_pt} {TELEPHONE_EVENT}/{clock_rate}")
        accepted.add_attribute("fmtp", f"{telephone_event_pt} {TELEPHONE_EVENT_FMTP}")
    accepted.add_attribute("ptime", str(DEFAULT_PTIME_MS))
    accepted.add_attribute(direction)
    if media.rtcp_mux:
        accepted.add_attribute("rtcp-mux")
    if audio_level is not None:
        mirrored = ANSWER_DIRECTION[audio_level.direction] if audio_level.direction else None
        accepted.add_attribute("extmap", Extmap(audio_level.id, AUDIO_LEVEL_URI, mirrored).serialize())
    if local_crypto is not None:
        accepted.add_attribute("crypto", format_crypto(local_crypto))

    # RFC 3264 section 6: as many m-lines as the offer, in order; the t= line equals the offer's;
    # a rejected stream has port 0 and keeps its media, proto and formats.
    answer = _new_session(local_ip, session_id, copy.deepcopy(description.timing) or [Timing()])
    for position, offered in enumerate(description.media):
        answer.media.append(accepted if position == index else MediaDescription(
            media=offered.media, port=0, proto=offered.proto, formats=list(offered.formats)))

    return AudioAnswer(
        sdp=answer.serialize(),
        description=answer,
        codec=codec,
        payload_type=payload_type,
        clock_rate=clock_rate,
        channels=channels,
        fmtp=media.fmtp(payload_type),
        telephone_event_pt=telephone_event_pt,
        remote_rtp=remote_rtp,
        remote_rtcp=remote_rtcp,
        rtcp_mux=media.rtcp_mux,
        ptime_ms=media.ptime or DEFAULT_PTIME_MS,
        direction=direction,
        audio_level_ext_id=audio_level.id if audio_level is not None else None,
        local_crypto=local_crypto,
        remote_crypto=remote_crypto,
    )


def _rtpmap_value(pt: int, codec: str) -> str:
    encoding, clock, channels = SUPPORTED_CODECS[codec]
    suffix = f"/{channels}" if channels != 1 else ""
    return f"{pt} {encoding}/{clock}{suffix}"


def offer_audio(
    *,
    local_ip: str,
    local_port: int,
    codecs: tuple[str, ...] = DEFAULT_CODECS,
    srtp: bool = False,
    rtcp_mux: bool = True,
    audio_level_ext_id: int | None = 1,
    session_id: int | None = None,
) -> tuple[str, CryptoAttribute | None]:
    """An audio offer as a simulated client would send it, and the SDES key it carries.

    Codecs appear in `codecs` order at PTs 111 (opus), 0 (PCMU), 8 (PCMA),
    followed by telephone-event/48000 at 110 when Opus is offered and
    telephone-event/8000 at 101 when G.711 is. With `srtp` the proto is
    `RTP/SAVP` with one AES_CM_128_HMAC_SHA1_80 key under tag 1.
    """
    enabled = _canonical_codecs(codecs)
    _check_local_port(local_port)
    if audio_level_ext_id is not None and audio_level_ext_id not in ONE_BYTE_EXTMAP_IDS:
        raise ValueError(f"audio_level_ext_id must be 1..14 (RFC 8285 one-byte form), got {audio_level_ext_id}")
    session = _new_session(local_ip, session_id, [Timing()])
    media = MediaDescription(media="audio", port=local_port,
                             proto=SDES_RTP_PROTOS[0] if srtp else PLAIN_RTP_PROTOS[0])
    for codec in enabled:
        pt = _OFFER_PTS[codec]
        media.formats.append(pt)
        media.add_attribute("rtpmap", _rtpmap_value(pt, codec))
        if codec == CODEC_OPUS:
            media.add_attribute("fmtp", f"{pt} {OPUS_FMTP}")
    events = []
    if CODEC_OPUS in enabled:
        events.append((OFFER_PT_TELEPHONE_EVENT_48K, 48000))
    if CODEC_PCMU in enabled or CODEC_PCMA in enabled:
        events.append((OFFER_PT_TELEPHONE_EVENT_8K, 8000))
    for pt, clock in events:
        media.formats.append(pt)
        media.add_attribute("rtpmap", f"{pt} {TELEPHONE_EVENT}/{clock}")
        media.add_attribute("fmtp", f"{pt} {TELEPHONE_EVENT_FMTP}")
    media.add_attribute("ptime", str(DEFAULT_PTIME_MS))
    media.add_attribute(DIRECTION_SENDRECV)
    if rtcp_mux:
        media.add_attribute("rtcp-mux")
    if audio_level_ext_id is not None:
        media.add_attribute("extmap", Extmap(id=audio_level_ext_id, uri=AUDIO_LEVEL_URI).serialize())
    crypto = None
    if srtp:
        crypto = generate_crypto(1, SUPPORTED_SUITES[0])
        media.add_attribute("crypto", format_crypto(crypto))
    session.media.append(media)
    return session.serialize(), crypto
