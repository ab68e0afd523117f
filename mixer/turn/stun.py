"""STUN messages (RFC 8489) with the TURN (RFC 8656) and ICE (RFC 8445) attributes: constants,
parse, build, integrity.

`parse()` takes raw bytes (split by the compiled `_wire.parse_stun`) and returns a `StunMessage`
whose attributes stay raw until asked for; `build()` serialises a message, optionally with
MESSAGE-INTEGRITY / MESSAGE-INTEGRITY-SHA256 and FINGERPRINT. Every malformed input is a StunError.
The one STUN codec of the product: the TURN server (long-term credentials) and the legs' ICE-lite
agents (short-term credentials, `check_short_term`) both use it.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import struct
import zlib
from dataclasses import dataclass, field

from mixer.turn._wire import parse_stun
from mixer.turn.errors import StunError

STUN_MAGIC_COOKIE = 0x2112A442       # RFC 8489 5
STUN_HEADER_SIZE = 20
FINGERPRINT_XOR = 0x5354554E         # RFC 8489 14.7

# Classes (RFC 8489 5: the C1/C0 bits)
REQUEST, INDICATION, SUCCESS, ERROR = 0x000, 0x010, 0x100, 0x110

# Methods (RFC 8489 18.2, RFC 8656 17)
BINDING = 0x001
ALLOCATE = 0x003
REFRESH = 0x004
SEND = 0x006
DATA = 0x007
CREATE_PERMISSION = 0x008
CHANNEL_BIND = 0x009

# Attributes (RFC 8489 18.3, RFC 8656 18)
MAPPED_ADDRESS = 0x0001
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
CHANNEL_NUMBER = 0x000C
LIFETIME = 0x000D
XOR_PEER_ADDRESS = 0x0012
DATA_ATTR = 0x0013
REALM = 0x0014
NONCE = 0x0015
XOR_RELAYED_ADDRESS = 0x0016
REQUESTED_ADDRESS_FAMILY = 0x0017
EVEN_PORT = 0x0018
REQUESTED_TRANSPORT = 0x0019
DONT_FRAGMENT = 0x001A
MESSAGE_INTEGRITY_SHA256 = 0x001C
PASSWORD_ALGORITHM = 0x001D
USERHASH = 0x001E
XOR_MAPPED_ADDRESS = 0x0020
RESERVATION_TOKEN = 0x0022
SOFTWARE = 0x8022
FINGERPRINT = 0x8028
# ICE connectivity checks (RFC 8445 16.1)
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
ICE_CONTROLLED = 0x8029
ICE_CONTROLLING = 0x802A

# Error codes (RFC 8489 14.8, RFC 8656 18.x)
BAD_REQUEST = 400
UNAUTHORIZED = 401
FORBIDDEN = 403
UNKNOWN_ATTRIBUTE = 420
ALLOCATION_MISMATCH = 437
STALE_NONCE = 438
ADDRESS_FAMILY_NOT_SUPPORTED = 440
WRONG_CREDENTIALS = 441
UNSUPPORTED_TRANSPORT_PROTOCOL = 442
PEER_ADDRESS_FAMILY_MISMATCH = 443
ALLOCATION_QUOTA_REACHED = 486
ROLE_CONFLICT = 487                  # RFC 8445 7.3.1.1
SERVER_ERROR = 500
INSUFFICIENT_CAPACITY = 508

REASONS = {
    BAD_REQUEST: "Bad Request", UNAUTHORIZED: "Unauthorized", FORBIDDEN: "Forbidden",
    UNKNOWN_ATTRIBUTE: "Unknown Attribute", ALLOCATION_MISMATCH: "Allocation Mismatch",
    STALE_NONCE: "Stale Nonce", ADDRESS_FAMILY_NOT_SUPPORTED: "Address Family not Supported",
    WRONG_CREDENTIALS: "Wrong Credentials",
    UNSUPPORTED_TRANSPORT_PROTOCOL: "Unsupported Transport Protocol",
    PEER_ADDRESS_FAMILY_MISMATCH: "Peer Address Family Mismatch",
    ALLOCATION_QUOTA_REACHED: "Allocation Quota Reached", ROLE_CONFLICT: "Role Conflict",
    SERVER_ERROR: "Server Error",
    INSUFFICIENT_CAPACITY: "Insufficient Capacity",
}

TRANSPORT_UDP = 17                   # REQUESTED-TRANSPORT protocol number (RFC 8656 18.11)
FAMILY_IPV4, FAMILY_IPV6 = 0x01, 0x02

# Comprehension-required attributes (< 0x8000) this server understands; any other in a request is
# answered with 420 and listed in UNKNOWN-ATTRIBUTES (RFC 8489 6.3.1.1). DONT-FRAGMENT and
# RESERVATION-TOKEN are deliberately absent: they are not implemented, and RFC 8656 7.2 says a
# server that does not support them treats them as unknown.
UNDERSTOOD = frozenset({
    MAPPED_ADDRESS, USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, UNKNOWN_ATTRIBUTES, CHANNEL_NUMBER,
    LIFETIME, XOR_PEER_ADDRESS, DATA_ATTR, REALM, NONCE, XOR_RELAYED_ADDRESS,
    REQUESTED_ADDRESS_FAMILY, EVEN_PORT, REQUESTED_TRANSPORT, MESSAGE_INTEGRITY_SHA256,
    XOR_MAPPED_ADDRESS,
})
# What an ICE agent's Binding request may carry (RFC 8445 7.1.1): PRIORITY and USE-CANDIDATE are
# comprehension-required; ICE-CONTROLLED/-CONTROLLING are optional-range and always understood.
ICE_UNDERSTOOD = frozenset({USERNAME, MESSAGE_INTEGRITY, MESSAGE_INTEGRITY_SHA256, PRIORITY,
                            USE_CANDIDATE})


@dataclass
class StunMessage:
    method: int
    cls: int
    transaction_id: bytes
    attributes: list[tuple[int, bytes, int]] = field(default_factory=list)  # (type, value, offset)
    raw: bytes = b""

    def get(self, attr: int) -> bytes | None:
        for kind, value, _ in self.attributes:
            if kind == attr:
                return value
        return None

    def get_all(self, attr: int) -> list[bytes]:
        return [value for kind, value, _ in self.attributes if kind == attr]

    def offset(self, attr: int) -> int | None:
        for kind, _, offset in self.attributes:
            if kind == attr:
                return offset
        return None

    def unknown_required(self, understood: frozenset[int] = UNDERSTOOD) -> list[int]:
        """Comprehension-required attribute types not in `understood` (the TURN server's set by
        default; an ICE agent passes ICE_UNDERSTOOD)."""
        seen = []
        for kind, _, _ in self.attributes:
            if kind < 0x8000 and kind not in understood and kind not in seen:
                seen.append(kind)
        return seen

    # Typed accessors: each raises StunError on a malformed value
    def text(self, attr: int) -> str | None:
        value = self.get(attr)
        if value is None:
            return None
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise StunError(f"attribute 0x{attr:04x} is not UTF-8") from None

    def uint32(self, attr: int) -> int | None:
        value = self.get(attr)
        if value is None:
            return None
        if len(value) != 4:
            raise StunError(f"attribute 0x{attr:04x} is not 4 bytes")
        return struct.unpack("!I", value)[0]

    def xor_address(self, attr: int) -> tuple[str, int] | None:
        value = self.get(attr)
        return None if value is None else decode_xor_address(value, self.transaction_id)

    def xor_addresses(self, attr: int) -> list[tuple[str, int]]:
        return [decode_xor_address(v, self.transaction_id) for v in self.get_all(attr)]

    def error_code(self) -> tuple[int, str] | None:
        value = self.get(ERROR_CODE)
        if value is None:
            return None
        if len(value) < 4:
            raise StunError("ERROR-CODE shorter than 4 bytes")
        return (value[2] & 0x7) * 100 + value[3], value[4:].decode("utf-8", "replace")


def parse(data: bytes) -> StunMessage:
    """Parse one STUN message (raises StunError). Message integrity is checked separately."""
    mtype, txid, attrs = parse_stun(data)
    method = (mtype & 0x000F) | ((mtype & 0x00E0) >> 1) | ((mtype & 0x3E00) >> 2)
    cls = mtype & 0x0110
    return StunMessage(method, cls, txid, attrs, bytes(data))


def message_type(method: int, cls: int) -> int:
    """RFC 8489 5: interleave the 12 method bits with the 2 class bits."""
    return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | cls


def _pad(value: bytes) -> bytes:
    return value + b"\x00" * (-len(value) % 4)


def build(method: int, cls: int, transaction_id: bytes, attributes: list[tuple[int, bytes]], *,
          key: bytes | None = None, integrity: str = "sha1", fingerprint: bool = True) -> bytes:
    """Serialise a message. With `key`, append MESSAGE-INTEGRITY ("sha1"), -SHA256 ("sha256") or
    both ("both"), computed as RFC 8489 14.5/14.6 say (length field covering the attribute)."""
    body = b"".join(struct.pack("!HH", kind, len(value)) + _pad(value) for kind, value in attributes)
    header = struct.pack("!HHI", message_type(method, cls), 0, STUN_MAGIC_COOKIE) + transaction_id
    message = bytearray(header + body)
    if key is not None:
        for kind in _integrity_kinds(integrity):
            size = 20 if kind == MESSAGE_INTEGRITY else 32
            struct.pack_into("!H", message, 2, len(message) - STUN_HEADER_SIZE + 4 + size)
            mac = _mac(kind, key, bytes(message))
            message += struct.pack("!HH", kind, size) + mac
    if fingerprint:
        struct.pack_into("!H", message, 2, len(message) - STUN_HEADER_SIZE + 8)
        crc = zlib.crc32(bytes(message)) ^ FINGERPRINT_XOR
        message += struct.pack("!HHI", FINGERPRINT, 4, crc)
    struct.pack_into("!H", message, 2, len(message) - STUN_HEADER_SIZE)
    return bytes(message)


def _integrity_kinds(integrity: str) -> tuple[int, ...]:
    return {"sha1": (MESSAGE_INTEGRITY,), "sha256": (MESSAGE_INTEGRITY_SHA256,),
            "both": (MESSAGE_INTEGRITY, MESSAGE_INTEGRITY_SHA256)}[integrity]


def _mac(kind: int, key: bytes, data: bytes) -> bytes:
    if kind == MESSAGE_INTEGRITY:
        return hmac.new(key, data, hashlib.sha1).digest()
    return hmac.new(key, data, hashlib.sha256).digest()


def integrity_kind(message: StunMessage) -> str | None:
    """Which integrity the message carries: "sha256" (preferred when both, RFC 8489 9.2.4), "sha1"."""
    if message.get(MESSAGE_INTEGRITY_SHA256) is not None:
        return "sha256"
    if message.get(MESSAGE_INTEGRITY) is not None:
        return "sha1"
    return None


def check_integrity(message: StunMessage, key: bytes) -> bool:
    """Verify MESSAGE-INTEGRITY-SHA256 if present, else MESSAGE-INTEGRITY, against `key`."""
    kind = MESSAGE_INTEGRITY_SHA256 if integrity_kind(message) == "sha256" else MESSAGE_INTEGRITY
    offset = message.offset(kind)
    value = message.get(kind)
    if offset is None or value is None:
        return False
    if kind == MESSAGE_INTEGRITY and len(value) != 20:
        return False
    if kind == MESSAGE_INTEGRITY_SHA256 and not 16 <= len(value) <= 32:
        return False  # RFC 8489 14.6: truncation to no less than 16 bytes
    covered = bytearray(message.raw[:offset])
    struct.pack_into("!H", covered, 2, offset - STUN_HEADER_SIZE + 4 + len(value))
    expected = _mac(kind, key, bytes(covered))[:len(value)]
    return hmac.compare_digest(expected, value)


def check_short_term(message: StunMessage, local_ufrag: str, local_password: str) -> int | None:
    """Authenticate an ICE connectivity check (RFC 8489 9.1.3 with RFC 8445 7.3): None when it
    passes, else the error code to answer with.

    400 Bad Request: USERNAME or MESSAGE-INTEGRITY(-SHA256) missing, or no FINGERPRINT (RFC 8445
    7.1: every check carries one; without it STUN cannot be told from media reliably).
    401 Unauthenticated: USERNAME is not "<our ufrag>:<their ufrag>", or the integrity does not
    verify under our password (the short-term key is the password itself, RFC 8489 9.1.1: ICE
    passwords are ice-chars, which OpaqueString leaves unchanged). RFC 8489 9.1.3: a 401 answer
    carries no MESSAGE-INTEGRITY.
    """
    username = message.get(USERNAME)
    if username is None or integrity_kind(message) is None or message.get(FINGERPRINT) is None:
        return BAD_REQUEST
    ours, colon, theirs = username.partition(b":")
    if not colon or not theirs or ours != local_ufrag.encode("ascii"):
        return UNAUTHORIZED
    if not check_integrity(message, local_password.encode("ascii")):
        return UNAUTHORIZED
    return None


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """RFC 8489 9.2.2 with the MD5 password algorithm: MD5(username ":" realm ":" password)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode("utf-8")).digest()


