"""Controller settings in one typed place; every field can come from a `VOICEMIX_<NAME>` variable.

Defaults run embedded on loopback: an in-process engine, an in-memory call registry, a self-signed
certificate and generated secrets kept in the data directory.
"""
from __future__ import annotations

import json
import logging
import secrets
import tomllib
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mixer.datadir import narrow_secret_file, private_directory, write_secret

log = logging.getLogger("voicemix.controller")

# Secrets generated on first start when not configured, then kept in the data directory so that
# tokens and TURN credentials survive a restart.
GENERATED_SECRETS = ("admin_key", "token_secret", "turn_secret")
SECRETS_FILE = "secrets.json"


class ControllerSettings(BaseSettings):
    """Signaling controller settings (VOICEMIX_DATA_DIR, VOICEMIX_ADMIN_KEY, ...)."""

    # a setting refused at start never echoes its value (it may be a secret)
    model_config = SettingsConfigDict(env_prefix="VOICEMIX_", extra="ignore",
                                      hide_input_in_errors=True)

    data_dir: Path = Field(Path.home() / ".local" / "share" / "voicemix",
                           description="SQLite store, certificate, secrets, recordings, "
                                       "CDRs queued while the store is down")
    listen: str = Field("127.0.0.1:8443", description="HTTPS address of the REST API")
    insecure_http: bool = Field(False, description="serve plain HTTP (tests on loopback only)")
    tls_cert: Path | None = Field(None, description="PEM certificate chain; unset = self-signed")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    engines: list[str] = Field(default_factory=list,
                               description="remote engine control URLs; empty = in-process engine. "
                                           "https://host:port#sha256=AB:CD:... pins the engine's "
                                           "certificate (its fingerprint is in the engine's log); "
                                           "without a pin the first one seen is kept in "
                                           "<data_dir>/engine-pins.json and any other refused")
    control_secret: str | None = Field(
        None, repr=False,
        description="bearer secret sent to the remote engines' control APIs (the engines' "
                    "VOICEMIX_CONTROL_SECRET)")
    admin_key: str | None = Field(
        None, repr=False, description="bearer key of the admin API; unset = generated on first start, printed once, kept in secrets.json")
    token_secret: str | None = Field(
        None, repr=False, description="HMAC key of the JWT tokens; unset = generated and kept in secrets.json")
    token_leeway_s: float = Field(5.0, ge=0, description="clock-skew tolerance for token times")
    token_default_ttl_s: int = Field(3600, ge=1, description="token lifetime when the request gives none")
    token_max_ttl_s: int = Field(7 * 86400, ge=1, description="longest token lifetime a request may ask for")
    turn_secret: str | None = Field(
        None, repr=False, description="shared secret of the TURN REST-API credentials; unset = generated and kept in secrets.json")
    turn_enabled: bool = Field(
        True, description="hand out TURN credentials (and, in serve, run the embedded TURN server)")
    turn_listen: str = Field("127.0.0.1:3478", description="where the embedded STUN/TURN server listens")
    turn_urls: list[str] = Field(default_factory=list,
                                 description="URLs handed to clients; empty = derived from turn_listen")
    turn_ttl_s: int = Field(
        86400, ge=60, le=7 * 86400, description="lifetime of the TURN credentials handed out")
    redis_url: str | None = Field(None, repr=False, description="shared call registry; unset = in memory")
    database_url: str | None = Field(
        None, repr=False, description="shared store, postgresql://user:password@host:port/database; "
                          "unset = SQLite in data_dir")
    database_pool_size: int = Field(10, ge=1, le=1000,
                                    description="PostgreSQL connections per controller, at most")
    database_timeout_s: float = Field(
        5.0, gt=0, description="a statement, connection or lock wait taking longer counts as the "
                               "database being down: 503 store_unavailable")
    revocation_cache_s: float = Field(
        1.0, ge=0, le=60, description="how long a token's revocation state is reused from memory: "
                                      "the bound on how late a revocation made through another "
                                      "controller is seen here (0 = ask the store every request)")
    outbox_retry_s: float = Field(
        1.0, gt=0, description="first retry delay of CDRs queued while the store was down "
                               "(doubling up to 30 s)")
    auto_sfu_threshold: int = Field(8, ge=2, description="auto mode: SFU above this many participants")
    monitor_interval_s: float = Field(0.5, gt=0, description="engine stats poll for speakers and CDRs")
    engine_failure_polls: int = Field(
        3, ge=1, description="consecutive monitor polls an engine fails to answer before its calls "
                             "are ended with reason engine_failed")
    engine_poll_timeout_s: float = Field(
        2.0, gt=0, description="how long the monitor waits for one engine poll before counting it "
                               "failed (a hung engine, or one behind a lost network)")
    controller_lease_s: float = Field(
        5.0, gt=0, description="with Redis: a controller silent this long is taken for dead and a "
                               "live one adopts its calls (monitoring, its bots' legs)")
    metrics_listen: str | None = Field(
        None, description="HOST:PORT of a plain-HTTP GET /metrics without authentication (keep it "
                          "on loopback); unset = only the REST API's /metrics, with the admin key")
    max_participants_per_call: int = Field(500, ge=2, description="more participants answer 409 call_full")
    # Rate limits and quotas of the REST API (controller/limits.py, docs/security.md)
    rest_rate_per_address: float = Field(
        50.0, ge=0, description="REST requests per second one client address may make (0: no "
                                "limit); above it, 429 rate_limited with Retry-After")
    rest_burst_per_address: float = Field(
        200.0, ge=1, description="requests an address may make at once above its rate")
    rest_rate_per_identity: float = Field(
        20.0, ge=0, description="REST requests per second one user token's identity may make, "
                                "from any address (0: no limit)")
    rest_burst_per_identity: float = Field(
        100.0, ge=1, description="requests an identity may make at once above its rate")
    auth_failure_limit: int = Field(
        10, ge=1, description="failed authentications (missing, bad, expired or revoked tokens) "
                              "from one address within auth_failure_window_s before every request "
                              "from it is refused (429 too_many_failures) for auth_cooldown_s")
    auth_failure_window_s: float = Field(60.0, gt=0, description="window of auth_failure_limit")
    auth_cooldown_s: float = Field(
        60.0, gt=0, description="how long an address that failed authentication too often is "
                                "refused, unread")
    max_calls_per_identity: int = Field(
        20, ge=0, description="live calls one identity may own on this controller; more answer "
                              "429 call_quota (0: no limit)")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="origins (https://app.example.com) whose pages may call the API from the "
                    "browser (CORS); empty = none, only the controller's own web page")
    bot_max_seconds: float = Field(3600.0, gt=0, description="a tone bot stops after this long")
    direct_one_to_one: bool = Field(
        True, description="1:1 calls between two WebRTC clients send media directly between them "
                          "(the controller relays their offer/answer/candidates) until a third "
                          "participant, a bot or a recording moves both onto the engine; false: "
                          "media is always anchored on the engine")
    dev: bool = Field(False, description="development conveniences: the web page's demo-identity "
                                         "button (POST /v1/dev/identities); on in `voicemix serve` "
                                         "unless set, never on in `voicemix controller` unless set")

    recordings_dir: Path | None = Field(
        None, description="where an in-process engine (voicemix serve) writes recordings; unset = "
                          "<data_dir>/recordings. Remote engines have their own setting")

    @field_validator("control_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _postgresql_only(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if value.split(":", 1)[0].lower() not in ("postgresql", "postgres"):
            raise ValueError("database_url must be a postgresql:// URL (unset = embedded SQLite)")
        return value

    @property
    def recordings_path(self) -> Path:
        return self.recordings_dir or self.data_dir / "recordings"

    def derived_turn_urls(self) -> list[str]:
        if self.turn_urls:
            return list(self.turn_urls)
        host, _, port = self.turn_listen.rpartition(":")
        return [f"stun:{host}:{port}", f"turn:{host}:{port}?transport=udp",
                f"turn:{host}:{port}?transport=tcp"]


def load_settings(config_file: str | None = None, **overrides) -> ControllerSettings:
    """Settings from the environment, a TOML or JSON `--config` file, then explicit overrides."""
    values: dict = {}
    if config_file:
        raw = Path(config_file).read_bytes()
        values = tomllib.loads(raw.decode()) if config_file.endswith(".toml") else json.loads(raw)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ControllerSettings(**values)


def ensure_secrets(settings: ControllerSettings) -> list[str]:
    """Fill unset secrets from the data directory, generating (and persisting) missing ones.

    Returns the names generated now: the caller prints the admin key once, on first start.
    """
    private_directory(settings.data_dir)
    path = settings.data_dir / SECRETS_FILE
    narrow_secret_file(path)
    stored = json.loads(path.read_text()) if path.exists() else {}
    generated = []
    for name in GENERATED_SECRETS:
        if getattr(settings, name):
            continue
        if not stored.get(name):
            stored[name] = secrets.token_urlsafe(32)
            generated.append(name)
        setattr(settings, name, stored[name])
    if generated:
        write_secret(path, json.dumps(stored).encode())
    return generated
