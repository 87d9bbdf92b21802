"""The BLF engine, pure: device and client states in, member and device views out.

Every gateway process runs one :class:`Engine`. It is fed, in the order of the shared change
log, the full new state of one device or one client at a time, each stamped with the global
`seq` under which it was published; it returns :class:`Delta` values only for the views that
changed. It never sees sockets, rights or Redis: the fan-out renders each delta once per
audience (see :mod:`gateway.panels.rights`).

What it decides:

- which devices feed a member's lamp (`blf.devices`: all, current, first);
- whether the client's own softphone calls feed it (`blf.softphone`), and the shown-once
  rule: a softphone call that is the same call as one on a feeding line is dropped, the line's
  report being the one shown (matched by a shared call identity where both carry one, else by
  direction, remote number and time), at the furthest progress either report has seen;
- the member's number (its own, or live from its device when it has none);
- for each panel and each member, the `seq` of its last change, so a client resuming with
  `since` gets exactly the members it missed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..config import ClientCfg, Config
from ..model import Call, CallState, ClientState, DeviceState, DeviceStatus, Lamp, Presence, fast_init
from ..numbers import digits
from .lamps import _CALL_LAMP, device_lamp, merge_lamps

__all__ = [
    "Engine",
    "MemberView",
    "DeviceView",
    "Delta",
    "SHOWN_ONCE_WINDOW",
    "same_call",
    "why_same_call",
    "ShownOnce",
    "shown_once",
]

# Two reports of one call (a softphone's and a line's) start within this many seconds of each
# other: both sides see the same SIP messages, apart from network and processing delays.
SHOWN_ONCE_WINDOW = 10.0


@fast_init
@dataclass(frozen=True, slots=True)
class MemberView:
    """A member's lamp as every watcher would see it with full rights."""

    client: str
    display: str
    number: str
    lamp: Lamp
    calls: tuple[Call, ...]
    presence: Presence
    logged_in: bool | str
    reason: str | None = None  # why the lamp is `unknown` when the gateway itself knows


@fast_init
@dataclass(frozen=True, slots=True)
class DeviceView:
    device: str
    name: str
    number: str
    lamp: Lamp
    calls: tuple[Call, ...]
    reason: str | None = None  # why the lamp is `unknown` when the gateway itself knows


@fast_init
@dataclass(frozen=True, slots=True)
class Delta:
    """One view changed. `kind` is "member" (key: client name) or "device" (key: device id)."""

    kind: str
    key: str
    view: MemberView | DeviceView
    seq: int


def _numbers_match(a: str | None, b: str | None) -> bool:
    """One number, perhaps written with and without a trunk or country prefix."""
    if a is None or b is None:
        return a is None and b is None  # both withheld (or both not told)
    da, db = digits(a), digits(b)
    if not da or not db:
        return a == b
    short, long_ = sorted((da, db), key=len)
    return da == db or (len(short) >= 6 and long_.endswith(short))


def same_call(softphone: Call, line: Call, window: float = SHOWN_ONCE_WINDOW) -> bool:
    """Whether a softphone's call and a line's call are one call seen twice."""
    if softphone.link and line.link:
        return softphone.link == line.link
    return (
        softphone.direction is line.direction
        and abs(softphone.since - line.since) <= window
        and _numbers_match(softphone.remote, line.remote)
    )


def why_same_call(softphone: Call, line: Call, window: float = SHOWN_ONCE_WINDOW) -> str | None:
    """Why `same_call` holds, in words (None where it does not): for provenance."""
    if not same_call(softphone, line, window):
        return None
    if softphone.link and line.link:
        return "the same call identity on both reports"
    gap = abs(softphone.since - line.since)
    number = ("same remote number" if softphone.remote is not None
              else "no number on either")
    return (f"same direction, {number}, started {gap:.1f} s apart "
            f"(within {window:g} s)")


# How far a call has got: answered (or held) is further than still setting up.
_PROGRESS = {CallState.DIALING: 0, CallState.RINGING: 0, CallState.CONNECTED: 1,
             CallState.HELD: 1}


@dataclass(frozen=True, slots=True)
class ShownOnce:
    """A softphone report dropped because a feeding line reports the same call: the line's
    call is shown (at the furthest progress either report has seen)."""

    softphone: Call
    line: Call  # the line's call as reported (before taking the softphone's progress)
    reason: str


