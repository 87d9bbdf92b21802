"""Lamp provenance, pure: the tracker's verdicts, shown-once as data, the story, redaction."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.calls import TRANSITIONS, CallReport, CallTable, LineTracker, Phase, ServiceReport
from gateway.config import parse_config
from gateway.model import Direction
from gateway.panels.engine import Engine, shown_once
from gateway.provenance import (
    Pending,
    Record,
    apply_report,
    apply_softphone,
    explain_device,
    explain_member,
    explanation_json,
    lose_connection,
    records_text,
    redact,
    story,
)

CONFIG = """
[sources.tapi_bridge]
[sources.ami]
username = "blf"
secret_file = "x"

[[devices]]
id = "201"
name = "Reception 1"
number = "201"
line = "Line 201"
[[devices]]
id = "209"
name = "Reception 2"
number = "209"
source = "ami"
line = "PJSIP/209"

[[clients]]
name = "alice"
first_name = "Alice"
last_name = "Archer"
devices = ["201", "209"]
blf = { devices = "%s", softphone = true }
"""

NUMBER = "+4930123456"
T0 = 1_700_000_000.0


def hms(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


class Office:
    """Two sources and a softphone feeding one engine, with provenance kept like the
    gateway keeps it (records per device and per softphone)."""

    def __init__(self, mode: str = "all") -> None:
        self.cfg = parse_config(CONFIG % mode)
        self.engine = Engine(self.cfg, config_seq=1)
        self.seq = 1
        self.tapi = LineTracker(["201"])
        self.ami = LineTracker(["209"])
        self.softphone = CallTable("sp:alice")
        self.records: dict[str, list[Record]] = {"201": [], "209": []}
        self.sp_records: list[Record] = []

    def report(self, tracker: LineTracker, source: str, report, now: float) -> Record:
        states, rec = apply_report(tracker, source, report, now)
        assert rec is not None
        self.records[report.device].append(rec)
        for s in states:
            self.seq += 1
            self.engine.update_device(s, self.seq)
        return rec

    def lost(self, tracker: LineTracker, source: str, conn: str, now: float) -> None:
        states, recs = lose_connection(tracker, source, conn, now)
        for device, rec in recs:
            self.records[device].append(rec)
        for s in states:
            self.seq += 1
            self.engine.update_device(s, self.seq)

    def sp(self, call: str, phase: Phase, now: float, remote: str | None = NUMBER) -> Record:
        from dataclasses import replace

        changed, rec = apply_softphone(
            self.softphone, CallReport("alice", call, phase, Direction.IN, remote=remote),
            now, conn="127.0.0.1")
        self.sp_records.append(rec)
        if changed:
            self.seq += 1
            st_ = self.engine.client_state("alice")
            self.engine.update_client(replace(st_, logged_in=True,
                                              softphone=self.softphone.snapshot()), self.seq)
        return rec

    def member(self):
        return explain_member(self.engine, "alice", self.records, self.sp_records)

    def device(self, d: str):
        return explain_device(self.engine, d, self.records[d])


def full(kind: str, ident: str) -> str:
    return "all"


def none(kind: str, ident: str) -> str:
    return "none"


def ringing_office() -> Office:
    o = Office()
    o.report(o.tapi, "tapi_bridge", ServiceReport("201", True, conn="tapi#1"), T0)
    o.report(o.ami, "ami", ServiceReport("209", True, conn="ami"), T0)
    o.report(o.tapi, "tapi_bridge", CallReport("201", "0x3f1", Phase.RINGING, remote=NUMBER,
                                               remote_name="Miller Ltd", conn="tapi#1"), T0 + 6)
    o.sp("c1", Phase.RINGING, T0 + 6.8)
    return o


def test_verdicts_say_what_the_tracker_did_and_why():
    o = ringing_office()
    late = o.report(o.tapi, "tapi_bridge",
                    CallReport("201", "0x3f1", Phase.DIALING, conn="tapi#1"), T0 + 7)
    assert (late.outcome, late.changed) == ("out_of_order", False)
    assert late.reason == "dialing while the call is ringing: an incoming call never becomes outgoing"
    same = o.report(o.tapi, "tapi_bridge",
                    CallReport("201", "0x3f1", Phase.RINGING, conn="tapi#1"), T0 + 7.5)
    assert (same.outcome, same.changed) == ("accepted", False)
    answered = o.report(o.tapi, "tapi_bridge",
                        CallReport("201", "0x3f1", Phase.CONNECTED, conn="tapi#1"), T0 + 8)
    assert (answered.outcome, answered.reason, answered.lamp) == ("accepted", "answered", "busy")
    assert answered.direction == "in"  # the call's, where the report does not say
    o.report(o.tapi, "tapi_bridge", CallReport("201", "0x3f1", Phase.ENDED, conn="tapi#1"),
             T0 + 9)
    ghost = o.report(o.tapi, "tapi_bridge",
                     CallReport("201", "0x3f1", Phase.CONNECTED, conn="tapi#1"), T0 + 10)
    assert ghost.outcome == "tombstoned" and "cannot bring it back" in ghost.reason
    assert o.engine.device_view("201").lamp.value == "idle"
    never = o.report(o.tapi, "tapi_bridge", CallReport("201", "zz", Phase.ENDED, conn="tapi#1"),
                     T0 + 11)
    assert never.outcome == "out_of_order" and "never seen" in never.reason


def test_member_story_tells_the_issue_example():
    o = ringing_office()
    lines = story(redact(o.member(), full))
    assert lines[0] == "Member alice (Alice Archer): lamp ringing."
    assert lines[1] == "Fed by blf.devices = all: 201 (ringing), 209 (idle)."
    assert lines[-1] == (
        f"Now: ringing since {hms(T0 + 6)} because the TAPI bridge reported call 0x3f1 "
        f"ringing on 201; the softphone report of the same call (its call c1, ringing since "
        f"{hms(T0 + 6.8)}) was dropped (shown once: the call 0x3f1 on 201; same direction, "
        "same remote number, started 0.8 s apart (within 10 s)).")
    # The history, newest last, across both sources and the softphone.
    history = [line for line in lines if line.startswith("  ")]
    assert [h.split("  ")[2].split(":")[0] for h in history] == [
        "201", "209", "201", "softphone"]
    assert (f"  {hms(T0 + 6)}  201: the TAPI bridge (tapi#1): call 0x3f1 ringing, incoming, "
            f"from {NUMBER} (Miller Ltd): accepted (a new incoming call is alerting). "
            "Lamp ringing.") in lines


def test_softphone_progress_and_blf_modes_are_explained():
    o = ringing_office()
    o.sp("c1", Phase.CONNECTED, T0 + 9)  # answered on the softphone before the line says so
    now = story(redact(o.member(), full))[-1]
    assert now.startswith(f"Now: busy since {hms(T0 + 9)} because the softphone reported the "
                          "call connected, further than the line's ringing on 201")
    cur = Office("current")
    cur.report(cur.tapi, "tapi_bridge", ServiceReport("201", True, conn="tapi#1"), T0)
    lines = story(redact(cur.member(), full))
    assert ("Device 209 does not feed it: blf.devices = current: no device selected, so the "
            "first one feeds the lamp.") in lines


def test_unknown_and_offline_devices_say_why():
    o = ringing_office()
    o.lost(o.tapi, "tapi_bridge", "tapi#1", T0 + 20)
    lines = story(redact(o.device("201"), full))
    assert lines[0] == ('Device 201 "Reception 1" (number 201; source the TAPI bridge, '
                        'line "Line 201"): lamp unknown.')
    assert lines[-1] == (f"Now: unknown since {hms(T0 + 20)} because the TAPI bridge connection "
                         "tapi#1 went away; it stays unknown until the source re-sends its "
                         "state.")
    o.report(o.ami, "ami", ServiceReport("209", False, conn="ami"), T0 + 21)
    assert story(redact(o.device("209"), full))[-1] == (
        f"Now: offline since {hms(T0 + 21)} because Asterisk reported it out of service.")
    fresh = Office()
    assert story(fresh.device("201"))[-1].startswith("Now: unknown: no source has reported")
    # Another gateway process held the connection and died: its janitor says so.
    from gateway.model import DeviceState
    from gateway.provenance import lost_record

    o.records["209"].append(lost_record(
        "janitor", "a1b2c3", T0 + 30, "the gateway process a1b2c3 that held its source "
        "connection is gone: unknown until the source reports it again"))
    o.seq += 1
    o.engine.update_device(DeviceState("209"), o.seq)
    assert story(redact(o.device("209"), full))[-1] == (
        f"Now: unknown since {hms(T0 + 30)}: the gateway process a1b2c3 that held its source "
        "connection is gone: unknown until the source reports it again.")


def test_no_number_reaches_a_viewer_without_the_right():
    o = ringing_office()
    o.report(o.ami, "ami", CallReport("209", "out-1", Phase.DIALING, Direction.OUT,
                                      remote="+4940999888", conn="ami"), T0 + 12)
    for policy in (none, lambda kind, ident: "none"):
        expl = redact(o.member(), policy)
        text = "\n".join(story(expl)) + json.dumps(explanation_json(expl))
        assert NUMBER not in text and "Miller Ltd" not in text and "+4940999888" not in text
        assert "from [number hidden]" in text and "to [number hidden]" in text
    inbound = redact(o.member(), lambda kind, ident: "inbound")
    text = "\n".join(story(inbound)) + json.dumps(explanation_json(inbound))
    assert NUMBER in text and "+4940999888" not in text  # incoming shown, dialled not
    # Per device: a viewer with the right on 201 only.
    mixed = redact(o.member(), lambda kind, ident: "all" if ident == "201" else "none")
    text = "\n".join(story(mixed)) + json.dumps(explanation_json(mixed))
    assert "Miller Ltd" in text and "+4940999888" not in text
    # The softphone's own report is held to the softphone's right.
    assert all(r["remote"] is None for r in explanation_json(mixed)["softphone_records"])


def test_records_survive_the_store_codec_and_bad_entries_are_skipped():
    o = ringing_office()
    rec = o.records["201"][-1]
    assert Record.from_json(rec.to_json()) == rec
    assert Record.from_json("not json") is None
    assert Record.from_json("[1, 2]") is None


def test_record_text_is_compact_json_whatever_the_encoder():
    """Records are written by json's C encoder: the very text json.dumps gives (records
    already in Redis and new ones read alike), quotes, non-ASCII and all."""
    rec = Record(1700000000.12345, "tapi_bridge", "tapi#1", "call", "c1", "ringing", "in",
                 '+49 "30"', "Müller\\GmbH", False, "accepted", "a new incoming call", True,
                 "ringing")
    text = rec.to_json()
    assert text == json.dumps([1700000000.123, *rec[1:14]], separators=(",", ":"),
                              ensure_ascii=False)
    assert Record.from_json(text) == rec._replace(t=1700000000.123)


_text = st.one_of(st.none(), st.text(max_size=12),
                  st.sampled_from(["],[", "x]", "\\", '"', "\n", "Müller", "\u2028"]))
_flag = st.sampled_from([True, False, 0, 1])  # an int is written as a number, not a bool


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(
    st.one_of(st.floats(min_value=0, max_value=4e9, allow_nan=False), st.integers(0, 2**40)),
    st.sampled_from(["tapi_bridge", "ami"]), _text, st.one_of(_text, st.integers()), _text,
    _text, _text, _text, _flag, st.sampled_from(["accepted", "tombstoned"]), _text, _flag,
    _text), max_size=8))
def test_a_batch_of_records_is_the_texts_of_each_one_a_line(rows):
    """The recorder encodes a whole batch at once: each line is exactly the record's own
    text (what json.dumps writes), whatever the fields hold."""
    recs = [Record(t, src, conn or "", "call", call, phase, direction, remote, name, withheld,
                   outcome, reason or "", changed, lamp)
            for t, src, conn, call, phase, direction, remote, name, withheld, outcome, reason,
            changed, lamp in rows]
    assert records_text(recs) == "\n".join(r.to_json() for r in recs)


def test_a_batch_with_many_distinct_words_and_odd_times_is_still_exact():
    recs = [Record(T0 + i / 7, "tapi_bridge", "tapi#1", "call", f"c{i}", "ended", None, None,
                   None, False, "tombstoned", f"call c{i} already ended", False, "idle")
            for i in range(700)]
    assert records_text(recs) == "\n".join(r.to_json() for r in recs)
    for odd in (float("inf"), float("nan")):
        with pytest.raises(ValueError):
            records_text([recs[0]._replace(t=odd)])


def test_pending_records_are_bounded_and_keep_order():
    p = Pending(limit=5, per_key=10)
    recs = [Record(T0 + i, "tapi_bridge", "tapi#1", "call", call=str(i)) for i in range(8)]
    for r in recs[:4]:
        p.add("dev", "201", r)
    for r in recs[4:]:
        p.add("dev", "202", r)
    assert len(p) == 5 and p.dropped == 3
    taken = p.take()
    assert [r.call for r in taken[("dev", "201")]] == ["3"]
    assert [r.call for r in taken[("dev", "202")]] == ["4", "5", "6", "7"]
    p.limit = 10
    p.add("dev", "201", recs[0])
    p.put_back(taken)  # a failed write goes back before what came meanwhile
    assert [r.call for r in p.take()[("dev", "201")]] == ["3", "0"]
    # Per device only as many wait as Redis keeps; those are not counted as lost.
    q = Pending(limit=100, per_key=3)
    for r in recs:
        q.add("dev", "201", r)
    assert [r.call for r in q.take()[("dev", "201")]] == ["5", "6", "7"] and q.dropped == 0


phases = st.sampled_from(list(Phase))
reports = st.lists(st.tuples(st.sampled_from(["a", "b"]), phases), max_size=30)


@settings(max_examples=300, deadline=None)
@given(reports)
def test_judge_agrees_with_apply(seq):
    """Whatever judge() says is refused changes nothing; what it accepts apply() takes."""
    table = CallTable("201")
    for i, (call, phase) in enumerate(seq):
        verdict = table.judge(CallReport("201", call, phase))
        before = dict(table.calls)
        changed = table.apply(CallReport("201", call, phase), float(i))
        if not verdict.accepted:
            assert not changed and table.calls == before
        else:
            assert phase in TRANSITIONS[verdict.phase_from]
            if phase is not (verdict.phase_from or None) and phase is not Phase.ENDED:
                assert changed


def test_shown_once_as_data_matches_the_engine():
    o = ringing_office()
    line = o.engine.device_state("201").calls
    calls, shown_sp, dropped = shown_once(o.engine.client_state("alice").softphone, list(line))
    assert not shown_sp and len(dropped) == 1
    assert dropped[0].line.id == "201/0x3f1" and dropped[0].softphone.id == "sp:alice/c1"
    # The engine shows exactly the one line call.
    assert [c.id for c in o.engine.member("alice").calls] == ["201/0x3f1"]


def test_number_policy_follows_the_rights_of_every_way_out():
    from gateway.panels.rights import number_policy

    cfg = parse_config("""
