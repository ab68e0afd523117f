"""G.711 mu-law and A-law against an independent implementation (`g711_reference`: the classic
segment-search formulation in plain Python, bit-exact with CPython's former `audioop`, which is gone
in Python 3.13)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.mixer.g711_reference import alaw_to_linear, linear_to_alaw, linear_to_ulaw, ulaw_to_linear
from mixer._g711 import alaw_decode, alaw_decode_into, alaw_encode, ulaw_decode, ulaw_decode_into, ulaw_encode

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def test_ulaw_encode_matches_the_reference_for_every_sample():
    assert ulaw_encode(ALL_SAMPLES) == bytes(linear_to_ulaw(int(x)) for x in ALL_SAMPLES)


def test_alaw_encode_matches_the_reference_for_every_sample():
    assert alaw_encode(ALL_SAMPLES) == bytes(linear_to_alaw(int(x)) for x in ALL_SAMPLES)


def test_ulaw_decode_matches_the_reference_for_every_code():
    expected = np.array([ulaw_to_linear(c) for c in ALL_CODES], dtype=np.int16)
    np.testing.assert_array_equal(ulaw_decode(ALL_CODES), expected)


def test_alaw_decode_matches_the_reference_for_every_code():
    expected = np.array([alaw_to_linear(c) for c in ALL_CODES], dtype=np.int16)
    np.testing.assert_array_equal(alaw_decode(ALL_CODES), expected)


def test_known_code_points():
    # G.711: silence encodes to 0xFF (mu) / 0xD5 (A); the extremes of each table
    zero = np.zeros(1, dtype=np.int16)
    assert ulaw_encode(zero) == b"\xff"
    assert alaw_encode(zero) == b"\xd5"
    assert ulaw_decode(b"\xff\x7f\x80\x00").tolist() == [0, 0, 32124, -32124]
    assert alaw_decode(b"\xd5\x55\xaa\x2a").tolist() == [8, -8, 32256, -32256]


def test_every_code_is_a_fixed_point_of_decode_then_encode():
    # Decoded values lie inside their own quantization interval (except mu-law's negative zero).
    u = ulaw_encode(ulaw_decode(ALL_CODES))
    assert [c for c in range(256) if u[c] != c] == [0x7F]
    assert u[0x7F] == 0xFF
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES


def _segments(codes: np.ndarray, law: str) -> np.ndarray:
    """The 3-bit segment (exponent) of each code, after undoing the law's bit inversion."""
    plain = (~codes if law == "mu" else codes ^ 0x55).astype(np.uint8)
    return (plain >> 4) & 7


@pytest.mark.parametrize("law", ["mu", "A"])
def test_quantization_error_per_segment(law):
    encode, decode = (ulaw_encode, ulaw_decode) if law == "mu" else (alaw_encode, alaw_decode)
    codes = np.frombuffer(encode(ALL_SAMPLES), dtype=np.uint8)
    x = ALL_SAMPLES.astype(np.int64)
    err = np.abs(decode(codes.tobytes()).astype(np.int64) - x)
    seg = _segments(codes, law)
    for s in range(8):
        in_seg = seg == s
        if law == "mu":
            # 14-bit magnitude (x >> 2): step 2**(s+1) there, so 2**(s+3) here; half a step plus
            # the 3 dropped low bits, except past the clip level (8159 << 2) at the top
            bound = np.where(np.abs(x) <= (8159 << 2) + 3, 2 ** (s + 2) + 3, 32768 - 32124)
        else:
            # 13-bit magnitude (x >> 3): segments 0 and 1 share the finest step (16 here)
            bound = 2 ** (max(s, 1) + 2)
        assert np.all(err[in_seg] <= (bound[in_seg] if np.ndim(bound) else bound)), (law, s)
    # Logarithmic companding: above the linear region the relative error stays about 2**-5
    big = np.abs(x) >= 1024
    rel = err[big] / np.abs(x[big])
    assert rel.max() <= (0.036 if law == "mu" else 1 / 32)
    # and the sign is never flipped
    y = decode(codes.tobytes()).astype(np.int64)
    assert np.all(np.sign(y) * np.sign(x) >= 0)


@pytest.mark.parametrize("law", ["mu", "A"])
def test_decode_is_monotonic_in_the_sample(law):
    encode, decode = (ulaw_encode, ulaw_decode) if law == "mu" else (alaw_encode, alaw_decode)
    y = decode(encode(ALL_SAMPLES)).astype(np.int64)
    assert np.all(np.diff(y) >= 0)


@pytest.mark.parametrize("decode_into", [ulaw_decode_into, alaw_decode_into])
def test_decode_into_short_output_writes_only_len_out(decode_into):
    payload = bytes(range(160))
    backing = np.full(100, 12345, dtype=np.int16)
    out = backing[:50]
    assert decode_into(payload, out) == 50
    full = np.empty(160, dtype=np.int16)
    assert decode_into(payload, full) == 160
    np.testing.assert_array_equal(backing[:50], full[:50])
    assert np.all(backing[50:] == 12345)


@pytest.mark.parametrize("decode_into", [ulaw_decode_into, alaw_decode_into])
def test_decode_into_long_output_writes_only_len_payload(decode_into):
    out = np.full(30, -7, dtype=np.int16)
    assert decode_into(b"\x00" * 20, out) == 20
    assert np.all(out[20:] == -7)
    assert np.all(out[:20] != -7)
    assert decode_into(b"", out) == 0


def test_empty_input():
    empty = np.zeros(0, dtype=np.int16)
    assert ulaw_encode(empty) == b"" and alaw_encode(empty) == b""
    assert ulaw_decode(b"").shape == (0,) and alaw_decode(b"").dtype == np.int16


def test_decode_accepts_bytes_like_payloads():
    payload = bytes(range(0, 256, 3))
    for law_decode in (ulaw_decode, alaw_decode):
        ref = law_decode(payload)
        np.testing.assert_array_equal(law_decode(bytearray(payload)), ref)
        np.testing.assert_array_equal(law_decode(memoryview(payload)), ref)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.int16, st.integers(0, 400)))
def test_round_trip_is_idempotent_after_one_pass(pcm):
    # Once quantized, a signal survives another encode/decode unchanged (except mu-law -0 -> +0).
    for encode, decode in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        once = decode(encode(pcm))
        np.testing.assert_array_equal(decode(encode(once)), once)
        reference = linear_to_ulaw if encode is ulaw_encode else linear_to_alaw
        assert encode(pcm) == bytes(reference(int(x)) for x in pcm)
