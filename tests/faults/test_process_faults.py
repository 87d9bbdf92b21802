"""kill -9 and SIGSTOP of the gateway process and of a source (the TAPI bridge program):
what users see, time to exact lamps, nothing lost."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import websockets

from conftest import PATIENCE, PW, WsClient, free_port, login, wait_port, within
from faultkit import (
    LINES,
    HonestWatcher,
    config,
    lamp_of,
    redis_servers_under,
    wait_gone,
    wait_lamps,
)

HERE = Path(__file__).resolve().parent


class BridgeProgram:
    """The bridge as a process: `send(msg)` relays a line through it."""

    def __init__(self, port: int, lines: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "bridge_program.py"), "127.0.0.1", str(port), *lines],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    async def ready(self) -> None:
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 10)
        assert line.strip() == "connected"

    async def send(self, msg: dict) -> None:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


async def test_bridge_killed_makes_its_lines_unknown_and_a_restarted_one_heals(
        redis_url, start_gateway, connect, bridge):
    gw = await start_gateway(config(redis_url))
    probe_bridge = await bridge(gw)  # the honest watcher's line has its own bridge
    await probe_bridge.send({"device": "Line 299", "devstate": "inservice"})
    prog = BridgeProgram(gw.bridge.port, ["Line 201", "Line 202", "Line 203"])
    try:
        await prog.ready()
        await prog.send({"device": "Line 201", "call": "k1", "state": "connected",
                         "caller": "0301"})
        carol = await login(connect, gw, "carol")
        await carol.request({"type": "subscribe", "panel": "office"})
        await wait_lamps(carol, {"alice": "busy", "bob": "idle"}, PATIENCE)
        watcher = HonestWatcher(carol, probe_bridge)
        watcher.start()
        await asyncio.sleep(0.5)

        t0 = time.monotonic()
        prog.kill()
        # Users see the lines of the dead bridge unknown (not a stale "busy") ...
        await wait_lamps(carol, {"alice": "unknown", "bob": "unknown"}, PATIENCE)
        gone = time.monotonic() - t0
        prog.close()
        # ... the bridge program restarts and re-sends its state: exact again.
        t1 = time.monotonic()
        prog = BridgeProgram(gw.bridge.port, ["Line 201", "Line 202", "Line 203"])
        await prog.ready()
        await prog.send({"device": "Line 201", "call": "k1", "state": "connected",
                         "caller": "0301"})
        heal = await wait_lamps(carol, {"alice": "busy", "bob": "idle"}, PATIENCE)
        await watcher.stop()
        assert lamp_of(carol, "probe") in ("idle", "ringing")  # the other bridge's line
        assert watcher.missed == 0
        print(f"\nFIGURE bridge-kill9 unknown_after_s={gone:.2f} heal_s={heal:.2f} "
              f"(restart {time.monotonic() - t1:.2f}) p99_ms={watcher.p99_ms():.1f}")
    finally:
        prog.close()


async def test_bridge_stopped_then_continued_delivers_what_it_held(redis_url, start_gateway,
                                                                   connect, bridge):
    gw = await start_gateway(config(redis_url))
    probe_bridge = await bridge(gw)
    await probe_bridge.send({"device": "Line 299", "devstate": "inservice"})
    prog = BridgeProgram(gw.bridge.port, ["Line 201", "Line 202", "Line 203"])
    try:
        await prog.ready()
        carol = await login(connect, gw, "carol")
        await carol.request({"type": "subscribe", "panel": "office"})
        await wait_lamps(carol, {"alice": "idle"}, PATIENCE)
        watcher = HonestWatcher(carol, probe_bridge)
        watcher.start()
        prog.kill(signal.SIGSTOP)
        await prog.send({"device": "Line 201", "call": "s1", "state": "offering",
                         "caller": "0301"})
        await asyncio.sleep(1.0)
        # A stopped bridge says nothing: the gateway cannot know, the lamp stays, and
        # everybody else's lamps go on.
        assert lamp_of(carol, "alice") == "idle"
        prog.kill(signal.SIGCONT)
        heal = await wait_lamps(carol, {"alice": "ringing"}, PATIENCE)
        await watcher.stop()
        assert watcher.missed == 0
        print(f"\nFIGURE bridge-sigstop heal_s={heal:.2f} p99_ms={watcher.p99_ms():.1f}")
    finally:
        prog.close()


GW_CONFIG_EXTRA = 'login_attempts_per_minute = 1000'


def _run_gateway(path: Path, ws: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(ws, proc=proc)
    return proc


async def _client(ws_port: int, **login_fields) -> tuple[WsClient, dict]:
    c = WsClient(await websockets.connect(f"ws://127.0.0.1:{ws_port}/ws"))
    w = await c.request({"type": "login", **login_fields})
    return c, w


async def _gateway_process(tmp_path):
    """A gateway process (embedded Redis) on free ports: (ws port, bridge port, its
    configuration file, the process)."""
    ws, br = free_port(), free_port()
    path = tmp_path / "gw.toml"
    path.write_text(config(bridge_port=br, ws_port=ws, server_extra=GW_CONFIG_EXTRA))
    return ws, br, path, await asyncio.to_thread(_run_gateway, path, ws)


async def test_gateway_killed_and_restarted_clients_resume_with_nothing_lost(tmp_path):
    """kill -9 of the gateway (embedded Redis): its Redis ends with it; the restarted
    gateway has the tokens, the seq and the journals; the bridge reconnects and the
    lamps are exact; a client resumes with its token."""
    ws, br, path, proc = await _gateway_process(tmp_path)
    prog = None
    try:
        prog = BridgeProgram(br, list(LINES.values()))
        await prog.ready()
        for msg in ({"device": "Line 202", "call": "j1", "state": "offering", "caller": "0402"},
                    {"device": "Line 202", "call": "j1", "state": "disconnected"},
                    {"device": "Line 201", "call": "k1", "state": "connected",
                     "caller": "0301"}):
            await prog.send(msg)
        carol, w = await _client(ws, client="carol", password=PW)
        token = w["token"]
        snap = await carol.request({"type": "subscribe", "panel": "office"})
        await wait_lamps(carol, {"alice": "busy"}, PATIENCE)
        seq = max(m.get("seq", 0) for m in carol.received)
        servers = redis_servers_under(tmp_path)
        assert len(servers) == 1 and snap["type"] == "snapshot"

        t0 = time.monotonic()
        proc.kill()
        proc.wait()
        await wait_gone(servers[0], PATIENCE)  # its Redis went with it (and wrote its data)
        prog.close()

        proc = await asyncio.to_thread(_run_gateway, path, ws)
        prog = BridgeProgram(br, list(LINES.values()))
        await prog.ready()
        await prog.send({"device": "Line 201", "call": "k1", "state": "connected",
                         "caller": "0301"})
        carol2, w2 = await _client(ws, client="carol", token=token)
        assert w2["type"] == "welcome", w2  # the token survived the crash
        again = await carol2.request({"type": "subscribe", "panel": "office", "since": seq})
        assert again["type"] == "snapshot"
        # The resumed panel lists what changed since `seq`; the rest is as carol had it.
        await wait_lamps(carol2, {"alice": "busy"}, PATIENCE)
        heal = time.monotonic() - t0
        assert lamp_of(carol, "bob") == "idle" and lamp_of(carol2, "bob") in (None, "idle")
        await carol2.request({"type": "unsubscribe", "panel": "office"})
        full = await carol2.request({"type": "subscribe", "panel": "office"})
        assert {m["client"]: m["lamp"] for m in full["members"]} == {
            "alice": "busy", "bob": "idle", "carol": "idle", "probe": "idle"}
        assert max(m.get("seq", 0) for m in carol2.received) > seq  # seq kept counting
        bob, _ = await _client(ws, client="bob", password=PW)
        entries = (await bob.request({"type": "journal", "scope": "server"}))["entries"]
        assert [e["remote"] for e in entries] == ["0402"]  # the call before the crash
        print(f"\nFIGURE gateway-kill9-restart exact_after_s={heal:.2f}")
        await carol2.close()
        await bob.close()
    finally:
        if prog is not None:
            prog.close()
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 20)


async def test_gateway_stopped_then_continued_loses_nothing(tmp_path):
    """SIGSTOP of the gateway for 2 s: bridge lines and client frames wait in the
    kernel; after SIGCONT every change arrives, the journal has the call that ended."""
    ws, br, path, proc = await _gateway_process(tmp_path)
    prog = None
    try:
        prog = BridgeProgram(br, list(LINES.values()))
        await prog.ready()
        carol, _ = await _client(ws, client="carol", password=PW)
        await carol.request({"type": "subscribe", "panel": "office"})
        await wait_lamps(carol, {"alice": "idle", "bob": "idle"}, PATIENCE)
        proc.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        for msg in ({"device": "Line 202", "call": "j2", "state": "offering", "caller": "0402"},
                    {"device": "Line 202", "call": "j2", "state": "disconnected"},
                    {"device": "Line 201", "call": "k2", "state": "offering",
                     "caller": "0301"}):
            await prog.send(msg)
        await asyncio.sleep(2.0)
        assert lamp_of(carol, "alice") == "idle"  # nothing can move while it is stopped
        proc.send_signal(signal.SIGCONT)
        await wait_lamps(carol, {"alice": "ringing", "bob": "idle"}, PATIENCE)
        heal = time.monotonic() - t0 - 2.0
        bob, _ = await _client(ws, client="bob", password=PW)
        for _ in within():
            entries = (await bob.request({"type": "journal", "scope": "server"}))["entries"]
            if entries:
                break
            await asyncio.sleep(0.05)
        assert [e["remote"] for e in entries] == ["0402"]
        print(f"\nFIGURE gateway-sigstop exact_after_cont_s={heal:.2f}")
        await carol.close()
        await bob.close()
    finally:
        if prog is not None:
            prog.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 20)
