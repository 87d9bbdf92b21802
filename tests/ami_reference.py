"""The AMI parser, translator and connection as they were before their fast reading
(gateway/ami at commit 42281e3), kept unchanged as the reference the differential tests
(tests/fuzz/test_fuzz_ami.py) hold the current ones to: the same messages, errors, counts,
reports and connection events from the same bytes.

Not used by the gateway. Only the imports were changed (one module instead of three).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from gateway.calls import CallReport, Phase, ServiceReport
from gateway.linesource import Report
from gateway.model import Direction
from gateway.numbers import redact

__all__ = [
    "AmiFields",
    "AmiMessage",
    "AmiProtocolError",
    "AmiParser",
    "format_action",
    "format_message",
    "BANNER_PREFIX",
    "AmiTranslator",
    "AmiConnection",
]

BANNER_PREFIX = "Asterisk Call Manager/"

Kind = Literal["event", "response", "banner", "action"]

# The key that opens a message decides its kind.
_KIND_KEYS: dict[str, Kind] = {"event": "event", "response": "response", "action": "action"}


class AmiFields(Mapping[str, str]):
    """Read-only, case-insensitive view of a message's fields: the first value of each key.

    Asterisk treats keys case-insensitively and its own spelling varies between versions
    (``Uniqueid`` / ``UniqueID``), so lookups ignore case; iteration yields keys as sent.
    """

    __slots__ = ("_d", "_hash")

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        d: dict[str, tuple[str, str]] = {}
        for k, v in pairs:
            d.setdefault(k.lower(), (k, v))
        self._d = d
        self._hash: int | None = None

    def __getitem__(self, key: str) -> str:
        return self._d[key.lower()][1]

    def get(self, key: str, default=None):  # type: ignore[override]
        item = self._d.get(key.lower())
        return default if item is None else item[1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._d

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._d.values())

    def __len__(self) -> int:
        return len(self._d)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AmiFields):
            return self._d == other._d
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._d.values()))
        return self._hash

    def __repr__(self) -> str:
        return f"AmiFields({dict(self.items())!r})"


@dataclass(frozen=True, slots=True)
class AmiMessage:
    """One complete AMI message.

    `kind` is ``event``, ``response``, ``banner`` or ``action``; `name` is the event name, the
    response status (``Success``, ``Error``, ``Goodbye``, ...), the banner's version
    (``9.0.0``) or the action name. `fields` holds the first value of every key
    (case-insensitive); `pairs` every line in order, so repeated keys such as several
    ``ChanVariable:`` lines are all kept.
    """

    kind: Kind
    name: str
    fields: AmiFields = field(default_factory=AmiFields)
    pairs: tuple[tuple[str, str], ...] = ()

    @property
    def action_id(self) -> str | None:
        """The ActionID echoed by Asterisk (None for events that answer no action)."""
        return self.fields.get("ActionID")

    def get(self, key: str, default: str | None = None) -> str | None:
        """A field's first value (case-insensitive key)."""
        return self.fields.get(key, default)

    def values(self, key: str) -> list[str]:
        """All values of a (possibly repeated) key, in order."""
        k = key.lower()
        return [v for kk, v in self.pairs if kk.lower() == k]


@dataclass(frozen=True, slots=True)
class AmiProtocolError:
    """Something the peer sent that is no AMI message; it was skipped.

    `reason` says why (``line too long``, ``message too long``, ``line without key``, ...);
    `sample` holds at most the first 80 bytes of the offending data, for a log line.
    """

    reason: str
    sample: bytes = b""


