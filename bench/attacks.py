"""What an honest watcher notices while an ordinary user (or a broken peer) attacks the gateway.

    .venv/bin/python bench/attacks.py            # about two minutes on 2 cores

One gateway in its own process (embedded Redis, uvloop), as in bench/run.py. An honest
watcher subscribes to a panel; a probe bridge connection rings a probe line ten times a
second, and the watcher's bridge line -> lamp latency is measured throughout. The phases run
one after the other, each beside the baseline measured first in the same run:

- baseline: no attack;
- softphone flood: a logged-in user on four connections sends softphone `ringing` reports
  with new call ids as fast as it can (the gateway keeps 16 per softphone, 5 changes a second
  per client); an observer watching the attacker's panel counts the bytes it receives;
- bridge call flood: 30,000 call ids on one bridge line (64 kept);
  (every attack runs in a process of its own, so its CPU is not the probe's)
- journal reads: 20 server-journal reads a second from one client (5,000 entries there);
- idle connections: 3,000 WebSocket connections that never log in (closed after
  `login_timeout_seconds`, 5 s here): gateway RSS before, with them, and after;
- brute force, garbage: 2,000 wrong passwords, then 20,000 bad bridge lines: how many log
  lines each costs.

Prints a markdown table (the rows of docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import GATEWAY_WRAPPER, HOST, free_port, raise_nofile, rss_kib, wait_port  # noqa: E402

PASSWORD = "bench-password"
PHASE_SECONDS = 8.0


def config(ws: int, bridge: int) -> str:
    from gateway.auth import hash_password

    pw = hash_password(PASSWORD, n=2**12)
    return f"""
[server]
listen = "{HOST}:{ws}"
login_timeout_seconds = 5
login_attempts_per_minute = 100000

[state]
dir = "state"

[sources.tapi_bridge]
listen = "{HOST}:{bridge}"

[[devices]]
id = "probe"
number = "100"
[[devices]]
id = "flood"
number = "101"
[[devices]]
id = "desk"
number = "102"
journal = true

[[clients]]
name = "owner"
devices = ["probe"]
[[clients]]
name = "flooded"
devices = ["flood"]
[[clients]]
name = "desk"
devices = ["desk"]
[[clients]]
name = "mallory"
journal = "r"
password_hash = "{pw}"
[[clients]]
name = "honest"
password_hash = "{pw}"
[[clients]]
name = "observer"
password_hash = "{pw}"

[[groups]]
name = "board"
members = ["owner", "flooded", "desk", "mallory", "honest", "observer"]
rights = {{ numbers = "all" }}
"""


class Gateway:
    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.ws, self.bridge = free_port(), free_port()
        cfg = tmp / "attacks.toml"
        cfg.write_text(config(self.ws, self.bridge))
        self.log = tmp / "gateway.log"
        cmd = [sys.executable, "-c", GATEWAY_WRAPPER, "run", "--config", str(cfg),
               "--log-level", "info"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        wait_port(self.ws)
        wait_port(self.bridge)

    def rss_mib(self) -> float:
        return rss_kib(self.pid) / 1024

    def log_lines(self, *needles: str) -> int:
        text = self.log.read_text(errors="replace")
        return sum(1 for line in text.splitlines() if any(n in line for n in needles))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


async def ws_connect(gw: Gateway):
    import websockets

    return await websockets.connect(f"ws://{HOST}:{gw.ws}/ws", max_size=None,
                                    compression=None, open_timeout=30)


async def logged_in(gw: Gateway, name: str):
    ws = await ws_connect(gw)
    await ws.send(json.dumps({"type": "login", "client": name, "password": PASSWORD}))
    reply = json.loads(await ws.recv())
    assert reply["type"] == "welcome", reply
    return ws


class Probe:
    """Rings the probe line 10 times a second; the honest watcher times each lamp."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.sent: dict[str, float] = {}
        self.samples: list[float] = []

    async def start(self) -> None:
        self.watcher = await logged_in(self.gw, "honest")
        await self.watcher.send(json.dumps({"type": "subscribe", "panel": "board", "id": 1}))
        self.reader, self.writer = await asyncio.open_connection(HOST, self.gw.bridge)
        self.writer.write(b'{"device": "probe", "devstate": "inservice"}\n'
                          b'{"device": "flood", "devstate": "inservice"}\n'
                          b'{"device": "desk", "devstate": "inservice"}\n')
        self.tasks = [asyncio.create_task(self._ring()), asyncio.create_task(self._watch())]

    async def _ring(self) -> None:
        n = 0
        while True:
            n += 1
            key = f"9{n:07d}"
            self.sent[key] = time.perf_counter()
            self.writer.write((json.dumps({"device": "probe", "call": n, "state": "offering",
                                           "caller": key}) + "\n"
                               + json.dumps({"device": "probe", "call": n - 1,
                                             "state": "idle"}) + "\n").encode())
            await asyncio.sleep(0.1)

    async def _watch(self) -> None:
        async for frame in self.watcher:
            if '"member":"owner"' not in frame:
                continue
            msg = json.loads(frame)
            for call in msg.get("calls", []):
                t = self.sent.pop(call.get("remote") or "", None)
                if t is not None:
                    self.samples.append((time.perf_counter() - t) * 1000)

    def take(self) -> tuple[float, float]:
        s, self.samples = sorted(self.samples), []
        if not s:
            return float("nan"), float("nan")
        return statistics.median(s), s[min(len(s) - 1, int(len(s) * 0.99))]


