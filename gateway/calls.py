"""Call tracking, pure: what a line source (or a softphone) says about calls -> device state.

Every source (TAPI bridge, AMI, SIP, softphone reports) is translated by its adapter into
:class:`CallReport` and :class:`ServiceReport` values. :class:`LineTracker` applies them with
the one transitions table below and returns the device states that changed. It takes `now`
from the caller and exposes :meth:`LineTracker.next_deadline`, so every timeout is tested
without sleeping. It imports no asyncio, redis or sockets.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace
from enum import Enum

from .model import Call, CallState, DeviceState, DeviceStatus, Direction, fast_init

__all__ = [
    "EndedCall",
    "Phase",
    "CallReport",
    "ServiceReport",
    "TRANSITIONS",
    "CallTable",
    "LineTracker",
    "TOMBSTONE_SECONDS",
    "REFUSED",
    "Verdict",
    "MAX_LINE_CALLS",
    "MAX_SOFTPHONE_CALLS",
    "MAX_TOMBSTONES",
]


class Phase(str, Enum):
    """What a source reports a call has become. ENDED removes the call."""

    RINGING = "ringing"
    DIALING = "dialing"
    CONNECTED = "connected"
    HELD = "held"
    ENDED = "ended"


# The transitions table: for a call in phase FROM (None: the call is not known), the reports
# that are accepted and why. Anything not listed is out of order or impossible: it changes
# nothing (the adapter logs it at debug level). A report of the phase a call is already in is
# always accepted: it may bring a number or name that arrived late.
TRANSITIONS: dict[Phase | None, dict[Phase, str]] = {
    None: {
        Phase.RINGING: "a new incoming call is alerting",
        Phase.DIALING: "a new outgoing call is being set up",
        # A source re-sending its full state after a (re)connect reports calls that are
        # already up or on hold; so does a monitor that started in the middle of a call.
        Phase.CONNECTED: "a call already connected when the source (re)synced",
        Phase.HELD: "a call already on hold when the source (re)synced",
        # Phase.ENDED is absent: ending a call we never saw (or already ended) changes nothing.
    },
    Phase.RINGING: {
        Phase.RINGING: "still alerting (late caller id)",
        Phase.CONNECTED: "answered",
        Phase.ENDED: "missed, cancelled by the caller, or picked up elsewhere",
        # DIALING: an incoming call never becomes outgoing. HELD: an unanswered call cannot
        # be put on hold. Both can only be late or garbled reports.
    },
    Phase.DIALING: {
        Phase.DIALING: "still setting up (ringback, proceeding, busy tone)",
        Phase.CONNECTED: "the called party answered",
        Phase.ENDED: "abandoned, busy or rejected",
        # RINGING: an outgoing call does not start alerting here. HELD: not answered yet.
    },
    Phase.CONNECTED: {
        Phase.CONNECTED: "still talking (conference, new connected id)",
        Phase.HELD: "put on hold",
        Phase.ENDED: "hung up",
        # RINGING / DIALING after CONNECTED: a late report of an earlier phase; ignoring it
        # keeps the lamp from flickering back to ringing after an answer.
    },
    Phase.HELD: {
        Phase.HELD: "still on hold",
        Phase.CONNECTED: "taken off hold",
        Phase.ENDED: "hung up while on hold",
    },
}

# Why a report that is not in TRANSITIONS changes nothing, as data for provenance (what an
# admin reads when asking why a lamp did not follow a report). Same keys as the comments in
# the table above; a pair missing here is explained by the generic words in CallTable.judge.
REFUSED: dict[tuple[Phase | None, Phase], str] = {
    (None, Phase.ENDED): "the end of a call that was never seen (or already forgotten)",
    (Phase.RINGING, Phase.DIALING): "an incoming call never becomes outgoing",
    (Phase.RINGING, Phase.HELD): "an unanswered call cannot be put on hold",
    (Phase.DIALING, Phase.RINGING): "an outgoing call does not start alerting here",
    (Phase.DIALING, Phase.HELD): "a call not answered yet cannot be put on hold",
    (Phase.CONNECTED, Phase.RINGING): "a late report of an earlier phase (the call was "
                                      "answered): ignored so the lamp does not flicker back",
    (Phase.CONNECTED, Phase.DIALING): "a late report of an earlier phase (the call was "
                                      "answered)",
    (Phase.HELD, Phase.RINGING): "a late report of an earlier phase (the call is on hold)",
    (Phase.HELD, Phase.DIALING): "a late report of an earlier phase (the call is on hold)",
}

# How long an ended call's id is remembered, so that late reports for it (a TAPI IDLE after
# DISCONNECTED, a reordered CONNECTED) cannot bring it back.
TOMBSTONE_SECONDS = 120.0

# Bounds, so that no source or softphone can make one owner's state (and every frame that
# carries it) grow without end. A phone line has a handful of calls at once (call waiting,
# a conference, a few on hold); a queue line a few dozen. A new call beyond the bound is
# refused (the adapter logs it or answers an error); calls already there go on as usual.
MAX_LINE_CALLS = 64
MAX_SOFTPHONE_CALLS = 16
# Ended ids remembered per owner; beyond, the oldest are forgotten first (a late report for
# one of those could then only come back after a flood of thousands of calls).
MAX_TOMBSTONES = 1024

_PHASE_STATE = {
    Phase.RINGING: CallState.RINGING,
    Phase.DIALING: CallState.DIALING,
    Phase.CONNECTED: CallState.CONNECTED,
    Phase.HELD: CallState.HELD,
}
_STATE_PHASE = {v: k for k, v in _PHASE_STATE.items()}


@fast_init
@dataclass(frozen=True, slots=True)
class CallReport:
    """A source's word about one call on one device.

    `direction` may be None where the source does not say; it is then taken from the first
    phase (ringing: in, dialing: out). `remote`/`remote_name` None means "not told", not
    "withheld": a later report may fill them in. `link` is a cross-source call identity;
    `replaces` the Replaces header value of the call's SIP dialog (dialog-info sources).
    `conn` names the source connection that reported it (for a bridge with several
    connections, only the one that reported a device makes it unknown when it drops).
    """

    device: str
    call: str
    phase: Phase
    direction: Direction | None = None
    remote: str | None = None
    remote_name: str | None = None
    link: str | None = None
    withheld: bool = False
    replaces: str | None = None
    conn: str = ""


@fast_init
@dataclass(frozen=True, slots=True)
class ServiceReport:
    """A device went in or out of service (TAPI LINEDEVSTATE, registration, hint state)."""

    device: str
    in_service: bool
    conn: str = ""


@fast_init
@dataclass(frozen=True, slots=True)
class EndedCall:
    """A call that ended: what a journal keeps of it."""

    owner: str  # the device (or the client, for a softphone)
    call: Call  # its last state
    start: float  # when it was first seen
    end: float
    answered: bool  # it was connected at some point


@fast_init
@dataclass(frozen=True, slots=True)
class Verdict:
    """What a tracker does with one report, decided before it is applied (for provenance).

    `outcome`: "accepted" (the transitions table allows it; it may still bring nothing new),
    "out_of_order" (not in the table: changes nothing), "tombstoned" (a late word about a
    call that ended: changes nothing), "over_limit" (a new call beyond MAX_LINE_CALLS or
    MAX_SOFTPHONE_CALLS: changes nothing) or "unknown_device" (no such device here).
    `reason`: the words of the table (or of REFUSED) for it. `phase_from`: the call's phase
    before (None: the call was not known)."""

    outcome: str
    reason: str
    phase_from: Phase | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"


# The verdict of every accepted move, made once: nearly every report gets one of these, and
# a Verdict is immutable, so one object per (from, to) pair serves them all.
_ACCEPTED: dict[tuple[Phase | None, Phase], Verdict] = {
    (phase_from, phase): Verdict("accepted", reason, phase_from)
    for phase_from, row in TRANSITIONS.items() for phase, reason in row.items()
}


def _learn_remote(call: Call, report: CallReport) -> Call:
    """What a later report says about the far party, applied to a known call.

    The call keeps its first direction (an incoming call stays incoming), but a number a
    later report brings is a new fact, and it belongs to the direction of *that* report: a
    number reported as dialled on an incoming call (a transfer target, a consultation call,
    a softphone reporting the call `out`) is outbound information, marked `remote_out` so
    that a watcher allowed to see inbound numbers only does not see it (nor its name).
    """
    if report.withheld:
        # The caller withheld the number: whatever we had is no longer shown.
        return replace(call, remote=None, remote_name=None, remote_out=False)
    # Only an incoming call can carry outbound information of its own: on an outgoing call
    # every number is hidden from inbound-only watchers already.
    dialled = call.direction is Direction.IN and report.direction is Direction.OUT
    if report.remote is not None and report.remote != call.remote:
        # A different party (transfer, forwarding, connected-line update): its name is the
        # report's, never the previous party's, and its visibility is the report's direction.
        return replace(call, remote=report.remote, remote_name=report.remote_name,
                       remote_out=dialled)
    if report.remote_name is not None and report.remote_name != call.remote_name:
        call = replace(call, remote_name=report.remote_name)
    elif report.remote is None and report.remote_name is None:
        return call  # nothing told about the far party
    if dialled and (call.remote is not None or call.remote_name is not None) \
            and not call.remote_out:
        # The same number, or a name (with or without a number), now also reported as
        # dialled: it is outbound information too, and the stricter rule applies from now on.
        call = replace(call, remote_out=True)
    return call


def _call_order(c: Call) -> tuple[float, str]:
    return (c.since, c.id)


class CallTable:
    """The calls of one owner (a device, or a client's softphone), keyed by the source's id.

    Ended calls are collected in `ended` (with their start and whether they were answered)
    until the owner of the table takes them for the journals."""

    __slots__ = ("prefix", "max_calls", "calls", "tombstones", "_meta", "ended")

    def __init__(self, prefix: str, max_calls: int = MAX_LINE_CALLS) -> None:
        self.prefix = prefix
        self.max_calls = max_calls
        self.calls: dict[str, Call] = {}
        self.tombstones: dict[str, float] = {}
        self._meta: dict[str, tuple[float, bool]] = {}  # key -> (start, answered)
        self.ended: list[EndedCall] = []

    def refuses(self, report: CallReport) -> bool:
        """Whether `report` would start a call beyond `max_calls` (it is then ignored)."""
        return (len(self.calls) >= self.max_calls and report.call not in self.calls
                and report.call not in self.tombstones
                and report.phase in TRANSITIONS[None])

    def apply(self, report: CallReport, now: float) -> bool:
        """Apply one report; return True if the calls changed."""
        key = report.call
        current = self.calls.get(key)
        if current is None and key in self.tombstones:
            return False  # a late word about a call that already ended
        if current is None and len(self.calls) >= self.max_calls:
            return False  # one call too many: see refuses()
        phase_from = _STATE_PHASE[current.state] if current else None
        if report.phase not in TRANSITIONS[phase_from]:
            return False
        return self._change(report, current, now)

    def decide(self, report: CallReport, now: float) -> tuple[Verdict, bool]:
        """:meth:`judge` and :meth:`apply` in one derivation (what provenance needs for every
        report): the verdict, and whether the calls changed. The verdict alone decides
        whether the report is applied, so the two cannot disagree."""
        key = report.call
        current = self.calls.get(key)
        # The common case first, read straight off the table (the same reading as judge():
        # a known call, or a new one that is neither tombstoned nor one too many).
        if current is not None:
            verdict = _ACCEPTED.get((_STATE_PHASE[current.state], report.phase))
        elif key not in self.tombstones and len(self.calls) < self.max_calls:
            verdict = _ACCEPTED.get((None, report.phase))
        else:
            verdict = None
        if verdict is None:
            return self.judge(report), False  # refused, and why
        return verdict, self._change(report, current, now)

    def _change(self, report: CallReport, current: Call | None, now: float) -> bool:
        """Apply a report the transitions table accepts (`current`: the call it is about,
        None for a new one); True if the calls changed."""
        key = report.call
        if report.phase is Phase.ENDED:
            # What the last report says of the far party counts for the journals too (a
            # number it reports as dialled stays hidden from inbound-only readers).
            ended = _learn_remote(self.calls.pop(key), report)
            start, answered = self._meta.pop(key, (ended.since, False))
            self.ended.append(EndedCall(self.prefix, ended, start, now, answered))
            self.tombstones[key] = now + TOMBSTONE_SECONDS
            if len(self.tombstones) > MAX_TOMBSTONES:
                del self.tombstones[next(iter(self.tombstones))]  # the oldest
            return True
        state = _PHASE_STATE[report.phase]
        if current is None:
            direction = report.direction or (
                Direction.OUT if report.phase is Phase.DIALING else Direction.IN
            )
            withheld = report.withheld
            # Positional (id, direction, state, since, remote, remote_name, link, replaces):
            # keyword arguments cost this call, made for every new call, twice as much.
            call = Call(f"{self.prefix}/{key}", direction, state, now,
                        None if withheld else report.remote,
                        None if withheld else report.remote_name, report.link, report.replaces)
        else:
            call = current
            if call.state is not state:
                call = replace(call, state=state, since=now)
            call = _learn_remote(call, report)
            if report.link is not None and call.link is None:
                call = replace(call, link=report.link)
            if report.replaces is not None and report.replaces != call.replaces:
                call = replace(call, replaces=report.replaces)
            if call == current:
                return False
        start, answered = self._meta.get(key, (now, False))
        self._meta[key] = (start, answered or state is CallState.CONNECTED)
        self.calls[key] = call
        return True

    def judge(self, report: CallReport) -> Verdict:
        """What :meth:`apply` will do with `report` and why, without changing anything.
        Reads the same table and tombstones as apply, so the two cannot disagree."""
        key = report.call
        current = self.calls.get(key)
        if current is None and key in self.tombstones:
            return Verdict("tombstoned", f"call {key} already ended; a late report about it "
                           "cannot bring it back")
        if self.refuses(report):
            return Verdict("over_limit", f"{len(self.calls)} calls already, the most kept for "
                           "one line or softphone: a new call is ignored")
        phase_from = _STATE_PHASE[current.state] if current else None
        accepted = _ACCEPTED.get((phase_from, report.phase))
        if accepted is not None:
            return accepted
        why = REFUSED.get((phase_from, report.phase), "not a move the transitions table allows")
        before = phase_from.value if phase_from is not None else "not known"
        return Verdict("out_of_order", f"{report.phase.value} while the call is {before}: "
                       f"{why}", phase_from)

    def clear(self) -> bool:
        """Forget every call (the source can no longer tell how they end: no journal entry)."""
        had = bool(self.calls)
        self.calls.clear()
        self._meta.clear()
        return had

    def take_ended(self) -> list[EndedCall]:
        out, self.ended = self.ended, []
        return out

    def expire(self, now: float) -> None:
        for key in [k for k, t in self.tombstones.items() if t <= now]:
            del self.tombstones[key]

    def next_deadline(self) -> float | None:
        return min(self.tombstones.values(), default=None)

    def snapshot(self) -> tuple[Call, ...]:
        if len(self.calls) <= 1:  # most lines have no call or one: nothing to sort
            return tuple(self.calls.values())
        return tuple(sorted(self.calls.values(), key=_call_order))

    def load(self, calls: tuple[Call, ...]) -> None:
        """Restore calls stored earlier (their ids carry the prefix; keys are the suffix)."""
        self.calls = {c.id.split("/", 1)[1] if "/" in c.id else c.id: c for c in calls}

    def shift(self, delta: float) -> bool:
        """The wall clock was stepped by `delta` seconds (an NTP step, `date -s`): move
        every time held here with it, so that an ended call is still remembered for two
        minutes of real time (a forward step must not let a late report bring it back),
        and call timers and journal durations stay true. True if live calls changed."""
        if not delta:
            return False
        self.tombstones = {k: t + delta for k, t in self.tombstones.items()}
        self._meta = {k: (start + delta, answered) for k, (start, answered) in self._meta.items()}
        if not self.calls:
            return False
        self.calls = {k: replace(c, since=c.since + delta) for k, c in self.calls.items()}
        return True


class LineTracker:
    """Device states of one line source, from its reports.

    A device is UNKNOWN until the source has said something about it; a connection that
    drops takes its devices back to UNKNOWN (their calls forgotten) until the source has
    re-sent its state. Returns the device states that changed.
    """

    def __init__(self, devices: list[str] | tuple[str, ...] = ()) -> None:
        self._tables: dict[str, CallTable] = {}
        self._status: dict[str, DeviceStatus] = {}
        self._owner: dict[str, str] = {}  # device -> connection that last reported it
        self._refused: list[CallReport] = []  # new calls beyond MAX_LINE_CALLS, to be logged
        # Devices whose tables hold ended calls not taken yet: take_ended visits only these
        # (it runs after every report; walking every table made a report cost O(devices)).
        self._ended_in: set[str] = set()
        # When each device's oldest tombstone expires, at most one entry per device (a heap
        # of (time, device) and the time queued for each): tick() and next_deadline() see
        # only the devices that are due. Walking every table on every timer wake was 2.7 ms
        # at 2,000 devices and 19 ms at 10,000, up to 20 times a second in a busy office.
        self._expiries: list[tuple[float, str]] = []
        self._queued: dict[str, float] = {}
        for d in devices:
            self.add_device(d)

    def add_device(self, device: str) -> None:
        if device not in self._tables:
            self._tables[device] = CallTable(device)
            self._status[device] = DeviceStatus.UNKNOWN

    def remove_device(self, device: str) -> None:
        self._tables.pop(device, None)
        self._status.pop(device, None)
        self._owner.pop(device, None)
        self._ended_in.discard(device)

    @property
    def devices(self) -> list[str]:
        return list(self._tables)

    def state(self, device: str) -> DeviceState:
        return DeviceState(device, self._status[device], self._tables[device].snapshot())

    def call(self, report: CallReport, now: float) -> list[DeviceState]:
        table = self._tables.get(report.device)
        if table is None:
            return []
        self._owner[report.device] = report.conn
        if table.refuses(report):
            if len(self._refused) < MAX_TOMBSTONES:  # bounded until the adapter takes them
                self._refused.append(report)
            return []
        changed = table.apply(report, now)
        if table.ended:
            self._ended_in.add(report.device)
            self._queue_expiry(report.device, table)
        if self._status[report.device] is not DeviceStatus.ONLINE:
            # A source that reports a call on a line tells us the line works.
            self._status[report.device] = DeviceStatus.ONLINE
            changed = True
        return [self.state(report.device)] if changed else []

    def decide(self, report: CallReport,
               now: float) -> tuple[Verdict, DeviceState, bool, Call | None]:
        """:meth:`judge` and :meth:`call` in one derivation, for provenance: the verdict, the
        device's state after the report (one snapshot), whether it changed, and the reported
        call as tracked (after the report; a call the report ended: its last state; None: not
        tracked). Changes the tracker exactly as :meth:`call` does. The device must be known
        (:meth:`has`)."""
        device = report.device
        table = self._tables[device]
        self._owner[device] = report.conn
        current = table.calls.get(report.call)
        verdict, changed = table.decide(report, now)
        if verdict.outcome == "over_limit":
            if len(self._refused) < MAX_TOMBSTONES:  # bounded until the adapter takes them
                self._refused.append(report)
            return verdict, self.state(device), False, current
        if table.ended:
            self._ended_in.add(device)
            self._queue_expiry(device, table)
        if self._status[device] is not DeviceStatus.ONLINE:
            # A source that reports a call on a line tells us the line works (as in call()).
            self._status[device] = DeviceStatus.ONLINE
            changed = True
        # The state as state() builds it, from the table at hand (this runs for every report).
        after = DeviceState(device, DeviceStatus.ONLINE, table.snapshot())
        return verdict, after, changed, table.calls.get(report.call) or current

    def judge(self, report: CallReport) -> Verdict:
        """What :meth:`call` will do with `report` and why (nothing is changed)."""
        table = self._tables.get(report.device)
        if table is None:
            return Verdict("unknown_device", f"no device {report.device!r} on this source")
        return table.judge(report)

    def has(self, device: str) -> bool:
        return device in self._tables

    def connection_of(self, device: str) -> str | None:
        """The source connection that last reported `device` (None: none since it went
        unknown)."""
        return self._owner.get(device)

    def service(self, report: ServiceReport, now: float) -> list[DeviceState]:
        if report.device not in self._tables:
            return []
        self._owner[report.device] = report.conn
        status = DeviceStatus.ONLINE if report.in_service else DeviceStatus.OFFLINE
        changed = False
        if not report.in_service:
            # An out-of-service line has no calls we could trust.
            changed = self._tables[report.device].clear()
        if self._status[report.device] is not status:
            self._status[report.device] = status
            changed = True
        return [self.state(report.device)] if changed else []

    def connection_lost(self, conn: str | None = None) -> list[DeviceState]:
        """The source (or one of its connections; None: all) went away."""
        out = []
        for device, table in self._tables.items():
            if conn is not None and self._owner.get(device) != conn:
                continue
            self._owner.pop(device, None)
            had_calls = table.clear()
            if had_calls or self._status[device] is not DeviceStatus.UNKNOWN:
                self._status[device] = DeviceStatus.UNKNOWN
                out.append(self.state(device))
        return out

    def _queue_expiry(self, device: str, table: CallTable) -> None:
        """A call ended on `device` (a tombstone was added): queue the device's next expiry
        unless one is queued (tombstones only get later, so the queued one comes first)."""
        if device not in self._queued:
            deadline = table.next_deadline()
            if deadline is not None:
                self._queued[device] = deadline
                heapq.heappush(self._expiries, (deadline, device))

    def tick(self, now: float) -> None:
        """Forget the tombstones that expired by `now` (only the devices that are due)."""
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            _, device = heapq.heappop(expiries)
            self._queued.pop(device, None)
            table = self._tables.get(device)
            if table is not None:
                table.expire(now)
                self._queue_expiry(device, table)

    def take_refused(self) -> list[CallReport]:
        """New calls refused since the last call (their device had MAX_LINE_CALLS), to log."""
        out, self._refused = self._refused, []
        return out

    def take_ended(self) -> list[EndedCall]:
        """Calls that ended since the last call, for the journals."""
        out: list[EndedCall] = []
        if not self._ended_in:
            return out
        for device in self._ended_in:
            table = self._tables.get(device)
            if table is not None:
                out.extend(table.take_ended())
        self._ended_in.clear()
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to do (None: nothing queued)."""
        return self._expiries[0][0] if self._expiries else None

    def shift(self, delta: float) -> list[DeviceState]:
        """:meth:`CallTable.shift` for every device; the states whose calls changed."""
        changed = [self.state(d) for d, t in self._tables.items() if t.shift(delta)]
        if delta:
            # Every tombstone moved: queue the expiries again (a clock step is rare).
            self._expiries, self._queued = [], {}
            for device, table in self._tables.items():
                self._queue_expiry(device, table)
        return changed
