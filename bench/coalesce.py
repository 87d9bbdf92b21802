"""Benchmark: lamp changes/s delivered with coalescing, against raw broadcast deliveries/s.

    .venv/bin/python bench/coalesce.py [--clients 1000] [--seconds 5]

The gateway (own process, embedded Redis) with a panel of 500 members; N clients (in two
worker processes, the raw clients of bench/run.py) log in with `"batch": true` and watch the
panel. The TAPI bridge is blasted as fast as the gateway reads it, far more changes than a
client can take one frame at a time: the gateway keeps only the newest state of each lamp for
a client that is behind and sends the waiting changes together in `lamps` frames. Counted at
the clients: lamp changes received per second (each change in a `lamps` frame counts).

Baseline in the same run: a bare `websockets.broadcast` server, one frame per change, driven
the same way (the clients count its frames).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import run as b  # noqa: E402


async def blast(server: b.Server, seconds: float, members: int) -> int:
    _, w = await asyncio.open_connection(b.HOST, server.bridge)
    if server.gw:
        w.write(b"".join(b.bline(device=str(1000 + d), devstate="inservice")
                         for d in range(members)))
        await w.drain()
    sent, k = 0, 0
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        chunk = []
        for _ in range(500):
            d = k % members
            state = "offering" if (k // members) % 2 == 0 else "disconnected"
            chunk.append(b.bline(device=str(1000 + d), call=f"c{k // (2 * members)}",
                                 state=state, caller=f"0301{k:07d}"))
            k += 1
        w.write(b"".join(chunk))
        sent += len(chunk)
        await w.drain()
    w.close()
    return sent


async def measure(server: b.Server, workers: b.Workers, n: int, seconds: float,
                  batch: bool) -> tuple[float, int]:
    token = await b.get_token(server) if server.gw else None
    got = await workers.connect(server.ws, n, token, batch=batch)
    assert got == n, f"only {got} of {n} clients connected"
    await asyncio.sleep(1.0)
    driver = asyncio.create_task(blast(server, seconds + 2.0, b.MEMBERS))
    await asyncio.sleep(1.0)  # warm up: clients fall behind
    t0, c0, _ = await workers.counts()
    await asyncio.sleep(seconds)
    t1, c1, alive = await workers.counts()
    sent = await driver
    await workers.call(("close",))
    return (c1 - c0) / (t1 - t0), sent


async def main_async(args) -> None:
    b.raise_nofile()
    tmp = Path(tempfile.mkdtemp(prefix="blf-coalesce-"))
    workers = b.Workers(2)
    rows = []
    try:
        for kind in ("gateway", "raw"):
            server = b.Server(tmp, kind, f"{kind}-c", b.MEMBERS)
            try:
                rate, sent = await measure(server, workers, args.clients, args.seconds,
                                           batch=kind == "gateway")
                rows.append((kind, rate, sent / (args.seconds + 2.0)))
                b.say(f"{kind}: {rate:,.0f} lamp changes/s delivered to {args.clients} clients "
                      f"({sent / (args.seconds + 2.0):,.0f} bridge lines/s offered)")
            finally:
                server.stop()
    finally:
        await workers.quit()
    g, r = rows[0][1], rows[1][1]
    print(f"\nCoalescing, {args.clients} clients, panel of {b.MEMBERS}, bridge blasted for "
          f"{args.seconds:g} s ({os.cpu_count()} cores)")
    print(f"| {'':28} | {'changes/s delivered':>20} | {'ratio':>6} | target       |")
    print(f"| {'gateway, lamps batches':28} | {g:>20,.0f} | {g / r:>5.2f}x | >= 200,000/s {'PASS' if g >= 200000 else 'FAIL'} |")
    print(f"| {'raw broadcast, 1 per frame':28} | {r:>20,.0f} | {1:>5.2f}x |              |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    b.fast_run(main_async(args))


if __name__ == "__main__":
    main()
