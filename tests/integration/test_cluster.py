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
            assert await store.alive(["proc-a", "proc-gone"]) == {"proc-a"}
            assert a.start_failures == {}
            await other.renew_leases()
            assert other.leases == set()  # held by a, not taken twice
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await store.close()


async def test_the_janitor_asks_about_processes_not_the_whole_keyspace(redis_url, tmp_path):
    """Every process runs the janitor every second. With tens of thousands of keys (tokens,
    states, records) it must not walk the keyspace: a round is a few commands however many
    keys there are, and it still finds the device of a process that is gone."""
    import redis as sync_redis

    from gateway.model import DeviceStatus
    from gateway.store import decode_device

    (tmp_path / "ami.secret").write_text("s3cret\n")
    cfg = load_config(write_config(tmp_path / "gateway.toml", CONFIG.format(redis=redis_url)))
    store = Store(redis_url)
    r = sync_redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        pipe = r.pipeline(transaction=False)
        for i in range(20_000):  # what 20,000 logins leave: one token each
            pipe.set(f"{{blf}}:tok:t{i}", "x", ex=600)
        pipe.execute()

        async def nothing(name: str) -> None:
            pass

        orphaned: list[tuple[str, str]] = []
        a = Cluster(store, "proc-a", lambda: cfg, nothing, nothing,
                    orphaned=lambda d, p: orphaned.append((d, p)))
        await store.heartbeat("proc-a", 3000)
        await store.heartbeat("proc-gone", 3000)
        await store.set_owner(["201"], "proc-gone")
        r.config_resetstat()
        await a.janitor()
        stats = r.info("commandstats")
        assert "cmdstat_scan" not in stats
        assert sum(v["calls"] for v in stats.values()) <= 5, stats
        assert orphaned == []  # its owner is alive

        # The owners hash did not change: the next round reads its version, not the hash.
        r.config_resetstat()
        await a.janitor()
        assert "cmdstat_hgetall" not in r.info("commandstats")
        # A change of owners (a new device, here by a process of an older version that does
        # not set the version, then by one that does) is seen.
        r.hset("{blf}:owners", "202", "proc-old")
        a._owners_read -= 31  # (its whole read, at least every 30 s)
        r.config_resetstat()
        await a.janitor()
        assert r.info("commandstats")["cmdstat_hgetall"]["calls"] == 1
        assert r.hget("{blf}:owners", "202") is None  # proc-old has no liveness key: dropped
        await store.set_owner(["203"], "proc-gone")
        await a.janitor()
        assert r.hget("{blf}:owners", "203") == "proc-gone"  # alive: kept
        assert orphaned == []

        r.delete("{blf}:alive:proc-gone")  # that process died: its key expired
        await a.janitor()
        assert orphaned == [("201", "proc-gone")]
        assert r.hgetall("{blf}:owners") == {}
        assert decode_device("201", r.get("{blf}:dev:201").partition(" ")[2]).status \
            is DeviceStatus.UNKNOWN
        assert "cmdstat_scan" not in r.info("commandstats")
    finally:
        r.close()
        await store.close()
