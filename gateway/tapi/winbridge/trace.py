"""Replay traces: TAPI messages in TAPI's own terms, played through the same translator and
gateway connection as the live message loop.

A trace is a text file of JSON objects, one a line (``#`` starts a comment line). The
records (full description in docs/tapi-bridge.md, "Replay traces"):

``{"open": 0, "LineName": "Line 201", "Address": "201"}``
    lineOpenW succeeded on dwDeviceID 0 (name from LINEDEVCAPS, address from
    LINEADDRESSCAPS; optional ``"dwDevStatusFlags"``, default LINEDEVSTATUSFLAGS_INSERVICE,
    and ``"dwPrivileges"``, default LINECALLPRIVILEGE_MONITOR).
``{"msg": "LINE_CALLSTATE", "hCall": 17, "dwParam1": "LINECALLSTATE_OFFERING", ...}``
    a LINEMESSAGE. ``line`` gives the dwDeviceID where the message is about a line
    (LINE_LINEDEVSTATE, LINE_APPNEWCALL, LINE_CLOSE); ``hCall`` the call handle of call
    messages (dwParam2 of LINE_APPNEWCALL). Parameters take constant names, joined by
    ``|`` for bit masks, or numbers. ``"callinfo"`` holds the LINECALLINFO fields that
    changed (``dwCallID``, ``dwRelatedCallID``, ``dwOrigin``, ``dwReason``, ``CallerID``,
    ``CallerIDName``, ``dwCallerIDFlags``, and the same for CalledID, ConnectedID,
    RedirectionID, RedirectingID); the replay keeps each call's LINECALLINFO, lays it out
    in bytes exactly as lineGetCallInfoW fills one and reads it back with the bridge's own
    reader.
``{"await": "linePickupW"}``
    wait (``"timeout"`` seconds, default 10) until the gateway has made the bridge call that
    TAPI function; a following ``{"msg": "LINE_REPLY", "dwParam2": 0}`` answers it (without
    ``dwParam1``: the oldest unanswered request).
``{"sleep": 0.5}``, ``{"mark": "answered"}``
    a pause; a named point where a test (or ``--replay-until``) stops.

Any record may carry ``"t"``: seconds from the start of the trace it is played at (scaled by
``--speed``); without, records follow each other at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import constants as C
from .callinfo import CallInfo, Party, pack_callinfo, parse_callinfo
from .translate import Event, LineOpened, Reinitialized, TapiMessage, TapiRequest

__all__ = ["TraceError", "Record", "load_trace", "parse_trace", "Replay", "to_record",
           "Recorder"]

MAX_TRACE_BYTES = 64 << 20
_ALL = {k: v for group in C.GROUPS.values() for k, v in group.items()}
_PARTIES = ("CallerID", "CalledID", "ConnectedID", "RedirectionID", "RedirectingID")
_CALLINFO_KEYS = {"dwCallID", "dwRelatedCallID", "dwOrigin", "dwReason", "dwLineDeviceID",
                  "dwAddressID"} | {p + s for p in _PARTIES for s in ("", "Name")} \
    | {f"dw{p}Flags" for p in _PARTIES}
_CALL_MESSAGES = {"LINE_CALLSTATE", "LINE_CALLINFO", "LINE_APPNEWCALL"}


class TraceError(ValueError):
    """A trace that cannot be played; the text says where and why."""


@dataclass(frozen=True, slots=True)
class Record:
    lineno: int
    kind: str  # open | msg | await | sleep | mark
    data: dict[str, Any] = field(default_factory=dict)
    at: float | None = None


def _value(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise TraceError(f"{where}: expected a TAPI constant name or a number, got {v!r}")
    try:
        return C.parse_flags(_ALL, v) & 0xFFFFFFFF
    except ValueError as exc:
        raise TraceError(f"{where}: {exc}") from None


def parse_trace(lines: Iterable[str], name: str = "trace") -> list[Record]:
    """Check every record of a trace; raise TraceError naming the first bad one."""
    out: list[Record] = []
    for n, text in enumerate(lines, 1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        where = f"{name}:{n}"
        try:
            rec = json.loads(text)
        except (ValueError, RecursionError):
            raise TraceError(f"{where}: not a JSON object") from None
        if not isinstance(rec, dict):
            raise TraceError(f"{where}: not a JSON object")
        at = rec.get("t")
        if at is not None and (isinstance(at, bool) or not isinstance(at, (int, float))
                               or at < 0):
            raise TraceError(f"{where}: t must be a number of seconds >= 0")
        if "open" in rec:
            if not isinstance(rec["open"], int) or isinstance(rec["open"], bool):
                raise TraceError(f"{where}: open takes a dwDeviceID (a number)")
            if not isinstance(rec.get("LineName"), str) or not rec["LineName"]:
                raise TraceError(f"{where}: open needs a LineName")
            for k in ("dwDevStatusFlags", "dwPrivileges"):
                if k in rec:
                    _value(rec[k], f"{where}: {k}")
            out.append(Record(n, "open", rec, at))
        elif "msg" in rec:
            msg = rec["msg"]
            if msg not in C.MESSAGES:
                raise TraceError(f"{where}: {msg!r} is not a LINE_* message")
            for k in ("dwParam1", "dwParam2", "dwParam3", "hCall", "line"):
                if k in rec:
                    _value(rec[k], f"{where}: {k}")
            if msg in _CALL_MESSAGES and "hCall" not in rec:
                raise TraceError(f"{where}: {msg} needs hCall")
            info = rec.get("callinfo", {})
            if not isinstance(info, dict):
                raise TraceError(f"{where}: callinfo must be an object")
            for k, v in info.items():
                if k not in _CALLINFO_KEYS:
                    raise TraceError(f"{where}: {k!r} is not a LINECALLINFO field the "
                                     "bridge reads")
                if k.startswith("dw"):
                    _value(v, f"{where}: callinfo.{k}")
                elif v is not None and not isinstance(v, str):
                    raise TraceError(f"{where}: callinfo.{k} must be a string or null")
            out.append(Record(n, "msg", rec, at))
        elif "await" in rec:
            if rec["await"] not in ("linePickupW", "lineRedirectW"):
                raise TraceError(f"{where}: await takes linePickupW or lineRedirectW")
            out.append(Record(n, "await", rec, at))
        elif "sleep" in rec:
            if isinstance(rec["sleep"], bool) or not isinstance(rec["sleep"], (int, float)):
                raise TraceError(f"{where}: sleep takes seconds")
            out.append(Record(n, "sleep", rec, at))
        elif "mark" in rec:
            out.append(Record(n, "mark", rec, at))
        else:
            raise TraceError(f"{where}: a record has open, msg, await, sleep or mark")
    return out


def load_trace(path: str | Path) -> list[Record]:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_TRACE_BYTES:
            raise TraceError(f"{p}: larger than {MAX_TRACE_BYTES >> 20} MiB")
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TraceError(f"{p}: not UTF-8 text") from None
    return parse_trace(text.splitlines(), p.name)


def _merge(info: CallInfo, fields: dict[str, Any]) -> CallInfo:
    """The call's LINECALLINFO after the changed fields of a record."""
    simple = {"dwCallID": "call_id", "dwRelatedCallID": "related_call_id",
              "dwOrigin": "origin", "dwReason": "reason", "dwLineDeviceID": "line_device",
              "dwAddressID": "address_id"}
    changes: dict[str, Any] = {}
    for k, attr in simple.items():
        if k in fields:
            changes[attr] = _value(fields[k], k)
    for p, attr in zip(_PARTIES, ("caller", "called", "connected", "redirection",
                                  "redirecting")):
        party: Party = getattr(info, attr)
        if p in fields:
            party = replace(party, number=fields[p])
        if p + "Name" in fields:
            party = replace(party, name=fields[p + "Name"])
        if f"dw{p}Flags" in fields:
            party = replace(party, flags=_value(fields[f"dw{p}Flags"], p))
        changes[attr] = party
    return replace(info, **changes)


