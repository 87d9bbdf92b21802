"""The privacy rules of the pure core: a number's visibility follows the report that brought
it, and a bridge line's own number in any form tells the call's direction."""

import json

import pytest

from gateway.calls import CallReport, LineTracker, Phase, ServiceReport
from gateway.journal import entry_of, render_entry
from gateway.model import Call, CallState, DeviceState, DeviceStatus, Direction
from gateway.panels.rights import Rights, render_call
from gateway.store import decode_device, encode_device
from gateway.tapi.bridge import parse_line

INBOUND = Rights(numbers="inbound")
ALL = Rights(numbers="all")
LINES = {"Line 202": ("202", "202"), "L0": ("0", "")}


def track(*reports):
    t = LineTracker(["202"])
    t.service(ServiceReport("202", True), 0.0)
    for i, r in enumerate(reports):
        t.call(r, float(i + 1))
    return t


def rep(phase, direction=None, remote=None, name=None, **kw):
    return CallReport("202", "c", phase, direction, remote, name, **kw)


def the_call(t):
    [c] = t.state("202").calls
    return c


def test_a_number_dialled_during_an_incoming_call_is_outbound_information():
    t = track(rep(Phase.RINGING, Direction.IN, "0301111", "Caller"),
              rep(Phase.CONNECTED, Direction.IN),
              rep(Phase.CONNECTED, Direction.OUT, "0409999"))
    c = the_call(t)
    assert c.direction is Direction.IN and c.remote == "0409999" and c.remote_out
    assert c.remote_name is None  # the old party's name does not stick to the new number
    assert render_call(c, INBOUND)["remote"] is None
    assert render_call(c, ALL)["remote"] == "0409999"
    # It stays outbound information for the rest of the call, and in the journal.
    t.call(rep(Phase.HELD, None, "0409999"), 9.0)
    assert the_call(t).remote_out
    t.call(rep(Phase.ENDED), 10.0)
    [ended] = t.take_ended()
    entry = entry_of(ended, "202", None)
    assert render_entry("1-0", entry, INBOUND)["remote"] is None
    assert render_entry("1-0", entry, ALL)["remote"] == "0409999"
    assert "remote_out" not in render_entry("1-0", entry, ALL)


def test_the_callers_number_reported_again_as_dialled_becomes_outbound_too():
    t = track(rep(Phase.RINGING, Direction.IN, "0301111"),
              rep(Phase.CONNECTED, Direction.OUT, "0301111"))
    assert the_call(t).remote_out and render_call(the_call(t), INBOUND)["remote"] is None


def test_a_new_number_reported_as_inbound_stays_visible_to_inbound_watchers():
    t = track(rep(Phase.RINGING, Direction.IN, "0301111"),
              rep(Phase.CONNECTED, None, "0302222", "New Party"))
    c = the_call(t)
    assert not c.remote_out and render_call(c, INBOUND)["remote"] == "0302222"
    assert c.remote_name == "New Party"


def test_withheld_later_hides_what_was_shown():
    t = track(rep(Phase.RINGING, Direction.IN, "0301111"),
              rep(Phase.CONNECTED, Direction.IN, withheld=True))
    assert the_call(t).remote is None


def test_flag_round_trips_through_the_store_and_old_states_keep_their_bytes():
    plain = Call("202/c", Direction.IN, CallState.CONNECTED, 1.0, "0301111")
    marked = Call("202/c", Direction.IN, CallState.CONNECTED, 1.0, "0409999", remote_out=True)
    for call in (plain, marked):
        state = DeviceState("202", DeviceStatus.ONLINE, (call,))
        assert decode_device("202", encode_device(state)) == state
    # States written before the flag existed decode unchanged and encode to the same bytes.
    old = '{"s":"online","c":[["202/c","in","connected",1.0,"0301111",null,null]]}'
    assert encode_device(decode_device("202", old)) == old


def line(state, caller=None, called=None, **kw):
    msg = {"device": "Line 202", "call": "1", "state": state, "caller": caller, "called": called}
    return parse_line(json.dumps({**msg, **kw}), LINES)


@pytest.mark.parametrize("own", ["202", "+4930555202", "+49 30 555-202", "(030) 555 202",
                                 "004930555202"])
def test_own_number_in_any_form_as_caller_means_outgoing(own):
    r = line("connected", caller=own, called="0301234")
    assert r.direction is Direction.OUT and r.remote == "0301234"
    r = line("onhold", caller="0301234", called=own)
    assert r.direction is Direction.IN and r.remote == "0301234"


def test_exact_own_number_beats_a_longer_number_ending_in_it():
    # An outside number that happens to end in 202, called from line 202 itself.
    r = line("connected", caller="202", called="+49301234202")
    assert r.direction is Direction.OUT and r.remote == "+49301234202"
    r = line("connected", caller="+49301234202", called="202")
    assert r.direction is Direction.IN and r.remote == "+49301234202"


def test_both_numbers_alike_own_say_nothing_about_the_far_party():
    r = line("connected", caller="+4930555202", called="+4940555202")
    assert r.direction is None and r.remote is None


def test_the_lines_own_extension_is_never_the_remote_party():
    assert line("offering", caller="202").remote is None
    assert line("dialing", called="202").remote is None
    assert line("dialing", called="0301234202").remote == "0301234202"  # an outside number


def test_a_line_without_a_number_infers_nothing():
    r = parse_line('{"device": "L0", "call": "1", "state": "connected", "caller": "1", '
                   '"called": "2"}', LINES)
    assert r.direction is None and r.remote == "1"


def test_lamp_provenance_hides_a_transfer_target_from_an_inbound_only_viewer():
    from gateway.provenance import DeviceExplanation, redact

    t = track(rep(Phase.RINGING, Direction.IN, "0301111"),
              rep(Phase.CONNECTED, Direction.OUT, "0409999"))
    e = DeviceExplanation("202", "", "202", "tapi_bridge", "Line 202", "busy", "online",
                          t.state("202").calls, (), 50)
    [shown] = redact(e, lambda kind, ident: "inbound").calls
    assert shown.remote is None and shown.remote_name is None
    [shown] = redact(e, lambda kind, ident: "all").calls
    assert shown.remote == "0409999"


def test_a_name_alone_reported_as_dialled_is_outbound_information_too():
    t = track(rep(Phase.RINGING, Direction.IN),
              rep(Phase.CONNECTED, Direction.OUT, None, "Transfer Target Ltd"))
    c = the_call(t)
    assert c.remote_name == "Transfer Target Ltd" and c.remote_out
    assert render_call(c, INBOUND)["remote_name"] is None


def test_the_end_of_a_call_reporting_its_number_as_dialled_keeps_it_from_the_journal():
    t = track(rep(Phase.RINGING, Direction.IN, "0301111"),
              rep(Phase.ENDED, Direction.OUT, "0301111"))
    [ended] = t.take_ended()
    entry = entry_of(ended, "202", None)
    assert render_entry("1-0", entry, INBOUND)["remote"] is None
    assert render_entry("1-0", entry, ALL)["remote"] == "0301111"
