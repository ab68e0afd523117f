"""RTCP packets: RFC 3550 section 6 reports, RFC 4585 feedback.

Every RTCP datagram is a compound packet: RTCP packets back to back, each with the
common header of RFC 3550 section 6.4.1 whose length field (32-bit words minus one)
lets a reader step over types it does not know. :func:`parse_compound` walks that
chain; each packet class parses only its own payload.

Malformed input of any shape raises :class:`RtcpError` and nothing else, because
these bytes come straight off the network.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Self, Union

#: RFC 3550 section 5.1: the version field of RTP and RTCP.
RTP_VERSION = 2

#: Packet types, RFC 3550 section 12.1.
RTCP_SR = 200  # sender report, section 6.4.1
RTCP_RR = 201  # receiver report, section 6.4.2
RTCP_SDES = 202  # source description, section 6.5
RTCP_BYE = 203  # goodbye, section 6.6
RTCP_APP = 204  # application-defined, section 6.7 (skipped when parsing)
#: Feedback packet types, RFC 4585 section 6.1.
RTCP_RTPFB = 205  # transport-layer feedback
RTCP_PSFB = 206  # payload-specific feedback

#: Feedback message types (the FMT field), RFC 4585 sections 6.2.1 and 6.3.1.
RTCP_RTPFB_NACK = 1  # generic NACK
RTCP_PSFB_PLI = 1  # picture loss indication

#: SDES item types, RFC 3550 section 6.5.
SDES_END = 0
SDES_CNAME = 1
SDES_NAME = 2
SDES_EMAIL = 3
SDES_PHONE = 4
SDES_LOC = 5
SDES_TOOL = 6
SDES_NOTE = 7
SDES_PRIV = 8

#: RFC 3550 section 6.4.1: the 4-byte header common to every RTCP packet.
RTCP_HEADER_LENGTH = 4
#: RFC 3550 section 6.4.1: one reception report block.
REPORT_BLOCK_LENGTH = 24
#: The 5-bit count field caps report blocks, SDES chunks and BYE sources.
RTCP_MAX_COUNT = 31
#: The 16-bit length field, in 32-bit words after the header.
RTCP_MAX_LENGTH_WORDS = 0xFFFF

_HEADER = struct.Struct("!BBH")
_SR_INFO = struct.Struct("!IIIIII")  # SSRC, NTP hi, NTP lo, RTP ts, packets, octets
_REPORT_BLOCK = struct.Struct("!IIIIII")
_TWO_WORDS = struct.Struct("!II")
_WORD = struct.Struct("!I")
_NACK_FCI = struct.Struct("!HH")


class RtcpError(ValueError):
    """Malformed RTCP: bad header, lengths that disagree, fields out of range."""


def _check_uint(value: int, bits: int, name: str) -> None:
    if not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise RtcpError(f"{name} must be an unsigned {bits}-bit integer, got {value!r}")


def _header(count: int, packet_type: int, payload_length: int) -> bytes:
    """Common header (RFC 3550 section 6.4.1) for a payload of whole 32-bit words."""
    words = payload_length // 4
    if words > RTCP_MAX_LENGTH_WORDS:
        raise RtcpError(f"RTCP packet too long: {payload_length} bytes")
    return _HEADER.pack((RTP_VERSION << 6) | count, packet_type, words)


def _check_count(items: list, what: str) -> int:
    count = len(items)
    if count > RTCP_MAX_COUNT:
        raise RtcpError(f"{count} {what} exceed the 5-bit count field; split the packet")
    return count


@dataclass(slots=True)
class ReportBlock:
    """Reception report block, RFC 3550 section 6.4.1.

    ``packets_lost`` is the signed 24-bit cumulative loss (duplicates can make it
    negative); ``highest_sequence`` is the extended highest sequence number.
    ``lsr``/``dlsr`` are 16.16 fixed-point NTP values (see :mod:`mixer.rtp.ntp`).
    """

    ssrc: int
    fraction_lost: int = 0
    packets_lost: int = 0
    highest_sequence: int = 0
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0

    def serialize(self) -> bytes:
        _check_uint(self.ssrc, 32, "ssrc")
        _check_uint(self.fraction_lost, 8, "fraction_lost")
        lost = self.packets_lost
        if not isinstance(lost, int) or not -(1 << 23) <= lost < 1 << 23:
            raise RtcpError(f"packets_lost must be a signed 24-bit integer, got {lost!r}")
        _check_uint(self.highest_sequence, 32, "highest_sequence")
        _check_uint(self.jitter, 32, "jitter")
        _check_uint(self.lsr, 32, "lsr")
        _check_uint(self.dlsr, 32, "dlsr")
        return _REPORT_BLOCK.pack(
            self.ssrc,
            (self.fraction_lost << 24) | (lost & 0xFFFFFF),
            self.highest_sequence,
            self.jitter,
            self.lsr,
            self.dlsr,
        )

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> ReportBlock:
        if len(data) - offset < REPORT_BLOCK_LENGTH or offset < 0:
            raise RtcpError("report block truncated")
        ssrc, loss, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        lost = loss & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        return cls(ssrc, loss >> 24, lost, highest, jitter, lsr, dlsr)


def _parse_blocks(payload: bytes, offset: int, count: int) -> list[ReportBlock]:
    return [
        ReportBlock.parse(payload, offset + i * REPORT_BLOCK_LENGTH) for i in range(count)
    ]


def _serialize_blocks(reports: list[ReportBlock]) -> bytes:
    return b"".join(block.serialize() for block in reports)


class _RtcpPacket:
    """Shared single-packet parse: header, padding, type check, then the payload."""

    __slots__ = ()
    PACKET_TYPE: int
    #: For feedback packets the 5-bit header field is FMT, which must match.
    FMT: int | None = None

    @classmethod
    def parse(cls, data: bytes) -> Self:
        """Parse exactly one RTCP packet of this type (header included)."""
        packets = list(_iter_packets(data))
        if len(packets) != 1:
            raise RtcpError(f"expected one RTCP packet, found {len(packets)}")
        packet_type, count, payload = packets[0]
        if packet_type != cls.PACKET_TYPE or (cls.FMT is not None and count != cls.FMT):
            raise RtcpError(f"not a {cls.__name__}: packet type {packet_type}, count/FMT {count}")
        return cls._parse_payload(count, payload)

    @classmethod
    def _parse_payload(cls, count: int, payload: bytes) -> Self:
        raise NotImplementedError


@dataclass(slots=True)
class RtcpSenderReport(_RtcpPacket):
    """SR, RFC 3550 section 6.4.1: sender info plus up to 31 report blocks.

    Profile-specific extensions after the report blocks are ignored.
    """

    PACKET_TYPE = RTCP_SR

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)

    def serialize(self) -> bytes:
        count = _check_count(self.reports, "report blocks")
        _check_uint(self.ssrc, 32, "ssrc")
        _check_uint(self.ntp_timestamp, 64, "ntp_timestamp")
        _check_uint(self.rtp_timestamp, 32, "rtp_timestamp")
        _check_uint(self.packet_count, 32, "packet_count")
        _check_uint(self.octet_count, 32, "octet_count")
        payload = _SR_INFO.pack(
            self.ssrc,
            self.ntp_timestamp >> 32,
            self.ntp_timestamp & 0xFFFFFFFF,
            self.rtp_timestamp,
            self.packet_count,
            self.octet_count,
        ) + _serialize_blocks(self.reports)
        return _header(count, RTCP_SR, len(payload)) + payload

    @classmethod
    def _parse_payload(cls, count: int, payload: bytes) -> RtcpSenderReport:
        if len(payload) < _SR_INFO.size + count * REPORT_BLOCK_LENGTH:
            raise RtcpError(f"SR too short for {count} report blocks")
        ssrc, ntp_hi, ntp_lo, rtp_ts, packets, octets = _SR_INFO.unpack_from(payload)
        reports = _parse_blocks(payload, _SR_INFO.size, count)
        return cls(ssrc, (ntp_hi << 32) | ntp_lo, rtp_ts, packets, octets, reports)


@dataclass(slots=True)
class RtcpReceiverReport(_RtcpPacket):
    """RR, RFC 3550 section 6.4.2: the SR without sender info."""

    PACKET_TYPE = RTCP_RR

    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)

    def serialize(self) -> bytes:
        count = _check_count(self.reports, "report blocks")
        _check_uint(self.ssrc, 32, "ssrc")
        payload = _WORD.pack(self.ssrc) + _serialize_blocks(self.reports)
        return _header(count, RTCP_RR, len(payload)) + payload

    @classmethod
    def _parse_payload(cls, count: int, payload: bytes) -> RtcpReceiverReport:
        if len(payload) < 4 + count * REPORT_BLOCK_LENGTH:
            raise RtcpError(f"RR too short for {count} report blocks")
        (ssrc,) = _WORD.unpack_from(payload)
        return cls(ssrc, _parse_blocks(payload, 4, count))


def _to_bytes(value: str | bytes) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise RtcpError(f"expected str or bytes, got {type(value).__name__}")


@dataclass(slots=True)
class SdesChunk:
    """One SDES chunk, RFC 3550 section 6.5: an SSRC/CSRC and its (type, value) items.

    ``str`` values are stored UTF-8 encoded, so parsed and built chunks compare equal.
    """

    ssrc: int
    items: list[tuple[int, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.items = [(item_type, _to_bytes(value)) for item_type, value in self.items]

    @property
    def cname(self) -> bytes | None:
        """The CNAME item (RFC 3550 section 6.5.1), if present."""
        for item_type, value in self.items:
            if item_type == SDES_CNAME:
                return value
        return None

    def serialize(self) -> bytes:
        _check_uint(self.ssrc, 32, "ssrc")
        parts = [_WORD.pack(self.ssrc)]
        length = 4
        for item_type, value in self.items:
            if not isinstance(item_type, int) or not 1 <= item_type <= 255:
                raise RtcpError(f"SDES item type must be 1..255, got {item_type!r}")
            if len(value) > 255:
                raise RtcpError(f"SDES item longer than 255 bytes: {len(value)}")
            parts.append(bytes((item_type, len(value))))
            parts.append(value)
            length += 2 + len(value)
        # The item list ends with one or more null octets up to a 32-bit boundary.
        parts.append(bytes(4 - length % 4))
        return b"".join(parts)


@dataclass(slots=True)
class RtcpSdes(_RtcpPacket):
    """SDES, RFC 3550 section 6.5: source descriptions, one chunk per source.

    Chunks may be given as :class:`SdesChunk` or as ``(ssrc, items)`` tuples.
    """

    PACKET_TYPE = RTCP_SDES

    chunks: list[SdesChunk] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.chunks = [
            chunk if isinstance(chunk, SdesChunk) else SdesChunk(*chunk) for chunk in self.chunks
        ]

    def serialize(self) -> bytes:
        count = _check_count(self.chunks, "SDES chunks")
        payload = b"".join(chunk.serialize() for chunk in self.chunks)
        return _header(count, RTCP_SDES, len(payload)) + payload

    @classmethod
    def _parse_payload(cls, count: int, payload: bytes) -> RtcpSdes:
        end = len(payload)
        pos = 0
        chunks = []
        for _ in range(count):
            if end - pos < 4:
                raise RtcpError("SDES chunk truncated")
            (ssrc,) = _WORD.unpack_from(payload, pos)
            pos += 4
            items = []
            while True:
                if pos >= end:
                    raise RtcpError("SDES item list not terminated by a null octet")
                item_type = payload[pos]
                if item_type == SDES_END:
                    pos += 1
                    break
                if pos + 2 > end:
                    raise RtcpError("SDES item header truncated")
                start = pos + 2
                pos = start + payload[pos + 1]
                if pos > end:
                    raise RtcpError("SDES item value truncated")
                items.append((item_type, payload[start:pos]))
            # Skip the null octets that pad the chunk to a 32-bit boundary.
            pos = (pos + 3) & ~3
            chunks.append(SdesChunk(ssrc, items))
        return cls(chunks)


@dataclass(slots=True)
class RtcpBye(_RtcpPacket):
    """BYE, RFC 3550 section 6.6: sources leaving, with an optional reason.

    A ``str`` reason is stored UTF-8 encoded.
    """

    PACKET_TYPE = RTCP_BYE

    sources: list[int] = field(default_factory=list)
    reason: bytes | None = None

    def __post_init__(self) -> None:
        if self.reason is not None:
            self.reason = _to_bytes(self.reason)

    def serialize(self) -> bytes:
        count = _check_count(self.sources, "BYE sources")
        for ssrc in self.sources:
            _check_uint(ssrc, 32, "BYE source")
        payload = struct.pack(f"!{count}I", *self.sources)
        if self.reason is not None:
            text = _to_bytes(self.reason)
            if len(text) > 255:
                raise RtcpError(f"BYE reason longer than 255 bytes: {len(text)}")
            reason = bytes((len(text),)) + text
            payload += reason + bytes(-len(reason) % 4)
        return _header(count, RTCP_BYE, len(payload)) + payload

    @classmethod
    def _parse_payload(cls, count: int, payload: bytes) -> RtcpBye:
        offset = 4 * count
        if len(payload) < offset:
            raise RtcpError(f"BYE too short for {count} sources")
        sources = list(struct.unpack_from(f"!{count}I", payload))
        reason = None
        if len(payload) > offset:
            end = offset + 1 + payload[offset]
            if end > len(payload):
                raise RtcpError("BYE reason truncated")
            reason = payload[offset + 1 : end]
        return cls(sources, reason)


def _pack_nack(lost: Iterable[int]) -> bytes:
    """Pack sequence numbers into PID/BLP pairs, RFC 4585 section 6.2.1.

    Each number joins the current pair when it lies 1..16 after its PID (modulo
    2**16), else it starts a new pair; so give them in RTP order for the fewest pairs.
    """
    pairs: list[list[int]] = []
    pid = blp = -1
    for seq in lost:
        _check_uint(seq, 16, "NACK sequence number")
        distance = (seq - pid) & 0xFFFF
        if pid >= 0 and distance == 0:
            continue
        if pid >= 0 and distance <= 16:
            blp |= 1 << (distance - 1)
            pairs[-1][1] = blp
        else:
            pid, blp = seq, 0
            pairs.append([pid, blp])
    return b"".join(_NACK_FCI.pack(p, b) for p, b in pairs)


@dataclass(slots=True)
class RtcpNack(_RtcpPacket):
    """Generic NACK, RFC 4585 section 6.2.1 (RTPFB, FMT 1): lost sequence numbers."""

    PACKET_TYPE = RTCP_RTPFB
    FMT = RTCP_RTPFB_NACK

    sender_ssrc: int
    media_ssrc: int
    lost: list[int] = field(default_factory=list)

    def serialize(self) -> bytes:
        _check_uint(self.sender_ssrc, 32, "sender_ssrc")
        _check_uint(self.media_ssrc, 32, "media_ssrc")
        payload = _TWO_WORDS.pack(self.sender_ssrc, self.media_ssrc) + _pack_nack(self.lost)
        return _header(RTCP_RTPFB_NACK, RTCP_RTPFB, len(payload)) + payload

    @classmethod
    def _parse_payload(cls, count: int, payload: bytes) -> RtcpNack:
        if len(payload) < 8 or len(payload) % 4:
            raise RtcpError("NACK needs two SSRCs and whole 32-bit FCI entries")
        sender_ssrc, media_ssrc = _TWO_WORDS.unpack_from(payload)
        lost = []
        for offset in range(8, len(payload), 4):
            pid, blp = _NACK_FCI.unpack_from(payload, offset)
            lost.append(pid)
            for bit in range(16):
                if blp >> bit & 1:
                    lost.append((pid + bit + 1) & 0xFFFF)
        return cls(sender_ssrc, media_ssrc, lost)


@dataclass(slots=True)
class RtcpPli(_RtcpPacket):
    """Picture loss indication, RFC 4585 section 6.3.1 (PSFB, FMT 1); no FCI."""

    PACKET_TYPE = RTCP_PSFB
    FMT = RTCP_PSFB_PLI

    sender_ssrc: int
    media_ssrc: int

    def serialize(self) -> bytes:
        _check_uint(self.sender_ssrc, 32, "sender_ssrc")
        _check_uint(self.media_ssrc, 32, "media_ssrc")
        payload = _TWO_WORDS.pack(self.sender_ssrc, self.media_ssrc)
        return _header(RTCP_PSFB_PLI, RTCP_PSFB, len(payload)) + payload

    @classmethod
    def _parse_payload(cls, count: int, payload: bytes) -> RtcpPli:
        if len(payload) < 8:
            raise RtcpError("PLI needs sender and media SSRCs")
        return cls(*_TWO_WORDS.unpack_from(payload))


RtcpPacket = Union[RtcpSenderReport, RtcpReceiverReport, RtcpSdes, RtcpBye, RtcpNack, RtcpPli]

_BY_TYPE: dict[int, type] = {
    RTCP_SR: RtcpSenderReport,
    RTCP_RR: RtcpReceiverReport,
    RTCP_SDES: RtcpSdes,
    RTCP_BYE: RtcpBye,
}
_BY_FEEDBACK: dict[tuple[int, int], type] = {
    (RTCP_RTPFB, RTCP_RTPFB_NACK): RtcpNack,
    (RTCP_PSFB, RTCP_PSFB_PLI): RtcpPli,
}


def _iter_packets(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """Walk a compound packet by its length fields (RFC 3550 section 6.4.1, appendix A.2).

    Yields (packet type, count/FMT, payload without header and padding). Only the
    last packet may carry padding, and its pad count must fit inside that packet.
    """
    if not isinstance(data, bytes):
        data = bytes(memoryview(data))
    end = len(data)
    if end == 0:
        raise RtcpError("empty RTCP packet")
    pos = 0
    while pos < end:
        if end - pos < RTCP_HEADER_LENGTH:
            raise RtcpError(f"truncated RTCP header at offset {pos}")
        first, packet_type, words = _HEADER.unpack_from(data, pos)
        if first >> 6 != RTP_VERSION:
            raise RtcpError(f"RTCP version {first >> 6} at offset {pos}")
        packet_end = pos + RTCP_HEADER_LENGTH + 4 * words
        if packet_end > end:
            raise RtcpError(f"RTCP length at offset {pos} runs past the datagram")
        payload_end = packet_end
        if first & 0x20:
            if packet_end != end:
                raise RtcpError("only the last RTCP packet of a compound may be padded")
            padding = data[packet_end - 1]
            if padding == 0 or padding > packet_end - pos - RTCP_HEADER_LENGTH:
                raise RtcpError(f"bad RTCP padding count {padding}")
            payload_end -= padding
        yield packet_type, first & 0x1F, data[pos + RTCP_HEADER_LENGTH : payload_end]
        pos = packet_end


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP packet (RFC 3550 section 6.1) into its known packets.

    APP, unknown types and unknown feedback FMTs are skipped, as section 6.1 asks
    of receivers; their headers are still validated. The first packet is not
    required to be SR/RR, so reduced-size RTCP (RFC 5506) parses too.
    """
    packets = []
    for packet_type, count, payload in _iter_packets(data):
        parser = _BY_TYPE.get(packet_type) or _BY_FEEDBACK.get((packet_type, count))
        if parser is not None:
            packets.append(parser._parse_payload(count, payload))
    return packets


def serialize_compound(packets: Iterable[RtcpPacket]) -> bytes:
    """Concatenate packets into one compound packet (RFC 3550 section 6.1).

    The caller chooses the order; a full compound starts with SR or RR and has an
    SDES CNAME.
    """
    return b"".join(packet.serialize() for packet in packets)


def is_rtcp(data: bytes) -> bool:
    """Whether a datagram on a muxed RTP/RTCP port is RTCP, RFC 5761 section 4.

    The second octet of RTCP is its packet type (192..223 in the range the RFC
    reserves); for RTP it is marker plus payload type, which avoids that range.
    """
    return len(data) >= RTCP_HEADER_LENGTH and 192 <= data[1] <= 223 and data[0] >> 6 == RTP_VERSION
