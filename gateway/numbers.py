"""Phone numbers, compared as people mean them.

One rule, used wherever two numbers are compared (the TAPI bridge telling which side of a
call a line is on, the engine's shown-once rule): only the digits count, and leading zeros
are a trunk or country prefix, not part of the number (``0201``, ``201`` and ``+201`` are one
number).
"""

from __future__ import annotations

__all__ = ["digits"]


def digits(number: str | None) -> str:
    """The digits of `number` without leading zeros; "" for None or no digits."""
    return "".join(ch for ch in number or "" if ch.isdigit()).lstrip("0")