# The mode bits of dwParam2, by the LINECALLSTATE they come with.
_MODE_GROUP = {
    C.CALLSTATE["LINECALLSTATE_OFFERING"]: C.OFFERINGMODE,
    C.CALLSTATE["LINECALLSTATE_CONNECTED"]: C.CONNECTEDMODE,
    C.CALLSTATE["LINECALLSTATE_DIALTONE"]: C.DIALTONEMODE,
    C.CALLSTATE["LINECALLSTATE_BUSY"]: C.BUSYMODE,
    C.CALLSTATE["LINECALLSTATE_SPECIALINFO"]: C.SPECIALINFO,
    C.CALLSTATE["LINECALLSTATE_DISCONNECTED"]: C.DISCONNECTMODE,
}
_MSG_NAMES = {v: k for k, v in C.MESSAGES.items()}


def _flags(group: dict[str, int], value: int) -> str | int:
    if not value:
        return 0
    names = C.flag_names(group, value)
    return "|".join(names) if not any(n.startswith("0x") for n in names) else hex(value)


def _callinfo_fields(info: CallInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "dwCallID": hex(info.call_id), "dwRelatedCallID": hex(info.related_call_id),
        "dwOrigin": _flags(C.CALLORIGIN, info.origin),
        "dwReason": _flags(C.CALLREASON, info.reason)}
    for p, party in zip(_PARTIES, (info.caller, info.called, info.connected,
                                   info.redirection, info.redirecting)):
        if party.number is not None:
            out[p] = party.number
        if party.name is not None:
            out[p + "Name"] = party.name
        if party.flags:
            out[f"dw{p}Flags"] = _flags(C.CALLPARTYID, party.flags)
    return out


