"""Phone numbers, compared as people mean them.

One rule, used wherever two numbers are compared (the TAPI bridge telling which side of a
call a line is on, the engine's shown-once rule): only the digits count, and leading zeros
are a trunk or country prefix, not part of the number (``0201``, ``201`` and ``+201`` are one
number).
"""

from __future__ import annotations

import re

__all__ = ["digits", "own_match", "redact"]


_NOT_ASCII_DIGITS = re.compile(r"[^0-9]+")


def digits(number: str | None) -> str:
    """The digits of `number` without leading zeros; "" for None or no digits."""
    if not number:
        return ""
    if number.isdigit() and number.isascii():  # the commonest: digits only, no pass at all
        return number.lstrip("0")
    if number.isascii():  # the usual case, on every bridge line: one regex pass
        return _NOT_ASCII_DIGITS.sub("", number).lstrip("0")
    return "".join(ch for ch in number if ch.isdigit()).lstrip("0")


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


_LONG_DIGITS = re.compile(r"\d{4,}")
_LONG_DIGITS_B = re.compile(rb"\d{4,}")


def redact(sample: bytes | str) -> bytes | str:
    """A peer's bad data as it may stand in a log: every run of four or more digits (a phone
    number, perhaps one a watcher may not see) cut to its first two ("+4930555123" ->
    "+49~"). Extensions and short ids stay readable."""
    if isinstance(sample, bytes):
        return _LONG_DIGITS_B.sub(lambda m: m.group()[:2] + b"~", sample)
    return _LONG_DIGITS.sub(lambda m: m.group()[:2] + "~", sample)