# ---------------------------------------------------------------------------------- addresses
def encode_xor_address(address: tuple[str, int], transaction_id: bytes) -> bytes:
    port = address[1] ^ (STUN_MAGIC_COOKIE >> 16)
    if ":" not in address[0]:
        try:
            packed = socket.inet_aton(address[0])
        except OSError:
            raise ValueError(f"{address[0]!r} is not an IP address") from None
        return struct.pack("!BBHI", 0, FAMILY_IPV4, port, struct.unpack("!I", packed)[0] ^ STUN_MAGIC_COOKIE)
    ip = ipaddress.ip_address(address[0])
    mask = int.from_bytes(struct.pack("!I", STUN_MAGIC_COOKIE) + transaction_id, "big")
    return struct.pack("!BBH", 0, FAMILY_IPV6, port) + (int(ip) ^ mask).to_bytes(16, "big")


def decode_xor_address(value: bytes, transaction_id: bytes) -> tuple[str, int]:
    if len(value) < 4:
        raise StunError("address attribute shorter than 4 bytes")
    family = value[1]
    port = struct.unpack("!H", value[2:4])[0] ^ (STUN_MAGIC_COOKIE >> 16)
    if family == FAMILY_IPV4 and len(value) == 8:
        ip = struct.unpack("!I", value[4:8])[0] ^ STUN_MAGIC_COOKIE
        return socket.inet_ntoa(struct.pack("!I", ip)), port
    if family == FAMILY_IPV6 and len(value) == 20:
        mask = int.from_bytes(struct.pack("!I", STUN_MAGIC_COOKIE) + transaction_id, "big")
        return str(ipaddress.IPv6Address(int.from_bytes(value[4:20], "big") ^ mask)), port
    raise StunError("bad address family or length")


