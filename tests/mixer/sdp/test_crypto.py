"""RFC 4568 SDES crypto attributes: parse, format, generate."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixer.sdp import SUPPORTED_SUITES, CryptoAttribute, SdpError, format_crypto, generate_crypto, parse_crypto
from mixer.sdp.crypto import SRTP_SUITE_KEY_SALT_LENGTHS

# RFC 4568 section 4's example line (after "a=crypto:").
RFC4568_EXAMPLE = "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32"
RFC4568_KEY = base64.b64decode("PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR")
# What ffmpeg writes for `-srtp_out_suite AES_CM_128_HMAC_SHA1_80 -srtp_out_params ...`.
KEY_PARAMS = "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
FFMPEG_CRYPTO = "1 AES_CM_128_HMAC_SHA1_80 inline:zRCZYsrK5vRahSgr1PKzMAwy2y7tNRfAr+TfUtm+"


def test_rfc4568_example_parses() -> None:
    attr = parse_crypto(RFC4568_EXAMPLE)
    assert attr == CryptoAttribute(tag=1, suite="AES_CM_128_HMAC_SHA1_80", key=RFC4568_KEY,
                                   lifetime=2**20, mki=(1, 32), session_params=[])
    assert len(attr.key) == 30
    assert attr.master_key == RFC4568_KEY[:16] and attr.master_salt == RFC4568_KEY[16:]
    assert attr.supported


def test_rfc4568_example_round_trips_textually() -> None:
    assert format_crypto(parse_crypto(RFC4568_EXAMPLE)) == RFC4568_EXAMPLE


def test_ffmpeg_line_without_lifetime_or_mki() -> None:
    attr = parse_crypto(FFMPEG_CRYPTO)
    assert attr.lifetime is None and attr.mki is None and len(attr.key) == 30
    assert format_crypto(attr) == FFMPEG_CRYPTO


@pytest.mark.parametrize(
    ("key_info_suffix", "lifetime", "mki"),
    [
        ("|2^31", 2**31, None),
        ("|1000", 1000, None),
        ("|1:4", None, (1, 4)),
        ("|2^31|1:1", 2**31, (1, 1)),
        ("|2^0|255:1", 1, (255, 1)),
    ],
)
def test_optional_lifetime_and_mki(key_info_suffix: str, lifetime: int | None, mki: tuple[int, int] | None) -> None:
    attr = parse_crypto(f"7 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR{key_info_suffix}")
    assert (attr.tag, attr.suite, attr.lifetime, attr.mki) == (7, "AES_CM_128_HMAC_SHA1_32", lifetime, mki)
    assert parse_crypto(format_crypto(attr)) == attr


def test_session_params_are_kept() -> None:
    attr = parse_crypto(RFC4568_EXAMPLE + " KDR=1 UNENCRYPTED_SRTCP WSH=128")
    assert attr.session_params == ["KDR=1", "UNENCRYPTED_SRTCP", "WSH=128"]
    assert format_crypto(attr) == RFC4568_EXAMPLE + " KDR=1 UNENCRYPTED_SRTCP WSH=128"


def test_tabs_and_extra_spaces_between_fields() -> None:
    assert parse_crypto("1\tAES_CM_128_HMAC_SHA1_80   inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR ") \
        == parse_crypto("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR")


def test_known_but_unsupported_suite_parses_with_its_own_key_length() -> None:
    key = bytes(range(46))
    attr = parse_crypto(f"2 AES_256_CM_HMAC_SHA1_80 inline:{base64.b64encode(key).decode()}")
    assert attr.key == key and not attr.supported
    assert attr.master_key == key[:32] and attr.master_salt == key[32:]


def test_unpadded_base64_is_accepted() -> None:
    key = bytes(range(46))  # 46 bytes -> base64 with "==" padding
    encoded = base64.b64encode(key).decode().rstrip("=")
    assert parse_crypto(f"2 AES_256_CM_HMAC_SHA1_32 inline:{encoded}").key == key


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("1 AES_CM_128_HMAC_SHA1_80", id="no-key-params"),
        pytest.param("x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", id="tag-not-number"),
        pytest.param("1234567890 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
                     id="tag-ten-digits"),
        pytest.param("1 ROT13_HMAC_MD5 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", id="unknown-suite"),
        pytest.param("1 AES-CM inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", id="suite-not-a-name"),
        pytest.param("1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(46)).decode(),
                     id="46-byte-key-for-128-bit-suite"),
        pytest.param("1 AES_CM_128_HMAC_SHA1_32 inline:" + base64.b64encode(bytes(16)).decode(),
                     id="key-without-salt"),
        pytest.param("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkp!ywjNWhcYD0mXXtxaVBR", id="bad-base64"),
        pytest.param("1 AES_CM_128_HMAC_SHA1_80 inline:P", id="truncated-base64"),
        pytest.param("1 AES_CM_128_HMAC_SHA1_80 inline:", id="empty-key"),
        pytest.param("1 AES_CM_128_HMAC_SHA1_80 PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", id="no-key-method"),
        pytest.param("1 AES_CM_128_HMAC_SHA1_80 uri:https://keys.example/1", id="non-inline-method"),
        pytest.param(RFC4568_EXAMPLE + ";inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|2:32",
                     id="several-keys"),
        pytest.param(KEY_PARAMS + "|2^49", id="lifetime-2^49"),
        pytest.param(KEY_PARAMS + "|0", id="lifetime-zero"),
        pytest.param("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^99999999999",
                     id="lifetime-huge-exponent"),
        pytest.param(KEY_PARAMS + "|2^20|1:0", id="mki-length-0"),
        pytest.param("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:129",
                     id="mki-length-129"),
        pytest.param("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|256:1",
                     id="mki-value-overflows-length"),
        pytest.param("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4|9",
                     id="too-many-fields"),
        pytest.param("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1:4|2^20",
                     id="mki-before-lifetime"),
        pytest.param(RFC4568_EXAMPLE + " KDR=\u00e9", id="session-param-not-ascii"),
    ],
)
def test_malformed_crypto_raises_sdp_error(value: str) -> None:
    with pytest.raises(SdpError):
        parse_crypto(value)


def test_non_string_raises_sdp_error() -> None:
    with pytest.raises(SdpError):
        parse_crypto(RFC4568_EXAMPLE.encode())  # type: ignore[arg-type]


@pytest.mark.parametrize("suite", SUPPORTED_SUITES)
def test_generate_crypto(suite: str) -> None:
    first, second = generate_crypto(5, suite), generate_crypto(5, suite)
    assert (first.tag, first.suite, len(first.key)) == (5, suite, 30)
    assert first.key != second.key  # fresh randomness every call
    assert first.lifetime is None and first.mki is None and first.session_params == []
    assert parse_crypto(format_crypto(first)) == first


def test_generate_crypto_refuses_unsupported_suite_and_bad_tag() -> None:
    with pytest.raises(SdpError):
        generate_crypto(1, "AES_256_CM_HMAC_SHA1_80")
    with pytest.raises(SdpError):
        generate_crypto(10**9, SUPPORTED_SUITES[0])


def test_repr_hides_key_material() -> None:
    attr = parse_crypto(RFC4568_EXAMPLE)
    assert "PS1u" not in repr(attr) and repr(RFC4568_KEY) not in repr(attr)


@pytest.mark.parametrize(
    "attr",
    [
        CryptoAttribute(1, "AES_CM_128_HMAC_SHA1_80", bytes(29)),
        CryptoAttribute(1, "NOPE", bytes(30)),
        CryptoAttribute(-1, "AES_CM_128_HMAC_SHA1_80", bytes(30)),
        CryptoAttribute(1, "AES_CM_128_HMAC_SHA1_80", bytes(30), session_params=["two words"]),
    ],
)
def test_format_crypto_refuses_invalid_attributes(attr: CryptoAttribute) -> None:
    with pytest.raises(SdpError):
        format_crypto(attr)


@st.composite
def crypto_attributes(draw: st.DrawFn) -> CryptoAttribute:
    suite = draw(st.sampled_from(sorted(SRTP_SUITE_KEY_SALT_LENGTHS)))
    key_length, salt_length = SRTP_SUITE_KEY_SALT_LENGTHS[suite]
    mki_length = draw(st.integers(1, 128))
    return CryptoAttribute(
        tag=draw(st.integers(0, 999_999_999)),
        suite=suite,
        key=draw(st.binary(min_size=key_length + salt_length, max_size=key_length + salt_length)),
        lifetime=draw(st.none() | st.integers(1, 2**48)),
        mki=draw(st.none() | st.tuples(st.integers(0, 2 ** (8 * mki_length) - 1), st.just(mki_length))),
        session_params=draw(st.lists(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                                             min_size=1, max_size=10), max_size=3)),
    )


@given(crypto_attributes())
def test_format_parse_round_trip(attr: CryptoAttribute) -> None:
    assert parse_crypto(format_crypto(attr)) == attr


@given(st.text(max_size=200))
@settings(max_examples=400)
def test_parse_crypto_arbitrary_text_raises_only_sdp_error(value: str) -> None:
    with contextlib.suppress(SdpError):
        parse_crypto(value)


@given(
    st.sampled_from(["1 AES_CM_128_HMAC_SHA1_80 inline:", "1 AES_256_CM_HMAC_SHA1_80 inline:",
                     "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|",
                     "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|"]),
    st.text(st.sampled_from("AZaz09+/=|:^; \t2\u0660"), max_size=60),
)
@settings(max_examples=400)
def test_parse_crypto_near_miss_text_raises_only_sdp_error(prefix: str, tail: str) -> None:
    try:
        attr = parse_crypto(prefix + tail)
    except SdpError:
        return
    assert parse_crypto(format_crypto(attr)) == attr
