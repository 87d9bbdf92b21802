"""TAPI line messages and LINECALLINFO -> the bridge lines of the gateway contract. Pure.

:class:`Translator` is fed what the TAPI side saw (:class:`LineOpened`, :class:`TapiMessage`
with the LINECALLINFO read for it, :class:`Reinitialized`) and returns an :class:`Out`: the
bridge lines to send (contract section 5), the call handles to give back with
lineDeallocateCall, and notes for the log. It keeps the current state of every opened line and
call, so :meth:`Translator.snapshot` is the full state the bridge sends on every (re)connect.

Commands from the gateway (pickup) go through :meth:`Translator.command`, which checks them
against that state and returns the TAPI request to make (:class:`TapiRequest`);
:meth:`Translator.request_sent`, the LINE_REPLY message and :meth:`Translator.tick` turn it
into the result line. No clock is read here: `now` is passed in, :meth:`next_deadline` says
when :meth:`tick` is due.

The rules (see docs/tapi-bridge.md for the reasons):

- a call's id on the wire is its dwCallID (hex), or ``h`` + the call handle where the
  provider gives none; a dwCallID that changes mid-call ends the old id first;
- the direction comes from dwOrigin (OUTBOUND: out; INTERNAL, EXTERNAL, INBOUND: in), else
  from the first state seen (OFFERING/ACCEPTED: in; DIALTONE...PROCEEDING: out), else from
  dwReason (a call that arrived here by pickup, transfer, redirect or forwarding: in);
- the remote party is ConnectedID where the provider gives one, else CallerID (in) or
  CalledID (out); a number equal to the line's own address is never the remote party; a
  call that arrived by transfer naming only the transferring line takes the party of its
  dwRelatedCallID where the bridge saw that call;
- the conference bridge's own call (dwOrigin CONFERENCE) is not reported: its parties
  (state CONFERENCED) are, with their numbers;
- IDLE ends the call (after DISCONNECTED, once) and its handle is deallocated.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from ...numbers import digits as _digits
from . import constants as C
from .callinfo import CallInfo, Party

__all__ = [
    "LineOpened",
    "TapiMessage",
    "Reinitialized",
    "Event",
    "TapiRequest",
    "Out",
    "Translator",
    "state_name",
    "MAX_CALLS_PER_LINE",
    "REQUEST_TIMEOUT",
]

MAX_CALLS_PER_LINE = 64  # more calls on one line than any phone has: a broken provider
REMEMBERED_PARTIES = 1024  # dwCallID -> remote party, for transfers (dwRelatedCallID)
REQUEST_TIMEOUT = 15.0  # seconds a TAPI request may take before it is answered as failed

CS = C.CALLSTATE
_STATE_NAMES = {v: k.removeprefix("LINECALLSTATE_").lower() for k, v in CS.items()}
_INBOUND_FIRST = CS["LINECALLSTATE_OFFERING"] | CS["LINECALLSTATE_ACCEPTED"]
_OUTBOUND_FIRST = (CS["LINECALLSTATE_DIALTONE"] | CS["LINECALLSTATE_DIALING"]
                   | CS["LINECALLSTATE_RINGBACK"] | CS["LINECALLSTATE_PROCEEDING"]
                   | CS["LINECALLSTATE_BUSY"] | CS["LINECALLSTATE_SPECIALINFO"])
_ORIGIN_IN = (C.CALLORIGIN["LINECALLORIGIN_INTERNAL"] | C.CALLORIGIN["LINECALLORIGIN_EXTERNAL"]
              | C.CALLORIGIN["LINECALLORIGIN_INBOUND"])
_ORIGIN_OUT = C.CALLORIGIN["LINECALLORIGIN_OUTBOUND"]
_ORIGIN_CONF = C.CALLORIGIN["LINECALLORIGIN_CONFERENCE"]
_R = C.CALLREASON
_REASON_ARRIVED = (_R["LINECALLREASON_PICKUP"] | _R["LINECALLREASON_TRANSFER"]
                   | _R["LINECALLREASON_REDIRECT"] | _R["LINECALLREASON_FWDBUSY"]
                   | _R["LINECALLREASON_FWDNOANSWER"] | _R["LINECALLREASON_FWDUNCOND"]
                   | _R["LINECALLREASON_UNPARK"])
_BLOCKED = C.CALLPARTYID["LINECALLPARTYID_BLOCKED"]
_IDLE = CS["LINECALLSTATE_IDLE"]
_DISCONNECTED = CS["LINECALLSTATE_DISCONNECTED"]
_RINGING = _INBOUND_FIRST

# LINEDEVSTATE_* -> whether the line is now in service (absent: says nothing about it).
# MAINTENANCE and DISCONNECTED (from the switch) leave the line unusable, CONNECTED brings
# it back.
_DEVSTATE_SERVICE: dict[int, bool] = {
    C.DEVSTATE["LINEDEVSTATE_INSERVICE"]: True,
    C.DEVSTATE["LINEDEVSTATE_CONNECTED"]: True,
    C.DEVSTATE["LINEDEVSTATE_OUTOFSERVICE"]: False,
    C.DEVSTATE["LINEDEVSTATE_MAINTENANCE"]: False,
    C.DEVSTATE["LINEDEVSTATE_DISCONNECTED"]: False,
}

M = C.MESSAGES


def state_name(state: int) -> str:
    """LINECALLSTATE_* value -> the contract's lower-case name ("" when not one)."""
    return _STATE_NAMES.get(state, "")


