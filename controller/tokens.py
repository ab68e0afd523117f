"""User tokens: HMAC-SHA256 JWTs (PyJWT), expiring, scoped, revocable.

A token names its identity (`sub`), scopes, issue time (`iat`, milliseconds precision so that a
token issued right after a revocation is not caught by it) and a unique id (`jti`). Revocation lives
in the store: "revoke all" sets the identity's not-before time (tokens issued earlier fail), and a
single token can be revoked by its jti. Clock skew between controllers is tolerated by `leeway_s`.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import jwt

from controller.errors import ApiError
from controller.store import Store

ALGORITHM = "HS256"
ISSUER = "voicemix"
SCOPES = frozenset({"voip", "pstn", "admin"})


@dataclass(frozen=True)
class Principal:
    """Who is calling: an identity with scopes, or the admin key (identity None)."""

    identity: str | None
    scopes: frozenset[str]
    jti: str | None = None
    expires_at: float | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes


ADMIN_KEY_PRINCIPAL = Principal(None, frozenset({"admin"}))


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message)


class TokenAuthority:
    """Issues and verifies tokens against the store's revocations."""

    def __init__(self, secret: str, store: Store, leeway_s: float = 5.0) -> None:
        self.secret = secret
        self.store = store
        self.leeway_s = leeway_s

    def issue(self, identity: str, scopes: list[str], ttl_s: int) -> tuple[str, str, float]:
        """Returns (token, jti, expires_at epoch seconds)."""
        now = round(time.time(), 3)
        jti = secrets.token_hex(12)
        expires_at = int(now + ttl_s)
        claims = {"iss": ISSUER, "sub": identity, "scope": " ".join(sorted(set(scopes))),
                  "iat": now, "exp": expires_at, "jti": jti}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM), jti, float(expires_at)

    async def verify(self, token: str) -> Principal:
        """The token's principal, or ApiError 401 token_invalid / token_expired / token_revoked."""
        try:
            claims = jwt.decode(token, self.secret, algorithms=[ALGORITHM], issuer=ISSUER,
                                leeway=self.leeway_s,
                                options={"require": ["exp", "iat", "sub", "jti", "iss"]})
        except jwt.ExpiredSignatureError:
            raise _unauthorized("token_expired", "the token has expired") from None
        except jwt.InvalidSignatureError:
            raise _unauthorized("token_invalid", "the token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise _unauthorized("token_invalid", f"the token is not valid: {exc}") from None
        identity, jti, scope = claims["sub"], claims["jti"], claims.get("scope", "")
        if not (isinstance(identity, str) and isinstance(jti, str) and isinstance(scope, str)
                and isinstance(claims["iat"], (int, float))):
            raise _unauthorized("token_invalid", "the token's claims have the wrong types")
        state = await self.store.token_state(identity, jti)
        if state is None:
            raise _unauthorized("token_invalid", "the token names an unknown identity")
        _, not_before, jti_revoked = state
        if jti_revoked or claims["iat"] < not_before:
            raise _unauthorized("token_revoked", "the token has been revoked")
        scopes = frozenset(scope.split()) & SCOPES
        return Principal(identity, scopes, jti, float(claims["exp"]))
