"""How long a failed login takes for a real account and for a name that does not exist.

    .venv/bin/python bench/login_timing.py [--rounds 40]

One gateway (`blf-gateway run`, its own process, embedded Redis, production scrypt cost).
Each round, from fresh connections and a different X-Forwarded-For address each time (the
gateway trusts this machine as its proxy, so that no limit is reached): a wrong password for
a real account and for a name that does not exist, a wrong token for each. Prints the median and p90 of
each kind, and the ratio unknown / known, all from the same run: an attacker timing the
answers should not learn which names exist (ratio near 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.auth import hash_password  # noqa: E402
from latency import free_port, wait_port  # noqa: E402

CONFIG = """
[server]
listen = "127.0.0.1:{ws}"
trusted_proxies = ["127.0.0.1"]
login_attempts_per_minute = 100000
[state]
dir = "state"
{clients}"""


async def one(port: int, address: str, **fields) -> float:
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws",
                                  additional_headers={"X-Forwarded-For": address}) as ws:
        t0 = time.perf_counter()
        await ws.send(json.dumps({"type": "login", "id": 1, **fields}))
        reply = json.loads(await ws.recv())
        took = time.perf_counter() - t0
    assert reply.get("code") == "auth_failed", reply
    return took


async def measure(port: int, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in range(rounds):
        # A real account and an unknown name per round: no client's failure budget is hit.
        kinds = {"password, real name": {"client": f"user{r}", "password": "wrong one"},
                 "password, unknown name": {"client": f"nobody{r}", "password": "wrong one"},
                 "token, real name": {"client": f"user{r}", "token": "x" * 43},
                 "token, unknown name": {"client": f"nobody{r}", "token": "x" * 43}}
        order = list(kinds.items())
        random.Random(r).shuffle(order)  # no kind always first (warm caches, a busy loop)
        for i, (kind, fields) in enumerate(order):
            # One address per round and kind: every attempt starts from fresh counts.
            address = f"10.{r % 250}.{i}.{1 + r // 250}"
            out.setdefault(kind, []).append(await one(port, address, **fields))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = free_port()
        cfg = Path(tmp) / "gw.toml"
        hashed = hash_password("the right one")
        clients = "".join(f'[[clients]]\nname = "user{r}"\npassword_hash = "{hashed}"\n'
                          for r in range(args.rounds))
        cfg.write_text(CONFIG.format(ws=ws, clients=clients))
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(cfg),
                                 "--log-level", "error"], cwd=ROOT)
        try:
            wait_port(ws)
            res = asyncio.run(measure(ws, args.rounds))
        finally:
            proc.terminate()
            proc.wait(20)
    med = {k: statistics.median(v) * 1000 for k, v in res.items()}
    for k, v in sorted(res.items()):
        xs = sorted(v)
        print(f"{k:<24} median {med[k]:7.2f} ms   p90 {xs[int(0.9 * len(xs))] * 1000:7.2f} ms")
    for kind in ("password", "token"):
        print(f"{kind}: unknown / real = {med[kind + ', unknown name'] / med[kind + ', real name']:.2f}")


if __name__ == "__main__":
    main()
