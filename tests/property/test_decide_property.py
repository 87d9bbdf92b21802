"""Property: the one-pass report path (``decide``) does exactly what judging a report and then
applying it did, for any history of reports.

Provenance needs, for every report, the tracker's verdict and what the report changed. The
tracker gives both in one derivation (:meth:`gateway.calls.LineTracker.decide`,
:meth:`gateway.calls.CallTable.decide`); here two trackers take the same random history
(calls rung, dialled, answered, held, ended, late and out-of-order reports, tombstoned ids,
one call too many, lines out of service, connections lost, tombstones expiring), one the
one-pass way and one by ``judge`` then ``call``/``apply`` (the two-pass way, as the gateway
did it), and must agree on every verdict, every changed state, every record provenance
writes (byte for byte), the ended calls for the journals and the refused calls to log.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.calls import CallReport, CallTable, LineTracker, Phase, ServiceReport
from gateway.model import Direction
from gateway.panels.lamps import device_lamp
from gateway.provenance import apply_report, call_record

DEVICES = ["d1", "d2"]

step_st = st.fixed_dictionaries({
    "kind": st.sampled_from(["call"] * 8 + ["service", "lost", "tick"]),
    "device": st.sampled_from(DEVICES + ["nope"]),
    "call": st.sampled_from(["a", "b", "c", "d"]),
    "phase": st.sampled_from(list(Phase)),
    "direction": st.sampled_from([None, Direction.IN, Direction.OUT]),
    "remote": st.sampled_from([None, "201", "202"]),
    "name": st.sampled_from([None, "Ann"]),
    "withheld": st.booleans(),
    "conn": st.sampled_from(["c1", "c2"]),
    "in_service": st.booleans(),
    "dt": st.sampled_from([0.0, 1.0, 200.0]),
})


def _two_pass_record(tracker: LineTracker, report: CallReport, now: float):
    """The report path as it was: judge, look up the direction before and after, call."""
    verdict = tracker.judge(report)

    def direction_in(state):
        for c in state.calls:
            if c.id == f"{state.device}/{report.call}":
                return c.direction.value
        return None

    before = (direction_in(tracker.state(report.device))
              if report.direction is None and report.phase is Phase.ENDED else None)
    states = tracker.call(report, now)
    after = states[-1] if states else tracker.state(report.device)
    direction = None if report.direction is not None else direction_in(after) or before
    return states, call_record("tapi_bridge", report, verdict, bool(states), device_lamp(after),
                               now, direction)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step_st, min_size=1, max_size=60), st.integers(1, 3))
def test_line_tracker_one_pass_equals_two_passes(steps, max_calls):
    one, two = LineTracker(DEVICES), LineTracker(DEVICES)
    for tracker in (one, two):  # a small bound, so "one call too many" comes up
        for d in DEVICES:
            tracker._tables[d].max_calls = max_calls
    now = 1000.0
    for step in steps:
        now += step["dt"]
        if step["kind"] == "tick":
            one.tick(now)
            two.tick(now)
            continue
        if step["kind"] == "lost":
            assert one.connection_lost(step["conn"]) == two.connection_lost(step["conn"])
            continue
        if step["kind"] == "service":
            report = ServiceReport(step["device"], step["in_service"], step["conn"])
            assert apply_report(one, "tapi_bridge", report, now) == apply_report(
                two, "tapi_bridge", report, now)
            continue
        report = CallReport(step["device"], step["call"], step["phase"], step["direction"],
                            step["remote"], step["name"], withheld=step["withheld"],
                            conn=step["conn"])
        if not one.has(report.device):
            assert apply_report(one, "tapi_bridge", report, now) == ([], None)
            assert two.call(report, now) == []
            continue
        states, record = apply_report(one, "tapi_bridge", report, now)
        states2, record2 = _two_pass_record(two, report, now)
        assert states == states2
        assert record.to_json() == record2.to_json()
        assert record == record2
        assert one.take_ended() == two.take_ended()
        assert one.take_refused() == two.take_refused()
        assert [one.connection_of(d) for d in DEVICES] == [two.connection_of(d) for d in DEVICES]
    assert [one.state(d) for d in DEVICES] == [two.state(d) for d in DEVICES]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step_st, min_size=1, max_size=60), st.integers(1, 3))
def test_call_table_decide_equals_judge_then_apply(steps, max_calls):
    one, two = CallTable("sp:x", max_calls), CallTable("sp:x", max_calls)
    now = 1000.0
    for step in steps:
        now += step["dt"]
        if step["kind"] == "tick":
            one.expire(now)
            two.expire(now)
            continue
        report = CallReport("x", step["call"], step["phase"], step["direction"], step["remote"],
                            step["name"], withheld=step["withheld"])
        verdict, changed = one.decide(report, now)
        assert verdict == two.judge(report)
        assert changed == two.apply(report, now)
        assert one.snapshot() == two.snapshot()
        assert one.take_ended() == two.take_ended()
