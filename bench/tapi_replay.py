"""Benchmark (not a test): TAPI messages per second through the bridge program into the gateway.

A synthetic trace of many lines and calls (each call: LINE_APPNEWCALL, OFFERING, a late
LINE_CALLINFO with the caller ID, CONNECTED, ONHOLD, CONNECTED, DISCONNECTED, IDLE) is played
by the bridge program's own Replay -> Translator -> Bridge link over TCP into a real gateway
(its own process, embedded Redis). The figure is TAPI messages (and bridge lines) per second
until the gateway has taken the last line (its /metrics `blf_source_lines_total`).

Baseline, same run, same gateway: the very bridge lines the translator produced, written
pre-translated straight onto a TCP connection (what a bridge costing nothing would do).
Also printed: the translator alone (no I/O), messages per second.

Usage: .venv/bin/python bench/tapi_replay.py [--lines 300] [--calls 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.tapi.winbridge.link import Bridge, LinkOptions  # noqa: E402
from gateway.tapi.winbridge.trace import Replay, parse_trace  # noqa: E402
from gateway.tapi.winbridge.translate import Translator  # noqa: E402

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def make_trace(n_lines: int, n_calls: int, base: int) -> list[str]:
    """JSON lines of a trace; call ids from `base` so that every run does fresh work."""
    out = [json.dumps({"open": i, "LineName": f"Line {1000 + i}", "Address": str(1000 + i)})
           for i in range(n_lines)]
    h = base
    for c in range(n_calls):
        for i in range(n_lines):
            h += 1
            cid = f"{h:#x}"
            msgs = [
                {"msg": "LINE_APPNEWCALL", "line": i, "hCall": h, "callinfo": {
                    "dwCallID": cid, "dwOrigin": "LINECALLORIGIN_EXTERNAL",
                    "CalledID": str(1000 + i)}},
                {"msg": "LINE_CALLSTATE", "hCall": h, "dwParam1": "LINECALLSTATE_OFFERING"},
                {"msg": "LINE_CALLINFO", "hCall": h, "dwParam1": "LINECALLINFOSTATE_CALLERID",
                 "callinfo": {"CallerID": f"+49301{h:07d}", "CallerIDName": f"Caller {h}",
                              "dwCallerIDFlags": "LINECALLPARTYID_ADDRESS|LINECALLPARTYID_NAME"}},
                {"msg": "LINE_CALLSTATE", "hCall": h, "dwParam1": "LINECALLSTATE_CONNECTED"},
                {"msg": "LINE_CALLSTATE", "hCall": h, "dwParam1": "LINECALLSTATE_ONHOLD"},
                {"msg": "LINE_CALLSTATE", "hCall": h, "dwParam1": "LINECALLSTATE_CONNECTED"},
                {"msg": "LINE_CALLSTATE", "hCall": h, "dwParam1": "LINECALLSTATE_DISCONNECTED"},
                {"msg": "LINE_CALLSTATE", "hCall": h, "dwParam1": "LINECALLSTATE_IDLE"},
            ]
            out += [json.dumps(m) for m in msgs]
    return out


def gateway_config(ws: int, bridge: int, n_lines: int) -> str:
    out = [f'[server]\nlisten = "{HOST}:{ws}"\n', '[state]\ndir = "state"\n',
           f'[sources.tapi_bridge]\nlisten = "{HOST}:{bridge}"\n']
    for i in range(n_lines):
        out.append(f'[[devices]]\nid = "{1000 + i}"\nnumber = "{1000 + i}"\n'
                   f'line = "Line {1000 + i}"\n')
    for i in range(n_lines):
        out.append(f'[[clients]]\nname = "m{i}"\ndevices = ["{1000 + i}"]\n')
    return "\n".join(out)


def lines_total(ws: int) -> int:
    with urllib.request.urlopen(f"http://{HOST}:{ws}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith('blf_source_lines_total{source="tapi_bridge"}'):
                return int(float(line.split()[-1]))
    raise RuntimeError("no blf_source_lines_total in /metrics")


async def until_taken(ws: int, target: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(lines_total, ws) < target:
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway did not take every line in time")
        await asyncio.sleep(0.01)


class Collect:
    """A bridge stand-in for the dry run: translator only."""

    def __init__(self) -> None:
        self.translator = Translator()
        self.lines: list[bytes] = []

    def feed(self, ev):
        out = self.translator.feed(ev)
        self.lines += [json.dumps(x, separators=(",", ":")).encode() + b"\n"
                       for x in out.lines]
        return out

    def post_request_result(self, op, result):  # pragma: no cover - no commands here
        pass


async def dry_run(records) -> tuple[list[bytes], float]:
    sink = Collect()
    replay = Replay(records, sink, speed=0)
    t0 = time.perf_counter()
    await replay.play()
    return sink.lines, time.perf_counter() - t0


async def baseline(bridge_port: int, ws: int, lines: list[bytes]) -> float:
    before = await asyncio.to_thread(lines_total, ws)
    t0 = time.perf_counter()
    r, w = await asyncio.open_connection(HOST, bridge_port)
    for i in range(0, len(lines), 500):
        w.write(b"".join(lines[i:i + 500]))
        await w.drain()
    await until_taken(ws, before + len(lines))
    elapsed = time.perf_counter() - t0
    w.close()
    return elapsed


async def through_bridge(bridge_port: int, ws: int, records, expect: int) -> tuple[float, int]:
    before = await asyncio.to_thread(lines_total, ws)
    bridge = Bridge(LinkOptions(HOST, bridge_port, backoff_min=0.05))
    replay = Replay(records, bridge, speed=0)
    bridge.provider = replay
    t0 = time.perf_counter()
    task = asyncio.create_task(bridge.run())
    await bridge.connected.wait()
    await replay.play()
    await until_taken(ws, before + bridge.lines_sent)
    elapsed = time.perf_counter() - t0
    sent = bridge.lines_sent
    bridge.stop()
    await task
    return elapsed, sent


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=300)
    ap.add_argument("--calls", type=int, default=20, help="calls per line")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ws, bport = free_port(), free_port()
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(gateway_config(ws, bport, args.lines))
        log = open(Path(tmp) / "gateway.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(cfg),
                                 "--log-level", "warning"], cwd=tmp, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    lines_total(ws)
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("the gateway did not start") from None
                    time.sleep(0.1)
            rows = []
            for rnd in range(args.rounds):
                base = rnd * 10_000_000
                text_base = make_trace(args.lines, args.calls, base)
                text_bridge = make_trace(args.lines, args.calls, base + 5_000_000)
                records_base = parse_trace(text_base)
                records_bridge = parse_trace(text_bridge)
                n_msgs = sum(1 for r in records_bridge if r.kind == "msg")
                lines, t_dry = await dry_run(records_base)
                t_base = await baseline(bport, ws, lines)
                t_bridge, sent = await through_bridge(bport, ws, records_bridge, len(lines))
                rows.append((n_msgs, len(lines), t_dry, t_base, t_bridge, sent))
        finally:
            proc.terminate()
            proc.wait(20)
            log.close()

    print(f"{args.lines} lines x {args.calls} calls, 8 TAPI messages per call; "
          f"gateway in its own process with embedded Redis")
    print(f"{'round':>5} {'TAPI msgs':>10} {'lines':>8} {'translator only':>18} "
          f"{'bridge -> gateway':>22} {'baseline (pre-translated)':>27}")
    for i, (n, nl, t_dry, t_base, t_bridge, sent) in enumerate(rows, 1):
        print(f"{i:>5} {n:>10,} {nl:>8,} {n / t_dry:>12,.0f} msg/s "
              f"{n / t_bridge:>10,.0f} msg/s ({sent / t_bridge:>7,.0f} l/s) "
              f"{nl / t_base:>14,.0f} lines/s ({n / t_base:>7,.0f} msg/s eq.)")


if __name__ == "__main__":
    asyncio.run(main())
