"""Presence and dialog bodies as real servers write them, read the way a user expects.

The Asterisk bodies are written out byte for byte as Asterisk builds them:
res/res_pjsip_pidf_body_generator.c (note, one tuple named after the extension, contact
priority 1, basic open for NOTIFY_OPEN and NOTIFY_INUSE since 13.18; only NOTIFY_OPEN
before), res/res_pjsip_pidf_eyebeam_body_supplement.c (``dm:person`` with the RPID activity,
namespaces appended to the root), the state table of res/res_pjsip/presence_xml.c, printed by
pjproject's pj_xml_print (prolog, one space of indent per level, ``<x />`` for empty nodes,
a final newline).
"""

from __future__ import annotations

import pytest

pytest.importorskip("defusedxml", reason="defusedxml is needed to parse XML bodies safely")

from gateway.calls import Phase  # noqa: E402
from gateway.sip.dialoginfo import (  # noqa: E402
    DialogInfoError,
    dialog_phase,
    parse_dialog_info,
    render_dialog_info,
)
from gateway.sip.presence import (  # noqa: E402
    LineActivity,
    PidfError,
    busiest,
    lamp_pidf,
    parse_presence,
    read_presence,
)

# extension state -> (note, pidfstate, basic open since 13.18, basic open before 13.18)
ASTERISK_STATES = {
    "NOT_INUSE": ("Ready", "--", True, True),
    "RINGING": ("Ringing", "on-the-phone", True, False),
    "INUSE": ("On the phone", "on-the-phone", True, False),
    "BUSY": ("On the phone", "on-the-phone", True, False),
    "ONHOLD": ("On hold", "on-the-phone", True, False),
    "UNAVAILABLE": ("Unavailable", "--", False, False),
}


def asterisk_pidf(state: str, *, legacy: bool = False, exten: str = "201",
                  entity: str = "sip:201@192.0.2.10:5060",
                  contact: str = "sip:blf-gateway@192.0.2.20:5070") -> bytes:
    note, pidfstate, open_now, open_before = ASTERISK_STATES[state]
    basic = "open" if (open_before if legacy else open_now) else "closed"
    if pidfstate[0] != "-":
        person = (" <dm:person>\n  <rpid:activities>\n   <rpid:" + pidfstate + " />\n"
                  "  </rpid:activities>\n </dm:person>\n")
    else:
        person = " <dm:person />\n"
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<presence entity="{entity}" xmlns="urn:ietf:params:xml:ns:pidf" '
            'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
            'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid">\n'
            f" <note>{note}</note>\n"
            f' <tuple id="{exten}">\n'
            "  <status>\n"
            f"   <basic>{basic}</basic>\n"
            "  </status>\n"
            f'  <contact priority="1">{contact}</contact>\n'
            " </tuple>\n" + person + "</presence>\n").encode()


def test_the_asterisk_body_as_written_on_the_wire():
    # One body spelled out in full, so the helper above cannot drift from the real thing.
    assert asterisk_pidf("INUSE", legacy=True) == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<presence entity="sip:201@192.0.2.10:5060" xmlns="urn:ietf:params:xml:ns:pidf" '
        b'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        b'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid">\n'
        b" <note>On the phone</note>\n"
        b' <tuple id="201">\n'
        b"  <status>\n"
        b"   <basic>closed</basic>\n"
        b"  </status>\n"
        b'  <contact priority="1">sip:blf-gateway@192.0.2.20:5070</contact>\n'
        b" </tuple>\n"
        b" <dm:person>\n"
        b"  <rpid:activities>\n"
        b"   <rpid:on-the-phone />\n"
        b"  </rpid:activities>\n"
        b" </dm:person>\n"
        b"</presence>\n")


EXPECTED = {
    "NOT_INUSE": LineActivity.IDLE,
    "RINGING": LineActivity.RINGING,
    "INUSE": LineActivity.BUSY,
    "BUSY": LineActivity.BUSY,
    "ONHOLD": LineActivity.HELD,
    "UNAVAILABLE": LineActivity.OFFLINE,
}


@pytest.mark.parametrize("legacy", [False, True], ids=["asterisk>=13.18", "asterisk<13.18"])
@pytest.mark.parametrize("state", list(ASTERISK_STATES))
def test_every_asterisk_state_reads_as_the_lamp_it_means(state, legacy):
    # Old Asterisk: ringing/busy/held are all `closed`; the note decides, never "offline".
    assert read_presence(asterisk_pidf(state, legacy=legacy)) is EXPECTED[state]


def test_our_desk_phone_body_is_asterisks_byte_for_byte():
    # A phone configured for Asterisk BLF gets exactly what Asterisk would send it.
    for lamp, state in (("idle", "NOT_INUSE"), ("ringing", "RINGING"), ("busy", "INUSE"),
                        ("held", "ONHOLD"), ("offline", "UNAVAILABLE")):
        ours = lamp_pidf("sip:201@192.0.2.10:5060", lamp, "201",
                         contact="sip:blf-gateway@192.0.2.20:5070")
        assert ours.encode() == asterisk_pidf(state), lamp