def _decode(raw: bytes) -> str:
    # Asterisk passes caller names through as the phones sent them: mostly UTF-8, sometimes
    # Latin-1. Latin-1 decodes any byte string, so this never fails.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class AmiParser:
    """Incremental AMI parser (see the module docstring for the format and the limits)."""

    def __init__(self, *, max_line: int = 8 * 1024, max_message: int = 64 * 1024) -> None:
        self.max_line = max_line
        self.max_message = max_message
        self.errors = 0  # how many AmiProtocolError items feed() has returned in all
        self.messages = 0  # how many messages feed() has returned in all
        self._buf = bytearray()
        self._skip_line = False  # dropping the rest of an oversized line, up to its LF
        self._pairs: list[tuple[str, str]] = []
        self._kind: Kind | None = None
        self._size = 0
        self._bad = False  # the message being collected was reported broken: drop it

    def reset(self) -> None:
        """Forget everything buffered (a new connection starts clean)."""
        self._buf.clear()
        self._skip_line = False
        self._start_message()

    def _start_message(self) -> None:
        self._pairs = []
        self._kind = None
        self._size = 0
        self._bad = False

    def feed(self, data: bytes) -> list[AmiMessage | AmiProtocolError]:
        """Parse `data` after what earlier calls left; return complete messages and errors."""
        out: list[AmiMessage | AmiProtocolError] = []
        if self._skip_line:
            # The tail of a line already reported as too long: drop it up to its LF, without
            # ever buffering it.
            nl = data.find(b"\n")
            if nl < 0:
                return out
            self._skip_line = False
            data = data[nl + 1 :]
        buf = self._buf
        buf += data
        pos = 0
        n = len(buf)
        while pos < n:
            if not self._pairs and not self._bad:
                # Between messages: a whole well-formed message is read in one go (see
                # _whole_message); anything unusual goes line by line below.
                end = buf.find(b"\r\n\r\n", pos)
                if pos < end <= pos + self.max_line and self._whole_message(
                        bytes(buf[pos:end]), out):
                    pos = end + 4
                    continue
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            end = nl
            if end > pos and buf[end - 1] == 0x0D:  # CRLF; a bare LF is tolerated too
                end -= 1
            if end - pos > self.max_line:
                self._line_too_long(bytes(buf[pos : pos + 80]), out)
                pos = nl + 1
                continue
            self._line(bytes(buf[pos:end]), out)
            pos = nl + 1
        del buf[:pos]
        if len(buf) > self.max_line + 1:
            # No line end in sight: keep nothing of the oversized line, skip up to its LF.
            self._line_too_long(bytes(buf[:80]), out)
            buf.clear()
            self._skip_line = True
        return out

    def _whole_message(self, block: bytes, out: list) -> bool:
        """Read one message (its lines without the empty line) at once, where that gives
        exactly what reading it line by line gives: CRLF line ends only, valid UTF-8, no
        banner, a kind key first and only there, every line a printable key and a value.
        Returns False (having changed nothing) for anything else: the line-by-line reading
        then reports it as it always has. An event is about 16 lines: one decode and one
        pass instead of sixteen calls with two decodes each."""
        if block.count(b"\n") != block.count(b"\r\n") or block.startswith(b"Asterisk Call"):
            return False
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            return False  # a Latin-1 field: decoded field by field below
        parts = [line.partition(":") for line in text.split("\r\n")]
        pairs = [(k.strip(), v.strip()) for k, sep, v in parts if sep]
        if len(pairs) != len(parts):
            return False
        kind = _KIND_KEYS.get(pairs[0][0].lower())
        if kind is None:
            return False
        for k, _ in pairs:
            if not k or not k.isprintable():
                return False
        fields = AmiFields(pairs)
        if (fields._d.keys() & _KIND_KEYS.keys() != {kind} or (
                len(fields._d) < len(pairs)  # a repeated key: count the kind lines
                and sum(k.lower() in _KIND_KEYS for k, _ in pairs) > 1)):
            return False  # a second Event/Response/Action line: the lines tell what is wrong
        self.messages += 1
        out.append(AmiMessage(kind, pairs[0][1], fields, tuple(pairs)))
        return True

    def _error(self, reason: str, sample: bytes, out: list) -> None:
        self.errors += 1
        out.append(AmiProtocolError(reason, sample[:80]))

    def _line_too_long(self, sample: bytes, out: list) -> None:
        self._error("line too long", sample, out)
        if self._pairs:
            # The message lost a line: it cannot be trusted; drop it at its end.
            self._bad = True

    def _line(self, raw: bytes, out: list) -> None:
        if not raw:
            self._end_message(out)
            return
        if self._bad:
            return  # inside a message that is being dropped (reported once already)
        if not self._pairs and raw.startswith(b"Asterisk Call Manager/"):
            version = _decode(raw[len(BANNER_PREFIX) :]).strip()
            self.messages += 1
            out.append(AmiMessage("banner", version, AmiFields(), ()))
            return
        colon = raw.find(b":")
        if colon <= 0:
            # A line that is no "Key: Value". Before a message starts it is noise on its
            # own; inside one the message is broken.
            self._error("line without key", raw, out)
            self._bad = bool(self._pairs)
            return
        key = _decode(raw[:colon]).strip()
        value = _decode(raw[colon + 1 :]).strip()
        if not key or not key.isprintable():
            self._error("invalid key", raw, out)
            self._bad = bool(self._pairs)
            return
        kind = _KIND_KEYS.get(key.lower())
        if kind is not None:
            if self._kind is not None:
                # A second Event:/Response:/Action: means the empty line between two messages
                # was lost: the earlier one may be cut short, so it is dropped, and a new
                # message starts here.
                self._error("message boundary missing", raw, out)
                self._start_message()
            elif self._pairs:
                # Lines before the kind line belong to no message (noise such as "Foo: bar"
                # without an empty line after it): drop them, keep the message.
                self._error("lines before message start", raw, out)
                self._start_message()
            self._kind = kind
        self._size += len(raw) + 2
        if self._size > self.max_message:
            self._error("message too long", raw[:80], out)
            self._bad = True
            self._pairs = []
            return
        self._pairs.append((key, value))

    def _end_message(self, out: list) -> None:
        pairs, kind, bad = self._pairs, self._kind, self._bad
        self._start_message()
        if bad:
            return
        if not pairs:
            return  # stray empty line between messages: harmless
        if kind is None:
            self._error("message without Event, Response or Action", _sample(pairs), out)
            return
        name = ""
        for k, v in pairs:
            if k.lower() == kind:
                name = v
                break
        self.messages += 1
        out.append(AmiMessage(kind, name, AmiFields(pairs), tuple(pairs)))


