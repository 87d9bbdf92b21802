"""Lamp provenance, pure: why a lamp shows what it shows.

For every device the gateway keeps the last N reports its source made (N is
``[provenance] keep``, default 50), each a :class:`Record`: when, which source and connection,
which call and phase, and what the tracker did with it (:class:`~gateway.calls.Verdict`:
accepted, ignored as out of order and why, a late word about an ended call). Softphone reports
are kept the same way per client. The records live in Redis (see
:meth:`gateway.store.Store.append_provenance`), so every process tells the same history.

From those records and the engine's current state this module builds an explanation of one
device (:func:`explain_device`) or one member lamp (:func:`explain_member`: which devices
feed it, which do not and why, which softphone report was dropped as "the same call shown
once" and why), and tells it in plain words, newest last (:func:`story`).

Numbers: an explanation is always redacted for one viewer first (:func:`redact`, with the
viewer's rights per device and per softphone, like every other way out of the gateway), and
only then rendered, as text or JSON. A number the viewer may not see is never in the input
of the renderers. No I/O and no clock here: times come in with the records.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from json.encoder import encode_basestring  # what the JSON encoder writes for a str
from typing import NamedTuple

from .calls import CallReport, CallTable, LineTracker, ServiceReport, Verdict
from .jsontext import dumps
from .model import Call, DeviceState, Lamp
from .panels.engine import Engine, ShownOnce, shown_once
from .panels.lamps import call_lamp, device_lamp, merge_lamps

__all__ = [
    "Record",
    "records_text",
    "Pending",
    "DeviceExplanation",
    "MemberExplanation",
    "NumberPolicy",
    "call_record",
    "service_record",
    "lost_record",
    "apply_report",
    "apply_softphone",
    "lose_connection",
    "explain_device",
    "explain_member",
    "redact",
    "story",
    "explanation_json",
    "SOURCE_WORDS",
    "DEFAULT_KEEP",
]

DEFAULT_KEEP = 50  # reports kept per device (and per softphone): [provenance] keep

# How a source is named in a story.
SOURCE_WORDS = {
    "tapi_bridge": "the TAPI bridge",
    "ami": "Asterisk",
    "sip": "SIP presence",
    "softphone": "the softphone",
    "janitor": "the gateway (its owner process died)",
}

HIDDEN = "[number hidden]"


class Record(NamedTuple):
    """One source report about one device (or one softphone report of a client) and what
    the tracker did with it.

    kind: "call", "service" (in/out of service) or "lost" (the reporting connection
    dropped). phase: the call phase reported ("ringing", ... "ended"), or "in_service" /
    "out_of_service". direction: the direction the reported number belongs to (the report's,
    else the call's; None: not known). outcome/reason: the tracker's verdict. changed:
    whether the device's state changed. lamp: the device's own lamp after it.
    `hidden` is set by :func:`redact` where a number was removed for the viewer.

    A named tuple, not a dataclass: one is made for every report a source sends, and a
    tuple is immutable too but several times cheaper to build."""

    t: float
    source: str
    conn: str
    kind: str
    call: str | None = None
    phase: str | None = None
    direction: str | None = None
    remote: str | None = None
    remote_name: str | None = None
    withheld: bool = False
    outcome: str = "accepted"
    reason: str = ""
    changed: bool = False
    lamp: str | None = None
    hidden: bool = False

    def to_json(self) -> str:
        return dumps((round(self.t, 3), *self[1:14]))  # (tests/unit/test_provenance.py)

    @classmethod
    def from_json(cls, text: str) -> Record | None:
        """A stored record, or None where it cannot be read (written by another version)."""
        try:
            raw = json.loads(text)
            (t, source, conn, kind, call, phase, direction, remote, remote_name, withheld,
             outcome, reason, changed, lamp) = raw[:14]
            return cls(float(t), str(source), str(conn), str(kind), call, phase, direction,
                       remote, remote_name, bool(withheld), str(outcome), str(reason),
                       bool(changed), lamp)
        except (ValueError, TypeError):
            return None

    def as_dict(self) -> dict:
        return {
            "t": round(self.t, 3), "source": self.source, "conn": self.conn, "kind": self.kind,
            "call": self.call, "phase": self.phase, "direction": self.direction,
            "remote": self.remote, "remote_name": self.remote_name, "withheld": self.withheld,
            "outcome": self.outcome, "reason": self.reason, "changed": self.changed,
            "lamp": self.lamp, "hidden": self.hidden,
        }


class _Encoded(dict):
    """str -> its JSON text (what the JSON encoder writes for it), for the few words that
    fill most of a record (sources, connections, phases, outcomes, reasons, lamps); None ->
    null. Anything else is a KeyError. Cleared when it grows past a few hundred (a reason
    can name a call)."""

    def __missing__(self, key: object) -> str:
        if type(key) is not str:
            raise KeyError(key)
        if len(self) > 256:
            self.clear()
            self[None] = "null"
        text = self[key] = encode_basestring(key)
        return text


_ENCODED = _Encoded({None: "null"})
_BOOL = {True: "true", False: "false"}


def records_text(records: list[Record]) -> str:
    """The records' JSON texts, each exactly what :meth:`Record.to_json` gives, one a line.

    How the recorder writes a batch, for about a quarter of the CPU of the JSON encoder on
    each record: a record's words come from a small vocabulary, encoded once (``_ENCODED``),
    the numbers and names of a call are encoded as they come, and a time is written once
    per distinct value (a batch of reports shares one `now`; the float's shortest repr is
    the dearest part of a record). A record whose fields are not of the plain types this
    writes exactly (str or None, bool, a finite float) sends the batch through the encoder,
    record by record. Compact JSON holds no raw newline, so the lines are the records."""
    if not records:
        return ""
    stamps: dict[float, str] = {}
    for t in {r[0] for r in records}:
        if type(t) is not float or t - t != 0.0:  # not a finite float: the encoder decides
            return "\n".join([r.to_json() for r in records])
        stamps[t] = repr(round(t, 3))
    enc, out = _ENCODED, []
    try:
        for (t, source, conn, kind, call, phase, direction, remote, remote_name, withheld,
             outcome, reason, changed, lamp, _hidden) in records:
            if type(withheld) is not bool or type(changed) is not bool:
                raise KeyError(withheld)  # an int is no bool here: the encoder decides
            out.append(
                f"[{stamps[t]},{enc[source]},{enc[conn]},{enc[kind]},"
                f"{'null' if call is None else encode_basestring(call)},{enc[phase]},"
                f"{enc[direction]},{'null' if remote is None else encode_basestring(remote)},"
                f"{'null' if remote_name is None else encode_basestring(remote_name)},"
                f"{_BOOL[withheld]},{enc[outcome]},{enc[reason]},{_BOOL[changed]},"
                f"{enc[lamp]}]")
    except (KeyError, TypeError):
        return "\n".join([r.to_json() for r in records])
    return "\n".join(out)


# -- making records (the source handler calls these around the tracker) -----------------------

_new_record = tuple.__new__


def call_record(source: str, report: CallReport, verdict: Verdict, changed: bool,
                lamp: Lamp | None, now: float, call_direction: str | None = None) -> Record:
    """A record of a call report. `call_direction`: the tracked call's direction, used where
    the report does not say which direction its number belongs to."""
    # `_value_`, not `.value`: the enum property costs a Python call, and this runs for
    # every report a source sends.
    direction = report.direction._value_ if report.direction is not None else call_direction
    withheld = report.withheld
    # Every field given, straight to tuple.__new__ (what Record(...) does, less a Python
    # frame for its __new__).
    return _new_record(Record, (now, source, report.conn, "call", report.call,
                                report.phase._value_, direction,
                                None if withheld else report.remote,
                                None if withheld else report.remote_name, withheld,
                                verdict.outcome, verdict.reason, changed,
                                lamp._value_ if lamp is not None else None, False))


def service_record(source: str, report: ServiceReport, changed: bool, lamp: Lamp | None,
                   now: float) -> Record:
    phase = "in_service" if report.in_service else "out_of_service"
    reason = ("the line works" if report.in_service
              else "out of service: its calls can no longer be trusted and are forgotten")
    return Record(now, source, report.conn, "service", phase=phase, reason=reason,
                  changed=changed, lamp=lamp.value if lamp is not None else None)


LOST = "the connection that reported it dropped: unknown until the source has re-sent its state"


def lost_record(source: str, conn: str, now: float, reason: str = "") -> Record:
    """The device went unknown: its connection dropped (or `reason`: its process stopped or
    died)."""
    return Record(now, source, conn, "lost", outcome="unknown", reason=reason or LOST,
                  changed=True, lamp=Lamp.UNKNOWN.value)


def apply_report(tracker: LineTracker, source: str, report: CallReport | ServiceReport,
                 now: float) -> tuple[list[DeviceState], Record | None]:
    """Apply one report to the tracker, as the tracker would without provenance, and say what
    happened: (changed device states, the record; None for a device the tracker does not
    have)."""
    if not tracker.has(report.device):
        return (tracker.call(report, now) if isinstance(report, CallReport)
                else tracker.service(report, now)), None
    if isinstance(report, ServiceReport):
        states = tracker.service(report, now)
        lamp = device_lamp(tracker.state(report.device))
        return states, service_record(source, report, bool(states), lamp, now)
    # One derivation: the verdict and the change come from the same look at the call table,
    # and the device's state is snapshotted once (it is both what changed and the lamp).
    verdict, after, changed, call = tracker.decide(report, now)
    # The direction the report's number belongs to: the report's own, else the call's (the
    # call as it was before an `ended` removed it).
    direction = (call.direction._value_ if report.direction is None and call is not None
                 else None)
    return ([after] if changed else []), call_record(source, report, verdict, changed,
                                                     device_lamp(after), now, direction)


def apply_softphone(table: CallTable, report: CallReport, now: float,
                    conn: str = "") -> tuple[bool, Record]:
    """Apply a client's softphone report to its call table: (changed, the record). The
    record's lamp is the lamp the softphone's calls alone would give."""
    before = table.calls.get(report.call)
    verdict, changed = table.decide(report, now)
    after = table.calls.get(report.call) or before
    lamp = merge_lamps((call_lamp(c) for c in table.calls.values()), default=Lamp.IDLE)
    record = call_record("softphone", replace(report, conn=conn), verdict, changed, lamp, now,
                         after.direction.value if after is not None else None)
    return changed, record


def lose_connection(tracker: LineTracker, source: str, conn: str | None, now: float,
                    reason: str = "") -> tuple[list[DeviceState], list[tuple[str, Record]]]:
    """The source (or one connection of it) went away: the tracker's states that changed and
    a record for every device that went unknown."""
    owners = {d: tracker.connection_of(d) for d in tracker.devices}
    states = tracker.connection_lost(conn)
    return states, [(s.device, lost_record(source, conn or owners.get(s.device) or "", now,
                                           reason)) for s in states]


class Pending:
    """Records waiting to be written to the shared store, per (kind, id), in order.

    Bounded twice: per key only the newest `per_key` wait (Redis keeps no more than that
    anyway), and in all at most `limit` (while the store is away the oldest are dropped first
    and counted in `dropped`): provenance never costs the gateway its memory. Records are
    encoded when taken, off the report's path.
    """

    __slots__ = ("limit", "per_key", "dropped", "_items", "_n")

    def __init__(self, limit: int = 20000, per_key: int = DEFAULT_KEEP) -> None:
        self.limit = limit
        self.per_key = per_key
        self.dropped = 0
        self._items: dict[tuple[str, str], list[Record]] = {}
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def add(self, kind: str, ident: str, record: Record) -> None:
        key = (kind, ident)
        queue = self._items.get(key)
        if queue is None:
            queue = self._items[key] = []
        queue.append(record)
        self._n += 1
        if len(queue) > self.per_key:  # older than what is kept: never written
            del queue[0]
            self._n -= 1
        if self._n > self.limit:
            self._shed()

    def _shed(self) -> None:
        while self._n > self.limit:
            key = next(iter(self._items))
            self._items[key].pop(0)
            if not self._items[key]:
                del self._items[key]
            self._n -= 1
            self.dropped += 1

    def take(self) -> dict[tuple[str, str], list[Record]]:
        out, self._items, self._n = self._items, {}, 0
        return out

    def put_back(self, items: dict[tuple[str, str], list[Record]]) -> None:
        """Records whose write failed go back in front of anything newer (order kept)."""
        newer, self._items, self._n = self._items, {}, 0
        for key, records in items.items():
            self._items[key] = list(records)
            self._n += len(records)
        for key, records in newer.items():
            self._items.setdefault(key, []).extend(records)
            self._n += len(records)
        self._shed()


# -- explanations -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DeviceExplanation:
    device: str
    name: str
    number: str
    source: str
    line: str
    lamp: str
    status: str
    calls: tuple[Call, ...]
    records: tuple[Record, ...]  # oldest first
    keep: int


@dataclass(frozen=True, slots=True)
class MemberExplanation:
    client: str
    display: str
    lamp: str
    mode: str  # blf.devices
    logged_in: bool | str
    devices: tuple[DeviceExplanation, ...]  # the feeding devices
    not_feeding: tuple[tuple[str, str], ...]  # (device, why not)
    softphone_on: bool
    softphone_calls: tuple[Call, ...]  # as the client reported them
    shown_calls: tuple[Call, ...]  # the calls the lamp shows (line calls, then softphone)
    dropped: tuple[ShownOnce, ...]
    softphone_records: tuple[Record, ...]  # oldest first
    keep: int


def explain_device(engine: Engine, device: str, records: Iterable[Record],
                   keep: int = DEFAULT_KEEP) -> DeviceExplanation:
    cfg = engine.config.device_by_id[device]
    view = engine.device_view(device)
    state = engine.device_state(device)
    return DeviceExplanation(device, cfg.name, cfg.number, cfg.source, cfg.line_name,
                             view.lamp.value, state.status.value, view.calls,
                             tuple(sorted(records, key=lambda r: r.t)), keep)


def explain_member(engine: Engine, client: str, device_records: Mapping[str, Iterable[Record]],
                   softphone_records: Iterable[Record],
                   keep: int = DEFAULT_KEEP) -> MemberExplanation:
    """Why member `client`'s lamp is what it is, from the engine's state (the same rules the
    engine applied: feeding devices, shown-once) and the kept records."""
    cfg = engine.config.client_by_name[client]
    state = engine.client_state(client)
    view = engine.member(client)
    feeding = engine.feeding_devices(cfg, state)
    mine = engine.devices_of(cfg, state)
    not_feeding = []
    for d in mine:
        if d in feeding:
            continue
        if cfg.blf.devices == "first":
            why = "blf.devices = first: only the first device feeds the lamp"
        elif state.current_device in mine:
            why = (f"blf.devices = current: the selected device is {state.current_device}")
        else:
            why = "blf.devices = current: no device selected, so the first one feeds the lamp"
        not_feeding.append((d, why))
    line_calls = [c for d in feeding for c in engine.device_state(d).calls]
    dropped: list[ShownOnce] = []
    if cfg.blf.softphone:
        _, _, dropped = shown_once(state.softphone, line_calls)
    devices = tuple(explain_device(engine, d, device_records.get(d, ()), keep) for d in feeding)
    return MemberExplanation(
        client, cfg.display, view.lamp.value, cfg.blf.devices, state.logged_in, devices,
        tuple(not_feeding), cfg.blf.softphone, state.softphone, view.calls, tuple(dropped),
        tuple(sorted(softphone_records, key=lambda r: r.t)), keep)


# -- numbers: redaction for one viewer --------------------------------------------------------

# What a viewer may see of numbers, per topic: ("device", id) or ("softphone", client) ->
# "all", "inbound" or "none" (the `numbers` right of gateway.panels.rights).
NumberPolicy = Callable[[str, str], str]


def _may_see(numbers: str, direction: str | None) -> bool:
    if numbers == "all":
        return True
    # "inbound": numbers of incoming calls only; a number whose direction is not known is
    # treated as outbound (hidden): never show what might not be allowed.
    return numbers == "inbound" and direction == "in"


def _redact_record(r: Record, numbers: str) -> Record:
    if r.remote is None and r.remote_name is None:
        return r
    if _may_see(numbers, r.direction):
        return r
    return r._replace(remote=None, remote_name=None, hidden=True)


def _redact_call(c: Call, numbers: str) -> Call:
    if (c.remote is None and c.remote_name is None) or (
            _may_see(numbers, c.direction.value) and not (numbers != "all" and c.remote_out)):
        # (A number learned as outbound information on an incoming call: "all" only.)
        return c
    return replace(c, remote=None, remote_name=None)


def _redact_device(e: DeviceExplanation, policy: NumberPolicy) -> DeviceExplanation:
    n = policy("device", e.device)
    return replace(e, calls=tuple(_redact_call(c, n) for c in e.calls),
                   records=tuple(_redact_record(r, n) for r in e.records))


def redact(e: DeviceExplanation | MemberExplanation,
           policy: NumberPolicy) -> DeviceExplanation | MemberExplanation:
    """The explanation with every number the viewer may not see removed."""
    if isinstance(e, DeviceExplanation):
        return _redact_device(e, policy)
    sp = policy("softphone", e.client)

    def line_numbers(call: Call) -> str:
        device = call.id.split("/", 1)[0]
        return policy("device", device) if not call.id.startswith("sp:") else sp

    return replace(
        e,
        devices=tuple(_redact_device(d, policy) for d in e.devices),
        softphone_calls=tuple(_redact_call(c, sp) for c in e.softphone_calls),
        shown_calls=tuple(_redact_call(c, line_numbers(c)) for c in e.shown_calls),
        dropped=tuple(replace(s, softphone=_redact_call(s.softphone, sp),
                              line=_redact_call(s.line, line_numbers(s.line)))
                      for s in e.dropped),
        softphone_records=tuple(_redact_record(r, sp) for r in e.softphone_records),
    )


# -- telling it -------------------------------------------------------------------------------

def _hms(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def _source(name: str) -> str:
    return SOURCE_WORDS.get(name, name)


def _party(direction: str | None, remote: str | None, name: str | None, withheld: bool,
           hidden: bool) -> str:
    word = {"in": "from", "out": "to"}.get(direction or "", "with")
    if withheld:
        return f"{word} a withheld number"
    if hidden:
        return f"{word} {HIDDEN}"
    if remote and name:
        return f"{word} {remote} ({name})"
    if remote or name:
        return f"{word} {remote or name}"
    return ""


_OUTCOME_WORDS = {
    "accepted": "accepted",
    "out_of_order": "ignored, out of order",
    "tombstoned": "ignored, the call had ended",
    "over_limit": "ignored, too many calls at once",
    "unknown_device": "ignored, unknown device",
}


def _record_words(r: Record) -> str:
    who = f"{_source(r.source)} ({r.conn})" if r.conn else _source(r.source)
    if r.kind == "lost":
        return f"{who}: {r.reason}. Lamp {r.lamp}."
    if r.kind == "service":
        what = "in service" if r.phase == "in_service" else "out of service"
        if not r.changed:
            return f"{who}: {what} (no change). Lamp {r.lamp}."
        return f"{who}: {what}: {r.reason}. Lamp {r.lamp}."
    direction = {"in": "incoming", "out": "outgoing"}.get(r.direction or "", "")
    party = _party(r.direction, r.remote, r.remote_name, r.withheld, r.hidden)
    detail = ", ".join(p for p in (direction, party) if p)
    head = f"{who}: call {r.call} {r.phase}" + (f", {detail}" if detail else "")
    verdict = _OUTCOME_WORDS.get(r.outcome, r.outcome)
    if r.outcome == "accepted" and not r.changed:
        verdict = "accepted, nothing new"
    tail = f" Lamp {r.lamp}." if r.lamp else ""
    return f"{head}: {verdict} ({r.reason}).{tail}"


def _call_key(call: Call) -> str:
    return call.id.split("/", 1)[1] if "/" in call.id else call.id


def _origin(records: Iterable[Record], call: Call) -> Record | None:
    """The accepted report that brought `call` into its current phase (the newest)."""
    key = _call_key(call)
    found = None
    for r in records:
        if (r.kind == "call" and r.call == key and r.outcome == "accepted" and r.changed
                and r.phase == call.state.value):
            found = r
    return found


def _device_now(e: DeviceExplanation) -> str:
    """One sentence: the device's lamp now and why."""
    lamp = e.lamp
    last = e.records[-1] if e.records else None
    if lamp == Lamp.UNKNOWN.value:
        lost = next((r for r in reversed(e.records) if r.kind == "lost"), None)
        if lost is not None and lost is last and lost.reason != LOST:
            return f"unknown since {_hms(lost.t)}: {lost.reason}"
        if lost is not None and lost is last:
            return (f"unknown since {_hms(lost.t)} because {_source(lost.source)} "
                    f"connection {lost.conn or '-'} went away; it stays unknown until the "
                    "source re-sends its state")
        if last is None:
            return ("unknown: no source has reported this device (or not since its "
                    "connection last dropped), so nothing trustworthy is known")
        return "unknown: its source has not re-sent its state since it came back"
    if lamp == Lamp.OFFLINE.value:
        off = next((r for r in reversed(e.records)
                    if r.kind == "service" and r.phase == "out_of_service"), None)
        if off is not None:
            return (f"offline since {_hms(off.t)} because {_source(off.source)} reported it "
                    "out of service")
        return "offline: its source reports it out of service"
    if not e.calls:
        return "idle: no calls" + (f" (last report {_hms(last.t)})" if last else "")
    winners = sorted((c for c in e.calls if call_lamp(c).value == lamp), key=lambda c: c.since)
    call = winners[0] if winners else e.calls[0]
    origin = _origin(e.records, call)
    text = f"{lamp} since {_hms(call.since)} because "
    if origin is not None:
        text += f"{_source(origin.source)} reported call {origin.call} {origin.phase}"
        party = _party(call.direction.value, call.remote, call.remote_name, False,
                       origin.hidden)
    else:
        text += (f"call {_call_key(call)} is {call.state.value} (the report that said so is "
                 f"older than the {e.keep} kept)")
        party = _party(call.direction.value, call.remote, call.remote_name, False, False)
    kind = "incoming" if call.direction.value == "in" else "outgoing"
    return text + f" ({kind}{', ' + party if party else ''})"


def _device_header(e: DeviceExplanation) -> str:
    return (f'Device {e.device} "{e.name}" (number {e.number or "-"}; source '
            f'{_source(e.source)}, line "{e.line}"): lamp {e.lamp}.')


def _history(records: Iterable[tuple[str, Record]], keep: int) -> list[str]:
    items = sorted(records, key=lambda x: x[1].t)
    if not items:
        return ["No reports kept."]
    out = [f"Reports, newest last (at most {keep} kept per device and per softphone):"]
    for prefix, r in items:
        out.append(f"  {_hms(r.t)}  {prefix}{_record_words(r)}")
    return out


def story(e: DeviceExplanation | MemberExplanation) -> list[str]:
    """The explanation in plain words, newest last, ending with the lamp now and why. Give
    it a redacted explanation (see :func:`redact`)."""
    if isinstance(e, DeviceExplanation):
        return [_device_header(e), *_history((("", r) for r in e.records), e.keep),
                f"Now: {_device_now(e)}."]
    lines = [f"Member {e.client} ({e.display}): lamp {e.lamp}."]
    if e.devices:
        fed = ", ".join(f"{d.device} ({d.lamp})" for d in e.devices)
        lines.append(f"Fed by blf.devices = {e.mode}: {fed}.")
    else:
        lines.append("No device feeds this lamp: it says whether the client is logged in.")
    for d, why in e.not_feeding:
        lines.append(f"Device {d} does not feed it: {why}.")
    lines.append("The softphone's calls count (blf.softphone = true)." if e.softphone_on else
                 "The softphone's calls are ignored (blf.softphone = false): a line reports "
                 "the same calls.")
    merged = [(f"{d.device}: ", r) for d in e.devices for r in d.records]
    merged += [("softphone: ", r) for r in e.softphone_records]
    lines += _history(merged, e.keep)
    now = _member_now(e)
    lines.append(f"Now: {now}.")
    return lines


def _dropped_words(s: ShownOnce) -> str:
    device = s.line.id.split("/", 1)[0]
    return (f"the softphone report of the same call (its call {_call_key(s.softphone)}, "
            f"{s.softphone.state.value} since {_hms(s.softphone.since)}) was dropped (shown "
            f"once: the call {_call_key(s.line)} on {device}; {s.reason})")


def _member_now(e: MemberExplanation) -> str:
    lamp = e.lamp
    if lamp == Lamp.UNKNOWN.value and not e.devices:
        return "unknown"
    winners = sorted((c for c in e.shown_calls if call_lamp(c).value == lamp),
                     key=lambda c: c.since)
    parts: list[str] = []
    if winners:
        call = winners[0]
        if call.id.startswith("sp:"):
            parts.append(f"{lamp} since {_hms(call.since)} because the softphone reported "
                         f"call {_call_key(call)} {call.state.value} (no line reports it)")
        else:
            device = call.id.split("/", 1)[0]
            d = next((x for x in e.devices if x.device == device), None)
            took = next((s for s in e.dropped if s.line.id == call.id
                         and s.line.state is not call.state), None)
            if took is not None:
                parts.append(f"{lamp} since {_hms(call.since)} because the softphone reported "
                             f"the call {took.softphone.state.value}, further than the line's "
                             f"{took.line.state.value} on {device}")
            elif d is not None:
                origin = _origin(d.records, call)
                if origin is not None:
                    parts.append(f"{lamp} since {_hms(call.since)} because "
                                 f"{_source(origin.source)} reported call {origin.call} "
                                 f"{origin.phase} on {device}")
                else:
                    parts.append(f"{lamp} since {_hms(call.since)}: call {_call_key(call)} on "
                                 f"{device} is {call.state.value} (the report that said so is "
                                 f"older than the {e.keep} kept)")
        parts += [_dropped_words(s) for s in e.dropped]
        return "; ".join(parts)
    if not e.devices:
        return f"{lamp}: no device feeds the lamp and the client is " + (
            "logged in" if e.logged_in else "not logged in")
    d = max(e.devices, key=lambda x: _LAMP_ORDER.get(x.lamp, 0))
    text = f"{lamp} because device {d.device} is {_device_now(d)}"
    if e.dropped:
        text += "; " + "; ".join(_dropped_words(s) for s in e.dropped)
    return text


_LAMP_ORDER = {"unknown": 0, "offline": 1, "idle": 2, "outgoing": 3, "held": 4, "busy": 5,
               "ringing": 6}


def _call_json(c: Call) -> dict:
    return {"id": c.id, "direction": c.direction.value, "state": c.state.value,
            "since": round(c.since, 3), "remote": c.remote, "remote_name": c.remote_name}


def explanation_json(e: DeviceExplanation | MemberExplanation) -> dict:
    """The explanation as data (for the admin view), with its story. Give it a redacted
    explanation (see :func:`redact`)."""
    if isinstance(e, DeviceExplanation):
        return {"kind": "device", "device": e.device, "name": e.name, "number": e.number,
                "source": e.source, "line": e.line, "lamp": e.lamp, "status": e.status,
                "calls": [_call_json(c) for c in e.calls],
                "records": [r.as_dict() for r in e.records], "keep": e.keep,
                "story": story(e)}
    return {
        "kind": "member", "client": e.client, "display": e.display, "lamp": e.lamp,
        "mode": e.mode, "logged_in": e.logged_in,
        "devices": [explanation_json(d) for d in e.devices],
        "not_feeding": [{"device": d, "why": w} for d, w in e.not_feeding],
        "softphone_on": e.softphone_on,
        "softphone_calls": [_call_json(c) for c in e.softphone_calls],
        "shown_calls": [_call_json(c) for c in e.shown_calls],
        "dropped": [{"softphone": _call_json(s.softphone), "line": _call_json(s.line),
                     "reason": s.reason} for s in e.dropped],
        "softphone_records": [r.as_dict() for r in e.softphone_records],
        "keep": e.keep, "story": story(e),
    }
