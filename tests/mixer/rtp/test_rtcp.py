"""RTCP packets (RFC 3550 section 6, RFC 4585): hand-built vectors, round trips, fuzzing."""

import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mixer.rtp.rtcp import (
    RTCP_APP,
    RTCP_BYE,
    RTCP_PSFB,
    RTCP_RR,
    RTCP_RTPFB,
    RTCP_SDES,
    RTCP_SR,
    SDES_CNAME,
    SDES_NOTE,
    SDES_TOOL,
    ReportBlock,
    RtcpBye,
    RtcpError,
    RtcpNack,
    RtcpPli,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpSenderReport,
    SdesChunk,
    is_rtcp,
    parse_compound,
    serialize_compound,
)


def header(count: int, packet_type: int, words: int, padding: bool = False) -> bytes:
    """RFC 3550 section 6.4.1 common header: V=2, P, RC/FMT, PT, length in words - 1."""
    return struct.pack("!BBH", 0x80 | (0x20 if padding else 0) | count, packet_type, words)


def block_bytes(ssrc, fraction, lost24, highest, jitter, lsr, dlsr) -> bytes:
    """RFC 3550 section 6.4.1 report block, with the loss as raw 24 bits."""
    return struct.pack("!IIIIII", ssrc, (fraction << 24) | lost24, highest, jitter, lsr, dlsr)


# ---------------------------------------------------------------- sender / receiver reports

SR_BYTES = (
    header(1, RTCP_SR, 12)
    + struct.pack("!IIIIII", 0x11223344, 0xB44DB705, 0x20000000, 160_000, 1000, 172_000)
    + block_bytes(0xCAFEBABE, 64, 0x000005, 0x0001_0010, 37, 0xB7052000, 0x00054000)
)


def test_sender_report_vector():
    assert len(SR_BYTES) == 4 + 24 + 24
    sr = RtcpSenderReport.parse(SR_BYTES)
    assert sr == RtcpSenderReport(
        ssrc=0x11223344,
        ntp_timestamp=0xB44DB705_20000000,
        rtp_timestamp=160_000,
        packet_count=1000,
        octet_count=172_000,
        reports=[ReportBlock(0xCAFEBABE, 64, 5, 0x0001_0010, 37, 0xB7052000, 0x00054000)],
    )
    assert sr.serialize() == SR_BYTES
    assert parse_compound(SR_BYTES) == [sr]


def test_receiver_report_vector_without_blocks():
    data = header(0, RTCP_RR, 1) + struct.pack("!I", 0xDEADBEEF)
    rr = RtcpReceiverReport.parse(data)
    assert rr == RtcpReceiverReport(0xDEADBEEF, [])
    assert rr.serialize() == data


def test_receiver_report_vector_with_two_blocks():
    blocks = block_bytes(1, 0, 0, 100, 0, 0, 0) + block_bytes(2, 255, 0x7FFFFF, 2**32 - 1, 9, 8, 7)
    data = header(2, RTCP_RR, 13) + struct.pack("!I", 42) + blocks
    rr = RtcpReceiverReport.parse(data)
    assert [b.ssrc for b in rr.reports] == [1, 2]
    assert rr.reports[1] == ReportBlock(2, 255, 0x7FFFFF, 2**32 - 1, 9, 8, 7)
    assert rr.serialize() == data


@pytest.mark.parametrize(
    "raw, lost",
    [(0x000000, 0), (0x000001, 1), (0x7FFFFF, 8_388_607), (0xFFFFFF, -1), (0x800000, -8_388_608)],
)
def test_cumulative_loss_is_signed_24_bit(raw, lost):
    data = header(1, RTCP_RR, 7) + struct.pack("!I", 1) + block_bytes(2, 0, raw, 0, 0, 0, 0)
    block = RtcpReceiverReport.parse(data).reports[0]
    assert block.packets_lost == lost
    assert block.serialize() == data[8:]


def test_report_extensions_after_blocks_are_ignored():
    # RFC 3550 section 6.4.1: profile-specific extensions may follow the report blocks.
    data = header(0, RTCP_RR, 3) + struct.pack("!I", 7) + b"\x01\x02\x03\x04" * 2
    assert RtcpReceiverReport.parse(data) == RtcpReceiverReport(7)


