"""Fuzz targets for the media parsers: RTP, RFC 8285 extensions, RTCP, SRTP/SRTCP, SDP, SDES.

Each check accepts the module's own error for bad input and otherwise demands an invariant
(parse -> serialize -> parse is a fixed point, counters account for every packet, ...). Anything else
raised is a defect, and the fuzzer reports the input that raised it.
"""
from __future__ import annotations

from mixer import _rtp
from mixer.rtp import rtcp
from mixer.rtp.srtp import SrtpContext
from mixer.sdp import SdpError, answer_audio, format_crypto, generate_crypto, offer_audio, parse, parse_crypto
from tests.fuzz.registry import InvariantBroken, target

SUITE = "AES_CM_128_HMAC_SHA1_80"


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise InvariantBroken(what)


# ------------------------------------------------------------------------------------------- RTP
def _rtp_seeds() -> list[bytes]:
    level = _rtp.audio_level_extension(1, 30, True)
    return [
        _rtp.build_rtp(111, 1, 960, 0x1234, b"\xf8\xff\xfe"),
        _rtp.build_rtp(0, 65535, 160, 1, bytes(160), True, _rtp.EXTENSION_PROFILE_ONE_BYTE, level),
        _rtp.RtpPacket(8, 7, 8, 9, b"abc", csrc=(1, 2), extensions={1: b"\x10", 200: b""},
                        padding_size=4).serialize(),
    ]


@target("rtp", "mixer._rtp.RtpPacket.parse: RtpError only; serialize(parse(x)) == x (padding "
        "zeroed); parse(serialize(p)) == p", seeds=_rtp_seeds, max_len=1500)
def rtp_target():
    parse_rtp, RtpError = _rtp.RtpPacket.parse, _rtp.RtpError

    def fields(p):
        return (p.marker, p.payload_type, p.sequence_number, p.timestamp, p.ssrc, p.csrc,
                p.extension_profile, p.extension_data, p.payload, p.padding_size)

    def check(data: bytes) -> None:
        try:
            packet = parse_rtp(data)
        except RtpError:
            return
        wire = packet.serialize()
        # serialize writes padding as zeros then the count; everything else must be the input
        if packet.padding_size:
            expected = data[:len(data) - packet.padding_size] + bytes(packet.padding_size - 1) + data[-1:]
        else:
            expected = data
        _check(wire == expected, "serialize(parse(x)) differs from x outside the padding")
        _check(fields(parse_rtp(wire)) == fields(packet), "parse(serialize(p)) != p")
        _check(len(packet.payload) + packet.padding_size + 12 + 4 * len(packet.csrc)
               + (4 + len(packet.extension_data) if packet.extension_profile >= 0 else 0) == len(data),
               "parsed parts do not add up to the datagram")
    return check


def _reference_elements(block: bytes, profile: int) -> list[tuple[int, bytes]] | None:
    """RFC 8285 section 4 walked by hand, independently of the Cython code; None if malformed."""
    one_byte = profile == _rtp.EXTENSION_PROFILE_ONE_BYTE
    if not one_byte and (profile & 0xFFF0) != _rtp.EXTENSION_PROFILE_TWO_BYTE:
        return []
    out, i, n = [], 0, len(block)
    while i < n:
        if (block[i] >> 4 == 0) if one_byte else block[i] == 0:
            i += 1  # padding
            continue
        if one_byte:
            ident, length, start = block[i] >> 4, (block[i] & 0x0F) + 1, i + 1
            if ident == 15:
                break
        else:
            if i + 2 > n:
                return None
            ident, length, start = block[i], block[i + 1], i + 2
        if start + length > n:
            return None
        out.append((ident, block[start:start + length]))
        i = start + length
    return out


def _extension_seeds() -> list[bytes]:
    return [bytes([0xBE, 0xDE]) + _rtp.audio_level_extension(1, 30, True),
            bytes([0x10, 0x00, 3, 1, 0x85, 0, 200, 2, 1, 2]),
            bytes([0xBE, 0xDE, 0x10, 0xFF, 0x22, 1, 2, 3, 0, 0])]


@target("rtp_extensions", "RtpPacket.extensions / audio_level against a hand-written RFC 8285 "
        "walk; encode_extensions round-trips", seeds=_extension_seeds,
        max_len=600)
