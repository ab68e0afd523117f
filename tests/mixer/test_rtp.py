"""RTP header parse/serialize (RFC 3550 section 5.1) and header extensions (RFC 8285, RFC 6464).

Every vector is built by hand with struct.pack from the section 5.1 layout, never with our
serializer:

     0                   1                   2                   3
    |V=2|P|X|  CC   |M|     PT      |       sequence number         |
    |                           timestamp                           |
    |           synchronization source (SSRC) identifier            |
    |            contributing source (CSRC) identifiers             |
"""

import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mixer._rtp import AUDIO_LEVEL_SILENT, EXTENSION_PROFILE_ONE_BYTE, EXTENSION_PROFILE_TWO_BYTE, RTP_HEADER_SIZE, RTP_MAX_CSRC, RTP_VERSION, RtpError, RtpPacket, audio_level_extension, build_rtp, encode_extensions


def rtp_header(pt=0, seq=0, ts=0, ssrc=0, *, marker=False, padding=False, extension=False,
               csrc=(), version=2, cc=None) -> bytes:
    """The fixed header plus CSRC list, packed field by field."""
    cc = len(csrc) if cc is None else cc
    b0 = (version << 6) | (0x20 if padding else 0) | (0x10 if extension else 0) | cc
    b1 = (0x80 if marker else 0) | pt
    fixed = struct.pack("!BBHII", b0, b1, seq, ts, ssrc)
    return fixed + b"".join(struct.pack("!I", c) for c in csrc)


