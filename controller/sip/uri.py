"""SIP URIs (RFC 3261 section 19.1) and the name-addr form of From/To/Contact/Route (section 20.10).

`SipUri` parses `sip:` and `sips:` URIs into user, password, host, port, parameters and headers;
any other scheme (`tel:`, `urn:`, `http:` ...) is an `AbsoluteUri` kept as scheme plus opaque text,
which is what an element that does not understand it must do (RFC 4475 sections 3.3.2, 3.3.3).
The text a URI was parsed from is kept and written back unchanged, so a parsed message forwards
byte for byte; values are compared after %-unescaping (section 19.1.4).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_to_bytes

from controller.sip.errors import SipParseError

# RFC 3261 section 25.1: token characters
TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.?\Z")
# characters a userinfo, parameter or header of a SIP URI may carry unescaped (section 25.1:
# unreserved, escaped, and the user-, param- and hnv-unreserved sets)
_URI_TEXT = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,;?/:\[\]]*\Z")
_PARAM_TEXT = re.compile(r"[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]*\Z")
_HEADER_TEXT = re.compile(r"[A-Za-z0-9\-_.!~*'()%\[\]/?:+$]*\Z")


_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_BAD_IN_SIP_URI = re.compile(r'[\s<>"]')
_WHITESPACE = re.compile(r"\s")
_BAD_PARAM_VALUE = re.compile(r'[\s",<>]')


def is_token(text: str) -> bool:
    return _TOKEN.match(text) is not None


def unescape(text: str) -> str:
    """%-decoding of a URI component (RFC 3261 19.1.2); %00 is legal (RFC 4475 3.1.1.4)."""
    if "%" not in text:
        return text
    return unquote_to_bytes(text).decode("utf-8", "surrogateescape")


@dataclass
class AbsoluteUri:
    """A URI of a scheme this stack does not interpret (kept opaque)."""

    scheme: str
    opaque: str

    @property
    def text(self) -> str:
        return f"{self.scheme}:{self.opaque}"

    def __str__(self) -> str:
        return self.text


@dataclass
class SipUri:
    """`sip:` / `sips:` URI. `params` and `headers` map lower-case names to values (None for a
    parameter without value); `user` is as written (escaped), `user_unescaped` for comparisons."""

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    scheme: str = "sip"
    _text: str | None = field(default=None, repr=False, compare=False)

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unescape(self.user)

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self._build()
        return self._text

    def _build(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += [":", self.password]
            out.append("@")
        out.append(f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        for name, value in self.params.items():
            out.append(f";{name}" if value is None else f";{name}={value}")
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)

    def copy(self, **changes) -> SipUri:
        values = {"host": self.host, "user": self.user, "password": self.password,
                  "port": self.port, "params": dict(self.params), "headers": dict(self.headers),
                  "scheme": self.scheme}
        values.update(changes)
        return SipUri(**values)

    def __str__(self) -> str:
        return self.text

    def address(self, default_port: int = 5060) -> tuple[str, int]:
        """(host, port) to send to when this URI is the next hop (maddr wins, section 8.1.2)."""
        host = self.params.get("maddr") or self.host
        return host.strip("[]"), self.port or (5061 if self.secure else default_port)


Uri = SipUri | AbsoluteUri


def escape_user(user: str) -> str:
    """Escape a user part for writing (keeps the characters section 25.1 allows unescaped)."""
    return quote(user, safe="-_.!~*'()&=+$,;?/")


def parse_uri(text: str) -> Uri:
    """Parse a URI; SipParseError when it is not one."""
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.match(scheme):
        raise SipParseError(f"not a URI: {text[:80]!r}")
    lowered = scheme.lower()
    if lowered not in ("sip", "sips"):
        if not rest or _WHITESPACE.search(rest):
            raise SipParseError(f"malformed {scheme} URI")
        return AbsoluteUri(lowered, rest)
    return _parse_sip(lowered, rest, text)


def _parse_sip(scheme: str, rest: str, text: str) -> SipUri:
    if not rest or _BAD_IN_SIP_URI.search(rest):
        raise SipParseError(f"malformed SIP URI {text[:80]!r}")
    user = password = None
    at = rest.find("@")
    if at >= 0:  # '@' never appears unescaped after the userinfo (section 25.1)
        userinfo, rest = rest[:at], rest[at + 1:]
        user, colon, password_text = userinfo.partition(":")
        password = password_text if colon else None
        if not _URI_TEXT.match(userinfo):
            raise SipParseError(f"bad characters in the user part of {text[:80]!r}")
    rest, question, header_text = rest.partition("?")
    hostport, *param_items = rest.split(";")
    host, port = _parse_hostport(hostport, text)
    params: dict[str, str | None] = {}
    for item in param_items:
        name, eq, value = item.partition("=")
        if not name or not _PARAM_TEXT.match(name) or (eq and not _PARAM_TEXT.match(value)):
            raise SipParseError(f"bad URI parameter {item[:40]!r}")
        params[unescape(name).lower()] = value if eq else None
    headers: dict[str, str] = {}
    if question:
        for item in header_text.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq or not _HEADER_TEXT.match(name) or not _HEADER_TEXT.match(value):
                raise SipParseError(f"bad URI header {item[:40]!r}")
            headers[name] = value
    uri = SipUri(host=host, user=user, password=password, port=port, params=params,
                 headers=headers, scheme=scheme)
    uri._text = text
    return uri


def _parse_hostport(hostport: str, text: str) -> tuple[str, int | None]:
    port = None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference in {text[:80]!r}")
        host = hostport[1:end]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise SipParseError(f"bad IPv6 address in {text[:80]!r}") from None
        tail = hostport[end + 1:]
        if tail:
            if not tail.startswith(":"):
                raise SipParseError(f"bad host in {text[:80]!r}")
            port = _port(tail[1:], text)
        return host, port
    host, colon, port_text = hostport.partition(":")
    if colon:
        port = _port(port_text, text)
    if not host or not _HOSTNAME.match(host):
        raise SipParseError(f"bad host {host[:40]!r} in {text[:80]!r}")
    return host.lower(), port


def _port(text: str, uri: str) -> int:
    if not text.isdigit() or len(text) > 5 or not 0 < int(text) <= 65535:
        raise SipParseError(f"bad port in {uri[:80]!r}")
    return int(text)


# -------------------------------------------------------------------------------- name-addr
@dataclass
class NameAddress:
    """`"display name" <uri>;params` (section 20.10), the value of From, To, Contact, Route..."""

    uri: Uri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    wildcard: bool = False   # Contact: *

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddress:
        return NameAddress(self.uri, self.display_name, {**self.params, "tag": tag})

    def __str__(self) -> str:
        if self.wildcard:
            return "*"
        out = []
        if self.display_name is not None:
            escaped = self.display_name.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'"{escaped}" ')
        out.append(f"<{self.uri.text}>")
        for name, value in self.params.items():
            out.append(f";{name}" if value is None else f";{name}={value}")
        return "".join(out)


def parse_quoted(text: str, start: int) -> tuple[str, int]:
    """The quoted-string starting at text[start] == '"' (section 25.1, with quoted-pair
    escapes), and the index after its closing quote."""
    out = []
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 >= n:
                break
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise SipParseError("unterminated quoted string")


def parse_params(text: str) -> dict[str, str | None]:
    """`;name=value;flag` header parameters (generic-param, section 25.1), with LWS allowed
    around ';' and '='; quoted values are unquoted. Names are lower-cased."""
    params: dict[str, str | None] = {}
    text = text.strip()
    if not text:
        return params
    if text[0] != ";":
        raise SipParseError(f"expected ';' before parameters, got {text[:40]!r}")
    i, n = 1, len(text)
    while True:
        eq_or_semi = i
        while eq_or_semi < n and text[eq_or_semi] not in ";=\"":
            eq_or_semi += 1
        name = text[i:eq_or_semi].strip()
        if not is_token(name):
            raise SipParseError(f"bad parameter name {name[:40]!r}")
        value: str | None = None
        i = eq_or_semi
        if i < n and text[i] == "=":
            i += 1
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] == '"':
                value, i = parse_quoted(text, i)
                while i < n and text[i] in " \t":
                    i += 1
            else:
                end = text.find(";", i)
                end = n if end < 0 else end
                value = text[i:end].strip()
                if not value or _BAD_PARAM_VALUE.search(value):
                    raise SipParseError(f"bad value for parameter {name!r}")
                i = end
        elif i < n and text[i] == '"':
            raise SipParseError("unexpected quote in parameters")
        params[name.lower()] = value
        if i >= n:
            return params
        if text[i] != ";":
            raise SipParseError(f"junk after parameter {name!r}")
        i += 1


def parse_name_address(text: str) -> NameAddress:
    """A name-addr or addr-spec with header parameters. In the addr-spec form, parameters belong
    to the header, not the URI, and the URI may not hold ',', ';' or '?' (section 20.10)."""
    text = text.strip()
    if text == "*":
        return NameAddress(AbsoluteUri("*", ""), wildcard=True)
    display = None
    rest = text
    if text.startswith('"'):
        display, end = parse_quoted(text, 0)
        rest = text[end:].lstrip()
        if not rest.startswith("<"):
            raise SipParseError("a quoted display name must be followed by <uri>")
    lt = rest.find("<")
    if lt >= 0:
        if display is None:
            words = rest[:lt].split()
            if words:
                if not all(is_token(w) for w in words):
                    raise SipParseError(f"display name {rest[:lt].strip()[:40]!r} must be quoted")
                display = " ".join(words)
        gt = rest.find(">", lt)
        if gt < 0:
            raise SipParseError("unterminated <uri>")
        uri_text = rest[lt + 1:gt]
        if uri_text != uri_text.strip():
            raise SipParseError("spaces inside <uri>")
        uri = parse_uri(uri_text)
        params = parse_params(rest[gt + 1:])
        return NameAddress(uri, display, params)
    semi = rest.find(";")
    uri_text = rest if semi < 0 else rest[:semi]
    uri_text = uri_text.strip()
    if "," in uri_text or "?" in uri_text or _WHITESPACE.search(uri_text):
        raise SipParseError("a URI with ',', '?' or spaces must be enclosed in <>")
    uri = parse_uri(uri_text)
    params = parse_params(rest[semi:]) if semi >= 0 else {}
    return NameAddress(uri, None, params)
