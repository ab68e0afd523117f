"""Digest authentication for SIP (RFC 3261 section 22.4, RFC 7616 algorithms as RFC 8760 brings
them to SIP): MD5, SHA-256 and SHA-512/256, each also in its `-sess` form; qop `auth` and
`auth-int`, and the RFC 2069 form without qop.

The UAC side answers a 401/407 challenge (`DigestChallenge.parse`, `authorization`). RFC 8760
section 2.4: a server may offer several challenges, most preferred first; the client takes the
first one whose algorithm it supports (`choose_challenge`). `DigestVerifier` is the server side
(used by tests and available to anything that wants to challenge).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

from controller.sip.errors import SipParseError
from controller.sip.uri import is_token, parse_quoted

# RFC 8760 section 2.1 (and RFC 7616 section 6.1) algorithm names -> hashlib names
ALGORITHMS = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}


def _hash(algorithm: str, data: str) -> str:
    name = ALGORITHMS[algorithm.upper().removesuffix("-SESS")]
    return hashlib.new(name, data.encode("utf-8")).hexdigest()


def supported(algorithm: str) -> bool:
    base = algorithm.upper().removesuffix("-SESS")
    if base not in ALGORITHMS:
        return False
    try:
        hashlib.new(ALGORITHMS[base])
    except ValueError:   # an OpenSSL without SHA-512/256
        return False
    return True


def parse_auth_params(text: str) -> tuple[str, dict[str, str]]:
    """`Scheme name=value, name="quoted", ...` -> (scheme, {lower-case name: value})."""
    text = text.strip()
    scheme, _, rest = text.partition(" ")
    if not is_token(scheme):
        raise SipParseError(f"bad authentication scheme {scheme[:20]!r}")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t,":
            i += 1
        if i >= n:
            break
        eq = rest.find("=", i)
        if eq < 0:
            raise SipParseError("authentication parameter without '='")
        name = rest[i:eq].strip()
        if not is_token(name):
            raise SipParseError(f"bad authentication parameter {name[:20]!r}")
        i = eq + 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            value, i = parse_quoted(rest, i)
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            value = rest[i:end].strip()
            i = end
        params[name.lower()] = value
    return scheme, params


@dataclass
class DigestChallenge:
    """One WWW-Authenticate / Proxy-Authenticate Digest challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: list[str] = field(default_factory=list)
    opaque: str | None = None
    stale: bool = False
    proxy: bool = False   # came in Proxy-Authenticate (answer in Proxy-Authorization)

    @classmethod
    def parse(cls, value: str, proxy: bool = False) -> DigestChallenge:
        scheme, params = parse_auth_params(value)
        if scheme.lower() != "digest":
            raise SipParseError(f"not a Digest challenge ({scheme})")
        if "realm" not in params or "nonce" not in params:
            raise SipParseError("Digest challenge without realm or nonce")
        qop = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
        return cls(realm=params["realm"], nonce=params["nonce"],
                   algorithm=params.get("algorithm", "MD5"), qop=qop,
                   opaque=params.get("opaque"), stale=params.get("stale", "").lower() == "true",
                   proxy=proxy)


def choose_challenge(response) -> DigestChallenge | None:
    """The first challenge of a 401/407 whose algorithm this client supports (RFC 8760 2.4)."""
    header = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
    for value in response.headers.lines(header):
        try:
            challenge = DigestChallenge.parse(value, proxy=response.status == 407)
        except SipParseError:
            continue
        if supported(challenge.algorithm):
            return challenge
    return None


