"""Soak benchmark: a day in an office, compressed, against one gateway; is everything flat?

    .venv/bin/python bench/soak.py                 # 30 minutes
    .venv/bin/python bench/soak.py --minutes 5     # shorter
    .venv/bin/python bench/soak.py --clients 1000 --devices 50 --calls-per-minute 240

The gateway runs in its own process (`python -m gateway run`, embedded Redis, uvloop), as in
bench/run.py, with one panel of `--devices` members (each owning one TAPI bridge device) and a
`watcher` client whose sessions are the benchmark's clients. Traffic, from one TAPI bridge
connection, in random order with random pauses:

- incoming calls: offering (ringing) -> connected (answered) or disconnected (missed);
- answered calls: some put on hold and taken back, some transferred (the call ends on the
  first device and rings on a colleague's), then disconnected;
- outgoing calls: dialing -> ringback -> connected -> disconnected;

Clients (in two worker processes, on the same raw WebSocket clients as bench/run.py): one in
ten is slow (stops reading for 4 s out of every 5); every 10 s a few clients close and log in
again with their token (`subscribe` with `since`), and once a minute a password login is
made. A probe client here measures bridge line -> ringing lamp latency for every call.

Every minute it samples the gateway's RSS and open file descriptors, the embedded Redis's
used memory and its change-log length, and the latency p99 of that minute, prints a row, and
at the end a table and, per figure, the least-squares slope over the run (after the first
two minutes: warm-up and the change log filling up to its cap) and whether it is flat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import run  # noqa: E402  (bench/run.py: server, raw clients, worker processes)
from run import HOST, RawClient, login_msgs  # noqa: E402

SLOW_EVERY = 10  # one client in ten reads slowly
CHURN_SECONDS = 10.0  # every this often, a few clients reconnect
CHURN_FRACTION = 0.01  # of the clients, per churn


# -- clients (worker processes) ----------------------------------------------------------------

class SlowClient(RawClient):
    """Reads for 1 s out of every 5: the gateway must coalesce, not queue without end."""

    def connection_made(self, transport) -> None:  # noqa: ANN001
        super().connection_made(transport)
        self._toggle = asyncio.get_running_loop().create_task(self._slow())

    async def _slow(self) -> None:
        await asyncio.sleep(random.uniform(0, 5))
        while not self.closed:
            if self.ready.done():
                self.transport.pause_reading()
                await asyncio.sleep(4.0)
                if self.closed:
                    return
                self.transport.resume_reading()
            await asyncio.sleep(1.0)


async def open_soak_client(port: int, token: str, since: int | None, slow: bool) -> RawClient | None:
    loop = asyncio.get_running_loop()
    login, sub = login_msgs(token, since)
    cls = SlowClient if slow else RawClient
    for _ in range(3):
        try:
            _, c = await asyncio.wait_for(loop.create_connection(
                lambda: cls(port, login, sub), HOST, port), 30)
            if await asyncio.wait_for(c.ready, 30):
                return c
            c.transport.close()
        except (OSError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(0.5)
    return None


def soak_worker_main(conn, wid: int) -> None:  # noqa: ANN001
    run.raise_nofile()
    run.fast_run(soak_worker(conn, wid))


async def soak_worker(conn, wid: int) -> None:  # noqa: ANN001
    loop = asyncio.get_running_loop()
    clients: list[tuple[RawClient, bool]] = []
    stats = {"reconnects": 0, "failed": 0, "dropped": 0, "lamps_done": 0}
    port = token = None
    churn: asyncio.Task | None = None
    rng = random.Random(wid)

    async def churner() -> None:
        while True:
            await asyncio.sleep(CHURN_SECONDS)
            # Clients the gateway closed (a slow one, in case) come back too.
            k = max(1, int(len(clients) * CHURN_FRACTION))
            picks = set(rng.sample(range(len(clients)), min(k, len(clients))))
            picks |= {i for i, (c, _) in enumerate(clients) if c.closed}
            for i in picks:
                c, slow = clients[i]
                if c.closed:
                    stats["dropped"] += 1
                stats["lamps_done"] += c.lamps
                c.transport.close()
                new = await open_soak_client(port, token, None, slow)
                if new is None:
                    stats["failed"] += 1
                    continue
                clients[i] = (new, slow)
                stats["reconnects"] += 1

    while True:
        cmd, *args = await loop.run_in_executor(None, conn.recv)
        if cmd == "start":
            port, token, n, offset = args
            sem = asyncio.Semaphore(100)

            async def one(i: int) -> tuple[RawClient | None, bool]:
                slow = (offset + i) % SLOW_EVERY == 0
                async with sem:
                    return await open_soak_client(port, token, None, slow), slow

            res = await asyncio.gather(*(one(i) for i in range(n)))
            clients = [(c, s) for c, s in res if c is not None]
            churn = asyncio.create_task(churner())
            conn.send(len(clients))
        elif cmd == "stats":
            alive = sum(1 for c, _ in clients if not c.closed)
            lamps = stats["lamps_done"] + sum(c.lamps for c, _ in clients)
            conn.send({**stats, "alive": alive, "lamps": lamps})
        elif cmd == "quit":
            if churn is not None:
                churn.cancel()
            for c, _ in clients:
                if c.transport:
                    c.transport.close()
            conn.send(None)
            return


# -- traffic -------------------------------------------------------------------------------------

class Office:
    """Call scenarios on `devices` TAPI lines, written to one bridge connection."""

    def __init__(self, w: asyncio.StreamWriter, devices: int, calls_per_minute: float,
                 sent: dict[str, float]) -> None:
        self.w, self.devices = w, devices
        self.rate = calls_per_minute / 60.0
        self.sent = sent  # caller id of a ringing call -> when its offering line was written
        self.busy: set[int] = set()
        self.n = 0
        self.lines = 0
        self.calls = 0
        self.rng = random.Random(1)

    def line(self, d: int, call: str, state: str, **kw) -> None:  # noqa: ANN003
        self.w.write(run.bline(device=str(1000 + d), call=call, state=state, **kw))
        self.lines += 1

    def free_device(self, but: int | None = None) -> int | None:
        free = [d for d in range(self.devices) if d not in self.busy and d != but]
        return self.rng.choice(free) if free else None

    async def incoming(self, d: int) -> None:
        rng = self.rng
        self.n += 1
        call, caller = f"s{self.n}", f"0301{self.n:07d}"
        self.sent[caller] = time.perf_counter()
        self.line(d, call, "offering", caller=caller, caller_name="Customer")
        await asyncio.sleep(rng.uniform(2, 8))
        if rng.random() < 0.2:  # missed
            self.line(d, call, "disconnected")
            return
        self.line(d, call, "connected", caller=caller)
        await asyncio.sleep(rng.uniform(5, 30))
        if rng.random() < 0.3:  # on hold for a while
            self.line(d, call, "onhold")
            await asyncio.sleep(rng.uniform(2, 10))
            self.line(d, call, "connected")
            await asyncio.sleep(rng.uniform(3, 15))
        if rng.random() < 0.2:  # transferred to a colleague: ends here, rings there
            to = self.free_device(but=d)
            self.line(d, call, "disconnected")
            if to is not None:
                self.busy.add(to)
                try:
                    self.n += 1
                    tcall = f"s{self.n}"
                    self.sent[caller + "t"] = time.perf_counter()
                    self.line(to, tcall, "offering", caller=caller + "t")
                    await asyncio.sleep(rng.uniform(2, 6))
                    self.line(to, tcall, "connected", caller=caller + "t")
                    await asyncio.sleep(rng.uniform(5, 20))
                    self.line(to, tcall, "disconnected")
                finally:
                    self.busy.discard(to)
            return
        self.line(d, call, "disconnected")

    async def outgoing(self, d: int) -> None:
        rng = self.rng
        self.n += 1
        call = f"s{self.n}"
        self.line(d, call, "dialing")
        await asyncio.sleep(rng.uniform(1, 3))
        self.line(d, call, "ringback", called=f"0302{self.n:07d}")
        await asyncio.sleep(rng.uniform(2, 8))
        if rng.random() < 0.25:  # nobody answers
            self.line(d, call, "disconnected")
            return
        self.line(d, call, "connected", called=f"0302{self.n:07d}")
        await asyncio.sleep(rng.uniform(5, 30))
        self.line(d, call, "disconnected")

    async def call(self, d: int) -> None:
        self.busy.add(d)
        self.calls += 1
        try:
            await (self.incoming(d) if self.rng.random() < 0.6 else self.outgoing(d))
        finally:
            self.busy.discard(d)

    async def run(self) -> None:
        tasks: set[asyncio.Task] = set()
        try:
            while True:
                await asyncio.sleep(self.rng.expovariate(self.rate))
                d = self.free_device()
                if d is None:
                    continue
                t = asyncio.create_task(self.call(d))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
        finally:
            for t in tasks:
                t.cancel()


class Probe(RawClient):
    """Bridge line -> ringing lamp latency, matched by the caller number."""

    def __init__(self, *args, sent: dict[str, float], lat: list[float], **kw) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kw)
        self.sent, self.lat = sent, lat

    def _track(self, buf: bytearray, start: int, end: int) -> None:
        now = time.perf_counter()
        if buf.find(b'"lamp":"ringing"', start, end) < 0:
            return
        r = buf.find(b'"remote":"', start, end)
        if r < 0:
            return
        t0 = self.sent.pop(bytes(buf[r + 10:buf.index(b'"', r + 10)]).decode(), None)
        if t0 is not None:
            self.lat.append(now - t0)


# -- sampling ----------------------------------------------------------------------------------

def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def redis_info(sock: str) -> tuple[int, int]:
    """(used_memory bytes, change-log length) from the embedded Redis."""
    import redis

    r = redis.Redis(unix_socket_path=sock, decode_responses=True)
    try:
        return int(r.info("memory")["used_memory"]), int(r.xlen("{blf}:log"))
    finally:
        r.close()


def slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


async def password_login(port: int) -> bool:
    import websockets

    async with websockets.connect(f"ws://{HOST}:{port}/ws", compression=None) as ws:
        await ws.send(json.dumps({"type": "login", "id": 1, "client": "watcher",
                                  "password": run.PASSWORD}))
        return json.loads(await ws.recv()).get("type") == "welcome"


async def soak(args: argparse.Namespace) -> int:
    run.raise_nofile()
    run.MEMBERS = args.devices
    tmp = Path(tempfile.mkdtemp(prefix="blf-soak-"))
    server = run.Server(tmp, "gateway", "soak", members=args.devices)
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for i in range(2):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=soak_worker_main, args=(child, i), daemon=True)
        p.start()
        pipes.append(parent)
        procs.append(p)
    loop = asyncio.get_running_loop()

    async def call(*cmds: tuple) -> list:
        for c, cmd in zip(pipes, cmds):
            c.send(cmd)
        return list(await asyncio.gather(*(loop.run_in_executor(None, c.recv) for c in pipes)))

    rows: list[dict] = []
    try:
        token = await run.get_token(server)
        _, w = await asyncio.open_connection(HOST, server.bridge)
        w.write(b"".join(run.bline(device=str(1000 + d), devstate="inservice")
                         for d in range(args.devices)))
        await w.drain()
        # The change log starts at its cap (as after days of service), so Redis memory can
        # be flat from the first minute: rounds of one change per device until it is full.
        from gateway.store import LOG_MAXLEN

        t0 = time.monotonic()
        k = 0
        while (have := redis_info(server.redis_socket)[1]) < LOG_MAXLEN:
            if k % 400 == 0:
                print(f"[soak] filling the change log: {have}", flush=True)
            for _ in range(20):
                k += 1
                w.write(b"".join(
                    run.bline(device=str(1000 + d), call=f"p{(k + 1) // 2}",
                              state="offering" if k % 2 else "disconnected", caller="1")
                    for d in range(args.devices)))
                await w.drain()
                await asyncio.sleep(0.01)
        print(f"[soak] change log filled to its cap ({LOG_MAXLEN}) in "
              f"{time.monotonic() - t0:.1f} s", flush=True)
        if k % 2:  # end the last prefill calls: every line idle
            w.write(b"".join(run.bline(device=str(1000 + d), call=f"p{(k + 1) // 2}",
                                       state="disconnected") for d in range(args.devices)))
        n = args.clients - 1  # and the probe
        half = n // 2
        t0 = time.monotonic()
        got = await call(("start", server.ws, token, half, 0), ("start", server.ws, token,
                                                                  n - half, half))
        print(f"[soak] {sum(got) + 1} clients connected in {time.monotonic() - t0:.1f} s "
              f"({(sum(got) + SLOW_EVERY - 1) // SLOW_EVERY} slow); gateway pid {server.pid}",
              flush=True)
        sent: dict[str, float] = {}
        lat: list[float] = []
        login, sub = login_msgs(token, None)
        _, probe = await loop.create_connection(
            lambda: Probe(server.ws, login, sub, True, sent=sent, lat=lat), HOST, server.ws)
        await probe.ready
        office = Office(w, args.devices, args.calls_per_minute, sent)
        traffic = asyncio.create_task(office.run())
        logins_ok = logins = 0
        start = time.monotonic()
        head = (f"{'min':>4} {'load':>5} {'RSS MiB':>8} {'fds':>5} {'Redis MiB':>9} {'log len':>8} "
                f"{'lines/s':>8} {'lamps/s':>9} {'p99 ms':>7} {'alive':>6} {'reconn':>6} "
                f"{'dropped':>7} {'logins':>6}")
        print(head, flush=True)
        prev_lines, prev_lamps, prev_t = 0, 0, start
        for minute in range(1, args.minutes + 1):
            deadline = start + 60.0 * minute
            try:
                logins += 1
                logins_ok += bool(await asyncio.wait_for(password_login(server.ws), 30))
            except Exception:  # noqa: BLE001 - counted: a failed login is a finding
                pass
            while time.monotonic() < deadline:
                await asyncio.sleep(min(1.0, deadline - time.monotonic()))
                await w.drain()
            stats = await call(("stats",), ("stats",))
            now = time.monotonic()
            mem, log_len = redis_info(server.redis_socket)
            window, lat[:] = lat[:], []
            lamps = sum(s["lamps"] for s in stats) + probe.lamps
            # Calls that never showed ringing (missed by the probe) must not pile up here.
            old = time.perf_counter() - 120
            for k in [k for k, t in sent.items() if t < old]:
                del sent[k]
            row = {
                "minute": minute, "load": os.getloadavg()[0], "rss_mib": server.rss() / 1024,
                "fds": fds(server.pid), "redis_mib": mem / 2**20, "log_len": log_len,
                "lines_s": (office.lines - prev_lines) / (now - prev_t),
                "lamps_s": (lamps - prev_lamps) / (now - prev_t),
                "p99_ms": run.pct(window, 99), "samples": len(window),
                "alive": sum(s["alive"] for s in stats) + (0 if probe.closed else 1),
                "reconnects": sum(s["reconnects"] for s in stats),
                "dropped": sum(s["dropped"] for s in stats),
                "failed": sum(s["failed"] for s in stats), "logins": f"{logins_ok}/{logins}",
            }
            prev_lines, prev_lamps, prev_t = office.lines, lamps, now
            rows.append(row)
            print(f"{minute:>4} {row['load']:>5.2f} {row['rss_mib']:>8.1f} {row['fds']:>5} "
                  f"{row['redis_mib']:>9.2f} {log_len:>8} {row['lines_s']:>8.1f} "
                  f"{row['lamps_s']:>9.0f} {row['p99_ms']:>7.2f} {row['alive']:>6} "
                  f"{row['reconnects']:>6} {row['dropped']:>7} {row['logins']:>6}", flush=True)
        traffic.cancel()
        await asyncio.gather(traffic, return_exceptions=True)
        probe.transport.close()
        w.close()
    finally:
        try:
            await asyncio.wait_for(call(("quit",), ("quit",)), 20)
        except Exception:  # noqa: BLE001
            pass
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
        server.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return report(rows, args)


# What "flat" means, per figure: growth over the measured part of the run, from the slope.
LIMITS = {"rss_mib": ("RSS", 5.0, "MiB"), "fds": ("open fds", 10.0, ""),
          "redis_mib": ("Redis used memory", 5.0, "MiB"), "p99_ms": ("latency p99", 10.0, "ms")}


def report(rows: list[dict], args: argparse.Namespace) -> int:
    skip = 2 if len(rows) > 4 else 0
    part = rows[skip:]
    print()
    print(f"soak: {args.minutes} min, {args.clients} clients (1 in {SLOW_EVERY} slow), "
          f"{args.devices} devices, ~{args.calls_per_minute:g} calls/min; slopes over minutes "
          f"{part[0]['minute'] if part else '-'}-{rows[-1]['minute'] if rows else '-'}")
    print("| figure | first | last | min | max | slope per min | over the run | flat? |")
    print("|---|---|---|---|---|---|---|---|")
    flat_all = True
    xs = [r["minute"] for r in part]
    for key, (name, limit, unit) in LIMITS.items():
        ys = [r[key] for r in part if r[key] == r[key]]  # NaN p99: a minute without samples
        if not ys:
            continue
        s = slope(xs[:len(ys)], ys)
        growth = s * max(len(ys) - 1, 1)
        flat = growth <= limit
        flat_all &= flat
        print(f"| {name} | {ys[0]:.1f} | {ys[-1]:.1f} | {min(ys):.1f} | {max(ys):.1f} | "
              f"{s:+.3f} {unit} | {growth:+.1f} {unit} (limit +{limit:g}) | "
              f"{'flat' if flat else 'GROWING'} |")
    loads = [r["load"] for r in rows]
    if rows:
        print(f"load average (1 min) during the run: {min(loads):.2f}-{max(loads):.2f}; "
              f"reconnects {rows[-1]['reconnects']}, clients closed by the gateway "
              f"{rows[-1]['dropped']}, failed reconnects {rows[-1]['failed']}, password logins "
              f"{rows[-1]['logins']}")
    print("verdict:", "everything flat" if flat_all else "NOT flat (see above)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if flat_all else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=int, default=30, help="how long (default 30)")
    ap.add_argument("--clients", type=int, default=1000, help="WebSocket clients (default 1000)")
    ap.add_argument("--devices", type=int, default=50,
                    help="TAPI lines, all on one panel every client watches (default 50)")
    ap.add_argument("--calls-per-minute", type=float, default=90.0,
                    help="new calls per minute over all lines (default 90)")
    ap.add_argument("--json", metavar="FILE", help="also write the rows here")
    ap.add_argument("--keep", action="store_true", help="keep the gateway's state dir and log")
    args = ap.parse_args()
    import signal

    def stop(*_: object) -> None:  # SIGTERM: stop the gateway and the workers on the way out
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    code = run.fast_run(soak(args))
    sys.exit(code)


if __name__ == "__main__":
    main()
