"""Exponential backoff, pure: how long to wait before the next attempt.

One helper for every reconnect loop (the Asterisk connection, SIP presence subscriptions,
Redis): the first wait is `initial`, each further one `factor` times the last, never more
than `maximum`; :meth:`Backoff.reset` after a success, so the next outage starts afresh.
"""

from __future__ import annotations

__all__ = ["Backoff"]


class Backoff:
    """Delays for successive failed attempts: `initial`, then x`factor`, capped at `maximum`."""

    __slots__ = ("initial", "maximum", "factor", "_next")

    def __init__(self, initial: float, maximum: float, factor: float = 2.0) -> None:
        if not 0 < initial <= maximum or factor < 1:
            raise ValueError("backoff needs 0 < initial <= maximum and factor >= 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._next = initial

    def next(self) -> float:
        """The wait before the next attempt (each call after a failure grows it)."""
        delay = self._next
        self._next = min(delay * self.factor, self.maximum)
        return delay

    def peek(self) -> float:
        """The wait :meth:`next` would give, without using it up."""
        return self._next

    def reset(self) -> None:
        """An attempt worked: the next failure waits `initial` again."""
        self._next = self.initial
