"""Redis goes away mid-call and comes back: lamps go unknown, then exact; nothing crashes."""

from __future__ import annotations

import asyncio

from conftest import RedisServer, eventually, login
from test_gateway_e2e import all_in_service, config


async def test_redis_outage_makes_lamps_unknown_then_exact_again(tmp_path, start_gateway,
                                                                 connect, bridge):
    server = RedisServer(tmp_path, persist=True)
    server.start()
    try:
        gw = await start_gateway(config(server.url))
        b = await bridge(gw)
        await all_in_service(b)
        await b.send({"device": "Line 201", "call": "1", "state": "connected", "caller": "0301"})
        carol = await login(connect, gw, "carol")
        await carol.request({"type": "subscribe", "panel": "all_numbers"})
        await eventually(lambda: gw.engine.member("alice").lamp.value == "busy")

        server.stop()
        await carol.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "unknown")
        # While Redis is away the line goes on: the call ends, another starts.
        await b.send({"device": "Line 201", "call": "1", "state": "disconnected"})
        await b.send({"device": "Line 203", "call": "2", "state": "offering", "caller": "0402"})
        await asyncio.sleep(0.5)
        # A new client cannot log in without the state store, and says why.
        late = await connect(gw)
        r = await late.request({"type": "login", "client": "bob", "password": "x"})
        assert r["code"] == "unavailable"

        server.start()
        await carol.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "idle",
                         timeout=15)
        lamp = await carol.wait(lambda m: m.get("member") == "carol" and m.get("lamp") == "ringing",
                                timeout=15)
        assert lamp["calls"][0]["remote"] == "0402"
        # The gateway is fully back: new logins work and the session is still served.
        await login(connect, gw, "bob")
        r = await carol.request({"type": "subscribe", "device": "203"})
        assert r["lamp"] == "ringing"
    finally:
        server.stop()
