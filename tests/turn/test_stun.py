"""STUN messages: RFC 5769 test vector, interop with aioice's encoder, error paths, and fuzzing."""
import os
import struct

import aioice.stun
import pytest
from hypothesis import given, settings, strategies as st

from mixer.turn import stun
from mixer.turn.errors import StunError

# RFC 5769 2.1: sample request, short-term credential password "VOkJxbRl1RmTxUk/WvJxBt"
RFC5769_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "802200105354554e207465737420636c69656e74"
    "002400046e0001ff"
    "80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf")


def test_rfc5769_sample_request_parses_and_verifies():
    message = stun.parse(RFC5769_REQUEST)  # FINGERPRINT is checked while parsing
    assert message.method == stun.BINDING and message.cls == stun.REQUEST
    assert message.text(stun.USERNAME) == "evtj:h6vY"
    assert message.text(stun.SOFTWARE) == "STUN test client"
    assert stun.check_integrity(message, b"VOkJxbRl1RmTxUk/WvJxBt")
    assert not stun.check_integrity(message, b"wrong")


def test_rfc5769_vector_with_one_flipped_bit_fails_fingerprint():
    damaged = bytearray(RFC5769_REQUEST)
    damaged[30] ^= 1
    with pytest.raises(StunError, match="FINGERPRINT"):
        stun.parse(bytes(damaged))


@pytest.mark.parametrize("integrity", ["sha1", "sha256", "both"])
def test_build_parse_roundtrip_with_integrity(integrity):
    txid = os.urandom(12)
    key = stun.long_term_key("alice", "voicemix", "pw")
    raw = stun.build(stun.ALLOCATE, stun.REQUEST, txid,
                     [stun.uint32_attribute(stun.REQUESTED_TRANSPORT, 17 << 24), (stun.USERNAME, b"alice")],
                     key=key, integrity=integrity)
    message = stun.parse(raw)
    assert (message.method, message.cls, message.transaction_id) == (stun.ALLOCATE, stun.REQUEST, txid)
    assert stun.integrity_kind(message) == ("sha1" if integrity == "sha1" else "sha256")
    assert stun.check_integrity(message, key)
    assert not stun.check_integrity(message, stun.long_term_key("alice", "voicemix", "other"))


def test_integrity_matches_aioice():
    """aioice (another implementation) signs a message; we verify it, and it verifies ours."""
    key = b"some-key"
    theirs = aioice.stun.Message(aioice.stun.Method.BINDING, aioice.stun.Class.REQUEST)
    theirs.attributes["USERNAME"] = "a:b"
    theirs.add_message_integrity(key)
    theirs.add_fingerprint()
    assert stun.check_integrity(stun.parse(bytes(theirs)), key)

    ours = stun.build(stun.BINDING, stun.SUCCESS, os.urandom(12),
                      [(stun.XOR_MAPPED_ADDRESS, stun.encode_xor_address(("192.0.2.1", 32853), b"\0" * 12))],
                      key=key)
    parsed = aioice.stun.parse_message(ours)
    assert parsed.message_method == aioice.stun.Method.BINDING
    assert aioice.stun.message_integrity(parsed._integrity_data, key) == parsed.attributes["MESSAGE-INTEGRITY"]


@pytest.mark.parametrize("address", [("192.0.2.1", 32853), ("2001:db8:1234:5678:11:2233:4455:6677", 32853)])
def test_xor_address_roundtrip_and_rfc5769_values(address):
    txid = bytes.fromhex("b7e7a701bc34d686fa87dfae")
    value = stun.encode_xor_address(address, txid)
    assert stun.decode_xor_address(value, txid) == address
    if ":" not in address[0]:
        assert value == bytes.fromhex("0001a147e112a643")  # RFC 5769 2.2


def test_method_and_class_bits():
    for method in (stun.BINDING, stun.ALLOCATE, stun.CHANNEL_BIND, 0xFFF):
        for cls in (stun.REQUEST, stun.INDICATION, stun.SUCCESS, stun.ERROR):
            raw = stun.build(method, cls, os.urandom(12), [])
            parsed = stun.parse(raw)
            assert (parsed.method, parsed.cls) == (method, cls)
    assert stun.message_type(stun.ALLOCATE, stun.ERROR) == 0x0113


