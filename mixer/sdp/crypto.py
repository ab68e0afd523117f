"""SDES keys for SRTP: the RFC 4568 `a=crypto` attribute.

`a=crypto:<tag> <crypto-suite> inline:<key||salt base64>[|<lifetime>][|<mki>:<length>] [<session-params>]`

The master key and salt travel in the SDP itself, so a parse error here must
never leak key material (the key is hidden from `repr`) and an unknown suite
must be recognisable as such: the answerer skips lines it cannot use
(RFC 4568 section 7.1.2) instead of failing the whole offer.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass, field

from mixer.sdp.session import SdpError

# Suites this engine can run (pylibsrtp profiles), in our preference order.
SUPPORTED_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")

# Master key + master salt length in bytes of every registered SRTP suite, so a
# well-formed offer listing a suite we do not run still parses (and is skipped).
# RFC 4568 section 6.2: AES_CM_128 / F8_128 suites use a 128-bit key and 112-bit salt.
# RFC 6188: AES_192_CM / AES_256_CM use a 192/256-bit key and 112-bit salt.
# RFC 7714: AEAD_AES_*_GCM use a 128/256-bit key and 96-bit salt.
SRTP_SUITE_KEY_SALT_LENGTHS: dict[str, tuple[int, int]] = {
    "AES_CM_128_HMAC_SHA1_80": (16, 14),
    "AES_CM_128_HMAC_SHA1_32": (16, 14),
    "F8_128_HMAC_SHA1_80": (16, 14),
    "F8_128_HMAC_SHA1_32": (16, 14),
    "AES_192_CM_HMAC_SHA1_80": (24, 14),
    "AES_192_CM_HMAC_SHA1_32": (24, 14),
    "AES_256_CM_HMAC_SHA1_80": (32, 14),
    "AES_256_CM_HMAC_SHA1_32": (32, 14),
    "AEAD_AES_128_GCM": (16, 12),
    "AEAD_AES_256_GCM": (32, 12),
}
# RFC 4568 section 9.1: key-method; "inline" is the only one defined for SRTP.
KEY_METHOD_INLINE = "inline"
# RFC 4568 section 9.1: tag = 1*9DIGIT.
CRYPTO_TAG_MAX = 999_999_999
# RFC 4568 section 6.1 / RFC 3711: an SRTP master key protects at most 2^48
# packets, so a larger lifetime is meaningless.
SRTP_MAX_LIFETIME = 2**48
# RFC 4568 section 6.1: the MKI length is 1 to 128 bytes.
MKI_LENGTH_MAX = 128

_TAG_RE = re.compile(r"[0-9]{1,9}")
_SUITE_RE = re.compile(r"[A-Za-z0-9_]+")
_WSP_RE = re.compile(r"[ \t]+")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_LIFETIME_RE = re.compile(r"(2\^)?([0-9]{1,15})")
_MKI_RE = re.compile(r"([0-9]{1,310}):([0-9]{1,3})")  # 128-byte MKI < 10^309
_VCHAR_RE = re.compile(r"[\x21-\x7e]+")


@dataclass
class CryptoAttribute:
    """One `a=crypto` line: which SRTP suite, with which master key+salt, under which tag.

    `key` is the decoded master key followed by the master salt; `lifetime` is
    a packet count; `mki` is `(value, length in bytes)`.
    """

    tag: int
    suite: str
    key: bytes = field(repr=False)  # key material must not end up in logs
    lifetime: int | None = None
    mki: tuple[int, int] | None = None
    session_params: list[str] = field(default_factory=list)

    @property
    def master_key(self) -> bytes:
        key_length, _ = SRTP_SUITE_KEY_SALT_LENGTHS[self.suite]
        return self.key[:key_length]

    @property
    def master_salt(self) -> bytes:
        key_length, _ = SRTP_SUITE_KEY_SALT_LENGTHS[self.suite]
        return self.key[key_length:]

    @property
    def supported(self) -> bool:
        """True when the engine can run this suite."""
        return self.suite in SUPPORTED_SUITES


def _parse_lifetime(text: str) -> int:
    match = _LIFETIME_RE.fullmatch(text)
    if not match:
        raise SdpError(f"a=crypto lifetime is not N or 2^N: {text!r}")
    number = int(match.group(2))
    if match.group(1):
        if number > 48:
            raise SdpError(f"a=crypto lifetime 2^{number} exceeds 2^48 (RFC 3711)")
        number = 2**number
    if not 1 <= number <= SRTP_MAX_LIFETIME:
        raise SdpError(f"a=crypto lifetime {number} outside 1..2^48")
    return number


def _parse_mki(text: str) -> tuple[int, int]:
    match = _MKI_RE.fullmatch(text)
    if not match:
        raise SdpError(f"a=crypto MKI is not <value>:<length>: {text!r}")
    value, length = int(match.group(1)), int(match.group(2))
    if not 1 <= length <= MKI_LENGTH_MAX:
        raise SdpError(f"a=crypto MKI length {length} outside 1..{MKI_LENGTH_MAX} bytes")
    if value >= 1 << (8 * length):
        raise SdpError(f"a=crypto MKI value {value} does not fit in {length} bytes")
    return value, length


def parse_crypto(value: str) -> CryptoAttribute:
    """Parse the text after `a=crypto:` (RFC 4568 sections 9.1 and 9.2).

    Raises SdpError for syntax errors, a suite whose key length we do not know,
    a key of the wrong length for its suite, or several keys on one line (the
    RFC allows them with MKIs; this engine keys one master key per leg).
    """
    if not isinstance(value, str):
        raise SdpError(f"a=crypto value must be str, not {type(value).__name__}")
    parts = _WSP_RE.split(value.strip(" \t"))
    if len(parts) < 3:
        raise SdpError(f"a=crypto needs a tag, a suite and key parameters: {value!r}")
    tag_text, suite, key_params, *session_params = parts
    if not _TAG_RE.fullmatch(tag_text):
        raise SdpError(f"a=crypto tag must be 1-9 digits: {tag_text!r}")
    if not _SUITE_RE.fullmatch(suite):
        raise SdpError(f"a=crypto suite is not a name: {suite!r}")
    if suite not in SRTP_SUITE_KEY_SALT_LENGTHS:
        raise SdpError(f"unknown SRTP crypto suite {suite!r}")
    for param in session_params:
        if not _VCHAR_RE.fullmatch(param):
            raise SdpError(f"a=crypto session parameter is not visible ASCII: {param!r}")
    if ";" in key_params:
        raise SdpError("a=crypto with several key parameters is not supported")
    method, sep, key_info = key_params.partition(":")
    if not sep or method != KEY_METHOD_INLINE:
        raise SdpError(f"a=crypto key method must be 'inline:', got {key_params[:16]!r}")

    key_salt, *extras = key_info.split("|")
    if len(extras) > 2:
        raise SdpError("a=crypto key info has too many '|' fields")
    lifetime: int | None = None
    mki: tuple[int, int] | None = None
    if len(extras) == 2:
        lifetime = _parse_lifetime(extras[0])
        mki = _parse_mki(extras[1])
    elif len(extras) == 1:
        # RFC 4568 section 9.2: key-salt ["|" lifetime] ["|" mki]; only the MKI has a colon.
        if ":" in extras[0]:
            mki = _parse_mki(extras[0])
        else:
            lifetime = _parse_lifetime(extras[0])

    if not _BASE64_RE.fullmatch(key_salt):
        raise SdpError("a=crypto key is not base64")
    if len(key_salt) % 4:
        key_salt += "=" * (-len(key_salt) % 4)  # some peers drop the padding
    try:
        key = base64.b64decode(key_salt, validate=True)
    except (binascii.Error, ValueError):
        raise SdpError("a=crypto key is not valid base64") from None
    key_length, salt_length = SRTP_SUITE_KEY_SALT_LENGTHS[suite]
    if len(key) != key_length + salt_length:
        raise SdpError(
            f"a=crypto key for {suite} must be {key_length + salt_length} bytes "
            f"(key {key_length} + salt {salt_length}), got {len(key)}"
        )
    return CryptoAttribute(tag=int(tag_text), suite=suite, key=key, lifetime=lifetime, mki=mki,
                           session_params=list(session_params))


def _format_lifetime(lifetime: int) -> str:
    # Powers of two are written 2^N, as peers conventionally do.
    if lifetime > 0 and lifetime & (lifetime - 1) == 0:
        return f"2^{lifetime.bit_length() - 1}"
    return str(lifetime)


def format_crypto(attr: CryptoAttribute) -> str:
    """The text after `a=crypto:` for `attr`; `parse_crypto` reads it back unchanged."""
    if not 0 <= attr.tag <= CRYPTO_TAG_MAX:
        raise SdpError(f"a=crypto tag {attr.tag} outside 0..{CRYPTO_TAG_MAX}")
    lengths = SRTP_SUITE_KEY_SALT_LENGTHS.get(attr.suite)
    if lengths is None:
        raise SdpError(f"unknown SRTP crypto suite {attr.suite!r}")
    if len(attr.key) != sum(lengths):
        raise SdpError(f"a=crypto key for {attr.suite} must be {sum(lengths)} bytes, got {len(attr.key)}")
    key_info = base64.b64encode(attr.key).decode("ascii")
    if attr.lifetime is not None:
        key_info += f"|{_format_lifetime(attr.lifetime)}"
    if attr.mki is not None:
        key_info += f"|{attr.mki[0]}:{attr.mki[1]}"
    text = f"{attr.tag} {attr.suite} {KEY_METHOD_INLINE}:{key_info}"
    for param in attr.session_params:
        if not _VCHAR_RE.fullmatch(param):
            raise SdpError(f"a=crypto session parameter is not visible ASCII: {param!r}")
        text += f" {param}"
    return text


def generate_crypto(tag: int, suite: str = SUPPORTED_SUITES[0]) -> CryptoAttribute:
    """A fresh master key+salt from `secrets` for one of SUPPORTED_SUITES.

    Every leg and every answer gets its own key: the answer carries the
    answerer's key for its direction (RFC 4568 section 7.1.2), and sharing the
    offerer's key would reuse one keystream in two directions.
    """
    if suite not in SUPPORTED_SUITES:
        raise SdpError(f"cannot generate keys for unsupported suite {suite!r}")
    if not 0 <= tag <= CRYPTO_TAG_MAX:
        raise SdpError(f"a=crypto tag {tag} outside 0..{CRYPTO_TAG_MAX}")
    return CryptoAttribute(tag=tag, suite=suite, key=secrets.token_bytes(sum(SRTP_SUITE_KEY_SALT_LENGTHS[suite])))
