"""The transitions table and LineTracker: pure, no loop, time passed in."""

import pytest

from gateway.calls import TOMBSTONE_SECONDS, TRANSITIONS, CallReport, LineTracker, Phase, ServiceReport
from gateway.model import CallState, DeviceStatus, Direction, Lamp
from gateway.panels.lamps import device_lamp


def rep(phase, call="c1", device="201", **kw):
    return CallReport(device=device, call=call, phase=phase, **kw)


def lamp(tracker, device="201"):
    return device_lamp(tracker.state(device))


def test_device_is_unknown_until_the_source_reports_it():
    t = LineTracker(["201"])
    assert lamp(t) is Lamp.UNKNOWN
    assert t.service(ServiceReport("201", True), 0.0)
    assert lamp(t) is Lamp.IDLE


def test_incoming_call_rings_then_is_answered_then_ends():
    t = LineTracker(["201"])
    t.service(ServiceReport("201", True), 0.0)
    [s] = t.call(rep(Phase.RINGING, remote="+4930123", remote_name="Miller"), 1.0)
    assert device_lamp(s) is Lamp.RINGING
    assert s.calls[0].direction is Direction.IN and s.calls[0].remote == "+4930123"
    [s] = t.call(rep(Phase.CONNECTED), 5.0)
    assert device_lamp(s) is Lamp.BUSY and s.calls[0].since == 5.0
    assert s.calls[0].remote_name == "Miller"  # kept from the first report
    [s] = t.call(rep(Phase.ENDED), 9.0)
    assert device_lamp(s) is Lamp.IDLE and s.calls == ()


def test_outgoing_call_is_outgoing_until_answered():
    t = LineTracker(["201"])
    [s] = t.call(rep(Phase.DIALING, remote="0301"), 0.0)
    assert device_lamp(s) is Lamp.OUTGOING and s.calls[0].direction is Direction.OUT
    assert s.status is DeviceStatus.ONLINE  # a call report tells us the line works


def test_hold_and_unhold():
    t = LineTracker(["201"])
    t.call(rep(Phase.RINGING), 0.0)
    t.call(rep(Phase.CONNECTED), 1.0)
    [s] = t.call(rep(Phase.HELD), 2.0)
    assert device_lamp(s) is Lamp.HELD
    [s] = t.call(rep(Phase.CONNECTED), 3.0)
    assert device_lamp(s) is Lamp.BUSY


def test_call_waiting_shows_ringing_over_busy():
    t = LineTracker(["201"])
    t.call(rep(Phase.RINGING, call="a"), 0.0)
    t.call(rep(Phase.CONNECTED, call="a"), 1.0)
    [s] = t.call(rep(Phase.RINGING, call="b"), 2.0)
    assert device_lamp(s) is Lamp.RINGING and len(s.calls) == 2
    [s] = t.call(rep(Phase.ENDED, call="b"), 3.0)  # the waiting call is missed
    assert device_lamp(s) is Lamp.BUSY


def test_held_only_when_every_call_is_held():
    t = LineTracker(["201"])
    for c in ("a", "b"):
        t.call(rep(Phase.CONNECTED, call=c), 0.0)
    [s] = t.call(rep(Phase.HELD, call="a"), 1.0)
    assert device_lamp(s) is Lamp.BUSY
    [s] = t.call(rep(Phase.HELD, call="b"), 2.0)
    assert device_lamp(s) is Lamp.HELD


def test_out_of_order_reports_change_nothing():
    t = LineTracker(["201"])
    t.call(rep(Phase.RINGING), 0.0)
    t.call(rep(Phase.CONNECTED), 1.0)
    before = t.state("201")
    assert t.call(rep(Phase.RINGING), 2.0) == []  # late offering after the answer
    assert t.call(rep(Phase.DIALING), 2.0) == []
    assert t.state("201") == before


def test_impossible_transitions_change_nothing():
    t = LineTracker(["201"])
    t.call(rep(Phase.RINGING), 0.0)
    assert t.call(rep(Phase.HELD), 1.0) == []  # cannot hold an unanswered call
    assert t.call(rep(Phase.ENDED, call="never-seen"), 1.0) == []


