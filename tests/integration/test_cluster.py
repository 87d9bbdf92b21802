"""A process's liveness and its source leases survive a source that fails to start."""

from __future__ import annotations

import asyncio
from collections import Counter

from gateway.cluster import Cluster
from gateway.config import load_config
from gateway.store import Store

from conftest import within, write_config

CONFIG = """
[redis]
url = "{redis}"
[sources.ami]
host = "127.0.0.1"
port = 1
username = "blf"
secret_file = "ami.secret"
[[devices]]
id = "201"
number = "201"
source = "ami"
line = "PJSIP/201"
[[clients]]
name = "alice"
devices = ["201"]
"""


async def test_a_source_that_fails_to_start_keeps_liveness_and_is_retried(redis_url, tmp_path):
    (tmp_path / "ami.secret").write_text("s3cret\n")
    cfg = load_config(write_config(tmp_path / "gateway.toml", CONFIG.format(redis=redis_url)))
    store = Store(redis_url)
    attempts: Counter[str] = Counter()

    async def start(name: str) -> None:
        attempts[name] += 1
        if attempts[name] == 1:
            raise OSError("address already in use")

    async def stop(name: str) -> None:
        pass

    a = Cluster(store, "proc-a", lambda: cfg, start, stop)
    other = Cluster(store, "proc-b", lambda: cfg, start, stop)
    try:
        await a.join()
        # The failed start gave the lease back at once: another process may take it.
        assert a.leases == set()
        assert "address already in use" in a.start_failures["ami"]
        assert await store.lease("ami", "proc-b", 3000)
        await store.release("ami", "proc-b")

        task = asyncio.create_task(a.run())
        try:
            # The keepalive goes on (liveness renewed) and the source is tried again.
            for _ in within():
                await asyncio.sleep(0.1)
                if "ami" in a.leases:
                    break
            assert a.leases == {"ami"}
            assert attempts["ami"] == 2
            assert "proc-a" in await store.alive()
            assert a.start_failures == {}
            await other.renew_leases()
            assert other.leases == set()  # held by a, not taken twice
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await store.close()
