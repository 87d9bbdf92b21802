"""One command, one table: the gateway's figures, each beside a baseline measured in the same run.

    .venv/bin/python bench/run.py            # full run (about 8-10 minutes on 2 cores)
    .venv/bin/python bench/run.py --quick    # smaller N, shorter windows (under 2 minutes)
    .venv/bin/python bench/run.py --only ingest --ingest-runs 3   # one figure, three times

The gateway always runs in its own process (`python -m gateway run --config FILE`, embedded
Redis, uvloop, fd limit raised by a small wrapper); the baselines are a bare `websockets`
server (uvloop, `broadcast()`, the same as bench/latency.py's BASELINE_SERVER) and raw
redis-py. Clients live in two worker processes (plus one probe in this process) so that the
harness is not the bottleneck: they speak WebSocket on raw asyncio protocols and count lamp
frames with a prefix check, never parsing JSON on the hot path. Loopback only.

Figures (docs/performance.md says what each one means):

- fan-out: lamp deliveries/s at N clients watching one panel; the bridge is driven as fast as
  the server takes it (one event in flight per device, confirmed by the probe client);
- latency: bridge line -> client p50/p99 at 200 x 100 events/s and 1,000 x 20 events/s, the
  gateway and the bare server in turn on fresh servers (`--latency-pairs`, 3 pairs; the
  table takes the median of each side); scored on when the frame arrived on the client's
  socket (the kernel's receive timestamp), shown beside when this harness read it;
- ingest: bridge lines/s into Redis state (500 devices), against pipelined redis-py SETs;
- memory: KiB of gateway RSS per idle, logged-in, subscribed connection;
- reconnect: all big-N clients drop at once and come back (token login, subscribe with
  `since`): time until the last one has its snapshot;
- burst: 10,000 bridge events at once (a PBX reload): time until every client shows the
  final state, request round trips during it, RSS before/after (twice, to see growth stop);
- AMI: a burst from the Asterisk test peer (2,000 devices ringing at once) into Redis state,
  against pipelined SETs and the pure parser + translator (bench/ami_redis.py);
- scale-out: fan-out and ingest with 1, 2 and 3 gateway processes on one Redis
  (bench/scale.py).

`--only PART ...` runs some of them (websocket, ingest, ami, scale); `--quick` runs the
WebSocket figures and ingest unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MEMBERS = 50  # panel members for fan-out, latency, memory, reconnect, burst
INGEST_DEVICES = 500
# What a run measures (--only picks some): the WebSocket figures against the bare server,
# bridge ingest, AMI ingest, and 1/2/3 gateway processes on one Redis.
PARTS = ("websocket", "ingest", "ami", "scale")
QUICK_PARTS = ("websocket", "ingest")  # --quick without --only
AMI_DEVICES = 2000
PANEL = "board"
PASSWORD = "bench-password"
HOST = "127.0.0.1"


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


RLIMIT_PRELUDE = (
    "import resource\n"
    "_s, _h = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (_h if _h != resource.RLIM_INFINITY else 65536, _h))\n"
)
GATEWAY_WRAPPER = RLIMIT_PRELUDE + "import runpy\nrunpy.run_module('gateway', run_name='__main__')\n"


def fast_run(main):  # noqa: ANN001, ANN201
    """Run the coroutine `main` on uvloop where it is installed (as the gateway runs), else
    on asyncio; its result."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc; 0 where unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def listen_overflows() -> int:
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
        for head, vals in zip(lines[::2], lines[1::2]):
            if head.startswith("TcpExt:"):
                return int(dict(zip(head.split()[1:], vals.split()[1:]))["ListenOverflows"])
    except (OSError, KeyError, ValueError):
        pass
    return -1


BENCH_LIMITS = ("client_messages_per_second = 1000000\nclient_message_burst = 2000000\n"
                "max_connections_per_address = 100000\n")


def gateway_config(ws: int, bridge: int, members: int) -> str:
    from gateway.auth import hash_password

    pw = hash_password(PASSWORD, n=2**12)
    # The benchmark's clients are thousands of sessions of one client (`watcher`) from one
    # address: the per-client and per-address limits, sized for people, are lifted.
    out = [f'[server]\nlisten = "{HOST}:{ws}"\nmessages_per_second = 1000\nmessage_burst = 2000\n'
           'login_attempts_per_minute = 10000000\n' + BENCH_LIMITS,
           '[state]\ndir = "state"\n', f'[sources.tapi_bridge]\nlisten = "{HOST}:{bridge}"\n']
    for i in range(members):
        out.append(f'[[devices]]\nid = "{1000 + i}"\nnumber = "{1000 + i}"\n')
    for i in range(members):
        out.append(f'[[clients]]\nname = "m{i}"\ndevices = ["{1000 + i}"]\n')
    out.append(f'[[clients]]\nname = "watcher"\npassword_hash = "{pw}"\n')
    names = json.dumps([f"m{i}" for i in range(members)] + ["watcher"])
    out.append(f'[[groups]]\nname = "{PANEL}"\nmembers = {names}\nrights = {{ numbers = "all" }}\n')
    return "\n".join(out)