# ------------------------------------------------------------ Kamailio / OpenSIPS merged


def kamailio(*tuples: tuple[str, str, str | None, str | None]) -> str:
    """A merged document as presence_xml aggregates it: the first publication's root, then
    each publication's tuple and person, newest first. (id, basic, note, activity)."""
    parts = ['<?xml version="1.0"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" '
             'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
             'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@example.com">']
    for tid, basic, note, activity in tuples:
        note_xml = f"<note>{note}</note>" if note else ""
        parts.append(f'  <tuple id="{tid}">\n    <status><basic>{basic}</basic></status>\n'
                     f"    {note_xml}\n  </tuple>")
        acts = f"<rpid:{activity}/>" if activity else ""
        parts.append(f'  <dm:person id="p-{tid}"><rpid:activities>{acts}</rpid:activities>'
                     "</dm:person>")
    parts.append("</presence>")
    return "\n".join(parts)


def test_merged_document_busiest_device_wins():
    # Desk phone on the phone, then the softphone refreshes its "Available" (newest first):
    # the line is busy, not idle.
    body = kamailio(("soft", "open", "Available", None), ("desk", "open", "On the phone", None))
    assert len(parse_presence(body)) >= 2
    assert read_presence(body) is LineActivity.BUSY


def test_merged_document_rpid_without_note_is_busy():
    body = kamailio(("soft", "open", None, None), ("desk", "open", None, "on-the-phone"))
    assert read_presence(body) is LineActivity.BUSY


def test_one_device_gone_while_another_is_available_is_idle_not_offline():
    body = kamailio(("desk", "closed", None, None), ("soft", "open", None, None))
    assert read_presence(body) is LineActivity.IDLE


def test_merged_ringing_beats_busy_and_held():
    body = kamailio(("a", "open", "On hold", None), ("b", "open", "Ringing", None),
                    ("c", "open", "On the phone", None))
    assert read_presence(body) is LineActivity.RINGING


def test_busiest_follows_the_lamp_priority():
    order = [LineActivity.RINGING, LineActivity.BUSY, LineActivity.HELD, LineActivity.IDLE,
             LineActivity.OFFLINE, LineActivity.UNKNOWN]
    for i, a in enumerate(order):
        assert busiest([None, *order[i:]]) is a
    assert busiest([None]) is None


# ---------------------------------------------------------------- FreeSWITCH, RPID only


FREESWITCH = """<?xml version="1.0" encoding="ISO-8859-1"?>
<presence xmlns='urn:ietf:params:xml:ns:pidf' xmlns:dm='urn:ietf:params:xml:ns:pidf:data-model' xmlns:rpid='urn:ietf:params:xml:ns:pidf:rpid' xmlns:c='urn:ietf:params:xml:ns:pidf:cipid' entity='sip:1000@192.0.2.30'>
<tuple id='t6a5ed77e'>
<status>
<basic>open</basic>
</status>
</tuple>
<dm:person id='p06360c4a'>
<rpid:activities>{activity}</rpid:activities>
<dm:note>{note}</dm:note>
</dm:person>
</presence>"""


@pytest.mark.parametrize(("note", "activity", "expected"), [
    ("Available", "", LineActivity.IDLE),
    ("On The Phone", "<rpid:on-the-phone/>", LineActivity.BUSY),
    ("Talk", "<rpid:on-the-phone/>", LineActivity.BUSY),
    ("Ring", "<rpid:on-the-phone/>", LineActivity.RINGING),
    ("Hold", "<rpid:on-the-phone/>", LineActivity.HELD),
    ("CS_EXECUTE", "<rpid:on-the-phone/>", LineActivity.BUSY),  # unknown note: RPID says
    ("Unregistered", "<rpid:away/>", LineActivity.OFFLINE),
])
def test_freeswitch_notes_and_rpid(note, activity, expected):
    assert read_presence(FREESWITCH.format(note=note, activity=activity)) is expected


def test_rpid_on_the_phone_without_a_note_is_busy():
    body = ('<presence xmlns="urn:ietf:params:xml:ns:pidf" '
            'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
            'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:201@pbx">'
            '<tuple id="a"><status><basic>open</basic></status></tuple>'
            "<dm:person><rpid:activities><rpid:on-the-phone/></rpid:activities></dm:person>"
            "</presence>")
    assert read_presence(body) is LineActivity.BUSY


@pytest.mark.parametrize("body", [None, b"", "", "\r\n"])
def test_a_notify_without_body_means_unknown(body):
    # Kamailio after the publication expired: not the old lamp, not offline.
    assert read_presence(body) is LineActivity.UNKNOWN


def test_too_many_tuples_is_refused():
    body = kamailio(*[(f"t{i}", "open", None, None) for i in range(100)])
    with pytest.raises(PidfError):
        read_presence(body)


# ---------------------------------------------------------------- dialog-info (RFC 4235)


