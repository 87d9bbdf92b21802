"""The error codes of contract section 4 and the exception that carries one.

A neutral module: the services that answer requests (clients, pickup, login) raise
:class:`WireError` without importing the WebSocket server, and the server turns it into an
``error`` frame with :func:`error`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ERROR_CODES", "WireError", "error"]

ERROR_CODES = (
    "bad_request",
    "unauthenticated",
    "auth_failed",
    "forbidden",
    "not_found",
    "conflict",
    "rate_limited",
    "unavailable",
)


class WireError(Exception):
    """A request refused with one of :data:`ERROR_CODES`; it changed nothing."""

    def __init__(self, code: str, message: str, msg_id: Any = None):
        assert code in ERROR_CODES
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = msg_id


def error(code: str, message: str, msg_id: Any = None) -> dict:
    """An ``error`` frame (the `id` of the request it answers, when there was one)."""
    out: dict = {"type": "error", "code": code, "message": message}
    if msg_id is not None:
        out["id"] = msg_id
    return out