class Server:
    """The gateway (kind "gateway") or the bare websockets baseline (kind "raw"), own process."""

    def __init__(self, tmp: Path, kind: str, name: str, members: int = MEMBERS) -> None:
        self.kind, self.members = kind, members
        self.dir = tmp / name
        self.dir.mkdir()
        self.ws, self.bridge = free_port(), free_port()
        self.log = self.dir / "server.log"
        if kind == "gateway":
            cfg = self.dir / "bench.toml"
            cfg.write_text(gateway_config(self.ws, self.bridge, members))
            cmd = [sys.executable, "-c", GATEWAY_WRAPPER, "run", "--config", str(cfg),
                   "--log-level", "warning"]
        else:
            from latency import BASELINE_SERVER

            script = self.dir / "baseline.py"
            script.write_text(RLIMIT_PRELUDE + BASELINE_SERVER)
            cmd = [sys.executable, str(script), str(self.ws), str(self.bridge)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.ws)
        wait_port(self.bridge)
        self.pid = self.proc.pid

    @property
    def gw(self) -> bool:
        return self.kind == "gateway"

    @property
    def redis_socket(self) -> str:
        return str(self.dir / "state" / "redis.sock")

    def rss(self) -> int:
        return rss_kib(self.pid)

    def healthz(self) -> dict:
        with urllib.request.urlopen(f"http://{HOST}:{self.ws}/healthz", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------------------------------
# A cheap WebSocket client: raw asyncio protocol, frames parsed by hand, lamp frames counted by
# a prefix check. Server frames are unmasked; ours are masked with a zero key (allowed).

HANDSHAKE = ("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n")
LAMP = b'{"type":"lamp"'
LAMPS = b'{"type":"lamps"'


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


class RawClient(asyncio.Protocol):
    """login is None for the baseline server (it has no protocol: open = ready)."""

    def __init__(self, port: int, login: dict | None, subscribe: dict | None,
                 track: bool = False, on_lamp=None) -> None:  # noqa: ANN001
        self.port, self.login, self.subscribe = port, login, subscribe
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.buf = bytearray()
        self.upgraded = False
        self.lamps = 0
        self.track = track
        self.on_lamp = on_lamp
        self.last: dict[bytes, tuple[bytes, bytes | None]] = {}
        self.transport: asyncio.Transport | None = None
        self.error: str | None = None
        self.closed = False

    def connection_made(self, transport) -> None:  # noqa: ANN001
        self.transport = transport
        transport.write(HANDSHAKE.format(port=self.port).encode())

    def connection_lost(self, exc) -> None:  # noqa: ANN001
        self.closed = True
        if not self.ready.done():
            self.error = self.error or f"connection lost: {exc}"
            self.ready.set_result(False)

    def send(self, msg: dict) -> None:
        self.transport.write(ws_frame(json.dumps(msg).encode()))

    def _done(self, ok: bool, why: str | None = None) -> None:
        if not self.ready.done():
            self.error = why
            self.ready.set_result(ok)

    def _reply(self, payload: bytes) -> None:
        msg = json.loads(payload)
        t = msg.get("type")
        if t == "welcome":
            self.send(self.subscribe)
        elif t == "snapshot":
            self._done(True)
        elif t == "error":
            self._done(False, f"{msg.get('code')}: {msg.get('message')}")

    def _track(self, buf: bytearray, start: int, end: int) -> None:
        i = buf.find(b'"member":"', start, end)
        if i < 0:
            return
        i += 10
        j = buf.index(b'"', i)
        member = bytes(buf[i:j])
        k = buf.index(b'"lamp":"', j) + 8
        lamp = bytes(buf[k:buf.index(b'"', k)])
        r = buf.find(b'"remote":"', k, end)
        remote = bytes(buf[r + 10:buf.index(b'"', r + 10)]) if r >= 0 else None
        if self.track:
            self.last[member] = (lamp, remote)
        if self.on_lamp is not None:
            self.on_lamp(member, lamp)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self._done(False, bytes(buf[:i]).decode(errors="replace").splitlines()[0])
                self.transport.close()
                return
            del buf[:i + 4]
            self.upgraded = True
            if self.login is None:
                self._done(True)
            else:
                self.send(self.login)
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b1 = buf[pos + 1] & 0x7F
            if b1 < 126:
                hl, ln = 2, b1
            elif b1 == 126:
                if n - pos < 4:
                    break
                hl, ln = 4, (buf[pos + 2] << 8) | buf[pos + 3]
            else:
                if n - pos < 10:
                    break
                hl, ln = 10, int.from_bytes(buf[pos + 2:pos + 10], "big")
            end = pos + hl + ln
            if end > n:
                break
            op = buf[pos] & 0x0F
            start = pos + hl
            if op == 1:
                if buf.startswith(LAMPS, start):  # several changes in one frame
                    self.lamps += buf.count(LAMP + b",", start, end)
                elif buf.startswith(LAMP, start):
                    self.lamps += 1
                    if self.track or self.on_lamp is not None:
                        self._track(buf, start, end)
                else:
                    self._reply(bytes(buf[start:end]))
            elif op == 9:
                self.transport.write(ws_frame(bytes(buf[start:end]), 0xA))
            elif op == 8:
                self.transport.close()
            pos = end
        if pos:
            del buf[:pos]


def login_msgs(token: str | None, since: int | None,
               batch: bool = False) -> tuple[dict | None, dict | None]:
    if token is None:
        return None, None
    sub: dict = {"type": "subscribe", "id": 2, "panel": PANEL}
    if since is not None:
        sub["since"] = since
    login = {"type": "login", "id": 1, "client": "watcher", "token": token}
    if batch:
        login["batch"] = True
    return login, sub


FAILURES: dict[str, int] = {}  # reasons of failed attempts (also those a retry fixed)


async def open_client(port: int, token: str | None, since: int | None = None,
                      track: bool = False, on_lamp=None, tries: int = 3,
                      batch: bool = False) -> RawClient | str:  # noqa: ANN001
    loop = asyncio.get_running_loop()
    login, sub = login_msgs(token, since, batch)
    why = "?"
    for _ in range(tries):
        try:
            _, c = await asyncio.wait_for(loop.create_connection(
                lambda: RawClient(port, login, sub, track, on_lamp), HOST, port), 60)
            if await asyncio.wait_for(c.ready, 60):
                return c
            why = c.error or "refused"
            c.transport.close()
        except (OSError, asyncio.TimeoutError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        FAILURES[why] = FAILURES.get(why, 0) + 1
    return why


async def open_many(port: int, n: int, token: str | None, since: int | None, concurrency: int | None,
                    track: bool, batch: bool = False) -> tuple[list[RawClient], list[str]]:
    sem = asyncio.Semaphore(concurrency or n or 1)

    async def one():  # noqa: ANN202
        async with sem:
            return await open_client(port, token, since, track, batch=batch)

    res = await asyncio.gather(*(one() for _ in range(n)))
    return [c for c in res if isinstance(c, RawClient)], [c for c in res if isinstance(c, str)]


# -- worker processes ----------------------------------------------------------------------------

def worker_main(conn, wid: int) -> None:  # noqa: ANN001
    raise_nofile()
    fast_run(worker_async(conn))


async def worker_async(conn) -> None:  # noqa: ANN001
    loop = asyncio.get_running_loop()
    clients: list[RawClient] = []
    track = False
    while True:
        cmd, *args = await loop.run_in_executor(None, conn.recv)
        if cmd == "quit":
            for c in clients:
                if c.transport:
                    c.transport.close()
            conn.send(None)
            return
        if cmd == "connect":
            port, n, token, since, *rest = args
            batch = bool(rest and rest[0])
            t0 = time.monotonic()
            FAILURES.clear()
            new, errors = await open_many(port, n, token, since, 100, track, batch)
            clients += new
            conn.send((len(new), errors[:3], len(errors), time.monotonic() - t0, dict(FAILURES)))
        elif cmd == "counts":
            conn.send((time.monotonic(), sum(c.lamps for c in clients),
                       sum(1 for c in clients if not c.closed)))
        elif cmd == "track":
            track = args[0]
            for c in clients:
                c.track = track
                c.last = {}
            conn.send(None)
        elif cmd == "check":
            expected = args[0]
            good = sum(1 for c in clients
                       if all(c.last.get(m) == v for m, v in expected.items()))
            conn.send((good, len(clients)))
        elif cmd == "close":
            for c in clients:
                if c.transport:
                    c.transport.close()
            clients = []
            await asyncio.sleep(0.2)
            conn.send(None)
        elif cmd == "reconnect":
            port, token, since = args
            n = len(clients)
            t0 = time.monotonic()
            for c in clients:
                c.transport.close()
            FAILURES.clear()
            clients, errors = await open_many(port, n, token, since, None, track)
            conn.send((len(clients), errors[:3], len(errors), time.monotonic() - t0, dict(FAILURES)))


class Workers:
    def __init__(self, n: int = 2) -> None:
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for i in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=worker_main, args=(child, i), daemon=True)
            p.start()
            self.conns.append(parent)
            self.procs.append(p)

    async def call(self, *cmds: tuple) -> list:
        """One command per worker (a single command goes to all)."""
        if len(cmds) == 1:
            cmds = cmds * len(self.conns)
        for c, cmd in zip(self.conns, cmds):
            c.send(cmd)
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(None, c.recv) for c in self.conns)))

    async def connect(self, port: int, n: int, token: str | None, since: int | None = None,
                      batch: bool = False) -> int:
        k = len(self.conns)
        parts = [n // k + (1 if i < n % k else 0) for i in range(k)]
        res = await self.call(*[("connect", port, p, token, since, batch) for p in parts])
        failed = sum(r[2] for r in res)
        if failed:
            print(f"  ! {failed} client(s) failed to connect: {res[0][1] or res[-1][1]}", flush=True)
        self.retried = merge_failures(res)
        if self.retried:
            print(f"  ! failed attempts (retried up to 3 times): {self.retried}", flush=True)
        return sum(r[0] for r in res)

    async def counts(self) -> tuple[float, int, int]:
        res = await self.call(("counts",))
        return max(r[0] for r in res), sum(r[1] for r in res), sum(r[2] for r in res)

    async def quit(self) -> None:
        try:
            await asyncio.wait_for(self.call(("quit",)), 10)
        except Exception:
            pass
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()


def merge_failures(res: list) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in res:
        for k, v in r[4].items():
            out[k] = out.get(k, 0) + v
    return out


# -- the bridge driver -------------------------------------------------------------------------

def bline(**kw) -> bytes:  # noqa: ANN003
    return json.dumps(kw, separators=(",", ":")).encode() + b"\n"


class Driver:
    """Feeds bridge events as fast as the server takes them: one event in flight per device,
    the next one for a device sent when the probe client has seen the previous one's lamp."""

    def __init__(self, server: Server, tag: str) -> None:
        self.server, self.tag = server, tag
        self.ready: deque[int] = deque(range(MEMBERS))
        self.expect: dict[bytes, tuple[int, bytes]] = {}
        self.ringing: dict[int, str] = {}
        self.wake = asyncio.Event()
        self.sent = 0
        self.n = 0
        self.running = False
        self.probe: RawClient | None = None

    def on_lamp(self, member: bytes, lamp: bytes) -> None:
        exp = self.expect.get(member)
        if exp is not None and exp[1] == lamp:
            del self.expect[member]
            self.ready.append(exp[0])
            self.wake.set()

    async def open(self, token: str | None) -> None:
        _, self.w = await asyncio.open_connection(HOST, self.server.bridge)
        if self.server.gw:  # the bare baseline knows call lines only
            self.w.write(b"".join(bline(device=str(1000 + d), devstate="inservice")
                                  for d in range(MEMBERS)))
            await self.w.drain()
            await asyncio.sleep(0.5)
        probe = await open_client(self.server.ws, token, on_lamp=self.on_lamp)
        if not isinstance(probe, RawClient):
            raise RuntimeError(f"probe client: {probe}")
        self.probe = probe
        await asyncio.sleep(0.3)

    def _line(self, d: int) -> tuple[bytes, bytes]:
        dev = str(1000 + d)
        if d in self.ringing:
            call = self.ringing.pop(d)
            return bline(device=dev, call=call, state="disconnected"), b"idle"
        self.n += 1
        call = f"{self.tag}{self.n}"
        self.ringing[d] = call
        return bline(device=dev, call=call, state="offering", caller=call), b"ringing"

    async def run(self, settle: bool = False) -> None:
        """Until stop(); with settle, only until every device is idle again."""
        self.running = True
        while self.running:
            out = []
            while self.ready:
                d = self.ready.popleft()
                if settle and d not in self.ringing:
                    continue
                line, lamp = self._line(d)
                self.expect[f"m{d}".encode()] = (d, lamp)
                out.append(line)
            if out:
                self.sent += len(out)
                self.w.write(b"".join(out))
                await self.w.drain()
            elif settle and not self.ringing and not self.expect:
                break
            else:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), 5)
                except asyncio.TimeoutError:
                    print(f"  ! driver stalled ({len(self.expect)} lamps not seen)", flush=True)
                    for m, (d, _) in list(self.expect.items()):
                        del self.expect[m]
                        self.ready.append(d)
        self.running = False

    def stop(self) -> None:
        self.running = False
        self.wake.set()

    async def settle(self) -> None:
        """After run(): wait for the lamps in flight, then end every ringing call."""
        deadline = time.monotonic() + 10
        while self.expect and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.expect.clear()
        self.ready = deque(range(MEMBERS))
        await self.run(settle=True)
        self.ready = deque(range(MEMBERS))