def asterisk_dialog(version: int, state: str, *, early: bool = False,
                    hold: bool = False) -> str:
    """res_pjsip_dialog_info_body_generator.c without a ringing channel found."""
    entity = "sip:201@192.0.2.10:5060"
    direction = ' direction="recipient"' if early else ""
    local = ""
    if hold:
        local = (f'  <local>\n   <target uri="{entity}">\n'
                 '    <param pname="+sip.rendering" pvalue="no" />\n   </target>\n'
                 "  </local>\n")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" '
            f'state="full" entity="{entity}">\n'
            f' <dialog id="201"{direction}>\n  <state>{state}</state>\n{local} </dialog>\n'
            "</dialog-info>\n")


@pytest.mark.parametrize(("body", "phase"), [
    (asterisk_dialog(0, "terminated"), Phase.ENDED),
    (asterisk_dialog(1, "early", early=True), Phase.RINGING),
    (asterisk_dialog(2, "confirmed"), Phase.CONNECTED),
    (asterisk_dialog(3, "confirmed", hold=True), Phase.HELD),
])
def test_asterisk_dialog_bodies(body, phase):
    info = parse_dialog_info(body)
    assert info.full and info.entity == "sip:201@192.0.2.10:5060"
    assert [dialog_phase(d) for d in info.dialogs] == [phase]


def test_kamailio_dialog_with_identifiers_and_remote():
    body = ('<?xml version="1.0"?>\n<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
            'version="7" state="partial" entity="sip:201@example.com">'
            '<dialog id="a1" call-id="abc@host" local-tag="lt" remote-tag="rt" '
            'direction="initiator"><state>proceeding</state><remote>'
            '<identity display="Bob">sip:0301234@example.com</identity></remote></dialog>'
            "</dialog-info>")
    info = parse_dialog_info(body)
    (d,) = info.dialogs
    assert not info.full and info.version == 7
    assert (d.call_id, d.local_tag, d.remote_tag) == ("abc@host", "lt", "rt")
    assert d.remote_uri == "sip:0301234@example.com" and d.remote_display == "Bob"
    assert dialog_phase(d) is Phase.DIALING


HOSTILE = [
    '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
    '<dialog-info version="1"><dialog id="x"><state>&b;</state></dialog></dialog-info>',
    '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    '<dialog-info version="1"><dialog id="x"><state>&x;</state></dialog></dialog-info>',
    '<dialog-info version="x"/>',
    '<dialog-info version="1"><dialog id="x"><state>dancing</state></dialog></dialog-info>',
    "<dialog-info version='1'>" + "<dialog id='x'><state>early</state></dialog>" * 100
    + "</dialog-info>",
    "<presence/>",
    "x" * 70000,
]


@pytest.mark.parametrize("body", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_dialog_bodies_are_refused(body):
    with pytest.raises(DialogInfoError):
        parse_dialog_info(body)


ENTITY = "sip:201@gw.example:5070"


def test_rendered_states_read_back_as_the_lamp():
    cases = [
        ("idle", [], [Phase.ENDED]),
        ("ringing", [{"id": "c1", "direction": "in", "state": "ringing", "remote": "0301",
                      "remote_name": "Bob"}], [Phase.RINGING]),
        ("outgoing", [{"id": "c2", "direction": "out", "state": "dialing", "remote": None,
                       "remote_name": None}], [Phase.DIALING]),
        ("busy", [{"id": "c3", "direction": "in", "state": "connected", "remote": None,
                   "remote_name": None}], [Phase.CONNECTED]),
        ("held", [{"id": "c4", "direction": "out", "state": "held", "remote": None,
                   "remote_name": None}], [Phase.HELD]),
        # Lamp only (no calls right): one dialog standing for the lamp.
        ("ringing", [], [Phase.RINGING]),
        ("held", [], [Phase.HELD]),
        ("offline", [], [Phase.ENDED]),
    ]
    for version, (lamp, calls, phases) in enumerate(cases):
        info = parse_dialog_info(render_dialog_info(ENTITY, version, lamp, calls))
        assert info.version == version and info.full and info.entity == ENTITY
        assert [dialog_phase(d) for d in info.dialogs] == phases, lamp


def test_remote_identity_only_where_the_watcher_may_see_it():
    seen = render_dialog_info(ENTITY, 0, "ringing", [
        {"id": "c1", "direction": "in", "state": "ringing", "remote": "0301234",
         "remote_name": "Bob"}])
    hidden = render_dialog_info(ENTITY, 0, "ringing", [
        {"id": "c1", "direction": "in", "state": "ringing", "remote": None,
         "remote_name": None}])
    (d,) = parse_dialog_info(seen).dialogs
    assert d.remote_uri == "sip:0301234@gw.example:5070" and d.remote_display == "Bob"
    assert d.direction == "recipient"
    assert "0301234" not in hidden and "Bob" not in hidden
    assert parse_dialog_info(hidden).dialogs[0].remote_uri is None


def test_rendering_escapes_hostile_names():
    body = render_dialog_info(ENTITY, 0, "busy", [
        {"id": '"><x/>', "direction": "in", "state": "connected", "remote": "12<script>",
         "remote_name": '</identity><evil a="'}])
    (d,) = parse_dialog_info(body).dialogs
    assert d.remote_display == '</identity><evil a="' and d.id == '"><x/>'
    assert "<script>" not in body
