"""A gateway that stops reading (SIGSTOP of a real gateway process) never holds up the bridge:
the bridge drops the connection once its limit is waiting, queues nothing, and when the
gateway is back sends the full state: the lamps are exact again."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import websockets

from conftest import PW, ROOT, eventually, free_port
from gateway.tapi.winbridge import constants as C
from gateway.tapi.winbridge.callinfo import CallInfo, Party
from gateway.tapi.winbridge.link import Bridge, LinkOptions
from gateway.tapi.winbridge.translate import LineOpened, TapiMessage
from tapikit import office_config

M, CS = C.MESSAGES, C.CALLSTATE


def wait_http(port: int, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def test_stalled_gateway_costs_the_bridge_nothing_and_gets_the_full_state(
        redis_url, tmp_path):
    port, ws_port = free_port(), free_port()
    cfg = tmp_path / "gw.toml"
    cfg.write_text(office_config(redis_url, port).replace(
        'listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{ws_port}"', 1))
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(cfg)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bridge = Bridge(LinkOptions("127.0.0.1", port, backoff_min=0.05, backoff_max=0.2,
                                max_buffer=64 << 10))
    task = None
    try:
        await asyncio.to_thread(wait_http, ws_port)
        ws = await websockets.connect(f"ws://127.0.0.1:{ws_port}/ws")
        await ws.send(json.dumps({"type": "login", "id": 1, "client": "dan", "password": PW}))
        await ws.send(json.dumps({"type": "subscribe", "id": 2, "panel": "office"}))
        frames: list[dict] = []

        async def read():
            async for f in ws:
                frames.append(json.loads(f))

        reader = asyncio.create_task(read())
        task = asyncio.create_task(bridge.run())
        await asyncio.wait_for(bridge.connected.wait(), 10)
        bridge.feed(LineOpened(0, "Line 201", "201"))
        info = CallInfo(call_id=0x51, origin=C.CALLORIGIN["LINECALLORIGIN_EXTERNAL"],
                        caller=Party("+4930123456", "Caller 0"))
        bridge.feed(TapiMessage(M["LINE_CALLSTATE"], 9, 0, CS["LINECALLSTATE_CONNECTED"], 0, 0,
                                info))

        def alice():
            """Alice as the watcher last saw her (a snapshot's member or a lamp frame)."""
            seen = [m for f in frames for m in (
                f.get("members", []) if f.get("type") == "snapshot" else [f])
                if m.get("member", m.get("client")) == "alice" and "lamp" in m]
            return seen[-1] if seen else {}

        await eventually(lambda: alice().get("lamp") == "busy")

        proc.send_signal(signal.SIGSTOP)
        # A TSP that keeps talking (a caller name changing on every message): each change
        # is a line; the gateway reads none of them.
        n = 0
        while bridge.connected.is_set() and n < 300_000:
            n += 1
            name = f"Caller {n} " + "x" * 100
            bridge.feed(TapiMessage(M["LINE_CALLINFO"], 9, 0, 0x8000, 0, 0,
                                    CallInfo(call_id=0x51, origin=info.origin,
                                             caller=Party("+4930123456", name))))
        assert not bridge.connected.is_set(), "the bridge never gave up on a stalled gateway"
        # Nothing waits in memory for the stalled gateway: lines made now are dropped (the
        # full state replaces them later).
        dropped = bridge.dropped_lines
        bridge.feed(TapiMessage(M["LINE_CALLSTATE"], 9, 0, CS["LINECALLSTATE_ONHOLD"], 0, 0,
                                CallInfo(call_id=0x51, origin=info.origin,
                                         caller=Party("+4930123456", "Final Name"))))
        assert bridge.dropped_lines == dropped + 1 or bridge.connected.is_set()
        proc.send_signal(signal.SIGCONT)
        # Back: the bridge's newest state, and nothing older, is what the watcher ends with.
        try:
            await eventually(lambda: alice().get("lamp") == "held"
                             and alice()["calls"][0]["remote_name"] == "Final Name", 20)
        except AssertionError:
            raise AssertionError(f"{alice()} n={n} conns={bridge.connections} "
                                 f"connected={bridge.connected.is_set()}") from None
        reader.cancel()
        await ws.close()
    finally:
        proc.send_signal(signal.SIGCONT)
        bridge.stop()
        if task is not None:
            await asyncio.wait_for(task, 10)
        proc.terminate()
        proc.wait(20)