async def fanout(server: Server, workers: Workers, driver: Driver, n: int, warm: float,
                 window: float) -> dict:
    task = asyncio.create_task(driver.run())
    await asyncio.sleep(warm)
    t0, c0, _ = await workers.counts()
    p0, s0 = driver.probe.lamps, driver.sent
    await asyncio.sleep(window)
    t1, c1, alive = await workers.counts()
    p1, s1 = driver.probe.lamps, driver.sent
    driver.stop()
    await task
    await driver.settle()
    dt = t1 - t0
    rss = server.rss()
    return {"n": n, "deliveries_s": ((c1 - c0) + (p1 - p0)) / dt, "events_s": (s1 - s0) / dt,
            "alive": alive + 1, "rss_kib": rss}


# -- latency (the Harness approach of bench/latency.py, clients log in with a token) ------------

# Linux's SO_TIMESTAMPNS / SCM_TIMESTAMPNS (the `socket` module does not name them): with it,
# each read returns the time the kernel queued the data on the client's socket. On loopback
# that is when the server's send() handed it over, which is when a client on its own machine
# would have it on the wire. One harness process reads all the clients of a run (about 20 µs
# a frame, the same for both servers), so the time it gets round to a socket is its own queue:
# the 200th client of an event is read 4 ms after the first one. The arrival time leaves that
# queue out; the read time keeps it, and both are reported.
SO_TIMESTAMPNS = 35
# The arrival time is taken at every STAMP_EVERY-th client (in the order they subscribed,
# which is the gateway's fan-out order; the bare server's is its set's): recvmsg and its
# ancillary data, read in Python, cost the harness about 25% more CPU a frame than uvloop's
# own reads, and at 1,000 clients that extra CPU made the harness's read time worse for
# both servers (29-34 -> 34-39 ms at p99). A quarter of the clients is 40,000 arrival
# samples in a run at 200 x 100/s and leaves the read time as it was.
STAMP_EVERY = 4


