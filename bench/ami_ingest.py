"""Benchmark (not a test): AMI ingest of an Asterisk reload burst, and reconnect-to-exact.

Replays, from the test AMI peer over TCP on 127.0.0.1, what a reload of N hints looks like
(N ExtensionStatus + N DeviceStateChange events) plus a few hundred channel events, into
AmiSource + LineTracker, and prints:

- the raw parser and parser+translator speed on the same bytes (baseline, no I/O);
- end-to-end events/s through TCP, AmiSource, translator and LineTracker;
- the time from a dropped connection to all N lamps exact again after the re-sync.

Usage: .venv/bin/python bench/ami_ingest.py [--hints 2000] [--calls 150] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from amipeer import AmiPeer, PbxModel  # noqa: E402

from gateway.calls import CallReport, LineTracker  # noqa: E402
from gateway.model import Lamp  # noqa: E402
from gateway.panels.lamps import device_lamp, merge_lamps  # noqa: E402
from gateway.ami.client import AmiSource  # noqa: E402
from gateway.ami.protocol import AmiMessage, AmiParser, format_message  # noqa: E402
from gateway.ami.translate import AmiTranslator  # noqa: E402



def _chan_lamp(c) -> Lamp:
    # Independent of the translator: the peer's own channel states, read as a user would.
    if c.state == 5:
        return Lamp.RINGING
    if c.state == 6:
        return Lamp.HELD if c.held else Lamp.BUSY
    return Lamp.OUTGOING


def build(n_hints: int) -> tuple[AmiPeer, dict[str, str]]:
    peer = AmiPeer(secret="bench")
    lines = {}
    for i in range(n_hints):
        num = str(10000 + i)
        peer.model.add_endpoint(f"PJSIP/{num}", num, f"User {num}")
        # Half the devices are watched by device name, half by hint extension.
        lines[f"PJSIP/{num}" if i % 2 else num] = f"d{num}"
    return peer, lines


def reload_burst(peer: AmiPeer, n_calls: int) -> tuple[bytes, int]:
    """The bytes of a reload: every hint and device state, then some calls."""
    chunks: list[bytes] = []
    m = peer.model
    for ep in m.endpoints.values():
        chunks.append(format_message(m.hint_event(ep)))
        chunks.append(format_message([("Event", "DeviceStateChange"), ("Privilege", "call,all"),
                                      ("Device", ep.device),
                                      ("State", m.device_state(ep.device))]))
    # Channel events from a scratch model with the same endpoints (so the peer's own state
    # is not changed by the burst).
    scratch = PbxModel(sink=lambda p: chunks.append(format_message(p)), epoch=1800000000)
    for ep in m.endpoints.values():
        scratch.add_endpoint(ep.device, ep.number, ep.name)
    nums = [ep.number for ep in m.endpoints.values()]
    for i in range(n_calls):
        c = scratch.internal_call(nums[2 * i], nums[2 * i + 1])
        scratch.answer(c)
        scratch.hangup(c)
    return b"".join(chunks), len(chunks)


def expected_lamps(model: PbxModel, lines: dict[str, str]) -> dict[str, str]:
    by_device: dict[str, list[Lamp]] = {}
    for c in model.channels.values():
        by_device.setdefault(c.device, []).append(_chan_lamp(c))
    out = {}
    for line, dev in lines.items():
        device = line if "/" in line else f"PJSIP/{line}"
        out[dev] = merge_lamps(by_device.get(device, ()), default=Lamp.IDLE).value
    return out


def baseline(data: bytes, lines: dict[str, str]) -> None:
    t0 = time.perf_counter()
    msgs = [m for m in AmiParser().feed(data) if isinstance(m, AmiMessage)]
    t1 = time.perf_counter()
    tr = AmiTranslator(lines)
    n_reports = sum(len(tr.feed(m)) for m in msgs)
    t2 = time.perf_counter()
    print(f"baseline parser only        : {len(msgs) / (t1 - t0):>10,.0f} events/s "
          f"({len(data) / (t1 - t0) / 1e6:.1f} MB/s)")
    print(f"baseline parser+translator  : {len(msgs) / (t2 - t0):>10,.0f} events/s "
          f"({n_reports} reports)")


async def main(n_hints: int, n_calls: int) -> None:
    peer, lines = build(n_hints)
    await peer.start()
    secret = Path(tempfile.mkdtemp()) / "ami.secret"
    secret.write_text("bench\n")
    tracker = LineTracker(sorted(lines.values()))
    synced = asyncio.Event()
    lost = asyncio.Event()
    counts = {"reports": 0}

    class Handler:  # the gateway's handler of source events, reduced to the tracker
        def reports(self, source, reports):
            counts["reports"] += len(reports)
            now = time.time()
            for r in reports:
                if isinstance(r, CallReport):
                    tracker.call(r, now)
                else:
                    tracker.service(r, now)

        def connection_lost(self, source, conn):
            tracker.connection_lost(conn)
            lost.set()

    src = AmiSource("127.0.0.1", peer.port, "blf", secret,
                    {line: (dev, "") for line, dev in lines.items()}, Handler(),
                    on_synced=synced.set, backoff_initial=0.05, backoff_max=0.5)
    t0 = time.perf_counter()
    task = asyncio.create_task(src.run())
    await synced.wait()
    print(f"first connect to synced     : {(time.perf_counter() - t0) * 1000:>10.1f} ms "
          f"({n_hints} hints, {n_hints} device states)")

    data, n_events = reload_burst(peer, n_calls)
    baseline(data, lines)

    seen0 = src.events_seen
    t0 = time.perf_counter()
    peer.send_raw(data)
    while src.events_seen - seen0 < n_events:
        await asyncio.sleep(0.001)
    dt = time.perf_counter() - t0
    print(f"end to end (TCP+source+tracker): {n_events / dt:>7,.0f} events/s "
          f"({n_events} events, {len(data) / 1e6:.2f} MB in {dt * 1000:.1f} ms)")

    # Calls up while the connection drops: a quarter of the devices busy, some ringing/held.
    m = peer.model
    nums = [ep.number for ep in m.endpoints.values()]
    for i in range(0, n_hints // 4, 2):
        c = m.internal_call(nums[i], nums[i + 1])
        m.answer(c)
        if i % 8 == 0:
            m.hold(c.caller)
    for i in range(n_hints // 4, n_hints // 4 + 100, 2):
        m.internal_call(nums[i], nums[i + 1])
    want = expected_lamps(m, lines)
    await asyncio.sleep(0.2)

    synced.clear()
    lost.clear()
    t0 = time.perf_counter()
    await peer.restart(down_for=0.0)
    await lost.wait()
    t_lost = time.perf_counter()
    await synced.wait()
    t_sync = time.perf_counter()
    got = {d: device_lamp(tracker.state(d)).value for d in tracker.devices}
    wrong = sum(1 for d in want if want[d] != got[d])
    print(f"reconnect to all lamps exact: {(t_sync - t_lost) * 1000:>10.1f} ms from "
          f"connection lost (backoff {src.backoff.initial * 1000:.0f} ms included; "
          f"{len(m.channels)} channels, {wrong} of {len(want)} lamps wrong)")
    await src.close()
    await task
    await peer.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hints", type=int, default=2000)
    ap.add_argument("--calls", type=int, default=150, help="calls in the burst (~20 events each)")
    ap.add_argument("--uvloop", action="store_true")
    a = ap.parse_args()
    if a.uvloop:
        import uvloop

        uvloop.install()
    print(f"loop: {'uvloop' if a.uvloop else 'asyncio'}; python {sys.version.split()[0]}")
    asyncio.run(main(a.hints, a.calls))
