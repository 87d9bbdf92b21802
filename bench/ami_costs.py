"""Benchmark (not a test): CPU per AMI event in-process, for the AMI path's cost by part.

    .venv/bin/python bench/ami_costs.py [--devices 2000] [--repeat 5]

No sockets and no Redis: the gateway's own objects, driven directly; CPU time of this
process (`time.process_time`), best of `--repeat`, so other work on the machine disturbs it
less than wall-clock figures. The bytes are fed in reads of 64 KiB (what one read of the
AMI client holds), and everything a read produced is dropped before the next, as in the
gateway. Per event:

- parser: :class:`~gateway.ami.protocol.AmiParser` alone, set up as a live connection sets
  it up (the events the translator wants, the values it picks, bare);
- connection: a live :class:`~gateway.ami.connection.AmiConnection` (parser, translator,
  routing of events and answers), what ``AmiSource`` does per read;
- gateway: the same, plus what the gateway's handler does with the reports (tracker,
  provenance record, the publisher's queue) and the encoding of the states and records the
  writers would send (as bench/costs.py's report path).

Two streams of the same devices:

- burst: bench/ami_redis.py's burst (an external call ringing on every device: Newchannel
  x 2, DialBegin, Newstate, DeviceStateChange, ExtensionStatus per device);
- office: the recorded transcript tests/fixtures/ami/external_answered_then_held.txt (an
  external call answered, then held: with the Newexten, VarSet and DialState events a real
  Asterisk sends besides the call events) replayed once per device.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import ami_redis  # noqa: E402
from amipeer import AmiPeer  # noqa: E402

from gateway.ami.connection import AmiConnection, ReportsReady  # noqa: E402
from gateway.ami.protocol import AmiParser  # noqa: E402
from gateway.ami.translate import AmiTranslator  # noqa: E402

READ = 65536
FIXTURE = ROOT / "tests" / "fixtures" / "ami" / "external_answered_then_held.txt"


def burst_stream(n: int) -> bytes:
    peer = AmiPeer(secret="bench")
    for i in range(n):
        num = str(10000 + i)
        peer.model.add_endpoint(f"PJSIP/{num}", num, f"User {num}")
    return ami_redis.burst_bytes(peer)[0]


def office_stream(n: int) -> bytes:
    """The recorded call once per device: its number, channels and uniqueids made the
    device's own."""
    text = FIXTURE.read_text(encoding="utf-8").split("\n", 1)[1].lstrip("\n")  # no banner
    text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    out = []
    for i in range(n):
        num = str(10000 + i)
        out.append(text.replace("PJSIP/201", f"PJSIP/{num}").replace(": 201", f": {num}")
                   .replace("00000007", f"{2 * i:08x}").replace("00000008", f"{2 * i + 1:08x}")
                   .replace("1712345678.91", f"1712345678.{2 * i}")
                   .replace("1712345678.92", f"1712345678.{2 * i + 1}"))
    return "".join(out).encode("utf-8")


def events_in(stream: bytes) -> int:
    return stream.count(b"\r\nEvent: ") + stream.startswith(b"Event: ")


def best(fn: Callable[[], float], repeat: int) -> float:
    return min(fn() for _ in range(repeat))


def live_connection(lines: dict[str, str]) -> AmiConnection:
    """A connection past its login and (empty) re-sync: every event is live."""
    ids = (str(n) for n in itertools.count(1))
    conn = AmiConnection(AmiTranslator(lines), "blf", "bench", 0.0, action_ids=ids,
                         ping_interval=0)
    conn.receive_data(b"Asterisk Call Manager/9.0.0\r\n", 0.0)
    conn.receive_data(b"Response: Success\r\nActionID: 1\r\n\r\n", 0.0)
    conn.receive_data(b"".join(b"Response: Error\r\nActionID: %d\r\n\r\n" % i
                               for i in (2, 3, 4)), 0.0)
    assert conn.synced, conn.state
    return conn