@pytest.mark.parametrize("raw, reason", [
    (b"", "shorter"),
    (b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"\0" * 11, "shorter"),
    (b"\x80\x01\x00\x00\x21\x12\xa4\x42" + b"\0" * 12, "first two bits"),
    (b"\x00\x01\x00\x00\x21\x12\xa4\x43" + b"\0" * 12, "cookie"),
    (b"\x00\x01\x00\x02\x21\x12\xa4\x42" + b"\0" * 14, "multiple of 4"),
    (b"\x00\x01\x00\x08\x21\x12\xa4\x42" + b"\0" * 12 + b"\x00\x06\x00\x09abcd", "runs past"),
    (b"\x00\x01\x00\x04\x21\x12\xa4\x42" + b"\0" * 12 + b"\x00\x06\x00\x00" + b"", None),
    (b"\x00\x01\x00\x08\x21\x12\xa4\x42" + b"\0" * 16, "length does not match"),
])
def test_malformed_messages_are_stun_errors(raw, reason):
    if reason is None:
        assert stun.parse(raw).get(stun.USERNAME) == b""  # an empty attribute is well formed
        return
    with pytest.raises(StunError, match=reason):
        stun.parse(raw)


def test_attribute_after_fingerprint_is_refused():
    raw = stun.build(stun.BINDING, stun.REQUEST, os.urandom(12), [])
    extra = struct.pack("!HH", stun.SOFTWARE, 4) + b"abcd"
    raw = bytearray(raw + extra)
    struct.pack_into("!H", raw, 2, len(raw) - 20)
    with pytest.raises(StunError):
        stun.parse(bytes(raw))


def test_unknown_comprehension_required_attributes_are_listed_once():
    raw = stun.build(stun.BINDING, stun.REQUEST, os.urandom(12),
                     [(0x0003, b"\0\0\0\0"), (0x7001, b"x"), (0x0003, b"\0\0\0\0"), (0x8123, b"ok"),
                      (stun.DONT_FRAGMENT, b"")])
    assert stun.parse(raw).unknown_required() == [0x0003, 0x7001, stun.DONT_FRAGMENT]


def test_typed_accessors_refuse_malformed_values():
    txid = os.urandom(12)
    raw = stun.build(stun.ALLOCATE, stun.REQUEST, txid, [
        (stun.LIFETIME, b"\0\0\1"), (stun.XOR_PEER_ADDRESS, b"\0\x01\0\0\0"), (stun.USERNAME, b"\xff\xfe"),
        (stun.CHANNEL_NUMBER, b"\x40"), (stun.ERROR_CODE, b"\0")])
    message = stun.parse(raw)
    for accessor in (lambda: message.uint32(stun.LIFETIME), lambda: message.xor_address(stun.XOR_PEER_ADDRESS),
                     lambda: message.text(stun.USERNAME), lambda: stun.channel_number(message),
                     message.error_code):
        with pytest.raises(StunError):
            accessor()


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_parse_raises_only_stun_error(data):
    try:
        message = stun.parse(data)
    except StunError:
        return
    # whatever parsed must be safe to interrogate
    assert isinstance(message.unknown_required(), list)
    assert stun.integrity_kind(message) in (None, "sha1", "sha256")


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=120))
def test_fuzz_attribute_bodies_after_a_valid_header(body):
    """Random attribute area behind a correct header (the cookie and length pass)."""
    padded = body + b"\0" * (-len(body) % 4)
    raw = struct.pack("!HHI", 0x0003, len(padded), stun.STUN_MAGIC_COOKIE) + os.urandom(12) + padded
    try:
        message = stun.parse(raw)
    except StunError:
        return
    for attr in (stun.LIFETIME, stun.XOR_PEER_ADDRESS, stun.USERNAME, stun.REQUESTED_TRANSPORT):
        for accessor in (message.uint32, message.xor_address, message.text):
            try:
                accessor(attr)
            except StunError:
                pass
    stun.check_integrity(message, b"key")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF).filter(lambda t: t != stun.FINGERPRINT),
                          st.binary(max_size=40)), max_size=8))
def test_fuzz_build_parse_roundtrip(attributes):
    txid = os.urandom(12)
    message = stun.parse(stun.build(stun.REFRESH, stun.REQUEST, txid, attributes))
    assert [(kind, value) for kind, value, _ in message.attributes[:-1]] == attributes
    assert message.attributes[-1][0] == stun.FINGERPRINT
