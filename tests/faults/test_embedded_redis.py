"""The embedded Redis: healed when it dies or hangs, ended with the gateway that runs it
(even after kill -9 of the gateway), a left-over one replaced, never left behind by tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import redis

from conftest import EMBEDDED_CONFIG, PATIENCE, eventually, free_port, login, wait_port, within
from faultkit import (
    HonestWatcher,
    all_in_service,
    busy_office,
    config,
    healthz,
    kill,
    pid_alive,
    redis_servers_under,
    wait_gone,
    wait_lamps,
)

BIN = [sys.executable, "-m", "gateway"]


async def _busy_office(start_gateway, connect, bridge):
    gw = await start_gateway(config())
    assert gw.embedded is not None and gw.embedded.owner
    b, carol = await busy_office(gw, connect, bridge)
    return gw, b, carol


async def test_killed_embedded_redis_is_restarted_with_its_data_and_lamps_heal(
        start_gateway, connect, bridge):
    gw, b, carol = await _busy_office(start_gateway, connect, bridge)
    bob = await login(connect, gw, "bob")
    bob_token = bob.received[0]["token"]
    seq_before = gw.engine.seq
    await asyncio.sleep(1.2)  # the append-only file is fsync'd every second
    watcher = HonestWatcher(carol, b)
    watcher.start()
    await asyncio.sleep(0.5)

    old = gw.embedded.proc.pid
    t_fault = time.monotonic()
    kill(old)
    # What users see: every lamp unknown while the state store is away ...
    await carol.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "unknown", PATIENCE)
    # ... meanwhile the line goes on: bob's line rings.
    await b.send({"device": "Line 202", "call": "b1", "state": "offering", "caller": "0402"})
    # ... then exact again, without a gateway restart.
    await wait_lamps(carol, {"alice": "busy", "bob": "ringing"}, 10)
    heal = time.monotonic() - t_fault
    await watcher.stop()
    assert gw.embedded.proc.pid != old and gw.embedded.restarts == 1
    status, body = await asyncio.to_thread(healthz, gw.ws_port)
    assert status == 200 and body["redis"] is True
    # Its data survived: the token issued before still logs in, seq kept counting.
    again = await connect(gw)
    r = await again.request({"type": "login", "client": "bob", "token": bob_token})
    assert r["type"] == "welcome", r
    assert gw.engine.seq > seq_before
    print(f"\nFIGURE embedded-redis-kill9 heal_s={heal:.2f} p99_ms={watcher.p99_ms():.1f} "
          f"missed={watcher.missed}")
    assert heal < 5.0


async def test_hung_embedded_redis_is_killed_and_restarted(start_gateway, connect, bridge):
    gw, b, carol = await _busy_office(start_gateway, connect, bridge)
    gw.embedded.HUNG_SECONDS = 1.5  # production waits 5 s before calling it hung
    old = gw.embedded.proc.pid
    t_fault = time.monotonic()
    kill(old, signal.SIGSTOP)
    try:
        await b.send({"device": "Line 201", "call": "a1", "state": "disconnected"})
        await b.send({"device": "Line 203", "call": "c1", "state": "offering", "caller": "05"})
        await wait_lamps(carol, {"alice": "idle", "carol": "ringing"}, 12)
    finally:
        if pid_alive(old):
            kill(old, signal.SIGCONT)
    heal = time.monotonic() - t_fault
    assert not pid_alive(old) and gw.embedded.proc.pid != old
    status, _ = await asyncio.to_thread(healthz, gw.ws_port)
    assert status == 200
    print(f"\nFIGURE embedded-redis-sigstop heal_s={heal:.2f}")


def _start_gateway_process(tmp_path):
    ws = free_port()
    f = tmp_path / "gw.toml"
    f.write_text(EMBEDDED_CONFIG.format(ws=ws, bridge=free_port()))
    proc = subprocess.Popen([*BIN, "run", "--config", str(f)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_port(ws, proc=proc)
    return proc, f


async def test_embedded_redis_ends_with_a_gateway_killed_by_sigkill(tmp_path):
    proc, f = await asyncio.to_thread(_start_gateway_process, tmp_path)
    try:
        servers = redis_servers_under(tmp_path)
        assert len(servers) == 1
        # A `password` run while the gateway runs uses its server and leaves it running.
        r = await asyncio.to_thread(
            subprocess.run, [*BIN, "password", "alice", "--config", str(f), "--stdin"],
            input="guest secret 1\n", capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert redis_servers_under(tmp_path) == servers
        proc.kill()
        proc.wait(10)
        took = await wait_gone(servers[0], PATIENCE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert redis_servers_under(tmp_path) == []
    print(f"\nFIGURE gateway-kill9 redis_gone_s={took:.2f}")


async def test_a_left_over_embedded_redis_is_replaced_and_its_data_kept(tmp_path):
    """A redis-server still running on the state dir with nobody owning it (left by an
    older version): the next gateway stops it, starts its own on the same data, and stops
    that one when it ends."""
    from gateway.store import redis_server_binary

    state = tmp_path / "state"
    state.mkdir()
    sock = state / "redis.sock"
    leftover = subprocess.Popen(
        [redis_server_binary(), "--port", "0", "--unixsocket", str(sock), "--dir", str(state),
         "--appendonly", "yes", "--dbfilename", "gateway.rdb",
         "--pidfile", str(state / "redis.pid"), "--logfile", str(state / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in within():
            try:
                redis.Redis(unix_socket_path=str(sock)).set("{blf}:marker", "kept")
                break
            except redis.exceptions.ConnectionError:
                await asyncio.sleep(0.02)
        proc, _f = await asyncio.to_thread(_start_gateway_process, tmp_path)
        try:
            await asyncio.to_thread(leftover.wait, 10)  # stopped by the new gateway
            servers = redis_servers_under(tmp_path)
            assert len(servers) == 1 and servers[0] != leftover.pid
            assert redis.Redis(unix_socket_path=str(sock)).get("{blf}:marker") == b"kept"
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.to_thread(proc.communicate, timeout=20)
        assert proc.returncode == 0, out
        assert "left running" in out
        await wait_gone(servers[0], PATIENCE)
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


CHILD_TEST = '''
import asyncio, os, sys
sys.path.insert(0, {tests!r})
from conftest import RedisServer
from pathlib import Path

async def test_runs_until_killed(start_gateway, tmp_path):
    server = RedisServer(Path({work!r}))
    server.start()
    gw = await start_gateway(open({cfg!r}).read().replace("{{STATE}}", {work!r} + "/state"))
    Path({work!r}, "ready").write_text("ok")
    await asyncio.sleep(60)
'''


async def test_the_test_suite_leaves_no_redis_server_behind_when_killed(tmp_path):
    """Even a test run killed with SIGKILL (CI timeout, Ctrl+C twice) leaves no
    redis-server behind: neither the suite's own nor a gateway's embedded one."""
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    work = tmp_path / "work"
    work.mkdir()
    cfg = tmp_path / "child.toml"
    cfg.write_text(EMBEDDED_CONFIG.format(ws=0, bridge=0).replace('dir = "state"',
                                                                  'dir = "{STATE}"'))
    test_file = tmp_path / "test_child.py"
    test_file.write_text(CHILD_TEST.format(tests=tests, work=str(work), cfg=str(cfg)))
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
         "--rootdir",
         str(tmp_path), "-c", os.path.join(os.path.dirname(tests), "pyproject.toml"),
         str(test_file)], cwd=str(tmp_path), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONPATH": tests})
    try:
        deadline = time.monotonic() + 60
        while not (work / "ready").exists():
            assert child.poll() is None, child.stdout.read().decode()
            assert time.monotonic() < deadline, "the child test run never got ready"
            await asyncio.sleep(0.05)
        servers = redis_servers_under(work)
        assert len(servers) == 2  # the suite's Redis and the gateway's embedded one
        child.kill()
        child.wait(10)
        for pid in servers:
            await wait_gone(pid, PATIENCE)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


async def test_a_second_gateway_on_the_state_dir_takes_the_embedded_redis_over(
        start_gateway, connect, bridge):
    """Two gateway processes on one state dir: the second uses the first's Redis; when
    the first ends, the second runs it (on the same data) and its users' lamps heal."""
    first = await start_gateway(config(), name="first.toml")
    second = await start_gateway(config(), name="second.toml")
    assert first.embedded.owner and not second.embedded.owner
    b = await bridge(second)
    await all_in_service(b)
    await b.send({"device": "Line 201", "call": "t1", "state": "connected", "caller": "0301"})
    carol = await login(connect, second, "carol")
    await carol.request({"type": "subscribe", "panel": "office"})
    await wait_lamps(carol, {"alice": "busy"}, PATIENCE)
    await asyncio.sleep(1.1)
    t0 = time.monotonic()
    mark = len(carol.received)
    await start_gateway.stop(first)  # its Redis goes with it: lamps unknown, then exact
    await carol.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "unknown",
                     10, start=mark)
    await b.send({"device": "Line 202", "call": "t2", "state": "offering", "caller": "04"})
    await wait_lamps(carol, {"alice": "busy", "bob": "ringing"}, 10)
    await eventually(lambda: second.embedded.owner and second.follower.redis_up, 10)
    heal = time.monotonic() - t0
    status, _ = await asyncio.to_thread(healthz, second.ws_port)
    assert status == 200
    print(f"\nFIGURE embedded-redis-takeover heal_s={heal:.2f}")
