"""Failure families of the SIP stack, each something a caller can act on."""
from __future__ import annotations


class SipError(Exception):
    """Base of every SIP stack error."""


class SipParseError(SipError, ValueError):
    """Bytes that are not a well-formed SIP message (or a part of one).

    `status` is the response a UAS answers when enough of the request was read to answer at all
    (400 by default; 505 for an unknown SIP version, 416 for an unsupported Request-URI scheme).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class SipTransportError(SipError, OSError):
    """A message could not be sent (no route, connection refused or lost, too large for UDP)."""


class SipTimeout(SipError, TimeoutError):
    """A client transaction ended by its timer (B or F) without a final response."""


class SipStatusError(SipError):
    """A request answered with a final non-2xx response (for callers that awaited success).

    `status` and `reason` are the response's; `response` is the whole message when there is one.
    """

    def __init__(self, status: int, reason: str, response=None) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.response = response


class SipReject(SipError):
    """Raised by application code to answer a request with `status` (a final error response)."""

    def __init__(self, status: int, reason: str | None = None,
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(f"{status} {reason or ''}".strip())
        self.status = status
        self.reason = reason
        self.headers = headers or []
