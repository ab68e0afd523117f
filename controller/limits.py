"""Request rates, failed-token cool-downs and quotas of the REST API (issue 18).

One `RestLimits` per app, consulted at two points:

- `RestLimits.middleware` (plain ASGI, outermost after the body limit): every request from an
  address in a token-failure cool-down is answered 429 `too_many_failures` without being read;
  every request over the address's rate (`rest_rate_per_address`/s, `rest_burst_per_address`) is
  429 `rate_limited`. Both carry `Retry-After` (RFC 6585 section 4, RFC 9110 10.2.3).
- `authenticate` (controller/app.py) reports each bad credential (`token_failed`), which after
  `auth_failure_limit` failures within `auth_failure_window_s` starts the address's cool-down of
  `auth_cooldown_s`; and each good one (`identity_request`), which applies the identity's own
  rate (`rest_rate_per_identity`/s), so one user spread over many addresses is held too.

Every refusal is logged once per key and cool-down or window (never the token) and counted by
limit in `voicemix_controller_limits_hit_total{limit}`. The addresses are the TCP peers uvicorn
sees: behind a reverse proxy, start uvicorn's proxy-header handling so they are the clients'.
"""
from __future__ import annotations

import logging
import math
import time
from collections import Counter

from starlette.responses import JSONResponse

from mixer.ratelimit import FailureCooldown, KeyedBuckets

log = logging.getLogger("voicemix.controller")

LIMITS = ("address_rate", "identity_rate", "token_failures", "calls_per_identity")


class RateLimited(Exception):
    """A request over a limit: 429 with `Retry-After` (seconds, at least 1)."""

    def __init__(self, limit: str, code: str, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"code": self.code, "message": self.message}},
                            status_code=429, headers={"Retry-After": retry_after(self.retry_after_s)})


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds))) if math.isfinite(seconds) else "60"


class RestLimits:
    """The REST API's per-address and per-identity limits (see the module docstring)."""

    def __init__(self, settings, hits: Counter | None = None) -> None:
        self.address_rate = KeyedBuckets(settings.rest_rate_per_address,
                                         settings.rest_burst_per_address)
        self.identity_rate = KeyedBuckets(settings.rest_rate_per_identity,
                                          settings.rest_burst_per_identity)
        self.failures = FailureCooldown(settings.auth_failure_limit, settings.auth_failure_window_s,
                                        settings.auth_cooldown_s)
        self.enabled = settings.rest_rate_per_address > 0
        self.identity_enabled = settings.rest_rate_per_identity > 0
        self.hits: Counter[str] = hits if hits is not None else Counter()
        self._logged: dict[tuple[str, object], float] = {}

    # ------------------------------------------------------------------------- called per request
    def check_address(self, address: str, now: float | None = None) -> None:
        """RateLimited if `address` is cooling down or over its request rate."""
        now = time.monotonic() if now is None else now
        blocked = self.failures.blocked_for(address, now)
        if blocked > 0:
            self._hit("token_failures", address, now)
            raise RateLimited("token_failures", "too_many_failures",
                              "too many failed authentications from this address; wait for "
                              "Retry-After", blocked)
        if self.enabled and not self.address_rate.take(address, now):
            self._hit("address_rate", address, now)
            raise RateLimited("address_rate", "rate_limited",
                              "too many requests from this address; wait for Retry-After",
                              self.address_rate.retry_after(address))

    def token_failed(self, address: str, now: float | None = None) -> None:
        """A bad or missing credential from `address`; may start its cool-down."""
        now = time.monotonic() if now is None else now
        if self.failures.failure(address, now):
            self.hits["token_failures"] += 1
            log.warning("REST API: %d failed authentications from %s; refusing it for %.0f s",
                        self.failures.limit, address, self.failures.cooldown_s,
                        extra={"event": "limit_hit", "limit": "token_failures",
                               "address": address})

    def token_succeeded(self, address: str) -> None:
        self.failures.success(address)

    def identity_request(self, identity: str | None, now: float | None = None) -> None:
        """RateLimited if `identity` (a user token's) is over its request rate."""
        if identity is None or not self.identity_enabled:
            return
        now = time.monotonic() if now is None else now
        if not self.identity_rate.take(identity, now):
            self._hit("identity_rate", identity, now)
            raise RateLimited("identity_rate", "rate_limited",
                              "too many requests for this identity; wait for Retry-After",
                              self.identity_rate.retry_after(identity))

    def quota_hit(self, limit: str, key: str) -> None:
        """A quota refused (the caller raises its error): counted and logged like a rate."""
        self._hit(limit, key, time.monotonic())

    def _hit(self, limit: str, key, now: float) -> None:
        self.hits[limit] += 1
        last = self._logged.get((limit, key))
        if last is None or now - last >= 60.0:  # a flood is one log line a minute per key
            if len(self._logged) > 10000:
                self._logged.clear()
            self._logged[(limit, key)] = now
            log.warning("limit %s hit by %s", limit, key,
                        extra={"event": "limit_hit", "limit": limit})

    def stats(self) -> dict:
        return {"hits": dict(self.hits), "addresses": len(self.address_rate),
                "identities": len(self.identity_rate),
                "cooling_down": self.failures.cooling(time.monotonic())}

    # ------------------------------------------------------------------------------- middleware
    def middleware(self, app):
        """The ASGI middleware applying `check_address` to every HTTP request."""
        limits = self

        async def limited(scope, receive, send) -> None:
            if scope["type"] == "http":
                client = scope.get("client")
                try:
                    limits.check_address(client[0] if client else "")
                except RateLimited as exc:
                    await exc.response()(scope, receive, send)
                    return
            await app(scope, receive, send)
        return limited