def to_record(event: Event, t: float | None = None) -> dict[str, Any]:
    """One event of the live loop as a trace record (what --record writes)."""
    rec: dict[str, Any]
    if isinstance(event, LineOpened):
        rec = {"open": event.device, "LineName": event.name}
        if event.address is not None:
            rec["Address"] = event.address
        if not event.in_service:
            rec["dwDevStatusFlags"] = 0
        if event.owner:
            rec["dwPrivileges"] = "LINECALLPRIVILEGE_MONITOR|LINECALLPRIVILEGE_OWNER"
    elif isinstance(event, Reinitialized):
        rec = {"msg": "LINE_LINEDEVSTATE", "dwParam1": "LINEDEVSTATE_REINIT"}
    else:
        name = _MSG_NAMES.get(event.msg, str(event.msg))
        rec = {"msg": name}
        p1: Any = event.param1
        p2: Any = event.param2
        p3: Any = event.param3
        if name in ("LINE_CALLSTATE", "LINE_CALLINFO"):
            rec["hCall"], rec["line"] = event.device, event.instance
            if name == "LINE_CALLSTATE":
                p1 = C.name_of(C.CALLSTATE, event.param1)
                p2 = _flags(_MODE_GROUP.get(event.param1, {}), event.param2)
                p3 = _flags(C.CALLPRIVILEGE, event.param3)
            else:
                p1 = _flags(C.CALLINFOSTATE, event.param1)
        elif name == "LINE_APPNEWCALL":
            rec["line"], rec["hCall"] = event.instance, event.param2
            p2 = None
            p3 = _flags(C.CALLPRIVILEGE, event.param3)
        elif name in ("LINE_LINEDEVSTATE", "LINE_CLOSE"):
            rec["line"] = event.instance
            p1 = _flags(C.DEVSTATE, event.param1)
        elif name == "LINE_REPLY":
            p2 = C.name_of(C.ERRORS, event.param2) if event.param2 else 0
        for k, v in (("dwParam1", p1), ("dwParam2", p2), ("dwParam3", p3)):
            if v not in (None, 0):
                rec[k] = v
        if event.info is not None:
            rec["callinfo"] = _callinfo_fields(event.info)
    if t is not None:
        rec["t"] = round(t, 3)
    return rec


