"""Compact JSON text out of the gateway: one encoder for every frame, stored state and record.

:func:`dumps` writes what ``json.dumps(obj, separators=(",", ":"), ensure_ascii=False,
allow_nan=False)`` writes, byte for byte (the stored states' no-op check and the frames'
codec tests rely on the same bytes for the same value), through json's C encoder called
directly: without json's Python wrapper it costs about half as much, and it runs for every
lamp frame, every device state published and every provenance record. Pure.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps"]


def _not_json(obj: Any) -> Any:
    raise TypeError(f"Object of type {obj.__class__.__name__} is not JSON serializable")


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
try:
    from json.encoder import c_make_encoder, encode_basestring

    # (markers, default, encoder, indent, key_separator, item_separator, sort_keys, skipkeys,
    # allow_nan). No circular-reference check: what is encoded here is built as a tree.
    _c_encode = c_make_encoder(None, _not_json, encode_basestring, None, ":", ",", False,
                               False, False)
except ImportError:  # pragma: no cover - an interpreter without json's C speedups
    _c_encode = None


def dumps(obj: Any) -> str:
    """Compact JSON, non-ASCII kept; NaN and Infinity refused (ValueError): they are not JSON,
    and what comes in is checked at the edges (gateway.strictjson), so this only stops a bug
    at the door."""
    if _c_encode is not None:
        return "".join(_c_encode(obj, 0))
    return _encode(obj)
