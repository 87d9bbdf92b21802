"""Hostile input at the edges, end to end: each gets a clear error, the connection lives on,
nothing changes, other clients carry on, and everything the gateway sends is valid JSON."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from conftest import eventually, login
from gateway.tapi.bridge import BridgeLineError, parse_line
from test_gateway_e2e import all_in_service, config


def strict_json(frame: str):
    """Parse as a strict JSON reader does (browsers, Go, Rust): no NaN, no Infinity, no lone
    surrogate escapes."""

    def no_constant(name):
        raise ValueError(f"{name} is not JSON")

    value = json.loads(frame, parse_constant=no_constant)
    frame.encode("utf-8")  # a lone surrogate cannot be sent as UTF-8
    return value


async def test_hostile_request_ids_get_bad_request_and_the_connection_lives(
        redis_url, start_gateway, connect, caplog):
    gw = await start_gateway(config(redis_url))
    c = await connect(gw)
    hostile = [r'"\ud800"', r'"a\udfffb"', "NaN", "Infinity", "-Infinity", "1e999", "-1e999",
               "1" * 400, "true", "[1]", '{"a": 1}']
    for i, raw_id in enumerate(hostile):
        mark = len(c.received)
        await c.send('{"type": "subscribe", "panel": "all_numbers", "id": %s}' % raw_id)
        reply = await c.wait(lambda m: m.get("type") == "error", start=mark)
        assert reply["code"] == "bad_request", (raw_id, reply)
        assert "id" in reply["message"], (raw_id, reply)
        assert "id" not in reply  # nothing of a bad id is echoed
    # Still connected, and a good id is echoed exactly.
    r = await c.request({"type": "login", "client": "carol", "password": "correct horse battery",
                         "id": "żółw-7"})
    assert r["type"] == "welcome" and r["id"] == "żółw-7"
    for frame in c.raw:
        strict_json(frame)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_non_finite_numbers_and_lone_surrogates_anywhere_are_refused(
        redis_url, start_gateway, connect, bridge, caplog):
    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await all_in_service(b)
    carol = await login(connect, gw, "carol")
    watcher = await login(connect, gw, "alice")
    await watcher.request({"type": "subscribe", "panel": "all_numbers"})
    bad = [
        r'{"type": "journal", "scope": "server", "since": NaN, "id": 101}',
        r'{"type": "journal", "scope": "server", "since": 1e999, "id": 102}',
        r'{"type": "journal", "scope": "offline", "since": -5, "id": 103}',
        r'{"type": "presence", "status": "away", "info": "\udc80 away", "id": 104}',
        r'{"type": "softphone", "call": "x", "state": "ringing", "direction": "in", '
        r'"remote": "\ud83d", "id": 105}',
        r'{"type": "subscribe", "panel": "all_numbers", "since": 1e400, "id": 106}',
        r'{"type": "subscribe", "panel": "\udfff", "id": 107}',
    ]
    for i, text in enumerate(bad, 101):
        await carol.send(text)
        reply = await carol.wait(lambda m, i=i: m.get("id") == i)
        assert reply["type"] == "error" and reply["code"] == "bad_request", (text, reply)
    # Nothing changed: carol is not ringing, her presence is what it was.
    assert gw.engine.member("carol").lamp.value == "idle"
    assert gw.engine.member("carol").presence.status == "available"
    r = await carol.request({"type": "presence", "status": "away", "info": "back at 3"})
    assert r["type"] == "ok"
    await watcher.wait(lambda m: m.get("member") == "carol"
                       and (m.get("presence") or {}).get("info") == "back at 3")
    for c in (carol, watcher):
        for frame in c.raw:
            strict_json(frame)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_journal_ack_of_an_absurd_id_is_refused_before_redis(redis_url, start_gateway,
                                                                    connect, caplog):
    gw = await start_gateway(config(redis_url))
    c = await login(connect, gw, "alice")
    for upto in ["9" * 120, 10**30, "1-" + "9" * 40, "1" * 20 + "-0", -1, "0x10", "", "١٢٣"]:
        r = await c.request({"type": "journal_ack", "upto": upto})
        assert r["type"] == "error" and r["code"] == "bad_request", (upto, r)
    r = await c.request({"type": "journal_ack", "upto": "9" * 19 + "-" + "9" * 19})
    assert r["type"] == "ok"  # the largest id taken is still an id
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_bridge_lines_with_absurd_call_ids_are_refused(redis_url, start_gateway, connect,
                                                             bridge, caplog):
    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await all_in_service(b)
    carol = await login(connect, gw, "carol")
    await carol.request({"type": "subscribe", "panel": "all_numbers"})
    await eventually(lambda: gw.engine.member("alice").lamp.value == "idle")
    bad_before = gw.bridge.lines_bad
    caplog.set_level(logging.WARNING, logger="gateway.tapi")
    hostile = [
        '{"device": "Line 201", "call": true, "state": "offering"}',
        '{"device": "Line 201", "call": %s, "state": "offering"}' % ("7" * 4000),
        '{"device": "Line 201", "call": "%s", "state": "offering"}' % ("7" * 4000),
        '{"device": "Line 201", "call": 1.5, "state": "offering"}',
        '{"device": "Line 201", "call": -3, "state": "offering"}',
        '{"device": "Line 201", "call": "1", "state": "offering", "caller": "\\ud800"}',
        '{"device": "Line 201", "call": "1", "state": "offering", "blocked": "yes"}',
        '{"device": "Line 201", "call": 2, "state": "offering", "caller": NaN}',
    ]
    await b.send(*hostile)
    await eventually(lambda: gw.bridge.lines_bad - bad_before == len(hostile))
    reasons = [r.getMessage() for r in caplog.records if "line skipped" in r.getMessage()]
    assert reasons  # the first are logged at once, the rest counted (see test_logs.py)
    # A number in a bad line does not reach the log either (a new connection: its first
    # bad line is logged).
    b2 = await bridge(gw)
    await b2.send('{"device": "Line 201", "call": "1", "state": "bogus", "caller": "+4930555123"}')
    await eventually(lambda: gw.bridge.lines_bad - bad_before == len(hostile) + 1)
    assert any("bogus" in r.getMessage() and "+49~" in r.getMessage() for r in caplog.records)
    assert "555123" not in caplog.text
    assert all(len(r) < 600 for r in reasons)  # a 4,000-digit id is not logged in full
    for text in hostile:  # and each is refused with a reason that says why
        with pytest.raises(BridgeLineError):
            parse_line(text, {"Line 201": ("201", "201")})
    # Nothing changed, and the connection still works.
    assert gw.engine.member("alice").lamp.value == "idle"
    assert not carol.lamps(member="alice")
    await b.send({"device": "Line 201", "call": 18446744073709551615, "state": "offering"})
    await carol.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "ringing")
    await asyncio.sleep(0.05)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
