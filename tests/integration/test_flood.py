"""No ordinary user can stall the gateway: floods of costly or numerous requests from one
logged-in client are bounded, and an honest watcher keeps getting its lamps."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

from conftest import PATIENCE, eventually, login, within
from test_privacy import config, in_service


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


async def closed_with(c, timeout: float = PATIENCE):
    await asyncio.wait_for(asyncio.shield(c._reader), timeout)
    return c.ws.close_code, c.ws.close_reason


async def test_connections_that_never_log_in_are_closed(redis_url, start_gateway, connect):
    gw = await start_gateway(config(redis_url, "login_timeout_seconds = 1"))
    idle = [await connect(gw) for _ in range(20)]
    chatty = await connect(gw)  # sends requests, but never logs in
    member = await login(connect, gw, "inb")
    # The chatty one keeps sending, a request every 0.3 s, well inside the 1 s login timeout:
    # if its requests put the deadline off, it would never be closed (and this loop would
    # end at its generous bound, not at the close). No wall-clock bound on the close itself:
    # a loaded machine may run the timer late, which says nothing about the gateway.
    deadline = time.monotonic() + 30
    while not chatty._reader.done():
        assert time.monotonic() < deadline, "a connection that keeps talking was never closed"
        try:
            await chatty.send({"type": "subscribe", "panel": "inbound"})
        except Exception:  # closed between the check and the send
            break
        await asyncio.sleep(0.3)
    for c in [*idle, chatty]:
        code, reason = await closed_with(c)
        assert code == 1008 and "log in" in reason
    # A logged-in connection is not touched.
    r = await member.request({"type": "subscribe", "panel": "inbound"})
    assert r["type"] == "snapshot"
    await eventually(lambda: gw.metrics["login_timeouts"] == 21)


async def test_connections_per_address_are_capped(redis_url, start_gateway, connect):
    gw = await start_gateway(config(redis_url, "max_connections_per_address = 5"))
    conns = [await connect(gw) for _ in range(5)]
    extra = await connect(gw)
    code, reason = await closed_with(extra)
    assert code == 1013 and "too many connections" in reason
    for c in conns:  # the first five are served
        r = await c.request({"type": "nope"})
        assert r["code"] == "bad_request"
    await conns[0].close()
    assert gw.metrics["connections_refused"] == 1
    metrics = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{gw.ws_port}/metrics").read())
    assert b"blf_connections_refused_total 1\n" in metrics  # what an operator alerts on
    again = None
    for _ in within():  # once the closed one is gone, a new connection is taken again
        again = await connect(gw)
        try:
            r = await again.request({"type": "nope"}, timeout=1)
            break
        except (ConnectionError, asyncio.TimeoutError):
            await asyncio.sleep(0.05)
    assert r["code"] == "bad_request"


async def test_the_default_cap_lets_200_switchboards_in_from_one_address(
        redis_url, start_gateway, connect):
    gw = await start_gateway(config(redis_url))
    conns = await asyncio.gather(*[connect(gw) for _ in range(220)])
    replies = await asyncio.gather(*[c.request({"type": "nope"}) for c in conns])
    assert all(r["code"] == "bad_request" for r in replies)
    assert gw.metrics["connections_refused"] == 0


async def test_softphone_calls_are_bounded_per_client(redis_url, start_gateway, connect):
    from gateway.calls import MAX_SOFTPHONE_CALLS

    gw = await start_gateway(config(redis_url, "client_change_burst = 1000\n"
                                    "client_message_burst = 1000\nmessage_burst = 1000"))
    honest = await login(connect, gw, "full")
    await honest.request({"type": "subscribe", "panel": "all"})
    alice = [await login(connect, gw, "alice") for _ in range(2)]
    replies = []
    for i in range(40):
        replies.append(await alice[i % 2].request(
            {"type": "softphone", "call": f"flood{i}", "state": "ringing", "direction": "in",
             "remote": f"0{i}"}))
    ok = [r for r in replies if r["type"] == "ok"]
    refused = [r for r in replies if r.get("code") == "forbidden"]
    assert len(ok) == MAX_SOFTPHONE_CALLS and len(refused) == 40 - MAX_SOFTPHONE_CALLS
    assert "end one first" in refused[0]["message"]
    assert len(gw.engine.member("alice").calls) == MAX_SOFTPHONE_CALLS
    # Ending one makes room for one.
    assert (await alice[0].request({"type": "softphone", "call": "flood0", "state": "ended",
                                    "direction": "in"}))["type"] == "ok"
    r = await alice[1].request({"type": "softphone", "call": "new", "state": "ringing",
                                "direction": "in"})
    assert r["type"] == "ok"
    await honest.wait(lambda m: m.get("member") == "alice"
                      and any(c["id"] == "sp:alice/new" for c in m["calls"]))
    assert max(len(m["calls"]) for m in honest.lamps(member="alice")) == MAX_SOFTPHONE_CALLS


async def test_a_call_flood_on_one_bridge_device_is_bounded(redis_url, start_gateway, connect,
                                                           bridge, caplog):
    from gateway.calls import MAX_LINE_CALLS

    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await in_service(b)
    honest = await login(connect, gw, "full")
    await honest.request({"type": "subscribe", "panel": "all"})
    await b.send(*[{"device": "Line 201", "call": i, "state": "offering", "caller": f"0{i}"}
                   for i in range(5000)])
    await b.send({"device": "Line 202", "call": "x", "state": "offering", "caller": "0302"})
    await honest.wait(lambda m: m.get("member") == "bob" and m.get("lamp") == "ringing",
                      timeout=20)
    assert len(gw.engine.device_state("201").calls) == MAX_LINE_CALLS
    assert gw.sources.calls_refused["tapi_bridge"] == 5000 - MAX_LINE_CALLS
    # Every frame the watcher got for alice carries at most the bound.
    assert max(len(m["calls"]) for m in honest.lamps(member="alice")) == MAX_LINE_CALLS
    # The calls that are there end as usual, and then new ones are taken again.
    await b.send(*[{"device": "Line 201", "call": i, "state": "idle"}
                   for i in range(MAX_LINE_CALLS)])
    await b.send({"device": "Line 201", "call": "fresh", "state": "offering"})
    await honest.wait(lambda m: m.get("member") == "alice" and len(m["calls"]) == 1)


async def test_rate_limits_count_all_connections_of_a_client(redis_url, start_gateway, connect):
    gw = await start_gateway(config(redis_url, "client_change_burst = 10\n"
                                    "client_changes_per_second = 1\n"
                                    "client_message_burst = 60\n"
                                    "client_messages_per_second = 5"))
    conns = [await login(connect, gw, "alice") for _ in range(4)]
    t0 = time.monotonic()
    replies = await asyncio.gather(*[
        conns[i % 4].request({"type": "presence", "status": "away", "info": str(i)})
        for i in range(40)])
    elapsed = time.monotonic() - t0
    ok = sum(r["type"] == "ok" for r in replies)
    assert 10 <= ok <= 10 + int(elapsed) + 1  # one budget for the client, not one per socket
    assert all(r["type"] == "ok" or r["code"] == "rate_limited" for r in replies)
    # Plain messages: 60 at once for the client, whichever socket sends them (a message
    # refused before it is read gets an error without its id).
    marks = [len(c.received) for c in conns]
    t1 = time.monotonic()
    for i in range(100):
        await conns[i % 4].send({"type": "unsubscribe", "panel": "all", "id": f"u{i}"})

    def answers():
        return [m for c, mark in zip(conns, marks) for m in c.received[mark:]
                if str(m.get("id", "")).startswith("u") or m.get("code") == "rate_limited"]

    await eventually(lambda: len(answers()) >= 100)
    limited = sum(m.get("code") == "rate_limited" for m in answers())
    budget = 60 + 5 * (time.monotonic() - t1) + 1
    assert limited >= 100 - budget
    # Another client is not affected.
    other = await login(connect, gw, "bob")
    assert (await other.request({"type": "presence", "status": "away"}))["type"] == "ok"


async def test_a_connection_flooding_far_over_its_limit_is_closed(redis_url, start_gateway,
                                                                 connect):
    gw = await start_gateway(config(redis_url))
    honest = await login(connect, gw, "inb")
    flood = await login(connect, gw, "full")
    frame = json.dumps({"type": "unsubscribe", "panel": "all"})
    for _ in range(2000):
        try:
            await flood.ws.send(frame)
        except Exception:  # closed under our feet: that is the point
            break
    code, reason = await closed_with(flood)
    assert code == 1008 and "flooding" in reason
    assert gw.metrics["flood_closed"] == 1
    r = await honest.request({"type": "subscribe", "panel": "inbound"})
    assert r["type"] == "snapshot"
