"""Logging for every voicemix process: readable lines by default, JSON lines by setting, no secrets.

Lifecycle events (a call created or ended, a participant or leg joining or leaving, a conference
created or deleted, a drain) are logged as one line each with an `event` name and the ids as fields
(`log.info("leg joined", extra={"event": "leg_joined", "conference_id": ..., "leg_id": ...})`). The
text format prints the fields as `key=value` after the message; `VOICEMIX_LOG_FORMAT=json` prints
one JSON object per line with the same fields, for a log shipper.

Whatever a line says, `redact()` removes what must never reach a log: SDES keys (`inline:`), ICE
passwords, bearer tokens and JWTs, passwords in URLs, and `password=`/`secret=`-style values.
Audio never reaches a log: nothing logs payloads.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# attributes every LogRecord has; anything else on a record came from `extra=` and is a field
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime",
                                                                          "taskName"}

_REDACTIONS = [
    # RFC 4568 SDES key material: a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<base64>|...
    (re.compile(r"(inline:)[A-Za-z0-9+/=]+"), r"\1<redacted>"),
    # ICE short-term credentials (RFC 8839)
    (re.compile(r"(a=ice-pwd:)[^\s\"']+"), r"\1<redacted>"),
    # JWTs anywhere (three base64url parts, the first a JSON header)
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "<token>"),
    (re.compile(r"(Bearer\s+)[^\s\"']+", re.IGNORECASE), r"\1<redacted>"),
    # user:password@ in URLs (redis://, postgresql://, ...)
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE), r"\1<redacted>@"),
    # password=..., "secret": "...", admin_key: ...
    (re.compile(r"""((?:password|passwd|secret|credential|admin_key|token_secret|turn_secret|api_key)"""
                r"""["']?\s*[:=]\s*["']?)[^\s"',}&]+""", re.IGNORECASE), r"\1<redacted>"),
]


def redact(text: str) -> str:
    """`text` with keys, tokens and passwords replaced by placeholders."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class LogSettings(BaseSettings):
    """How every voicemix command logs (VOICEMIX_LOG_FORMAT, VOICEMIX_LOG_LEVEL)."""

    model_config = SettingsConfigDict(env_prefix="VOICEMIX_", extra="ignore")

    log_format: Literal["text", "json"] = Field(
        "text", description="text: readable lines with key=value fields; json: one JSON object "
                            "per line (time, level, logger, message, event and its ids)")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="the lowest level logged")


def fields_of(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    """`2026-12-08T10:00:00.123Z INFO voicemix.engine leg joined conference_id=a leg_id=b`."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_iso(record.created)} {record.levelname} {record.name} {record.getMessage()}"
        extra = fields_of(record)
        if extra:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in extra.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def _text_value(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (not text or " " in text or "=" in text) else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601 UTC), level, logger, message, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": _iso(record.created), "level": record.levelname.lower(),
                 "logger": record.name, "message": redact(record.getMessage())}
        for key, value in fields_of(record).items():
            if not isinstance(value, (int, float, bool, type(None))):
                value = redact(value if isinstance(value, str) else json.dumps(value, default=str))
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, separators=(",", ":"))


def configure_logging(settings: LogSettings | None = None, stream=None) -> logging.Handler:
    """Log to stderr (or `stream`) in the configured format; replaces earlier handlers on the root
    logger. Returns the handler."""
    settings = settings or LogSettings()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    return handler
