"""Asterisk Manager Interface wire format, pure: bytes in, messages out (and back).

No sockets and no asyncio: :class:`AmiParser` is fed whatever the transport read and returns
the complete messages, keeping the unparsed rest for the next call. The wire format:

- one banner line on connect, ``Asterisk Call Manager/X.Y.Z`` (no empty line after it);
- then messages of ``Key: Value`` lines ended by an empty line. Lines end in CRLF; a bare LF
  is tolerated. A message starting with ``Event:`` is an event, ``Response:`` a response,
  ``Action:`` an action (what a client sends; the test peer parses those).

The parser never raises out of :meth:`AmiParser.feed` and never holds more than one line
(``max_line``) plus one message (``max_message``) of a misbehaving peer: an oversized line or
message, or a block that is no AMI message at all, is skipped and reported in the returned
list as an :class:`AmiProtocolError` value (and counted in :attr:`AmiParser.errors`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import FrozenInstanceError, dataclass
from functools import partial
from operator import itemgetter
from typing import Literal

__all__ = [
    "AmiFields",
    "AmiMessage",
    "AmiProtocolError",
    "AmiParser",
    "format_action",
    "format_message",
    "BANNER_PREFIX",
]

BANNER_PREFIX = "Asterisk Call Manager/"

Kind = Literal["event", "response", "banner", "action"]

# The key that opens a message decides its kind.
_KIND_KEYS: dict[str, Kind] = {"event": "event", "response": "response", "action": "action"}

# Where a line of an event in Asterisk's own form starts: its line end, then its key (letters,
# digits, "-", "_": no space to strip, nothing unprintable) and the colon.
_LINE_KEY = re.compile(r"\r\n([A-Za-z0-9_-]+):")
# A kind key after the first line, in the lower-case keys joined by "\n".
_OTHER_KIND = re.compile(r"\n(?:event|response|action)(?:\n|$)")
# Lines of an event in Asterisk's form (CRLF line ends; after the first, each a key of
# letters, digits, "-", "_" with its colon, none of them a kind key): what the line-by-line
# reading takes without a word (see AmiParser._pending_event).
_EVENT_LINES = re.compile(
    r"Event:[^\n]*(?:\r\n(?!(?i:event|response|action):)[A-Za-z0-9_-]+:[^\n]*)*")
# The most of an event cut by a read that waits for its end to be read whole (each read
# checks it again: a peer trickling bytes costs at most this much per read).
MAX_PENDING = 2048
# Event names whose orders of keys are read by one match each (AmiParser._learn), and how
# many orders per name: a few per name, so a peer of ever new orders costs a few tries.
MAX_FAST_ORDERS = 4
# A picked value in the form Asterisk writes it: one space after the colon, then nothing or a
# value with no space at either end (str.strip's spaces: \s), so the value is as stripped;
# any other form is read by the split.
_PICKED = r": (\S[^\n]*(?<!\s)|)"
_NONE = (None,)
# Orders of keys a parser remembers, and the largest it remembers (keys, characters of the
# keys): a real Asterisk writes a few dozen, of at most about 40 keys and 700 characters; a
# peer sending ever new ones costs at most about 2 MB here, then time.
MAX_LAYOUTS = 256
MAX_LAYOUT_KEYS = 64
MAX_LAYOUT_CHARS = 1024
_NEW = object()


class AmiFields(Mapping[str, str]):
    """Read-only, case-insensitive view of a message's fields: the first value of each key.

    Asterisk treats keys case-insensitively and its own spelling varies between versions
    (``Uniqueid`` / ``UniqueID``), so lookups ignore case; iteration yields keys as sent.
    """

    # _index: lower-case key -> where its first value is in _vals. Built from pairs, _vals
    # holds the values. Read at once by the parser (_of_parts), _vals is its split, ["",
    # key, value, key, value, ...] with the values unstripped (_raw), and _index is shared by
    # every message of the same keys in the same order (see AmiParser._layout): a lookup
    # strips the one value it reads. _d (lower-case key -> (key as sent, value)), for
    # iteration, equality and hashing, is then built when first needed.
    __slots__ = ("_index", "_vals", "_raw", "_d", "_hash")

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        d: dict[str, tuple[str, str]] = {}
        for k, v in pairs:
            d.setdefault(k.lower(), (k, v))
        self._d: dict[str, tuple[str, str]] | None = d
        self._index = {lk: i for i, lk in enumerate(d)}
        self._vals = [v for _, v in d.values()]
        self._raw = False
        self._hash: int | None = None

    @classmethod
    def _of_parts(cls, index: dict[str, int], parts: list[str]) -> AmiFields:
        self = _new(cls)
        self._index = index
        self._vals = parts
        self._raw = True
        self._d = None
        self._hash = None
        return self

    def _get(self, lk: str) -> str | None:
        """The first value of the lower-case key `lk` (None: no such key)."""
        i = self._index.get(lk)
        if i is None:
            return None
        return self._vals[i].strip() if self._raw else self._vals[i]

    def _items(self) -> dict[str, tuple[str, str]]:
        d = self._d
        if d is None:
            parts = self._vals
            d = self._d = {lk: (parts[i - 1], parts[i].strip()) for lk, i in self._index.items()}
        return d

    def __getitem__(self, key: str) -> str:
        v = self._get(key.lower())
        if v is None:
            raise KeyError(key)
        return v

    def get(self, key: str, default=None):  # type: ignore[override]
        v = self._get(key.lower())
        return default if v is None else v

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._index

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items().values())

    def __len__(self) -> int:
        return len(self._index)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AmiFields):
            return self._items() == other._items()
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._items().values()))
        return self._hash

    def __repr__(self) -> str:
        return f"AmiFields({dict(self.items())!r})"


_new = object.__new__
_set = object.__setattr__


class AmiMessage:
    """One complete AMI message (immutable).

    `kind` is ``event``, ``response``, ``banner`` or ``action``; `name` is the event name, the
    response status (``Success``, ``Error``, ``Goodbye``, ...), the banner's version
    (``9.0.0``) or the action name. `fields` holds the first value of every key
    (case-insensitive); `pairs` every line in order, so repeated keys such as several
    ``ChanVariable:`` lines are all kept.
    """

    # _fields: the AmiFields, or, for an event the parser read by one match (see
    # AmiParser._whole_message), its text, split into fields when first asked for. _pairs:
    # unset until first asked for where the parser read the message at once. _picks, _picked:
    # the keys the parser was asked to pick (AmiParser.picks) and their values (see pick()).
    __slots__ = ("kind", "name", "_fields", "_pairs", "_picks", "_picked")

    kind: Kind
    name: str

    def __init__(self, kind: Kind, name: str, fields: AmiFields | None = None,
                 pairs: tuple[tuple[str, str], ...] = ()) -> None:
        _set(self, "kind", kind)
        _set(self, "name", name)
        _set(self, "_fields", AmiFields() if fields is None else fields)
        _set(self, "_pairs", pairs)
        _set(self, "_picks", None)

    @classmethod
    def _of_parts(cls, kind: Kind, name: str, fields: AmiFields) -> AmiMessage:
        # The parser's reading by one split: `pairs` are built from the fields' split when
        # asked for.
        self = _new(cls)
        _set_kind(self, kind)
        _set_name(self, name)
        _set_fields(self, fields)
        _set_picks(self, None)
        return self

    @property
    def fields(self) -> AmiFields:
        """The first value of every key (case-insensitive)."""
        f = self._fields
        if f.__class__ is str:
            f = _fields_of_text(f)
            _set_fields(self, f)
        return f

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """Every ``Key: Value`` line in order."""
        try:
            return self._pairs
        except AttributeError:
            parts = self.fields._vals
            pairs = tuple(zip(parts[1::2], map(str.strip, parts[2::2])))
            _set(self, "_pairs", pairs)
            return pairs

    def pick(self, keys: tuple[str, ...]) -> tuple[str | None, ...]:
        """The first values of `keys` (lower case), in their order, None for a key not
        sent: what ``get`` gives for each, taken from the parser's reading where it was
        asked for exactly these keys (:attr:`AmiParser.picks`)."""
        if self._picks is keys:
            return self._picked
        return tuple(map(self.fields._get, keys))

    @property
    def action_id(self) -> str | None:
        """The ActionID echoed by Asterisk (None for events that answer no action)."""
        return self.fields._get("actionid")

    def get(self, key: str, default: str | None = None) -> str | None:
        """A field's first value (case-insensitive key)."""
        v = self.fields._get(key.lower())
        return default if v is None else v

    def values(self, key: str) -> list[str]:
        """All values of a (possibly repeated) key, in order."""
        k = key.lower()
        return [v for kk, v in self.pairs if kk.lower() == k]

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _key(self) -> tuple:
        return (self.kind, self.name, self.fields, self.pairs)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._key() == other._key()  # type: ignore[attr-defined]
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"AmiMessage(kind={self.kind!r}, name={self.name!r}, fields={self.fields!r}, "
                f"pairs={self.pairs!r})")

    def __reduce__(self) -> tuple:
        return (AmiMessage, self._key())


