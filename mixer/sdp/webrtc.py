"""RFC 3264 offer/answer for WebRTC legs: ICE-lite, DTLS-SRTP, rtcp-mux and BUNDLE (JSEP, RFC 8829).

A browser offers `UDP/TLS/RTP/SAVPF` m-lines with ICE credentials (RFC 8839), a certificate
fingerprint and a DTLS role (RFC 8122, RFC 5763), usually several m-lines bundled on one transport
(RFC 8843). The engine answers:

- session level: `a=ice-lite` (RFC 8445 section 2.5), `a=group:BUNDLE` with the accepted mids;
- the *main* m-line (the first usable audio m-line) carries the participant's own audio: one codec
  chosen as for any leg, telephone-event, `a=rtcp-mux` (required: one port carries everything),
  the RFC 6464 and `sdes:mid` header extensions when offered, `a=rtcp-fb:<pt> nack` when offered;
- *slot* m-lines: in an SFU conference each forwarded speaker is its own stream, and a browser
  receives each stream on its own m-line (unified plan). Every later audio m-line the offerer marked
  `recvonly` is answered `sendonly` with one slot's SSRC (`a=ssrc`, `a=msid`), up to the number of
  slots the conference gives a subscriber; with no such m-line and slots wanted, the main m-line
  carries slot 0. Extra m-lines, video, data channels: port 0 (rejected, mid kept);
- every accepted m-line has the same port (the leg's one port), the engine's ICE credentials, the
  engine certificate's SHA-256 fingerprint, `a=setup` (passive to `actpass` or `active`, active
  to `passive`), and host candidates for each advertised address with `a=end-of-candidates`
  (repeated in every bundled m-line, as browsers do in their answers: some peers, aiortc among
  them, read the candidates of the last bundled m-line).

Not negotiated (not echoed, so the browser does not use them): transport-cc, abs-send-time,
RED, rtcp-rsize, extmap-allow-mixed.
"""
from __future__ import annotations

import copy
import ipaddress
import secrets
from dataclasses import dataclass, field

from mixer.sdp.offer_answer import (
    ANSWER_DIRECTION,
    AUDIO_LEVEL_URI,
    CODEC_OPUS,
    DEFAULT_CODECS,
    DEFAULT_PTIME_MS,
    ONE_BYTE_EXTMAP_IDS,
    OPUS_FMTP,
    SUPPORTED_CODECS,
    TELEPHONE_EVENT,
    TELEPHONE_EVENT_FMTP,
    AudioAnswer,
    SdpNotAcceptable,
    _canonical_codecs,
    _check_local_port,
    _choose_codec,
    _choose_telephone_event,
    _new_session,
    _rtpmap_value,
)
from mixer.sdp.session import (
    DIRECTION_INACTIVE,
    DIRECTION_RECVONLY,
    DIRECTION_SENDONLY,
    DIRECTION_SENDRECV,
    Extmap,
    MediaDescription,
    SdpError,
    SessionDescription,
    Timing,
    parse,
)

# RFC 5764 section 8 and RFC 8829 (JSEP) section 5.1.2: DTLS-SRTP profiles over UDP.
WEBRTC_PROTOS = ("UDP/TLS/RTP/SAVPF", "UDP/TLS/RTP/SAVP")
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"      # RFC 8843 section 15.1
# RFC 4145 / RFC 5763 section 5: a=setup values, and the answer to each.
SETUP_ANSWER = {"actpass": "passive", "active": "passive", "passive": "active"}
# RFC 8122 section 5: a=fingerprint hash names.
FINGERPRINT_HASHES = ("sha-1", "sha-224", "sha-256", "sha-384", "sha-512")
_HEX = set("0123456789ABCDEF")
# RFC 8445 section 5.1.2.1: host type preference 126; local preference by address order.
HOST_TYPE_PREFERENCE = 126
ICE_COMPONENT_RTP = 1
# RFC 8839 section 5.4: ice-char = ALPHA / DIGIT / "+" / "/".
_ICE_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def is_webrtc_offer(description: SessionDescription) -> bool:
    """Whether the offer's first audio m-line asks for DTLS-SRTP (and so for a WebRTC leg)."""
    audio = next((m for m in description.media if m.media == "audio"), None)
    return audio is not None and audio.proto in WEBRTC_PROTOS