def _sample(pairs: list[tuple[str, str]]) -> bytes:
    return "; ".join(f"{k}: {v}" for k, v in pairs[:3]).encode("utf-8", "replace")


def _check(text: str, what: str) -> str:
    # A CR or LF inside a value would let a caller-controlled string (a number, a name)
    # inject a whole extra action; refuse it rather than guess.
    if "\r" in text or "\n" in text:
        raise ValueError(f"AMI {what} must not contain line breaks: {text[:40]!r}")
    return text


def format_message(pairs: Iterable[tuple[str, str]]) -> bytes:
    """Serialize `Key: Value` pairs as one AMI message (CRLF lines, empty line at the end).

    Raises ValueError if a key or value contains a line break.
    """
    parts = []
    for k, v in pairs:
        parts.append(f"{_check(str(k), 'key')}: {_check(str(v), 'value')}\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("utf-8")


def format_action(name: str, action_id: str, **fields: object) -> bytes:
    """One action as bytes: ``Action: name``, ``ActionID: action_id``, then `fields`.

    A None value is left out; a list or tuple value repeats the key (e.g. several
    ``Variable`` lines for Originate). Raises ValueError on a line break in any text.
    """
    pairs: list[tuple[str, str]] = [("Action", name), ("ActionID", action_id)]
    for k, v in fields.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            pairs.extend((k, str(x)) for x in v)
        else:
            pairs.append((k, str(v)))
    return format_message(pairs)


# -- the translator ----------------------------------------------------------------------

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
    name = channel.split("<", 1)[0].split(";", 1)[0]
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
        self.reset()

    def reset(self) -> None:
        """Forget channels, learned hints and states (call it on every (re)connect)."""
        self._chans: dict[str, _Chan] = {}  # uniqueid -> channel of a watched device
        self._by_name: dict[str, str] = {}  # channel name -> uniqueid
        self._hint_devices: dict[str, tuple[str, ...]] = {}  # asterisk device -> device ids
        self._hinted: set[str] = set()  # device ids whose hint has been seen
        self._hold_devices: set[str] = set()  # device ids whose last state was ONHOLD
        self._routes: dict[str, tuple[str, ...]] = {}  # cache: asterisk device -> ids

    # -- which device -----------------------------------------------------------------

    def devices_of_channel(self, channel: str) -> tuple[str, ...]:
        """The watched device ids a channel name belongs to (empty: none)."""
        dev = _norm_device(channel_device(channel))
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
        handler = _HANDLERS.get(msg.name.lower())
        if handler is None:
            return []
        return handler(self, msg)

    def feed_all(self, msgs: Iterable[AmiMessage]) -> list[Report]:
        """Translate several messages in order."""
        out: list[Report] = []
        for m in msgs:
            out.extend(self.feed(m))
        return out

    # -- channels ---------------------------------------------------------------------

    def _chan(self, msg: AmiMessage, prefix: str = "") -> _Chan | None:
        """The watched channel an event (or its Dest* side) is about, created on first sight."""
        name = msg.get(prefix + "Channel")
        uid = msg.get(prefix + "Uniqueid")
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
        self._snapshot(ch, msg, prefix)
        return ch

    @staticmethod
    def _snapshot(ch: _Chan, msg: AmiMessage, prefix: str) -> None:
        """Take the channel snapshot fields every channel event carries."""
        state = _int(msg.get(prefix + "ChannelState"))
        if state is not None:
            ch.state = state
        link = msg.get(prefix + "Linkedid")
        if link:
            ch.linkedid = link
        if prefix + "ConnectedLineNum" in msg.fields:
            ch.connected_num = _known(msg.get(prefix + "ConnectedLineNum"))
        if prefix + "ConnectedLineName" in msg.fields:
            ch.connected_name = _known(msg.get(prefix + "ConnectedLineName"))
        exten = _known(msg.get(prefix + "Exten"))
        if exten and ch.exten is None and exten != "s":
            ch.exten = exten

    def _direction(self, ch: _Chan, phase: Phase) -> Direction:
        if phase is Phase.RINGING:
            return Direction.IN
        if phase is Phase.DIALING or ch.dialing_out:
            return Direction.OUT
        if ch.application == "AppDial":  # the dialled leg of a Dial()
            return Direction.IN
        if ch.application == "Dial":
            return Direction.OUT
        return Direction.OUT if ch.linkedid == ch.uniqueid else Direction.IN

    def _report(self, ch: _Chan, phase: Phase | None = None) -> list[Report]:
        """Report the channel if what a user would see of it changed."""
        if phase is None:
            phase = channel_phase(ch.state, ch.held)
            if phase is None and ch.dialing_out and ch.state in (0, 1, None):
                phase = Phase.DIALING  # a Down channel that dials out: outgoing setup
        if phase is None:
            return []
        if phase is Phase.ENDED:
            if ch.last is None:
                return []  # never reported: nothing to end
            return [
                CallReport(d, ch.uniqueid, Phase.ENDED, ch.direction, link=ch.linkedid,
                           conn=self.conn)
                for d in ch.devices
            ]
        if ch.direction is None:
            ch.direction = self._direction(ch, phase)
        remote = ch.connected_num
        name = ch.connected_name
        if remote is None:
            remote = ch.other_num
            if remote is None and ch.direction is Direction.OUT:
                remote = ch.exten
        if name is None:
            name = ch.other_name
        key = (phase, remote, name)
        if key == ch.last:
            return []
        ch.last = key
        return [
            CallReport(d, ch.uniqueid, phase, ch.direction, remote, name, ch.linkedid,
                       conn=self.conn)
            for d in ch.devices
        ]

    def _on_channel(self, msg: AmiMessage) -> list[Report]:
        ch = self._chan(msg)
        return self._report(ch) if ch else []

    def _on_rename(self, msg: AmiMessage) -> list[Report]:
        uid = msg.get("Uniqueid") or self._by_name.get(msg.get("Channel") or "")
        new = msg.get("Newname")
        ch = self._chans.get(uid or "")
        if ch is not None and new:
            self._by_name.pop(ch.name, None)
            ch.name = new
            self._by_name[new] = ch.uniqueid
        return []

    def _on_coreshowchannel(self, msg: AmiMessage) -> list[Report]:
        ch = self._chan(msg)
        if ch is None:
            return []
        app = msg.get("Application")
        if app:
            ch.application = app
        return self._report(ch)

    def _on_hangup(self, msg: AmiMessage) -> list[Report]:
        ch = self._chan(msg)
        if ch is None:
            return []
        self._chans.pop(ch.uniqueid, None)
        if self._by_name.get(ch.name) == ch.uniqueid:
            del self._by_name[ch.name]
        return self._report(ch, Phase.ENDED)

    def _on_dialbegin(self, msg: AmiMessage) -> list[Report]:
        out: list[Report] = []
        src = self._chan(msg)
        dst = self._chan(msg, "Dest")
        if src is not None:
            src.dialing_out = True
            src.other_num = _known(msg.get("DestCallerIDNum"))
            src.other_name = _known(msg.get("DestCallerIDName"))
            out += self._report(src)
        if dst is not None:
            if dst.direction is None:
                dst.direction = Direction.IN
            dst.caller_channel = msg.get("Channel") or None
            dst.other_num = _known(msg.get("CallerIDNum"))
            dst.other_name = _known(msg.get("CallerIDName"))
            out += self._report(dst)
        return out

    def _on_dialend(self, msg: AmiMessage) -> list[Report]:
        # The states that follow (Up, Hangup) arrive as their own events; the snapshot fields
        # may still carry a newer connected line.
        out: list[Report] = []
        for prefix in ("", "Dest"):
            ch = self._chan(msg, prefix)
            if ch is not None:
                out += self._report(ch)
        return out

    def _on_hold(self, msg: AmiMessage, held: bool) -> list[Report]:
        ch = self._chan(msg)
        if ch is None:
            return []
        ch.held = held
        return self._report(ch)

    # -- service states ---------------------------------------------------------------

    def _on_devicestate(self, msg: AmiMessage) -> list[Report]:
        dev = msg.get("Device")
        state = (msg.get("State") or "").strip().upper()
        if not dev or not state:
            return []
        ids = self._device_lines.get(_norm_device(dev), ())
        for d in ids:
            if state in _HOLD_DEVICE_STATES:
                self._hold_devices.add(d)
            else:
                self._hold_devices.discard(d)
        ok = state not in OUT_OF_SERVICE_DEVICE_STATES
        return [ServiceReport(d, ok, conn=self.conn) for d in ids]

    def _on_extensionstatus(self, msg: AmiMessage) -> list[Report]:
        exten = (msg.get("Exten") or "").strip()
        status = (msg.get("Status") or "").strip()
        if not exten or not status:
            return []
        ids = self._hint_line_devices(exten, (msg.get("Context") or "").strip())
        if not ids:
            return []
        hint = msg.get("Hint")
        if hint:
            # "PJSIP/201&SIP/201,CustomPresence:201": device states before the comma.
            devs = [_norm_device(x) for x in hint.split(",", 1)[0].split("&") if "/" in x]
            for dev in devs:
                have = self._hint_devices.get(dev, ())
                self._hint_devices[dev] = have + tuple(d for d in ids if d not in have)
            self._hinted.update(ids)
            self._routes.clear()
        for d in ids:
            if status in _HOLD_EXTENSION_STATUSES:
                self._hold_devices.add(d)
            else:
                self._hold_devices.discard(d)
        ok = status not in OUT_OF_SERVICE_EXTENSION_STATUSES
        return [ServiceReport(d, ok, conn=self.conn) for d in ids]

    def _on_coreshowchannels_complete(self, msg: AmiMessage) -> list[Report]:
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


_HANDLERS = {
    "newchannel": AmiTranslator._on_channel,
    "newstate": AmiTranslator._on_channel,
    "newconnectedline": AmiTranslator._on_channel,
    "newcallerid": AmiTranslator._on_channel,
    "bridgeenter": AmiTranslator._on_channel,
    "bridgeleave": AmiTranslator._on_channel,
    "rename": AmiTranslator._on_rename,
    "coreshowchannel": AmiTranslator._on_coreshowchannel,
    "hangup": AmiTranslator._on_hangup,
    "dialbegin": AmiTranslator._on_dialbegin,
    "dialend": AmiTranslator._on_dialend,
    "hold": lambda self, m: self._on_hold(m, True),
    "unhold": lambda self, m: self._on_hold(m, False),
    "devicestatechange": AmiTranslator._on_devicestate,
    "extensionstatus": AmiTranslator._on_extensionstatus,
    "coreshowchannelscomplete": AmiTranslator._on_coreshowchannels_complete,
}


# -- the connection ----------------------------------------------------------------------

log = logging.getLogger("gateway.ami")

# The lists asked for after every login, in this order: the hints first, so the translator
# knows which devices stand behind hint lines before the channels arrive.
SYNC_LISTS = (
    ("ExtensionStateList", "extensionstatelistcomplete"),
    ("DeviceStateList", "devicestatelistcomplete"),
    ("CoreShowChannels", "coreshowchannelscomplete"),
)
MAX_EARLY = 100  # messages kept from before the login answer (applied with the re-sync)


class AmiError(Exception):
    """An AMI action failed (not connected, connection lost, or a timeout)."""


class AmiLoginRefused(AmiError):
    """Asterisk answered the Login with ``Response: Error``."""


class State(str, Enum):
    BANNER = "banner"
    LOGIN = "login"
    SYNC = "sync"
    LIVE = "live"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Connected:
    """The Manager banner arrived (`version`: what follows ``Asterisk Call Manager/``)."""

    version: str


@dataclass(frozen=True, slots=True)
class LoggedIn:
    """The Login was accepted; the re-sync lists are on their way out."""


@dataclass(frozen=True, slots=True)
class ReportsReady:
    """Core reports, in order: the whole re-sync in one (`resync`), then one per read."""

    reports: tuple[Report, ...]
    resync: bool = False


@dataclass(frozen=True, slots=True)
class Synced:
    """The re-sync of this connection was delivered: the lamps are exact from here on."""

    reports: int


@dataclass(frozen=True, slots=True)
class ActionAnswered:
    action_id: str
    response: AmiMessage


@dataclass(frozen=True, slots=True)
class ActionFailed:
    action_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Closing:
    """The connection is over: write what is left, then close the transport."""

    reason: str
    refused: bool = False  # the Login was refused (the reason is Asterisk's message)


Event = Connected | LoggedIn | ReportsReady | Synced | ActionAnswered | ActionFailed | Closing


class AmiConnection:
    """One Manager connection (see the module docstring). `now` is any monotonic clock's
    seconds, the same for every call; `action_ids` yields unique ActionIDs."""

    def __init__(
        self,
        translator: AmiTranslator,
        username: str,
        secret: str,
        now: float,
        *,
        action_ids: Iterator[str],
        events: str = "call",
        banner_timeout: float = 10.0,
        action_timeout: float = 10.0,
        sync_timeout: float | None = None,
        ping_interval: float = 20.0,
    ) -> None:
        self.translator = translator
        self.username = username
        self._secret: str | None = secret
        self._ids = action_ids
        self._events = events
        self.action_timeout = action_timeout
        self.sync_timeout = 3 * action_timeout if sync_timeout is None else sync_timeout
        self.ping_interval = ping_interval
        self.state = State.BANNER
        self.synced_once = False  # this connection delivered a re-sync (its loss matters)
        self.close_reason: str | None = None
        self.refused = False  # the Login was refused (close_reason: Asterisk's message)
        self.events_seen = 0
        self.protocol_errors = 0
        self._parser = AmiParser()
        self._out = bytearray()
        self._deadline: float | None = now + banner_timeout  # banner, login or sync
        self._login_id: str | None = None
        self._pending: dict[str, tuple[str, float]] = {}  # action id -> (name, deadline)
        self._ping_id: str | None = None
        self._next_ping: float | None = None
        self._sync_wait: dict[str, str] = {}  # list ActionID -> its completion event
        self._sync_buf: list[Report] = []
        self._early: list[AmiMessage] = []
        translator.reset()

    # -- what the caller asks -------------------------------------------------------------

    @property
    def logged_in(self) -> bool:
        """Actions can be sent."""
        return self.state in (State.SYNC, State.LIVE)

    @property
    def synced(self) -> bool:
        return self.state is State.LIVE

    def data_to_send(self) -> bytes:
        """The bytes to write now (empty when there are none)."""
        out, self._out = bytes(self._out), bytearray()
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must be called next (None: no timer)."""
        if self.state is State.CLOSED:
            return None
        times = [t for _, t in self._pending.values()]
        if self._deadline is not None:
            times.append(self._deadline)
        if self._next_ping is not None:
            times.append(self._next_ping)
        return min(times, default=None)

    def send_action(self, name: str, now: float, **fields: object) -> str:
        """Queue an action; its answer comes as :class:`ActionAnswered` (or
        :class:`ActionFailed`). Raises AmiError when not logged in, ValueError for a line
        break in a field."""
        if not self.logged_in:
            raise AmiError("AMI not connected")
        aid = next(self._ids)
        self._out += format_action(name, aid, **fields)
        self._pending[aid] = (name, now + self.action_timeout)
        return aid

    def close(self) -> list[Event]:
        """We end the connection: Logoff if logged in; pending actions fail."""
        if self.state is State.CLOSED:
            return []
        if self.logged_in:
            self._out += format_action("Logoff", next(self._ids))
        return self._close("closed by the gateway")

    # -- what happened ----------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Bytes read from Asterisk -> events, in order."""
        if self.state is State.CLOSED:
            return []
        out: list[Event] = []
        live: list[Report] = []
        for item in self._parser.feed(data):
            if isinstance(item, AmiProtocolError):
                self.protocol_errors += 1
                log.warning("AMI: skipped bad data from Asterisk (%s): %r", item.reason,
                            redact(item.sample[:60]), extra={"source": "asterisk"})
                continue
            self._message(item, now, out, live)
            if self.state is State.CLOSED:
                break
        if live:
            out.append(ReportsReady(tuple(live)))
        return out

    def receive_eof(self) -> list[Event]:
        """Asterisk closed the connection."""
        if self.state is State.CLOSED:
            return []
        reason = {State.BANNER: "connection closed before the banner",
                  State.LOGIN: "connection closed during login"}.get(
                      self.state, "connection closed by Asterisk")
        return self._close(reason)

    def handle_timer(self, now: float) -> list[Event]:
        """Deadlines that passed at `now`: timeouts, the next Ping."""
        if self.state is State.CLOSED:
            return []
        if self._deadline is not None and now >= self._deadline:
            if self.state is State.BANNER:
                return self._close("no Manager banner in time")
            if self.state is State.LOGIN:
                return self._close(f"no answer to Login in {self.action_timeout:g} s")
            log.warning("AMI re-sync not complete after %.0f s: reconnecting",
                        self.sync_timeout)
            return self._close(f"re-sync not complete after {self.sync_timeout:.0f} s")
        out: list[Event] = []
        for aid, (name, deadline) in list(self._pending.items()):
            if now < deadline:
                continue
            del self._pending[aid]
            if aid == self._ping_id:
                reason = f"no answer to Ping in {self.action_timeout:g} s"
                log.warning("AMI ping failed (%s): reconnecting", reason)
                return out + self._close(f"ping failed: {reason}")
            out.append(ActionFailed(aid, f"no answer in {self.action_timeout:g} s"))
        if self._next_ping is not None and now >= self._next_ping:
            # A half-open TCP connection (Asterisk host gone without a FIN) shows no error
            # on reads: only an unanswered Ping finds it.
            self._next_ping = None
            self._ping_id = self.send_action("Ping", now)
        return out

    # -- inside -------------------------------------------------------------------------------

    def _close(self, reason: str, refused: bool = False) -> list[Event]:
        self.state = State.CLOSED
        self.close_reason = reason
        self.refused = refused
        self._deadline = self._next_ping = None
        self._secret = None
        out: list[Event] = [ActionFailed(aid, "connection lost") for aid in self._pending]
        self._pending.clear()
        self._sync_wait.clear()
        self._sync_buf = []
        out.append(Closing(reason, refused))
        return out

    def _message(self, msg: AmiMessage, now: float, out: list[Event],
                 live: list[Report]) -> None:
        if self.state is State.BANNER:
            if msg.kind == "banner":
                out.append(Connected(msg.name))
                self._login(now)
            elif len(self._early) < MAX_EARLY:
                self._early.append(msg)
            return
        if self.state is State.LOGIN:
            if msg.kind == "response" and msg.action_id == self._login_id:
                self._login_answered(msg, now, out)
            elif len(self._early) < MAX_EARLY:
                self._early.append(msg)
            return
        self._dispatch(msg, now, out, live)

    def _login(self, now: float) -> None:
        self.state = State.LOGIN
        self._login_id = next(self._ids)
        fields: dict[str, object] = {"Username": self.username, "Secret": self._secret}
        if self._events:
            fields["Events"] = self._events
        self._out += format_action("Login", self._login_id, **fields)
        self._secret = None  # sent; not kept
        self._deadline = now + self.action_timeout

    def _login_answered(self, msg: AmiMessage, now: float, out: list[Event]) -> None:
        if msg.name.lower() != "success":
            out += self._close(msg.get("Message") or msg.name, refused=True)
            return
        self.state = State.SYNC
        out.append(LoggedIn())
        self._deadline = now + self.sync_timeout
        for action, complete in SYNC_LISTS:
            aid = next(self._ids)
            self._sync_wait[aid] = complete
            self._out += format_action(action, aid)
        early, self._early = self._early, []
        for m in early:  # what came with the banner: part of this connection's state
            self._dispatch(m, now, out, [])

    def _dispatch(self, msg: AmiMessage, now: float, out: list[Event],
                  live: list[Report]) -> None:
        """Route one message after the login: answers to actions, list items, events."""
        aid = msg.action_id
        if msg.kind == "response":
            if aid is None:
                return
            if aid in self._pending:
                del self._pending[aid]
                if aid == self._ping_id:
                    self._ping_id = None
                    self._next_ping = now + self.ping_interval
                else:
                    out.append(ActionAnswered(aid, msg))
            elif aid in self._sync_wait and msg.name.lower() != "success":
                # ExtensionStateList answers Error when there are no hints: an empty list.
                log.info("AMI list %s: %s", aid, msg.get("Message"))
                self._list_done(aid, now, out)
            return
        if msg.kind != "event":
            return
        self.events_seen += 1
        try:
            reports = self.translator.feed(msg)
        except Exception:  # a translator bug must not take the source down
            log.exception("AMI: cannot translate %s event", msg.name)
            reports = []
        if self.state is State.SYNC:
            self._sync_buf += reports
            if aid is not None and self._sync_wait.get(aid) == msg.name.lower():
                self._list_done(aid, now, out)
            return
        live += reports

    def _list_done(self, aid: str, now: float, out: list[Event]) -> None:
        self._sync_wait.pop(aid, None)
        if self._sync_wait:
            return
        batch, self._sync_buf = self._sync_buf, []
        self.state = State.LIVE
        self.synced_once = True
        self._deadline = None
        if self.ping_interval > 0:
            self._next_ping = now + self.ping_interval
        out.append(ReportsReady(tuple(batch), resync=True))
        out.append(Synced(len(batch)))
