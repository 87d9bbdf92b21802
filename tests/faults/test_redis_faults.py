"""An external Redis (a [redis] url) killed with kill -9 and restarted, or stopped with
SIGSTOP: lamps unknown with the reason, then exact; nothing lost."""

from __future__ import annotations

import asyncio
import signal
import time

from conftest import PATIENCE, RedisServer
from faultkit import busy_office, config, healthz, wait_lamps


async def _office(server, start_gateway, connect, bridge):
    gw = await start_gateway(config(server.url))
    b, carol = await busy_office(gw, connect, bridge)
    return gw, b, carol


async def test_stopped_redis_makes_lamps_unknown_then_exact(tmp_path, start_gateway, connect,
                                                            bridge):
    server = RedisServer(tmp_path, persist=True)
    server.start()
    try:
        gw, b, carol = await _office(server, start_gateway, connect, bridge)
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGSTOP)
        try:
            lamp = await carol.wait(lambda m: m.get("member") == "alice"
                                    and m.get("lamp") == "unknown", PATIENCE)
            seen = time.monotonic() - t0
            assert lamp["reason"] == "store_not_answering"
            status, body = await asyncio.to_thread(healthz, gw.ws_port)
            assert status == 503 and body["problem"] == "store_not_answering"
            await b.send({"device": "Line 202", "call": "b1", "state": "offering",
                          "caller": "0402"})
        finally:
            server.proc.send_signal(signal.SIGCONT)
        t1 = time.monotonic()
        heal = await wait_lamps(carol, {"alice": "busy", "bob": "ringing"}, 10)
        status, _ = await asyncio.to_thread(healthz, gw.ws_port)
        assert status == 200
        print(f"\nFIGURE redis-sigstop unknown_after_s={seen:.2f} "
              f"exact_after_cont_s={time.monotonic() - t1:.2f} ({heal:.2f})")
    finally:
        server.stop()


async def test_redis_killed_and_restarted_heals(tmp_path, start_gateway, connect, bridge):
    server = RedisServer(tmp_path, persist=True)
    server.start()
    try:
        gw, b, carol = await _office(server, start_gateway, connect, bridge)
        await asyncio.sleep(1.1)  # its append-only file is fsync'd every second
        server.proc.kill()
        server.proc.wait()
        lamp = await carol.wait(lambda m: m.get("member") == "alice"
                                and m.get("lamp") == "unknown", PATIENCE)
        assert lamp["reason"] == "store_unreachable"
        await b.send({"device": "Line 202", "call": "b1", "state": "offering", "caller": "04"})
        t0 = time.monotonic()
        server.start()
        await wait_lamps(carol, {"alice": "busy", "bob": "ringing"}, 10)
        heal = time.monotonic() - t0
        status, _ = await asyncio.to_thread(healthz, gw.ws_port)
        assert status == 200
        print(f"\nFIGURE redis-kill9-restart exact_after_start_s={heal:.2f}")
    finally:
        server.stop()