def test_report_count_larger_than_length_is_rejected():
    data = header(2, RTCP_RR, 7) + struct.pack("!I", 1) + block_bytes(2, 0, 0, 0, 0, 0, 0)
    with pytest.raises(RtcpError, match="report blocks"):
        parse_compound(data)
    sr = header(1, RTCP_SR, 6) + bytes(24)
    with pytest.raises(RtcpError):
        parse_compound(sr)


# ---------------------------------------------------------------- SDES

def test_sdes_vector_cname():
    cname = b"user@example.org"  # 16 bytes: 4 + 2 + 16 = 22, padded with 2 nulls to 24
    data = (
        header(1, RTCP_SDES, 6)
        + struct.pack("!IBB", 0x01020304, SDES_CNAME, len(cname))
        + cname
        + b"\x00\x00"
    )
    sdes = RtcpSdes.parse(data)
    assert sdes == RtcpSdes([SdesChunk(0x01020304, [(SDES_CNAME, cname)])])
    assert sdes.chunks[0].cname == cname
    assert sdes.serialize() == data


def test_sdes_item_list_ending_on_word_boundary_needs_four_nulls():
    # SSRC (4) + item (2 + 2) = 8 bytes: the terminating null takes a whole word.
    data = header(1, RTCP_SDES, 3) + struct.pack("!IBB", 9, SDES_CNAME, 2) + b"ab" + bytes(4)
    sdes = RtcpSdes.parse(data)
    assert sdes.chunks == [SdesChunk(9, [(SDES_CNAME, b"ab")])]
    assert sdes.serialize() == data


def test_sdes_two_chunks_several_items_and_str_values():
    sdes = RtcpSdes(
        [
            (1, [(SDES_CNAME, "alice@host"), (SDES_TOOL, "voicemix")]),
            SdesChunk(2, [(SDES_CNAME, "bob@host"), (SDES_NOTE, "on the phone")]),
            SdesChunk(3, []),
        ]
    )
    data = sdes.serialize()
    assert len(data) % 4 == 0
    parsed = RtcpSdes.parse(data)
    assert parsed == sdes
    assert parsed.chunks[0].items[1] == (SDES_TOOL, b"voicemix")
    assert parsed.chunks[2].cname is None


