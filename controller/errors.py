"""The one error the REST layer answers with: `{"error": {"code", "message"}}` and an HTTP status."""
from __future__ import annotations


class ApiError(Exception):
    """A request the controller refuses; `status` and `code` go to the client as they are."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}
