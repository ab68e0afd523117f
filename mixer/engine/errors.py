"""The one error family of the engine's control operations, shared by the engine and its clients."""
from __future__ import annotations


class EngineError(Exception):
    """A control request the engine refuses; `status` is the HTTP status the control API answers
    and `code` the machine-readable code of the shared error shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