def rtp_extensions_target():
    def check(data: bytes) -> None:
        # input = 2-byte profile + extension block: wrap it in a valid RTP header so every input
        # reaches the extension code instead of dying in the fixed header
        if len(data) < 2:
            return
        profile, block = int.from_bytes(data[:2], "big"), data[2:]
        block = block[:len(block) - len(block) % 4][:4 * 0xFFFF]
        wire = (_rtp.build_rtp(111, 1, 2, 3, b"payload", False, profile, block))
        reference = _reference_elements(block, profile)
        try:
            packet = _rtp.RtpPacket.parse(wire)
        except _rtp.RtpError:
            _check(reference is None, "parse rejected a well-formed extension block")
            return
        _check(reference is not None, "parse accepted a malformed extension block")
        elements = packet.extensions
        _check(elements == dict(reference), "extensions differ from the RFC 8285 walk")
        for ident in range(0, 256):
            first = next((value for i, value in reference if i == ident), None)
            expected = ((first[0] & 0x80) != 0, first[0] & 0x7F) if first and ident > 0 else None
            _check(packet.audio_level(ident) == expected, f"audio_level({ident}) wrong")
        encodable = {k: v for k, v in elements.items() if 1 <= k <= 255 and len(v) <= 255}
        if encodable:
            profile2, block2 = _rtp.encode_extensions(encodable)
            again = _rtp.RtpPacket.parse(_rtp.build_rtp(0, 0, 0, 0, b"", False, profile2, block2))
            _check(again.extensions == encodable, "encode_extensions does not round-trip")
    return check


# ------------------------------------------------------------------------------------------ RTCP
def _rtcp_seeds() -> list[bytes]:
    block = rtcp.ReportBlock(ssrc=2, fraction_lost=3, packets_lost=-4, highest_sequence=5, jitter=6,
                             lsr=7, dlsr=8)
    return [
        rtcp.serialize_compound([
            rtcp.RtcpSenderReport(ssrc=1, ntp_timestamp=2 << 32, rtp_timestamp=3, packet_count=4,
                                  octet_count=5, reports=[block]),
            rtcp.RtcpSdes(chunks=[rtcp.SdesChunk(1, [(rtcp.SDES_CNAME, b"x@y")])]),
            rtcp.RtcpBye(sources=[1], reason=b"bye")]),
        rtcp.serialize_compound([rtcp.RtcpReceiverReport(ssrc=1, reports=[block]),
                                 rtcp.RtcpNack(sender_ssrc=1, media_ssrc=2, lost=[5, 6, 40]),
                                 rtcp.RtcpPli(sender_ssrc=1, media_ssrc=2)]),
    ]


@target("rtcp", "mixer.rtp.rtcp.parse_compound: RtcpError only; serialize -> parse is a fixed "
        "point", seeds=_rtcp_seeds, max_len=1500)
def rtcp_target():
    def check(data: bytes) -> None:
        try:
            packets = rtcp.parse_compound(data)
        except rtcp.RtcpError:
            return
        try:
            wire = rtcp.serialize_compound(packets)
        except rtcp.RtcpError as exc:
            raise InvariantBroken(f"a parsed packet does not serialize: {exc}") from exc
        if not wire:
            return  # nothing known in it (APP, unknown types)
        again = rtcp.parse_compound(wire)
        _check(len(again) == len(packets), "a parsed packet vanished after serialize")
        for first, second in zip(packets, again):
            if isinstance(first, rtcp.RtcpNack):  # a NACK's FCIs are normalised: same set of losses
                _check(type(second) is rtcp.RtcpNack and set(first.lost) == set(second.lost)
                       and (first.sender_ssrc, first.media_ssrc) == (second.sender_ssrc, second.media_ssrc),
                       "NACK changed its losses through serialize")
            else:
                _check(first == second, "parse(serialize(parse(x))) != parse(x)")
        _check(rtcp.serialize_compound(again) == wire, "serialize is not stable")
    return check


# ---------------------------------------------------------------------------------- SRTP / SRTCP
_KEY_A, _KEY_B = bytes(range(30)), bytes(range(100, 130))


