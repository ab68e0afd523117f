"""SDP session descriptions (RFC 4566): parse, inspect, serialize.

The engine reads offers from arbitrary peers (browsers, SIP phones, ffmpeg), so
`parse` is strict where a mistake would send media to the wrong place (the
required `v=`/`o=`/`s=`/`t=` lines, `c=`, `m=`, and the attributes the engine
interprets) and lenient where it cannot matter (unknown attributes are kept
verbatim). Every malformed input raises `SdpError` and nothing else, so the
control API can answer 400 without a catch-all.

Attributes are kept as an ordered list of `(name, value)` pairs
(`value is None` for flag attributes such as `a=rtcp-mux`) so that
`serialize` reproduces them in their original order.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:  # crypto imports SdpError from here; import lazily at run time
    from mixer.sdp.crypto import CryptoAttribute

# RFC 4566 section 5.1: the only protocol version.
SDP_VERSION = 0
# RFC 4566 section 5.7: network type and address types of o= and c=.
NETTYPE_IN = "IN"
ADDRTYPE_IP4 = "IP4"
ADDRTYPE_IP6 = "IP6"
ADDRTYPES = (ADDRTYPE_IP4, ADDRTYPE_IP6)
# RFC 4566 section 5.14 and RFC 3550 section 5.1: RTP payload types are 7 bits.
RTP_PAYLOAD_TYPE_MAX = 127
# RFC 3264 section 5.1 / RFC 4566 section 6: media direction attributes.
DIRECTION_SENDRECV = "sendrecv"
DIRECTION_SENDONLY = "sendonly"
DIRECTION_RECVONLY = "recvonly"
DIRECTION_INACTIVE = "inactive"
DIRECTIONS = (DIRECTION_SENDRECV, DIRECTION_SENDONLY, DIRECTION_RECVONLY, DIRECTION_INACTIVE)
DEFAULT_DIRECTION = DIRECTION_SENDRECV
# RFC 8285 sections 4.2 and 4.3: one-byte header IDs are 1-14, two-byte IDs 1-255;
# RFC 5285 also let an offer use 4096-4351 for the answerer to remap.
EXTMAP_ID_MIN = 1
EXTMAP_ID_MAX = 255
EXTMAP_OFFER_ID_RANGE = range(4096, 4352)
EXTMAP_DIRECTIONS = DIRECTIONS
# RFC 3551 section 6, table 4: static audio payload types usable without a=rtpmap.
RFC3551_STATIC_AUDIO: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
}
# RFC 4566 section 5: the line types it defines (m= starts a media section).
SESSION_LINE_TYPES = frozenset("vosiuepcbtrzka")

_TOKEN = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+"  # RFC 4566 section 9, token-char
_TOKEN_RE = re.compile(_TOKEN)
_DIGITS_RE = re.compile(r"[0-9]{1,20}")
_WS_RE = re.compile(r"[ \t]+")
_HOSTNAME_RE = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.?"
)
_IP4_LIKE_RE = re.compile(r"[0-9.]+")
_RTPMAP_RE = re.compile(r"([0-9]{1,3})[ \t]+([^/ \t]+)/([0-9]{1,9})(?:/([0-9]{1,3}))?[ \t]*")
_PTIME_RE = re.compile(r"([0-9]{1,6})(?:\.([0-9]{1,6}))?")
_EXTMAP_RE = re.compile(r"([0-9]{1,5})(?:/([a-z]+))?[ \t]+(\S+)(?:[ \t]+(.*\S))?[ \t]*")


class SdpError(ValueError):
    """A session description that cannot be parsed, serialized or negotiated.

    The one exception family for bad SDP, so that callers map it to a single
    client error (HTTP 400 / SIP 488) instead of guarding against IndexError
    and friends. `line` is the 1-based line number when the fault has one.
    """

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


def _int(text: str, what: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    """A non-negative ASCII decimal; `int()` alone would accept '1_0', ' 1' and non-ASCII digits."""
    if not _DIGITS_RE.fullmatch(text):
        raise SdpError(f"{what} is not a decimal number: {text!r}")
    value = int(text)
    if value < minimum or (maximum is not None and value > maximum):
        raise SdpError(f"{what} out of range [{minimum}, {maximum}]: {value}")
    return value


def _fields(text: str) -> list[str]:
    """Split an SDP field list on runs of SP/HTAB (RFC 4566 uses single SP; peers vary)."""
    stripped = text.strip(" \t")
    return _WS_RE.split(stripped) if stripped else []


def _check_address(addrtype: str, address: str) -> None:
    """RFC 4566 section 5.7: a unicast address is an IP literal of `addrtype` or an FQDN."""
    if addrtype == ADDRTYPE_IP4:
        if _IP4_LIKE_RE.fullmatch(address):
            try:
                ipaddress.IPv4Address(address)
            except ValueError:
                raise SdpError(f"invalid IPv4 address {address!r}") from None
            return
    elif addrtype == ADDRTYPE_IP6:
        if ":" in address or _IP4_LIKE_RE.fullmatch(address):
            try:
                ipaddress.IPv6Address(address)
            except ValueError:
                raise SdpError(f"invalid IPv6 address {address!r}") from None
            return
    else:
        raise SdpError(f"unsupported address type {addrtype!r} (want IP4 or IP6)")
    if not _HOSTNAME_RE.fullmatch(address):
        raise SdpError(f"invalid {addrtype} address {address!r}")


@dataclass
class Origin:
    """RFC 4566 section 5.2 `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`."""

    username: str = "-"
    session_id: int = 0
    session_version: int = 0
    nettype: str = NETTYPE_IN
    addrtype: str = ADDRTYPE_IP4
    address: str = "127.0.0.1"

    # RFC 3264 section 5: sess-id and sess-version fit a signed 64-bit integer.
    SESSION_ID_MAX = 2**63 - 1

    @classmethod
    def parse(cls, value: str) -> Origin:
        parts = _fields(value)
        if len(parts) != 6:
            raise SdpError(f"o= needs 6 fields, got {len(parts)}")
        username, sess_id, sess_version, nettype, addrtype, address = parts
        if nettype != NETTYPE_IN:
            raise SdpError(f"o= network type {nettype!r} is not IN")
        if addrtype not in ADDRTYPES:
            raise SdpError(f"o= address type {addrtype!r} is not IP4/IP6")
        return cls(
            username=username,
            session_id=_int(sess_id, "o= sess-id", maximum=cls.SESSION_ID_MAX),
            session_version=_int(sess_version, "o= sess-version", maximum=cls.SESSION_ID_MAX),
            nettype=nettype,
            addrtype=addrtype,
            address=address,
        )

    def serialize(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass
class Connection:
    """RFC 4566 section 5.7 `c=<nettype> <addrtype> <address>[/<ttl>][/<count>]`.

    `ttl` exists only for IP4 multicast; `count` is the number of addresses.
    """

    addrtype: str = ADDRTYPE_IP4
    address: str = "0.0.0.0"
    ttl: int | None = None
    count: int | None = None
    nettype: str = NETTYPE_IN

    @classmethod
    def parse(cls, value: str) -> Connection:
        parts = _fields(value)
        if len(parts) != 3:
            raise SdpError(f"c= needs 3 fields, got {len(parts)}")
        nettype, addrtype, spec = parts
        if nettype != NETTYPE_IN:
            raise SdpError(f"c= network type {nettype!r} is not IN")
        if addrtype not in ADDRTYPES:
            raise SdpError(f"c= address type {addrtype!r} is not IP4/IP6")
        address, *suffix = spec.split("/")
        ttl = count = None
        if addrtype == ADDRTYPE_IP4:
            if len(suffix) > 2:
                raise SdpError(f"c= address has too many '/' parts: {spec!r}")
            if suffix:
                ttl = _int(suffix[0], "c= TTL", maximum=255)
            if len(suffix) == 2:
                count = _int(suffix[1], "c= address count", minimum=1, maximum=65535)
        else:
            if len(suffix) > 1:
                raise SdpError(f"c= IP6 address has too many '/' parts: {spec!r}")
            if suffix:
                count = _int(suffix[0], "c= address count", minimum=1, maximum=65535)
        _check_address(addrtype, address)
        return cls(addrtype=addrtype, address=address, ttl=ttl, count=count, nettype=nettype)

    def serialize(self) -> str:
        spec = self.address
        if self.ttl is not None:
            spec += f"/{self.ttl}"
        if self.count is not None:
            spec += f"/{self.count}"
        return f"{self.nettype} {self.addrtype} {spec}"


@dataclass
class Timing:
    """RFC 4566 section 5.9 `t=<start> <stop>` with its section 5.10 `r=` lines kept verbatim."""

    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, value: str) -> Timing:
        parts = _fields(value)
        if len(parts) != 2:
            raise SdpError(f"t= needs 2 fields, got {len(parts)}")
        return cls(start=_int(parts[0], "t= start time"), stop=_int(parts[1], "t= stop time"))


@dataclass
class RtcpAttribute:
    """RFC 3605 `a=rtcp:<port> [<nettype> <addrtype> <address>]`: where RTCP goes if not port+1."""

    port: int
    nettype: str | None = None
    addrtype: str | None = None
    address: str | None = None

    @classmethod
    def parse(cls, value: str) -> RtcpAttribute:
        parts = _fields(value)
        if len(parts) not in (1, 4):
            raise SdpError(f"a=rtcp needs a port and optionally 3 address fields: {value!r}")
        port = _int(parts[0], "a=rtcp port", maximum=65535)
        if len(parts) == 1:
            return cls(port=port)
        connection = Connection.parse(" ".join(parts[1:]))
        return cls(port=port, nettype=connection.nettype, addrtype=connection.addrtype,
                   address=connection.address)

    def serialize(self) -> str:
        if self.address is None:
            return str(self.port)
        return f"{self.port} {self.nettype or NETTYPE_IN} {self.addrtype or ADDRTYPE_IP4} {self.address}"


@dataclass
class Extmap:
    """RFC 8285 section 8 `a=extmap:<id>[/<direction>] <uri> [<extension attributes>]`."""

    id: int
    uri: str
    direction: str | None = None
    attributes: str | None = None

    @classmethod
    def parse(cls, value: str) -> Extmap:
        match = _EXTMAP_RE.fullmatch(value)
        if not match:
            raise SdpError(f"malformed a=extmap: {value!r}")
        ext_id = int(match.group(1))
        if not (EXTMAP_ID_MIN <= ext_id <= EXTMAP_ID_MAX or ext_id in EXTMAP_OFFER_ID_RANGE):
            raise SdpError(f"a=extmap id {ext_id} outside 1-255 (RFC 8285 section 4)")
        direction = match.group(2)
        if direction is not None and direction not in EXTMAP_DIRECTIONS:
            raise SdpError(f"a=extmap direction {direction!r} is not one of {EXTMAP_DIRECTIONS}")
        return cls(id=ext_id, uri=match.group(3), direction=direction, attributes=match.group(4))

    def serialize(self) -> str:
        text = str(self.id) if self.direction is None else f"{self.id}/{self.direction}"
        text += f" {self.uri}"
        if self.attributes:
            text += f" {self.attributes}"
        return text


def parse_rtpmap(value: str) -> tuple[int, str, int, int]:
    """RFC 4566 section 6 `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]` -> (pt, enc, clock, ch).

    Channels default to 1 for audio when omitted, as the RFC allows.
    """
    match = _RTPMAP_RE.fullmatch(value)
    if not match:
        raise SdpError(f"malformed a=rtpmap: {value!r}")
    pt = int(match.group(1))
    if pt > RTP_PAYLOAD_TYPE_MAX:
        raise SdpError(f"a=rtpmap payload type {pt} > {RTP_PAYLOAD_TYPE_MAX}")
    clock = int(match.group(3))
    channels = int(match.group(4)) if match.group(4) is not None else 1
    if clock == 0 or channels == 0:
        raise SdpError(f"a=rtpmap clock rate and channels must be positive: {value!r}")
    return pt, match.group(2), clock, channels


def parse_fmtp(value: str) -> tuple[str, dict[str, str]]:
    """RFC 4566 section 6 `a=fmtp:<format> <params>` -> (format, {name: value}).

    Parameters are the common `k=v;k=v` form; a bare item such as the RFC 4733
    event list `0-15` becomes a key with an empty value.
    """
    stripped = value.strip(" \t")
    fmt, _, rest = stripped.partition(" ")
    if not fmt:
        raise SdpError(f"malformed a=fmtp: {value!r}")
    params: dict[str, str] = {}
    for item in rest.split(";"):
        item = item.strip(" \t")
        if not item:
            continue
        key, _, val = item.partition("=")
        params.setdefault(key.strip(" \t"), val.strip(" \t"))
    return fmt, params


def parse_ptime(value: str) -> int:
    """RFC 4566 section 6 `a=ptime:<ms>` (some peers write '20.0'); rounded to whole ms, > 0."""
    match = _PTIME_RE.fullmatch(value.strip(" \t"))
    if not match:
        raise SdpError(f"malformed a=ptime: {value!r}")
    ms = round(float(match.group(0)))
    if ms <= 0:
        raise SdpError(f"a=ptime must be positive: {value!r}")
    return ms


def _validate_attribute(name: str, value: str | None, *, media: bool) -> None:
    """Check the attributes the engine interprets, so their helpers cannot fail later."""
    if name in DIRECTIONS:
        if value is not None:
            raise SdpError(f"a={name} takes no value")
    elif name == "extmap":
        Extmap.parse(value or "")
    elif not media:
        return
    elif name == "rtpmap":
        parse_rtpmap(value or "")
    elif name == "fmtp":
        parse_fmtp(value or "")
    elif name in ("ptime", "maxptime"):
        parse_ptime(value or "")
    elif name == "rtcp":
        RtcpAttribute.parse(value or "")


class AttributeList(list[tuple[str, str | None]]):
    """Ordered `(name, value)` attribute pairs; `value is None` for flags (`a=rtcp-mux`).

    Calling the list with a name returns that attribute's values in order, so
    `media.attributes` is the data and `media.attributes("crypto")` the lookup.
    """

    def __call__(self, name: str) -> list[str | None]:
        return [value for attr_name, value in self if attr_name == name]


class _Section:
    """What session level and media level share: the attribute list and its lookups."""

    attributes: AttributeList

    def __setattr__(self, name: str, value: object) -> None:
        # Keep `attributes` callable whatever list the caller assigns.
        if name == "attributes" and not isinstance(value, AttributeList):
            value = AttributeList(cast("Iterable[tuple[str, str | None]]", value))
        object.__setattr__(self, name, value)

    def attribute(self, name: str) -> str | None:
        """The first value of `name`: None when absent or a flag (see `has_attribute`)."""
        for attr_name, value in self.attributes:
            if attr_name == name:
                return value
        return None

    def has_attribute(self, name: str) -> bool:
        return any(attr_name == name for attr_name, _ in self.attributes)

    def add_attribute(self, name: str, value: str | None = None) -> None:
        self.attributes.append((name, value))

    def _explicit_direction(self) -> str | None:
        for name, _ in self.attributes:
            if name in DIRECTIONS:
                return name
        return None

    @property
    def extmaps(self) -> list[Extmap]:
        """RFC 8285 header extension mappings, in order."""
        return [Extmap.parse(value or "") for value in self.attributes("extmap")]


@dataclass(eq=True)
class MediaDescription(_Section):
    """One RFC 4566 section 5.14 media section: `m=` and its `i= c= b= k= a=` lines."""

    media: str = "audio"
    port: int = 0
    proto: str = "RTP/AVP"
    formats: list[int | str] = field(default_factory=list)
    port_count: int = 1
    information: str | None = None
    connection: Connection | None = None
    bandwidths: list[tuple[str, int]] = field(default_factory=list)
    encryption_key: str | None = None
    attributes: AttributeList = field(default_factory=AttributeList)

    @property
    def is_rtp(self) -> bool:
        """RFC 4566 section 5.14: RTP profiles carry numeric payload types as formats."""
        return _is_rtp_proto(self.proto)

    def rtpmap(self, pt: int) -> tuple[str, int, int] | None:
        """(encoding, clock rate, channels) of `pt`; RFC 3551 defaults for static audio types."""
        for value in self.attributes("rtpmap"):
            map_pt, encoding, clock, channels = parse_rtpmap(value or "")
            if map_pt == pt:
                return encoding, clock, channels
        if self.media == "audio":
            return RFC3551_STATIC_AUDIO.get(pt)
        return None

    def fmtp(self, pt: int | str) -> dict[str, str]:
        """Format parameters of `pt`, empty when none were given."""
        for value in self.attributes("fmtp"):
            fmt, params = parse_fmtp(value or "")
            if fmt == str(pt):
                return params
        return {}

    @property
    def direction(self) -> str:
        """Media-level direction, `sendrecv` when absent; `SessionDescription.direction_of`
        also applies a session-level attribute."""
        return self._explicit_direction() or DEFAULT_DIRECTION

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        return parse_ptime(value) if value is not None else None

    @property
    def rtcp_mux(self) -> bool:
        """RFC 5761 section 5.1.1: the peer offers RTP and RTCP on one port."""
        return self.has_attribute("rtcp-mux")

    @property
    def rtcp(self) -> RtcpAttribute | None:
        value = self.attribute("rtcp")
        return RtcpAttribute.parse(value) if value is not None else None

    @property
    def crypto(self) -> list[CryptoAttribute]:
        """RFC 4568 SDES lines. Parsed on access (peers list suites we may not know), so
        this raises SdpError for a malformed line; offer/answer skips such lines instead."""
        from mixer.sdp.crypto import parse_crypto

        return [parse_crypto(value or "") for value in self.attributes("crypto")]

    def _lines(self) -> list[str]:
        port = str(self.port) if self.port_count == 1 else f"{self.port}/{self.port_count}"
        formats = " ".join(str(fmt) for fmt in self.formats)
        lines = [f"m={self.media} {port} {self.proto} {formats}"]
        if self.information is not None:
            lines.append(f"i={self.information}")
        if self.connection is not None:
            lines.append(f"c={self.connection.serialize()}")
        lines.extend(f"b={bwtype}:{bandwidth}" for bwtype, bandwidth in self.bandwidths)
        if self.encryption_key is not None:
            lines.append(f"k={self.encryption_key}")
        lines.extend(_attribute_line(name, value) for name, value in self.attributes)
        return lines


@dataclass(eq=True)
class SessionDescription(_Section):
    """An RFC 4566 session description: session-level lines plus its media sections."""

    version: int = SDP_VERSION
    origin: Origin = field(default_factory=Origin)
    name: str = "-"
    information: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[tuple[str, int]] = field(default_factory=list)
    timing: list[Timing] = field(default_factory=lambda: [Timing()])
    time_zones: str | None = None
    encryption_key: str | None = None
    attributes: AttributeList = field(default_factory=AttributeList)
    media: list[MediaDescription] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> SessionDescription:
        return parse(text)

    @property
    def direction(self) -> str:
        """Session-level direction, `sendrecv` when absent (RFC 4566 section 6)."""
        return self._explicit_direction() or DEFAULT_DIRECTION

    def direction_of(self, media: MediaDescription) -> str:
        """Effective direction of `media`: its own attribute, else the session's, else sendrecv."""
        return media._explicit_direction() or self.direction

    def connection_of(self, media: MediaDescription) -> Connection | None:
        """RFC 4566 section 5.7: a media-level c= overrides the session-level one."""
        return media.connection or self.connection

    def serialize(self) -> str:
        """The description as SDP text: RFC 4566 section 5 line order, CRLF line ends."""
        lines = [f"v={self.version}", f"o={self.origin.serialize()}", f"s={self.name or ' '}"]
        if self.information is not None:
            lines.append(f"i={self.information}")
        if self.uri is not None:
            lines.append(f"u={self.uri}")
        lines.extend(f"e={email}" for email in self.emails)
        lines.extend(f"p={phone}" for phone in self.phones)
        if self.connection is not None:
            lines.append(f"c={self.connection.serialize()}")
        lines.extend(f"b={bwtype}:{bandwidth}" for bwtype, bandwidth in self.bandwidths)
        for timing in self.timing or [Timing()]:
            lines.append(f"t={timing.start} {timing.stop}")
            lines.extend(f"r={repeat}" for repeat in timing.repeats)
        if self.time_zones is not None:
            lines.append(f"z={self.time_zones}")
        if self.encryption_key is not None:
            lines.append(f"k={self.encryption_key}")
        lines.extend(_attribute_line(name, value) for name, value in self.attributes)
        for media in self.media:
            lines.extend(media._lines())
        for line in lines:
            if any(char in line for char in "\r\n\0"):
                # A CR/LF smuggled into a field would inject lines into the peer's SDP.
                raise SdpError(f"field contains CR, LF or NUL: {line!r}")
        return "\r\n".join(lines) + "\r\n"


