"""SIP lines watched on the project's own SIP layer, pure: what the PBX says -> core reports.

Each watched line is one RFC 6665 subscription (:class:`~gateway.sip.proto.ClientSubscription`)
in the package its device asks for: ``presence`` (PIDF, read by
:func:`gateway.sip.presence.read_presence`) or ``dialog`` (RFC 4235, :class:`DialogTranslator`:
one call per dialog, with direction, remote number and name, and the SIP Call-ID as the call's
`link` for the shown-once rule). :class:`WatchCore` keeps them all: SUBSCRIBEs, answers,
NOTIFYs and `now` in; requests to send and :class:`Lost` / reports out; `next_deadline()`.

How a line stays true (each rule's reason beside it):

- the subscription is refreshed at most every `probe` seconds (default 10 s), far more often
  than its expiry needs: a PBX that restarted and forgot us answers the refresh 481 and is
  noticed within `probe` seconds, not at the next refresh of a 600 s subscription;
- a refresh answered 481 starts a new dialog at once (the device stays as it was until the
  new one's first NOTIFY says otherwise, or the attempt fails);
- a SUBSCRIBE refused, timed out (32 s) or a subscription terminated makes the device unknown
  (:class:`Lost`) and is retried with backoff; ``deactivated``/``timeout`` at once,
  ``probation`` after its retry-after;
- a NOTIFY without a body: the server lost the publication, the device is unknown;
- no NOTIFY within `first_notify` seconds after a 2xx: unknown (RFC 6665 requires one at once);
- a refresh (probe) not answered within `answer_within` seconds (default 4 s): the server is
  down or unreachable, the device is unknown at once (the transaction goes on, up to 32 s; an
  answer then brings the line back as usual).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..backoff import Backoff
from ..calls import TRANSITIONS, CallReport, Phase, ServiceReport
from ..model import Direction
from .dialoginfo import DialogInfo, DialogInfoError, dialog_phase, parse_dialog_info
from .digest import uri_user
from .presence import LineActivity, PidfError, PresenceTranslator, read_presence
from .proto.message import Request, Response, SipParseError
from .proto.subscription import Active, ClientSubscription, Failed, Notified, Terminated

__all__ = ["WatchLine", "Lost", "Out", "DialogTranslator", "WatchCore", "PACKAGES"]

PACKAGES = {"presence": "application/pidf+xml", "dialog": "application/dialog-info+xml"}


@dataclass(frozen=True, slots=True)
class WatchLine:
    """One line to watch: the URI, the device it is, the event package."""

    uri: str
    device: str
    event: str = "presence"


@dataclass(frozen=True, slots=True)
class Lost:
    """The device's state is no longer known (pass `conn` to LineTracker.connection_lost)."""

    conn: str
    why: str


@dataclass(frozen=True, slots=True)
class Out:
    """A request to send to `dest`; report its final response to :meth:`WatchCore.on_response`
    with the same `key`."""

    request: Request
    dest: object
    key: str


