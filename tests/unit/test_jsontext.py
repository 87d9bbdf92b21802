"""The one JSON encoder of the gateway's output (frames, stored states, provenance records):
the very bytes json.dumps writes, NaN and Infinity refused."""

from __future__ import annotations

import json
import math

import pytest

from gateway import jsontext
from gateway.jsontext import dumps
from gateway.model import CallState


def reference(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@pytest.mark.parametrize("obj", [
    {"type": "lamp", "panel": "sales", "member": "alice", "lamp": "ringing", "seq": 12,
     "calls": [{"remote": "+4930123456", "name": "Müller & Söhne \u2603 \"q\" \\ \n"}]},
    {"s": "online", "c": [["201/c1", "in", "ringing", 1700000000.123, "0301", None, None]]},
    [1700000000.1, 0.1, 1e-7, 1e22, -0.0, 2**64, -5, True, False, None],
    "a digest", 42, None, 1.5, [], {}, {"": [[], {}]},
    {"emoji": "💥", "control": "\x00\x1f\x7f", "enum": CallState.RINGING},
])
def test_the_same_bytes_as_json_dumps(obj):
    assert dumps(obj) == reference(obj)
    assert jsontext._encode(obj) == reference(obj)  # the fallback without the C encoder


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, {"since": math.nan},
                                 [1, [math.inf]]])
def test_nan_and_infinity_are_refused(bad):
    with pytest.raises(ValueError):
        dumps(bad)


def test_what_is_not_json_is_refused_as_json_dumps_refuses_it():
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        dumps({"x": {1, 2}})