def _is_rtp_proto(proto: str) -> bool:
    return "RTP" in proto.split("/")


def _attribute_line(name: str, value: str | None) -> str:
    if not _TOKEN_RE.fullmatch(name):
        raise SdpError(f"attribute name is not an RFC 4566 token: {name!r}")
    return f"a={name}" if value is None else f"a={name}:{value}"


def _parse_media_line(value: str) -> MediaDescription:
    """RFC 4566 section 5.14 `m=<media> <port>[/<count>] <proto> <fmt> ...`."""
    parts = _fields(value)
    if len(parts) < 4:
        raise SdpError(f"m= needs media, port, proto and at least one format: {value!r}")
    media, port_spec, proto, *formats = parts
    if not _TOKEN_RE.fullmatch(media):
        raise SdpError(f"m= media type is not a token: {media!r}")
    port_text, slash, count_text = port_spec.partition("/")
    port = _int(port_text, "m= port", maximum=65535)
    port_count = _int(count_text, "m= port count", minimum=1, maximum=65535) if slash else 1
    if not all(_TOKEN_RE.fullmatch(part) for part in proto.split("/")):
        raise SdpError(f"m= proto is not token/token...: {proto!r}")
    parsed_formats: list[int | str] = []
    for fmt in formats:
        if _is_rtp_proto(proto):
            parsed_formats.append(_int(fmt, "m= payload type", maximum=RTP_PAYLOAD_TYPE_MAX))
        elif _TOKEN_RE.fullmatch(fmt):
            parsed_formats.append(fmt)
        else:
            raise SdpError(f"m= format is not a token: {fmt!r}")
    return MediaDescription(media=media, port=port, port_count=port_count, proto=proto,
                            formats=parsed_formats)