@pytest.mark.parametrize(
    "count, payload",
    [
        (1, struct.pack("!IBB", 1, SDES_CNAME, 10) + b"ab"),  # value runs past the packet
        (1, struct.pack("!IBB", 1, SDES_CNAME, 2) + b"ab"),  # no null terminator
        (1, struct.pack("!I", 1) + b"\x01\x00\x01\x00"),  # empty items, never terminated
        (1, struct.pack("!I", 1) + b"\x01\x01a\x01"),  # item header cut by the packet end
        (2, struct.pack("!I", 1) + bytes(4)),  # count says 2 chunks, one present
        (1, b""),  # no room for the SSRC
    ],
)
def test_sdes_malformed(count, payload):
    data = header(count, RTCP_SDES, len(payload) // 4) + payload
    with pytest.raises(RtcpError, match="SDES"):
        parse_compound(data)


# ---------------------------------------------------------------- BYE

def test_bye_vector_with_reason():
    reason = b"hangup"  # 1 + 6 = 7, padded to 8
    data = header(2, RTCP_BYE, 4) + struct.pack("!II", 10, 20) + bytes((6,)) + reason + b"\x00"
    bye = RtcpBye.parse(data)
    assert bye == RtcpBye([10, 20], b"hangup")
    assert bye.serialize() == data
    assert RtcpBye([10, 20], "hangup").serialize() == data


def test_bye_vector_without_reason():
    data = header(1, RTCP_BYE, 1) + struct.pack("!I", 10)
    bye = RtcpBye.parse(data)
    assert bye == RtcpBye([10])
    assert bye.reason is None
    assert bye.serialize() == data


def test_bye_empty_reason_and_no_sources():
    bye = RtcpBye([], b"")
    assert RtcpBye.parse(bye.serialize()) == bye
    assert RtcpBye.parse(header(0, RTCP_BYE, 0)) == RtcpBye()


def test_bye_reason_truncated():
    data = header(1, RTCP_BYE, 2) + struct.pack("!I", 10) + bytes((9,)) + b"abc"
    with pytest.raises(RtcpError, match="reason"):
        parse_compound(data)


def test_bye_more_sources_than_length():
    with pytest.raises(RtcpError):
        parse_compound(header(3, RTCP_BYE, 2) + struct.pack("!II", 1, 2))


# ---------------------------------------------------------------- NACK / PLI

def nack_bytes(sender, media, pairs):
    return (
        header(1, RTCP_RTPFB, 2 + len(pairs))
        + struct.pack("!II", sender, media)
        + b"".join(struct.pack("!HH", pid, blp) for pid, blp in pairs)
    )


@pytest.mark.parametrize(
    "lost, pairs",
    [
        ([100], [(100, 0x0000)]),
        ([100, 101, 116], [(100, 0x8001)]),
        ([100, 117], [(100, 0x0000), (117, 0x0000)]),
        ([100, 200], [(100, 0x0000), (200, 0x0000)]),
        ([65535, 0], [(65535, 0x0001)]),
        ([65530, 65535, 0, 5, 10], [(65530, 0x8430)]),
        ([65530, 65535, 0, 5, 11], [(65530, 0x0430), (11, 0x0000)]),
        (list(range(1, 18)), [(1, 0xFFFF)]),
        (list(range(1, 19)), [(1, 0xFFFF), (18, 0x0000)]),
        ([7, 7, 8], [(7, 0x0001)]),
    ],
)
def test_nack_pid_blp_packing(lost, pairs):
    data = nack_bytes(0xAAAA, 0xBBBB, pairs)
    assert RtcpNack(0xAAAA, 0xBBBB, lost).serialize() == data
    assert RtcpNack.parse(data).lost == sorted(set(lost), key=lambda s: (s - lost[0]) & 0xFFFF)


def test_nack_parse_vector():
    data = nack_bytes(1, 2, [(1000, 0b101), (50, 0)])
    assert RtcpNack.parse(data) == RtcpNack(1, 2, [1000, 1001, 1003, 50])


def test_nack_rejects_out_of_range_sequence():
    with pytest.raises(RtcpError):
        RtcpNack(1, 2, [65536]).serialize()
    with pytest.raises(RtcpError):
        RtcpNack(1, 2, [-1]).serialize()


def test_nack_too_short():
    with pytest.raises(RtcpError):
        parse_compound(header(1, RTCP_RTPFB, 1) + struct.pack("!I", 1))


def test_pli_vector():
    data = header(1, RTCP_PSFB, 2) + struct.pack("!II", 0x1111, 0x2222)
    pli = RtcpPli.parse(data)
    assert pli == RtcpPli(0x1111, 0x2222)
    assert pli.serialize() == data
    with pytest.raises(RtcpError):
        parse_compound(header(1, RTCP_PSFB, 1) + struct.pack("!I", 1))


def test_unknown_feedback_formats_are_skipped():
    tmmbr = header(3, RTCP_RTPFB, 4) + bytes(16)  # RFC 5104 TMMBR, FMT 3
    fir = header(4, RTCP_PSFB, 4) + bytes(16)  # RFC 5104 FIR, FMT 4
    pli = RtcpPli(1, 2)
    assert parse_compound(tmmbr + fir + pli.serialize()) == [pli]


# ---------------------------------------------------------------- compound packets

def test_compound_sr_sdes_bye_round_trip():
    sr = RtcpSenderReport(
        ssrc=0x5EED,
        ntp_timestamp=0xE8F1_2345_6789_ABCD,
        rtp_timestamp=48_000,
        packet_count=50,
        octet_count=8000,
        reports=[ReportBlock(0x1, 12, -3, 70_000, 240, 0x12345678, 0x00010000)],
    )
    sdes = RtcpSdes([SdesChunk(0x5EED, [(SDES_CNAME, b"mixer@voicemix")])])
    bye = RtcpBye([0x5EED], b"conference ended")
    data = serialize_compound([sr, sdes, bye])
    assert data == sr.serialize() + sdes.serialize() + bye.serialize()
    assert parse_compound(data) == [sr, sdes, bye]
    assert serialize_compound(parse_compound(data)) == data


def test_app_and_unknown_types_are_skipped():
    app = header(0, RTCP_APP, 2) + struct.pack("!I", 5) + b"NAME"
    xr = header(0, 207, 2) + bytes(8)  # RFC 3611 XR, not parsed here
    rr = RtcpReceiverReport(5)
    assert parse_compound(rr.serialize() + app + xr) == [rr]
    assert parse_compound(app) == []


def test_padding_on_last_packet():
    rr = RtcpReceiverReport(5).serialize()
    bye = header(1, RTCP_BYE, 2, padding=True) + struct.pack("!I", 5) + b"\x00\x00\x00\x04"
    assert parse_compound(rr + bye) == [RtcpReceiverReport(5), RtcpBye([5])]


def test_padding_on_a_packet_that_is_not_last():
    padded = header(0, RTCP_RR, 2, padding=True) + struct.pack("!I", 5) + b"\x00\x00\x00\x04"
    with pytest.raises(RtcpError, match="last"):
        parse_compound(padded + RtcpBye([5]).serialize())


@pytest.mark.parametrize("pad", [0, 5, 255])
def test_bad_padding_count(pad):
    data = header(0, RTCP_RR, 1, padding=True) + bytes((0, 0, 0, pad))
    with pytest.raises(RtcpError, match="padding"):
        parse_compound(data)


def test_padding_may_not_eat_the_header():
    with pytest.raises(RtcpError):
        parse_compound(header(0, RTCP_BYE, 0, padding=True))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80",
        b"\x80\xc9\x00",
        struct.pack("!BBH", 0x40, RTCP_RR, 0),  # version 1
        struct.pack("!BBH", 0x00, RTCP_RR, 0),  # version 0
        header(0, RTCP_RR, 2) + bytes(4),  # length runs past the data
        RtcpReceiverReport(1).serialize() + b"\x80\xc9",  # trailing partial header
    ],
)
def test_malformed_compound(data):
    with pytest.raises(RtcpError):
        parse_compound(data)


