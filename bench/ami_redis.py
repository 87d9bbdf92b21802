"""Benchmark (not a test): what the AMI source turns into Redis state, through the real gateway.

    .venv/bin/python bench/ami_redis.py [--hints 2000]

The gateway runs as its own process (`blf-gateway run`, embedded Redis) with N Asterisk
devices; the AMI test peer runs here. Prints:

- connect -> all N device states in Redis (the first re-sync: ExtensionStateList,
  DeviceStateList, CoreShowChannels);
- a burst: an external call starts ringing on every device at once (N x 4 channel events,
  what a busy hunt group or a reload in the middle of traffic looks like): events/s from the
  first byte on the wire to the last device state stored in Redis (the burst's bytes are
  built before, see burst_bytes), and the CPU time the gateway process and its Redis used
  meanwhile, per event;
- reconnect: Asterisk restarts (its calls gone) -> all N lamps exact (idle) in Redis again,
  none left ringing.

Baselines in the same run: pipelined redis-py SETs of as many keys on the gateway's Redis (as
bench/run.py's ingest figure), and the pure parser + translator on the same bytes (no I/O;
set up as a live connection sets them up). The burst, the restart and the SET baseline run
`--rounds` times in turn (3); the figures are the medians, each round printed too.
`bench/run.py --only ami` prints the burst figure in its table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
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
from run import cpu_seconds, free_port  # noqa: E402  (bench/run.py: the same helpers)


def config(n: int, ami_port: int, ws_port: int) -> str:
    out = [f'[server]\nlisten = "127.0.0.1:{ws_port}"\n', '[state]\ndir = "state"\n',
           f'[sources.ami]\nhost = "127.0.0.1"\nport = {ami_port}\nusername = "blf"\n'
           'secret_file = "ami.secret"\n']
    for i in range(n):
        num = 10000 + i
        out.append(f'[[devices]]\nid = "d{num}"\nnumber = "{num}"\nsource = "ami"\n'
                   f'line = "PJSIP/{num}"\n')
    return "\n".join(out)


def children(pid: int) -> list[int]:
    """The processes `pid` started (the embedded redis-server)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            pass
    return out


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


def burst_bytes(peer: AmiPeer) -> tuple[bytes, int]:
    """The burst (an external call ringing on every endpoint), as the bytes the peer writes,
    and its number of events. Built one endpoint at a time on a scratch model that holds only
    that endpoint and no channels: the same events as on the full model (a call changes only
    its own endpoint's state), but each call costs the same however many endpoints there are
    (on the full model every call walks every endpoint and channel: minutes for 2,000)."""
    chunks: list[bytes] = []
    scratch = PbxModel(sink=lambda p: chunks.append(format_message(p)), epoch=1800000000)
    for ep in list(peer.model.endpoints.values()):
        scratch.endpoints, scratch.channels, scratch.calls = {}, {}, []
        scratch._dev_state = {}
        scratch.add_endpoint(ep.device, ep.number, ep.name)
        scratch.external_call("+4930" + ep.number, "Caller", ep.number)
    return b"".join(chunks), len(chunks)


async def burst_round(peer: AmiPeer, gw: subprocess.Popen, r: redis.Redis, keys: list[str],
                      burst: bytes, events: int, n: int) -> dict:
    """One burst into the running gateway, Asterisk restarted after it (every lamp idle
    again), then the SET baseline: the burst's figures and the baseline's, side by side."""

    def all_ringing() -> bool:
        st = states(r, keys)
        return all(s is not None and len(s["c"]) == 1 and s["c"][0][2] == "ringing"
                   for s in st)

    seq0 = int(r.get("{blf}:seq") or 0)
    helpers = children(gw.pid)
    cpu0 = cpu_seconds(gw.pid), sum(cpu_seconds(p) for p in helpers)
    t0 = time.perf_counter()
    peer.send_raw(burst)
    # Polled cheaply (one GET) until every device can have changed, then checked in full:
    # the peer runs in this process, and reading 2,000 states every few ms would hold up
    # its writing of the burst.
    await wait_until(lambda: int(r.get("{blf}:seq") or 0) - seq0 >= n)
    await wait_until(all_ringing)
    burst_time = time.perf_counter() - t0
    cpu1 = cpu_seconds(gw.pid), sum(cpu_seconds(p) for p in helpers)
    published = int(r.get("{blf}:seq") or 0) - seq0

    # Asterisk restarts: the connection drops, every call is gone when it is back (its own
    # model never had the burst's calls). No lamp may stay ringing.
    def all_idle() -> bool:
        st = states(r, keys)
        return all(s is not None and s["s"] == "online" and not s["c"] for s in st)

    t0 = time.perf_counter()
    await peer.restart(down_for=0.0)
    await wait_until(all_idle)
    reconnect = time.perf_counter() - t0

    # Baseline: as many keys SET through redis-py, pipelined 1,000 at a time.
    value = "1 " + json.dumps({"s": "online", "c": [["d10000/1800000000.1", "in",
                               "ringing", 1800000000.123, "+493010000", None, None]]})
    t0 = time.perf_counter()
    for i in range(0, events, 1000):
        pipe = r.pipeline(transaction=False)
        for j in range(i, min(events, i + 1000)):
            pipe.set(f"bench:{j % n}", value)
        pipe.execute()
    set_rate = events / (time.perf_counter() - t0)
    return {"burst_s": burst_time, "rate": events / burst_time, "set_rate": set_rate,
            "published": published, "reconnect_s": reconnect,
            "gw_cpu_us": (cpu1[0] - cpu0[0]) / events * 1e6,
            "redis_cpu_us": (cpu1[1] - cpu0[1]) / events * 1e6}


