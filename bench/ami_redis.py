"""Benchmark (not a test): what the AMI source turns into Redis state, through the real gateway.

    .venv/bin/python bench/ami_redis.py [--hints 2000]

The gateway runs as its own process (`blf-gateway run`, embedded Redis) with N Asterisk
devices; the AMI test peer runs here. Prints:

- connect -> all N device states in Redis (the first re-sync: ExtensionStateList,
  DeviceStateList, CoreShowChannels);
- a burst: an external call starts ringing on every device at once (N x 4 channel events,
  what a busy hunt group or a reload in the middle of traffic looks like): events/s from the
  first byte on the wire to the last device state stored in Redis;
- reconnect: Asterisk restarts (its calls gone) -> all N lamps exact (idle) in Redis again,
  none left ringing.

Baseline in the same run: the pure parser + translator on the same burst bytes (no I/O).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from amipeer import AmiPeer, PbxModel  # noqa: E402

from gateway.ami.protocol import AmiParser, format_message  # noqa: E402
from gateway.ami.translate import AmiTranslator  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(n: int, ami_port: int, ws_port: int) -> str:
    out = [f'[server]\nlisten = "127.0.0.1:{ws_port}"\n', '[state]\ndir = "state"\n',
           f'[sources.ami]\nhost = "127.0.0.1"\nport = {ami_port}\nusername = "blf"\n'
           'secret_file = "ami.secret"\n']
    for i in range(n):
        num = 10000 + i
        out.append(f'[[devices]]\nid = "d{num}"\nnumber = "{num}"\nsource = "ami"\n'
                   f'line = "PJSIP/{num}"\n')
    return "\n".join(out)


def states(r: redis.Redis, keys: list[str]) -> list[dict]:
    out = []
    for i in range(0, len(keys), 1000):
        for v in r.mget(keys[i:i + 1000]):
            out.append(json.loads(v.split(" ", 1)[1]) if v else None)
    return out


async def wait_until(pred, timeout: float = 60.0) -> float:
    t0 = time.perf_counter()
    while not pred():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"condition not reached: {getattr(pred, '__name__', pred)}")
        await asyncio.sleep(0.01)
    return time.perf_counter() - t0


async def main_async(n: int) -> None:
    peer = AmiPeer(secret="bench")
    for i in range(n):
        num = str(10000 + i)
        peer.model.add_endpoint(f"PJSIP/{num}", num, f"User {num}")
    await peer.start()
    # The burst: every device rings. Generated up front (the scratch model is slow with many
    # endpoints and would stall this process's event loop, the peer's), and timed through the
    # pure parser + translator as the baseline.
    chunks: list[bytes] = []
    scratch = PbxModel(sink=lambda p: chunks.append(format_message(p)), epoch=1800000000)
    for ep in peer.model.endpoints.values():
        scratch.add_endpoint(ep.device, ep.number, ep.name)
    for ep in scratch.endpoints.values():
        scratch.external_call("+4930" + ep.number, "Caller", ep.number)
    burst = b"".join(chunks)
    parser, tr = AmiParser(), AmiTranslator({f"PJSIP/{10000 + i}": f"d{10000 + i}"
                                             for i in range(n)})
    t0 = time.perf_counter()
    tr.feed_all(m for m in parser.feed(burst) if not hasattr(m, "reason"))
    baseline = len(chunks) / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        ws = free_port()
        (Path(tmp) / "ami.secret").write_text("bench\n")
        (Path(tmp) / "gw.toml").write_text(config(n, peer.port, ws))
        t_start = time.perf_counter()
        gw = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config",
                               str(Path(tmp) / "gw.toml"), "--log-level", "warning"], cwd=ROOT)
        try:
            sock = Path(tmp) / "state" / "redis.sock"
            await wait_until(lambda: sock.exists(), 30)
            r = redis.Redis(unix_socket_path=str(sock), decode_responses=True)
            keys = [f"{{blf}}:dev:d{10000 + i}" for i in range(n)]

            def all_status(status: str) -> bool:
                st = states(r, keys)
                return all(s is not None and s["s"] == status for s in st)

            await wait_until(lambda: peer.sessions >= 1, 30)
            t_login = time.perf_counter()
            await wait_until(lambda: all_status("online"))
            first_sync = time.perf_counter() - t_login


            def all_ringing() -> bool:
                st = states(r, keys)
                return all(s is not None and len(s["c"]) == 1 and s["c"][0][2] == "ringing"
                           for s in st)

            t0 = time.perf_counter()
            peer.send_raw(burst)
            burst_time = await wait_until(all_ringing)
            rate = len(chunks) / burst_time

            # Asterisk restarts: the connection drops, every call is gone when it is back (its
            # own model never had the burst's calls). No lamp may stay ringing.
            def all_idle() -> bool:
                st = states(r, keys)
                return all(s is not None and s["s"] == "online" and not s["c"] for s in st)

            t0 = time.perf_counter()
            await peer.restart(down_for=0.0)
            await wait_until(all_idle)
            reconnect = time.perf_counter() - t0
        finally:
            gw.terminate()
            gw.wait(30)
            await peer.stop()

    print(f"\nAMI -> Redis through the gateway ({n} devices; gateway in its own process)")
    print(f"  gateway start -> AMI login          : {t_login - t_start:8.2f} s")
    print(f"  first re-sync -> {n} states in Redis: {first_sync * 1000:8.0f} ms")
    print(f"  burst of {len(chunks)} events -> Redis  : {burst_time * 1000:8.0f} ms = "
          f"{rate:,.0f} events/s  (baseline, pure parse+translate: {baseline:,.0f} events/s)")
    print(f"  reconnect -> all {n} lamps exact   : {reconnect * 1000:8.0f} ms "
          "(includes the gateway's reconnect backoff of 0.5 s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hints", type=int, default=2000)
    args = p.parse_args()
    asyncio.run(main_async(args.hints))


if __name__ == "__main__":
    main()