def ext_block(profile: int, data: bytes) -> bytes:
    """RFC 3550 section 5.3.1 extension header: profile, length in 32-bit words, then the data."""
    assert len(data) % 4 == 0
    return struct.pack("!HH", profile, len(data) // 4) + data


def fields(p: RtpPacket) -> tuple:
    return (p.version, p.marker, p.payload_type, p.sequence_number, p.timestamp, p.ssrc, p.csrc,
            p.extension_profile, p.extension_data, p.payload, p.padding_size)


# --------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------

def test_constants_are_the_rfc_values():
    assert RTP_VERSION == 2
    assert RTP_HEADER_SIZE == 12
    assert RTP_MAX_CSRC == 15
    assert EXTENSION_PROFILE_ONE_BYTE == 0xBEDE
    assert EXTENSION_PROFILE_TWO_BYTE == 0x1000
    assert AUDIO_LEVEL_SILENT == 127
    assert issubclass(RtpError, ValueError)


# --------------------------------------------------------------------------------------------------
# Hand-built vectors: parse and serialize
# --------------------------------------------------------------------------------------------------

def test_plain_header():
    payload = bytes(range(160))
    wire = rtp_header(0, 0x1234, 0xDEADBEEF, 0x01020304) + payload
    assert wire[:12] == bytes.fromhex("80001234deadbeef01020304")
    p = RtpPacket.parse(wire)
    assert p.version == 2
    assert p.marker is False
    assert p.payload_type == 0
    assert p.sequence_number == 0x1234
    assert p.timestamp == 0xDEADBEEF
    assert p.ssrc == 0x01020304
    assert p.csrc == ()
    assert p.extension_profile == -1
    assert p.extension_data == b""
    assert p.extensions == {}
    assert p.padding_size == 0
    assert p.payload == payload
    assert p.serialize() == wire
    assert RtpPacket(0, 0x1234, 0xDEADBEEF, 0x01020304, payload).serialize() == wire


def test_header_only_packet_has_empty_payload():
    wire = rtp_header(111, 65535, 0xFFFFFFFF, 0xFFFFFFFF)
    p = RtpPacket.parse(wire)
    assert (p.payload_type, p.sequence_number) == (111, 65535)
    assert (p.timestamp, p.ssrc) == (0xFFFFFFFF, 0xFFFFFFFF)
    assert p.payload == b""
    assert p.serialize() == wire


def test_marker_and_payload_type_share_the_second_byte():
    wire = rtp_header(111, 7, 960, 42, marker=True) + b"\x01\x02"
    assert wire[1] == 0x80 | 111
    p = RtpPacket.parse(wire)
    assert p.marker is True
    assert p.payload_type == 111
    assert RtpPacket(111, 7, 960, 42, b"\x01\x02", marker=True).serialize() == wire
    # PT 127 with marker: both bits of the byte are set
    p = RtpPacket.parse(rtp_header(127, 0, 0, 0, marker=True))
    assert (p.marker, p.payload_type) == (True, 127)


@pytest.mark.parametrize("count", [1, 2, 15])
def test_csrc_list(count):
    csrc = tuple(0x11110000 + i for i in range(count))
    wire = rtp_header(8, 100, 1600, 0xCAFEBABE, csrc=csrc) + b"\xd5" * 160
    assert wire[0] == 0x80 | count
    p = RtpPacket.parse(wire)
    assert p.csrc == csrc
    assert p.payload == b"\xd5" * 160
    assert p.serialize() == wire
    assert RtpPacket(8, 100, 1600, 0xCAFEBABE, b"\xd5" * 160, csrc=csrc).serialize() == wire


@pytest.mark.parametrize("pad", [1, 3, 4, 255])
def test_padding(pad):
    payload = b"\xaa" * 20
    padding = b"\x00" * (pad - 1) + bytes([pad])
    wire = rtp_header(0, 1, 2, 3, padding=True) + payload + padding
    p = RtpPacket.parse(wire)
    assert p.padding_size == pad
    assert p.payload == payload
    assert p.serialize() == wire
    assert RtpPacket(0, 1, 2, 3, payload, padding_size=pad).serialize() == wire


def test_padding_contents_other_than_the_count_are_ignored():
    wire = rtp_header(0, 1, 2, 3, padding=True) + b"PAYLOAD" + b"\xff\xee\x03"
    p = RtpPacket.parse(wire)
    assert p.payload == b"PAYLOAD"
    assert p.padding_size == 3


def test_padding_may_cover_everything_after_the_header():
    wire = rtp_header(0, 1, 2, 3, padding=True) + b"\x00\x00\x00\x04"
    p = RtpPacket.parse(wire)
    assert p.payload == b""
    assert p.padding_size == 4


def test_one_byte_extension_with_padding_bytes_between_elements():
    # RFC 8285 section 4.2: ID(4) L(4) with L = length - 1; zero bytes are padding between elements.
    elements = (
        bytes([0x10]) + b"\x7f"            # id 1, 1 byte
        + b"\x00\x00"                        # padding
        + bytes([0x32]) + b"abc"             # id 3, 3 bytes
        + b"\x00"                            # padding
        + bytes([0xEF]) + bytes(range(16))   # id 14, 16 bytes
    )
    data = elements + b"\x00" * (-len(elements) % 4)
    wire = rtp_header(111, 5, 6, 7, extension=True) + ext_block(0xBEDE, data) + b"opus"
    p = RtpPacket.parse(wire)
    assert p.extension_profile == 0xBEDE
    assert p.extension_data == data
    assert p.extensions == {1: b"\x7f", 3: b"abc", 14: bytes(range(16))}
    assert p.payload == b"opus"
    assert p.serialize() == wire


def test_one_byte_extension_id_15_stops_processing():
    # ID 15: its length is ignored and nothing after it is considered (RFC 8285 section 4.2). The
    # bogus "length" after it would run past the block if it were honoured.
    data = bytes([0x20]) + b"\x05" + bytes([0xFF]) + b"\x41" + bytes([0x5F]) + b"\x00\x00\x00"
    wire = rtp_header(111, 5, 6, 7, extension=True) + ext_block(0xBEDE, data) + b"x"
    p = RtpPacket.parse(wire)
    assert p.extensions == {2: b"\x05"}
    assert p.audio_level(5) is None
    assert p.payload == b"x"
    assert p.serialize() == wire


@pytest.mark.parametrize("appbits", [0x0, 0x5, 0xF])
def test_two_byte_extension_with_padding_and_empty_element(appbits):
    # RFC 8285 section 4.3: 0x100 + 4 appbits; ID(8) L(8) with L = length, zero-length allowed.
    profile = 0x1000 | appbits
    elements = (
        b"\x01\x00"                      # id 1, empty
        + b"\x00"                        # padding
        + b"\x0f\x02" + b"hi"            # id 15 is an ordinary id here
        + b"\x00\x00"                    # padding
        + b"\xff\x11" + bytes(range(17)) # id 255, 17 bytes (too long for the one-byte form)
    )
    data = elements + b"\x00" * (-len(elements) % 4)
    wire = rtp_header(96, 1, 2, 3, extension=True) + ext_block(profile, data) + b"pl"
    p = RtpPacket.parse(wire)
    assert p.extension_profile == profile
    assert p.extensions == {1: b"", 15: b"hi", 255: bytes(range(17))}
    assert p.payload == b"pl"
    assert p.serialize() == wire


def test_unknown_extension_profile_is_kept_raw():
    # RFC 3550 section 5.3.1 extensions that are not RFC 8285 are carried, not interpreted.
    data = b"\xff" * 8
    wire = rtp_header(0, 1, 2, 3, extension=True) + ext_block(0xABCD, data) + b"p"
    p = RtpPacket.parse(wire)
    assert (p.extension_profile, p.extension_data, p.extensions) == (0xABCD, data, {})
    assert p.serialize() == wire


def test_empty_extension_block():
    wire = rtp_header(0, 1, 2, 3, extension=True) + ext_block(0xBEDE, b"") + b"p"
    p = RtpPacket.parse(wire)
    assert (p.extension_profile, p.extension_data, p.extensions) == (0xBEDE, b"", {})
    assert p.payload == b"p"
    assert p.serialize() == wire


def test_everything_at_once():
    csrc = (1, 2, 3)
    data = bytes([0x10, 0x8A, 0x00, 0x00])
    wire = (rtp_header(111, 65535, 4294967295, 0x12345678, marker=True, padding=True,
                       extension=True, csrc=csrc)
            + ext_block(0xBEDE, data) + b"payload!" + b"\x00\x00\x03")
    p = RtpPacket.parse(wire)
    assert fields(p) == (2, True, 111, 65535, 4294967295, 0x12345678, csrc, 0xBEDE, data,
                         b"payload!", 3)
    assert p.serialize() == wire
    assert p.audio_level(1) == (True, 10)
    q = RtpPacket(111, 65535, 4294967295, 0x12345678, b"payload!", marker=True, csrc=csrc,
                  extensions={1: b"\x8a"}, padding_size=3)
    assert q.serialize() == wire


def test_parse_accepts_bytearray_and_memoryview():
    wire = rtp_header(0, 9, 9, 9) + b"abc"
    for buf in (bytearray(wire), memoryview(wire)):
        assert fields(RtpPacket.parse(buf)) == fields(RtpPacket.parse(wire))


# --------------------------------------------------------------------------------------------------
# Malformed input: always RtpError
# --------------------------------------------------------------------------------------------------

def _ok_ext(profile, data, tail=b""):
    return rtp_header(0, 1, 2, 3, extension=True) + ext_block(profile, data) + tail


MALFORMED = {
    "empty": b"",
    "one byte": b"\x80",
    "eleven bytes": rtp_header()[:11],
    "version 0": rtp_header(version=0),
    "version 1": rtp_header(version=1) + b"payload",
    "version 3": rtp_header(version=3) + b"payload",
    "csrc overrun": rtp_header(cc=2) + b"\x00\x00\x00\x01",
    "csrc overrun 15": rtp_header(cc=15) + b"\x00" * 56,
    "extension header overrun": rtp_header(extension=True) + b"\xbe\xde\x00",
    "extension header missing": rtp_header(extension=True),
    "extension header overrun after csrc": rtp_header(extension=True, csrc=(5,)) + b"\xbe\xde",
    "extension length overrun": (rtp_header(extension=True) + b"\xbe\xde\x00\x02"
                                 + b"\x10\x01\x00\x00"),
    "extension length overrun by padding": (rtp_header(padding=True, extension=True)
                                            + b"\xbe\xde\x00\x01" + b"\x10\x01\x00\x02"),
    "one-byte element overrun": _ok_ext(0xBEDE, bytes([0x13]) + b"ab\x00", b"payload"),
    "one-byte element overrun after padding": _ok_ext(0xBEDE, b"\x10\x01\x00" + bytes([0x20])),
    "one-byte element header at end": _ok_ext(0xBEDE, b"\x10\x01\x00\x00" + b"\x00\x00\x00\x30"),
    "two-byte element length missing": _ok_ext(0x1000, b"\x00\x00\x00\x07"),
    "two-byte element overrun": _ok_ext(0x1000, b"\x01\x03ab", b"payload"),
    "two-byte element overrun appbits": _ok_ext(0x100F, b"\x01\x00\x02\xff"),
    "padding zero": rtp_header(padding=True) + b"payload\x00",
    "padding larger than packet": rtp_header(padding=True) + b"\x00\x00\x00\x20",
    "padding eats the header": rtp_header(padding=True) + b"\x00\x00\x00\x05",
    "padding eats the csrc list": rtp_header(padding=True, csrc=(1,)) + b"\x02",
    "padding on header-only packet": rtp_header(padding=True)[:11] + b"\x0c",
}


@pytest.mark.parametrize("wire", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_raises_rtp_error(wire):
    with pytest.raises(RtpError) as info:
        RtpPacket.parse(wire)
    assert type(info.value) is RtpError


def test_boundaries_next_to_the_malformed_cases_parse():
    # Each of these is one byte/word away from a MALFORMED vector and must be accepted.
    assert RtpPacket.parse(rtp_header(cc=2) + b"\x00" * 8).csrc == (0, 0)
    assert RtpPacket.parse(rtp_header(extension=True) + b"\xbe\xde\x00\x00").extension_data == b""
    assert RtpPacket.parse(_ok_ext(0xBEDE, bytes([0x12]) + b"abc")).extensions == {1: b"abc"}
    assert RtpPacket.parse(_ok_ext(0x1000, b"\x01\x02ab")).extensions == {1: b"ab"}
    assert RtpPacket.parse(rtp_header(padding=True) + b"\x00\x00\x00\x04").payload == b""


def test_constructor_rejects_out_of_range_fields():
    for kwargs in ({"payload_type": 128}, {"payload_type": -1}, {"sequence_number": 65536},
                   {"sequence_number": -1}, {"csrc": tuple(range(16))}, {"padding_size": 256},
                   {"padding_size": -1}):
        with pytest.raises(RtpError):
            RtpPacket(**kwargs)


def test_encode_extensions_rejects_unencodable_elements():
    with pytest.raises(RtpError):
        encode_extensions({256: b"x"})
    with pytest.raises(RtpError):
        encode_extensions({1: b"x" * 256})
    with pytest.raises(RtpError):
        encode_extensions({0: b"x"})


def test_serialize_rejects_unaligned_extension_data():
    p = RtpPacket(0, 1, 2, 3, b"")
    p.extension_profile = 0xBEDE
    p.extension_data = b"\x10\x01\x00"
    with pytest.raises(RtpError):
        p.serialize()
    with pytest.raises(RtpError):
        build_rtp(0, 1, 2, 3, b"", extension_profile=0xBEDE, extension_data=b"\x10\x01\x00")


# --------------------------------------------------------------------------------------------------
# encode_extensions (RFC 8285): form selection, bytes
# --------------------------------------------------------------------------------------------------

def test_encode_extensions_one_byte_form():
    profile, block = encode_extensions({3: b"abc", 1: b"\x7f"})
    assert profile == 0xBEDE
    assert block == bytes([0x10]) + b"\x7f" + bytes([0x32]) + b"abc" + b"\x00\x00"


def test_encode_extensions_two_byte_form_when_needed():
    # id 15, a 17-byte element and an empty element each force the two-byte form
    for elements, expected in (
        ({15: b"a"}, b"\x0f\x01a\x00"),
        ({1: b"x" * 17}, b"\x01\x11" + b"x" * 17 + b"\x00"),
        ({2: b""}, b"\x02\x00\x00\x00"),
    ):
        assert encode_extensions(elements) == (0x1000, expected)


# --------------------------------------------------------------------------------------------------
# build_rtp (the send loop's fast path)
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("marker", [False, True])
@pytest.mark.parametrize("extensions", [None, {1: b"\x85"}, {1: b"\x85", 2: b"abcd"}, {20: b"z"}])
def test_build_rtp_equals_packet_serialize(marker, extensions):
    payload = bytes(range(97))
    p = RtpPacket(111, 40000, 123456789, 0xA1B2C3D4, payload, marker=marker, extensions=extensions)
    if extensions:
        wire = build_rtp(111, 40000, 123456789, 0xA1B2C3D4, payload, marker,
                         p.extension_profile, p.extension_data)
    else:
        wire = build_rtp(111, 40000, 123456789, 0xA1B2C3D4, payload, marker)
    assert wire == p.serialize()


def test_build_rtp_hand_vector():
    level = audio_level_extension(1, 42, True)
    wire = build_rtp(111, 0xFFFF, 0x01020304, 0x0A0B0C0D, b"\xfc\xff", True, 0xBEDE, level)
    expected = rtp_header(111, 0xFFFF, 0x01020304, 0x0A0B0C0D, marker=True, extension=True) \
        + ext_block(0xBEDE, bytes([0x10, 0x80 | 42, 0, 0])) + b"\xfc\xff"
    assert wire == expected


def test_build_rtp_with_empty_extension_block():
    wire = build_rtp(0, 1, 2, 3, b"p", False, 0xBEDE, None)
    assert wire == rtp_header(0, 1, 2, 3, extension=True) + ext_block(0xBEDE, b"") + b"p"


# --------------------------------------------------------------------------------------------------
# RFC 6464 client-to-mixer audio level
# --------------------------------------------------------------------------------------------------

def test_audio_level_one_byte_profile():
    # byte: V(1) level(7), level in -dBov
    data = bytes([0x10, 0x00 | 127]) + bytes([0x30, 0x80 | 0])
    wire = rtp_header(111, 1, 2, 3, extension=True) + ext_block(0xBEDE, data) + b"x"
    p = RtpPacket.parse(wire)
    assert p.audio_level(1) == (False, 127)
    assert p.audio_level(3) == (True, 0)
    assert p.audio_level(2) is None
    assert p.audio_level(0) is None


def test_audio_level_two_byte_profile():
    data = b"\x00" + b"\x07\x01" + bytes([0x80 | 33])
    wire = rtp_header(111, 1, 2, 3, extension=True) + ext_block(0x1000, data) + b"x"
    p = RtpPacket.parse(wire)
    assert p.audio_level(7) == (True, 33)
    assert p.audio_level(1) is None


def test_audio_level_absent_or_empty():
    assert RtpPacket.parse(rtp_header(0, 1, 2, 3) + b"x").audio_level(1) is None
    wire = rtp_header(0, 1, 2, 3, extension=True) + ext_block(0x1000, b"\x01\x00\x00\x00")
    assert RtpPacket.parse(wire).audio_level(1) is None  # zero-length element carries no level


@pytest.mark.parametrize("level,voice", [(0, False), (0, True), (30, True), (127, False)])
def test_audio_level_extension_round_trip(level, voice):
    block = audio_level_extension(4, level, voice)
    assert block == bytes([0x40, (0x80 if voice else 0) | level, 0, 0])
    wire = build_rtp(111, 1, 2, 3, b"x", False, 0xBEDE, block)
    assert RtpPacket.parse(wire).audio_level(4) == (voice, level)


def test_audio_level_extension_clamps_and_validates():
    assert audio_level_extension(1, 300, False)[1] == 127
    assert audio_level_extension(1, -5, True)[1] == 0x80
    for bad in (0, 15):
        with pytest.raises(RtpError):
            audio_level_extension(bad, 10, True)


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------

def near_valid_packets():
    """Bytes that get past the version check, so the deeper length checks are exercised too."""
    return st.builds(
        lambda b0, rest, ext_profile, ext_len, tail: (
            bytes([0x80 | (b0 & 0x3F)]) + rest
            + (struct.pack("!HH", ext_profile, ext_len) if b0 & 0x10 else b"") + tail),
        st.integers(0, 255),
        st.binary(min_size=11, max_size=11),
        st.sampled_from([0xBEDE, 0x1000, 0x100A, 0x1234]),
        st.integers(0, 12),
        st.binary(max_size=80),
    )


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.binary(max_size=120), near_valid_packets()))
@example(b"\x80" * 11)
@example(b"\xb0" + b"\x00" * 11)
@example(b"\x90" + b"\x00" * 11 + b"\xbe\xde\xff\xff")
def test_parse_of_arbitrary_bytes_raises_only_rtp_error(data):
    try:
        p = RtpPacket.parse(data)
    except Exception as exc:  # noqa: BLE001 - the point is to catch anything
        assert type(exc) is RtpError, repr(exc)
        return
    # accepted: the pieces account for every byte, and re-serializing a zero-padded form is stable
    ext = 4 + len(p.extension_data) if p.extension_profile >= 0 else 0
    assert 12 + 4 * len(p.csrc) + ext + len(p.payload) + p.padding_size == len(data)
    _ = p.extensions  # must not raise
    assert fields(RtpPacket.parse(p.serialize())) == fields(p)