def encode_address(address: tuple[str, int]) -> bytes:
    """MAPPED-ADDRESS (RFC 8489 14.1), for RFC 3489-era clients that read only this."""
    ip = ipaddress.ip_address(address[0])
    family = FAMILY_IPV4 if ip.version == 4 else FAMILY_IPV6
    return struct.pack("!BBH", 0, family, address[1]) + ip.packed


def error_attribute(code: int, reason: str | None = None) -> tuple[int, bytes]:
    text = (reason or REASONS.get(code, "Error")).encode("utf-8")
    return ERROR_CODE, struct.pack("!HBB", 0, code // 100, code % 100) + text


def uint32_attribute(attr: int, value: int) -> tuple[int, bytes]:
    return attr, struct.pack("!I", value)


def channel_number_attribute(channel: int) -> tuple[int, bytes]:
    return CHANNEL_NUMBER, struct.pack("!HH", channel, 0)


def channel_number(message: StunMessage) -> int | None:
    value = message.get(CHANNEL_NUMBER)
    if value is None:
        return None
    if len(value) != 4:
        raise StunError("CHANNEL-NUMBER is 4 bytes")
    return struct.unpack("!H", value[:2])[0]


def channel_data(channel: int, payload: bytes, pad: bool) -> bytes:
    """A ChannelData message (RFC 8656 12.4); padded to 4 bytes on stream transports."""
    frame = struct.pack("!HH", channel, len(payload)) + payload
    return _pad(frame) if pad else frame
