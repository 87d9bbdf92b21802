"""Redis through Sentinel: the gateway asks Sentinel for the master (`redis+sentinel://`)."""

from __future__ import annotations

import subprocess
import time

import redis

from conftest import RedisServer, eventually, free_port, login
from gateway.store import redis_server_binary
from test_gateway_e2e import all_in_service, config


async def test_gateway_finds_its_redis_through_sentinel(tmp_path, start_gateway, connect, bridge):
    master = RedisServer(tmp_path)
    master.start()
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\n"
                    f"sentinel monitor blfmaster 127.0.0.1 {master.port} 1\n")
    sentinel = subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis.Redis(port=port).sentinel_master("blfmaster"):
                    break
            except redis.exceptions.RedisError:
                pass
            assert time.monotonic() < deadline, "sentinel did not start"
            time.sleep(0.05)
        gw = await start_gateway(config(f"redis+sentinel://127.0.0.1:{port}/blfmaster/0"))
        b = await bridge(gw)
        await all_in_service(b)
        carol = await login(connect, gw, "carol")
        await carol.request({"type": "subscribe", "panel": "all_numbers"})
        await b.send({"device": "Line 201", "call": "1", "state": "offering", "caller": "0301"})
        await carol.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "ringing")
        # The state really is in the master Sentinel named.
        await eventually(lambda: redis.Redis(port=master.port).exists("{blf}:dev:201"))
    finally:
        sentinel.terminate()
        sentinel.wait(10)
        master.stop()