one_byte_elements = st.dictionaries(st.integers(1, 14), st.binary(min_size=1, max_size=16),
                                    max_size=6)
two_byte_elements = st.dictionaries(st.integers(1, 255), st.binary(max_size=40), min_size=1,
                                    max_size=6)

packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=st.integers(0, 65535),
    timestamp=st.integers(0, 2**32 - 1),
    ssrc=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=300),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 2**32 - 1), max_size=15).map(tuple),
    extensions=st.one_of(st.none(), one_byte_elements, two_byte_elements),
    padding_size=st.integers(0, 255),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets)
def test_parse_serialize_round_trip(p):
    wire = p.serialize()
    q = RtpPacket.parse(wire)
    assert fields(q) == fields(p)
    assert q.extensions == p.extensions
    assert q.serialize() == wire
    # the header the serializer wrote is the section 5.1 layout
    b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", wire[:12])
    assert b0 >> 6 == 2
    assert bool(b0 & 0x20) == (p.padding_size > 0)
    assert bool(b0 & 0x10) == (p.extension_profile >= 0)
    assert b0 & 0x0F == len(p.csrc)
    assert (b1 >> 7, b1 & 0x7F, seq, ts, ssrc) == (p.marker, p.payload_type, p.sequence_number,
                                                 p.timestamp, p.ssrc)


