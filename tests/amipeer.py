"""A protocol-faithful Asterisk Manager Interface peer for tests (no Asterisk on Debian 12).

Two layers:

- :class:`PbxModel`, pure and synchronous: endpoints, hints and channels, and scenario
  methods (internal call, external call, answer, hang up, hold, blind transfer, redirect,
  pickup) that emit the events Asterisk 13+ emits for them, with its documented fields
  (Privilege, Channel, ChannelState, ChannelStateDesc, CallerIDNum/Name, ConnectedLineNum/Name,
  Language, AccountCode, Context, Exten, Priority, Uniqueid, Linkedid; Dest* for DialBegin /
  DialEnd). Device states (DeviceStateChange) and hint states (ExtensionStatus) are derived
  from the channels after every step, as Asterisk's device state engine does. Unit tests
  collect its events without any event loop.
- :class:`AmiPeer`, the asyncio TCP server on 127.0.0.1 around a model: banner
  ``Asterisk Call Manager/9.0.0``, Login (``Authentication accepted`` and ``FullyBooted``, or
  ``Authentication failed`` and close), ActionID echo, the lists CoreShowChannels,
  ExtensionStateList (an error when there are no hints, as Asterisk answers), DeviceStateList,
  Ping, Logoff, Redirect and Originate (Application PickupChan / Pickup) answered with
  Success and followed by the events Asterisk emits; :meth:`AmiPeer.restart` drops every
  connection and comes back, possibly with a changed state; :meth:`AmiPeer.send_garbage`.

Not modelled: dialplan execution (Newexten, VarSet; an extension simply dials the endpoint
with that number), the ``Events:`` class filter of Login (all events go to every session
that did not say ``Events: off``), MD5 challenge login, multi-party bridges and
conferences, Local channels and their optimisation, attended transfer, parking, queues,
the masquerade of a real pickup (Asterisk's channel swap with Rename and ``<ZOMBIE>``
channels: here the picker's own channel is bridged to the caller and the picked channel
hangs up), Originate failures and the OriginateResponse of a call not answered, early
media, CDR/CEL, Command, and timing (every event of a step is written at once).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.ami.protocol import AmiMessage, AmiParser, format_message

__all__ = ["PbxModel", "AmiPeer", "Chan", "Call", "Endpoint", "STATE_DESC"]

STATE_DESC = {
    0: "Down", 1: "Rsrvd", 2: "OffHook", 3: "Dialing", 4: "Ring", 5: "Ringing", 6: "Up",
    7: "Busy", 8: "Dialing Offhook", 9: "Pre-ring",
}
_EXT_STATUS = {  # device state -> (ExtensionStatus Status, StatusText)
    "NOT_INUSE": ("0", "Idle"),
    "INUSE": ("1", "InUse"),
    "BUSY": ("2", "Busy"),
    "UNAVAILABLE": ("4", "Unavailable"),
    "RINGING": ("8", "Ringing"),
    "RINGINUSE": ("9", "InUse&Ringing"),
    "ONHOLD": ("16", "Hold"),
    "UNKNOWN": ("0", "Idle"),
}
CALL = "call,all"


@dataclass
class Endpoint:
    device: str  # PJSIP/201
    number: str
    name: str
    context: str = "from-internal"
    registered: bool = True
    hint: bool = True


@dataclass(eq=False)
class Chan:
    name: str
    uniqueid: str
    linkedid: str
    state: int
    cid_num: str
    cid_name: str
    context: str
    exten: str
    conn_num: str = "<unknown>"
    conn_name: str = "<unknown>"
    application: str = ""
    appdata: str = ""
    bridge: str | None = None
    held: bool = False
    device: str = ""  # PJSIP/201, or PJSIP/trunk


@dataclass(eq=False)
class Call:
    """One two-leg call: the caller's channel and the dialled one (None once it is gone)."""

    caller: Chan
    callee: Chan | None
    bridge: str | None = None


def _snapshot(c: Chan, prefix: str = "") -> list[tuple[str, str]]:
    p = prefix
    return [
        (p + "Channel", c.name),
        (p + "ChannelState", str(c.state)),
        (p + "ChannelStateDesc", STATE_DESC.get(c.state, "Unknown")),
        (p + "CallerIDNum", c.cid_num),
        (p + "CallerIDName", c.cid_name),
        (p + "ConnectedLineNum", c.conn_num),
        (p + "ConnectedLineName", c.conn_name),
        (p + "Language", "en"),
        (p + "AccountCode", ""),
        (p + "Context", c.context),
        (p + "Exten", c.exten),
        (p + "Priority", "1"),
        (p + "Uniqueid", c.uniqueid),
        (p + "Linkedid", c.linkedid),
    ]