async def drain(ws, counter: list[int]) -> None:
    try:
        async for frame in ws:
            counter[0] += len(frame)
    except Exception:  # noqa: BLE001 - closed
        pass


async def phase(probe: Probe, seconds: float = PHASE_SECONDS) -> tuple[float, float]:
    probe.take()
    await asyncio.sleep(seconds)
    return probe.take()


# -- the attacks, each in a process of its own (their CPU is not the probe's) ----------------

async def softphone_flood(gw: Gateway, seconds: float) -> dict:
    attackers = [await logged_in(gw, "mallory") for _ in range(4)]
    replies = [0]
    sinks = [asyncio.create_task(drain(a, replies)) for a in attackers]
    sent = 0

    async def flood(ws, k: int) -> None:
        nonlocal sent
        i = 0
        try:
            while True:
                i += 1
                await ws.send(json.dumps({"type": "softphone", "call": f"{k}-{i}",
                                          "state": "ringing", "direction": "in",
                                          "remote": f"0{i}"}))
                sent += 1
                if i % 20 == 0:
                    await asyncio.sleep(0)
        except Exception:  # noqa: BLE001 - the gateway closed the flooding connection
            pass

    floods = [asyncio.create_task(flood(a, k)) for k, a in enumerate(attackers)]
    await asyncio.sleep(seconds)
    for f in floods:
        f.cancel()
    return {"sent": sent, "closed": sum(a.close_code is not None for a in attackers)}


async def journal_reads(gw: Gateway, seconds: float) -> dict:
    reader = await logged_in(gw, "mallory")
    answers: list[str] = []

    async def read_answers() -> None:
        async for frame in reader:
            answers.append("journal" if frame.startswith('{"type":"journal"')
                           else "rate_limited" if "rate_limited" in frame else "?")

    rtask = asyncio.create_task(read_answers())
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        await reader.send(json.dumps({"type": "journal", "scope": "server"}))
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    rtask.cancel()
    return {"journal": answers.count("journal"), "limited": answers.count("rate_limited")}


async def idle_connections(gw: Gateway, seconds: float) -> dict:
    idle = []
    for _ in range(3000):
        try:
            idle.append(await ws_connect(gw))
        except Exception:  # noqa: BLE001
            break
    held = gw.rss_mib()
    await asyncio.sleep(seconds)
    return {"opened": len(idle), "held": held,
            "closed": sum(1 for ws in idle if ws.close_code is not None)}


async def brute_force(gw: Gateway, seconds: float) -> dict:
    attempts = 0
    bf = [await ws_connect(gw) for _ in range(20)]
    for i in range(100):
        for ws in bf:
            await ws.send(json.dumps({"type": "login", "client": "honest",
                                      "password": f"guess{i}"}))
            attempts += 1
    await asyncio.sleep(seconds)
    return {"attempts": attempts}


async def garbage(gw: Gateway, seconds: float) -> dict:
    w3 = (await asyncio.open_connection(HOST, gw.bridge))[1]
    w3.write(b"garbage\n" * 20000)
    await w3.drain()
    await asyncio.sleep(seconds)
    return {}


async def bridge_calls(gw: Gateway, seconds: float) -> dict:
    data = b"".join(json.dumps({"device": "flood", "call": i, "state": "offering",
                                "caller": f"0{i}"}).encode() + b"\n" for i in range(30000))
    w = (await asyncio.open_connection(HOST, gw.bridge))[1]
    w.write(data)
    await w.drain()
    await asyncio.sleep(seconds)
    return {}