def test_single_packet_parse_checks_type_and_count():
    rr = RtcpReceiverReport(1).serialize()
    with pytest.raises(RtcpError, match="RtcpSenderReport"):
        RtcpSenderReport.parse(rr)
    with pytest.raises(RtcpError, match="one RTCP packet"):
        RtcpReceiverReport.parse(rr + rr)
    with pytest.raises(RtcpError):
        RtcpNack.parse(RtcpPli(1, 2).serialize())
    with pytest.raises(RtcpError):
        RtcpPli.parse(header(2, RTCP_PSFB, 2) + bytes(8))  # FMT 2 is SLI, not PLI


def test_accepts_bytearray_and_memoryview():
    data = RtcpReceiverReport(1).serialize()
    assert parse_compound(bytearray(data)) == parse_compound(memoryview(data))


# ---------------------------------------------------------------- serialize validation

@pytest.mark.parametrize(
    "packet",
    [
        RtcpReceiverReport(2**32),
        RtcpReceiverReport(1, [ReportBlock(1, fraction_lost=256)]),
        RtcpReceiverReport(1, [ReportBlock(1, packets_lost=1 << 23)]),
        RtcpReceiverReport(1, [ReportBlock(1, packets_lost=-(1 << 23) - 1)]),
        RtcpReceiverReport(1, [ReportBlock(1)] * 32),
        RtcpSenderReport(1, 2**64, 0, 0, 0),
        RtcpSenderReport(1, 0, -1, 0, 0),
        RtcpSdes([SdesChunk(1, [(0, b"x")])]),
        RtcpSdes([SdesChunk(1, [(SDES_CNAME, b"x" * 256)])]),
        RtcpSdes([SdesChunk(i, []) for i in range(32)]),
        RtcpBye([1], b"x" * 256),
        RtcpBye(list(range(32))),
        RtcpNack(2**32, 0, [1]),
        RtcpPli(0, -1),
    ],
)
def test_serialize_rejects_out_of_range_fields(packet):
    with pytest.raises(RtcpError):
        packet.serialize()


def test_non_bytes_item_value_is_an_rtcp_error():
    with pytest.raises(RtcpError):
        SdesChunk(1, [(SDES_CNAME, 12)])


# ---------------------------------------------------------------- RFC 5761 demultiplexing

@pytest.mark.parametrize(
    "data, expected",
    [
        (RtcpReceiverReport(1).serialize(), True),
        (RtcpPli(1, 2).serialize(), True),
        (bytes((0x80, 192, 0, 0)), True),
        (bytes((0x80, 223, 0, 0)), True),
        (bytes((0x80, 0)) + bytes(10), False),  # RTP PCMU
        (bytes((0x80, 0x80 | 111)) + bytes(10), False),  # RTP Opus with marker (239)
        (bytes((0x80, 96)) + bytes(10), False),
        (bytes((0x80, 191)) + bytes(10), False),
        (bytes((0x80, 224)) + bytes(10), False),
        (bytes((0x00, 200, 0, 0)), False),  # not version 2 (STUN's first byte is 0 or 1)
        (b"\x80\xc8", False),
        (b"", False),
    ],
)
def test_is_rtcp(data, expected):
    assert is_rtcp(data) is expected