@settings(max_examples=300, deadline=None)
@given(one_byte_elements.filter(bool) | two_byte_elements)
def test_extensions_round_trip_through_the_wire(elements):
    p = RtpPacket.parse(RtpPacket(111, 1, 2, 3, b"x", extensions=elements).serialize())
    assert p.extensions == elements
    profile, _ = encode_extensions(elements)
    assert p.extension_profile == profile
    for ident, data in elements.items():
        level = p.audio_level(ident)
        if data:
            assert level == (bool(data[0] & 0x80), data[0] & 0x7F)
        else:
            assert level is None


fast_path_packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=st.integers(0, 65535),
    timestamp=st.integers(0, 2**32 - 1),
    ssrc=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=300),
    marker=st.booleans(),
    extensions=st.one_of(st.none(), one_byte_elements, two_byte_elements),
)


@settings(max_examples=300, deadline=None)
@given(fast_path_packets)
def test_build_rtp_property(p):
    # build_rtp has no CSRC list and no padding: it is the send loop's fast path
    if p.extension_profile >= 0:
        wire = build_rtp(p.payload_type, p.sequence_number, p.timestamp, p.ssrc, p.payload,
                         p.marker, p.extension_profile, p.extension_data)
    else:
        wire = build_rtp(p.payload_type, p.sequence_number, p.timestamp, p.ssrc, p.payload,
                         p.marker)
    assert wire == p.serialize()