@dataclass(frozen=True)
class IceParameters:
    ufrag: str
    pwd: str


@dataclass(frozen=True)
class DtlsFingerprint:
    algorithm: str     # RFC 8122 hash name, lower case
    value: str         # upper-case hex pairs joined by ':'

    def serialize(self) -> str:
        return f"{self.algorithm} {self.value}"


@dataclass
class WebRtcAnswer(AudioAnswer):
    """An AudioAnswer (codec, payload type, extensions, direction of the main m-line) plus what the
    ICE-lite agent, the DTLS transport and the SFU's slots need."""

    remote_ice: IceParameters = field(default=None)
    local_ice: IceParameters = field(default=None)
    remote_fingerprints: list[DtlsFingerprint] = field(default_factory=list)
    dtls_server: bool = True             # our DTLS role (passive = server)
    local_ssrc: int = 0                  # the main m-line's stream (the MCU's mix to this leg)
    cname: str = ""
    main_sends: bool = True              # whether we send on the main m-line
    slot_ssrcs: list[int] = field(default_factory=list)  # each slot's SSRC, slot order
    slot_mids: list[str] = field(default_factory=list)
    main_mid: str | None = None
    mid_ext_id: int | None = None
    nack: bool = False


def _attribute(description: SessionDescription, media: MediaDescription, name: str) -> str | None:
    """Media-level value, else session-level (RFC 8839/8122 allow both)."""
    value = media.attribute(name)
    if value is None:
        value = description.attribute(name)
    return value


def ice_parameters(description: SessionDescription, media: MediaDescription) -> IceParameters:
    ufrag = _attribute(description, media, "ice-ufrag")
    pwd = _attribute(description, media, "ice-pwd")
    if ufrag is None or pwd is None:
        raise SdpNotAcceptable("ice_required", "a DTLS-SRTP offer needs a=ice-ufrag and a=ice-pwd "
                                               "(the engine is ICE-lite)")
    for value, minimum, name in ((ufrag, 4, "ice-ufrag"), (pwd, 22, "ice-pwd")):
        if not minimum <= len(value) <= 256 or not set(value) <= _ICE_CHARS:
            raise SdpNotAcceptable("bad_ice", f"a={name} must be {minimum}..256 ice-chars "
                                              "(RFC 8839 section 5.4)")
    return IceParameters(ufrag, pwd)


def fingerprints(description: SessionDescription, media: MediaDescription) -> list[DtlsFingerprint]:
    """RFC 8122 section 5 `a=fingerprint:<hash> <XX:XX:...>` lines (media level, else session)."""
    values = media.attributes("fingerprint") or description.attributes("fingerprint")
    found = []
    for value in values:
        algorithm, _, digest = (value or "").strip().partition(" ")
        algorithm, digest = algorithm.lower(), digest.strip().upper()
        pairs = digest.split(":")
        if (algorithm not in FINGERPRINT_HASHES or not pairs
                or any(len(p) != 2 or not set(p) <= _HEX for p in pairs)):
            raise SdpNotAcceptable("bad_fingerprint", f"malformed a=fingerprint: {value!r}")
        found.append(DtlsFingerprint(algorithm, digest))
    if not found:
        raise SdpNotAcceptable("fingerprint_required", "a DTLS-SRTP offer needs a=fingerprint")
    return found


def dtls_setup(description: SessionDescription, media: MediaDescription) -> str:
    """The answer's a=setup for the offered one (RFC 5763 section 5; absent means actpass, RFC
    4145 section 4)."""
    offered = (_attribute(description, media, "setup") or "actpass").strip().lower()
    answer = SETUP_ANSWER.get(offered)
    if answer is None:
        raise SdpNotAcceptable("bad_setup", f"a=setup:{offered} cannot start DTLS "
                                            "(want actpass, active or passive)")
    return answer