ATTACKS = {"bridge": bridge_calls, "softphone": softphone_flood, "journal": journal_reads,
           "idle": idle_connections, "brute": brute_force, "garbage": garbage}


def _attack_process(kind: str, gw_state: dict, seconds: float, out) -> None:
    gw = Gateway.__new__(Gateway)
    gw.__dict__.update(gw_state)
    out.put(asyncio.run(ATTACKS[kind](gw, seconds)))


async def attack(kind: str, gw: Gateway, probe: Probe, seconds: float = PHASE_SECONDS):
    """Run one attack in its own process while the probe measures; its result and the
    probe's p50/p99."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    state = {k: v for k, v in gw.__dict__.items() if k != "proc"}
    state["pid"] = gw.proc.pid
    proc = ctx.Process(target=_attack_process, args=(kind, state, seconds, out))
    proc.start()
    probe.take()
    result = await asyncio.get_running_loop().run_in_executor(None, out.get)
    p50, p99 = probe.take()
    await asyncio.get_running_loop().run_in_executor(None, proc.join)
    return result, p50, p99


async def main() -> None:
    raise_nofile()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        gw = Gateway(Path(tmp))
        try:
            probe = Probe(gw)
            await probe.start()
            await asyncio.sleep(2)
            p50, p99 = await phase(probe)
            rows.append(("baseline (no attack)", f"{p50:.1f} / {p99:.1f}", "-"))

            # An observer watches the attacker's panel and counts bytes.
            observer = await logged_in(gw, "observer")
            await observer.send(json.dumps({"type": "subscribe", "panel": "board"}))
            seen = [0]
            obs_task = asyncio.create_task(drain(observer, seen))
            await asyncio.sleep(0.5)

            seen[0] = 0
            r, p50, p99 = await attack("softphone", gw, probe)
            rows.append((f"softphone flood: {r['sent']:,} `ringing` reports with new call ids "
                         f"in {PHASE_SECONDS:.0f} s from 4 connections of one user",
                         f"{p50:.1f} / {p99:.1f}",
                         f"the observer received {seen[0] / 1e6:.2f} MB; "
                         f"{r['closed']} of 4 connections closed for flooding"))

            seen[0] = 0
            r, p50, p99 = await attack("bridge", gw, probe)
            rows.append(("bridge: 30,000 call ids on one line", f"{p50:.1f} / {p99:.1f}",
                         f"the observer received {seen[0] / 1e6:.2f} MB (64 calls kept)"))

            journal_lines = b"".join(
                (json.dumps({"device": "desk", "call": i, "state": "offering",
                             "caller": f"0{i}"}) + "\n" + json.dumps(
                    {"device": "desk", "call": i, "state": "idle"}) + "\n").encode()
                for i in range(5000))
            w2 = (await asyncio.open_connection(HOST, gw.bridge))[1]
            w2.write(journal_lines)
            await asyncio.sleep(4)
            r, p50, p99 = await attack("journal", gw, probe)
            rows.append(("20 server-journal reads/s from one client (5,000 entries)",
                         f"{p50:.1f} / {p99:.1f}",
                         f"{r['journal']} answered, {r['limited']} `rate_limited`"))
            w2.close()

            before = gw.rss_mib()
            r, p50, p99 = await attack("idle", gw, probe, 7)
            rows.append((f"{r['opened']:,} connections that never log in",
                         f"{p50:.1f} / {p99:.1f}",
                         f"gateway RSS {before:.0f} -> {r['held']:.0f} MiB; {r['closed']:,} "
                         f"closed by the 5 s login timeout"))

            base = gw.log_lines("login failed", "login refused")
            r, p50, p99 = await attack("brute", gw, probe, 4)
            login_lines = gw.log_lines("login failed", "login refused") - base
            rows.append((f"{r['attempts']:,} wrong passwords from 20 connections",
                         f"{p50:.1f} / {p99:.1f}",
                         f"{login_lines} audit lines while it lasted (a few per kind and "
                         "source a minute, then one line with the count)"))
            r, p50, p99 = await attack("garbage", gw, probe, 4)
            rows.append(("20,000 bad bridge lines", f"{p50:.1f} / {p99:.1f}",
                         f"{gw.log_lines('line skipped')} bridge warnings while it lasted"))
            for t in probe.tasks:
                t.cancel()
            obs_task.cancel()
        finally:
            gw.stop()
    print("| attack | honest watcher p50 / p99 (ms) | what else |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