# -- what the TAPI side tells the translator ----------------------------------------------


@dataclass(frozen=True, slots=True)
class LineOpened:
    """lineOpenW succeeded on `device` (its dwDeviceID): its LINEDEVCAPS name and the
    address of LINEADDRESSCAPS (the line's own number, None when the provider gives none)."""

    device: int
    name: str
    address: str | None = None
    in_service: bool = True  # LINEDEVSTATUS.dwDevStatusFlags has INSERVICE
    owner: bool = False  # opened with owner privilege (pickup and redirect need it)


@dataclass(frozen=True, slots=True)
class TapiMessage:
    """A LINEMESSAGE from lineGetMessage, with what the bridge read for it.

    `instance` is dwCallbackInstance: the bridge opens every line with its dwDeviceID there,
    so every message names its line. `info` is the LINECALLINFO read for a call message
    (None where it could not be read)."""

    msg: int
    device: int = 0  # hDevice: HLINE or HCALL
    instance: int = 0
    param1: int = 0
    param2: int = 0
    param3: int = 0
    info: CallInfo | None = None


@dataclass(frozen=True, slots=True)
class Reinitialized:
    """The provider re-initialized (LINEDEVSTATE_REINIT / LINEERR_REINIT): every handle is
    gone; lines and calls come back through LineOpened and messages."""


Event = LineOpened | TapiMessage | Reinitialized


@dataclass(frozen=True, slots=True)
class TapiRequest:
    """A TAPI request the bridge must make for a gateway command.

    function: "linePickupW" (hLine of `line`, directed to `dest`) or "lineRedirectW"
    (`hcall` to `dest`)."""

    op: str
    function: str
    line: int = 0  # dwDeviceID
    hcall: int = 0
    dest: str = ""


@dataclass(slots=True)
class Out:
    lines: list[dict] = field(default_factory=list)  # bridge lines to send, in order
    deallocate: list[int] = field(default_factory=list)  # HCALLs for lineDeallocateCall
    notes: list[str] = field(default_factory=list)  # for the log
    reset: bool = False  # the provider re-initialized: start the gateway connection afresh

    def extend(self, other: Out) -> None:
        self.lines += other.lines
        self.deallocate += other.deallocate
        self.notes += other.notes
        self.reset = self.reset or other.reset


# -- the state ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Line:
    device: int
    name: str
    address: str | None
    in_service: bool
    owner: bool
    calls: set[int] = field(default_factory=set)  # HCALLs
    own: str = ""  # the address's digits (compared with party numbers)


