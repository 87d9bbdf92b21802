"""Pure presence: PIDF parsing (also hostile input), classification, translation to reports."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("defusedxml", reason="defusedxml is needed to parse PIDF safely")

from gateway.calls import CallReport, LineTracker, Phase, ServiceReport  # noqa: E402
from gateway.model import Lamp  # noqa: E402
from gateway.panels.lamps import device_lamp  # noqa: E402
from gateway.sip.presence import (  # noqa: E402
    LineActivity,
    PidfError,
    PresenceInfo,
    PresenceTranslator,
    buddy_presence,
    classify,
    lamp_pidf,
    parse_pidf,
)

ASTERISK = """<?xml version="1.0" encoding="UTF-8"?>
<presence entity="sip:201@pbx" xmlns="urn:ietf:params:xml:ns:pidf"
 xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid">
 <note>{note}</note>
 <tuple id="201"><status><basic>{basic}</basic></status>
  <contact priority="1">sip:201@pbx</contact></tuple>
 {person}
</presence>"""


def asterisk(note: str, basic: str = "open", activity: str | None = None) -> str:
    person = (f"<dm:person><rpid:activities><rpid:{activity}/></rpid:activities></dm:person>"
              if activity else "")
    return ASTERISK.format(note=note, basic=basic, person=person)


@pytest.mark.parametrize(("note", "basic", "activity", "expected"), [
    ("Ready", "open", None, LineActivity.IDLE),
    ("Ringing", "open", "busy", LineActivity.RINGING),
    ("On the phone", "open", "busy", LineActivity.BUSY),
    ("On hold", "open", "busy", LineActivity.HELD),
    ("Unavailable", "closed", "away", LineActivity.OFFLINE),
    ("on THE phone", "open", None, LineActivity.BUSY),  # case variants
    ("  ringing ", "open", None, LineActivity.RINGING),
    ("Available", "open", None, LineActivity.IDLE),  # Kamailio-style
    ("Busy", "open", None, LineActivity.BUSY),
    ("Talking", "open", None, LineActivity.BUSY),
    ("Offline", "closed", None, LineActivity.OFFLINE),
    ("Lunch", "open", None, LineActivity.IDLE),  # free text: open means reachable
    ("Lunch", "open", "on-the-phone", LineActivity.BUSY),
    # Asterisk before 13.18 wrote closed for every state but Ready: the note decides.
    ("On the phone", "closed", None, LineActivity.BUSY),
    ("Ringing", "closed", None, LineActivity.RINGING),
    ("On hold", "closed", None, LineActivity.HELD),
    ("Lunch", "closed", None, LineActivity.OFFLINE),  # unknown note: closed is offline
])
def test_asterisk_and_kamailio_notes(note, basic, activity, expected):
    assert classify(parse_pidf(asterisk(note, basic, activity))) is expected


def test_notes_in_tuple_or_person_are_found():
    tuple_note = ('<presence xmlns="urn:ietf:params:xml:ns:pidf"><tuple id="a"><status>'
                  "<basic>open</basic></status><note>On hold</note></tuple></presence>")
    assert parse_pidf(tuple_note).note == "On hold"
    person_note = ('<presence xmlns="urn:ietf:params:xml:ns:pidf" '
                   'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"><tuple id="a"><status>'
                   "<basic>open</basic></status></tuple><dm:person><dm:note>Ringing</dm:note>"
                   "</dm:person></presence>")
    assert classify(parse_pidf(person_note)) is LineActivity.RINGING


def test_a_document_without_state_says_nothing():
    assert classify(parse_pidf('<presence xmlns="urn:ietf:params:xml:ns:pidf"/>')) is None


def test_buddy_status_from_pjsua2():
    assert classify(buddy_presence(True, "On the phone", busy=True)) is LineActivity.BUSY
    assert classify(buddy_presence(False, "")) is LineActivity.OFFLINE
    assert classify(buddy_presence(None, "")) is None
    assert classify(buddy_presence(True, "whatever", busy=True)) is LineActivity.BUSY


BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<presence xmlns="urn:ietf:params:xml:ns:pidf"><note>&lol3;</note></presence>"""

HOSTILE = [
    BOMB,
    '<?xml version="1.0"?><!DOCTYPE p SYSTEM "http://127.0.0.1:9/x.dtd"><presence/>',
    '<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    '<presence><note>&x;</note></presence>',
    "this is <not xml",
    "",
    "<presence>" * 100000,
    "<notpresence/>",
    b"\xff\xfe\x00garbage",
    "<presence>" + "x" * 70000 + "</presence>",
]