# ---------------------------------------------------------------- properties

u32 = st.integers(0, 2**32 - 1)
report_blocks = st.builds(
    ReportBlock,
    ssrc=u32,
    fraction_lost=st.integers(0, 255),
    packets_lost=st.integers(-(2**23), 2**23 - 1),
    highest_sequence=u32,
    jitter=u32,
    lsr=u32,
    dlsr=u32,
)
block_lists = st.lists(report_blocks, max_size=31)
sender_reports = st.builds(
    RtcpSenderReport,
    ssrc=u32,
    ntp_timestamp=st.integers(0, 2**64 - 1),
    rtp_timestamp=u32,
    packet_count=u32,
    octet_count=u32,
    reports=block_lists,
)
receiver_reports = st.builds(RtcpReceiverReport, ssrc=u32, reports=block_lists)
sdes_items = st.lists(
    st.tuples(st.integers(1, 255), st.binary(max_size=255)), max_size=4
)
sdes_packets = st.builds(
    RtcpSdes, chunks=st.lists(st.builds(SdesChunk, ssrc=u32, items=sdes_items), max_size=31)
)
byes = st.builds(
    RtcpBye, sources=st.lists(u32, max_size=31), reason=st.none() | st.binary(max_size=255)
)


@st.composite
def nack_sequences(draw):
    """Lost sequence numbers in RTP order, possibly wrapping past 65535."""
    start = draw(st.integers(0, 65535))
    offsets = draw(st.lists(st.integers(0, 65535), min_size=1, max_size=60, unique=True))
    return [(start + offset) & 0xFFFF for offset in sorted(offsets)]


nacks = st.builds(RtcpNack, sender_ssrc=u32, media_ssrc=u32, lost=nack_sequences())
plis = st.builds(RtcpPli, sender_ssrc=u32, media_ssrc=u32)
any_packet = st.one_of(sender_reports, receiver_reports, sdes_packets, byes, nacks, plis)


@given(any_packet)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_each_type(packet):
    data = packet.serialize()
    assert len(data) % 4 == 0
    assert type(packet).parse(data) == packet
    assert parse_compound(data) == [packet]


@given(st.lists(any_packet, min_size=1, max_size=6))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_compound(packets):
    data = serialize_compound(packets)
    assert parse_compound(data) == packets
    assert serialize_compound(parse_compound(data)) == data


def _parses_or_rtcp_error(data: bytes) -> None:
    try:
        packets = parse_compound(data)
    except RtcpError:
        return
    for packet in packets:  # whatever parsed must serialize again
        try:
            packet.serialize()
        except RtcpError:
            pass


@given(st.binary(max_size=512))
@example(b"")
@example(b"\xa0\xc8\x00\x00")
@example(b"\xa0\xcb\x00\x01\x00\x00\x00\x05")
def test_arbitrary_bytes_raise_only_rtcp_error(data):
    _parses_or_rtcp_error(data)


@st.composite
def plausible_rtcp(draw):
    """Bytes with a valid-looking header so the fuzzer reaches the payload parsers."""
    first = 0x80 | draw(st.integers(0, 0x3F))
    packet_type = draw(st.sampled_from([200, 201, 202, 203, 204, 205, 206, 207]))
    body = draw(st.binary(max_size=200))
    words = draw(st.integers(0, 60)) if draw(st.booleans()) else len(body) // 4
    tail = draw(st.binary(max_size=8))
    return struct.pack("!BBH", first, packet_type, words) + body + tail


@given(st.lists(plausible_rtcp(), min_size=1, max_size=4))
def test_plausible_headers_raise_only_rtcp_error(chunks):
    _parses_or_rtcp_error(b"".join(chunks))


@given(any_packet, st.data())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_mutated_valid_packets_raise_only_rtcp_error(packet, data):
    raw = bytearray(packet.serialize())
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    _parses_or_rtcp_error(bytes(raw[:cut]))
    _parses_or_rtcp_error(bytes(raw))
