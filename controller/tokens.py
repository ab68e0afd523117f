"""User tokens: HMAC-SHA256 JWTs (PyJWT), expiring, scoped, revocable.

A token names its identity (`sub`), scopes, issue time (`iat`, milliseconds precision so that a
token issued right after a revocation is not caught by it) and a unique id (`jti`). Revocation lives
in the store: "revoke all" sets the identity's not-before time (tokens issued earlier fail), and a
single token can be revoked by its jti. Clock skew between controllers is tolerated by `leeway_s`.

Every request's token is checked against the store through `TokenStateCache`: the answer for one
(identity, jti) is reused for at most `ttl_s` (VOICEMIX_REVOCATION_CACHE_S, 1 s by default),
counted from when the query was sent. So a revocation committed through any controller at time T
is enforced by every controller for every request that arrives after T + ttl_s; through this
controller, at once (its own entries for the identity are dropped on commit).
"""
from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

import jwt

from controller.errors import ApiError
from controller.store import Store, TokenState

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


class TokenStateCache:
    """The store's revocation state of recently seen tokens, each kept `ttl_s` from the moment
    its query was sent; concurrent requests with the same token share one query. Bounded: past
    `max_entries` the oldest entries go first. `ttl_s` 0 asks the store on every request."""

    def __init__(self, store: Store, ttl_s: float, max_entries: int = 65536) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str], tuple[float, TokenState | None]] = {}
        self._pending: dict[tuple[str, str], asyncio.Task] = {}
        self._generation = 0
        self.hits = 0
        self.misses = 0
        self.shared = 0

    async def state(self, identity: str, jti: str) -> TokenState | None:
        """The token's state (None: unknown identity); StoreUnavailable when it must be asked
        and does not answer."""
        if self.ttl_s <= 0:
            self.misses += 1
            return await self.store.token_state(identity, jti)
        key = (identity, jti)
        entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic():
            self.hits += 1
            return entry[1]
        task = self._pending.get(key)
        if task is not None:
            self.shared += 1
        else:
            task = asyncio.get_running_loop().create_task(self._load(key))
            self._pending[key] = task
            task.add_done_callback(lambda done: self._settled(key, done))
        return await asyncio.shield(task)

    async def _load(self, key: tuple[str, str]) -> TokenState | None:
        sent_at, generation = time.monotonic(), self._generation
        state = await self.store.token_state(*key)
        self.misses += 1
        if generation == self._generation:  # no local revocation while the query was out
            if len(self._entries) >= self.max_entries and key not in self._entries:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = (sent_at + self.ttl_s, state)
        return state

    def _settled(self, key: tuple[str, str], task: asyncio.Task) -> None:
        self._pending.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved even if every waiter was cancelled meanwhile

    def forget(self, identity: str) -> None:
        """A revocation of `identity` was committed here: its tokens are asked again."""
        self._generation += 1
        self._entries = {k: v for k, v in self._entries.items() if k[0] != identity}

    def stats(self) -> dict:
        return {"ttl_s": self.ttl_s, "entries": len(self._entries), "hits": self.hits,
                "misses": self.misses, "shared": self.shared}


class TokenAuthority:
    """Issues and verifies tokens against the store's revocations."""

    def __init__(self, secret: str, store: Store, leeway_s: float = 5.0,
                 revocation_cache_s: float = 1.0) -> None:
        self.secret = secret
        self.store = store
        self.leeway_s = leeway_s
        self.cache = TokenStateCache(store, revocation_cache_s)

    async def revoke_all(self, identity: str) -> bool:
        """Revoke every token of `identity` issued until now (committed on return); False for an
        unknown identity."""
        revoked = await self.store.revoke_all(identity, round(time.time(), 3))
        self.cache.forget(identity)
        return revoked

    async def revoke(self, identity: str, jti: str, expires_at: float) -> None:
        """Revoke one token (committed on return)."""
        await self.store.revoke_token(identity, jti, expires_at)
        self.cache.forget(identity)

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
        state = await self.cache.state(identity, jti)
        if state is None:
            raise _unauthorized("token_invalid", "the token names an unknown identity")
        if state.jti_revoked or claims["iat"] < state.tokens_not_before:
            raise _unauthorized("token_revoked", "the token has been revoked")
        scopes = frozenset(scope.split()) & SCOPES
        return Principal(identity, scopes, jti, float(claims["exp"]))