@dataclass(slots=True)
class _Call:
    hcall: int
    line: int
    state: int = 0  # LINECALLSTATE_*, 0 before the first LINE_CALLSTATE
    mode: int = 0
    first_state: int = 0
    info: CallInfo = field(default_factory=CallInfo)
    sent: dict | None = None  # the last line sent for it


@dataclass(slots=True)
class _Pending:
    request: TapiRequest
    deadline: float
    request_id: int = 0


class Translator:
    """The bridge's model of its TAPI lines and calls, and the translation to bridge lines."""

    def __init__(self) -> None:
        self._lines: dict[int, _Line] = {}
        self._by_name: dict[str, int] = {}
        self._calls: dict[int, _Call] = {}
        self._parties: OrderedDict[int, Party] = OrderedDict()
        self._pending: dict[str, _Pending] = {}  # op -> request
        self.messages = 0
        self.ignored = 0

    # -- inputs -----------------------------------------------------------------------------

    def feed(self, event: Event) -> Out:
        """Apply one event; return what to send and to deallocate."""
        if isinstance(event, LineOpened):
            return self._open(event)
        if isinstance(event, Reinitialized):
            return self._reinit()
        self.messages += 1
        handler = _HANDLERS.get(event.msg)
        if handler is None:
            return Out()  # LINE_ADDRESSSTATE, LINE_MONITORDIGITS, ...: nothing for a lamp
        return handler(self, event)

    def _open(self, ev: LineOpened) -> Out:
        out = Out()
        old = self._lines.get(ev.device)
        if old is not None:
            out.extend(self._close(ev.device, "reopened"))
        if ev.name in self._by_name and self._by_name[ev.name] != ev.device:
            out.notes.append(f"two TAPI lines are named {ev.name!r}: device "
                             f"{self._by_name[ev.name]} and {ev.device}; the later one is used")
        line = _Line(ev.device, ev.name, ev.address, ev.in_service, ev.owner,
                     own=_digits(ev.address))
        self._lines[ev.device] = line
        self._by_name[ev.name] = ev.device
        out.lines.append(self._devstate(line))
        return out

    def _close(self, device: int, why: str) -> Out:
        """A line gone (LINE_CLOSE, LINE_REMOVE): its calls forgotten, the line out of
        service for the gateway (the bridge cannot watch it any more)."""
        out = Out()
        line = self._lines.pop(device, None)
        if line is None:
            return out
        if self._by_name.get(line.name) == device:
            del self._by_name[line.name]
        for h in sorted(line.calls):
            self._calls.pop(h, None)
            out.deallocate.append(h)
        out.lines.append({"device": line.name, "devstate": "outofservice"})
        out.notes.append(f"line {line.name!r} (device {device}) {why}")
        return out

    def _reinit(self) -> Out:
        # A fresh connection only where there was something to forget (a provider that
        # keeps failing to initialize does not make the link reconnect each time).
        out = Out(reset=bool(self._lines or self._calls),
                  notes=["the telephony provider re-initialized: all lines and calls are "
                         "read again"])
        self._lines.clear()
        self._by_name.clear()
        self._calls.clear()  # the handles died with the old session: nothing to deallocate
        for op, p in list(self._pending.items()):
            out.lines.append(self._result(op, False, "the telephony provider re-initialized"))
        self._pending.clear()
        return out

    # -- messages ---------------------------------------------------------------------------

    def _on_linedevstate(self, ev: TapiMessage) -> Out:
        state = ev.param1
        if state & C.DEVSTATE["LINEDEVSTATE_REINIT"]:
            return self._reinit()
        line = self._lines.get(ev.instance)
        if line is None:
            return Out()
        if state & C.DEVSTATE["LINEDEVSTATE_REMOVED"]:
            return self._close(line.device, "was removed")
        in_service = next((v for bit, v in _DEVSTATE_SERVICE.items() if state & bit), None)
        if in_service is None or in_service == line.in_service:
            return Out()
        line.in_service = in_service
        out = Out(lines=[self._devstate(line)])
        for h in sorted(line.calls):
            call = self._calls[h]
            # The gateway forgets an out-of-service line's calls: back in service, the calls
            # still up are sent again.
            call.sent = self._render(call, line) if in_service else None
            if call.sent is not None:
                out.lines.append(call.sent)
        return out

    def _on_create(self, ev: TapiMessage) -> Out:
        # The driver opens the new device and reports LineOpened; nothing to send yet.
        return Out(notes=[f"a new TAPI line appeared (device {ev.param1})"])

    def _on_remove(self, ev: TapiMessage) -> Out:
        return self._close(ev.param1, "was removed")

    def _on_close(self, ev: TapiMessage) -> Out:
        return self._close(ev.instance, "was closed by the provider")

    def _on_appnewcall(self, ev: TapiMessage) -> Out:
        hcall = ev.param2
        line = self._lines.get(ev.instance)
        if line is None:
            self.ignored += 1
            return Out(deallocate=[hcall])
        if hcall in self._calls:
            return self._update(self._calls[hcall], info=ev.info)
        if len(line.calls) >= MAX_CALLS_PER_LINE:
            self.ignored += 1
            return Out(deallocate=[hcall],
                       notes=[f"line {line.name!r}: more than {MAX_CALLS_PER_LINE} calls, "
                              "a new one is ignored"])
        call = _Call(hcall, line.device, info=ev.info or CallInfo())
        self._calls[hcall] = call
        line.calls.add(hcall)
        return Out()  # its first LINE_CALLSTATE says what it is

    def _on_callstate(self, ev: TapiMessage) -> Out:
        call = self._calls.get(ev.device)
        if call is None:
            # A call the bridge has no record of (lineGetNewCalls on a resync, or a message
            # that overtook LINE_APPNEWCALL): adopt it if its line is known.
            line = self._lines.get(ev.instance)
            if line is None or ev.param1 == _IDLE:
                self.ignored += 1
                return Out(deallocate=[ev.device] if ev.param1 == _IDLE else [])
            adopted = self._on_appnewcall(TapiMessage(M["LINE_APPNEWCALL"], line.device,
                                                      line.device, 0, ev.device, 0, ev.info))
            call = self._calls.get(ev.device)
            if call is None:
                return adopted
        return self._update(call, state=ev.param1, mode=ev.param2, info=ev.info)

    def _on_callinfo(self, ev: TapiMessage) -> Out:
        call = self._calls.get(ev.device)
        if call is None or ev.info is None:
            return Out()
        return self._update(call, info=ev.info)

    def _on_reply(self, ev: TapiMessage) -> Out:
        for op, p in self._pending.items():
            if p.request_id and p.request_id == ev.param1:
                del self._pending[op]
                code = ev.param2 & 0xFFFFFFFF
                if code == 0:
                    return Out(lines=[self._result(op, True)])
                return Out(lines=[self._result(
                    op, False, f"{p.request.function}: {C.name_of(C.ERRORS, code)}")])
        return Out()

    # -- calls ------------------------------------------------------------------------------

    def _update(self, call: _Call, *, state: int | None = None, mode: int = 0,
                info: CallInfo | None = None) -> Out:
        out = Out()
        if info is not None:
            call.info = info
        if state is not None and state != 0:
            if not call.first_state:
                call.first_state = state
            call.state, call.mode = state, mode
        line = self._lines[call.line]
        if call.state == _IDLE:
            if call.sent is not None and call.sent.get("state") not in ("idle", "disconnected"):
                out.lines.append({"device": line.name, "call": call.sent["call"],
                                  "state": "idle"})
            self._forget(call)
            out.deallocate.append(call.hcall)
            return out
        rendered = self._render(call, line)
        if rendered is None:
            return out
        if call.sent is not None and call.sent["call"] != rendered["call"] \
                and call.sent["state"] != "disconnected":
            # The provider gave the call a new dwCallID: the old id ends, the new one starts.
            out.lines.append({"device": line.name, "call": call.sent["call"], "state": "idle"})
        if rendered != call.sent and line.in_service:
            out.lines.append(rendered)
        if line.in_service:
            call.sent = rendered
        return out

    def _forget(self, call: _Call) -> None:
        self._calls.pop(call.hcall, None)
        line = self._lines.get(call.line)
        if line is not None:
            line.calls.discard(call.hcall)

    @staticmethod
    def _call_id(call: _Call) -> str:
        return f"{call.info.call_id:#x}" if call.info.call_id else f"h{call.hcall:x}"

    def _inbound(self, call: _Call) -> bool | None:
        origin = call.info.origin
        if origin & _ORIGIN_OUT:
            return False
        if origin & _ORIGIN_IN:
            return True
        if call.first_state & _INBOUND_FIRST:
            return True
        if call.first_state & _OUTBOUND_FIRST:
            return False
        if call.info.reason & _REASON_ARRIVED:
            return True
        return None

    @staticmethod
    def _own(party: Party, line: _Line) -> bool:
        return bool(line.own) and party.number is not None \
            and _digits(party.number) == line.own

    def _is_line_address(self, party: Party) -> bool:
        num = _digits(party.number)
        return bool(num) and any(ln.own == num for ln in self._lines.values())

    def _remote(self, call: _Call, line: _Line, inbound: bool | None) -> Party:
        info = call.info
        if info.connected.number and not self._own(info.connected, line):
            return info.connected
        base = info.called if inbound is False else info.caller
        if self._own(base, line):
            base = Party(flags=base.flags)
        if (inbound and info.reason & _R["LINECALLREASON_TRANSFER"] and info.related_call_id
                and (not base.number or self._is_line_address(base))):
            # Transferred here and the provider names only the line that transferred it:
            # the party of the call it was transferred from is the one on the line now.
            related = self._parties.get(info.related_call_id)
            if related is not None and related.number:
                return related
        return base

    def _render(self, call: _Call, line: _Line) -> dict | None:
        name = state_name(call.state)
        if not name or name == "idle":
            return None
        if call.info.origin & _ORIGIN_CONF:
            return None  # the conference bridge itself; its parties are the calls
        inbound = self._inbound(call)
        remote = self._remote(call, line, inbound)
        info = call.info
        if info.call_id and remote.number:
            self._parties[info.call_id] = remote
            self._parties.move_to_end(info.call_id)
            while len(self._parties) > REMEMBERED_PARTIES:
                self._parties.popitem(last=False)
        out: dict = {"device": line.name, "call": self._call_id(call), "state": name}
        if inbound is False:
            own = info.caller if info.caller.number else Party(line.address)
            fields = {"caller": own.number, "caller_name": own.name,
                      "called": remote.number, "called_name": remote.name}
        else:
            own = info.called if info.called.number else Party(line.address)
            fields = {"caller": remote.number, "caller_name": remote.name,
                      "called": own.number, "called_name": own.name}
            if remote.flags & _BLOCKED or (not remote.number and info.caller.flags & _BLOCKED):
                fields["blocked"] = True
                fields["caller"] = fields["caller_name"] = None
        out.update({k: v for k, v in fields.items() if v is not None})
        return out

    def _devstate(self, line: _Line) -> dict:
        return {"device": line.name, "devstate": "inservice" if line.in_service
                else "outofservice"}

    # -- the full state -----------------------------------------------------------------------

    def snapshot(self) -> list[dict]:
        """Every opened line's service state and every call's current line: what the bridge
        sends first on every connection to the gateway."""
        out: list[dict] = []
        for line in self._lines.values():
            out.append(self._devstate(line))
            if not line.in_service:
                continue
            for h in sorted(line.calls):
                call = self._calls[h]
                rendered = self._render(call, line)
                if rendered is not None:
                    out.append(rendered)
                call.sent = rendered
        return out

    def lines(self) -> list[tuple[int, str, str | None]]:
        """(dwDeviceID, name, address) of every opened line."""
        return [(ln.device, ln.name, ln.address) for ln in self._lines.values()]

    def device_of(self, hcall: int) -> int | None:
        call = self._calls.get(hcall)
        return None if call is None else call.line

    def calls(self) -> list[int]:
        return list(self._calls)

    # -- commands from the gateway ------------------------------------------------------------

    @staticmethod
    def _result(op: str, ok: bool, error: str | None = None) -> dict:
        out: dict = {"result": op, "ok": ok}
        if error is not None:
            out["error"] = error
        return out

    def command(self, cmd: dict, now: float, mode: str = "pickup") -> tuple[Out, TapiRequest | None]:
        """A gateway command (already validated: cmd, op, device, call, to). Returns the
        result line at once when it cannot be carried out, else the TAPI request to make."""
        op = cmd["op"]
        if op in self._pending:
            return Out(lines=[self._result(op, False, "that op is already in progress")]), None
        if len(self._pending) >= 32:
            return Out(lines=[self._result(op, False, "too many commands in progress")]), None
        fail = lambda why: (Out(lines=[self._result(op, False, why)]), None)  # noqa: E731
        dev = self._by_name.get(cmd["device"])
        to = self._by_name.get(cmd["to"])
        if dev is None:
            return fail(f"the bridge has no line {cmd['device']!r}")
        if to is None:
            return fail(f"the bridge has no line {cmd['to']!r}")
        line, picker = self._lines[dev], self._lines[to]
        call = next((self._calls[h] for h in sorted(line.calls)
                     if self._call_id(self._calls[h]) == cmd["call"]), None)
        if call is None:
            return fail(f"no call {cmd['call']!r} on {line.name!r}")
        if not call.state & _RINGING:
            return fail(f"call {cmd['call']!r} on {line.name!r} is not ringing "
                        f"({state_name(call.state) or 'no state yet'})")
        if mode == "redirect":
            if not picker.address:
                return fail(f"line {picker.name!r} has no address to redirect to")
            if not line.owner:
                return fail(f"line {line.name!r} is not opened with owner privilege")
            req = TapiRequest(op, "lineRedirectW", line=line.device, hcall=call.hcall,
                              dest=picker.address)
        else:
            if not line.address:
                return fail(f"line {line.name!r} has no address to pick up from")
            if not picker.owner:
                return fail(f"line {picker.name!r} is not opened with owner privilege")
            req = TapiRequest(op, "linePickupW", line=picker.device, dest=line.address)
        self._pending[op] = _Pending(req, now + REQUEST_TIMEOUT)
        return Out(), req

    def request_sent(self, op: str, result: int) -> Out:
        """What the TAPI function returned: a positive request id (the outcome comes with
        LINE_REPLY), or a LINEERR_* value (failed at once)."""
        p = self._pending.get(op)
        if p is None:
            return Out()
        if 0 < result < 0x80000000:
            p.request_id = result
            return Out()
        del self._pending[op]
        return Out(lines=[self._result(
            op, False, f"{p.request.function}: {C.name_of(C.ERRORS, result & 0xFFFFFFFF)}")])

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self._pending.values()), default=None)

    def tick(self, now: float) -> Out:
        out = Out()
        for op, p in list(self._pending.items()):
            if p.deadline <= now:
                del self._pending[op]
                out.lines.append(self._result(
                    op, False, f"{p.request.function}: no LINE_REPLY from the provider"))
        return out


_HANDLERS = {
    M["LINE_LINEDEVSTATE"]: Translator._on_linedevstate,
    M["LINE_CREATE"]: Translator._on_create,
    M["LINE_REMOVE"]: Translator._on_remove,
    M["LINE_CLOSE"]: Translator._on_close,
    M["LINE_APPNEWCALL"]: Translator._on_appnewcall,
    M["LINE_CALLSTATE"]: Translator._on_callstate,
    M["LINE_CALLINFO"]: Translator._on_callinfo,
    M["LINE_REPLY"]: Translator._on_reply,
}