def digest_response(challenge: DigestChallenge, username: str, password: str, method: str,
                    uri: str, body: bytes = b"", cnonce: str = "", nc: int = 1,
                    qop: str | None = None) -> str:
    """The `response` value of RFC 7616 section 3.4.1 (RFC 2617 3.2.2 when qop is None)."""
    algorithm = challenge.algorithm
    ha1 = _hash(algorithm, f"{username}:{challenge.realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = _hash(algorithm, f"{ha1}:{challenge.nonce}:{cnonce}")
    if qop == "auth-int":
        body_hash = hashlib.new(ALGORITHMS[algorithm.upper().removesuffix("-SESS")], body).hexdigest()
        ha2 = _hash(algorithm, f"{method}:{uri}:{body_hash}")
    else:
        ha2 = _hash(algorithm, f"{method}:{uri}")
    if qop is None:
        return _hash(algorithm, f"{ha1}:{challenge.nonce}:{ha2}")
    return _hash(algorithm, f"{ha1}:{challenge.nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}")


def authorization(challenge: DigestChallenge, username: str, password: str, method: str,
                  uri: str, body: bytes = b"", cnonce: str | None = None, nc: int = 1) -> str:
    """The Authorization / Proxy-Authorization value answering `challenge` (section 22.4)."""
    qop = None
    if challenge.qop:
        qop = "auth" if "auth" in challenge.qop else ("auth-int" if "auth-int" in challenge.qop else None)
        if qop is None:
            raise SipParseError(f"no supported qop in {challenge.qop}")
    cnonce = cnonce if cnonce is not None else secrets.token_hex(8)
    response = digest_response(challenge, username, password, method, uri, body, cnonce, nc, qop)
    parts = [f'username="{_escape(username)}"', f'realm="{_escape(challenge.realm)}"',
             f'nonce="{_escape(challenge.nonce)}"', f'uri="{_escape(uri)}"',
             f'response="{response}"', f"algorithm={challenge.algorithm}"]
    if qop is not None:
        parts += [f"qop={qop}", f"nc={nc:08x}", f'cnonce="{_escape(cnonce)}"']
    if challenge.opaque is not None:
        parts.append(f'opaque="{_escape(challenge.opaque)}"')
    return "Digest " + ", ".join(parts)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


@dataclass
class Credentials:
    username: str
    password: str
    realm: str | None = None   # answer only this realm's challenges when set


class DigestVerifier:
    """Server side: issue challenges and check answers. Nonces are HMAC-stamped with their issue
    time, so nothing is stored per client and stale nonces are recognised (`stale=true`)."""

    def __init__(self, realm: str, users: dict[str, str], algorithm: str = "SHA-256",
                 nonce_ttl_s: float = 300.0, secret: bytes | None = None) -> None:
        if not supported(algorithm):
            raise ValueError(f"unsupported digest algorithm {algorithm}")
        self.realm = realm
        self.users = users
        self.algorithm = algorithm
        self.nonce_ttl_s = nonce_ttl_s
        self.secret = secret or secrets.token_bytes(32)

    def _nonce(self, issued: int) -> str:
        stamp = f"{issued:x}"
        mac = hmac.new(self.secret, stamp.encode(), hashlib.sha256).hexdigest()[:24]
        return f"{stamp}.{mac}"

    def challenge(self, stale: bool = False) -> str:
        value = (f'Digest realm="{self.realm}", nonce="{self._nonce(int(time.time()))}", '
                 f'algorithm={self.algorithm}, qop="auth"')
        return value + (", stale=true" if stale else "")

    def verify(self, header: str, method: str, body: bytes = b"") -> str:
        """'ok', 'stale' (a good answer to an expired nonce) or 'bad'."""
        try:
            scheme, params = parse_auth_params(header)
        except SipParseError:
            return "bad"
        if scheme.lower() != "digest" or params.get("realm") != self.realm:
            return "bad"
        password = self.users.get(params.get("username", ""))
        nonce = params.get("nonce", "")
        stamp, _, mac = nonce.partition(".")
        if password is None or not stamp or not hmac.compare_digest(nonce, self._nonce(int(stamp, 16) if _hex(stamp) else -1)):
            return "bad"
        algorithm = params.get("algorithm", "MD5")
        if algorithm.upper() != self.algorithm.upper():
            return "bad"
        challenge = DigestChallenge(self.realm, nonce, algorithm, ["auth"])
        qop = params.get("qop")
        nc = int(params.get("nc", "1"), 16) if _hex(params.get("nc", "1")) else -1
        expected = digest_response(challenge, params["username"], password, method,
                                   params.get("uri", ""), body, params.get("cnonce", ""), nc, qop)
        if not hmac.compare_digest(expected, params.get("response", "")):
            return "bad"
        if time.time() - int(stamp, 16) > self.nonce_ttl_s:
            return "stale"
        return "ok"


def _hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdefABCDEF" for c in text)