class PbxModel:
    """Endpoints, hints and channels of a pretend Asterisk; every step emits its events.

    `sink` receives each event as a list of (key, value) pairs (None: events are dropped).
    `epoch` starts Uniqueids (``1700000000.1``); a restarted Asterisk uses a later one.
    """

    def __init__(self, sink: Callable[[list[tuple[str, str]]], None] | None = None,
                 epoch: int = 1700000000) -> None:
        self.sink = sink
        self.endpoints: dict[str, Endpoint] = {}  # device -> endpoint
        self.channels: dict[str, Chan] = {}  # uniqueid -> channel
        self.calls: list[Call] = []
        self._uid = itertools.count(1)
        self._chan_no = itertools.count(1)
        self._bridge_no = itertools.count(1)
        self.epoch = epoch
        self._dev_state: dict[str, str] = {}  # last emitted device state per device

    # -- set-up ---------------------------------------------------------------------------

    def add_endpoint(self, device: str, number: str, name: str, *, registered: bool = True,
                     hint: bool = True, context: str = "from-internal") -> Endpoint:
        ep = Endpoint(device, number, name, context, registered, hint)
        self.endpoints[device] = ep
        self._dev_state[device] = self.device_state(device)
        return ep

    def endpoint_for(self, exten: str) -> Endpoint:
        for ep in self.endpoints.values():
            if ep.number == exten:
                return ep
        raise KeyError(exten)

    # -- derived states -------------------------------------------------------------------

    def device_state(self, device: str) -> str:
        ep = self.endpoints.get(device)
        if ep is not None and not ep.registered:
            return "UNAVAILABLE"
        chans = [c for c in self.channels.values() if c.device == device]
        ringing = any(c.state in (5, 9) for c in chans)
        up = [c for c in chans if c.state not in (0, 5, 9)]
        if ringing and up:
            return "RINGINUSE"
        if ringing:
            return "RINGING"
        if up and all(c.held for c in up):
            return "ONHOLD"
        if up:
            return "INUSE"
        return "NOT_INUSE"

    def hint_event(self, ep: Endpoint, action_id: str | None = None) -> list[tuple[str, str]]:
        status, text = _EXT_STATUS[self.device_state(ep.device)]
        pairs = [("Event", "ExtensionStatus")]
        pairs += [("ActionID", action_id)] if action_id else [("Privilege", CALL)]
        return pairs + [
            ("Exten", ep.number), ("Context", ep.context), ("Hint", ep.device),
            ("Status", status), ("StatusText", text),
        ]

    def _refresh(self) -> None:
        for device, ep in self.endpoints.items():
            now = self.device_state(device)
            if self._dev_state.get(device) != now:
                self._dev_state[device] = now
                self.emit("DeviceStateChange", [("Device", device), ("State", now)])
                if ep.hint:
                    self.sink_pairs(self.hint_event(ep))

    # -- emission -------------------------------------------------------------------------

    def sink_pairs(self, pairs: list[tuple[str, str]]) -> None:
        if self.sink is not None:
            self.sink(pairs)

    def emit(self, event: str, fields: list[tuple[str, str]]) -> None:
        self.sink_pairs([("Event", event), ("Privilege", CALL), *fields])

    # -- channels -------------------------------------------------------------------------

    def _new_chan(self, device: str, state: int, cid_num: str, cid_name: str, exten: str,
                  context: str, linkedid: str | None = None) -> Chan:
        uid = f"{self.epoch}.{next(self._uid)}"
        name = f"{device}-{next(self._chan_no):08x}"
        c = Chan(name, uid, linkedid or uid, state, cid_num, cid_name, context, exten,
                 device=device)
        self.channels[uid] = c
        self.emit("Newchannel", _snapshot(c))
        return c

    def _set_state(self, c: Chan, state: int) -> None:
        c.state = state
        self.emit("Newstate", _snapshot(c))

    def _hangup(self, c: Chan, cause: int = 16, text: str = "Normal Clearing") -> None:
        if c.bridge:
            self.emit("BridgeLeave", self._bridge_fields(c.bridge) + _snapshot(c))
            c.bridge = None
        self.channels.pop(c.uniqueid, None)
        self.emit("Hangup", _snapshot(c) + [("Cause", str(cause)), ("Cause-txt", text)])

    @staticmethod
    def _bridge_fields(bridge: str) -> list[tuple[str, str]]:
        return [
            ("BridgeUniqueid", bridge), ("BridgeType", "basic"),
            ("BridgeTechnology", "simple_bridge"), ("BridgeCreator", "<unknown>"),
            ("BridgeName", "<unknown>"), ("BridgeNumChannels", "2"),
            ("BridgeVideoSourceMode", "none"),
        ]

    def _dial(self, caller: Chan, exten: str) -> Call:
        """`caller` runs Dial() to the endpoint of `exten`: the callee channel rings."""
        ep = self.endpoint_for(exten)
        callee = self._new_chan(ep.device, 0, ep.number, ep.name, exten, ep.context,
                                linkedid=caller.linkedid)
        callee.conn_num, callee.conn_name = caller.cid_num, caller.cid_name
        callee.application, callee.appdata = "AppDial", "(Outgoing Line)"
        caller.application, caller.appdata = "Dial", f"{ep.device},30"
        self.emit("DialBegin", _snapshot(caller) + _snapshot(callee, "Dest")
                  + [("DialString", ep.device.split("/", 1)[1])])
        if ep.registered:
            self._set_state(callee, 5)
        call = Call(caller, callee)
        self.calls.append(call)
        self._refresh()
        return call

    # -- scenarios ------------------------------------------------------------------------

    def internal_call(self, from_exten: str, to_exten: str) -> Call:
        """A desk phone dials a colleague: caller in Ring (ringback), callee Ringing."""
        ep = self.endpoint_for(from_exten)
        caller = self._new_chan(ep.device, 4, ep.number, ep.name, to_exten, ep.context)
        return self._dial(caller, to_exten)

    def external_call(self, from_number: str, from_name: str, to_exten: str,
                      trunk: str = "PJSIP/trunk") -> Call:
        """A call from the trunk to an extension."""
        caller = self._new_chan(trunk, 4, from_number, from_name, to_exten, "from-trunk")
        return self._dial(caller, to_exten)

    def outbound_call(self, from_exten: str, number: str, trunk: str = "PJSIP/trunk") -> Call:
        """A desk phone dials out through the trunk (the far end is not an endpoint)."""
        ep = self.endpoint_for(from_exten)
        caller = self._new_chan(ep.device, 4, ep.number, ep.name, number, ep.context)
        callee = self._new_chan(trunk, 0, number, "<unknown>", number, "from-trunk",
                                linkedid=caller.linkedid)
        callee.conn_num, callee.conn_name = caller.cid_num, caller.cid_name
        caller.application, caller.appdata = "Dial", f"{trunk}/{number}"
        callee.application = "AppDial"
        self.emit("DialBegin", _snapshot(caller) + _snapshot(callee, "Dest")
                  + [("DialString", f"trunk/{number}")])
        call = Call(caller, callee)
        self.calls.append(call)
        self._refresh()
        return call

    def answer(self, call: Call) -> None:
        """The callee answers: Up, DialEnd ANSWER, connected line update, both bridged."""
        caller, callee = call.caller, call.callee
        assert callee is not None
        self._set_state(callee, 6)
        self.emit("DialEnd", _snapshot(caller) + _snapshot(callee, "Dest")
                  + [("DialStatus", "ANSWER")])
        if caller.state != 6:
            self._set_state(caller, 6)
        caller.conn_num, caller.conn_name = callee.cid_num, callee.cid_name
        self.emit("NewConnectedLine", _snapshot(caller))
        self._bridge(call)
        self._refresh()

    def _bridge(self, call: Call) -> None:
        bridge = f"b{self.epoch}-{next(self._bridge_no)}"
        call.bridge = bridge
        self.emit("BridgeCreate", self._bridge_fields(bridge))
        for c in (call.caller, call.callee):
            assert c is not None
            c.bridge = bridge
            self.emit("BridgeEnter", self._bridge_fields(bridge) + _snapshot(c))

    def cancel(self, call: Call) -> None:
        """The caller gives up before an answer: the callee's call is missed."""
        caller, callee = call.caller, call.callee
        if callee is not None:
            self.emit("DialEnd", _snapshot(caller) + _snapshot(callee, "Dest")
                      + [("DialStatus", "CANCEL")])
            self._hangup(callee, 0, "Unknown")
        self._hangup(caller)
        self.calls.remove(call)
        self._refresh()

    def hangup(self, call: Call) -> None:
        """Either party hangs up a connected call: both legs go."""
        for c in (call.caller, call.callee):
            if c is not None and c.uniqueid in self.channels:
                self._hangup(c)
        if call.bridge:
            self.emit("BridgeDestroy", self._bridge_fields(call.bridge))
        self.calls.remove(call)
        self._refresh()

    def hold(self, chan: Chan) -> None:
        """The device of `chan` puts its call on hold (Hold is emitted for the holder)."""
        chan.held = True
        self.emit("Hold", _snapshot(chan) + [("MusicClass", "default")])
        self._refresh()

    def unhold(self, chan: Chan) -> None:
        chan.held = False
        self.emit("Unhold", _snapshot(chan))
        self._refresh()

    def blind_transfer(self, call: Call, transferer: Chan, to_exten: str) -> Call:
        """`transferer` (a leg of `call`) blind-transfers the other leg to `to_exten`."""
        other = call.callee if transferer is call.caller else call.caller
        assert other is not None
        self.emit("BlindTransfer", [("Result", "Success")] + _snapshot(transferer, "Transferer")
                  + _snapshot(other, "Transferee") + [
                      ("IsExternal", "No"), ("Context", transferer.context),
                      ("Extension", to_exten)])
        self._hangup(transferer)
        if other.bridge:
            self.emit("BridgeLeave", self._bridge_fields(other.bridge) + _snapshot(other))
            other.bridge = None
        self.calls.remove(call)
        other.exten = to_exten
        new = self._dial(other, to_exten)
        return new

    def redirect(self, channel: str, exten: str, context: str) -> Call:
        """AMI Redirect of a channel (typically a ringing caller) to another extension."""
        chan = self.find_channel(channel)
        for call in list(self.calls):
            if call.caller is chan:
                if call.callee is not None and call.callee.uniqueid in self.channels:
                    self.emit("DialEnd", _snapshot(chan) + _snapshot(call.callee, "Dest")
                              + [("DialStatus", "CANCEL")])
                    self._hangup(call.callee, 0, "Unknown")
                self.calls.remove(call)
        chan.exten, chan.context = exten, context
        return self._dial(chan, exten)

    def pickup(self, picker_device: str, target: Chan) -> Call:
        """Originate to `picker_device` with PickupChan/Pickup of the ringing `target`."""
        ep = self.endpoints[picker_device]
        picker = self._new_chan(ep.device, 0, ep.number, ep.name, "s", ep.context)
        picker.application = "PickupChan"
        self._set_state(picker, 5)
        self._refresh()
        self._set_state(picker, 6)
        call = next(c for c in self.calls if c.callee is target)
        caller = call.caller
        self.emit("Pickup", _snapshot(picker) + _snapshot(target, "Target"))
        self.emit("DialEnd", _snapshot(caller) + _snapshot(target, "Dest")
                  + [("DialStatus", "ANSWER")])
        self._hangup(target, 26, "Answered elsewhere")
        if caller.state != 6:
            self._set_state(caller, 6)
        picker.conn_num, picker.conn_name = caller.cid_num, caller.cid_name
        picker.linkedid = caller.linkedid
        self.emit("NewConnectedLine", _snapshot(picker))
        caller.conn_num, caller.conn_name = picker.cid_num, picker.cid_name
        self.emit("NewConnectedLine", _snapshot(caller))
        call.callee = picker
        self._bridge(call)
        self._refresh()
        return call

    def set_registered(self, device: str, registered: bool) -> None:
        self.endpoints[device].registered = registered
        self._refresh()

    def find_channel(self, name_or_device: str) -> Chan:
        """A channel by exact name, or the newest channel of a device (``PJSIP/202``)."""
        for c in self.channels.values():
            if c.name == name_or_device:
                return c
        found = [c for c in self.channels.values() if c.device == name_or_device]
        if not found:
            raise KeyError(name_or_device)
        return found[-1]

    def drop_all_channels(self) -> None:
        """What a restarted Asterisk has: no channels (no events: nobody is connected)."""
        self.channels.clear()
        self.calls.clear()

    # -- lists ----------------------------------------------------------------------------

    def coreshowchannels(self, action_id: str) -> list[list[tuple[str, str]]]:
        out = []
        for c in self.channels.values():
            out.append([("Event", "CoreShowChannel"), ("ActionID", action_id)] + _snapshot(c) + [
                ("Application", c.application), ("ApplicationData", c.appdata),
                ("Duration", "00:00:05"), ("BridgeId", c.bridge or "")])
        return out

    def extension_states(self, action_id: str) -> list[list[tuple[str, str]]]:
        return [self.hint_event(ep, action_id) for ep in self.endpoints.values() if ep.hint]

    def device_states(self, action_id: str) -> list[list[tuple[str, str]]]:
        return [[("Event", "DeviceStateChange"), ("ActionID", action_id), ("Device", d),
                 ("State", self.device_state(d))] for d in self.endpoints]


