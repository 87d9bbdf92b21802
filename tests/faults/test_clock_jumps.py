"""The wall clock of the gateway's machine jumps (an NTP step, an admin's `date -s`): a day
forward, an hour back. Lamps go on without a stall, seq keeps its order, a call's `since`
follows the clock users' own machines show, journals lose nothing.

The gateway runs as its own process under libfaketime (Debian's `faketime`), whose offset
file is changed while it runs; its monotonic clock (timers, rate limits) is not touched, as
with a real clock step."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
import websockets

from conftest import PATIENCE, PW, RedisServer, WsClient, free_port, wait_port, within
from faultkit import LINES, HonestWatcher, config, lamp_of, wait_lamps
from test_process_faults import BridgeProgram

LIBFAKETIME = next((p for p in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
                                "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
                                "/usr/lib/faketime/libfaketimeMT.so.1") if os.path.exists(p)),
                   None)

pytestmark = pytest.mark.skipif(
    LIBFAKETIME is None, reason="needs Debian's faketime (libfaketime) to move the clock of "
    "one process: apt-get install faketime (scripts/test installs it as root)")


class BridgeRelay:
    """The honest watcher's probe line through the bridge program (HonestWatcher API)."""

    def __init__(self, prog: BridgeProgram) -> None:
        self.prog = prog

    async def send(self, msg: dict) -> None:
        await self.prog.send(msg)


async def test_clock_jumps_forward_and_back_without_a_stall(tmp_path):
    server = RedisServer(tmp_path, persist=False)
    server.start()
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    ws, br = free_port(), free_port()
    path = tmp_path / "gw.toml"
    path.write_text(config(server.url, bridge_port=br, ws_port=ws,
                           server_extra="login_attempts_per_minute = 1000"))
    env = {**os.environ, "LD_PRELOAD": LIBFAKETIME, "FAKETIME_TIMESTAMP_FILE": str(offset),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    prog = None
    try:
        await asyncio.to_thread(wait_port, ws, proc=proc)
        prog = BridgeProgram(br, list(LINES.values()))
        await prog.ready()
        carol = WsClient(await websockets.connect(f"ws://127.0.0.1:{ws}/ws"))
        await carol.request({"type": "login", "client": "carol", "password": PW})
        await carol.request({"type": "subscribe", "panel": "office"})
        await wait_lamps(carol, {"alice": "idle", "bob": "idle"}, PATIENCE)
        watcher = HonestWatcher(carol, BridgeRelay(prog))
        watcher.start()

        # Before the step: a call on 203 ended, one on 202 is talking.
        for msg in ({"device": "Line 203", "call": "old", "state": "offering", "caller": "05"},
                    {"device": "Line 203", "call": "old", "state": "disconnected"},
                    {"device": "Line 202", "call": "live", "state": "connected",
                     "caller": "06"}):
            await prog.send(msg)
        await wait_lamps(carol, {"bob": "busy", "carol": "idle"}, PATIENCE)
        live_since = [m for m in carol.received if m.get("member") == "bob"][-1][
            "calls"][0]["since"]
        offset.write_text("+1d\n")
        await asyncio.sleep(5.5)  # the trackers' timer has run since the step
        # A late report of the call that ended must not bring it back (it would stay red).
        await prog.send({"device": "Line 203", "call": "old", "state": "connected"})
        await asyncio.sleep(0.5)
        assert lamp_of(carol, "carol") == "idle"
        bob_now = [m for m in carol.received if m.get("member") == "bob"][-1]
        # The talking call's timer did not jump: its start moved with the clock (and every
        # watcher was told).
        assert bob_now["calls"][0]["since"] == pytest.approx(live_since + 86400, abs=2)
        await prog.send({"device": "Line 202", "call": "live", "state": "disconnected"})
        await wait_lamps(carol, {"bob": "idle"}, PATIENCE)
        offset.write_text("+0\n")
        await asyncio.sleep(0.5)

        seen_since = {}
        for step, shift in (("forward", "+1d"), ("back", "-1h")):
            offset.write_text(shift + "\n")
            await asyncio.sleep(0.5)
            call = f"c-{step}"
            mark = len(carol.received)
            await prog.send({"device": "Line 201", "call": call, "state": "offering",
                             "caller": "0301"})
            await carol.wait(lambda m: m.get("member") == "alice"
                             and m.get("lamp") == "ringing", PATIENCE, start=mark)
            await prog.send({"device": "Line 201", "call": call, "state": "connected"})
            await prog.send({"device": "Line 202", "call": f"j-{step}", "state": "offering",
                             "caller": f"04{len(step)}"})
            await prog.send({"device": "Line 202", "call": f"j-{step}",
                             "state": "disconnected"})
            await wait_lamps(carol, {"alice": "busy", "bob": "idle"}, PATIENCE)
            busy = [m for m in carol.received if m.get("member") == "alice"
                    and m.get("lamp") == "busy"][-1]
            seen_since[step] = busy["calls"][0]["since"]
            await prog.send({"device": "Line 201", "call": call, "state": "disconnected"})
            await wait_lamps(carol, {"alice": "idle"}, PATIENCE)
        await watcher.stop()
        # The call's `since` is the gateway machine's clock: a day ahead, then an hour behind.
        now = time.time()
        assert abs(seen_since["forward"] - (now + 86400)) < 60
        assert abs(seen_since["back"] - (now - 3600)) < 60
        # Frames kept their order: seq only ever grew.
        seqs = [m["seq"] for m in carol.received if m.get("type") == "lamp"]
        assert seqs == sorted(seqs)
        assert watcher.missed == 0
        # Both calls that ended are in the server journal, once each.
        bob = WsClient(await websockets.connect(f"ws://127.0.0.1:{ws}/ws"))
        await bob.request({"type": "login", "client": "bob", "password": PW})
        entries = []
        for _ in within():
            entries = (await bob.request({"type": "journal", "scope": "server"}))["entries"]
            if len([e for e in entries if e["device"] == "202"]) == 3:
                break
            await asyncio.sleep(0.05)
        on_202 = {e["remote"]: e for e in entries if e["device"] == "202"}
        assert sorted(on_202) == ["044", "047", "06"]
        # The call that talked across the step has its real duration in the journal.
        assert 0 < on_202["06"]["end"] - on_202["06"]["start"] < 60
        print(f"\nFIGURE clock-jumps p99_ms={watcher.p99_ms():.1f} missed={watcher.missed}")
        await carol.close()
        await bob.close()
    finally:
        if prog is not None:
            prog.close()
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 20)
        finally:
            server.stop()