def test_ended_call_cannot_come_back_until_forgotten():
    t = LineTracker(["201"])
    t.call(rep(Phase.CONNECTED), 0.0)
    t.call(rep(Phase.ENDED), 1.0)
    assert t.call(rep(Phase.CONNECTED), 2.0) == []  # reordered report of an ended call
    assert t.next_deadline() == 1.0 + TOMBSTONE_SECONDS
    t.tick(1.0 + TOMBSTONE_SECONDS)
    assert t.next_deadline() is None
    assert t.call(rep(Phase.RINGING), 200.0)  # a new call that reuses the id


def test_every_phase_repeats_itself_and_ended_is_never_a_start():
    for phase, allowed in TRANSITIONS.items():
        if phase is not None:
            assert phase in allowed, phase
            assert Phase.ENDED in allowed, phase
    assert Phase.ENDED not in TRANSITIONS[None]


def test_out_of_service_clears_calls_and_shows_offline():
    t = LineTracker(["201"])
    t.call(rep(Phase.CONNECTED), 0.0)
    [s] = t.service(ServiceReport("201", False), 1.0)
    assert device_lamp(s) is Lamp.OFFLINE and s.calls == ()


def test_connection_lost_turns_only_its_devices_unknown():
    t = LineTracker(["201", "202"])
    t.call(rep(Phase.CONNECTED, conn="A"), 0.0)
    t.service(ServiceReport("202", True, conn="B"), 0.0)
    lost = t.connection_lost("A")
    assert [s.device for s in lost] == ["201"]
    assert lamp(t, "201") is Lamp.UNKNOWN and t.state("201").calls == ()
    assert lamp(t, "202") is Lamp.IDLE
    # The source re-sends its state: exact again.
    t.call(rep(Phase.CONNECTED, conn="A2"), 5.0)
    assert lamp(t, "201") is Lamp.BUSY


def test_withheld_number_is_never_stored():
    t = LineTracker(["201"])
    [s] = t.call(rep(Phase.RINGING, remote="0301234", remote_name="X", withheld=True), 0.0)
    assert s.calls[0].remote is None and s.calls[0].remote_name is None


def test_late_caller_id_fills_in():
    t = LineTracker(["201"])
    t.call(rep(Phase.RINGING), 0.0)
    [s] = t.call(rep(Phase.RINGING, remote="0301234"), 0.5)
    assert s.calls[0].remote == "0301234" and s.calls[0].state is CallState.RINGING
    assert s.calls[0].since == 0.0  # same phase: the timer keeps running


def test_unknown_device_reports_are_ignored():
    t = LineTracker(["201"])
    assert t.call(rep(Phase.RINGING, device="999"), 0.0) == []


def test_a_clock_step_moves_the_memory_of_ended_calls_and_the_call_times():
    from gateway.calls import TOMBSTONE_SECONDS

    t = LineTracker(["201"])
    t.service(ServiceReport("201", True), 1000.0)
    t.call(CallReport("201", "old", Phase.RINGING, Direction.IN, "0301"), 1000.0)
    t.call(CallReport("201", "old", Phase.ENDED), 1010.0)
    t.call(CallReport("201", "live", Phase.CONNECTED, Direction.IN, "0302"), 1020.0)
    t.take_ended()
    day = 86400.0
    changed = t.shift(day)  # the wall clock jumps a day forward
    assert [s.calls[0].since for s in changed] == [1020.0 + day]  # the timer keeps counting
    t.tick(1030.0 + day)
    # Two minutes of real time have not passed: a late report of the ended call stays out.
    assert t.call(CallReport("201", "old", Phase.CONNECTED), 1031.0 + day) == []
    t.call(CallReport("201", "live", Phase.ENDED), 1040.0 + day)
    (ended,) = t.take_ended()
    assert ended.end - ended.start == 20.0  # its journal duration is the real one
    t.tick(1010.0 + day + TOMBSTONE_SECONDS + 1)
    assert t.call(CallReport("201", "old", Phase.RINGING, Direction.IN), 2000.0 + day)