@pytest.mark.parametrize("body", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_bodies_raise_pidf_error_only(body):
    started = time.monotonic()
    with pytest.raises(PidfError):
        parse_pidf(body)
    # Milliseconds when refused up front; an expanded bomb would take minutes and gigabytes
    # (the bound leaves a loaded machine its slack).
    assert time.monotonic() - started < 10


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_arbitrary_input_never_escapes_as_anything_but_pidf_error(body):
    try:
        info = parse_pidf(body)
    except PidfError:
        return
    assert isinstance(info, PresenceInfo)


# ---------------------------------------------------------------- translation to the core


def run(activities, device="201"):
    """Feed activities through translator + LineTracker; the lamps a user would see."""
    tr = PresenceTranslator(start=1)
    tracker = LineTracker([device])
    lamps, reports = [], []
    now = 1000.0
    for a in activities:
        for r in tr.update(device, a):
            reports.append(r)
            now += 1
            changed = (tracker.service(r, now) if isinstance(r, ServiceReport)
                       else tracker.call(r, now))
            for stt in changed:
                lamp = device_lamp(stt)
                if not lamps or lamps[-1] is not lamp:
                    lamps.append(lamp)
    return lamps, reports, tracker


A = LineActivity


def test_ready_ringing_on_the_phone_ready_is_one_call():
    lamps, reports, tracker = run([A.IDLE, A.RINGING, A.BUSY, A.HELD, A.BUSY, A.IDLE])
    assert lamps == [Lamp.IDLE, Lamp.RINGING, Lamp.BUSY, Lamp.HELD, Lamp.BUSY, Lamp.IDLE]
    calls = {r.call for r in reports if isinstance(r, CallReport)}
    assert calls == {"presence-1"}
    assert all(r.conn == "sip:201" for r in reports)
    assert tracker.state("201").calls == ()


def test_moves_the_table_refuses_start_a_new_call_without_passing_idle():
    # on the phone -> ringing (call waiting / a new call): new call, lamp never idle between
    lamps, reports, _ = run([A.BUSY, A.RINGING])
    assert lamps == [Lamp.BUSY, Lamp.RINGING]
    phases = [(r.call, r.phase) for r in reports if isinstance(r, CallReport)]
    assert phases == [("presence-1", Phase.CONNECTED), ("presence-2", Phase.RINGING),
                      ("presence-1", Phase.ENDED)]
    # ringing -> on hold: also refused by the table (an unanswered call cannot be held)
    lamps, reports, tracker = run([A.RINGING, A.HELD])
    assert lamps == [Lamp.RINGING, Lamp.HELD]
    assert [c.state.value for c in tracker.state("201").calls] == ["held"]


def test_ringing_then_answered_keeps_the_call():
    _, reports, tracker = run([A.RINGING, A.BUSY])
    assert {r.call for r in reports if isinstance(r, CallReport)} == {"presence-1"}
    (call,) = tracker.state("201").calls
    assert call.direction.value == "in"


def test_unavailable_is_out_of_service_and_clears_the_call():
    lamps, _, tracker = run([A.BUSY, A.OFFLINE, A.IDLE])
    assert lamps == [Lamp.BUSY, Lamp.OFFLINE, Lamp.IDLE]
    assert tracker.state("201").calls == ()


def test_repeated_state_reports_nothing_new():
    tr = PresenceTranslator(start=1)
    tr.update("201", A.BUSY)
    assert tr.update("201", A.BUSY) == []
    assert tr.update("201", None) == []


def test_reset_after_a_lost_subscription_starts_a_fresh_call():
    tr = PresenceTranslator(start=1)
    tracker = LineTracker(["201"])
    for r in tr.update("201", A.BUSY):
        tracker.call(r, 1.0)
    assert device_lamp(tracker.state("201")) is Lamp.BUSY
    tracker.connection_lost(tr.conn("201"))
    tr.reset("201")
    assert device_lamp(tracker.state("201")) is Lamp.UNKNOWN
    reports = tr.update("201", A.BUSY)
    assert [r.call for r in reports] == ["presence-2"]
    for r in reports:
        tracker.call(r, 2.0)
    assert device_lamp(tracker.state("201")) is Lamp.BUSY


def test_default_ids_do_not_repeat_across_restarts():
    # The translator reads no clock: the SIP source (the I/O layer) seeds it with the time.
    from gateway.sip.source import SipPresenceSource

    def translator() -> PresenceTranslator:
        return SipPresenceSource(None, {}, print, print).translator  # type: ignore[arg-type]

    a = translator().update("201", A.RINGING)[-1].call
    time.sleep(0.002)
    b = translator().update("201", A.RINGING)[-1].call
    assert a != b


# ---------------------------------------------------------------- lamps for desk phones


@pytest.mark.parametrize(("lamp", "basic", "note", "busy"), [
    ("idle", True, "Ready", False),
    ("ringing", True, "Ringing", True),  # Asterisk's RINGING carries on-the-phone too
    ("busy", True, "On the phone", True),
    ("outgoing", True, "On the phone", True),
    ("held", True, "On hold", True),
    ("offline", False, "Unavailable", False),
    ("nonsense", False, "Unavailable", False),
])
def test_lamp_pidf_round_trip(lamp, basic, note, busy):
    info = parse_pidf(lamp_pidf("sip:201@gw:5070", lamp, "201"))
    assert info.basic is basic and info.note == note
    assert ("on-the-phone" in info.activities) is busy
    # What our own reader makes of it is the lamp again (outgoing reads as busy: PIDF has
    # no word for dialing).
    expected = {"idle": LineActivity.IDLE, "ringing": LineActivity.RINGING,
                "busy": LineActivity.BUSY, "outgoing": LineActivity.BUSY,
                "held": LineActivity.HELD}.get(lamp, LineActivity.OFFLINE)
    assert classify(info) is expected


def test_lamp_pidf_escapes_hostile_names():
    body = lamp_pidf('sip:a"<&>@gw', "idle", '1 "><x/>')
    info = parse_pidf(body)
    assert info.note == "Ready"
    assert classify(info) is LineActivity.IDLE


def test_endpoint_without_pjsua2_says_how_to_install_it(monkeypatch):
    import sys

    from gateway.sip.endpoint import SipEndpoint, SipEndpointError

    monkeypatch.setitem(sys.modules, "pjsua2", None)  # import fails as if not installed
    ep = SipEndpoint("127.0.0.1:0")
    with pytest.raises(SipEndpointError, match="pip install pjsua2-python"):
        ep.start()
    ep.stop()  # nothing started: a no-op
    assert not ep.running
