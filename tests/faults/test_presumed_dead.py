"""A gateway process that is only silent for a while (SIGSTOP here; in production a paused
VM, a starved CPU) is taken for dead by the others: their janitor makes its lines unknown.
When it runs again it notices, and its lines come back exact without waiting for the next
call on them."""

from __future__ import annotations

import asyncio
import signal
import time

import websockets

from conftest import PATIENCE, PW, WsClient, free_port
from faultkit import LINES, config, wait_lamps
from test_process_faults import BridgeProgram, _run_gateway


async def test_a_process_taken_for_dead_while_stopped_brings_its_lines_back(
        redis_url, start_gateway, tmp_path):
    ws, br = free_port(), free_port()
    (tmp_path / "a").mkdir()
    path = tmp_path / "a" / "gw.toml"
    path.write_text(config(redis_url, bridge_port=br, ws_port=ws))
    holder = await asyncio.to_thread(_run_gateway, path, ws)  # holds the bridge's lines
    prog = None
    carol = None
    try:
        prog = BridgeProgram(br, list(LINES.values()))
        await prog.ready()
        for line in LINES.values():
            await prog.send({"device": line, "devstate": "inservice"})
        await prog.send({"device": "Line 201", "call": "k1", "state": "connected",
                         "caller": "0301"})
        other = await start_gateway(config(redis_url))  # carol's switchboard is here
        carol = WsClient(await websockets.connect(f"ws://127.0.0.1:{other.ws_port}/ws"))
        assert (await carol.request({"type": "login", "client": "carol",
                                     "password": PW}))["type"] == "welcome"
        await carol.request({"type": "subscribe", "panel": "office"})
        await wait_lamps(carol, {"alice": "busy", "bob": "idle"}, PATIENCE)

        holder.send_signal(signal.SIGSTOP)
        # The other process's janitor: the silent process's lines are unknown (it may be
        # dead, its bridge connection with it).
        await wait_lamps(carol, {"alice": "unknown", "bob": "unknown"}, PATIENCE)
        holder.send_signal(signal.SIGCONT)
        t0 = time.monotonic()
        # Nothing new on the lines: the lamps come back because the process, running
        # again, publishes what its bridge told it.
        await wait_lamps(carol, {"alice": "busy", "bob": "idle"}, PATIENCE)
        print(f"\nFIGURE presumed-dead exact_after_cont_s={time.monotonic() - t0:.2f}")
    finally:
        if carol is not None:
            await carol.close()
        if prog is not None:
            prog.close()
        if holder.poll() is None:
            holder.send_signal(signal.SIGCONT)
            holder.send_signal(signal.SIGTERM)
            await asyncio.to_thread(holder.wait, 20)
