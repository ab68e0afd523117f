"""SIP messages (RFC 3261 section 7): parse from bytes, build, serialize.

Parsing is strict where a mistake would change meaning (start line, Content-Length, CSeq, the
single-valued headers, Via) and lenient where RFC 4475 asks for it (folding, compact and odd-case
header names, LWS around separators, unknown headers kept verbatim, leading zeros). A malformed
message raises `SipParseError`; when the start line and enough headers were read to answer, the
error carries the partly parsed request (`partial`) so the transport can send 400 instead of
dropping it (RFC 4475 section 3.1.2).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from controller.sip.errors import SipParseError
from controller.sip.uri import (
    NameAddress, SipUri, Uri, is_token, parse_name_address, parse_params, parse_uri,
)

SIP_VERSION = "SIP/2.0"
# RFC 3261 section 8.1.1.7: branch IDs of RFC 3261 elements start with the magic cookie
BRANCH_MAGIC_COOKIE = "z9hG4bK"
# RFC 3261 section 7.3.3: compact forms; the rest from the IANA SIP header registry
COMPACT_FORMS = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via",
    "o": "Event", "r": "Refer-To", "b": "Referred-By", "u": "Allow-Events", "x": "Session-Expires",
    "y": "Identity", "a": "Accept-Contact", "j": "Reject-Contact", "d": "Request-Disposition",
}
_CANONICAL = {name.lower(): name for name in (
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
    "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity",
    "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires", "Organization",
    "P-Asserted-Identity", "P-Preferred-Identity", "Priority", "Privacy", "Proxy-Authenticate",
    "Proxy-Authorization", "Proxy-Require", "Reason", "Record-Route", "Refer-To", "Referred-By",
    "Reply-To", "Require", "Retry-After", "Route", "RSeq", "RAck", "Server", "Session-Expires",
    "Subject", "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
    "WWW-Authenticate", "Min-SE", "Diversion", "History-Info", "Path", "Service-Route",
)}
# Headers whose values may be comma-separated lists (section 7.3.1); others never split
# (WWW-Authenticate and friends have commas inside one value).
LIST_HEADERS = frozenset(n.lower() for n in (
    "Via", "Contact", "Route", "Record-Route", "Allow", "Supported", "Require", "Proxy-Require",
    "Unsupported", "Accept", "Accept-Encoding", "Accept-Language", "Allow-Events",
    "Content-Encoding", "Content-Language", "In-Reply-To", "Warning", "Path", "Service-Route",
    "P-Asserted-Identity", "Call-Info", "Alert-Info", "Error-Info", "Reason", "History-Info",
    "Diversion", "Identity",
))
# Headers that appear once (RFC 4475 sections 3.1.2.x, 3.3.x: two of them is a 400)
SINGLE_HEADERS = frozenset(n.lower() for n in (
    "To", "From", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type",
))
REQUIRED_HEADERS = ("via", "from", "to", "call-id", "cseq")
MAX_CSEQ = 2**31 - 1   # section 8.1.1.5: "less than 2**31"
MAX_FORWARDS_LIMIT = 255

# RFC 3261 section 21 (and the few extensions this stack sends)
REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 400: "Bad Request", 401: "Unauthorized",
    402: "Payment Required", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    410: "Gone", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 423: "Interval Too Brief", 429: "Too Many Requests",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
    493: "Undecipherable", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable", 607: "Unwanted",
    608: "Rejected",
}

_WS_SLASH = re.compile(r"\s*/\s*")
_VIA_HOST = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:]+\Z")
_WS_COLON = re.compile(r"\s*:\s*")


_NAMES: dict[str, str] = {}


def canonical_name(name: str) -> str:
    found = _NAMES.get(name)
    if found is not None:
        return found
    lowered = name.lower()
    found = COMPACT_FORMS[lowered] if lowered in COMPACT_FORMS else _CANONICAL.get(lowered, name)
    if len(_NAMES) < 4096:   # bounded: header names in hostile input are unbounded
        _NAMES[name] = found
    return found


def split_commas(value: str) -> list[str]:
    """Split a list header value on commas outside quotes and <> (section 7.3.1)."""
    if "," not in value:
        return [value.strip()]
    items, depth, quoted, start, i = [], 0, False, 0, 0
    n = len(value)
    while i < n:
        c = value[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            items.append(value[start:i].strip())
            start = i + 1
        i += 1
    items.append(value[start:].strip())
    return items


# ---------------------------------------------------------------------------------- headers
class Headers:
    """Ordered header fields; names compared case-insensitively, compact forms expanded.

    Each entry is one header line as received or added; `values(name)` splits list headers on
    commas, so `Via: a, b` and two Via lines read the same.
    """

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[list[str]] = []   # [canonical name, lower-case name, value]
        for name, value in items or ():
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        canonical = canonical_name(name)
        self._items.append([canonical, canonical.lower(), value])

    def prepend(self, name: str, value: str) -> None:
        canonical = canonical_name(name)
        self._items.insert(0, [canonical, canonical.lower(), value])

    def set(self, name: str, value: str) -> None:
        """Replace every `name` field with one (placed where the first one was)."""
        canonical = canonical_name(name)
        key = canonical.lower()
        for index, item in enumerate(self._items):
            if item[1] == key:
                item[2] = value
                self._items[index + 1:] = [i for i in self._items[index + 1:] if i[1] != key]
                return
        self._items.append([canonical, key, value])

    def remove(self, name: str) -> None:
        key = canonical_name(name).lower()
        self._items = [item for item in self._items if item[1] != key]

    def get(self, name: str, default: str | None = None) -> str | None:
        key = canonical_name(name).lower()
        for item in self._items:
            if item[1] == key:
                return item[2]
        return default

    def lines(self, name: str) -> list[str]:
        """Every field of `name`, one per header line, unsplit."""
        key = canonical_name(name).lower()
        return [item[2] for item in self._items if item[1] == key]

    def values(self, name: str) -> list[str]:
        key = canonical_name(name).lower()
        out: list[str] = []
        for item in self._items:
            if item[1] == key:
                if key in LIST_HEADERS:
                    out.extend(split_commas(item[2]))
                else:
                    out.append(item[2])
        return out

    def count(self, name: str) -> int:
        key = canonical_name(name).lower()
        return sum(1 for item in self._items if item[1] == key)

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def __iter__(self):
        return ((item[0], item[2]) for item in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        clone = Headers()
        clone._items = [list(item) for item in self._items]
        return clone


# ------------------------------------------------------------------------- structured values
@dataclass
class Via:
    """One Via value (section 20.42): sent-protocol, sent-by and parameters."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] | None = None
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return (self.params or {}).get("branch")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        out = f"{self.protocol}/{self.transport} {host}"
        if self.port is not None:
            out += f":{self.port}"
        for name, value in (self.params or {}).items():
            out += f";{name}" if value is None else f";{name}={value}"
        return out