class DialogTranslator:
    """Dialog-info documents of one device -> call reports (one call per dialog).

    Call ids are ``dlg-{device}-{dialog id}``; the dialog's Call-ID (where the PBX sends one;
    Asterisk does not) becomes the call's `link`. A full document ends every call it no
    longer lists; a partial one changes only the dialogs it lists. Versions lower than the
    last one of the same subscription are out of order and ignored.
    """

    def __init__(self, device: str, conn: str) -> None:
        self.device, self.conn = device, conn
        self.calls: dict[str, Phase] = {}
        self.version = -1

    def reset(self) -> None:
        self.calls.clear()
        self.version = -1

    def update(self, info: DialogInfo) -> list[CallReport | ServiceReport]:
        if info.version < self.version:
            return []
        self.version = info.version
        out: list[CallReport | ServiceReport] = [ServiceReport(self.device, True, self.conn)]
        seen: set[str] = set()
        for d in info.dialogs:
            call = f"dlg-{self.device}-{d.id or d.call_id or 'x'}"
            seen.add(call)
            phase = dialog_phase(d)
            was = self.calls.get(call)
            if phase is Phase.ENDED:
                if was is not None:
                    out.append(CallReport(self.device, call, Phase.ENDED, conn=self.conn))
                    del self.calls[call]
                continue
            if was is not None and phase is not was and phase not in TRANSITIONS[was]:
                continue  # out of order (e.g. early after confirmed): changes nothing
            direction = {"initiator": Direction.OUT, "recipient": Direction.IN}.get(
                d.direction or "", Direction.IN if phase is Phase.RINGING else Direction.OUT)
            remote = uri_user(d.remote_uri) if d.remote_uri else None
            withheld = remote is not None and remote.lower() in ("anonymous", "unknown")
            self.calls[call] = phase
            # Replaces (RFC 3891) at the watched phone: to-tag is its own (local) tag.
            replaces = (f"{d.call_id};to-tag={d.local_tag};from-tag={d.remote_tag}"
                        + (";early-only" if phase is Phase.RINGING else "")
                        if d.call_id and d.local_tag and d.remote_tag else None)
            out.append(CallReport(self.device, call, phase, direction,
                                  None if withheld else remote, d.remote_display,
                                  link=d.call_id, withheld=withheld, conn=self.conn,
                                  replaces=replaces))
        if info.full:
            for call in [c for c in self.calls if c not in seen]:
                out.append(CallReport(self.device, call, Phase.ENDED, conn=self.conn))
                del self.calls[call]
        # With calls, in service is implied by them (LineTracker.call): no ServiceReport,
        # which would publish a passing idle before the first call's lamp.
        return out[1:] if self.calls else out


@dataclass
class _Line:
    line: WatchLine
    sub: ClientSubscription
    backoff: Backoff
    up: bool = False  # a NOTIFY with state arrived on the current subscription
    retry_at: float | None = None
    first_by: float | None = None  # a 2xx arrived: a NOTIFY is due by then
    pending: dict[str, Request] = field(default_factory=dict)  # key -> request in flight
    dialogs: DialogTranslator | None = None
    attempts: int = 0
    active_at: float | None = None  # when the server last granted the subscription
    sent_at: float | None = None  # when the request in flight was sent
    silent: bool = False  # the server let a request go unanswered for `answer_within`