_set_kind = AmiMessage.kind.__set__  # type: ignore[attr-defined]
_set_name = AmiMessage.name.__set__  # type: ignore[attr-defined]
_set_fields = AmiMessage._fields.__set__  # type: ignore[attr-defined]
_set_picks = AmiMessage._picks.__set__  # type: ignore[attr-defined]
_set_picked = AmiMessage._picked.__set__  # type: ignore[attr-defined]


def _picked_event(name: str, text: str, keys: tuple[str, ...],
                  values: tuple[str | None, ...]) -> AmiMessage:
    """An event read by its picks: fields split from `text` when first asked for."""
    msg = _new(AmiMessage)
    _set_kind(msg, "event")
    _set_name(msg, name)
    _set_fields(msg, text)
    _set_picks(msg, keys)
    _set_picked(msg, values)
    return msg


def _fields_of_text(text: str) -> AmiFields:
    """The fields of an event in Asterisk's form (see AmiParser._whole_message), as its
    reading by one split gives them."""
    parts = _LINE_KEY.split("\r\n" + text)
    index: dict[str, int] = {}
    for i, k in enumerate(parts[1::2]):
        index.setdefault(k.lower(), 2 * i + 2)
    return AmiFields._of_parts(index, parts)


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
    """Incremental AMI parser (see the module docstring for the format and the limits).

    `wanted`, when set, names the events (lower case) worth returning: any other event is
    dropped once it is known to be a well-formed message, before its fields are read, and
    counted in `skipped` (errors in it are reported as ever).

    `picks`, when set, maps event names (lower case) to the keys (lower case) whose values
    the reader takes from each such event (:meth:`AmiMessage.pick`): an event of the form
    and order of keys Asterisk writes is then read by one match that takes just those
    values; the rest of it is split into fields only if asked for. `bare`, when True, has
    such an event returned as the tuple ``(name in lower case, values, name as sent)``
    rather than as an :class:`AmiMessage` (for a reader that wants nothing else of it).
    """

    def __init__(self, *, max_line: int = 8 * 1024, max_message: int = 64 * 1024) -> None:
        self.max_line = max_line
        self.max_message = max_message
        self.errors = 0  # how many AmiProtocolError items feed() has returned in all
        self.messages = 0  # how many messages feed() has returned in all
        # Event names (lower case) worth returning; None: all. Other events are counted in
        # `skipped` and not returned (errors in them are reported as ever).
        self._wanted: frozenset[str] | None = None
        self._picks: dict[str, tuple[str, ...]] = {}
        self.skipped = 0
        self._layouts: dict[str, dict[str, int] | None] = {}  # see _layout
        # An event's first line as sent (CR included) -> [(the match of one order of its
        # keys, what takes the picked values from its groups (None: dropped), the picked
        # keys, the name in lower case, the name)], see _learn.
        self._fast: dict[str, list[tuple[Callable[[str], re.Match[str] | None],
                                          Callable[[tuple], tuple] | None,
                                          tuple[str, ...] | None, str, str]]] = {}
        self.bare = False  # see the class docstring
        self._orders: set[str] = set()  # the orders in _fast (first line, keys)
        self._fast_orders = 0
        self._buf = bytearray()
        self._skip_line = False  # dropping the rest of an oversized line, up to its LF
        self._pairs: list[tuple[str, str]] = []
        self._kind: Kind | None = None
        self._size = 0
        self._bad = False  # the message being collected was reported broken: drop it

    @property
    def wanted(self) -> frozenset[str] | None:
        """Event names (lower case) worth returning; None: all."""
        return self._wanted

    @wanted.setter
    def wanted(self, names: frozenset[str] | None) -> None:
        self._wanted = names
        self._forget_orders()

    @property
    def picks(self) -> Mapping[str, tuple[str, ...]]:
        """Event name (lower case) -> the keys (lower case) whose values are picked."""
        return self._picks

    @picks.setter
    def picks(self, picks: Mapping[str, tuple[str, ...]]) -> None:
        self._picks = dict(picks)
        self._forget_orders()

    def _forget_orders(self) -> None:
        self._fast.clear()
        self._orders.clear()
        self._fast_orders = 0

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

    def feed(self, data: bytes) -> list[AmiMessage | AmiProtocolError | tuple]:
        """Parse `data` after what earlier calls left; return complete messages and errors
        (and, with :attr:`bare`, the tuples of events read by their picks)."""
        out: list[AmiMessage | AmiProtocolError | tuple] = []
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
        n = len(buf)
        pos = self._blocks(out) if not self._pairs and not self._bad else 0
        find = buf.find
        while pos < n:
            if not self._pairs and not self._bad:
                # Between messages: a whole well-formed message is read in one go (see
                # _whole_message); anything unusual goes line by line below.
                end = find(b"\r\n\r\n", pos)
                if pos < end <= pos + self.max_line:
                    if not buf.startswith(b"Event:", pos, end):
                        if self._whole_block(buf[pos:end], out):
                            pos = end + 4
                            continue
                    else:
                        try:
                            text = buf[pos:end].decode("utf-8")
                        except UnicodeDecodeError:
                            text = None  # a Latin-1 field: decoded field by field
                        if text is not None and self._event(text, buf, pos, end, out):
                            pos = end + 4
                            continue
                elif (end < 0 and n - pos <= min(MAX_PENDING, self.max_line, self.max_message)
                        and self._pending_event(pos)):
                    break  # the start of an event, read whole when its end is there
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

    def _pending_event(self, pos: int) -> bool:
        """The buffer from `pos` on is the start of an event whose complete lines are all
        in Asterisk's form (see _EVENT_LINES): reading them now, line by line, would say
        nothing, so the event can wait for its end to be read whole."""
        buf = self._buf
        if not buf.startswith(b"Event:", pos):
            return False
        nl = buf.rfind(b"\n", pos)
        if nl < 0:
            return True  # no line complete yet
        try:
            lines = buf[pos:nl].decode("utf-8")
        except UnicodeDecodeError:
            return False
        return (lines.endswith("\r")
                and _EVENT_LINES.fullmatch(lines, 0, len(lines) - 1) is not None)

    def _blocks(self, out: list) -> int:
        """Read the buffer's whole messages, from its start, as far as each reads at once
        (:meth:`_event`, :meth:`_whole_block`): all of them decoded by one decode and cut
        by one split. Returns where it stopped (the line-by-line reading goes on there)."""
        buf = self._buf
        last = buf.rfind(b"\r\n\r\n")
        if last <= 0:
            return 0
        try:
            whole = buf[:last].decode("utf-8")
        except UnicodeDecodeError:
            return 0  # a Latin-1 field somewhere: message by message
        pos = 0
        max_line = self.max_line
        fasts = self._fast
        bare = self.bare
        append = out.append
        ascii = whole.isascii()  # then a character is a byte
        read = dropped = 0  # added to messages and skipped at the end
        for text in whole.split("\r\n\r\n"):
            size = len(text) if ascii else len(text.encode("utf-8"))
            if not 0 < size <= max_line:
                break
            end = pos + size
            if text.startswith("Event:"):
                # What _event does, inline for the usual event: of a known order of keys.
                nl = text.find("\n")
                fast = fasts.get(text[:nl] if nl >= 0 else text)
                if fast is not None:
                    for match, take, keys, low, name in fast:
                        m = match(text)
                        if m is not None:
                            if take is None:
                                dropped += 1
                            else:
                                read += 1
                                values = take(m.groups() + _NONE)
                                append((low, values, name) if bare
                                       else _picked_event(name, text, keys, values))
                            break
                    else:
                        fast = None
                if fast is None and not self._event(text, buf, pos, end, out):
                    break
            elif not self._whole_block(buf[pos:end], out):
                break
            pos = end + 4
        self.messages += read
        self.skipped += dropped
        return pos

    def _event(self, text: str, buf: bytearray, pos: int, end: int, out: list) -> bool:
        """Read the event `text` (decoded from buf[pos:end]) at once where that gives what
        its lines give; False (nothing changed) where not. One of a known order of keys
        is read by its match (see _learn), any other by :meth:`_whole_message`."""
        # The name: the first line's value (what the split reads, where it reads).
        nl = text.find("\n")
        name = (text[6:nl] if nl >= 0 else text[6:]).strip()
        fast = self._fast.get(text[:nl] if nl >= 0 else text)
        if fast is not None:
            for match, take, keys, low, _ in fast:
                m = match(text)
                if m is not None:
                    if take is None:
                        self.skipped += 1
                        return True
                    self.messages += 1
                    values = take(m.groups() + _NONE)
                    if self.bare:
                        out.append((low, values, name))
                    else:
                        out.append(_picked_event(name, text, keys, values))
                    return True
        return self._whole_message(text, name, buf[pos:end], out)

    def _whole_message(self, text: str, name: str, block: bytes | bytearray,
                       out: list) -> bool:
        """Read one event (its lines without the empty line, `text` decoded from `block`,
        `name` its first line's value) at once, where that gives exactly what reading it
        line by line gives. Returns False (having changed nothing) where it would not: the
        line-by-line reading then reports it as it always has.

        An event in the form Asterisk writes (``Event:`` first, CRLF lines, valid UTF-8,
        every line a key of letters, digits, ``-`` or ``_`` with its colon) is cut into keys
        and values by one regular-expression split, and nothing more is done per line: where
        each key's value is comes from the order of its keys, worked out once per order
        (:meth:`_layout`), and a value is stripped when it is looked up. An event whose name
        is not in :attr:`wanted` is counted in :attr:`skipped` and dropped here, before any
        of its fields is looked at. An order of keys met here is then read by one match
        (:meth:`_learn`) where its events are dropped or picked. Anything else well-formed
        goes through :meth:`_whole_block`."""
        # ["", key, value, key, value, ...]: a key is matched only where a line starts.
        parts = _LINE_KEY.split("\r\n" + text)
        n = len(parts) >> 1
        # Every line started with a key: n keys for n lines, every LF in one of the
        # n - 1 line ends. (A CR inside a value stays there, as in the line-by-line
        # reading; at a value's end the strip takes it, as there.)
        if text.count("\n") == n - 1:
            layout = "\n".join(parts[1::2])  # the keys as sent; they hold no "\n"
            index = self._layouts.get(layout, _NEW)
            if index is _NEW:
                index = self._layout(layout)
            if index is None:
                return False  # a second Event/Response/Action line: the lines tell
            wanted = self._wanted
            low = name.lower()
            if wanted is not None and low not in wanted:
                self._learn(name, parts, None)
                self.skipped += 1
                return True
            keys = self._picks.get(low)
            if keys is not None:
                self._learn(name, parts, keys)
            self.messages += 1
            out.append(AmiMessage._of_parts("event", name,
                                            AmiFields._of_parts(index, parts)))
            return True
        return self._whole_block(block, out)

    def _learn(self, name: str, parts: list[str], keys: tuple[str, ...] | None) -> None:
        """Read the next events named `name` of the keys of `parts` (the split of one that
        was read, with no second kind key) in the same order by one match: its first line,
        then each key as sent, its colon and the rest of its line, the values of the first
        of each key in `keys` taken (in the form _PICKED reads, so that they need no strip;
        in the order of `keys`, None for a key it has not); `keys` None: the event is
        dropped (not wanted). Up to MAX_FAST_ORDERS orders per first line and MAX_LAYOUTS
        in all, of the bounds of :meth:`_layout`."""
        first = "Event:" + parts[2] + ("\r" if len(parts) > 3 else "")  # its first line
        order = first + "\n" + "\n".join(parts[3::2])
        if order in self._orders:
            return  # known: this event has a picked value out of the form _PICKED reads
        fast = self._fast.get(first, ())
        if (len(fast) >= MAX_FAST_ORDERS or self._fast_orders >= MAX_LAYOUTS
                or len(parts) > 2 * MAX_LAYOUT_KEYS + 1
                or sum(map(len, parts[1::2])) > MAX_LAYOUT_CHARS
                or (keys is not None and "event" in keys)):
            return  # read by the split, as any order
        fast = self._fast.setdefault(first, [])
        pattern = ["Event:[^\n]*"]
        where: dict[str, int] = {}  # picked key -> its group
        for k in parts[3::2]:
            lk = k.lower()
            if keys is not None and lk in keys and lk not in where:
                where[lk] = len(where)
                pattern.append("\r\n" + re.escape(k) + _PICKED)
            else:
                pattern.append("\r\n" + re.escape(k) + ":[^\n]*")
        take: Callable[[tuple], tuple] | None = None
        if keys is not None:
            # The groups, then None (for a key the event has not).
            idx = [where.get(k, len(where)) for k in keys]
            if len(idx) > 1:
                take = itemgetter(*idx)
            elif idx:
                take = partial(_one, idx[0])
            else:
                take = _nothing
        fast.append((re.compile("".join(pattern)).fullmatch, take, keys, name.lower(), name))
        self._orders.add(order)
        self._fast_orders += 1

    def _layout(self, layout: str) -> dict[str, int] | None:
        """Where the first value of each key is in the split of an event whose keys, joined
        by "\\n", are `layout` (lower-case key -> index); None if a key after the first is a
        kind key. Kept for the next event of the same keys (Asterisk writes each event the
        same way every time), up to MAX_LAYOUTS orders of up to MAX_LAYOUT_KEYS keys and
        MAX_LAYOUT_CHARS characters."""
        low = layout.lower()
        index: dict[str, int] | None = None
        if _OTHER_KIND.search(low, 5) is None:
            index = {}
            for i, lk in enumerate(low.split("\n")):
                index.setdefault(lk, 2 * i + 2)
        if (len(self._layouts) < MAX_LAYOUTS and len(layout) <= MAX_LAYOUT_CHARS
                and layout.count("\n") < MAX_LAYOUT_KEYS):
            self._layouts[layout] = index
        return index

    def _whole_block(self, block: bytes | bytearray, out: list) -> bool:
        """A message not in the form :meth:`_whole_message` reads by its split (a response,
        a key with spaces or other characters, a CR inside a value): one decode and one pass
        where that gives what the lines give; False (nothing changed) otherwise."""
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
        if (fields._items().keys() & _KIND_KEYS.keys() != {kind} or (
                len(fields) < len(pairs)  # a repeated key: count the kind lines
                and sum(k.lower() in _KIND_KEYS for k, _ in pairs) > 1)):
            return False  # a second Event/Response/Action line: the lines tell what is wrong
        if kind == "event" and self.wanted is not None and \
                pairs[0][1].lower() not in self.wanted:
            self.skipped += 1
            return True
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
        if kind == "event" and self.wanted is not None and name.lower() not in self.wanted:
            self.skipped += 1
            return
        self.messages += 1
        out.append(AmiMessage(kind, name, AmiFields(pairs), tuple(pairs)))


def _one(i: int, groups: tuple) -> tuple:
    return (groups[i],)


def _nothing(groups: tuple) -> tuple:
    return ()


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