def parse_via(value: str) -> Via:
    head, semi, param_text = value.partition(";")
    head = _WS_COLON.sub(":", _WS_SLASH.sub("/", head.strip()))
    parts = head.split()
    if len(parts) != 2:
        raise SipParseError(f"bad Via {value[:60]!r}")
    protocol, sent_by = parts
    pieces = protocol.split("/")
    if len(pieces) != 3 or not all(is_token(p) for p in pieces):
        raise SipParseError(f"bad Via protocol {protocol[:40]!r}")
    name, version, transport = pieces
    host, port = sent_by, None
    if sent_by.startswith("["):
        end = sent_by.find("]")
        if end < 0:
            raise SipParseError("bad Via host")
        host, tail = sent_by[1:end], sent_by[end + 1:]
        if tail:
            port = _via_port(tail)
    elif ":" in sent_by:
        host, _, tail = sent_by.partition(":")
        port = _via_port(":" + tail)
    if not host or not _VIA_HOST.match(host):
        raise SipParseError(f"bad Via host {host[:40]!r}")
    params = parse_params(semi + param_text) if semi else {}
    return Via(transport.upper(), host.lower(), port, params, f"{name.upper()}/{version}")


def _via_port(tail: str) -> int:
    if not tail.startswith(":") or not tail[1:].isdigit() or not 0 < int(tail[1:]) <= 65535:
        raise SipParseError("bad Via port")
    return int(tail[1:])


