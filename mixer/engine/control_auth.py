"""Who may drive an engine over its control API: a shared bearer secret, TLS off loopback.

- Every request must carry `Authorization: Bearer <VOICEMIX_CONTROL_SECRET>` when a secret is
  set; it is compared in constant time (both sides hashed first, so not even the length leaks).
  A wrong or missing secret is 401 in the shared error shape and changes nothing.
- `auth_failure_limit` failures from one address within `auth_failure_window_s` put it in a
  cool-down of `auth_cooldown_s`: every request from it is 429 with `Retry-After`, unread.
- An engine whose control address is not loopback must have a secret (it refuses to start
  without one) and serves the control API over HTTPS, with a certificate made on first start in
  its data directory (or the configured one); the controller pins that certificate's SHA-256
  fingerprint (`mixer.engine.client.HttpEngine`).
- Loopback without a secret stays open, as before: the embedded default, reachable only by users
  of the same host.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import ssl
import time
from collections import Counter
from pathlib import Path

from mixer.certificates import fingerprint_sha256, self_signed
from mixer.ratelimit import FailureCooldown
from mixer.settings import EngineSettings

log = logging.getLogger("voicemix.engine")

CERT_NAME = "engine-control"   # engine-control-cert.pem / engine-control-key.pem in data_dir
MIN_SECRET_LENGTH = 16


class ControlSecurityError(Exception):
    """The control API cannot be served safely as configured (the engine refuses to start)."""


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses; any other name or address is not (a name may
    resolve anywhere, and 0.0.0.0 / :: listen on every interface)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ControlGuard:
    """The bearer check and the failure cool-down in front of every control request."""

    def __init__(self, secret: str | None, failure_limit: int = 10, window_s: float = 60.0,
                 cooldown_s: float = 60.0, refusals: Counter | None = None) -> None:
        self._digest = hashlib.sha256(secret.encode()).digest() if secret else None
        self.cooldown = FailureCooldown(failure_limit, window_s, cooldown_s)
        self.refusals: Counter[str] = refusals if refusals is not None else Counter()

    @property
    def required(self) -> bool:
        return self._digest is not None

    def check(self, address: str, authorization: str | None,
              now: float | None = None) -> tuple[int, str, str, float] | None:
        """None if the request may go on; else (status, code, message, retry_after_s)."""
        if self._digest is None:
            return None
        now = time.monotonic() if now is None else now
        blocked = self.cooldown.blocked_for(address, now)
        if blocked > 0:
            self.refusals["cooldown"] += 1
            return (429, "too_many_failures", "too many failed authentications from this address; "
                    "wait for Retry-After", blocked)
        scheme, _, credential = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            reason, message = "missing", "send 'Authorization: Bearer <control secret>'"
        elif hmac.compare_digest(hashlib.sha256(credential.strip().encode()).digest(), self._digest):
            self.cooldown.success(address)
            return None
        else:
            reason, message = "wrong", "the control secret does not match"
        self.refusals[reason] += 1
        if self.cooldown.failure(address, now):
            log.warning("control API: %d failed authentications from %s; refusing it for %.0f s",
                        self.cooldown.limit, address, self.cooldown.cooldown_s,
                        extra={"event": "control_auth_cooldown", "address": address})
        else:
            log.warning("control API: refused a request from %s (%s secret)", address, reason,
                        extra={"event": "control_auth_failed", "address": address,
                               "reason": reason})
        return 401, "unauthorized", message, 0.0

    @staticmethod
    def retry_after_header(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))


def check_control_settings(settings: EngineSettings, host: str) -> bool:
    """Whether the control API must use TLS on `host`; ControlSecurityError if it must not start
    (a non-loopback address without a secret, or a secret too short to resist guessing)."""
    secret = settings.control_secret
    if secret is not None and len(secret) < MIN_SECRET_LENGTH:
        raise ControlSecurityError(
            f"VOICEMIX_CONTROL_SECRET is shorter than {MIN_SECRET_LENGTH} characters: use a "
            "random one, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    if is_loopback(host):
        return settings.control_tls
    if not secret:
        raise ControlSecurityError(
            f"the control address {host} is not loopback: set VOICEMIX_CONTROL_SECRET (the "
            "controller sends the same one), or keep --control on 127.0.0.1")
    return True


def control_tls_context(settings: EngineSettings, host: str) -> tuple[ssl.SSLContext, Path, str, bool]:
    """The control API's server TLS context (TLS 1.2+): the configured certificate, or a
    self-signed one in the data directory made now if absent. Returns (context, certificate
    path, its SHA-256 fingerprint, created now)."""
    if settings.control_tls_cert and settings.control_tls_key:
        cert, key, created = settings.control_tls_cert, settings.control_tls_key, False
    else:
        cert, key, created = self_signed(settings.data_dir, [host], CERT_NAME,
                                         "voicemix engine control")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context, Path(cert), fingerprint_sha256(Path(cert)), created