class LatencyClient(RawClient):
    """A raw client that turns each ringing/idle lamp frame into two latency samples: when
    the frame arrived on its socket (kernel receive time) and when this harness read it (the
    same cheap client for both servers, so the harness costs as little as it can)."""

    def __init__(self, *args, sent: dict, lat: dict, **kw) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kw)
        self.sent, self.lat, self.ringing = sent, lat, {}
        self.stamp: float | None = None
        self.sock: socket.socket | None = None

    def stamp_reads(self) -> None:
        """Read the socket with recvmsg from now on, to get each read's kernel timestamp
        (uvloop's own reads drop it). Writes (pongs) still go through the transport."""
        self.transport.pause_reading()
        fd = os.dup(self.transport.get_extra_info("socket").fileno())
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        asyncio.get_running_loop().add_reader(fd, self._read_stamped)

    def unstamp(self) -> None:
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def _read_stamped(self) -> None:
        try:
            data, anc, _, _ = self.sock.recvmsg(65536, 64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.unstamp()
            return
        self.stamp = None
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", raw[:16])
                self.stamp = sec + nsec * 1e-9
        self.data_received(data)

    def _track(self, buf: bytearray, start: int, end: int) -> None:
        now = time.perf_counter()
        i = buf.find(b'"member":"', start, end)
        if i < 0:
            return
        i += 10
        member = bytes(buf[i:buf.index(b'"', i)])
        if buf.find(b'"lamp":"ringing"', start, end) >= 0:
            r = buf.find(b'"remote":"', start, end)
            if r < 0:
                return
            ev = self.ringing[member] = bytes(buf[r + 10:buf.index(b'"', r + 10)]).decode()
        elif buf.find(b'"lamp":"idle"', start, end) >= 0 and member in self.ringing:
            ev = "end-" + self.ringing.pop(member)
        else:
            return
        t0 = self.sent.get(ev)
        if t0 is not None:
            self.lat["read"].append(now - t0[0])
            if self.stamp is not None:
                self.lat["arrival"].append(self.stamp - t0[1])


async def latency(server: Server, token: str | None, clients: int, rate: float, seconds: float,
                  tag: str) -> dict[str, list[float]]:
    """Latency samples (s) of one run: {"arrival": [...], "read": [...]}, one per lamp frame."""
    sent: dict[str, tuple[float, float]] = {}  # event -> (perf_counter, wall clock) at send
    lat: dict[str, list[float]] = {"arrival": [], "read": []}
    loop = asyncio.get_running_loop()
    login, sub = login_msgs(token, None)
    FAILURES.clear()
    conns: list[LatencyClient] = []
    sem = asyncio.Semaphore(100)

    async def one() -> None:
        async with sem:
            for _ in range(3):
                _, c = await loop.create_connection(
                    lambda: LatencyClient(server.ws, login, sub, True, sent=sent, lat=lat),
                    HOST, server.ws)
                if await asyncio.wait_for(c.ready, 60):
                    conns.append(c)
                    return
                FAILURES[c.error or "refused"] = FAILURES.get(c.error or "refused", 0) + 1
                c.transport.close()
            raise RuntimeError("latency client could not log in")

    await asyncio.gather(*(one() for _ in range(clients)))
    for c in conns[::STAMP_EVERY]:
        c.stamp_reads()
    _, w = await asyncio.open_connection(HOST, server.bridge)
    if server.gw:
        w.write(b"".join(bline(device=str(1000 + d), devstate="inservice")
                         for d in range(MEMBERS)))
        await w.drain()
    await asyncio.sleep(1.0)
    ringing: dict[int, str] = {}
    interval = 1.0 / rate
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < seconds:
        dev = n % MEMBERS
        if dev in ringing:
            ev = ringing.pop(dev)
            line, key = bline(device=str(1000 + dev), call=ev, state="disconnected"), "end-" + ev
        else:
            ev = ringing[dev] = f"{tag}{n}"
            line, key = bline(device=str(1000 + dev), call=ev, state="offering", caller=ev), ev
        sent[key] = (time.perf_counter(), time.time())
        w.write(line)
        n += 1
        delay = start + n * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.sleep(1.0)
    w.close()
    for c in conns:
        c.unstamp()
        c.transport.close()
    await asyncio.sleep(0.5)
    return lat


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))] * 1000 if values else float("nan")