@dataclass(frozen=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or not is_token(parts[1]):
        raise SipParseError(f"bad CSeq {value[:40]!r}")
    number = int(parts[0])
    if number > MAX_CSEQ:
        raise SipParseError("CSeq number is not below 2**31")
    return CSeq(number, parts[1])


# --------------------------------------------------------------------------------- messages
class SipMessage:
    """Common to requests and responses; structured views of headers are parsed when first read."""

    __slots__ = ("headers", "body", "_via", "_from", "_to", "_cseq", "source", "transport")

    def __init__(self, headers: Headers | None = None, body: bytes = b"") -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self._via: list[Via] | None = None
        self._from: NameAddress | None = None
        self._to: NameAddress | None = None
        self._cseq: CSeq | None = None
        self.source: tuple[str, int] | None = None   # set by the transport that received it
        self.transport: str | None = None            # "UDP" / "TCP" / "TLS", likewise

    # structured header views --------------------------------------------------------------
    @property
    def vias(self) -> list[Via]:
        if self._via is None:
            self._via = [parse_via(v) for v in self.headers.values("Via")]
        return self._via

    @property
    def top_via(self) -> Via:
        return self.vias[0]

    @property
    def from_(self) -> NameAddress:
        if self._from is None:
            self._from = parse_name_address(self.headers.get("From", ""))
        return self._from

    @property
    def to(self) -> NameAddress:
        if self._to is None:
            self._to = parse_name_address(self.headers.get("To", ""))
        return self._to

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID", "")

    @property
    def cseq(self) -> CSeq:
        if self._cseq is None:
            self._cseq = parse_cseq(self.headers.get("CSeq", ""))
        return self._cseq

    @property
    def contacts(self) -> list[NameAddress]:
        return [parse_name_address(v) for v in self.headers.values("Contact")]

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return value.split(";", 1)[0].strip().lower() if value else None

    def invalidate(self) -> None:
        """Forget cached views after editing headers by hand."""
        self._via = self._from = self._to = self._cseq = None

    def _serialize(self, start_line: str) -> bytes:
        lines = [start_line]
        for name, value in self.headers:
            if name != "Content-Length":
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + self.body


class SipRequest(SipMessage):
    __slots__ = ("method", "uri", "version")

    def __init__(self, method: str, uri: Uri | str, headers: Headers | None = None,
                 body: bytes = b"", version: str = SIP_VERSION) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri: Uri = parse_uri(uri) if isinstance(uri, str) else uri
        self.version = version

    def serialize(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri.text} {self.version}")

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} {self.uri.text} call-id={self.call_id}>"


class SipResponse(SipMessage):
    __slots__ = ("status", "reason", "version")

    def __init__(self, status: int, reason: str | None = None, headers: Headers | None = None,
                 body: bytes = b"", version: str = SIP_VERSION) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = REASON_PHRASES.get(status, "Unknown") if reason is None else reason
        self.version = version

    def serialize(self) -> bytes:
        return self._serialize(f"{self.version} {self.status} {self.reason}")

    def __repr__(self) -> str:
        return f"<SipResponse {self.status} {self.reason} call-id={self.call_id}>"


@dataclass
class PartialRequest:
    """What a malformed request had that a 400 can be built from (section 8.2.6)."""

    method: str
    headers: Headers


# ---------------------------------------------------------------------------------- parsing
def find_header_end(data: bytes | bytearray, start: int = 0) -> tuple[int, int]:
    """(index of the blank line, its length) or (-1, 0) when the headers are not complete."""
    end = data.find(b"\r\n\r\n", start)
    if end >= 0:
        return end, 4
    end = data.find(b"\n\n", start)   # bare-LF senders: tolerated
    if end >= 0:
        return end, 2
    return -1, 0


def parse_message(data: bytes, *, datagram: bool = True) -> SipRequest | SipResponse:
    """Parse one message. On a datagram, octets past Content-Length are discarded (RFC 4475
    3.1.1.8) and a Content-Length larger than what arrived is an error (3.1.2.2); without
    Content-Length the body runs to the end (RFC 3261 18.3, UDP only)."""
    start = 0
    while data.startswith((b"\r\n", b"\n"), start):   # section 7.5: ignore CRLFs before the start line
        start += 2 if data.startswith(b"\r\n", start) else 1
    end, sep = find_header_end(data, start)
    if end < 0:
        raise SipParseError("no blank line after the headers")
    head = data[start:end].decode("utf-8", "surrogateescape")
    lines = head.split("\r\n") if sep == 4 else head.replace("\r\n", "\n").split("\n")
    message, deferred = _start_line(lines[0])
    _read_headers(lines, message)
    if deferred is not None:   # the start line was bad, but the request can still be answered
        _fail(message, str(deferred), deferred.status)
    headers = message.headers
    cl_text = headers.get("Content-Length")
    rest = data[end + sep:]
    if cl_text is not None:
        cl_text = cl_text.strip()
        if not cl_text.isdigit():
            _fail(message, "bad Content-Length")
        length = int(cl_text)
        if length > len(rest):
            _fail(message, f"Content-Length {length} is more than the {len(rest)} octets received")
        message.body = bytes(rest[:length])
    else:
        message.body = bytes(rest) if datagram else b""
    _validate(message)
    return message


