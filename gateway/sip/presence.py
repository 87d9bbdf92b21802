"""Presence (RFC 3856, PIDF) <-> line state, pure: no pjsua2, no sockets, no clock.

Three pieces:

- :func:`parse_pidf` reads a PIDF body safely (defusedxml: no DTDs, no entities, bounded
  size) into a :class:`PresenceInfo`; :func:`buddy_presence` builds the same value from what
  pjsua2 parsed itself (``BuddyInfo.presStatus``).
- :func:`classify` says what the device is doing (:class:`LineActivity`), from Asterisk's notes
  (Ready, Ringing, On the phone, On hold, Unavailable), Kamailio-style ones (Available, Busy,
  Talking, Offline) and, failing those, the basic state and RPID activities.
- :class:`PresenceTranslator` turns successive activities of a device into the core's
  :class:`~gateway.calls.CallReport` / :class:`~gateway.calls.ServiceReport` values. Presence
  carries no call identities, so each device has ONE synthetic call at a time; a new one
  starts whenever the transitions table would refuse the move (On the phone -> Ringing is a
  new call, not a late report).

And the other direction, for the BLF server: :func:`lamp_pidf` builds the PIDF body a desk
phone gets for a gateway lamp.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape, quoteattr

from ..calls import TRANSITIONS, CallReport, Phase, ServiceReport
from ..model import Lamp

__all__ = [
    "LineActivity",
    "PresenceInfo",
    "PidfError",
    "parse_pidf",
    "buddy_presence",
    "classify",
    "PresenceTranslator",
    "LAMP_PIDF",
    "lamp_pidf",
    "MAX_PIDF_BYTES",
]

# A presence document for one line is a few hundred bytes; anything this large is not one.
MAX_PIDF_BYTES = 64 * 1024


class LineActivity(str, Enum):
    """What a watched device is doing, as far as presence can tell."""

    IDLE = "idle"
    RINGING = "ringing"
    BUSY = "busy"  # on the phone (connected; presence cannot tell dialing from talking)
    HELD = "held"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class PresenceInfo:
    """The parts of a presence document that matter here.

    `basic`: True for ``<basic>open</basic>``, False for closed, None when absent.
    `note`: the first note found (presence level as Asterisk writes it, else the person's or
    tuple's), stripped. `activities`: RPID activity names (``on-the-phone``, ``busy``...).
    """

    basic: bool | None
    note: str = ""
    activities: frozenset[str] = frozenset()


class PidfError(ValueError):
    """A body that is not a usable PIDF document (the reason is the text)."""


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _text(el: Element | None) -> str:
    return " ".join((el.text or "").split()) if el is not None else ""


def parse_pidf(body: bytes | str) -> PresenceInfo:
    """Parse a PIDF body. Raises :class:`PidfError` for anything hostile or malformed."""
    import defusedxml.ElementTree as SafeET  # noqa: PLC0415, N812 - the only XML entry point
    from defusedxml import DefusedXmlException  # noqa: PLC0415

    if isinstance(body, str):
        body = body.encode("utf-8", "replace")
    if len(body) > MAX_PIDF_BYTES:
        raise PidfError(f"body of {len(body)} bytes is too large for a presence document")
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True,
                                 forbid_external=True)
    except (ParseError, DefusedXmlException, ValueError, RecursionError) as exc:
        raise PidfError(f"not a safe XML document: {type(exc).__name__}: {exc}") from None
    if _local(root.tag) != "presence":
        raise PidfError(f"root element is {_local(root.tag)!r}, not presence")
    basic: bool | None = None
    notes: dict[str, str] = {}
    activities: set[str] = set()
    for child in root:
        name = _local(child.tag)
        if name == "note" and "presence" not in notes:
            notes["presence"] = _text(child)
        elif name == "tuple":
            for el in child.iter():
                lname = _local(el.tag)
                if lname == "basic" and basic is None:
                    value = _text(el).lower()
                    basic = True if value == "open" else False if value == "closed" else None
                elif lname == "note" and "tuple" not in notes:
                    notes["tuple"] = _text(el)
        elif name == "person":
            for el in child.iter():
                lname = _local(el.tag)
                if lname == "activities":
                    activities.update(_local(a.tag) for a in el if _local(a.tag))
                elif lname == "note" and "person" not in notes:
                    notes["person"] = _text(el)
    note = next((notes[k] for k in ("presence", "person", "tuple") if notes.get(k)), "")
    return PresenceInfo(basic, note[:256], frozenset(a for a in activities if a != "unknown"))


def buddy_presence(online: bool | None, note: str = "", *, busy: bool = False,
                   away: bool = False) -> PresenceInfo:
    """What pjsua2 parsed (``presStatus.status``/``note``/``activity``) as a PresenceInfo."""
    acts = {"busy"} if busy else {"away"} if away else set()
    return PresenceInfo(online, " ".join((note or "").split())[:256], frozenset(acts))


# Notes by what they mean, lower case. Asterisk first, then Kamailio/other servers' wording.
_NOTES: dict[str, LineActivity] = {}
for _activity, _words in {
    LineActivity.IDLE: ("ready", "available", "idle", "online", "open", "not in use"),
    LineActivity.RINGING: ("ringing", "early", "alerting", "ring"),
    LineActivity.BUSY: ("on the phone", "on-the-phone", "busy", "talking", "in use", "inuse",
                        "in a call", "confirmed", "on call", "dialing"),
    LineActivity.HELD: ("on hold", "onhold", "on-hold", "hold", "held"),
    LineActivity.OFFLINE: ("unavailable", "offline", "not online", "closed", "unreachable",
                           "not registered"),
}.items():
    for _w in _words:
        _NOTES[_w] = _activity


def classify(info: PresenceInfo) -> LineActivity | None:
    """What the device is doing; None when the document says nothing usable.

    A closed basic state means offline whatever the note says (Asterisk's Unavailable,
    Kamailio's Offline). An open one with a note we do not know (a free-text status such as
    "Lunch") counts as idle unless RPID says on-the-phone/busy: open means reachable.
    """
    if info.basic is False:
        return LineActivity.OFFLINE
    by_note = _NOTES.get(info.note.strip().lower().rstrip("."))
    if by_note is not None:
        # A note claiming offline while basic says open: trust the note (Asterisk's
        # Unavailable is closed anyway; other servers put the truth in the note).
        return by_note
    if info.activities & {"on-the-phone", "busy"}:
        return LineActivity.BUSY
    if info.basic is True:
        return LineActivity.IDLE
    return None


_ACTIVITY_PHASE = {
    LineActivity.RINGING: Phase.RINGING,
    LineActivity.BUSY: Phase.CONNECTED,
    LineActivity.HELD: Phase.HELD,
}


class PresenceTranslator:
    """Successive activities of each device -> core reports (one synthetic call per device).

    Call ids are ``presence-{n}`` with `n` from one counter that starts at `start` (the
    source passes the current time in milliseconds, so that ids never repeat across a gateway
    restart whose stored calls the tracker may have reloaded; this module reads no clock).
    `conn(device)` names the reporting connection: each device is its own subscription, so
    each has its own connection and a subscription that fails takes only its device to
    `unknown` (LineTracker.connection_lost).
    """

    def __init__(self, start: int) -> None:
        self._next = start
        self._call: dict[str, tuple[str, Phase]] = {}  # device -> (synthetic call id, phase)

    @staticmethod
    def conn(device: str) -> str:
        return f"sip:{device}"

    def reset(self, device: str) -> None:
        """The device's subscription is gone: the tracker forgets its calls; so do we."""
        self._call.pop(device, None)

    def devices_with_calls(self) -> Iterable[str]:
        return list(self._call)

    def _new_id(self) -> str:
        n, self._next = self._next, self._next + 1
        return f"presence-{n}"

    def update(self, device: str, activity: LineActivity | None
               ) -> list[CallReport | ServiceReport]:
        """Reports that bring the tracker from the device's last activity to `activity`."""
        if activity is None:
            return []
        conn = self.conn(device)
        if activity is LineActivity.OFFLINE:
            # Out of service: the tracker clears the device's calls, so the call is gone.
            self._call.pop(device, None)
            return [ServiceReport(device, False, conn)]
        current = self._call.get(device)
        if activity is LineActivity.IDLE:
            # In service (from unknown or offline: the tracker needs telling), and no call.
            out: list[CallReport | ServiceReport] = [ServiceReport(device, True, conn)]
            if current is not None:
                out.append(CallReport(device, current[0], Phase.ENDED, conn=conn))
                del self._call[device]
            return out
        # A call report alone brings the device online (LineTracker.call): no ServiceReport
        # first, which would publish a passing `idle` before the ringing/busy lamp.
        out = []
        phase = _ACTIVITY_PHASE[activity]
        if current is not None:
            call, was = current
            if phase is was:
                return out
            if phase in TRANSITIONS[was]:
                self._call[device] = (call, phase)
                out.append(CallReport(device, call, phase, conn=conn))
                return out
        new = self._new_id()
        self._call[device] = (new, phase)
        out.append(CallReport(device, new, phase, conn=conn))
        if current is not None:
            # The table refuses the move (connected -> ringing, ringing -> held): the old
            # call ended and this is another one. Ended after the new one started, so that
            # the lamp never passes through `idle` on the way.
            out.append(CallReport(device, current[0], Phase.ENDED, conn=conn))
        return out


# Gateway lamp -> (basic open, note, RPID activity or None) for desk phones.
LAMP_PIDF: dict[Lamp, tuple[bool, str, str | None]] = {
    Lamp.IDLE: (True, "Ready", None),
    Lamp.RINGING: (True, "Ringing", None),  # alerting, not yet on the phone
    Lamp.BUSY: (True, "On the phone", "on-the-phone"),
    Lamp.OUTGOING: (True, "On the phone", "on-the-phone"),
    Lamp.HELD: (True, "On hold", "on-the-phone"),
    Lamp.OFFLINE: (False, "Unavailable", None),
    Lamp.UNKNOWN: (False, "Unavailable", None),
}


def lamp_pidf(entity: str, lamp: Lamp | str, tuple_id: str = "blf") -> str:
    """The PIDF body a desk phone gets for `lamp` (an unknown lamp value counts as unknown)."""
    try:
        lamp = Lamp(lamp)
    except ValueError:
        lamp = Lamp.UNKNOWN
    basic, note, activity = LAMP_PIDF[lamp]
    safe_id = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in tuple_id) or "blf"
    if not (safe_id[0].isalpha() or safe_id[0] == "_"):
        safe_id = "t" + safe_id
    person = ""
    if activity:
        person = (f'<dm:person id="p-{safe_id}"><rpid:activities><rpid:{activity}/>'
                  "</rpid:activities></dm:person>\n")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" "
            'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
            f'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity={quoteattr(entity)}>\n'
            f"<note>{escape(note)}</note>\n"
            f'<tuple id="{safe_id}">\n'
            f"<status><basic>{'open' if basic else 'closed'}</basic></status>\n"
            f"<contact priority=\"1\">{escape(entity)}</contact>\n"
            "</tuple>\n" + person + "</presence>\n")
