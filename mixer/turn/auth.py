"""Long-term credentials (RFC 8489 9.2) with a static user list and REST-API time-limited users.

REST-API credentials are what the controller hands out (`GET /v1/turn/credentials`):
`username = "<unix expiry>:<user>"`, `password = base64(HMAC-SHA1(secret, username))`. The server
needs no user database for them: it recomputes the password from the shared secret and refuses a
username whose expiry has passed.

Nonces are stateless: `<expiry hex>` plus an HMAC of it under a per-process key, so a server
checks one without remembering anything and an expired one gets 438 Stale Nonce.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from mixer.turn.stun import long_term_key


def rest_password(secret: str, username: str) -> str:
    """The REST-API password of `username`: base64(HMAC-SHA1(secret, username))."""
    mac = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")


def rest_credentials(secret: str, user: str, ttl_s: int = 86400, now: float | None = None) -> tuple[str, str]:
    """(username, password) valid for `ttl_s` seconds, as the controller issues them."""
    expiry = int((time.time() if now is None else now) + ttl_s)
    username = f"{expiry}:{user}"
    return username, rest_password(secret, username)


@dataclass(frozen=True)
class Identity:
    """Who authenticated: `username` as sent, `user` the quota/bandwidth owner, `key` for integrity."""

    username: str
    user: str
    key: bytes


class Credentials:
    """Looks up the long-term key of a username (static list first, then REST-API)."""

    def __init__(self, realm: str, secret: str | None, static_users: dict[str, str],
                 nonce_lifetime_s: float) -> None:
        self.realm = realm
        self.secret = secret
        self.static_users = dict(static_users)
        self.nonce_lifetime_s = nonce_lifetime_s
        self._nonce_key = secrets.token_bytes(16)

    def identity(self, username: str, now: float | None = None) -> Identity | None:
        """The identity for `username`, or None (unknown user, or an expired REST username)."""
        password = self.static_users.get(username)
        if password is not None:
            return Identity(username, username, long_term_key(username, self.realm, password))
        if self.secret is None:
            return None
        expiry, sep, user = username.partition(":")
        if not sep or not expiry.isdigit() or not user:
            return None
        if int(expiry) < (time.time() if now is None else now):
            return None
        password = rest_password(self.secret, username)
        return Identity(username, user, long_term_key(username, self.realm, password))

    # ------------------------------------------------------------------------------------ nonces
    def new_nonce(self, now: float | None = None) -> str:
        expiry = int(((time.monotonic() if now is None else now) + self.nonce_lifetime_s) * 1000)
        stamp = f"{expiry:012x}"
        return stamp + self._nonce_mac(stamp)

    def nonce_valid(self, nonce: str, now: float | None = None) -> bool:
        stamp, mac = nonce[:12], nonce[12:]
        if len(stamp) != 12 or not hmac.compare_digest(mac, self._nonce_mac(stamp)):
            return False
        try:
            expiry_ms = int(stamp, 16)
        except ValueError:
            return False
        return expiry_ms / 1000 > (time.monotonic() if now is None else now)

    def _nonce_mac(self, stamp: str) -> str:
        return hmac.new(self._nonce_key, stamp.encode("ascii"), hashlib.sha256).hexdigest()[:20]