def test_clock_steps_are_told_from_time_passing():
    from gateway.clock import ClockSteps

    c = ClockSteps()
    assert c.step(1000.0, 5.0) == 0.0
    assert c.step(1010.0, 15.0) == 0.0  # ten seconds passed on both clocks
    assert c.step(1010.3, 15.1) == 0.0  # slewing: a fraction of a second
    assert c.step(87411.2, 16.0) == pytest.approx(86400.0)  # a day forward
    assert c.step(83811.2, 16.0) == pytest.approx(-3600.0)  # an hour back


def test_the_timer_visits_only_the_devices_whose_ended_calls_are_due(monkeypatch):
    # 10,000 lines, calls ended on three of them: a timer wake looks at those three, not at
    # every line (walking every table took 19 ms per wake at 10,000 lines, up to 20 wakes a
    # second in a busy office).
    from gateway import calls

    t = LineTracker([str(d) for d in range(10_000)])
    for d, at in (("7", 10.0), ("8", 20.0), ("9", 30.0)):
        t.call(rep(Phase.RINGING, device=d), at - 1)
        t.call(rep(Phase.ENDED, device=d), at)
    t.call(rep(Phase.RINGING, call="c2", device="7"), 40.0)
    t.call(rep(Phase.ENDED, call="c2", device="7"), 41.0)  # a second ended call on line 7
    visited: list[str] = []
    real_expire = calls.CallTable.expire

    def expire(self, now):  # noqa: ANN001, ANN202
        visited.append(self.prefix)
        return real_expire(self, now)

    monkeypatch.setattr(calls.CallTable, "expire", expire)
    assert t.next_deadline() == 10.0 + TOMBSTONE_SECONDS
    t.tick(5.0)
    assert visited == []  # nothing due
    t.tick(20.0 + TOMBSTONE_SECONDS)
    assert sorted(visited) == ["7", "8"]
    # Line 7 still remembers its second call; line 9 is next.
    assert t.next_deadline() == 30.0 + TOMBSTONE_SECONDS
    assert t.call(rep(Phase.CONNECTED, call="c2", device="7"), 21.0 + TOMBSTONE_SECONDS) == []
    assert t.call(rep(Phase.RINGING, device="8"), 21.0 + TOMBSTONE_SECONDS)  # forgotten: new
    t.tick(41.0 + TOMBSTONE_SECONDS)
    assert t.next_deadline() is None
    assert t.call(rep(Phase.RINGING, call="c2", device="7"), 42.0 + TOMBSTONE_SECONDS)


def test_expiries_follow_a_clock_step_and_removed_devices():
    t = LineTracker(["201", "202"])
    t.call(rep(Phase.RINGING), 0.0)
    t.call(rep(Phase.ENDED), 1.0)
    t.call(rep(Phase.RINGING, device="202"), 0.0)
    t.call(rep(Phase.ENDED, device="202"), 2.0)
    t.shift(100.0)
    assert t.next_deadline() == 101.0 + TOMBSTONE_SECONDS
    t.remove_device("201")
    t.tick(101.0 + TOMBSTONE_SECONDS)  # the removed line's entry goes without a trace
    assert t.next_deadline() == 102.0 + TOMBSTONE_SECONDS
    t.tick(102.0 + TOMBSTONE_SECONDS)
    assert t.next_deadline() is None


def test_a_call_ended_through_decide_is_queued_too():
    # decide() is the path of every report in the gateway (with provenance).
    t = LineTracker(["201"])
    t.decide(rep(Phase.RINGING), 0.0)
    t.decide(rep(Phase.ENDED), 3.0)
    assert t.next_deadline() == 3.0 + TOMBSTONE_SECONDS
    t.tick(3.0 + TOMBSTONE_SECONDS)
    assert t.next_deadline() is None and t.call(rep(Phase.RINGING), 200.0)
