"""sipp as a PBX's presence/dialog server, and the gateway side as the lead wires it (reports
-> LineTracker -> device lamps), for the SIP line source tests."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from conftest import eventually
from gateway.calls import CallReport, LineTracker, ServiceReport
from gateway.model import Lamp
from gateway.panels.lamps import device_lamp

from sip import scenarios as sc

__all__ = ["Pbx", "Lamps", "until", "free_udp_port"]


def free_udp_port() -> int:
    from conftest import free_udp_port as free  # one picker: never the same port twice

    return free()


_free_udp_port = free_udp_port


class Pbx:
    """sipp as the PBX's presence server for one watched user."""

    def __init__(self, tmp: Path, steps: list[str], user: str = "201",
                 port: int | None = None, keys: dict[str, str] | None = None,
                 transport: str = "udp") -> None:
        self.tmp, self.user, self.keys = tmp, user, keys or {}
        self.transport = transport  # "udp" or "tcp" (this sipp has no TLS)
        self.port = port or _free_udp_port()
        self.scenario = tmp / f"pbx-{self.port}-{time.monotonic_ns()}.xml"
        self.scenario.write_text(sc.presence_server(steps))
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        tail = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{self.user}@127.0.0.1:{self.port}{tail}"

    def start(self) -> Pbx:
        self.proc = subprocess.Popen(
            ["sipp", "-sf", str(self.scenario), "-i", "127.0.0.1", "-p", str(self.port),
             "-t", "t1" if self.transport == "tcp" else "u1",
             "-s", self.user, "-nostdin", "-trace_err", "-error_file",
             str(self.scenario.with_suffix(".err"))]
            + [a for k, v in self.keys.items() for a in ("-key", k, v)],
            cwd=self.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class Lamps:
    """The gateway side as the lead wires it: reports -> LineTracker -> device lamps."""

    def __init__(self, devices: list[str]) -> None:
        self.tracker = LineTracker(devices)
        self.history: dict[str, list[Lamp]] = {d: [] for d in devices}
        self.lost: list[str | None] = []
        self.reports: list[CallReport | ServiceReport] = []

    def _record(self, states) -> None:
        for st in states:
            lamp = device_lamp(st)
            h = self.history[st.device]
            if not h or h[-1] is not lamp:
                h.append(lamp)

    def on_reports(self, reports) -> None:
        now = time.time()
        for r in reports:
            self.reports.append(r)
            if isinstance(r, ServiceReport):
                self._record(self.tracker.service(r, now))
            else:
                self._record(self.tracker.call(r, now))

    def on_connection_lost(self, conn: str | None) -> None:
        self.lost.append(conn)
        self._record(self.tracker.connection_lost(conn))

    def lamp(self, device: str) -> Lamp:
        return device_lamp(self.tracker.state(device))


async def until(pred, timeout: float = 20.0, what: str = "condition"):
    """conftest.eventually with the longer wait that SIP exchanges need."""
    return await eventually(pred, timeout, what=what)
