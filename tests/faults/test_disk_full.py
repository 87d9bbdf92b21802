"""Redis' disk fills up: it answers but refuses writes (MISCONF). Users see every lamp
`unknown` with the reason, /healthz says so, calls that end meanwhile are kept; when space
is back the lamps are exact again. A gateway started against it says so in one line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest
import redis

from conftest import PATIENCE, RedisServer, free_port, login, within
from faultkit import all_in_service, config, healthz, wait_lamps


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs: a disk that really fills up (needs root, as in CI's container)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (needs root): {r.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk) -> None:
    with open(disk / "fill", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass


def refusing(url: str) -> bool:
    """Some other writer fills the last page of Redis' append-only file (small writes fit
    into the page the file already has): from then on Redis refuses writes."""
    r = redis.Redis.from_url(url, socket_timeout=PATIENCE)
    try:
        for _ in range(3):
            r.set("other-writer", "x" * 8192)
            time.sleep(0.1)
        return False
    except redis.exceptions.ResponseError as exc:
        return "MISCONF" in str(exc)


async def test_full_disk_makes_lamps_unknown_with_the_reason_then_exact(
        small_disk, start_gateway, connect, bridge):
    server = RedisServer(small_disk, persist=True)
    server.start()
    try:
        gw = await start_gateway(config(server.url))
        b = await bridge(gw)
        await all_in_service(b)
        carol = await login(connect, gw, "carol")
        await carol.request({"type": "subscribe", "panel": "office"})
        await wait_lamps(carol, {"alice": "idle", "bob": "idle"}, PATIENCE)

        t_fault = time.monotonic()
        await asyncio.to_thread(fill, small_disk)
        assert await asyncio.to_thread(refusing, server.url)
        await b.send({"device": "Line 201", "call": "a1", "state": "offering", "caller": "0301"})
        lamp = await carol.wait(lambda m: m.get("member") == "alice"
                                and m.get("lamp") == "unknown", PATIENCE)
        detect = time.monotonic() - t_fault
        assert lamp["reason"] == "store_disk_full" and lamp["calls"] == []
        status, body = await asyncio.to_thread(healthz, gw.ws_port)
        assert status == 503 and body["problem"] == "store_disk_full"
        # A call that ends meanwhile is kept (the spool is on the gateway's own disk).
        await b.send({"device": "Line 202", "call": "b1", "state": "offering", "caller": "0302"})
        await b.send({"device": "Line 202", "call": "b1", "state": "disconnected"})

        t_space = time.monotonic()
        os.unlink(small_disk / "fill")
        await wait_lamps(carol, {"alice": "ringing", "bob": "idle"}, 15)
        heal = time.monotonic() - t_space
        status, body = await asyncio.to_thread(healthz, gw.ws_port)
        assert status == 200 and body["problem"] is None
        bob = await login(connect, gw, "bob")
        for _ in within():
            entries = (await bob.request({"type": "journal", "scope": "server"}))["entries"]
            if entries:
                break
            await asyncio.sleep(0.05)
        assert [e["remote"] for e in entries] == ["0302"]
        print(f"\nFIGURE disk-full detect_s={detect:.2f} heal_s={heal:.2f}")
    finally:
        server.stop()


async def test_gateway_started_on_a_full_disk_says_so_in_one_line(small_disk, tmp_path):
    server = RedisServer(small_disk, persist=True)
    server.start()
    try:
        await asyncio.to_thread(fill, small_disk)
        assert await asyncio.to_thread(refusing, server.url)
        f = tmp_path / "gw.toml"
        f.write_text(config(server.url, bridge_port=free_port(), ws_port=free_port()))
        r = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "gateway", "run", "--config", str(f)],
            capture_output=True, text=True, timeout=30)
        assert r.returncode == 1
        assert "Traceback" not in r.stderr
        errors = [line for line in r.stderr.splitlines() if " ERROR " in line]
        assert len(errors) == 1, r.stderr
        assert "refuses writes (disk full)" in errors[0]
    finally:
        server.stop()
