"""JSON in from peers, checked so that what the gateway keeps and sends back is valid JSON.

Python's :func:`json.loads` accepts more than JSON: the constants ``NaN``, ``Infinity`` and
``-Infinity``, numbers too large for a float (``1e999`` becomes ``inf``), and ``\\ud800``
escapes that make strings with lone surrogates (which cannot be encoded as UTF-8: a frame
echoing one could not be sent, a Redis write of one fails). :func:`loads` refuses all of them
with a reason naming where, so one bad message changes nothing and its sender gets a clear
error. Pure.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["StrictJSONError", "loads", "lenient_loads", "problem", "suspect",
           "has_lone_surrogate"]


class StrictJSONError(ValueError):
    """The text is not strict JSON; the message says why (and where)."""


def has_lone_surrogate(text: str) -> bool:
    """Whether a string holds a surrogate code point (only a \\uXXXX escape makes one)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _where(path: tuple) -> str:
    return ".".join(str(p)[:40] for p in path) or "message"


def problem(value: Any) -> str | None:
    """What makes a parsed value not strict JSON ("since: not a finite number"), or None."""
    stack: list[tuple[tuple, Any]] = [((), value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, float):
            if not math.isfinite(v):
                return f"{_where(path)}: not a finite number"
        elif isinstance(v, str):
            if has_lone_surrogate(v):
                return f"{_where(path)}: a string with a lone surrogate (\\ud800-\\udfff)"
        elif isinstance(v, dict):
            for k, item in v.items():
                if has_lone_surrogate(k):
                    return f"{_where(path)}: a key with a lone surrogate (\\ud800-\\udfff)"
                stack.append(((*path, k), item))
        elif isinstance(v, list):
            stack.extend(((*path, i), item) for i, item in enumerate(v))
    return None


def lenient_loads(text: str | bytes) -> Any:
    """Python's JSON reading (bytes decoded as strict UTF-8 first); StrictJSONError if it
    cannot be read at all. Follow with :func:`problem` before keeping or echoing anything."""
    return _load(text)[0]


def _not_json(name: str) -> Any:
    raise StrictJSONError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJSONError(f"number {text[:20]} is too large")
    return value


_STRICT = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)


def _load(text: str | bytes, strict: bool = False) -> tuple[Any, str]:
    if isinstance(text, bytes):
        # json.loads(bytes) would let UTF-8-encoded surrogates through: decode strictly.
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise StrictJSONError("not valid UTF-8") from None
    try:
        if strict:  # the hooks run only for the rare floats and constants
            return _STRICT.decode(text), text
        return json.loads(text), text
    except StrictJSONError:
        raise
    except RecursionError:
        raise StrictJSONError("not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, or an integer over Python's digit limit
        detail = "" if isinstance(exc, json.JSONDecodeError) else f" ({str(exc)[:60]})"
        raise StrictJSONError(f"not valid JSON{detail}") from None


# What can make a parsed value not strict JSON: a \u escape (a lone surrogate), the
# constants, an exponent (1e999). Text without any of them needs no walk.
_SUSPECT = re.compile(r"\\u|NaN|Infinity|[0-9][eE]")


def suspect(text: str) -> bool:
    """Whether parsed `text` may hold what :func:`problem` looks for (else it cannot)."""
    return _SUSPECT.search(text) is not None


def loads(text: str | bytes) -> Any:
    """Parse strict JSON. Raises StrictJSONError (a ValueError) saying what is wrong."""
    value, decoded = _load(text, strict=True)
    # Numbers were checked as they were read; only a \u escape can make a lone surrogate.
    if "\\u" in decoded:
        reason = problem(value)
        if reason is not None:
            raise StrictJSONError(reason)
    return value
