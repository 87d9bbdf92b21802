"""Per-event and per-delivery CPU costs, in-process, for the sizing guide (docs/performance.md).

    .venv/bin/python bench/costs.py [--lines 50000] [--devices 500] [--clients 1000]

No sockets and no Redis: the gateway's own objects, built from a configuration like
bench/run.py's, driven directly; CPU time of this process (`time.process_time`), best of
five, so other work on the machine disturbs it less than wall-clock figures.

- report path: one TAPI bridge line -> parsed -> tracker -> provenance record -> the
  publisher's queue (what :meth:`TapiBridgeServer.feed_lines` does per line), with the default
  `[provenance] keep = 50` and with provenance off, plus encoding the states and records the
  writers would send (per line);
- follower path: one change read from the log -> engine -> deltas (per change, no client);
- fan-out: one lamp change rendered for one audience and handed to N subscribers whose
  sockets are stand-ins that only count the bytes (per delivery: the gateway's part of it;
  the kernel's socket write comes on top and is in bench/run.py's fan-out figure).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import run  # noqa: E402


def best(fn, repeat: int = 5) -> float:  # noqa: ANN001
    out = float("inf")
    for _ in range(repeat):
        out = min(out, fn())
    return out


def config(tmp: Path, devices: int, keep: int) -> Path:
    path = tmp / f"c{keep}.toml"
    path.write_text(f"[provenance]\nkeep = {keep}\n\n" + run.gateway_config(1, 2, devices))
    return path


def lines_for(devices: int, n: int, tag: str) -> list[bytes]:
    out = []
    for k in range(n // devices):
        for d in range(devices):
            call = f"{tag}{d}x{k // 2}"
            out.append(run.bline(device=str(1000 + d), call=call, state="offering", caller="555")
                       if k % 2 == 0 else
                       run.bline(device=str(1000 + d), call=call, state="disconnected"))
    return out


async def report_path(tmp: Path, devices: int, n: int, keep: int) -> float:
    """CPU seconds per bridge line, through the real handler and its writers' encoding."""
    from gateway.app import Gateway
    from gateway.config import load_config
    from gateway.provenance import records_text
    from gateway.store import encode_device

    cfg_path = config(tmp, devices, keep)
    rounds = iter(range(100))

    def once() -> float:
        gw = Gateway(load_config(cfg_path), cfg_path)
        bridge = gw.sources._make("tapi_bridge")
        bridge.feed_lines([run.bline(device=str(1000 + d), devstate="inservice")
                           for d in range(devices)], "c1")
        gw.publisher._dirty.clear()
        gw.recorder.pending.take()
        lines = lines_for(devices, n, f"r{next(rounds)}")
        c0 = time.process_time()
        for i in range(0, len(lines), 450):  # about what one 32 KiB read holds
            bridge.feed_lines(lines[i:i + 450], "c1")
            # What the publisher and the recorder encode for each batch they write.
            [encode_device(s) for s in gw.publisher._dirty.values()]
            gw.publisher._dirty.clear()
            records_text([r for recs in gw.recorder.pending.take().values() for r in recs])
        return (time.process_time() - c0) / len(lines)

    return best(once)


def follower_path(devices: int, n: int) -> float:
    """CPU seconds per change: engine update of a device state read from the log."""
    from gateway.config import parse_config
    from gateway.panels.engine import Engine
    from gateway.store import _decode_change, encode_device
    from gateway.calls import LineTracker, CallReport, Phase

    cfg = parse_config(run.gateway_config(1, 2, devices))
    tracker = LineTracker([str(1000 + d) for d in range(devices)])
    fields = []
    for k in range(n // devices):
        for d in range(devices):
            phase = Phase.RINGING if k % 2 == 0 else Phase.ENDED
            (state,) = tracker.call(CallReport(str(1000 + d), f"f{d}x{k // 2}", phase,
                                               remote="555"), 1.0 + k) or (None,)
            if state is not None:
                fields.append({"k": "d", "i": state.device, "v": encode_device(state)})

    def once() -> float:
        engine = Engine(cfg, 1)
        c0 = time.process_time()
        for seq, f in enumerate(fields, start=2):
            ch = _decode_change(seq, f)
            engine.update_device(ch.state, ch.seq)
        return (time.process_time() - c0) / len(fields)

    return best(once)


async def fanout_path(clients: int, changes: int) -> float:
    """CPU seconds per delivery: Hub.deliver to `clients` subscribers of one panel whose
    transports count bytes (the gateway's work per client per change, without the kernel)."""
    from gateway.config import parse_config
    from gateway.model import Call, CallState, DeviceState, DeviceStatus, Direction
    from gateway.panels.engine import Engine
    from gateway.panels.rights import Rights
    from gateway.server.hub import Hub, Outbox

    cfg = parse_config(run.gateway_config(1, 2, run.MEMBERS))

    class Transport:
        __slots__ = ("n",)

        def __init__(self) -> None:
            self.n = 0

        def get_write_buffer_size(self) -> int:
            return 0

        def write(self, data: bytes) -> None:
            self.n += len(data)

        def writelines(self, chunks) -> None:  # noqa: ANN001
            for c in chunks:
                self.n += len(c)

        def is_closing(self) -> bool:
            return False

    from websockets.protocol import OPEN
    from websockets.server import ServerProtocol
    from websockets.asyncio.server import ServerConnection

    class Sub:
        def __init__(self) -> None:
            proto = ServerProtocol()
            proto.state = OPEN
            self.ws = ServerConnection(proto, None)  # type: ignore[arg-type]
            self.ws.transport = Transport()  # type: ignore[assignment]
            self.outbox = Outbox(1000)
            self.batch = False

    hub = Hub(cfg)
    rights = Rights(numbers="all")
    subs = [Sub() for _ in range(clients)]
    for s in subs:
        hub.add(s, ("panel", run.PANEL), rights)
    engine = Engine(cfg, 1)
    deltas = []
    for k in range(changes):
        d = k % run.MEMBERS
        calls = (Call(f"{1000 + d}/x{k}", Direction.IN, CallState.RINGING, 1.0, "555", None,
                      None),) if k % 2 == 0 else ()
        deltas.append(engine.update_device(DeviceState(str(1000 + d), DeviceStatus.ONLINE,
                                                       calls), k + 2))

    def once() -> float:
        c0 = time.process_time()
        for ds in deltas:
            hub.deliver(ds)
        return (time.process_time() - c0) / (changes * clients)

    return best(once, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=50000)
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--clients", type=int, default=1000)
    args = ap.parse_args()
    import os

    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        on = asyncio.run(report_path(Path(tmp), args.devices, args.lines, 50))
        off = asyncio.run(report_path(Path(tmp), args.devices, args.lines, 0))
    follow = follower_path(args.devices, args.lines)
    fan = asyncio.run(fanout_path(args.clients, 200))
    print(f"CPU per unit, best of 5, this process ({os.cpu_count()} cores; load average "
          f"{load0:.2f} -> {os.getloadavg()[0]:.2f})")
    print(f"| path | µs | per |")
    print(f"|---|---|---|")
    print(f"| bridge line -> state queued, provenance keep = 50 | {on * 1e6:.1f} | line |")
    print(f"| bridge line -> state queued, provenance off | {off * 1e6:.1f} | line |")
    print(f"| change from the log -> engine deltas | {follow * 1e6:.1f} | change, per process |")
    print(f"| lamp frame to a subscriber (gateway side, {args.clients} subscribers) | "
          f"{fan * 1e6:.2f} | delivery |")


if __name__ == "__main__":
    main()