def _srtp_target(rtcp_mode: bool):
    sender = SrtpContext(SUITE, _KEY_A, _KEY_B)
    receiver = SrtpContext(SUITE, _KEY_B, _KEY_A)
    protect = sender.protect_rtcp if rtcp_mode else sender.protect
    unprotect = receiver.unprotect_rtcp if rtcp_mode else receiver.unprotect
    prefix = "rtcp_" if rtcp_mode else ""
    keys = [prefix + k for k in ("unprotected", "auth_failures", "replays", "malformed")]
    state = {"index": 0}

    def accounted() -> int:
        stats = receiver.stats()
        return sum(stats[k] for k in keys)

    def plain(index: int, body: bytes) -> bytes:
        if rtcp_mode:  # an RR with the body as an APP-like tail keeps it a valid RTCP header
            return rtcp.serialize_compound([rtcp.RtcpReceiverReport(ssrc=0xCAFE, reports=[])]) + body[:400]
        return _rtp.build_rtp(111, index & 0xFFFF, index * 960 & 0xFFFFFFFF, 0xCAFE, body[:1200])

    def check(data: bytes) -> None:
        before = accounted()
        if not data or data[0] < 0x80:
            # mode 1: arbitrary bytes must be refused (nobody else has the key)
            _check(unprotect(data) is None, "garbage authenticated")
            _check(accounted() == before + 1, "a refused packet was not counted exactly once")
            return
        # mode 2: a genuine packet, possibly tampered with by the rest of the input
        state["index"] += 1
        original = plain(state["index"], data[3:])
        protected = bytearray(protect(original))
        flips = data[1:3]
        if data[0] & 1 and protected:
            protected[flips[0] % len(protected) if flips else 0] ^= (flips[1] if len(flips) > 1 else 1) or 1
        result = unprotect(bytes(protected))
        if data[0] & 1:
            _check(result is None, "a tampered packet authenticated")
        else:
            _check(result == original, "a genuine packet did not round-trip")
            _check(unprotect(bytes(protected)) is None, "a replayed packet was accepted")
            before += 1
        _check(accounted() == before + 1, "unprotect outcomes not counted exactly once")
    return check


@target("srtp", "SrtpContext.unprotect: never raises; garbage, tampering and replays refused and "
        "counted once; genuine packets round-trip", max_len=1600)
def srtp_target():
    return _srtp_target(rtcp_mode=False)


@target("srtcp", "SrtpContext.unprotect_rtcp: as srtp, for SRTCP", max_len=1600)
def srtcp_target():
    return _srtp_target(rtcp_mode=True)


# ------------------------------------------------------------------------------------------- SDP
def _sdp_seeds() -> list[bytes]:
    plain_offer, _ = offer_audio(local_ip="127.0.0.1", local_port=30000, codecs=("opus", "PCMU", "PCMA"))
    srtp_offer, _ = offer_audio(local_ip="::1", local_port=30002, srtp=True, rtcp_mux=False)
    return [plain_offer.encode(), srtp_offer.encode()]


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


@target("sdp", "mixer.sdp.parse: SdpError only; serialize(parse(x)) parses to the same text",
        seeds=_sdp_seeds)
def sdp_target():
    def check(data: bytes) -> None:
        try:
            description = parse(_text(data))
        except SdpError:
            return
        text = description.serialize()
        try:
            again = parse(text)
        except SdpError as exc:
            raise InvariantBroken(f"serialize() produced SDP that does not parse: {exc}") from exc
        _check(again.serialize() == text, "serialize(parse(serialize(d))) != serialize(d)")
    return check


@target("sdp_answer", "mixer.sdp.answer_audio: SdpError only; an answer parses, names an offered "
        "payload type and our port", seeds=_sdp_seeds)
def sdp_answer_target():
    def check(data: bytes) -> None:
        text = _text(data)
        try:
            answer = answer_audio(text, local_ip="127.0.0.1", local_port=40000)
        except SdpError:
            return
        offer = parse(text)
        description = parse(answer.sdp)
        audio = [m for m in description.media if m.port != 0]
        _check(len(description.media) == len(offer.media), "answer m-line count differs (RFC 3264 6)")
        _check(len(audio) == 1 and audio[0].port == 40000, "answer does not accept one audio stream")
        offered = next(m for m in offer.media if m.media == "audio" and m.port != 0)
        _check(answer.payload_type in offered.formats, "answer chose a payload type not offered")
        _check(answer.ptime_ms > 0, "non-positive ptime")
        _check(0 < answer.remote_rtp[1] < 65536, "remote RTP port out of range")
        if answer.remote_crypto is not None:
            _check(answer.local_crypto is not None and answer.local_crypto.key != answer.remote_crypto.key,
                   "SRTP answer reuses the offerer's key")
    return check


def _crypto_seeds() -> list[bytes]:
    return [format_crypto(generate_crypto(1)).encode(),
            b"2 AES_CM_128_HMAC_SHA1_32 inline:" + format_crypto(generate_crypto(2)).split(":", 1)[1].encode()
            + b"|2^20|1:4 KDR=1"]


@target("sdes_crypto", "mixer.sdp.parse_crypto: SdpError only; format -> parse round-trips",
        seeds=_crypto_seeds, max_len=1024)
def sdes_crypto_target():
    def check(data: bytes) -> None:
        try:
            attribute = parse_crypto(_text(data))
        except SdpError:
            return
        try:
            again = parse_crypto(format_crypto(attribute))
        except SdpError as exc:
            raise InvariantBroken(f"a parsed a=crypto does not format/parse back: {exc}") from exc
        _check(again == attribute, "parse_crypto(format_crypto(a)) != a")
    return check