class Recorder:
    """Writes every event the bridge is fed as a trace (``run --record FILE``): what a real
    TSP sent, to replay here. The file holds callers' numbers: keep it like call records."""

    def __init__(self, path: str | Path, clock=time.monotonic) -> None:
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.clock = clock
        self.start = clock()
        self.file.write(f"# recorded by blf-tapi-bridge at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")

    def __call__(self, event: Event) -> None:
        if self.file.closed:
            return
        self.file.write(json.dumps(to_record(event, self.clock() - self.start),
                                   ensure_ascii=False) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class Replay:
    """Plays a trace into a :class:`~.link.Bridge` (which calls it as its provider)."""

    def __init__(self, records: list[Record], bridge, speed: float = 1.0) -> None:
        self.records = records
        self.bridge = bridge
        self.speed = speed
        self.pos = 0
        self.infos: dict[int, tuple[CallInfo, CallInfo]] = {}  # hCall -> (held, as read)
        self.requests: list[tuple[int, TapiRequest]] = []  # made, not yet answered
        self.made: list[TapiRequest] = []  # not yet awaited by the trace
        self.history: list[TapiRequest] = []  # every request the bridge made
        self._made = asyncio.Event()
        self._next_id = 1
        self._start: float | None = None
        self.played = 0

    # -- the provider side (what the bridge asks of "TAPI") --------------------------------

    async def resync(self) -> None:
        return None  # the translator's state is all a replay has

    def execute(self, request: TapiRequest) -> None:
        rid = self._next_id
        self._next_id += 1
        self.requests.append((rid, request))
        self.made.append(request)
        self.history.append(request)
        self._made.set()
        self.bridge.post_request_result(request.op, rid)

    def deallocate(self, hcalls: list[int]) -> None:
        for h in hcalls:
            self.infos.pop(h, None)

    # -- playing ---------------------------------------------------------------------------

    async def play(self, until_mark: str | None = None) -> bool:
        """Play from where it stopped to the mark (True) or to the end (False)."""
        if self._start is None:
            self._start = time.monotonic()
        while self.pos < len(self.records):
            rec = self.records[self.pos]
            self.pos += 1
            if rec.at is not None and self.speed > 0:
                due = self._start + rec.at / self.speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self._play(rec)
            self.played += 1
            if self.played % 64 == 0:
                # A replay may wait for the gateway (a live TAPI loop never does: it drops
                # the connection instead and re-sends the full state).
                await self.bridge.writable() if hasattr(self.bridge, "writable") \
                    else await asyncio.sleep(0)
            if rec.kind == "mark" and rec.data["mark"] == until_mark:
                return True
        if until_mark is not None:
            raise TraceError(f"no mark {until_mark!r} in the trace")
        return False

    async def _play(self, rec: Record) -> None:
        d = rec.data
        if rec.kind == "open":
            flags = _value(d.get("dwDevStatusFlags", "LINEDEVSTATUSFLAGS_INSERVICE"), "flags")
            priv = _value(d.get("dwPrivileges", "LINECALLPRIVILEGE_MONITOR"), "privileges")
            self.bridge.feed(LineOpened(
                d["open"], d["LineName"], d.get("Address"),
                bool(flags & C.DEVSTATUSFLAGS["LINEDEVSTATUSFLAGS_INSERVICE"]),
                bool(priv & C.CALLPRIVILEGE["LINECALLPRIVILEGE_OWNER"])))
        elif rec.kind == "msg":
            self.bridge.feed(self._message(rec))
        elif rec.kind == "sleep":
            await asyncio.sleep(d["sleep"] / (self.speed or 1))
        elif rec.kind == "await":
            await self._await(d["await"], float(d.get("timeout", 10)), rec)

    async def _await(self, function: str, timeout: float, rec: Record) -> None:
        deadline = time.monotonic() + timeout
        while not any(r.function == function for r in self.made):
            self._made.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TraceError(f"line {rec.lineno}: {function} was not called within "
                                 f"{timeout:g} s")
            try:
                await asyncio.wait_for(self._made.wait(), left)
            except asyncio.TimeoutError:
                pass
        i = next(i for i, r in enumerate(self.made) if r.function == function)
        self.made.pop(i)

    def _message(self, rec: Record) -> TapiMessage:
        d = rec.data
        name = d["msg"]
        msg = C.MESSAGES[name]
        p = {k: _value(d[k], k) for k in ("dwParam1", "dwParam2", "dwParam3") if k in d}
        hcall = _value(d["hCall"], "hCall") if "hCall" in d else 0
        line = _value(d["line"], "line") if "line" in d else None
        info = None
        if name in _CALL_MESSAGES:
            if name == "LINE_APPNEWCALL":
                p["dwParam2"] = hcall
            old, read = self.infos.get(hcall, (None, None))
            changes = d.get("callinfo")
            if old is None or changes:
                merged = _merge(old or CallInfo(), changes or {})
                # Laid out as lineGetCallInfoW fills the buffer, read back by the bridge's
                # own reader.
                read = parse_callinfo(pack_callinfo(merged))
                self.infos[hcall] = (merged, read)
            else:
                merged = old
            info = read
            if line is None:
                line = self.bridge.translator.device_of(hcall)
            if line is None:
                line = merged.line_device
        if name == "LINE_REPLY" and "dwParam1" not in p:
            if not self.requests:
                raise TraceError(f"line {rec.lineno}: LINE_REPLY but no request is waiting")
            p["dwParam1"] = self.requests[0][0]
        if name == "LINE_REPLY":
            self.requests = [(rid, r) for rid, r in self.requests if rid != p["dwParam1"]]
        device = hcall if name in ("LINE_CALLSTATE", "LINE_CALLINFO") else (line or 0)
        return TapiMessage(msg, device, line or 0, p.get("dwParam1", 0), p.get("dwParam2", 0),
                           p.get("dwParam3", 0), info)