def bundle_groups(description: SessionDescription) -> list[list[str]]:
    groups = []
    for value in description.attributes("group"):
        semantics, *mids = (value or "").split()
        if semantics == "BUNDLE" and mids:
            groups.append(mids)
    return groups


def candidate_priority(index: int) -> int:
    """RFC 8445 section 5.1.2.1 for a host candidate of component 1; earlier addresses first."""
    local_preference = 65535 - index
    return (HOST_TYPE_PREFERENCE << 24) | (local_preference << 8) | (256 - ICE_COMPONENT_RTP)


def _check_addresses(addresses: list[str]) -> None:
    if not addresses:
        raise ValueError("at least one advertised address")
    for address in addresses:
        ipaddress.ip_address(address)  # ValueError for a name: candidates are IP literals


def _extmap_for(description: SessionDescription, media: MediaDescription, uri: str) -> Extmap | None:
    for extmap in media.extmaps + description.extmaps:
        if extmap.uri == uri and extmap.id in ONE_BYTE_EXTMAP_IDS:
            return extmap
    return None


def _offers_same_codec(media: MediaDescription, payload_type: int, codec: str) -> bool:
    if payload_type not in media.formats:
        return False
    rtpmap = media.rtpmap(payload_type)
    encoding, clock, _ = SUPPORTED_CODECS[codec]
    return rtpmap is not None and rtpmap[0].lower() == encoding.lower() and rtpmap[1] == clock


def _is_usable(media: MediaDescription) -> bool:
    """An audio m-line the offerer wants: a port, or port 0 with a=bundle-only (RFC 8843 6)."""
    return media.media == "audio" and media.proto in WEBRTC_PROTOS and (
        media.port != 0 or media.has_attribute("bundle-only"))