@dataclass(eq=False)
class _Session:
    writer: asyncio.StreamWriter  # or anything with write(), close(), is_closing()
    authed: bool = False
    events: bool = True
    username: str = ""
    parser: AmiParser = field(default_factory=AmiParser)


class AmiPeer:
    """The model behind a real AMI TCP server on 127.0.0.1 (see the module docstring).

    `secret` is what Login must present for `username`. `logins` counts Login attempts and
    `failed_logins` the refused ones; `actions` records every action name received (with
    Secret never stored).
    """

    def __init__(self, username: str = "blf", secret: str = "s3cret", version: str = "9.0.0",
                 model: PbxModel | None = None) -> None:
        self.username = username
        self.secret = secret
        self.version = version
        self.model = model or PbxModel()
        self.model.sink = self._broadcast
        self.port = 0
        self.logins = 0
        self.failed_logins = 0
        self.actions: list[tuple[str, dict[str, str]]] = []
        self.connections = 0
        self._server: asyncio.base_events.Server | None = None
        self._sessions: set[_Session] = set()
        self._handlers: set[asyncio.Task] = set()
        self.autoanswer_pickup = True

    async def start(self) -> int:
        """Listen on 127.0.0.1 (a free port the first time, the same one after restart)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for s in list(self._sessions):
            s.writer.close()
        self._sessions.clear()
        for t in list(self._handlers):
            t.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def restart(self, change: Callable[[PbxModel], None] | None = None,
                      down_for: float = 0.05, lose_channels: bool = False) -> None:
        """Drop every connection, apply `change` while down, and listen again.

        `lose_channels` is what a real Asterisk restart does (every channel gone); without
        it this is a manager-connection outage while calls carry on.
        """
        await self.stop()
        if lose_channels:
            self.model.drop_all_channels()
            self.model.epoch += 1000
        if change is not None:
            change(self.model)
        self.model._dev_state = {d: self.model.device_state(d) for d in self.model.endpoints}
        await asyncio.sleep(down_for)
        await self.start()

    @property
    def sessions(self) -> int:
        """Logged-in sessions now."""
        return sum(1 for s in self._sessions if s.authed)

    def send_garbage(self, data: bytes) -> None:
        """Write raw bytes to every logged-in session."""
        self.send_raw(data)

    def send_raw(self, data: bytes) -> None:
        for s in list(self._sessions):
            if s.authed and not s.writer.is_closing():
                s.writer.write(data)

    async def drain(self) -> None:
        """Wait until what was written has left (for flow-controlled bursts)."""
        for s in list(self._sessions):
            try:
                await s.writer.drain()
            except ConnectionError:
                pass

    def _broadcast(self, pairs: list[tuple[str, str]]) -> None:
        data = format_message(pairs)
        for s in list(self._sessions):
            if s.authed and s.events and not s.writer.is_closing():
                s.writer.write(data)

    def open_session(self, writer) -> _Session:  # noqa: ANN001
        """A new Manager session writing to `writer` (a StreamWriter, or any object with
        write(), close() and is_closing() for tests without sockets); the banner goes out."""
        session = _Session(writer)
        self._sessions.add(session)
        self.connections += 1
        writer.write(f"Asterisk Call Manager/{self.version}\r\n".encode())
        return session

    def receive(self, session: _Session, data: bytes) -> bool:
        """Bytes from the client; False when the peer ends the session (failed login,
        Logoff): it is then closed."""
        for msg in session.parser.feed(data):
            if isinstance(msg, AmiMessage) and msg.kind == "action":
                if not self._action(session, msg):
                    self.close_session(session)
                    return False
        return True

    def close_session(self, session: _Session) -> None:
        self._sessions.discard(session)
        session.writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        session = self.open_session(writer)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if not self.receive(session, data):
                    return  # closed: the transport still sends what was written
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._sessions.discard(session)
            self._handlers.discard(task)
            writer.close()

    def _reply(self, s: _Session, msg: AmiMessage, status: str, *fields: tuple[str, str]) -> None:
        pairs = [("Response", status)]
        if msg.action_id is not None:
            pairs.append(("ActionID", msg.action_id))
        s.writer.write(format_message(pairs + list(fields)))

    def _action(self, s: _Session, msg: AmiMessage) -> bool:
        """Answer one action; False closes the session."""
        name = msg.name.lower()
        aid = msg.action_id or ""
        self.actions.append((msg.name, {k: v for k, v in msg.fields.items()
                                        if k.lower() != "secret"}))
        if name == "login":
            self.logins += 1
            if msg.get("Username") == self.username and msg.get("Secret") == self.secret:
                s.authed = True
                s.username = self.username
                s.events = (msg.get("Events") or "on").lower() != "off"
                self._reply(s, msg, "Success", ("Message", "Authentication accepted"))
                if s.events:
                    s.writer.write(format_message([
                        ("Event", "FullyBooted"), ("Privilege", "system,all"),
                        ("Uptime", "100"), ("LastReload", "100"), ("Status", "Fully Booted")]))
                return True
            self.failed_logins += 1
            self._reply(s, msg, "Error", ("Message", "Authentication failed"))
            return False
        if not s.authed:
            self._reply(s, msg, "Error", ("Message", "Permission denied"))
            return True
        m = self.model
        if name == "ping":
            self._reply(s, msg, "Success", ("Ping", "Pong"), ("Timestamp", "1700000000.000000"))
        elif name == "logoff":
            self._reply(s, msg, "Goodbye", ("Message", "Thanks for all the fish."))
            return False
        elif name in ("coreshowchannels", "extensionstatelist", "devicestatelist"):
            items, complete, text = {
                "coreshowchannels": (m.coreshowchannels, "CoreShowChannelsComplete",
                                     "Channels will follow"),
                "extensionstatelist": (m.extension_states, "ExtensionStateListComplete",
                                       "Extension Statuses will follow"),
                "devicestatelist": (m.device_states, "DeviceStateListComplete",
                                    "Device States will follow"),
            }[name]
            events = items(aid)
            if name == "extensionstatelist" and not events:
                self._reply(s, msg, "Error", ("Message", "No extensions found"))
                return True
            self._reply(s, msg, "Success", ("EventList", "start"), ("Message", text))
            for ev in events:
                s.writer.write(format_message(ev))
            s.writer.write(format_message([("Event", complete), ("ActionID", aid),
                                           ("EventList", "Complete"),
                                           ("ListItems", str(len(events)))]))
        elif name == "redirect":
            try:
                chan = m.find_channel(msg.get("Channel") or "")
            except KeyError:
                self._reply(s, msg, "Error", ("Message", "Channel specified does not exist"))
                return True
            self._reply(s, msg, "Success", ("Message", "Redirect successful"))
            m.redirect(chan.name, msg.get("Exten") or "", msg.get("Context") or "")
        elif name == "originate":
            self._originate(s, msg)
        else:
            self._reply(s, msg, "Error", ("Message", "Invalid/unknown command"))
        return True

    def _originate(self, s: _Session, msg: AmiMessage) -> None:
        m = self.model
        device = msg.get("Channel") or ""
        app = (msg.get("Application") or "").lower()
        data = msg.get("Data") or ""
        if device not in m.endpoints or app not in ("pickupchan", "pickup"):
            self._reply(s, msg, "Error", ("Message", "Originate failed"))
            return
        try:
            if app == "pickupchan":
                target = m.find_channel(data.split("&", 1)[0].split(",", 1)[0])
            else:
                exten = data.split("@", 1)[0]
                target = m.find_channel(m.endpoint_for(exten).device)
        except KeyError:
            target = None
        if target is None or target.state != 5:
            self._reply(s, msg, "Error", ("Message", "Originate failed"))
            return
        async_ = (msg.get("Async") or "").lower() in ("true", "yes", "1")
        self._reply(s, msg, "Success", ("Message", "Originate successfully queued"))
        call = m.pickup(device, target)
        picker = call.callee
        assert picker is not None
        if async_:
            self._broadcast([("Event", "OriginateResponse"), ("Privilege", CALL),
                             ("ActionID", msg.action_id or ""), ("Response", "Success"),
                             ("Channel", picker.name), ("Context", ""), ("Exten", ""),
                             ("Application", msg.get("Application") or ""),
                             ("Data", data), ("Reason", "4"), ("Uniqueid", picker.uniqueid),
                             ("CallerIDNum", "<unknown>"), ("CallerIDName", "<unknown>")])