def shown_once(softphone: Iterable[Call], line_calls: list[Call],
               window: float = SHOWN_ONCE_WINDOW) -> tuple[list[Call], list[Call], list[ShownOnce]]:
    """The shown-once rule: (line calls as shown, softphone calls still shown, the softphone
    reports dropped and why). Each line call absorbs at most one softphone call."""
    line_calls = list(line_calls)
    shown_sp: list[Call] = []
    dropped: list[ShownOnce] = []
    taken: set[str] = set()
    for sp in softphone:
        i = next((i for i, c in enumerate(line_calls)
                  if c.id not in taken and same_call(sp, c, window)), None)
        if i is None:
            shown_sp.append(sp)
            continue
        match = line_calls[i]
        taken.add(match.id)
        dropped.append(ShownOnce(sp, match, why_same_call(sp, match, window) or ""))
        if _PROGRESS[sp.state] > _PROGRESS[match.state]:
            # The two reports of one call arrive in either order: show the furthest either
            # has seen, so the lamp never steps back (busy -> outgoing) when the slower
            # report catches up.
            line_calls[i] = replace(match, state=sp.state, since=sp.since)
    return line_calls, shown_sp, dropped


def _sort_calls(calls: Iterable[Call]) -> tuple[Call, ...]:
    return tuple(sorted(calls, key=lambda c: (c.since, c.id)))


# A device's lamp from its status alone (its calls count through the member's calls): what
# device_lamp says of a state without calls, read once per status rather than built per change.
_STATUS_LAMP = {s: device_lamp(DeviceState("", s)) for s in DeviceStatus}


