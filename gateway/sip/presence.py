"""Presence (RFC 3856, PIDF) <-> line state, pure: no pjsua2, no sockets, no clock.

Four pieces:

- :func:`parse_pidf` reads a PIDF body safely (defusedxml: no DTDs, no entities, bounded
  size) into a :class:`PresenceInfo`; :func:`parse_presence` into one view per device (tuple)
  of a merged document; :func:`buddy_presence` builds the same value from what pjsua2 parsed
  itself (``BuddyInfo.presStatus``).
- :func:`classify` says what one device is doing (:class:`LineActivity`): a note we know
  decides (Asterisk's Ready, Ringing, On the phone, On hold, Unavailable; Kamailio-style and
  FreeSWITCH wording), then RPID activities (``on-the-phone``...), then the basic state.
- :func:`read_presence` reads a whole NOTIFY body: no body at all means the publication is
  gone (:attr:`LineActivity.UNKNOWN`); several tuples (Kamailio/OpenSIPS merge the
  publications of one user's devices) are merged, the busiest device winning by the lamp
  priority of the contract (ringing > busy > held > idle > offline).
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
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

from ..calls import TRANSITIONS, CallReport, Phase, ServiceReport
from ..model import Lamp
from .xmlsafe import local_name, safe_root

__all__ = [
    "LineActivity",
    "PresenceInfo",
    "PidfError",
    "parse_pidf",
    "parse_presence",
    "read_presence",
    "busiest",
    "buddy_presence",
    "classify",
    "PresenceTranslator",
    "LAMP_PIDF",
    "lamp_pidf",
    "MAX_PIDF_BYTES",
]

# A presence document for one line is a few hundred bytes; anything this large is not one.
MAX_PIDF_BYTES = 64 * 1024
# A user with this many devices (tuples) is not a phone line either.
MAX_TUPLES = 64


class LineActivity(str, Enum):
    """What a watched device is doing, as far as presence can tell."""

    IDLE = "idle"
    RINGING = "ringing"
    BUSY = "busy"  # on the phone (connected; presence cannot tell dialing from talking)
    HELD = "held"
    OFFLINE = "offline"
    UNKNOWN = "unknown"  # the server says it no longer knows (a NOTIFY without a body)


# Which activity wins when a merged document describes several devices of one line: the
# contract's lamp priority (ringing > busy > held > outgoing > idle > offline > unknown).
_PRIORITY = {LineActivity.RINGING: 6, LineActivity.BUSY: 5, LineActivity.HELD: 4,
             LineActivity.IDLE: 2, LineActivity.OFFLINE: 1, LineActivity.UNKNOWN: 0}


def busiest(activities: Iterable[LineActivity | None]) -> LineActivity | None:
    """The activity the lamp shows when several devices report (None where none says)."""
    known = [a for a in activities if a is not None]
    return max(known, key=_PRIORITY.__getitem__) if known else None


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


_local = local_name


def _text(el: Element | None) -> str:
    return " ".join((el.text or "").split()) if el is not None else ""


def _parse_root(body: bytes | str) -> Element:
    return safe_root(body, MAX_PIDF_BYTES, "presence", "a presence document", PidfError)


def _basic(el: Element) -> bool | None:
    value = _text(el).lower()
    return True if value == "open" else False if value == "closed" else None


def _tuple_view(tup: Element) -> PresenceInfo:
    basic: bool | None = None
    note = ""
    activities: set[str] = set()
    for el in tup.iter():
        name = _local(el.tag)
        if name == "basic" and basic is None:
            basic = _basic(el)
        elif name == "note" and not note:
            note = _text(el)
        elif name == "activities":
            activities.update(_local(a.tag) for a in el if _local(a.tag))
    return PresenceInfo(basic, note[:256], frozenset(activities - {"unknown"}))


def _person_view(person: Element) -> PresenceInfo:
    note = ""
    activities: set[str] = set()
    for el in person.iter():
        name = _local(el.tag)
        if name == "activities":
            activities.update(_local(a.tag) for a in el if _local(a.tag))
        elif name == "note" and not note:
            note = _text(el)
    return PresenceInfo(None, note[:256], frozenset(activities - {"unknown"}))


def _views(root: Element) -> tuple[list[PresenceInfo], list[PresenceInfo], str]:
    tuples, persons, note = [], [], ""
    for child in root:
        name = _local(child.tag)
        if name == "note" and not note:
            note = _text(child)[:256]
        elif name == "tuple":
            tuples.append(_tuple_view(child))
        elif name == "person":
            persons.append(_person_view(child))
        if len(tuples) + len(persons) > MAX_TUPLES:
            raise PidfError(f"more than {MAX_TUPLES} tuples/persons: not one line's presence")
    return tuples, persons, note


def parse_pidf(body: bytes | str) -> PresenceInfo:
    """Parse a PIDF body into one summary (first basic state, the document's first note, all
    RPID activities). Raises :class:`PidfError` for anything hostile or malformed."""
    tuples, persons, note = _views(_parse_root(body))
    basic = next((t.basic for t in tuples if t.basic is not None), None)
    note = note or next((p.note for p in persons if p.note), "") or next(
        (t.note for t in tuples if t.note), "")
    activities: frozenset[str] = frozenset().union(*(v.activities for v in tuples + persons))
    return PresenceInfo(basic, note, activities)


def parse_presence(body: bytes | str) -> tuple[PresenceInfo, ...]:
    """One view per device described by a PIDF body, for :func:`busiest`.

    A document with one tuple (Asterisk, FreeSWITCH, one publishing phone) is one view: the
    tuple's basic state with the document's note (else the person's, else the tuple's) and
    every RPID activity. A merged document (Kamailio/OpenSIPS: one tuple per publication,
    each with its own note; the persons copied alongside) gives a view per tuple, plus one
    per person that says something (persons cannot be tied to a tuple reliably, and a person
    ``on-the-phone`` is a device on the phone). Raises :class:`PidfError`.
    """
    tuples, persons, note = _views(_parse_root(body))
    if len(tuples) <= 1:
        return (parse_pidf(body),)
    views = [PresenceInfo(t.basic, t.note or "", t.activities) for t in tuples]
    views += [p for p in persons if p.note or p.activities]
    if note:
        views.append(PresenceInfo(None, note))
    return tuple(views)


def buddy_presence(online: bool | None, note: str = "", *, busy: bool = False,
                   away: bool = False) -> PresenceInfo:
    """What pjsua2 parsed (``presStatus.status``/``note``/``activity``) as a PresenceInfo."""
    acts = {"busy"} if busy else {"away"} if away else set()
    return PresenceInfo(online, " ".join((note or "").split())[:256], frozenset(acts))


# Notes by what they mean, lower case: Asterisk's (res/res_pjsip/presence_xml.c: Ready,
# Ringing, On the phone, On hold, Unavailable), then Kamailio/OpenSIPS publishers' and
# FreeSWITCH's (mod_sofia: Available, Ring, Talk, On The Phone, Hold, Unregistered) wording.
_NOTES: dict[str, LineActivity] = {}
for _activity, _words in {
    LineActivity.IDLE: ("ready", "available", "idle", "online", "open", "not in use"),
    LineActivity.RINGING: ("ringing", "early", "alerting", "ring", "ringing (early)"),
    LineActivity.BUSY: ("on the phone", "on-the-phone", "busy", "talking", "talk", "in use",
                        "inuse", "in a call", "confirmed", "on call", "dialing", "calling"),
    LineActivity.HELD: ("on hold", "onhold", "on-hold", "hold", "held"),
    LineActivity.OFFLINE: ("unavailable", "offline", "not online", "closed", "unreachable",
                           "not registered", "unregistered"),
}.items():
    for _w in _words:
        _NOTES[_w] = _activity


def classify(info: PresenceInfo) -> LineActivity | None:
    """What one device is doing; None when the document says nothing usable.

    A note we know decides, whatever the basic state: Asterisk before 13.18 (2017) wrote
    ``closed`` for Ringing, On the phone and On hold alike, later ones write ``open`` for
    those and ``closed`` only with Unavailable, so only the note tells them apart. Without a
    known note, RPID ``on-the-phone``/``busy`` means on the phone (FreeSWITCH, Kamailio
    publishers); then basic open means reachable and idle (a free-text status such as "Lunch"
    included), closed means offline.
    """
    by_note = _NOTES.get(info.note.strip().lower().rstrip("."))
    if by_note is not None:
        return by_note
    if info.activities & {"on-the-phone", "busy"}:
        return LineActivity.BUSY
    if info.basic is True:
        return LineActivity.IDLE
    if info.basic is False:
        return LineActivity.OFFLINE
    return None


def read_presence(body: bytes | str | None) -> LineActivity | None:
    """What a presence NOTIFY body says about the line (see the module docstring).

    Empty or missing body: :attr:`LineActivity.UNKNOWN` (RFC 6665/3856: the server has no
    state to give, e.g. Kamailio after the publication expired). Raises :class:`PidfError`
    for a body that is hostile or not PIDF; None for a document that says nothing usable.
    """
    if body is None or not (body.strip() if isinstance(body, str) else body.strip()):
        return LineActivity.UNKNOWN
    return busiest(classify(v) for v in parse_presence(body))


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
        if activity is LineActivity.UNKNOWN:
            # The server no longer knows the line: the caller turns the device unknown
            # (LineTracker.connection_lost(conn)), which forgets its calls; so do we.
            self._call.pop(device, None)
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


# Gateway lamp -> (basic open, note, RPID activity or None) for desk phones: what Asterisk
# (res/res_pjsip/presence_xml.c, since 13.18) sends for the matching extension state, so a
# phone set up for Asterisk BLF reads ours the same way. Outgoing is Asterisk's INUSE. The
# unknown lamp has no entry: the notifier sends no body for it (no state known), never a
# passing "Unavailable".
LAMP_PIDF: dict[Lamp, tuple[bool, str, str | None]] = {
    Lamp.IDLE: (True, "Ready", None),
    Lamp.RINGING: (True, "Ringing", "on-the-phone"),
    Lamp.BUSY: (True, "On the phone", "on-the-phone"),
    Lamp.OUTGOING: (True, "On the phone", "on-the-phone"),
    Lamp.HELD: (True, "On hold", "on-the-phone"),
    Lamp.OFFLINE: (False, "Unavailable", None),
}


def _xml_text(text: str) -> str:
    # ast_sip_sanitize_xml: the five XML specials and line breaks as character references.
    return (escape(text, {'"': "&quot;", "'": "&apos;", "\r": "&#13;", "\n": "&#10;"}))


def lamp_pidf(entity: str, lamp: Lamp | str, tuple_id: str = "blf",
              contact: str | None = None) -> str:
    """The PIDF body a desk phone gets for `lamp`, laid out as Asterisk's generator writes it
    (pjproject's XML printer: one space of indent per level, ``<x />`` for empty elements,
    the eyebeam ``dm:person`` supplement). An unknown lamp value counts as offline here;
    callers send no body at all for :attr:`Lamp.UNKNOWN`."""
    try:
        lamp = Lamp(lamp)
    except ValueError:
        lamp = Lamp.OFFLINE
    basic, note, activity = LAMP_PIDF.get(lamp, LAMP_PIDF[Lamp.OFFLINE])
    # The extension itself, as Asterisk names the tuple (digits included, although xs:ID
    # wants a letter first: phones read Asterisk's this way).
    safe_id = "".join(ch if ch.isalnum() or ch in "-_.*#+" else "_" for ch in tuple_id) or "blf"
    if activity:
        person = (" <dm:person>\n  <rpid:activities>\n"
                  f"   <rpid:{activity} />\n  </rpid:activities>\n </dm:person>\n")
    else:
        person = " <dm:person />\n"
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<presence entity="{_xml_text(entity)}" xmlns="urn:ietf:params:xml:ns:pidf" '
            'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
            'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid">\n'
            f" <note>{note}</note>\n"
            f' <tuple id="{safe_id}">\n'
            "  <status>\n"
            f"   <basic>{'open' if basic else 'closed'}</basic>\n"
            "  </status>\n"
            f'  <contact priority="1">{_xml_text(contact or entity)}</contact>\n'
            " </tuple>\n" + person + "</presence>\n")