def _start_line(line: str) -> tuple[SipRequest | SipResponse, SipParseError | None]:
    if line[:4].upper() == "SIP/":
        version, sp, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not sp or len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 699:
            raise SipParseError(f"bad status line {line[:60]!r}")
        if version.upper() != SIP_VERSION:
            raise SipParseError(f"unsupported version {version[:20]!r}")
        return SipResponse(int(code), reason, Headers()), None
    parts = line.split(" ")
    if len(parts) < 2 or not is_token(parts[0]):
        raise SipParseError(f"bad request line {line[:60]!r}")
    request = SipRequest.__new__(SipRequest)
    SipMessage.__init__(request, Headers())
    request.method = parts[0]
    request.version = parts[-1]
    request.uri = None
    if len(parts) != 3 or not all(parts):
        return request, SipParseError("bad Request-Line (exactly one SP between its elements)")
    uri_text, version = parts[1], parts[2]
    if version.upper() != SIP_VERSION:
        if re.fullmatch(r"SIP/\d+\.\d+", version, re.IGNORECASE):
            return request, SipParseError(f"SIP version {version} is not supported", 505)
        return request, SipParseError(f"bad SIP version {version[:20]!r}")
    if uri_text.startswith("<"):
        return request, SipParseError("the Request-URI must not be enclosed in <>")
    try:
        request.uri = parse_uri(uri_text)
    except SipParseError as exc:
        return request, exc
    if isinstance(request.uri, SipUri) and request.uri.headers:
        return request, SipParseError("headers in a Request-URI are not allowed (RFC 3261 19.1.5)")
    return request, None


def _read_headers(lines: list[str], message: SipMessage) -> None:
    raw: list[list[str]] = []
    error = None
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":   # folded continuation (section 7.3.1): one SP
            if not raw:
                error = error or "continuation line before any header"
                continue
            raw[-1][1] = " ".join(filter(None, (raw[-1][1].rstrip(), line.strip())))
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not is_token(name):
            error = error or f"bad header line {line[:60]!r}"
            continue
        raw.append([name, value.strip()])
    items = message.headers._items
    for name, value in raw:
        canonical = canonical_name(name)
        items.append([canonical, canonical.lower(), value])
    if error:
        _fail(message, error)


def _fail(message: SipMessage, text: str, status: int = 400):
    exc = SipParseError(text, status)
    if isinstance(message, SipRequest):
        exc.partial = PartialRequest(message.method, message.headers)
    raise exc


def _validate(message: SipRequest | SipResponse) -> None:
    headers = message.headers
    names = [item[1] for item in headers._items]
    for required in REQUIRED_HEADERS:
        if required not in names:
            _fail(message, f"missing {canonical_name(required)} header")
    for single in SINGLE_HEADERS:
        if names.count(single) > 1:
            _fail(message, f"more than one {canonical_name(single)} header")
    try:
        vias = message.vias
        if not vias:
            raise SipParseError("empty Via")
        for value in headers.values("Via"):
            if not value:
                raise SipParseError("empty Via value")
        message.from_
        message.to
        cseq = message.cseq
        if not message.call_id.strip() or any(c.isspace() for c in message.call_id.strip()):
            raise SipParseError("bad Call-ID")
        if isinstance(message, SipRequest):
            if cseq.method != message.method:
                raise SipParseError(f"CSeq method {cseq.method} does not match {message.method}")
            max_forwards = headers.get("Max-Forwards")
            if max_forwards is not None:
                text = max_forwards.strip()
                if not text.isdigit() or int(text) > MAX_FORWARDS_LIMIT:
                    raise SipParseError("bad Max-Forwards")
            for contact in headers.values("Contact"):
                parse_name_address(contact)
    except SipParseError as exc:
        _fail(message, str(exc), exc.status)
