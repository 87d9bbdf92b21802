"""Asterisk Manager events -> the core's CallReport / ServiceReport values, pure.

:class:`AmiTranslator` is fed parsed :class:`~gateway.ami.protocol.AmiMessage` values in
the order Asterisk sent them (live events and re-sync list items alike) and returns the
reports they imply. It keeps a small state: which device each channel belongs to, the
channel's last state and what was last reported for it (so an event that changes nothing
yields nothing), and the devices behind each watched hint. :meth:`AmiTranslator.reset`
forgets all of it; the client calls it on every (re)connect, before the re-sync lists.

Lines. A device's `line` is either an Asterisk device (``PJSIP/201``, ``SIP/201``; the
technology is matched case-insensitively) or a hint extension (``201`` or ``201@context``).
A channel ``PJSIP/201-0000002a`` belongs to the device line ``PJSIP/201``. For a hint line the
channel belongs to the devices of the hint as ExtensionStatus reports them (``Hint:
PJSIP/201&SIP/201``); until a hint has been seen, a channel whose resource equals the
extension (``PJSIP/201`` for ``201``) is taken as the hint's, the usual naming.
Service state: a device line follows DeviceStateChange, a hint line ExtensionStatus.

Calls. ``call`` is the channel's Uniqueid and ``link`` its Linkedid. ChannelState gives the
phase: 5 Ringing / 9 Pre-ring -> RINGING (the device is alerting: incoming), 4 Ring /
2 Off-hook / 3 Dialing / 8 Dialing off-hook / 7 Busy -> DIALING (the device placed the call),
6 Up -> CONNECTED, or HELD between Hold and Unhold. A channel in 0 Down / 1 Rsrvd reports
nothing until it rings, is answered, or dials out (it is the source of a DialBegin).
Direction: the first phase decides (RINGING in, DIALING out); a channel first seen already
up is ``out`` when it is the dialing side (DialBegin source, Application ``Dial``, or its
Uniqueid equals its Linkedid) and ``in`` otherwise. ``remote``/``remote_name`` come from
ConnectedLineNum/Name; until Asterisk fills those (``<unknown>`` = not known), a callee's
channel takes the caller's CallerIDNum/Name from DialBegin, and a caller's channel the
callee's DestCallerIDNum/Name, then the dialled Exten. Hangup -> ENDED.

Re-sync. CoreShowChannel items are channels already up or ringing; ExtensionStatus items
and DeviceStateChange items (answers to ExtensionStateList and DeviceStateList) are service
states. CoreShowChannel does not say whether a call is on hold: when the list completes, an
up channel on a device whose state is ONHOLD (hint status 16) is reported HELD.

Deliberately ignored: channels of no watched device (trunks, Local/ channels: they are
only read as the other side of a DialBegin); Newexten, VarSet, DTMF, RTCP, CDR/CEL,
BridgeCreate/Destroy, AttendedTransfer/BlindTransfer (their effects arrive as Hangup,
Newchannel and ConnectedLine events of the legs), MusicOnHold, Pickup (the picker's channel
and the picked one report their own states), ParkedCall, queue and agent events; the busy /
ringing / in-use meaning of DeviceStateChange and ExtensionStatus (calls come from channel
events, device states only say in or out of service); caller id presentation (AMI events do
not carry it, so `withheld` is never set); unknown events and fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial

from ..calls import CallReport, Phase, ServiceReport
from ..model import Direction
from .protocol import AmiMessage

__all__ = [
    "AmiTranslator",
    "channel_device",
    "channel_phase",
    "OUT_OF_SERVICE_DEVICE_STATES",
    "OUT_OF_SERVICE_EXTENSION_STATUSES",
]

Report = CallReport | ServiceReport

# DeviceStateChange State values that mean "this line cannot take calls".
OUT_OF_SERVICE_DEVICE_STATES = frozenset({"UNAVAILABLE", "INVALID"})
# ExtensionStatus Status values: -2 extension removed, -1 hint removed, 4 unavailable.
OUT_OF_SERVICE_EXTENSION_STATUSES = frozenset({"-2", "-1", "4"})

_RINGING_STATES = frozenset({5, 9})  # Ringing, Pre-ring: the device alerts
_DIALING_STATES = frozenset({2, 3, 4, 7, 8})  # OffHook, Dialing, Ring, Busy, Dialing Offhook
_UP = 6
_HOLD_DEVICE_STATES = frozenset({"ONHOLD"})
_HOLD_EXTENSION_STATUSES = frozenset({"16"})

_UNKNOWN = frozenset({"", "<unknown>", "<Unknown>", "unknown"})


def _known(value: str | None) -> str | None:
    """An AMI caller id field, or None where Asterisk says it does not know."""
    if value is None:
        return None
    value = value.strip()
    return None if value in _UNKNOWN else value


def channel_device(channel: str) -> str:
    """The device part of a channel name: ``PJSIP/201-0000002a`` -> ``PJSIP/201``.

    Suffixes Asterisk adds while it replaces a channel (``<ZOMBIE>``, ``<MASQ>``) and the
    ``;1``/``;2`` of Local channels are dropped. A name without ``-`` is returned whole.
    """
    name = channel
    cut = name.find("<")
    if cut >= 0:
        name = name[:cut]
    cut = name.find(";")
    if cut >= 0:
        name = name[:cut]
    slash = name.find("/")
    dash = name.rfind("-")
    if dash > slash >= 0:
        name = name[:dash]
    return name


def _norm_device(dev: str) -> str:
    # The technology is case-insensitive in Asterisk (pjsip/201 == PJSIP/201); the resource
    # is not.
    tech, sep, res = dev.strip().partition("/")
    return f"{tech.lower()}{sep}{res}" if sep else dev.strip()


def channel_phase(state: int | None, held: bool) -> Phase | None:
    """The phase of a channel in ChannelState `state` (None: not enough to report yet)."""
    if state is None:
        return None
    if state == _UP:
        return Phase.HELD if held else Phase.CONNECTED
    if state in _RINGING_STATES:
        return Phase.RINGING
    if state in _DIALING_STATES:
        return Phase.DIALING
    return None


# The keys (lower case) each handled event is read for, in the order its handler takes
# their values (AmiMessage.pick): a parser told them (AmiParser.picks) takes just these.
# A channel snapshot: the channel, its uniqueid, state, linkedid, connected line number
# and name, and the dialled extension; DialBegin/DialEnd carry the other side's as Dest*.
_SNAPSHOT = ("channel", "uniqueid", "channelstate", "linkedid", "connectedlinenum",
             "connectedlinename", "exten")
_DEST_SNAPSHOT = tuple("dest" + k for k in _SNAPSHOT)
_N = len(_SNAPSHOT)  # where the Dest* snapshot starts in a DialBegin/DialEnd's values
MAX_CHANNEL_ROUTES = 4096  # channel names whose devices are remembered (then forgotten)


# Enum members, read where every event is translated (a module global is read faster than
# an attribute of the Enum class).
_RINGING, _DIALING, _HELD, _CONNECTED, _ENDED = (
    Phase.RINGING, Phase.DIALING, Phase.HELD, Phase.CONNECTED, Phase.ENDED)
_IN, _OUT = Direction.IN, Direction.OUT
# ChannelState values as sent -> their number (the usual ones; _int reads any other).
_STATES = {str(i): i for i in range(11)}
# The phase of a channel state other than Up (see channel_phase).
_PHASE_OF_STATE = {**{s: Phase.RINGING for s in _RINGING_STATES},
                   **{s: Phase.DIALING for s in _DIALING_STATES}}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class _Chan:
    """What the translator remembers about one channel of a watched device."""

    __slots__ = (
        "uniqueid", "name", "devices", "linkedid", "state", "held", "dialing_out",
        "direction", "connected_num", "connected_name", "other_num", "other_name",
        "exten", "application", "last", "caller_channel",
    )

    def __init__(self, uniqueid: str, name: str, devices: tuple[str, ...]) -> None:
        self.uniqueid = uniqueid
        self.name = name
        self.devices = devices
        self.linkedid: str | None = None
        self.state: int | None = None
        self.held = False
        self.dialing_out = False  # the source of a DialBegin
        self.direction: Direction | None = None
        self.connected_num: str | None = None
        self.connected_name: str | None = None
        self.other_num: str | None = None  # the other side's CallerIDNum from DialBegin
        self.other_name: str | None = None
        self.exten: str | None = None
        self.application: str | None = None
        self.last: tuple | None = None  # (phase, remote, remote_name) last reported
        self.caller_channel: str | None = None  # the channel that dialed this one (DialBegin)


class AmiTranslator:
    """Stateful translator of AMI events for the devices of one AMI source.

    `lines` maps each watched AMI line (``PJSIP/201``, ``SIP/201``, ``201``,
    ``201@from-internal``) to its device id. `conn` is put in every report's ``conn``.
    `events` names (lower case) the events that can change anything here: a parser may drop
    every other one unread (:attr:`~gateway.ami.protocol.AmiParser.wanted`).
    """

    def __init__(self, lines: Mapping[str, str], conn: str = "ami") -> None:
        self.conn = conn
        self._device_lines: dict[str, list[str]] = {}  # normalised PJSIP/201 -> devices
        self._hint_lines: dict[str, list[str]] = {}  # "201" or "201@ctx" -> devices
        for line, device in lines.items():
            line = line.strip()
            if "/" in line:
                self._device_lines.setdefault(_norm_device(line), []).append(device)
            else:
                self._hint_lines.setdefault(line, []).append(device)
        # The events that can change something here (lower case): all handled ones, but
        # ExtensionStatus only with hint lines and DeviceStateChange only with device lines
        # (without them both are no-ops). Whoever parses may drop the rest unread.
        names = set(_HANDLERS)
        if not self._hint_lines:
            names.discard("extensionstatus")
        if not self._device_lines:
            names.discard("devicestatechange")
        self.events: frozenset[str] = frozenset(names)
        # cache: Device of a DeviceStateChange as sent -> the ids of its device line (the
        # lines do not change: never stale; forgotten when full).
        self._state_routes: dict[str, tuple[str, ...]] = {}
        # What each of them is read for (lower case): a parser may pick just these values
        # (AmiParser.picks), in the order the handlers take them.
        self.picks: dict[str, tuple[str, ...]] = {n: _HANDLERS[n][1] for n in sorted(names)}
        # ... and what reads those values: name -> handler(values) -> reports (feed_picked).
        self.handlers: dict[str, Callable[[tuple[str | None, ...]], list[Report]]] = {
            n: partial(_HANDLERS[n][0], self) for n in self.picks}
        self.reset()

    def reset(self) -> None:
        """Forget channels, learned hints and states (call it on every (re)connect)."""
        self._chans: dict[str, _Chan] = {}  # uniqueid -> channel of a watched device
        self._by_name: dict[str, str] = {}  # channel name -> uniqueid
        self._hint_devices: dict[str, tuple[str, ...]] = {}  # asterisk device -> device ids
        self._hinted: set[str] = set()  # device ids whose hint has been seen
        self._hold_devices: set[str] = set()  # device ids whose last state was ONHOLD
        self._routes: dict[str, tuple[str, ...]] = {}  # cache: asterisk device -> ids
        # cache: channel name -> ids (a channel's events name it again and again; a
        # channel of no watched device, too), and its device part as sent -> the same,
        # forgotten with _routes or when full.
        self._channel_routes: dict[str, tuple[str, ...]] = {}
        self._part_routes: dict[str, tuple[str, ...]] = {}

    # -- which device -----------------------------------------------------------------

    def devices_of_channel(self, channel: str) -> tuple[str, ...]:
        """The watched device ids a channel name belongs to (empty: none)."""
        hit = self._channel_routes.get(channel)
        if hit is not None:
            return hit
        routes, parts = self._channel_routes, self._part_routes
        if len(routes) >= MAX_CHANNEL_ROUTES:
            routes.clear()
        # A new channel of a device seen before (its device part as sent): no normalising.
        dev = channel_device(channel)
        hit = parts.get(dev)
        if hit is None:
            if len(parts) >= MAX_CHANNEL_ROUTES:
                parts.clear()
            hit = parts[dev] = self._devices_of_device(_norm_device(dev))
        routes[channel] = hit
        return hit

    def _devices_of_device(self, dev: str) -> tuple[str, ...]:
        """The watched device ids of the Asterisk device `dev` (normalised)."""
        hit = self._routes.get(dev)
        if hit is not None:
            return hit
        found: list[str] = list(self._device_lines.get(dev, ()))
        for d in self._hint_devices.get(dev, ()):
            if d not in found:
                found.append(d)
        # Before (or without) an ExtensionStatus naming its devices, a hint line "201"
        # takes channels of any technology whose resource is "201".
        res = dev.partition("/")[2]
        if res:
            for line, ids in self._hint_lines.items():
                if line.split("@", 1)[0] == res:
                    for d in ids:
                        if d not in self._hinted and d not in found:
                            found.append(d)
        out = tuple(found)
        self._routes[dev] = out
        return out

    def _hint_line_devices(self, exten: str, context: str) -> list[str]:
        out = list(self._hint_lines.get(f"{exten}@{context}", ()))
        for d in self._hint_lines.get(exten, ()):
            if d not in out:
                out.append(d)
        return out

    def caller_channel(self, uniqueid: str) -> str | None:
        """The channel that dialed the watched channel `uniqueid` (e.g. the trunk channel of
        a ringing external call): what an AMI Redirect moves for a pickup."""
        ch = self._chans.get(uniqueid)
        return ch.caller_channel if ch is not None else None

    def channel_name(self, uniqueid: str) -> str | None:
        """The current name of the watched channel `uniqueid`."""
        ch = self._chans.get(uniqueid)
        return ch.name if ch is not None else None

    # -- entry point ------------------------------------------------------------------

    def feed(self, msg: AmiMessage) -> list[Report]:
        """The reports implied by one message (usually none or one)."""
        if msg.kind != "event":
            return []
        entry = _HANDLERS.get(msg.name.lower())
        if entry is None:
            return []
        handler, keys = entry
        return handler(self, msg.pick(keys))

    def feed_picked(self, name: str, values: tuple[str | None, ...]) -> list[Report]:
        """What :meth:`feed` gives for an event named `name` (lower case, one of
        :attr:`events`) whose values of ``picks[name]`` are `values`."""
        return self.handlers[name](values)

    def feed_all(self, msgs: Iterable[AmiMessage]) -> list[Report]:
        """Translate several messages in order."""
        out: list[Report] = []
        for m in msgs:
            out.extend(self.feed(m))
        return out

    # -- channels ---------------------------------------------------------------------

    def _chan(self, v: tuple[str | None, ...], o: int = 0) -> _Chan | None:
        """The watched channel an event (or its Dest* side) is about, created on first sight:
        `v` holds its snapshot (see _SNAPSHOT) from `o` on."""
        name = v[o]
        uid = v[o + 1]
        if not name and not uid:
            return None
        if not uid:
            uid = self._by_name.get(name or "")
            if uid is None:
                return None
        ch = self._chans.get(uid)
        if ch is None:
            if not name:
                return None
            devices = self.devices_of_channel(name)
            if not devices:
                return None
            ch = _Chan(uid, name, devices)
            self._chans[uid] = ch
            self._by_name[name] = uid
        elif name and name != ch.name:
            self._by_name.pop(ch.name, None)
            ch.name = name
            self._by_name[name] = uid
        # The snapshot fields every channel event carries (_known, inline).
        value = v[o + 2]
        if value is not None:
            state = _STATES.get(value)
            if state is None:
                state = _int(value)
            if state is not None:
                ch.state = state
        value = v[o + 3]
        if value:
            ch.linkedid = value
        value = v[o + 4]
        if value is not None:
            value = value.strip()
            ch.connected_num = None if value in _UNKNOWN else value
        value = v[o + 5]
        if value is not None:
            value = value.strip()
            ch.connected_name = None if value in _UNKNOWN else value
        if ch.exten is None:
            value = v[o + 6]
            if value is not None:
                value = value.strip()
                if value and value != "s" and value not in _UNKNOWN:
                    ch.exten = value
        return ch

    def _direction(self, ch: _Chan, phase: Phase) -> Direction:
        if phase is _RINGING:
            return _IN
        if phase is _DIALING or ch.dialing_out:
            return _OUT
        if ch.application == "AppDial":  # the dialled leg of a Dial()
            return _IN
        if ch.application == "Dial":
            return _OUT
        return _OUT if ch.linkedid == ch.uniqueid else _IN

    def _report(self, ch: _Chan, phase: Phase | None = None) -> list[Report]:
        """Report the channel if what a user would see of it changed."""
        if phase is None:
            state = ch.state  # channel_phase(state, held), inline
            if state == _UP:
                phase = _HELD if ch.held else _CONNECTED
            else:
                phase = _PHASE_OF_STATE.get(state)  # type: ignore[arg-type]
                if phase is None and ch.dialing_out and state in (0, 1, None):
                    phase = _DIALING  # a Down channel that dials out: outgoing setup
        if phase is None:
            return []
        if phase is _ENDED:
            if ch.last is None:
                return []  # never reported: nothing to end
            return [
                CallReport(d, ch.uniqueid, _ENDED, ch.direction, link=ch.linkedid,
                           conn=self.conn)
                for d in ch.devices
            ]
        if ch.direction is None:
            ch.direction = self._direction(ch, phase)
        remote = ch.connected_num
        name = ch.connected_name
        if remote is None:
            remote = ch.other_num
            if remote is None and ch.direction is _OUT:
                remote = ch.exten
        if name is None:
            name = ch.other_name
        key = (phase, remote, name)
        if key == ch.last:
            return []
        ch.last = key
        # All fields by position (device, call, phase, direction, remote, remote_name,
        # link, withheld, replaces, conn): a call without keywords costs less.
        uid, direction, link, conn = ch.uniqueid, ch.direction, ch.linkedid, self.conn
        return [CallReport(d, uid, phase, direction, remote, name, link, False, None, conn)
                for d in ch.devices]

    def _on_channel(self, v: tuple[str | None, ...]) -> list[Report]:
        ch = self._chan(v)
        return self._report(ch) if ch else []

    def _on_rename(self, v: tuple[str | None, ...]) -> list[Report]:
        uniqueid, channel, new = v
        uid = uniqueid or self._by_name.get(channel or "")
        ch = self._chans.get(uid or "")
        if ch is not None and new:
            self._by_name.pop(ch.name, None)
            ch.name = new
            self._by_name[new] = ch.uniqueid
        return []

    def _on_coreshowchannel(self, v: tuple[str | None, ...]) -> list[Report]:
        ch = self._chan(v)
        if ch is None:
            return []
        app = v[_N]
        if app:
            ch.application = app
        return self._report(ch)

    def _on_hangup(self, v: tuple[str | None, ...]) -> list[Report]:
        ch = self._chan(v)
        if ch is None:
            return []
        self._chans.pop(ch.uniqueid, None)
        if self._by_name.get(ch.name) == ch.uniqueid:
            del self._by_name[ch.name]
        return self._report(ch, _ENDED)

    def _on_dialbegin(self, v: tuple[str | None, ...]) -> list[Report]:
        out: list[Report] = []
        src = self._chan(v)
        dst = self._chan(v, _N)
        dest_num, dest_name, num, name = v[2 * _N:]
        if src is not None:
            src.dialing_out = True
            src.other_num = _known(dest_num)
            src.other_name = _known(dest_name)
            out += self._report(src)
        if dst is not None:
            if dst.direction is None:
                dst.direction = _IN
            dst.caller_channel = v[0] or None
            dst.other_num = _known(num)
            dst.other_name = _known(name)
            out += self._report(dst)
        return out

    def _on_dialend(self, v: tuple[str | None, ...]) -> list[Report]:
        # The states that follow (Up, Hangup) arrive as their own events; the snapshot fields
        # may still carry a newer connected line.
        out: list[Report] = []
        for o in (0, _N):
            ch = self._chan(v, o)
            if ch is not None:
                out += self._report(ch)
        return out

    def _on_hold(self, v: tuple[str | None, ...]) -> list[Report]:
        ch = self._chan(v)
        if ch is None:
            return []
        ch.held = True
        return self._report(ch)

    def _on_unhold(self, v: tuple[str | None, ...]) -> list[Report]:
        ch = self._chan(v)
        if ch is None:
            return []
        ch.held = False
        return self._report(ch)

    # -- service states ---------------------------------------------------------------

    def _on_devicestate(self, v: tuple[str | None, ...]) -> list[Report]:
        dev, state = v
        state = (state or "").strip().upper()
        if not dev or not state:
            return []
        ids = self._state_routes.get(dev)
        if ids is None:
            if len(self._state_routes) >= MAX_CHANNEL_ROUTES:
                self._state_routes.clear()
            ids = self._state_routes[dev] = tuple(self._device_lines.get(_norm_device(dev), ()))
        for d in ids:
            if state in _HOLD_DEVICE_STATES:
                self._hold_devices.add(d)
            else:
                self._hold_devices.discard(d)
        ok = state not in OUT_OF_SERVICE_DEVICE_STATES
        conn = self.conn
        return [ServiceReport(d, ok, conn) for d in ids]

    def _on_extensionstatus(self, v: tuple[str | None, ...]) -> list[Report]:
        exten, status, context, hint = v
        exten = (exten or "").strip()
        status = (status or "").strip()
        if not exten or not status:
            return []
        ids = self._hint_line_devices(exten, (context or "").strip())
        if not ids:
            return []
        if hint:
            # "PJSIP/201&SIP/201,CustomPresence:201": device states before the comma.
            devs = [_norm_device(x) for x in hint.split(",", 1)[0].split("&") if "/" in x]
            for dev in devs:
                have = self._hint_devices.get(dev, ())
                self._hint_devices[dev] = have + tuple(d for d in ids if d not in have)
            self._hinted.update(ids)
            self._routes.clear()
            self._channel_routes.clear()
            self._part_routes.clear()
        for d in ids:
            if status in _HOLD_EXTENSION_STATUSES:
                self._hold_devices.add(d)
            else:
                self._hold_devices.discard(d)
        ok = status not in OUT_OF_SERVICE_EXTENSION_STATUSES
        conn = self.conn
        return [ServiceReport(d, ok, conn) for d in ids]

    def _on_coreshowchannels_complete(self, v: tuple[str | None, ...]) -> list[Report]:
        # CoreShowChannel does not tell hold: a device whose state says ONHOLD has its up
        # channels on hold (its Hold event happened before we connected).
        out: list[Report] = []
        for ch in list(self._chans.values()):
            if ch.state == _UP and not ch.held and any(
                d in self._hold_devices for d in ch.devices
            ):
                ch.held = True
                out += self._report(ch)
        return out


# Event name (lower case) -> its handler and the keys it reads.
_HANDLERS: dict[str, tuple[Callable[[AmiTranslator, tuple[str | None, ...]], list[Report]],
                           tuple[str, ...]]] = {
    "newchannel": (AmiTranslator._on_channel, _SNAPSHOT),
    "newstate": (AmiTranslator._on_channel, _SNAPSHOT),
    "newconnectedline": (AmiTranslator._on_channel, _SNAPSHOT),
    "newcallerid": (AmiTranslator._on_channel, _SNAPSHOT),
    "bridgeenter": (AmiTranslator._on_channel, _SNAPSHOT),
    "bridgeleave": (AmiTranslator._on_channel, _SNAPSHOT),
    "rename": (AmiTranslator._on_rename, ("uniqueid", "channel", "newname")),
    "coreshowchannel": (AmiTranslator._on_coreshowchannel, (*_SNAPSHOT, "application")),
    "hangup": (AmiTranslator._on_hangup, _SNAPSHOT),
    "dialbegin": (AmiTranslator._on_dialbegin,
                  (*_SNAPSHOT, *_DEST_SNAPSHOT, "destcalleridnum", "destcalleridname",
                   "calleridnum", "calleridname")),
    "dialend": (AmiTranslator._on_dialend, (*_SNAPSHOT, *_DEST_SNAPSHOT)),
    "hold": (AmiTranslator._on_hold, _SNAPSHOT),
    "unhold": (AmiTranslator._on_unhold, _SNAPSHOT),
    "devicestatechange": (AmiTranslator._on_devicestate, ("device", "state")),
    "extensionstatus": (AmiTranslator._on_extensionstatus,
                        ("exten", "status", "context", "hint")),
    "coreshowchannelscomplete": (AmiTranslator._on_coreshowchannels_complete, ()),
}
