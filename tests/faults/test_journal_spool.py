"""Calls that end while Redis is away reach the journals exactly once: spooled on disk,
delivered when Redis is back, also by the next start after a stop or a crash."""

from __future__ import annotations

import asyncio
import shutil

from conftest import RedisServer, login, within
from faultkit import all_in_service, config

CALLS = [("Line 201", "c1", "0301"), ("Line 201", "c2", "0302"), ("Line 202", "c3", "0303")]


async def _calls_end(b) -> None:
    for line, call, caller in CALLS:
        await b.send({"device": line, "call": call, "state": "offering", "caller": caller})
        await b.send({"device": line, "call": call, "state": "connected"})
        await b.send({"device": line, "call": call, "state": "disconnected"})


async def _journals(connect, gw) -> tuple[list[str], list[str]]:
    """What users read: bob's server journal (numbers), alice's offline journal."""
    bob = await login(connect, gw, "bob")
    server = (await bob.request({"type": "journal", "scope": "server"}))["entries"]
    alice = await login(connect, gw, "alice")
    offline = (await alice.request({"type": "journal", "scope": "offline"}))["entries"]
    return sorted(e["remote"] for e in server), sorted(e["remote"] for e in offline)


async def _journaled_once(connect, gw) -> None:
    """The spool delivered (within PATIENCE): every call is in each journal once."""
    for _ in within():
        if not gw.journal.spool.pending():
            break
        await asyncio.sleep(0.02)
    server_j, offline_j = await _journals(connect, gw)
    assert server_j == ["0301", "0302", "0303"]
    assert offline_j == ["0301", "0302"]


async def _wait_spooled(gw, n: int) -> None:
    for _ in within():
        if gw.journal.spooled >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"only {gw.journal.spooled} of {n} entries spooled")


async def test_calls_ended_while_redis_is_away_are_journaled_once_when_it_is_back(
        tmp_path, start_gateway, connect, bridge):
    server = RedisServer(tmp_path, persist=True)
    server.start()
    try:
        gw = await start_gateway(config(server.url))
        b = await bridge(gw)
        await all_in_service(b)
        server.stop()
        await _calls_end(b)
        # 3 server entries (201, 202 journal = true) + 2 offline entries for alice (201).
        await _wait_spooled(gw, 5)
        assert (start_gateway.dir / "state" / "journal.spool").exists()
        server.start()
        await _journaled_once(connect, gw)
        assert not gw.journal.spool.pending()
    finally:
        server.stop()


async def test_spooled_calls_survive_a_stop_and_a_crash_and_are_written_once(
        tmp_path, start_gateway, connect, bridge):
    server = RedisServer(tmp_path, persist=True)
    server.start()
    try:
        text = config(server.url)
        gw = await start_gateway(text)
        b = await bridge(gw)
        await all_in_service(b)
        server.stop()
        await _calls_end(b)
        await _wait_spooled(gw, 5)
        await start_gateway.stop(gw)  # stopped while Redis is still away
        spool = start_gateway.dir / "state" / "journal.spool"
        # As if the next gateway crashed after delivering and before removing the file:
        # the same entries are there twice, once in a left-over draining file.
        shutil.copy(spool, start_gateway.dir / "state" / "journal.spool.crashed.draining")
        server.start()
        gw = await start_gateway(text)
        await _journaled_once(connect, gw)
        w = (await login(connect, gw, "alice")).received[0]
        assert w["offline_calls"] == 2
    finally:
        server.stop()