def chunks(stream: bytes) -> list[bytes]:
    return [stream[i:i + READ] for i in range(0, len(stream), READ)]


def parser_cost(stream: bytes, lines: dict[str, str], repeat: int) -> float:
    reads, n = chunks(stream), events_in(stream)

    def once() -> float:
        p = AmiParser()
        live = live_connection(lines)._parser  # what a live connection asks of its parser
        for name in ("wanted", "picks", "bare"):
            if hasattr(live, name):
                setattr(p, name, getattr(live, name))
        c0 = time.process_time()
        for data in reads:
            p.feed(data)
        return (time.process_time() - c0) / n

    return best(once, repeat)


def connection_cost(stream: bytes, lines: dict[str, str], repeat: int) -> tuple[float, int]:
    reads, n = chunks(stream), events_in(stream)
    reports = [0]

    def once() -> float:
        conn = live_connection(lines)
        got = 0
        c0 = time.process_time()
        for data in reads:
            for ev in conn.receive_data(data, 1.0):
                if isinstance(ev, ReportsReady):
                    got += len(ev.reports)
        t = time.process_time() - c0
        reports[0] = got
        return t / n

    return best(once, repeat), reports[0]


def gateway_cost(stream: bytes, n_devices: int, repeat: int) -> float:
    from gateway.app import Gateway
    from gateway.config import load_config
    from gateway.linesource import device_lines
    from gateway.store import encode_device

    reads, n = chunks(stream), events_in(stream)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "ami.secret").write_text("bench\n")
        cfg_path = Path(tmp) / "gw.toml"
        cfg_path.write_text(ami_redis.config(n_devices, 5038, 8080))

        def once() -> float:
            gw = Gateway(load_config(cfg_path), cfg_path)
            sources = gw.sources
            conn = live_connection(device_lines(sources.lines("ami")))
            # Every device in service, as after a re-sync.
            sources.reports("ami", conn.translator.feed_all(
                m for m in AmiParser().feed(b"".join(
                    b"Event: DeviceStateChange\r\nDevice: PJSIP/%d\r\nState: NOT_INUSE\r\n\r\n"
                    % (10000 + i) for i in range(n_devices)))))
            gw.publisher._dirty.clear()
            gw.recorder.pending.take()
            c0 = time.process_time()
            for data in reads:
                for ev in conn.receive_data(data, 1.0):
                    if isinstance(ev, ReportsReady):
                        sources.reports("ami", ev.reports)
                [encode_device(s) for s in gw.publisher._dirty.values()]
                gw.publisher._dirty.clear()
                [r.to_json() for recs in gw.recorder.pending.take().values() for r in recs]
            return (time.process_time() - c0) / n

        return best(once, repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n = args.devices
    lines = {f"PJSIP/{10000 + i}": f"d{10000 + i}" for i in range(n)}
    load0 = os.getloadavg()[0]
    rows = []
    for name, stream in (("burst", burst_stream(n)), ("office", office_stream(n))):
        events = events_in(stream)
        parse = parser_cost(stream, lines, args.repeat)
        conn, reports = connection_cost(stream, lines, args.repeat)
        gw = gateway_cost(stream, n, args.repeat)
        rows.append((name, events, reports, parse, conn, gw))
    print(f"CPU per AMI event, best of {args.repeat}, this process ({os.cpu_count()} cores; "
          f"load average {load0:.2f} -> {os.getloadavg()[0]:.2f}); {n} devices")
    print("| stream | events | reports | parser µs | connection µs | gateway µs | "
          "gateway events/s of CPU |")
    print("|---|---|---|---|---|---|---|")
    for name, events, reports, parse, conn, gw in rows:
        print(f"| {name} | {events:,} | {reports:,} | {parse * 1e6:.1f} | {conn * 1e6:.1f} | "
              f"{gw * 1e6:.1f} | {1 / gw:,.0f} |")


if __name__ == "__main__":
    main()
