"""The command line as an admin uses it: real processes, a real embedded Redis."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import websockets

from blf_gateway.client import GatewayClient
from conftest import EMBEDDED_CONFIG, PATIENCE, PW, free_port, wait_port
from test_gateway_e2e import config

BIN = [sys.executable, "-m", "gateway"]


def cli(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*BIN, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def test_help_explains_every_command():
    out = cli("--help").stdout
    for cmd in ("run", "demo", "check", "password", "status", "health", "explain"):
        assert cmd in out
    assert "--at-next-login" in cli("password", "--help").stdout


def test_check_accepts_a_good_file(tmp_path, redis_url):
    f = tmp_path / "g.toml"
    f.write_text(config(redis_url))
    r = cli("check", "--config", str(f))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: 4 devices, 5 clients, 5 groups" in r.stdout


def test_check_prints_every_problem_and_fails(tmp_path, redis_url):
    f = tmp_path / "g.toml"
    f.write_text(config(redis_url).replace('devices = ["202"]', 'devices = ["202", "777"]')
                 .replace('members = ["alice", "dan"]', 'members = ["alice", "eve"]'))
    r = cli("check", "--config", str(f))
    assert r.returncode == 1
    assert "clients[1].devices[1]: unknown device '777'" in r.stdout
    assert "groups[2].members[1]: unknown client 'eve'" in r.stdout


async def test_password_set_while_running_takes_effect_without_restart(
        tmp_path, redis_url, start_gateway, connect):
    gw = await start_gateway(config(redis_url))
    f = start_gateway.dir / "gateway.toml"
    r = await asyncio.to_thread(cli, "password", "bob", "--config", str(f), "--stdin",
                                stdin="brand new secret\n")
    assert r.returncode == 0, r.stderr
    assert "brand new secret" not in r.stdout + r.stderr  # never echoed
    assert (await (await connect(gw)).request(
        {"type": "login", "client": "bob", "password": "brand new secret"}))["type"] == "welcome"
    assert (await (await connect(gw)).request(
        {"type": "login", "client": "bob", "password": PW}))["code"] == "auth_failed"

    r = await asyncio.to_thread(cli, "password", "bob", "--config", str(f), "--generate")
    generated = r.stdout.strip()
    assert r.returncode == 0 and len(generated) >= 12
    assert (await (await connect(gw)).request(
        {"type": "login", "client": "bob", "password": generated}))["type"] == "welcome"


async def test_password_at_next_login_is_sent_once(tmp_path, redis_url, start_gateway, connect):
    gw = await start_gateway(config(redis_url))
    f = start_gateway.dir / "gateway.toml"
    r = await asyncio.to_thread(cli, "password", "carol", "--config", str(f), "--at-next-login")
    assert r.returncode == 0, r.stderr
    first = await (await connect(gw)).request(
        {"type": "login", "client": "carol", "password": "anything at all"})
    assert first["type"] == "welcome" and len(first["password"]) >= 12
    second = await (await connect(gw)).request(
        {"type": "login", "client": "carol", "password": "anything at all"})
    assert second["code"] == "auth_failed"  # the mark was used up
    third = await (await connect(gw)).request(
        {"type": "login", "client": "carol", "password": first["password"]})
    assert third["type"] == "welcome" and "password" not in third


async def test_next_login_needs_no_password_field(tmp_path, redis_url, start_gateway, connect):
    # Contract section 4: a client marked --at-next-login has no password yet, so its login
    # may carry neither `password` nor `token`. Anyone else sending that is simply refused.
    gw = await start_gateway(config(redis_url))
    f = start_gateway.dir / "gateway.toml"
    bare = await (await connect(gw)).request({"type": "login", "client": "carol"})
    assert bare["type"] == "error" and bare["code"] == "auth_failed", bare
    r = await asyncio.to_thread(cli, "password", "carol", "--config", str(f), "--at-next-login")
    assert r.returncode == 0, r.stderr
    first = await (await connect(gw)).request({"type": "login", "client": "carol"})
    assert first["type"] == "welcome" and len(first["password"]) >= 12, first
    again = await (await connect(gw)).request({"type": "login", "client": "carol"})
    assert again["code"] == "auth_failed"  # the mark was used up: a password is needed now
    both = await (await connect(gw)).request(
        {"type": "login", "client": "carol", "password": first["password"], "token": "x"})
    assert both["code"] == "bad_request" and "not both" in both["message"]
    ok = await (await connect(gw)).request(
        {"type": "login", "client": "carol", "password": first["password"]})
    assert ok["type"] == "welcome" and "password" not in ok


def test_password_refuses_nologin_and_unknown_clients(tmp_path, redis_url):
    f = tmp_path / "g.toml"
    f.write_text(config(redis_url))
    assert cli("password", "room", "--config", str(f), "--generate").returncode == 2
    assert cli("password", "ghost", "--config", str(f), "--generate").returncode == 2
    r = cli("password", "bob", "--config", str(f))
    assert r.returncode == 2 and "--stdin, --generate or --at-next-login" in r.stderr


async def test_run_with_embedded_redis_persists_and_stops_it(tmp_path):
    ws_port, bridge_port = free_port(), free_port()
    f = tmp_path / "gw.toml"
    f.write_text(EMBEDDED_CONFIG.format(ws=ws_port, bridge=bridge_port))
    # Set a password while no gateway runs: the command starts the embedded Redis itself.
    r = await asyncio.to_thread(cli, "password", "alice", "--config", str(f), "--stdin",
                                stdin="embedded secret\n")
    assert r.returncode == 0, r.stderr

    async def run_once(send_call: bool) -> int:
        proc = subprocess.Popen([*BIN, "run", "--config", str(f)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            await asyncio.to_thread(wait_port, ws_port)
            await asyncio.to_thread(wait_port, bridge_port)
            _, w = await asyncio.open_connection("127.0.0.1", bridge_port)
            w.write(json.dumps({"device": "201", "call": "1", "state": "connected",
                                "caller": "0301"}).encode() + b"\n")
            await w.drain()
            async with GatewayClient(f"ws://127.0.0.1:{ws_port}/ws", "alice",
                                     "embedded secret") as client:
                changes = client.changes()
                snap = await client.subscribe(panel="g")
                lamp, seq = snap.members[0].lamp, snap.seq
                while lamp != "busy":
                    change = await asyncio.wait_for(anext(changes), 5)
                    lamp, seq = change.lamp, change.seq
            w.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.to_thread(proc.communicate, timeout=20)
        assert proc.returncode == 0, out
        assert "embedded Redis started" in out
        assert "embedded secret" not in out  # never logged
        return seq

    seq1 = await run_once(True)
    state = tmp_path / "state"
    assert (state / "appendonly.aof").exists()
    assert not (state / "redis.sock").exists() or not _socket_alive(state / "redis.sock")
    seq2 = await run_once(True)
    assert seq2 > seq1  # the restarted gateway kept counting


def _socket_alive(path: Path) -> bool:
    import socket

    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


async def test_demo_runs_and_lamps_change(tmp_path):
    ws_port, bridge_port = free_port(), free_port()
    proc = subprocess.Popen(
        [*BIN, "demo", "--state", str(tmp_path / "demo"), "--listen", f"127.0.0.1:{ws_port}",
         "--bridge", f"127.0.0.1:{bridge_port}", "--pace", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    head = []
    try:
        await asyncio.to_thread(wait_port, ws_port)

        def banner() -> None:
            # The demo sets its passwords (production scrypt: seconds on a loaded machine),
            # then prints its banner: log in after it, not by guessing until the address is
            # rate limited.
            while not head or "Stop with Ctrl+C." not in head[-1]:
                line = proc.stdout.readline()
                assert line, "the demo ended before its banner: " + "".join(head)[-2000:]
                head.append(line)

        await asyncio.wait_for(asyncio.to_thread(banner), PATIENCE)
        async with websockets.connect(f"ws://127.0.0.1:{ws_port}/ws") as ws:
            await ws.send(json.dumps({"type": "login", "id": 1, "client": "alice",
                                      "password": "alice-demo"}))
            welcome = json.loads(await ws.recv())
            assert welcome["type"] == "welcome", welcome
            assert "reception" in welcome["panels"]
            await ws.send(json.dumps({"type": "subscribe", "id": 2, "panel": "everyone"}))
            seen = set()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not {"ringing", "busy"} <= seen:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 20))
                for m in msg.get("members", []):
                    seen.add(m["lamp"])
                if msg["type"] == "lamp":
                    seen.add(msg["lamp"])
            assert {"ringing", "busy"} <= seen, seen
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=20)
    out = "".join(head) + out
    assert "Switchboard: http://127.0.0.1:" in out
    assert "alice-demo" in out
    assert proc.returncode == 0, out[-2000:]


async def test_demo_moves_off_a_taken_port_and_says_where(tmp_path):
    # Someone already listens on the port the demo's configuration names (another program,
    # or a demo started earlier): the demo picks a free port and prints it.
    from gateway.demo import demo_config_text

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    state = tmp_path / "demo"
    state.mkdir()
    (state / "demo.toml").write_text(
        demo_config_text(f"127.0.0.1:{taken}", f"127.0.0.1:{free_port()}"))
    proc = subprocess.Popen([*BIN, "demo", "--state", str(state), "--pace", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = ""
        while "Switchboard:" not in seen:
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
            assert line, seen
            seen += line
        moved = re.search(rf"port {taken} \(web panel and WebSocket\) is in use: the demo "
                          r"uses (\d+) instead \(set it with --listen HOST:PORT\)", seen)
        assert moved, seen
        port = int(moved.group(1))
        assert f"Switchboard: http://127.0.0.1:{port}/" in seen
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send(json.dumps({"type": "login", "id": 1, "client": "nobody"}))
            assert json.loads(await ws.recv())["code"] == "auth_failed"
        # The configuration now says where the demo is, for the next start.
        assert f'listen = "127.0.0.1:{port}"' in (state / "demo.toml").read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.communicate, timeout=20)
        busy.close()

    # A port asked for explicitly is not swapped: the demo says which flag to change.
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    r = cli("demo", "--state", str(state), "--bridge", f"127.0.0.1:{busy.getsockname()[1]}",
            timeout=30)
    busy.close()
    assert r.returncode == 2, r.stdout + r.stderr
    assert "TAPI bridge listener) is already in use: choose another port with --bridge" in r.stderr


os.environ.setdefault("PYTHONUNBUFFERED", "1")