class WatchCore:
    """All watched lines of one gateway process (see the module docstring).

    `local(dest)` says how we appear on the transport towards `dest`; `dest_of(uri)` where to
    send a line's SUBSCRIBEs (the PBX address, from the URI or an outbound proxy).
    `credentials`: (user, password) for the PBX's digest challenges.
    """

    def __init__(self, local, dest_of, *, local_uri: str,  # noqa: ANN001
                 credentials: tuple[str, str] | None = None, expires: int = 600,
                 probe: float = 10.0, backoff_initial: float = 1.0,
                 backoff_max: float = 60.0, first_notify: float = 10.0,
                 answer_within: float = 4.0, call_ids_from: int = 0) -> None:
        self.local, self.dest_of = local, dest_of
        self.local_uri = local_uri
        self.credentials = credentials
        self.expires, self.probe = expires, probe
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.first_notify = first_notify
        self.answer_within = answer_within
        # Synthetic presence call ids count from `call_ids_from` (the edge passes the time in
        # ms, so that they never repeat across a restart).
        self.presence = PresenceTranslator(call_ids_from)
        self.lines: dict[str, _Line] = {}  # uri -> line
        self.suspended = False  # the registration that carries the subscriptions is lost
        self._keys = itertools.count(1)
        self.log: list[str] = []

    @staticmethod
    def conn(device: str) -> str:
        return PresenceTranslator.conn(device)

    # ------------------------------------------------------------------ lines

    def update_lines(self, lines: Mapping[str, WatchLine], now: float
                     ) -> tuple[list[Out], list]:
        """Watch exactly `lines` (uri -> line); unchanged ones keep their subscription."""
        out: list[Out] = []
        events: list = []
        for uri in [u for u, ln in self.lines.items() if lines.get(u) != ln.line]:
            ln = self.lines.pop(uri)
            if ln.sub.established:
                out.append(self._send(ln, ln.sub.unsubscribe()))
            events.append(Lost(self.conn(ln.line.device), "no longer watched"))
            self.presence.reset(ln.line.device)
        for uri, wl in lines.items():
            if uri in self.lines:
                continue
            dest = self.dest_of(wl.uri)
            sub = ClientSubscription(wl.uri, self.local_uri, self.local(dest), wl.event,
                                     PACKAGES.get(wl.event, PACKAGES["presence"]), dest,
                                     expires=self.expires, credentials=self.credentials,
                                     refresh_margin=30.0)
            ln = _Line(wl, sub, Backoff(self.backoff_initial, self.backoff_max))
            if wl.event == "dialog":
                ln.dialogs = DialogTranslator(wl.device, self.conn(wl.device))
            self.lines[uri] = ln
            if not self.suspended:
                out.append(self._subscribe(ln, now))
        return out, events

    def suspend(self, why: str) -> list:
        """The registration is lost: every line unknown, nothing subscribed until resume."""
        self.suspended = True
        events: list = []
        for ln in self.lines.values():
            ln.up = False
            ln.first_by = ln.retry_at = ln.sent_at = None
            ln.pending.clear()
            ln.sub.refresh_at = None
            if ln.dialogs is not None:
                ln.dialogs.reset()
            self.presence.reset(ln.line.device)
            events.append(Lost(self.conn(ln.line.device), why))
        return events

    def resume(self, now: float) -> list[Out]:
        """Registered again: subscribe every line anew."""
        self.suspended = False
        out = []
        for ln in self.lines.values():
            ln.sub = self._new_sub(ln)
            out.append(self._subscribe(ln, now))
        return out

    def _new_sub(self, ln: _Line) -> ClientSubscription:
        return ClientSubscription(
            ln.sub.target, ln.sub.local_uri, ln.sub.local, ln.sub.event, ln.sub.accept,
            ln.sub.dest, expires=self.expires, credentials=self.credentials,
            refresh_margin=30.0)

    def stop(self) -> tuple[list[Out], list]:
        """Unsubscribe everything; every device unknown."""
        return self.update_lines({}, 0.0)

    def _send(self, ln: _Line, req: Request, now: float | None = None) -> Out:
        key = str(next(self._keys))
        ln.pending[key] = req
        if now is not None:
            ln.sent_at = now
        return Out(req, ln.sub.dest, key)

    def _subscribe(self, ln: _Line, now: float) -> Out:
        ln.attempts += 1
        ln.retry_at = None
        return self._send(ln, ln.sub.subscribe(now), now)

    def _line_of_key(self, key: str) -> _Line | None:
        return next((ln for ln in self.lines.values() if key in ln.pending), None)

    # ------------------------------------------------------------------ wire in

    def on_response(self, key: str, resp: Response | None, now: float
                    ) -> tuple[list[Out], list]:
        """The final response to request `key` (None: no answer in time)."""
        ln = self._line_of_key(key)
        if ln is None:
            return [], []
        req = ln.pending.pop(key)
        ln.sent_at = None
        if req.header("Expires") == "0":
            return [], []  # an unsubscribe: nothing more to do
        if resp is None:
            sub_events, nxt = ln.sub.on_timeout(now)
        else:
            sub_events, nxt = ln.sub.on_response(req, resp, now)
        out: list[Out] = [self._send(ln, nxt, now)] if nxt is not None else []
        events: list = []
        if resp is not None and ln.silent:
            ln.silent = False
            self.log.append(f"{ln.line.uri}: the server answers again")
        for ev in sub_events:
            if isinstance(ev, Active):
                ln.active_at = now
                if ln.first_by is None and not ln.up:
                    ln.first_by = now + self.first_notify
            elif isinstance(ev, Failed):
                if nxt is not None and ev.status in (481, 408):
                    # the server forgot the dialog: a new one is on its way; the lamp
                    # stays until it answers (or fails)
                    self.log.append(f"{ln.line.uri}: {ev.status} on refresh: subscribing anew")
                    ln.up = False
                    ln.attempts += 1
                    if ln.dialogs is not None:
                        ln.dialogs.version = -1  # a new subscription counts from 0 again
                    continue
                events += self._down(ln, now, f"{ev.status} {ev.reason}".strip(),
                                     ev.retry_after)
        return out, events

    def on_notify(self, req: Request, now: float) -> tuple[Response | None, list]:
        """Our answer to a NOTIFY and what it says (None: not one of ours, answer 481)."""
        ln = next((ln for ln in self.lines.values() if ln.sub.matches(req)), None)
        if ln is None:
            return None, []
        resp, sub_events = ln.sub.on_notify(req, now)
        events: list = []
        for ev in sub_events:
            if isinstance(ev, Notified):
                events += self._state(ln, ev, now)
            elif isinstance(ev, Terminated):
                events += self._down(ln, now, f"terminated ({ev.reason or 'no reason'})",
                                     ev.retry_after)
        return resp, events

    def _state(self, ln: _Line, ev: Notified, now: float) -> list:
        device, conn = ln.line.device, self.conn(ln.line.device)
        if not ev.body.strip():
            if ev.state == "pending":
                return []
            ln.up = False
            ln.first_by = None
            if ln.dialogs is not None:
                ln.dialogs.reset()
            self.presence.update(device, LineActivity.UNKNOWN)
            return [Lost(conn, "NOTIFY without a body: the server has no state")]
        try:
            if ln.dialogs is not None:
                reports = ln.dialogs.update(parse_dialog_info(ev.body))
            else:
                reports = self.presence.update(device, read_presence(ev.body))
        except (PidfError, DialogInfoError, SipParseError) as exc:
            self.log.append(f"{ln.line.uri}: unusable body: {exc}")
            return []
        if not ln.up:
            ln.up = True
            ln.backoff.reset()
            self.log.append(f"watching {ln.line.uri} ({device}, {ln.line.event})")
        ln.first_by = None
        return [reports] if reports else []

    def _down(self, ln: _Line, now: float, why: str, retry_after: float | None) -> list:
        was_up = ln.up
        ln.up = False
        ln.first_by = None
        ln.sub.refresh_at = None
        if ln.dialogs is not None:
            ln.dialogs.reset()
        self.presence.reset(ln.line.device)
        delay = ln.backoff.next()
        if retry_after is not None and retry_after > 0:
            delay = max(delay, retry_after)
        elif retry_after == 0.0:
            delay = min(delay, self.backoff_initial)
        ln.retry_at = now + delay
        self.log.append(f"{ln.line.uri} ({ln.line.device}) down: {why}; again in "
                        f"{delay:.1f} s" + ("" if was_up else " (was not up)"))
        return [Lost(self.conn(ln.line.device), why)]

    # ------------------------------------------------------------------ time

    def next_deadline(self) -> float | None:
        if self.suspended:
            return None
        times = []
        for ln in self.lines.values():
            silent_at = (ln.sent_at + self.answer_within
                         if ln.sent_at is not None and not ln.silent and ln.up else None)
            for t in (ln.retry_at, ln.first_by, self._refresh_at(ln), silent_at):
                if t is not None:
                    times.append(t)
        return min(times) if times else None

    def _refresh_at(self, ln: _Line) -> float | None:
        at = ln.sub.refresh_at
        if at is None or ln.pending:
            return None
        if ln.active_at is not None and self.probe:
            # Probe: refresh at most `probe` seconds after the server last granted it.
            return min(at, ln.active_at + self.probe)
        return at

    def tick(self, now: float) -> tuple[list[Out], list]:
        out: list[Out] = []
        events: list = []
        if self.suspended:
            return out, events
        for ln in list(self.lines.values()):
            if ln.retry_at is not None and now >= ln.retry_at:
                ln.sub = self._new_sub(ln)
                out.append(self._subscribe(ln, now))
                continue
            if (ln.sent_at is not None and ln.up and not ln.silent
                    and now >= ln.sent_at + self.answer_within):
                ln.silent = True
                ln.up = False
                if ln.dialogs is not None:
                    ln.dialogs.reset()
                self.presence.reset(ln.line.device)
                self.log.append(f"{ln.line.uri}: no answer within {self.answer_within:.0f} s: "
                                "state unknown until the server answers")
                events.append(Lost(self.conn(ln.line.device), "the server does not answer"))
                continue
            if ln.first_by is not None and now >= ln.first_by:
                events += self._down(ln, now, f"no NOTIFY within {self.first_notify:.0f} s",
                                     None)
                continue
            at = self._refresh_at(ln)
            if at is not None and now >= at:
                ln.sub.refresh_at = now  # due: the subscription builds the refresh
                req = ln.sub.tick(now)
                if req is not None:
                    out.append(self._send(ln, req, now))
        return out, events

    def __len__(self) -> int:
        return len(self.lines)

    def up(self) -> dict[str, bool]:
        return {ln.line.device: ln.up for ln in self.lines.values()}