[sources.tapi_bridge]
[[devices]]
id = "201"
[[devices]]
id = "202"
[[devices]]
id = "203"
[[clients]]
name = "alice"
devices = ["201"]
[[clients]]
name = "bob"
devices = ["202"]
monitor = [ { device = "203", clip = true } ]
[[clients]]
name = "carol"
devices = ["203"]
[[clients]]
name = "admin"
admin = true
[[groups]]
name = "lamps_only"
members = ["alice", "bob"]
rights = { calls = false, numbers = "all" }
[[groups]]
name = "hidden"
members = ["alice", "carol"]
rights = { visible = false, numbers = "all" }
[[groups]]
name = "inbound"
members = ["alice", "admin"]
rights = { numbers = "inbound" }
""")
    bob, carol, admin = (number_policy(cfg, n) for n in ("bob", "carol", "admin"))
    assert bob("device", "202") == "all"          # his own line
    assert bob("device", "203") == "all"          # monitor with clip
    assert bob("device", "201") == "none"         # a lamps-only panel shows no calls
    assert bob("softphone", "alice") == "none"
    assert bob("softphone", "bob") == "all"
    assert carol("device", "201") == "none"       # an invisible panel gives nothing
    assert admin("device", "201") == "inbound" and admin("softphone", "alice") == "inbound"
    assert admin("device", "203") == "none"       # being an admin gives no number right
    assert number_policy(cfg, None)("device", "201") == "none"
    assert number_policy(cfg, None, "all")("device", "201") == "all"