def _parse_bandwidth(value: str) -> tuple[str, int]:
    """RFC 4566 section 5.8 `b=<bwtype>:<bandwidth>` (kbit/s for CT and AS)."""
    bwtype, sep, amount = value.partition(":")
    if not sep or not _TOKEN_RE.fullmatch(bwtype):
        raise SdpError(f"malformed b= line: {value!r}")
    return bwtype, _int(amount, "b= bandwidth")


def _parse_attribute(value: str, section: _Section, *, media: bool) -> None:
    """RFC 4566 section 5.13 `a=<name>` or `a=<name>:<value>`, checked if the engine uses it."""
    name, sep, attr_value = value.partition(":")
    if not _TOKEN_RE.fullmatch(name):
        raise SdpError(f"attribute name is not a token: {name!r}")
    if name in DIRECTIONS and section._explicit_direction() is not None:
        raise SdpError(f"a={name} conflicts with an earlier direction attribute")
    resolved = attr_value if sep else None
    _validate_attribute(name, resolved, media=media)
    section.attributes.append((name, resolved))


def _set_once(section: object, attr: str, value: object, kind: str) -> None:
    if getattr(section, attr) is not None:
        raise SdpError(f"more than one {kind}= line in this section")
    setattr(section, attr, value)


def parse(text: str) -> SessionDescription:
    """Parse SDP text (CRLF or LF line ends) into a SessionDescription.

    RFC 4566 section 5: `v=`, `o=`, `s=` must be the first three lines, at
    least one `t=` must precede the first `m=`, `r=` must follow a `t=`, and a
    type letter the RFC does not define invalidates the description. Optional
    session lines may come in any order between `s=` and the first `m=`, as
    real peers vary; unknown attributes are kept verbatim.
    """
    if not isinstance(text, str):
        raise SdpError(f"SDP must be str, not {type(text).__name__}")
    raw_lines = text.split("\n")
    while raw_lines and raw_lines[-1] in ("", "\r"):
        raw_lines.pop()  # the final CRLF, and the blank line some SIP stacks append
    lines: list[tuple[int, str, str]] = []
    for number, raw in enumerate(raw_lines, 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if "\r" in line or "\0" in line:
            raise SdpError("stray CR or NUL inside a line", line=number)
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise SdpError(f"not a '<type>=<value>' line: {line[:40]!r}", line=number)
        lines.append((number, line[0], line[2:]))
    if [kind for _, kind, _ in lines[:3]] != ["v", "o", "s"]:
        raise SdpError("SDP must start with v=, o= and s= lines in that order (RFC 4566 section 5)")

    try:
        version = _int(lines[0][2], "v= version")
    except SdpError as exc:
        raise SdpError(str(exc), line=1) from None
    if version != SDP_VERSION:
        raise SdpError(f"unsupported SDP version {version} (RFC 4566 section 5.1 defines 0)", line=1)
    try:
        origin = Origin.parse(lines[1][2])
    except SdpError as exc:
        raise SdpError(str(exc), line=lines[1][0]) from None
    # RFC 4566 section 5.3: an unnamed session is "s= "; an empty s= (seen in the wild) means the same.
    session = SessionDescription(version=version, origin=origin, name=lines[2][2] or " ", timing=[])

    builder = _Builder(session)
    for number, kind, value in lines[3:]:
        try:
            builder.feed(kind, value, number)
        except SdpError as exc:
            if exc.line is not None:
                raise
            raise SdpError(str(exc), line=number) from None
    builder.finish()
    return session


class _Builder:
    """Applies lines 4..n to a SessionDescription, tracking which section is open."""

    def __init__(self, session: SessionDescription) -> None:
        self.session = session
        self.media: MediaDescription | None = None
        self.previous = "s"
        self.media_line_numbers: list[int] = []

    def feed(self, kind: str, value: str, number: int) -> None:
        if kind == "m":
            self.media = _parse_media_line(value)
            self.session.media.append(self.media)
            self.media_line_numbers.append(number)
        elif self.media is None:
            self._session_line(kind, value)
        else:
            self._media_line(self.media, kind, value)
        self.previous = kind

    def _session_line(self, kind: str, value: str) -> None:
        session = self.session
        if kind in "vos":
            raise SdpError(f"duplicate {kind}= line")
        elif kind == "i":
            _set_once(session, "information", value, kind)
        elif kind == "u":
            _set_once(session, "uri", value, kind)
        elif kind == "e":
            session.emails.append(value)
        elif kind == "p":
            session.phones.append(value)
        elif kind == "c":
            _set_once(session, "connection", Connection.parse(value), kind)
        elif kind == "b":
            session.bandwidths.append(_parse_bandwidth(value))
        elif kind == "t":
            session.timing.append(Timing.parse(value))
        elif kind == "r":
            if self.previous not in ("t", "r"):
                raise SdpError("r= must follow a t= line (RFC 4566 section 5.10)")
            session.timing[-1].repeats.append(value)
        elif kind == "z":
            _set_once(session, "time_zones", value, kind)
        elif kind == "k":
            _set_once(session, "encryption_key", value, kind)
        elif kind == "a":
            _parse_attribute(value, session, media=False)
        else:
            raise SdpError(f"unknown line type {kind}= (RFC 4566 section 5)")

    @staticmethod
    def _media_line(media: MediaDescription, kind: str, value: str) -> None:
        if kind == "i":
            _set_once(media, "information", value, kind)
        elif kind == "c":
            # RFC 4566 allows several c= per media for layered multicast; a
            # unicast voice leg has one, so a second is rejected rather than lost.
            _set_once(media, "connection", Connection.parse(value), kind)
        elif kind == "b":
            media.bandwidths.append(_parse_bandwidth(value))
        elif kind == "k":
            _set_once(media, "encryption_key", value, kind)
        elif kind == "a":
            _parse_attribute(value, media, media=True)
        elif kind in SESSION_LINE_TYPES:
            raise SdpError(f"{kind}= is a session-level line and cannot follow m= (RFC 4566 section 5)")
        else:
            raise SdpError(f"unknown line type {kind}= (RFC 4566 section 5)")

    def finish(self) -> None:
        session = self.session
        if not session.timing:
            raise SdpError("missing t= line before the first m= line (RFC 4566 section 5.9)")
        if session.connection is None:
            for number, media in zip(self.media_line_numbers, session.media, strict=True):
                if media.connection is None:
                    raise SdpError("media has no c= line and there is no session-level c= "
                                   "(RFC 4566 section 5.7)", line=number)
