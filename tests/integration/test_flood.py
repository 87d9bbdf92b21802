"""No ordinary user can stall the gateway: floods of costly or numerous requests from one
logged-in client are bounded, and an honest watcher keeps getting its lamps."""

from __future__ import annotations

import asyncio
import time

from conftest import eventually
from test_privacy import config, in_service
from test_gateway_e2e import login


async def test_server_journal_reads_are_limited_per_client_across_connections(
        redis_url, start_gateway, connect, bridge):
    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await in_service(b)
    honest = await login(connect, gw, "inb")
    await honest.request({"type": "subscribe", "panel": "inbound"})
    conns = [await login(connect, gw, "full") for _ in range(3)]
    t0 = time.monotonic()
    replies = await asyncio.gather(*[
        conns[i % 3].request({"type": "journal", "scope": "server"}) for i in range(15)])
    elapsed = time.monotonic() - t0
    ok = [r for r in replies if r["type"] == "journal"]
    limited = [r for r in replies if r.get("code") == "rate_limited"]
    assert len(ok) + len(limited) == 15
    # Five at once, then one a second, whichever connection asks.
    assert 5 <= len(ok) <= 5 + int(elapsed) + 1
    # Another client's read and the honest watcher's lamps are untouched.
    other = await login(connect, gw, "inb")
    assert (await other.request({"type": "journal", "scope": "server"}))["type"] == "journal"
    await b.send({"device": "Line 201", "call": "1", "state": "offering", "caller": "0301"})
    await honest.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "ringing")
