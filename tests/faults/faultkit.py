"""What every fault test needs: a gateway configuration, an honest watcher that measures
what a user would notice (frame latency, time to exact lamps), and process helpers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

from conftest import HASH, PATIENCE, login

# Devices 201-203 are people's lines; 299 is the probe line the honest watcher times.
CONFIG = """
[server]
listen = "127.0.0.1:{ws_port}"
{server_extra}
{redis}
[state]
dir = "state"

[sources.tapi_bridge]
listen = "127.0.0.1:{bridge_port}"

[journal]
{journal_extra}

[[devices]]
id = "201"
number = "201"
line = "Line 201"
journal = true
[[devices]]
id = "202"
number = "202"
line = "Line 202"
journal = true
[[devices]]
id = "203"
number = "203"
line = "Line 203"
[[devices]]
id = "299"
number = "299"
line = "Line 299"

[[clients]]
name = "alice"
devices = ["201"]
password_hash = "{hash}"
offline_monitor = true
[[clients]]
name = "bob"
devices = ["202"]
password_hash = "{hash}"
journal = "rw"
[[clients]]
name = "carol"
devices = ["203"]
password_hash = "{hash}"
journal = "r"
[[clients]]
name = "probe"
type = "nologin"
devices = ["299"]

[[groups]]
name = "office"
members = ["alice", "bob", "carol", "probe"]
rights = {{ numbers = "all" }}
"""


def config(redis_url: str | None = None, bridge_port: int = 0, server_extra: str = "",
           journal_extra: str = "", ws_port: int = 0) -> str:
    """The fault tests' office; `redis_url` None: embedded Redis; port 0: any free one."""
    redis = f'[redis]\nurl = "{redis_url}"\n' if redis_url else ""
    return CONFIG.format(redis=redis, bridge_port=bridge_port, hash=HASH, ws_port=ws_port,
                         server_extra=server_extra, journal_extra=journal_extra)


LINES = {"201": "Line 201", "202": "Line 202", "203": "Line 203", "299": "Line 299"}


async def all_in_service(b) -> None:
    await b.send(*[{"device": line, "devstate": "inservice"} for line in LINES.values()])


async def busy_office(gw, connect, bridge):
    """Every line in service and alice on a call; carol watching the office panel. Returns
    (the bridge connection, carol's client)."""
    b = await bridge(gw)
    await all_in_service(b)
    await b.send({"device": "Line 201", "call": "a1", "state": "connected", "caller": "0301"})
    carol = await login(connect, gw, "carol", panel="office")
    await wait_lamps(carol, {"alice": "busy", "bob": "idle"}, PATIENCE)
    return b, carol


def lamp_of(client, member: str) -> str | None:
    """The lamp a client's switchboard shows for `member` of the office panel now."""
    shown = None
    for m in client.received:
        if m.get("type") == "snapshot" and m.get("panel") == "office":
            # A resumed subscription (`since`) lists only the members that changed.
            shown = next((x["lamp"] for x in m["members"] if x["client"] == member), shown)
        elif m.get("type") == "lamp" and m.get("panel") == "office" and m.get("member") == member:
            shown = m["lamp"]
    return shown


class HonestWatcher:
    """A logged-in switchboard user during the fault: the probe line rings and goes idle
    every `period` seconds; each time it measures bridge line -> lamp frame latency. A probe
    whose lamp has not come after `patience` seconds counts as not delivered, lost or stuck
    (while the state store is away it cannot be). How fast the lamps come is the p99
    figure, printed, not asserted: a loaded CI machine can hold any process up for a second
    and that says nothing about the gateway."""

    def __init__(self, client, bridge, period: float = 0.1, patience: float = 10.0) -> None:
        self.client, self.bridge, self.period = client, bridge, period
        self.patience = patience
        self.latencies: list[float] = []
        self.missed = 0
        self._task: asyncio.Task | None = None
        self._n = 0
        # Call ids of its own: an ended call's id is remembered (a late report of it is
        # ignored), so two watchers on one line must not reuse each other's.
        self._prefix = f"p{id(self):x}-"

    async def _one(self) -> None:
        self._n += 1
        state = "offering" if self._n % 2 else "idle"
        want = "ringing" if state == "offering" else "idle"
        start = len(self.client.received)
        t0 = time.perf_counter()
        await self.bridge.send({"device": "Line 299", "call": f"{self._prefix}{(self._n + 1) // 2}",
                                "state": state, "caller": "0"})
        try:
            await self.client.wait(lambda m: m.get("member") == "probe"
                                   and m.get("lamp") == want, timeout=self.patience,
                                   start=start)
            self.latencies.append(time.perf_counter() - t0)
        except (asyncio.TimeoutError, ConnectionError):
            self.missed += 1

    async def _run(self) -> None:
        while not self._stopping:
            await self._one()
            await asyncio.sleep(self.period)

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        # A flag, not cancel(): Python 3.11's wait_for can swallow a cancellation.
        self._stopping = True
        if self._task is not None:
            await asyncio.wait_for(self._task, self.patience + 5)
        if self._n % 2:  # its last call still rings: hang it up, the line is left idle
            await self.bridge.send({"device": "Line 299",
                                    "call": f"{self._prefix}{(self._n + 1) // 2}",
                                    "state": "idle"})

    def p99_ms(self) -> float:
        xs = sorted(self.latencies)
        assert xs, "the honest watcher got no lamp at all"
        return 1000 * xs[min(len(xs) - 1, int(0.99 * len(xs)))]


async def wait_lamps(client, want: dict[str, str], timeout: float) -> float:
    """Wait until the client shows exactly these lamps; returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        if all(lamp_of(client, m) == lamp for m, lamp in want.items()):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            shown = {m: lamp_of(client, m) for m in want}
            raise AssertionError(f"lamps not exact after {timeout} s: {shown} != {want}")
        await asyncio.sleep(0.02)


def redis_servers_under(path: Path) -> list[int]:
    """pids of running redis-server processes whose files are under `path`."""
    out = []
    needle = str(path).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{entry}/exe")
            # redis-server rewrites its command line (process title) but works in its --dir.
            cwd = os.readlink(f"/proc/{entry}/cwd").encode()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if ("redis-server" in os.path.basename(exe) and cwd.startswith(needle)
                and state != "Z"):
            out.append(int(entry))
    return out


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def wait_gone(pid: int, timeout: float = 5.0) -> float:
    t0 = time.monotonic()
    while pid_alive(pid):
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"process {pid} still running after {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    os.kill(pid, sig)


def healthz(port: int) -> tuple[int, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()
