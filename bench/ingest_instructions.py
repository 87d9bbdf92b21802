"""Instructions the gateway process executes per bridge line of an ingest: a CPU figure that
other work on a shared machine does not move.

    .venv/bin/python bench/ingest_instructions.py [--lines 10000]

The gateway runs as in bench/run.py (its own process, embedded Redis, uvloop, the ingest
configuration of 500 devices), but under valgrind's callgrind with counting off; counting is
switched on (`callgrind_control`) just before the lines are sent and the count taken once
every device's final state is in Redis and a second has passed (for the provenance and
follower work behind the last state). Redis and this process are not counted. The figure is
instructions, not time: it reads the same on a busy and an idle machine (run it twice to
see its spread: how many changes a run publishes, which depends on how the lines batch,
moves it by a few per cent). Needs valgrind (`apt-get install valgrind`); under it the
gateway runs some 50 times slower, so the default 10,000 lines take about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import run  # noqa: E402


def ingest_lines(lines: int) -> tuple[list[bytes], list[str], list[str]]:
    """bench/run.py's ingest: every line changes its device's state; ends ringing. The lines,
    the devices' keys and the call id each must end with."""
    per_dev = lines // run.INGEST_DEVICES
    out, final = [], {}
    for k in range(per_dev):
        for d in range(run.INGEST_DEVICES):
            call = f"i{d}x{k // 2}"
            out.append(run.bline(device=str(1000 + d), call=call, state="offering", caller="555")
                       if k % 2 == 0 else
                       run.bline(device=str(1000 + d), call=call, state="disconnected"))
    for d in range(run.INGEST_DEVICES):
        final[d] = f"i{d}x{per_dev}"
        out.append(run.bline(device=str(1000 + d), call=final[d], state="offering",
                             caller="555"))
    keys = [f"{{blf}}:dev:{1000 + d}" for d in range(run.INGEST_DEVICES)]
    want = [f'"{1000 + d}/{final[d]}"' for d in range(run.INGEST_DEVICES)]
    return out, keys, want


async def drive(pid: int, bridge: int, redis_socket: str, lines: int) -> tuple[int, int, float]:
    """Send the ingest, counting only while it is applied: (lines, changes published, s)."""
    import redis.asyncio as aioredis

    def control(*args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    r = aioredis.Redis(unix_socket_path=redis_socket, decode_responses=True)
    _, w = await asyncio.open_connection(run.HOST, bridge)
    w.write(b"".join(run.bline(device=str(1000 + d), devstate="inservice")
                     for d in range(run.INGEST_DEVICES)))
    await w.drain()
    await asyncio.sleep(20)  # the in-service lines applied (slowly, under valgrind)
    out, keys, want = ingest_lines(lines)
    seq0 = int(await r.get("{blf}:seq") or 0)
    control("--instr=on")
    t0 = time.perf_counter()
    w.write(b"".join(out))
    await w.drain()
    while True:
        values = await r.mget(keys)
        if all(v is not None and x in v for v, x in zip(values, want)):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    control("--dump")
    control("--instr=off")
    took = time.perf_counter() - t0
    published = int(await r.get("{blf}:seq") or 0) - seq0
    w.close()
    await r.aclose()
    return len(out), published, took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=10000,
                    help="bridge lines to send (over 500 devices; default 10,000)")
    args = ap.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind (with callgrind_control) is not installed: apt-get install valgrind")
    tmp = Path(tempfile.mkdtemp(prefix="blf-instr-"))
    ws, bridge = run.free_port(), run.free_port()
    cfg = tmp / "bench.toml"
    cfg.write_text(run.gateway_config(ws, bridge, run.INGEST_DEVICES))
    out = tmp / "callgrind.out"
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
           sys.executable, "-c", run.GATEWAY_WRAPPER, "run", "--config", str(cfg),
           "--log-level", "warning"]
    with open(tmp / "server.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        run.wait_port(ws, 600)
        run.wait_port(bridge, 600)
        n, published, took = run.fast_run(
            drive(proc.pid, bridge, str(tmp / "state" / "redis.sock"), args.lines))
    finally:
        proc.terminate()
        proc.wait(120)
    total = 0
    for dump in sorted(tmp.glob("callgrind.out.*")):  # what --dump wrote: the counted part
        for line in dump.read_text().splitlines():
            if line.startswith("summary:"):
                total += int(line.split()[1])
    if not total:
        sys.exit(f"no callgrind dump found in {tmp}")
    print(f"{n:,} lines, {published:,} changes published, {took:.0f} s under callgrind: "
          f"{total / n:,.0f} instructions of the gateway process a line")


if __name__ == "__main__":
    main()