def answer_webrtc(
    offer: SessionDescription | str,
    *,
    addresses: list[str],
    local_port: int,
    local_ice: IceParameters,
    local_fingerprint: DtlsFingerprint,
    codecs: tuple[str, ...] = DEFAULT_CODECS,
    slots: int = 0,
    ssrc: int | None = None,
    cname: str | None = None,
    slot_ssrcs: list[int] | None = None,
    session_id: int | None = None,
    session_version: int = 1,
) -> WebRtcAnswer:
    """Answer a WebRTC offer for one leg on `local_port` of `addresses` (candidates, first = c=).

    `slots`: how many forwarded streams the conference gives this subscriber (0 for an MCU);
    `slot_ssrcs` (a re-offer) keeps the SSRCs of an earlier answer so that streams stay the same.
    Raises SdpError for malformed SDP, SdpNotAcceptable (a 488) for an offer the engine cannot take.
    """
    enabled = _canonical_codecs(codecs)
    _check_local_port(local_port)
    _check_addresses(addresses)
    description = parse(offer) if isinstance(offer, str) else offer
    if not isinstance(description, SessionDescription):
        raise TypeError(f"offer must be str or SessionDescription, not {type(offer).__name__}")

    usable = [i for i, m in enumerate(description.media) if _is_usable(m)]
    if not usable:
        if not any(m.media == "audio" for m in description.media):
            raise SdpNotAcceptable("no_audio", "offer has no m=audio line")
        raise SdpNotAcceptable("audio_disabled", "offer has no usable UDP/TLS/RTP/SAVPF audio m-line")
    main_index = usable[0]
    main = description.media[main_index]
    if not main.rtcp_mux:
        raise SdpNotAcceptable("rtcp_mux_required", "WebRTC legs need a=rtcp-mux (RFC 8829 5.1.3): "
                                                    "one port carries STUN, DTLS, RTP and RTCP")
    remote_ice = ice_parameters(description, main)
    remote_fingerprints = fingerprints(description, main)
    setup = dtls_setup(description, main)
    codec, payload_type = _choose_codec(main, enabled)
    _, clock_rate, channels = SUPPORTED_CODECS[codec]
    telephone_event_pt = _choose_telephone_event(main, clock_rate)
    audio_level = _extmap_for(description, main, AUDIO_LEVEL_URI)
    mid_ext = _extmap_for(description, main, MID_URI)
    nack = f"{payload_type} nack" in main.attributes("rtcp-fb")
    main_mid = main.attribute("mid")

    # Which m-lines ride the main one's transport: those in its BUNDLE group (all have mids).
    group = next((g for g in bundle_groups(description) if main_mid in g), None) if main_mid else None
    bundled = set(group or [])
    slot_lines: list[int] = []
    for index in usable[1:]:
        media = description.media[index]
        if (media.attribute("mid") in bundled and description.direction_of(media) == DIRECTION_RECVONLY
                and _offers_same_codec(media, payload_type, codec) and len(slot_lines) < slots):
            slot_lines.append(index)
    main_direction = ANSWER_DIRECTION[description.direction_of(main)]
    main_slot = slots > 0 and not slot_lines
    if slots > 0 and slot_lines:
        # the browser's own audio goes up on the main m-line; the speakers come down the others
        main_direction = {DIRECTION_SENDRECV: DIRECTION_RECVONLY, DIRECTION_RECVONLY: DIRECTION_RECVONLY,
                          DIRECTION_SENDONLY: DIRECTION_INACTIVE}.get(main_direction, DIRECTION_INACTIVE)
    slot_count = 1 if main_slot and main_direction in (DIRECTION_SENDRECV, DIRECTION_SENDONLY) else len(slot_lines)
    if slot_ssrcs is None:
        slot_ssrcs = [secrets.randbits(32) for _ in range(slot_count)]
    slot_ssrcs = list(slot_ssrcs[:slot_count])
    while len(slot_ssrcs) < slot_count:
        slot_ssrcs.append(secrets.randbits(32))
    ssrc = secrets.randbits(32) if ssrc is None else ssrc
    cname = cname or f"voicemix-{ssrc:08x}"
    stream_id = f"voicemix-{cname[-8:]}"

    def transport_attributes(accepted: MediaDescription, with_candidates: bool) -> None:
        accepted.add_attribute("ice-ufrag", local_ice.ufrag)
        accepted.add_attribute("ice-pwd", local_ice.pwd)
        accepted.add_attribute("fingerprint", local_fingerprint.serialize())
        accepted.add_attribute("setup", setup)
        if with_candidates:
            for position, address in enumerate(addresses):
                accepted.add_attribute("candidate", f"{position + 1} {ICE_COMPONENT_RTP} udp "
                                       f"{candidate_priority(position)} {address} {local_port} typ host")
            accepted.add_attribute("end-of-candidates")

    def audio_section(offered: MediaDescription, direction: str, stream_ssrc: int | None,
                      with_candidates: bool) -> MediaDescription:
        accepted = MediaDescription(media="audio", port=local_port, proto=offered.proto,
                                    formats=[payload_type])
        mid = offered.attribute("mid")
        if mid is not None:
            accepted.add_attribute("mid", mid)
        transport_attributes(accepted, with_candidates)
        accepted.add_attribute(direction)
        accepted.add_attribute("rtcp-mux")
        for extmap in (audio_level, mid_ext):
            if extmap is not None:
                mirrored = ANSWER_DIRECTION[extmap.direction] if extmap.direction else None
                accepted.add_attribute("extmap", Extmap(extmap.id, extmap.uri, mirrored).serialize())
        accepted.add_attribute("rtpmap", _rtpmap_value(payload_type, codec))
        if nack:
            accepted.add_attribute("rtcp-fb", f"{payload_type} nack")
        if codec == CODEC_OPUS:
            accepted.add_attribute("fmtp", f"{payload_type} {OPUS_FMTP}")
        if telephone_event_pt is not None and _choose_telephone_event(offered, clock_rate) == telephone_event_pt:
            accepted.formats.append(telephone_event_pt)
            accepted.add_attribute("rtpmap", f"{telephone_event_pt} {TELEPHONE_EVENT}/{clock_rate}")
            accepted.add_attribute("fmtp", f"{telephone_event_pt} {TELEPHONE_EVENT_FMTP}")
        accepted.add_attribute("ptime", str(DEFAULT_PTIME_MS))
        if stream_ssrc is not None and direction in (DIRECTION_SENDRECV, DIRECTION_SENDONLY):
            track = f"{stream_id}-{stream_ssrc:08x}"
            accepted.add_attribute("msid", f"{stream_id} {track}")
            accepted.add_attribute("ssrc", f"{stream_ssrc} cname:{cname}")
            accepted.add_attribute("ssrc", f"{stream_ssrc} msid:{stream_id} {track}")
        return accepted

    answer = _new_session(addresses[0], session_id, copy.deepcopy(description.timing) or [Timing()])
    answer.origin.session_version = session_version
    answer.add_attribute("ice-lite")
    accepted_mids: list[str] = []
    slot_mids: list[str] = []
    for position, offered in enumerate(description.media):
        if position == main_index:
            section = audio_section(offered, main_direction,
                                    slot_ssrcs[0] if main_slot and slot_ssrcs else ssrc, True)
            if main_slot and slot_ssrcs and main_mid is not None:
                slot_mids.append(main_mid)
        elif position in slot_lines:
            slot = slot_lines.index(position)
            section = audio_section(offered, ANSWER_DIRECTION[DIRECTION_RECVONLY], slot_ssrcs[slot], True)
            slot_mids.append(offered.attribute("mid"))
        else:
            section = MediaDescription(media=offered.media, port=0, proto=offered.proto,
                                       formats=list(offered.formats))
            if offered.attribute("mid") is not None:
                section.add_attribute("mid", offered.attribute("mid"))
            section.add_attribute(DIRECTION_INACTIVE)
        if section.port != 0 and section.attribute("mid") is not None:
            accepted_mids.append(section.attribute("mid"))
        answer.media.append(section)
    if group is not None and accepted_mids:
        answer.attributes.insert(0, ("group", "BUNDLE " + " ".join(accepted_mids)))
    answer.add_attribute("msid-semantic", " WMS *")

    return WebRtcAnswer(
        sdp=answer.serialize(),
        description=answer,
        codec=codec,
        payload_type=payload_type,
        clock_rate=clock_rate,
        channels=channels,
        fmtp=main.fmtp(payload_type),
        telephone_event_pt=telephone_event_pt,
        remote_rtp=("0.0.0.0", 9),   # learnt from ICE checks, never from the offer
        remote_rtcp=("0.0.0.0", 9),
        rtcp_mux=True,
        ptime_ms=main.ptime or DEFAULT_PTIME_MS,
        direction=main_direction,
        audio_level_ext_id=audio_level.id if audio_level is not None else None,
        local_crypto=None,
        remote_crypto=None,
        remote_ice=remote_ice,
        local_ice=local_ice,
        remote_fingerprints=remote_fingerprints,
        dtls_server=setup == "passive",
        local_ssrc=ssrc,
        cname=cname,
        main_sends=main_direction in (DIRECTION_SENDRECV, DIRECTION_SENDONLY) and not main_slot,
        slot_ssrcs=slot_ssrcs,
        slot_mids=slot_mids,
        main_mid=main_mid,
        mid_ext_id=mid_ext.id if mid_ext is not None else None,
        nack=nack,
    )


__all__ = ["WEBRTC_PROTOS", "MID_URI", "DtlsFingerprint", "IceParameters", "WebRtcAnswer",
           "answer_webrtc", "bundle_groups", "candidate_priority", "dtls_setup", "fingerprints",
           "ice_parameters", "is_webrtc_offer", "SdpError"]
