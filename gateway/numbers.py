"""Phone numbers, compared as people mean them.

One rule, used wherever two numbers are compared (the TAPI bridge telling which side of a
call a line is on, the engine's shown-once rule): only the digits count, and leading zeros
are a trunk or country prefix, not part of the number (``0201``, ``201`` and ``+201`` are one
number).
"""

from __future__ import annotations

__all__ = ["digits", "own_match"]


def digits(number: str | None) -> str:
    """The digits of `number` without leading zeros; "" for None or no digits."""
    return "".join(ch for ch in number or "" if ch.isdigit()).lstrip("0")


def own_match(number: str | None, own_digits: str) -> int:
    """Whether `number` is a line's own number (`own_digits` = digits() of the device's
    configured `number`): 2 the same digits, 1 in a longer form ending in them
    ("+49 30 555-202" is line 202 written in full), 0 another number. An exact match beats a
    longer form; where caller and called match alike, a report does not say which side the
    line is on."""
    found = digits(number)
    if not own_digits or not found:
        return 0
    if found == own_digits:
        return 2
    return 1 if len(found) > len(own_digits) and found.endswith(own_digits) else 0