# -- ingest ------------------------------------------------------------------------------------

async def wait_stored(r, keys: list[str], want: list[str], t0: float) -> None:  # noqa: ANN001
    """Poll Redis until each of `keys` holds its `want` text (the final states of an ingest
    run), at most 120 s after `t0` (perf_counter)."""
    while True:
        vals = await r.mget(keys)
        if all(v is not None and x in v for v, x in zip(vals, want)):
            return
        if time.perf_counter() - t0 > 120:
            raise RuntimeError("ingest: final states not stored within 120 s")
        await asyncio.sleep(0.002)


async def baseline_sets(r, n: int, devices: int) -> float:  # noqa: ANN001
    """The ingest baseline: seconds to SET `n` device-state values (over `devices` keys)
    through redis-py, pipelined 1,000 at a time."""
    value = "1 " + '{"s":"ok","c":[["1000/i0x0","in","ringing",1700000000.123,"555",null,null]]}'
    t0 = time.perf_counter()
    for i in range(0, n, 1000):
        pipe = r.pipeline(transaction=False)
        for j in range(i, min(n, i + 1000)):
            pipe.set(f"bench:{j % devices}", value)
        await pipe.execute()
    return time.perf_counter() - t0


async def ingest(server: Server, lines: int) -> dict:
    import redis.asyncio as aioredis

    r = aioredis.Redis(unix_socket_path=server.redis_socket, decode_responses=True)
    _, w = await asyncio.open_connection(HOST, server.bridge)
    w.write(b"".join(bline(device=str(1000 + d), devstate="inservice")
                     for d in range(INGEST_DEVICES)))
    await w.drain()
    await asyncio.sleep(1.0)
    # Each device: offering c, disconnected c, offering c+1, ...: every line changes its state.
    per_dev = lines // INGEST_DEVICES
    out = []
    final: dict[int, str] = {}
    for k in range(per_dev):
        for d in range(INGEST_DEVICES):
            call = f"i{d}x{k // 2}"
            if k % 2 == 0:
                out.append(bline(device=str(1000 + d), call=call, state="offering", caller="555"))
            else:
                out.append(bline(device=str(1000 + d), call=call, state="disconnected"))
            final[d] = call
    if per_dev % 2 == 0:  # end on a ringing call, so the final state differs from the start
        for d in range(INGEST_DEVICES):
            call = f"i{d}x{per_dev}"
            out.append(bline(device=str(1000 + d), call=call, state="offering", caller="555"))
            final[d] = call
    blob = b"".join(out)
    keys = [f"{{blf}}:dev:{1000 + d}" for d in range(INGEST_DEVICES)]
    want = [f'"{1000 + d}/{final[d]}"' for d in range(INGEST_DEVICES)]
    seq0 = int(await r.get("{blf}:seq") or 0)
    cpu0 = cpu_seconds(server.pid)
    t0 = time.perf_counter()
    w.write(blob)
    await w.drain()
    t_sent = time.perf_counter() - t0
    await wait_stored(r, keys, want, t0)
    gw_s = time.perf_counter() - t0
    cpu = cpu_seconds(server.pid) - cpu0
    seq1 = int(await r.get("{blf}:seq") or 0)
    w.close()
    n = len(out)
    base_s = await baseline_sets(r, n, INGEST_DEVICES)
    await r.aclose()
    return {"lines": n, "gw_rate": n / gw_s, "gw_s": gw_s, "sent_s": t_sent,
            "published": seq1 - seq0, "base_rate": n / base_s, "cpu_us": cpu / n * 1e6}


# -- burst -------------------------------------------------------------------------------------

async def request_rtts(server: Server, token: str, stop: asyncio.Event) -> list[float]:
    """A logged-in client sending a cheap request every 10 ms; the reply round trips."""
    import websockets

    rtts: list[float] = []
    async with websockets.connect(f"ws://{HOST}:{server.ws}/ws", compression=None,
                                  max_size=2**22) as ws:
        await ws.send(json.dumps({"type": "login", "id": 0, "client": "watcher", "token": token}))
        await ws.recv()
        i = 0
        while not stop.is_set():
            i += 1
            t0 = time.perf_counter()
            await ws.send(json.dumps({"type": "unsubscribe", "id": i, "panel": PANEL}))
            while json.loads(await ws.recv()).get("id") != i:
                pass
            rtts.append(time.perf_counter() - t0)
            await asyncio.sleep(0.01)
    return rtts


