"""Pickup through the TAPI bridge: a switchboard click -> the gateway -> a command line to the
bridge program -> linePickupW -> LINE_REPLY -> the result back to the picker, and the call
moving on the lamps. End to end: real gateway, real Redis, real WebSocket clients, the
bridge program's own link and translator, the TSP replayed from a trace."""

from __future__ import annotations

import asyncio

import pytest

from conftest import HASH, eventually, free_port, login
from tapikit import office_config


def pickup_config(redis_url: str, port: int) -> str:
    """The office, where bob logs in too and the office group may pick up."""
    return office_config(redis_url, port).replace(
        '[[clients]]\nname = "bob"\ndevices = ["202"]\n',
        f'[[clients]]\nname = "bob"\ndevices = ["202"]\npassword_hash = "{HASH}"\n',
    ).replace('rights = { numbers = "all" }', 'rights = { numbers = "all", pickup = true }')


@pytest.fixture
def setup(redis_url, start_gateway, connect, replay_bridge):
    async def open_(trace: str | None):
        port = free_port()
        config = pickup_config(redis_url, port)
        assert "pickup = true" in config and config.count("password_hash") == 3
        gw = await start_gateway(config)
        bob = await login(connect, gw, "bob", panel="office")
        dan = await login(connect, gw, "dan", panel="office")
        replay = None
        if trace is not None:
            _, replay = await replay_bridge(port, trace)
        return gw, port, replay, bob, dan

    return open_


def member(c, name):
    frames = [m for m in c.received if m.get("member") == name and m.get("type") == "lamp"]
    return frames[-1] if frames else {}


async def test_pickup_from_the_switchboard_is_done_by_the_bridge(setup):
    gw, _, replay, bob, dan = await setup("pickup_by_gateway.jsonl")
    await replay.play("ringing")
    await eventually(lambda: member(dan, "alice").get("lamp") == "ringing")
    # The provider's side runs on: it waits for the bridge's linePickupW, answers it.
    provider = asyncio.create_task(replay.play("picked"))
    reply = await bob.request({"type": "pickup", "panel": "office", "member": "alice",
                               "op": "p1"})
    assert reply["type"] == "ok"
    result = await bob.wait(lambda m: m.get("type") == "pickup_result")
    assert result["ok"] is True and result["by"] == "bob" and result["device"] == "202"
    await asyncio.wait_for(provider, 5)
    # What the bridge asked of TAPI: linePickupW on 202's line (dwDeviceID 1), directed at
    # 201's address.
    assert [(r.function, r.line, r.dest) for r in replay.history] == [
        ("linePickupW", 1, "201")]
    await eventually(lambda: member(dan, "bob").get("lamp") == "busy")
    assert member(dan, "bob")["calls"][0]["remote"] == "+4930123456"
    await eventually(lambda: member(dan, "alice").get("lamp") == "idle")


async def test_pickup_refused_by_the_provider_says_why_and_the_call_rings_on(setup):
    gw, _, replay, bob, dan = await setup("pickup_refused.jsonl")
    await replay.play("ringing")
    await eventually(lambda: member(dan, "alice").get("lamp") == "ringing")
    provider = asyncio.create_task(replay.play("refused"))
    await bob.request({"type": "pickup", "panel": "office", "member": "alice", "op": "p2"})
    result = await bob.wait(lambda m: m.get("type") == "pickup_result")
    assert result["ok"] is False
    assert "LINEERR_INVALCALLSTATE" in result["message"]
    await asyncio.wait_for(provider, 5)
    assert member(dan, "alice")["lamp"] == "ringing"


async def test_bridge_without_commands_keeps_the_phone_action(setup, bridge):
    """An older bridge program (plain lines, no hello): nothing is written to it, the
    picker's own phone gets the action as before."""
    gw, port, _, bob, dan = await setup(None)
    b = await bridge(gw)
    await b.send({"device": "Line 201", "devstate": "inservice"},
                 {"device": "Line 202", "devstate": "inservice"},
                 {"device": "Line 201", "call": "0x1", "state": "offering",
                  "caller": "+4930123456"})
    await eventually(lambda: member(dan, "alice").get("lamp") == "ringing")
    await bob.request({"type": "pickup", "panel": "office", "member": "alice", "op": "p3"})
    action = await bob.wait(lambda m: m.get("type") == "action")
    assert action["action"] == "pickup" and action["number"] == "201"
    # The bridge's socket got nothing from the gateway.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(b.reader.readline(), 0.3)