async def measure(n: int, rounds: int = 3) -> dict:
    """Start a gateway with `n` Asterisk devices against the test peer; the figures of the
    module docstring, plus pipelined SETs of as many keys on the gateway's Redis (the
    ingest baseline of bench/run.py)."""
    peer = AmiPeer(secret="bench")
    for i in range(n):
        num = str(10000 + i)
        peer.model.add_endpoint(f"PJSIP/{num}", num, f"User {num}")
    await peer.start()
    t0 = time.perf_counter()
    burst, events = burst_bytes(peer)
    build_s = time.perf_counter() - t0
    # Baseline: the pure parser + translator on the same bytes (no I/O).
    parser, tr = AmiParser(), AmiTranslator({f"PJSIP/{10000 + i}": f"d{10000 + i}"
                                             for i in range(n)})
    # As a live connection sets its parser up: the translator's events, its picks, bare.
    parser.wanted, parser.picks, parser.bare = tr.events, tr.picks, True
    t0 = time.perf_counter()
    for m in parser.feed(burst):
        if m.__class__ is tuple:
            tr.feed_picked(m[0], m[1])
        elif not hasattr(m, "reason"):
            tr.feed(m)
    baseline = events / (time.perf_counter() - t0)
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

            rounds_out = []
            for _ in range(rounds):
                rounds_out.append(await burst_round(peer, gw, r, keys, burst, events, n))
            r.close()
        finally:
            gw.terminate()
            gw.wait(30)
            await peer.stop()
    # The median of each figure over the rounds (the machine moves between rounds: on a
    # shared VM the SET baseline alone swings by 2x within a minute), and every round.
    out = {k: statistics.median(x[k] for x in rounds_out) for k in rounds_out[0]}
    out.update({"devices": n, "events": events, "build_s": build_s,
                "login_s": t_login - t_start, "sync_s": first_sync, "parse_rate": baseline,
                "rounds": rounds_out})
    return out


async def main_async(n: int, rounds: int) -> None:
    m = await measure(n, rounds)
    print(f"\nAMI -> Redis through the gateway ({n} devices; gateway in its own process)")
    print(f"  burst built in                      : {m['build_s'] * 1000:8.0f} ms")
    print(f"  gateway start -> AMI login          : {m['login_s']:8.2f} s")
    print(f"  first re-sync -> {n} states in Redis: {m['sync_s'] * 1000:8.0f} ms")
    print(f"  burst of {m['events']} events -> Redis  : {m['burst_s'] * 1000:8.0f} ms = "
          f"{m['rate']:,.0f} events/s ({m['published']} changes published)")
    print(f"    CPU per event during the burst: gateway {m['gw_cpu_us']:.1f} µs, its Redis "
          f"{m['redis_cpu_us']:.1f} µs")
    print(f"    baselines: pipelined redis-py SET {m['set_rate']:,.0f}/s "
          f"({m['rate'] / m['set_rate']:.2f}x); pure parse+translate {m['parse_rate']:,.0f}/s")
    print(f"  reconnect -> all {n} lamps exact   : {m['reconnect_s'] * 1000:8.0f} ms "
          "(includes the gateway's reconnect backoff of 0.5 s)")
    if len(m["rounds"]) > 1:
        print(f"  (medians of {len(m['rounds'])} rounds; each round: events/s, SET/s, ratio, "
              "gateway µs an event)")
        for x in m["rounds"]:
            print(f"    {x['rate']:9,.0f} {x['set_rate']:9,.0f}  {x['rate'] / x['set_rate']:.2f}x"
                  f"  {x['gw_cpu_us']:5.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hints", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3,
                   help="bursts (each with its restart and baseline); medians are printed")
    args = p.parse_args()
    asyncio.run(main_async(args.hints, args.rounds))


if __name__ == "__main__":
    main()