async def burst(server: Server, workers: Workers, driver: Driver, token: str, events: int,
                tag: str, timeout: float) -> dict:
    await workers.call(("track", True))
    driver.probe.track = True
    driver.probe.last = {}
    rss0 = server.rss()
    per_dev = events // MEMBERS  # even: pairs
    out = []
    expected: dict[bytes, tuple[bytes, bytes | None]] = {}
    for k in range(per_dev // 2):
        for d in range(MEMBERS):
            dev, call = str(1000 + d), f"{tag}{d}x{k}"
            out.append(bline(device=dev, call=call, state="offering", caller=call))
            last = k == per_dev // 2 - 1
            out.append(bline(device=dev, call=call, state="connected" if last else "disconnected"))
            if last:
                expected[f"m{d}".encode()] = (b"busy", call.encode())
    stop = asyncio.Event()
    prober = asyncio.create_task(request_rtts(server, token, stop))
    await asyncio.sleep(0.2)
    t0 = time.perf_counter()
    driver.w.write(b"".join(out))
    await driver.w.drain()
    good = total = 0
    while time.perf_counter() - t0 < timeout:
        res = await workers.call(("check", expected))
        good, total = sum(r[0] for r in res), sum(r[1] for r in res)
        pgood = all(driver.probe.last.get(m) == v for m, v in expected.items())
        if good == total and pgood:
            break
        await asyncio.sleep(0.1)
    done_s = time.perf_counter() - t0
    stop.set()
    rtts = await prober
    await asyncio.sleep(1.0)
    rss1 = server.rss()
    await workers.call(("track", False))
    driver.probe.track = False
    # the next driver events start from idle lamps again
    for d in range(MEMBERS):
        driver.w.write(bline(device=str(1000 + d), call=f"{tag}{d}x{per_dev // 2 - 1}",
                             state="disconnected"))
    await driver.w.drain()
    await asyncio.sleep(0.5)
    return {"lines": len(out), "done_s": done_s, "good": good + int(pgood), "clients": total + 1,
            "rss0": rss0, "rss1": rss1, "rtt_max": max(rtts) * 1000 if rtts else float("nan"),
            "rtt_p99": pct(rtts, 99), "rtts": len(rtts)}


# -- the run -----------------------------------------------------------------------------------

async def get_token(server: Server) -> str:
    import websockets

    async with websockets.connect(f"ws://{HOST}:{server.ws}/ws", compression=None) as ws:
        await ws.send(json.dumps({"type": "login", "id": 1, "client": "watcher",
                                  "password": PASSWORD}))
        reply = json.loads(await ws.recv())
        assert reply["type"] == "welcome", reply
        return reply["token"]


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


async def run_all(args) -> dict:  # noqa: ANN001, C901
    raise_nofile()
    q = args.quick
    small = [200, 1000]
    big = 1000 if q else 5000
    window, warm = (2.0, 0.7) if q else (4.0, 1.0)
    lat_s = 3.0 if q else 8.0
    ingest_lines = 20000 if q else 100000
    burst_events = 10000
    res: dict = {"params": {"big": big, "window": window, "lat_s": lat_s, "ingest": ingest_lines,
                            "burst": burst_events, "quick": q}}
    workers = Workers(2)
    tmp = Path(tempfile.mkdtemp(prefix="blf-bench-"))
    servers: list[Server] = []
    parts = set(args.only or (QUICK_PARTS if q else PARTS))
    res["params"]["parts"] = sorted(parts)
    try:
        for kind in (("gateway", "raw") if "websocket" in parts else ()):
            gw = kind == "gateway"
            label = "gateway" if gw else "raw broadcast"
            # Phase 1: fan-out at 200 and 1,000, the burst, then latency.
            say(f"{label}: fan-out at {small}")
            s = Server(tmp, kind, f"{kind}-1")
            servers.append(s)
            token = await get_token(s) if gw else None
            driver = Driver(s, "f")
            await driver.open(token)
            have = 1
            for n in small:
                have += await workers.connect(s.ws, n - have, token)
                await asyncio.sleep(0.5)
                r = await fanout(s, workers, driver, n, warm, window)
                res[(kind, "fanout", n)] = r
                say(f"  N={n}: {r['deliveries_s']:,.0f} deliveries/s ({r['events_s']:,.0f} events/s,"
                    f" {r['alive']} open), RSS {r['rss_kib'] / 1024:.0f} MiB")
            if gw:
                say(f"gateway: burst of {burst_events} events to {have} clients (twice)")
                b1 = await burst(s, workers, driver, token, burst_events, "B", 60 if q else 120)
                b2 = await burst(s, workers, driver, token, burst_events, "C", 60 if q else 120)
                res["burst"] = (b1, b2)
                for b in (b1, b2):
                    say(f"  final state at {b['good']}/{b['clients']} clients after "
                        f"{b['done_s']:.2f} s; request rtt p99 {b['rtt_p99']:.1f} ms max "
                        f"{b['rtt_max']:.1f} ms; RSS {b['rss0'] / 1024:.1f} -> {b['rss1'] / 1024:.1f} MiB")
            await workers.call(("close",))
            driver.probe.transport.close()
            driver.w.close()
            s.stop()

            # Phase 2: memory with `big` idle clients, fan-out at big, reconnect.
            say(f"{label}: {big} idle clients, fan-out, reconnect")
            s = Server(tmp, kind, f"{kind}-2")
            servers.append(s)
            token = await get_token(s) if gw else None
            await asyncio.sleep(1.5)
            rss0 = s.rss()
            t0 = time.monotonic()
            have = await workers.connect(s.ws, big - 1, token)
            connect_s = time.monotonic() - t0
            await asyncio.sleep(2.0)
            rss1 = s.rss()
            res[(kind, "memory")] = {"clients": have, "rss0": rss0, "rss1": rss1,
                                     "kib": (rss1 - rss0) / max(have, 1), "connect_s": connect_s,
                                     "retried": workers.retried}
            say(f"  {have} clients connected in {connect_s:.1f} s; RSS {rss0 / 1024:.1f} -> "
                f"{rss1 / 1024:.1f} MiB = {(rss1 - rss0) / max(have, 1):.1f} KiB each")
            driver = Driver(s, "g")
            await driver.open(token)
            r = await fanout(s, workers, driver, have + 1, warm, window)
            res[(kind, "fanout-big", big)] = r
            say(f"  N={have + 1}: {r['deliveries_s']:,.0f} deliveries/s ({r['events_s']:,.0f} "
                f"events/s, {r['alive']} open)")
            since = s.healthz()["seq"] if gw else None
            ov0 = listen_overflows()
            out = await workers.call(("reconnect", s.ws, token, since))
            ov1 = listen_overflows()
            back = sum(o[0] for o in out)
            retried = merge_failures(out)
            secs = max(o[3] for o in out)
            res[(kind, "reconnect")] = {"clients": have, "back": back, "s": secs,
                                        "overflows": ov1 - ov0, "retried": retried,
                                        "errors": [e for o in out for e in o[1]]}
            say(f"  reconnect: {back}/{have} back in {secs:.2f} s (listen queue overflows "
                f"{ov1 - ov0})" + (f"; failed attempts, retried: {retried}" if retried else ""))
            await workers.call(("close",))
            driver.probe.transport.close()
            driver.w.close()
            s.stop()

        # Latency: the gateway and the bare server in turn, each run on a fresh server, so
        # that both sides of a pair see the machine in the same state (on a shared VM one
        # run's p99 moves by 1.5x from one minute to the next); the table takes the median.
        for rep in range(args.latency_pairs if "websocket" in parts else 0):
            for kind in ("gateway", "raw"):
                label = "gateway" if kind == "gateway" else "raw broadcast"
                s = Server(tmp, kind, f"latency-{kind}-{rep}")
                servers.append(s)
                token = await get_token(s) if kind == "gateway" else None
                for n, rate in ((200, 100.0), (1000, 20.0)):
                    say(f"{label}: latency {n} clients x {rate:g} events/s for {lat_s:g} s "
                        f"(pair {rep + 1} of {args.latency_pairs})")
                    both = await latency(s, token, n, rate, lat_s, f"L{rep}n{n}x")
                    lat, read = both["arrival"], both["read"]
                    res.setdefault((kind, "latency", n), []).append(lat)
                    res.setdefault((kind, "latency-read", n), []).append(read)
                    if FAILURES:
                        say(f"  ! logins refused and retried: {FAILURES}")
                        res[(kind, "latency-login-retries", n, rep)] = dict(FAILURES)
                    say(f"  {len(lat)} samples, arrival p50 {pct(lat, 50):.2f} ms, "
                        f"p99 {pct(lat, 99):.2f} ms; read by the harness p50 "
                        f"{pct(read, 50):.2f} ms, p99 {pct(read, 99):.2f} ms")
                s.stop()

        for _ in range(args.ingest_runs if "ingest" in parts else 0):
            say(f"gateway: ingest of {ingest_lines} bridge lines over {INGEST_DEVICES} devices")
            s = Server(tmp, "gateway", f"ingest-{len(res.get('ingest', []))}",
                       members=INGEST_DEVICES)
            servers.append(s)
            r = await ingest(s, ingest_lines)
            res.setdefault("ingest", []).append(r)
            say(f"  {r['lines']} lines in {r['gw_s']:.2f} s = {r['gw_rate']:,.0f}/s "
                f"({r['published']} changes published, gateway CPU {r['cpu_us']:.1f} µs a "
                f"line); redis-py SET {r['base_rate']:,.0f}/s")
            s.stop()
        if "ami" in parts:
            import ami_redis

            n = 300 if q else AMI_DEVICES
            say(f"gateway: AMI burst, {n} Asterisk devices (bench/ami_redis.py)")
            res["ami"] = r = await ami_redis.measure(n)
            say(f"  {r['events']} events in {r['burst_s']:.2f} s = {r['rate']:,.0f}/s; redis-py "
                f"SET {r['set_rate']:,.0f}/s; pure parse+translate {r['parse_rate']:,.0f}/s")
        if "scale" in parts:
            import scale

            say("gateway: 1, 2, 3 processes on one Redis (bench/scale.py)")
            ns = argparse.Namespace(processes=[1, 2, 3], clients=1000, lines=ingest_lines,
                                    warm=warm, window=window, keep=args.keep)
            res["scale"] = await scale.measure(ns, workers)
    finally:
        for s in servers:
            if s.proc.poll() is None:
                s.stop()
        await workers.quit()
        if args.keep:
            say(f"server logs kept in {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return res


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import uvloop  # noqa: F401

        uv = "uvloop yes"
    except ImportError:
        uv = "uvloop no"
    import websockets

    return (f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {uv}, "
            f"websockets {websockets.__version__}")


def median_pct(runs: list[list[float]], p: float) -> float:
    """The median over runs of each run's p-th percentile (ms)."""
    return statistics.median(pct(lat, p) for lat in runs)


def per_run(runs: list[list[float]], p: float) -> str:
    """The median, and each run's figure where there are several: "6.53 (6.2/6.5/7.1)"."""
    if len(runs) == 1:
        return f"{pct(runs[0], p):.2f}"
    return f"{median_pct(runs, p):.2f} ({'/'.join(f'{pct(lat, p):.1f}' for lat in runs)})"


def table(res: dict) -> str:
    p = res["params"]
    rows: list[tuple[str, str, str, str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("PASS" if ok else "FAIL")

    for key, n in (("fanout", 200), ("fanout", 1000), ("fanout-big", p["big"])):
        g, b = res.get(("gateway", key, n)), res.get(("raw", key, n))
        if not g or not b:
            continue
        ratio = g["deliveries_s"] / b["deliveries_s"]
        scored = key == "fanout" and n == 1000
        target = ">= 0.8x raw" if scored else ""
        where = " (2nd server)" if key == "fanout-big" else ""
        rows.append((f"fan-out deliveries/s, N={n:,}{where}", f"{g['deliveries_s']:,.0f}",
                     f"{b['deliveries_s']:,.0f}", f"{ratio:.2f}x", target,
                     verdict(ratio >= 0.8) if scored else "-"))
    for n, rate, lim in ((200, 100, 10.0), (1000, 20, 30.0)):
        g, b = res.get(("gateway", "latency", n)), res.get(("raw", "latency", n))
        if not g or not b:
            continue
        runs = f", median of {len(g)} pairs" if len(g) > 1 else ""
        for q in (50, 99):
            gq, bq = median_pct(g, q), median_pct(b, q)
            scored = q == 99
            rows.append((f"latency p{q} ms (arrival), {n:,} x {rate}/s{runs}", per_run(g, q),
                         per_run(b, q), f"{gq / bq:.2f}x",
                         f"<= {lim:g} ms, <= 1.1x raw" if scored else "",
                         verdict(gq <= lim and gq <= 1.1 * bq) if scored else "-"))
        g, b = res.get(("gateway", "latency-read", n)), res.get(("raw", "latency-read", n))
        for q in (50, 99) if g and b else ():
            gq, bq = median_pct(g, q), median_pct(b, q)
            rows.append((f"latency p{q} ms (read by the harness), {n:,} x {rate}/s",
                         per_run(g, q), per_run(b, q), f"{gq / bq:.2f}x", "", "-"))
    for i, ing in enumerate(res.get("ingest", ())):
        run_no = f", run {i + 1}" if len(res["ingest"]) > 1 else ""
        rows.append((f"ingest events/s ({ing['lines']:,} lines{run_no})", f"{ing['gw_rate']:,.0f}",
                     f"{ing['base_rate']:,.0f}", f"{ing['gw_rate'] / ing['base_rate']:.2f}x",
                     ">= 0.8x SET", verdict(ing["gw_rate"] >= 0.8 * ing["base_rate"])))
        rows.append((f"ingest: changes published, gateway CPU µs a line{run_no}",
                     f"{ing['published']:,}, {ing['cpu_us']:.1f}", "-", "", "", "-"))
    ami = res.get("ami")
    if ami:
        rows.append((f"AMI events/s ({ami['events']:,}, {ami['devices']:,} devices)",
                     f"{ami['rate']:,.0f}", f"{ami['set_rate']:,.0f}",
                     f"{ami['rate'] / ami['set_rate']:.2f}x", ">= 0.8x SET",
                     verdict(ami["rate"] >= 0.8 * ami["set_rate"])))
        rows.append(("AMI: pure parse+translate events/s", f"{ami['parse_rate']:,.0f}", "-", "",
                     "", "-"))
    g, b = res.get(("gateway", "memory")), res.get(("raw", "memory"))
    if g and b:
        rows.append((f"KiB per idle connection ({g['clients']:,})", f"{g['kib']:.1f}",
                     f"{b['kib']:.1f}", f"{g['kib'] / b['kib']:.2f}x", "<= 1.0x raw",
                     verdict(g["kib"] <= b["kib"])))
        rows.append((f"connect {g['clients']:,} clients, s", f"{g['connect_s']:.2f}",
                     f"{b['connect_s']:.2f}", f"{g['connect_s'] / b['connect_s']:.2f}x", "", "-"))
    g, b = res.get(("gateway", "reconnect")), res.get(("raw", "reconnect"))
    if g and b:
        rows.append((f"reconnect+resync {g['clients']:,}, s", f"{g['s']:.2f}", f"{b['s']:.2f}",
                     f"{g['s'] / b['s']:.2f}x", "all back",
                     verdict(g["back"] == g["clients"])))
        gr, br = sum(g["retried"].values()), sum(b["retried"].values())
        rows.append(("reconnect: refused attempts (retried)", str(gr), str(br), "", "0",
                     verdict(gr == 0)))
        rows.append(("reconnect: listen queue overflows", str(g["overflows"]), str(b["overflows"]),
                     "", "", "-"))
    if "burst" in res:
        b1, b2 = res["burst"]
        ok_state = b1["good"] == b1["clients"] and b2["good"] == b2["clients"]
        growth = (b2["rss1"] - b1["rss1"]) / 1024
        rows.append((f"burst {p['burst']:,}: clients with final state", f"{b1['good']}/{b1['clients']}"
                     f", {b2['good']}/{b2['clients']}", "-", "", "all", verdict(ok_state)))
        rows.append(("burst: s until all final", f"{b1['done_s']:.2f}, {b2['done_s']:.2f}", "-",
                     "", "", "-"))
        worst = max(b1["rtt_max"], b2["rtt_max"])
        rows.append(("burst: request rtt p99/max ms", f"{max(b1['rtt_p99'], b2['rtt_p99']):.1f}"
                     f" / {worst:.1f}", "-", "", "max <= 250", verdict(worst <= 250)))
        rows.append(("burst: RSS MiB before/1st/2nd",
                     f"{b1['rss0'] / 1024:.1f}/{b1['rss1'] / 1024:.1f}/{b2['rss1'] / 1024:.1f}", "-",
                     "", "2nd-1st <= 5 MiB", verdict(growth <= 5)))
    head = ("figure", "gateway", "baseline", "ratio", "target", "result")
    w = [max(len(r[i]) for r in rows + [head]) for i in range(6)]
    lines = ["| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(head)) + " |",
             "|" + "|".join("-" * (w[i] + 2) for i in range(6)) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller N, shorter windows (< 2 min)")
    ap.add_argument("--json", metavar="FILE", help="also write the raw figures here")
    ap.add_argument("--keep", action="store_true", help="keep the servers' state dirs and logs")
    ap.add_argument("--only", nargs="+", choices=PARTS, metavar="PART",
                    help=f"run only these parts ({', '.join(PARTS)}; default: all, "
                    f"with --quick {', '.join(QUICK_PARTS)})")
    ap.add_argument("--latency-pairs", type=int, default=None, metavar="N",
                    help="latency runs of the gateway and the bare server in turn, each on a "
                    "fresh server; the table takes the median (default 3, with --quick 1)")
    ap.add_argument("--ingest-runs", type=int, default=1, metavar="N",
                    help="repeat the ingest measurement N times, each on a fresh gateway "
                    "(default 1)")
    args = ap.parse_args()
    if args.latency_pairs is None:
        args.latency_pairs = 1 if args.quick else 3
    t0 = time.monotonic()
    load0 = os.getloadavg()[0]
    res = fast_run(run_all(args))
    p = res["params"]
    print()
    print(f"BLF gateway benchmark ({'quick' if p['quick'] else 'full'} run, "
          f"{time.monotonic() - t0:.0f} s): {machine()}")
    print(f"load average (1 min) at start {load0:.2f}, at end {os.getloadavg()[0]:.2f}: other work "
          "on the machine shows up in both columns")
    print(f"baselines: bare websockets.broadcast server (uvloop) for WebSocket figures, "
          f"pipelined redis-py SET for ingest; fan-out window {p['window']:g} s, "
          f"latency {p['lat_s']:g} s per run")
    print(table(res))
    if "scale" in res:
        import scale

        print()
        print("scale-out: 1, 2, 3 gateway processes on one Redis (bench/scale.py); CPU in % of "
              "one core during each measurement")
        print(scale.table(*res["scale"]))
    if args.json:
        out = {(" ".join(map(str, k)) if isinstance(k, tuple) else k): v for k, v in res.items()}
        for k, v in list(out.items()):
            if isinstance(v, list) and v and isinstance(v[0], list):  # latency runs
                out[k] = [{"samples": len(r), "p50_ms": pct(r, 50), "p99_ms": pct(r, 99)}
                          for r in v]
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