class Engine:
    """Computes member and device views from states; see the module docstring."""

    def __init__(self, config: Config, config_seq: int = 0) -> None:
        self.seq = config_seq  # highest seq applied
        self.trusted = True  # False while the shared state (Redis) is unreachable
        self.untrusted_reason = "store_unreachable"
        self._devices: dict[str, DeviceState] = {}
        self._device_seq: dict[str, int] = {}
        self._clients: dict[str, ClientState] = {}
        self._client_seq: dict[str, int] = {}
        self._members: dict[str, MemberView] = {}
        self._member_seq: dict[str, int] = {}
        self._dviews: dict[str, DeviceView] = {}
        self._dview_seq: dict[str, int] = {}
        self._panel_seq: dict[str, int] = {}
        self._temp_owner: dict[str, set[str]] = {}  # hot-desk device -> clients holding it
        self.config = config
        self._index(config)
        self._config_seq = config_seq
        self._recompute_all(config_seq, initial=True)

    # -- configuration -------------------------------------------------------------------

    def _index(self, config: Config) -> None:
        # The state of a configured client that has told nothing yet, made once (every lamp
        # computed for such a client reads it; frozen, so one object serves every read).
        self._blank_clients = {c.name: ClientState(c.name) for c in config.clients}
        self._clients_of_device: dict[str, list[str]] = {}
        for c in config.clients:
            for d in c.devices:
                self._clients_of_device.setdefault(d, []).append(c.name)

    @staticmethod
    def _panel_shape(config: Config, name: str) -> object:
        g = config.group_by_name.get(name)
        return None if g is None else (tuple(g.members), g.rights)

    def reconfigure(self, config: Config, seq: int) -> tuple[list[Delta], set[str]]:
        """Adopt a new configuration. Returns the views that changed and the panels whose
        members or rights changed (their subscribers need a fresh snapshot)."""
        old = self.config
        self.config = config
        self._index(config)
        self._config_seq = max(self._config_seq, seq)
        self.seq = max(self.seq, seq)
        reshaped = {
            name
            for name in set(old.group_by_name) | set(config.group_by_name)
            if self._panel_shape(old, name) != self._panel_shape(config, name)
        }
        for name in reshaped:
            self._panel_seq[name] = seq
        for name in set(self._members) - set(config.client_by_name):
            del self._members[name]
            self._member_seq.pop(name, None)
        for dev in set(self._dviews) - set(config.device_by_id):
            del self._dviews[dev]
            self._dview_seq.pop(dev, None)
        return self._recompute_all(seq), reshaped

    # -- state updates -------------------------------------------------------------------

    def update_device(self, state: DeviceState, seq: int) -> list[Delta]:
        if seq <= self._device_seq.get(state.device, -1):
            return []  # an older state than the one we hold (replayed log): ignore
        self._devices[state.device] = state
        self._device_seq[state.device] = seq
        self.seq = max(self.seq, seq)
        out = self._recompute_device(state.device, seq)
        owners = self._clients_of_device.get(state.device, ())
        for client in owners:
            out.extend(self._recompute_member(client, seq))
        for client in self._temp_owner.get(state.device, ()):
            if client not in owners:
                out.extend(self._recompute_member(client, seq))
        return out

    def _set_temp(self, state: ClientState) -> None:
        old = self._clients.get(state.client)
        for d in old.temp_devices if old else ():
            self._temp_owner.get(d, set()).discard(state.client)
        for d in state.temp_devices:
            self._temp_owner.setdefault(d, set()).add(state.client)

    def update_client(self, state: ClientState, seq: int) -> list[Delta]:
        if seq <= self._client_seq.get(state.client, -1):
            return []
        self._set_temp(state)
        self._clients[state.client] = state
        self._client_seq[state.client] = seq
        self.seq = max(self.seq, seq)
        return self._recompute_member(state.client, seq)

    def set_trusted(self, trusted: bool, seq: int | None = None,
                    reason: str = "store_unreachable") -> list[Delta]:
        """While the shared state is unreachable (or cannot keep what we write) every lamp
        is `unknown` (no calls), saying `reason`."""
        if trusted == self.trusted and (trusted or reason == self.untrusted_reason):
            return []
        self.trusted = trusted
        self.untrusted_reason = reason
        if seq is not None:
            self.seq = max(self.seq, seq)
        return self._recompute_all(self.seq)

    # -- queries -------------------------------------------------------------------------

    def device_state(self, device: str) -> DeviceState:
        return self._devices.get(device) or DeviceState(device)

    def client_state(self, client: str) -> ClientState:
        return self._clients.get(client) or self._blank_clients.get(client) or ClientState(client)

    def member(self, client: str) -> MemberView:
        return self._members[client]

    def member_seq(self, client: str) -> int:
        return self._member_seq.get(client, 0)

    def desk_holders(self, device: str) -> set[str]:
        """Clients holding `device` as a hot-desk device."""
        return set(self._temp_owner.get(device, ()))

    def client_seq(self, client: str) -> int:
        return self._client_seq.get(client, 0)

    def device_view(self, device: str) -> DeviceView:
        return self._dviews[device]

    def panel(self, name: str) -> list[MemberView]:
        group = self.config.group_by_name[name]
        return [self._members[m] for m in group.members]

    def panel_changes_since(self, name: str, since: int) -> list[MemberView] | None:
        """Members of a panel that changed after `since`, or None when the client must take
        a full snapshot instead (the panel itself changed, or `since` is not one of ours)."""
        if since > self.seq or since < self._panel_seq.get(name, self._config_seq):
            return None
        group = self.config.group_by_name[name]
        return [self._members[m] for m in group.members if self._member_seq.get(m, 0) > since]

    # -- computation ---------------------------------------------------------------------

    def devices_of(self, cfg: ClientCfg, state: ClientState | None = None) -> list[str]:
        """A client's devices now: its main devices, then the hot-desk ones it holds."""
        state = state or self.client_state(cfg.name)
        extra = [d for d in state.temp_devices
                 if d not in cfg.devices and d in self.config.device_by_id]
        return [*cfg.devices, *extra] if extra else list(cfg.devices)

    def feeding_devices(self, cfg: ClientCfg, state: ClientState) -> list[str]:
        mode = cfg.blf.devices
        devices = self.devices_of(cfg, state)
        if mode == "first" or (mode == "current" and state.current_device not in devices):
            # `current` before the client has chosen (or while it is logged out): its first
            # device, so the lamp never goes blank just because nobody is logged in.
            return devices[:1]
        if mode == "current":
            return [state.current_device]  # type: ignore[list-item]
        return devices

    def _compute_member(self, cfg: ClientCfg) -> MemberView:
        state = self.client_state(cfg.name)
        feeding = self.feeding_devices(cfg, state)
        number = cfg.number or next(
            (n for d in feeding or self.devices_of(cfg, state)
             if (n := self.config.device_by_id[d].number)),
            "",
        )
        if not self.trusted:
            return MemberView(
                cfg.name, cfg.display, number, Lamp.UNKNOWN, (), state.presence, state.logged_in,
                self.untrusted_reason,
            )
        # The lamps of the feeding devices (their state without calls: idle, offline or
        # unknown), then of every call shown. Read straight from the tables of
        # gateway.panels.lamps: this runs for every member of every change.
        devices = self._devices
        lamps: list[Lamp] = []
        line_calls: list[Call] = []
        for d in feeding:
            dstate = devices.get(d)
            if dstate is None:
                dstate = DeviceState(d)
            lamps.append(_STATUS_LAMP[dstate.status])
            line_calls.extend(dstate.calls)
        shown_sp: list[Call] = []
        if cfg.blf.softphone and state.softphone:
            line_calls, shown_sp, _ = shown_once(state.softphone, line_calls)
        for c in line_calls:
            lamps.append(_CALL_LAMP[c.state])
        for c in shown_sp:
            lamps.append(_CALL_LAMP[c.state])
        if not feeding:
            # No line feeds this lamp: whether the client is there is all we know.
            lamps.append(Lamp.IDLE if state.logged_in else Lamp.OFFLINE)
        lamp = lamps[0] if len(lamps) == 1 else merge_lamps(lamps)
        calls = line_calls + shown_sp
        calls = _sort_calls(calls) if len(calls) > 1 else tuple(calls)
        return MemberView(
            cfg.name, cfg.display, number, lamp, calls, state.presence, state.logged_in
        )

    def _compute_device(self, device: str) -> DeviceView:
        dcfg = self.config.device_by_id[device]
        state = self.device_state(device)
        if not self.trusted:
            return DeviceView(device, dcfg.name, dcfg.number, Lamp.UNKNOWN, (),
                              self.untrusted_reason)
        return DeviceView(device, dcfg.name, dcfg.number, device_lamp(state), state.calls)

    def _recompute_member(self, client: str, seq: int) -> list[Delta]:
        cfg = self.config.client_by_name.get(client)
        if cfg is None:
            return []
        view = self._compute_member(cfg)
        if self._members.get(client) == view:
            return []
        self._members[client] = view
        self._member_seq[client] = seq
        return [Delta("member", client, view, seq)]

    def _recompute_device(self, device: str, seq: int) -> list[Delta]:
        if device not in self.config.device_by_id:
            return []
        view = self._compute_device(device)
        if self._dviews.get(device) == view:
            return []
        self._dviews[device] = view
        self._dview_seq[device] = seq
        return [Delta("device", device, view, seq)]

    def _recompute_all(self, seq: int, initial: bool = False) -> list[Delta]:
        out: list[Delta] = []
        for d in self.config.device_by_id:
            out.extend(self._recompute_device(d, seq))
        for c in self.config.client_by_name:
            out.extend(self._recompute_member(c, seq))
        return [] if initial else out

    def load(
        self,
        devices: Iterable[tuple[DeviceState, int]],
        clients: Iterable[tuple[ClientState, int]],
    ) -> list[Delta]:
        """Take the states stored in Redis, at start-up or after Redis came back.

        A view that changed takes as its seq the highest seq of what it depends on (and the
        config's), so a client resuming with `since` gets every view that may have changed
        after it. Returns the deltas (ignored at start-up, when nobody is subscribed)."""
        for state, seq in devices:
            self._devices[state.device] = state
            self._device_seq[state.device] = seq
            self.seq = max(self.seq, seq)
        for state, seq in clients:
            self._set_temp(state)
            self._clients[state.client] = state
            self._client_seq[state.client] = seq
            self.seq = max(self.seq, seq)
        out: list[Delta] = []
        for d in self.config.device_by_id:
            view = self._compute_device(d)
            if self._dviews.get(d) != view:
                seq = max(self._device_seq.get(d, 0), self._config_seq)
                self._dviews[d] = view
                self._dview_seq[d] = seq
                out.append(Delta("device", d, view, seq))
        for cfg in self.config.clients:
            view = self._compute_member(cfg)
            if self._members.get(cfg.name) != view:
                deps = [self._device_seq.get(d, 0) for d in self.devices_of(cfg)]
                seq = max([self._config_seq, self._client_seq.get(cfg.name, 0), *deps])
                self._members[cfg.name] = view
                self._member_seq[cfg.name] = seq
                out.append(Delta("member", cfg.name, view, seq))
        return out
