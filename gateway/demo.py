"""`blf-gateway demo`: a built-in office and a simulated PBX feeding the TAPI bridge.

The simulated PBX is a real TAPI bridge client: it connects over TCP to the gateway's bridge
listener, sends its full state first, then plays realistic traffic (internal and external
calls ringing, answered, held, missed, call waiting) as JSON lines (contract section 5).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import socket
from dataclasses import dataclass, field

__all__ = ["DEMO_CONFIG", "DEMO_LOGINS", "SimulatedPbx", "demo_config_text", "set_listen",
           "port_in_use", "free_port"]

log = logging.getLogger("gateway.demo")

_PEOPLE = [
    # name, first, last, extension, department
    ("alice", "Alice", "Archer", "201", "Reception"),
    ("bob", "Bob", "Baker", "202", "Reception"),
    ("carol", "Carol", "Chen", "211", "Sales"),
    ("dave", "Dave", "Dietrich", "212", "Sales"),
    ("erin", "Erin", "Evans", "213", "Sales"),
    ("frank", "Frank", "Fischer", "214", "Sales"),
    ("grace", "Grace", "Green", "221", "Support"),
    ("heidi", "Heidi", "Hartmann", "222", "Support"),
    ("ivan", "Ivan", "Ivanov", "223", "Support"),
    ("judy", "Judy", "Jones", "224", "Support"),
    ("mallory", "Mallory", "Meyer", "231", "Management"),
]
# One meeting-room phone: a `nologin` client that exists only to appear on a panel.
_ROOM = ("lobby", "Lobby", "phone", "200", "Facilities")

DEMO_LOGINS = {name: f"{name}-demo" for name, *_ in _PEOPLE}


def demo_config_text(listen: str = "127.0.0.1:8765", bridge: str = "127.0.0.1:7001") -> str:
    out = [
        "# The demo office of `blf-gateway demo`. Edit it while the demo runs: the gateway",
        "# picks up the change within 2 seconds (try blf.devices or a group's rights).",
        "[server]",
        f'listen = "{listen}"',
        "",
        "[state]",
        'dir = "."',
        "",
        "[sources.tapi_bridge]",
        f'listen = "{bridge}"',
        "",
    ]
    for name, first, last, ext, dept in [*_PEOPLE, _ROOM]:
        out += [
            "[[devices]]",
            f'id = "{ext}"',
            f'name = "{first} {last}"',
            f'number = "{ext}"',
            'source = "tapi_bridge"',
            f'line = "Line {ext}"',
            "",
        ]
    # Alice and Bob also own the reception's second line.
    out += ['[[devices]]', 'id = "209"', 'name = "Reception line 2"', 'number = "209"',
            'source = "tapi_bridge"', 'line = "Line 209"', ""]
    for name, first, last, ext, dept in _PEOPLE:
        devices = [ext, "209"] if name in ("alice", "bob") else [ext]
        out += [
            "[[clients]]",
            f'name = "{name}"',
            'type = "user"',
            f'first_name = "{first}"',
            f'last_name = "{last}"',
            f'department = "{dept}"',
            f'sip_user = "{name}.sip"',
            f"devices = {json.dumps(devices)}",
        ]
        if name == "alice":
            out += ['blf = { devices = "all", softphone = true }',
                    'monitor = [ { device = "231", clip = true, pickup = true } ]']
        elif name == "bob":
            out += ['blf = { devices = "first", softphone = true }',
                    'monitor = [ { device = "231", clip = false, pickup = false } ]']
        elif name == "mallory":
            out += ["admin = true  # the switchboard's admin view: why each lamp is what it is"]
        out.append("")
    out += [
        "[[clients]]",
        f'name = "{_ROOM[0]}"',
        'type = "nologin"',
        f'first_name = "{_ROOM[1]}"',
        f'last_name = "{_ROOM[2]}"',
        f'devices = ["{_ROOM[3]}"]',
        "",
        "[[groups]]",
        'name = "reception"',
        'members = ["alice", "bob", "mallory", "lobby"]',
        'rights = { visible = true, calls = true, numbers = "all", pickup = true, presence = true }',
        "",
        "[[groups]]",
        'name = "sales"',
        'members = ["alice", "carol", "dave", "erin", "frank"]',
        'rights = { visible = true, calls = true, numbers = "inbound", pickup = true, presence = true }',
        "",
        "[[groups]]",
        'name = "support"',
        'members = ["bob", "grace", "heidi", "ivan", "judy"]',
        'rights = { visible = true, calls = true, numbers = "none", pickup = false, presence = true }',
        "",
        "[[groups]]",
        'name = "everyone"',
        f"members = {json.dumps([p[0] for p in _PEOPLE] + [_ROOM[0]])}",
        'rights = { visible = true, calls = false, numbers = "none", pickup = false, presence = false }',
        "",
    ]
    return "\n".join(out)


DEMO_CONFIG = demo_config_text()


def set_listen(text: str, section: str, value: str) -> str:
    """The demo configuration `text` with `listen` of `[section]` set to `value` (the rest of
    the file, with whatever the user edited, kept as it is)."""
    pattern = re.compile(r"(^\[" + re.escape(section) + r"\][^\[]*?^listen\s*=\s*)\"[^\"]*\"",
                         re.M | re.S)
    new, n = pattern.subn(lambda m: m.group(1) + json.dumps(value), text, count=1)
    if n == 0:  # no such key (edited away): add it under the section, or the section too
        header = re.search(r"^\[" + re.escape(section) + r"\]\s*$", text, re.M)
        line = f"listen = {json.dumps(value)}"
        if header:
            return text[: header.end()] + "\n" + line + text[header.end():]
        return text.rstrip("\n") + f"\n\n[{section}]\n{line}\n"
    return new


def port_in_use(host: str, port: int) -> bool:
    """Whether a server could not listen on host:port now (someone else does)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # As asyncio's servers do: a port left in TIME_WAIT is free to take.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str) -> int:
    """A port the system says is free on `host`."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]

_EXTERNAL = [
    ("+4930123456", "Miller Ltd"),
    ("+4940987654", None),
    ("+441632960961", "Contoso UK"),
    ("08912345678", "Fabrikam"),
    ("+33142868200", None),
    ("017612345678", "Mobile caller"),
]


@dataclass
class _Line:
    line: str
    number: str
    calls: set[str] = field(default_factory=set)


class SimulatedPbx:
    """A TAPI bridge client that plays office phone traffic against the gateway."""

    def __init__(self, host: str, port: int, lines: list[tuple[str, str]],
                 *, seed: int | None = None, pace: float = 1.0) -> None:
        self.host, self.port = host, port
        self.lines = {line: _Line(line, number) for line, number in lines}
        self.rng = random.Random(seed)
        self.pace = pace
        self._writer: asyncio.StreamWriter | None = None
        self._next_call = 1000

    def _send(self, **msg: object) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write((json.dumps(msg) + "\n").encode())

    def _call_id(self) -> str:
        self._next_call += 1
        return f"0x{self._next_call:05x}"

    async def _sleep(self, lo: float, hi: float) -> None:
        await asyncio.sleep(self.rng.uniform(lo, hi) * self.pace)

    def _free(self) -> list[_Line]:
        return [ln for ln in self.lines.values() if not ln.calls]

    async def run(self) -> None:
        delay = 0.5
        while True:
            try:
                _, self._writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
                continue
            delay = 0.5
            log.info("simulated PBX connected to the TAPI bridge port %d", self.port)
            for ln in self.lines.values():
                ln.calls.clear()
                self._send(device=ln.line, devstate="inservice")
            tasks: set[asyncio.Task] = set()
            try:
                while not self._writer.is_closing():
                    scenario = self.rng.choice(
                        [self.internal, self.inbound, self.inbound, self.outbound,
                         self.call_waiting]
                    )
                    t = asyncio.create_task(scenario())
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                    await self._sleep(1.0, 3.0)
                    await self._writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                for t in tasks:
                    t.cancel()
                self._writer = None
            log.info("simulated PBX lost the bridge connection; reconnecting")

    async def internal(self) -> None:
        free = self._free()
        if len(free) < 2:
            return
        a, b = self.rng.sample(free, 2)
        c_out, c_in = self._call_id(), self._call_id()
        a.calls.add(c_out)
        b.calls.add(c_in)
        try:
            self._send(device=a.line, call=c_out, state="dialing", caller=a.number, called=b.number)
            self._send(device=a.line, call=c_out, state="ringback", caller=a.number, called=b.number)
            self._send(device=b.line, call=c_in, state="offering", caller=a.number, called=b.number)
            await self._sleep(2, 6)
            if self.rng.random() < 0.25:  # not answered
                self._send(device=b.line, call=c_in, state="disconnected")
                self._send(device=a.line, call=c_out, state="disconnected")
                return
            self._send(device=b.line, call=c_in, state="connected", caller=a.number, called=b.number)
            self._send(device=a.line, call=c_out, state="connected", caller=a.number, called=b.number)
            await self._sleep(4, 15)
            self._send(device=a.line, call=c_out, state="disconnected")
            self._send(device=b.line, call=c_in, state="disconnected")
        finally:
            self._send(device=a.line, call=c_out, state="idle")
            self._send(device=b.line, call=c_in, state="idle")
            a.calls.discard(c_out)
            b.calls.discard(c_in)

    async def inbound(self, line: _Line | None = None) -> None:
        if line is None:
            free = self._free()
            if not free:
                return
            line = self.rng.choice(free)
        number, name = self.rng.choice(_EXTERNAL)
        blocked = self.rng.random() < 0.1
        call = self._call_id()
        line.calls.add(call)
        who = {"caller": "" if blocked else number, "called": line.number,
               "caller_name": "" if blocked else (name or ""), "blocked": blocked}
        try:
            self._send(device=line.line, call=call, state="offering", **who)
            await self._sleep(3, 10)
            if self.rng.random() < 0.3:  # missed
                self._send(device=line.line, call=call, state="disconnected")
                return
            self._send(device=line.line, call=call, state="connected", **who)
            await self._sleep(3, 10)
            if self.rng.random() < 0.4:
                self._send(device=line.line, call=call, state="onhold", **who)
                await self._sleep(2, 6)
                self._send(device=line.line, call=call, state="connected", **who)
                await self._sleep(2, 8)
            self._send(device=line.line, call=call, state="disconnected")
        finally:
            self._send(device=line.line, call=call, state="idle")
            line.calls.discard(call)

    async def outbound(self) -> None:
        free = self._free()
        if not free:
            return
        line = self.rng.choice(free)
        number, name = self.rng.choice(_EXTERNAL)
        call = self._call_id()
        line.calls.add(call)
        who = {"caller": line.number, "called": number, "called_name": name or ""}
        try:
            self._send(device=line.line, call=call, state="dialtone", caller=line.number)
            await self._sleep(0.5, 1.5)
            self._send(device=line.line, call=call, state="ringback", **who)
            await self._sleep(2, 6)
            if self.rng.random() < 0.2:
                self._send(device=line.line, call=call, state="busy", **who)
                await self._sleep(1, 2)
                self._send(device=line.line, call=call, state="disconnected")
                return
            self._send(device=line.line, call=call, state="connected", **who)
            await self._sleep(4, 15)
            self._send(device=line.line, call=call, state="disconnected")
        finally:
            self._send(device=line.line, call=call, state="idle")
            line.calls.discard(call)

    async def call_waiting(self) -> None:
        """A second call rings on a line that is already talking."""
        free = self._free()
        if not free:
            return
        line = self.rng.choice(free)
        first = asyncio.create_task(self.inbound(line))
        await self._sleep(5, 8)
        if line.calls:
            number, name = self.rng.choice(_EXTERNAL)
            call = self._call_id()
            line.calls.add(call)
            try:
                self._send(device=line.line, call=call, state="offering", caller=number,
                           called=line.number, caller_name=name or "")
                await self._sleep(3, 6)
                self._send(device=line.line, call=call, state="disconnected")
            finally:
                self._send(device=line.line, call=call, state="idle")
                line.calls.discard(call)
        await first
