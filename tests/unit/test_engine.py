"""The BLF engine: lamp merging, BLF modes, softphone feed, shown-once, since, trust."""

import pytest

from gateway.config import parse_config
from gateway.model import Call, CallState, ClientState, DeviceState, DeviceStatus, Direction, Lamp
from gateway.panels.engine import Engine, same_call

CONFIG = """
[sources.tapi_bridge]

[[devices]]
id = "201"
number = "201"
[[devices]]
id = "202"
number = "202"
[[devices]]
id = "203"
number = "203"

[[clients]]
name = "alice"
devices = ["201", "202"]
blf = { devices = "%s", softphone = %s }

[[clients]]
name = "bob"
number = "299"
devices = ["203"]

[[clients]]
name = "nodev"

[[groups]]
name = "team"
members = ["alice", "bob", "nodev"]
"""


def config(mode="all", softphone="true"):
    return parse_config(CONFIG % (mode, softphone))


def call(cid, state, direction=Direction.IN, since=100.0, remote="+4930123456", link=None):
    return Call(id=cid, direction=direction, state=state, since=since, remote=remote, link=link)


def dev(device, *calls, status=DeviceStatus.ONLINE):
    return DeviceState(device, status, tuple(calls))


class Feed:
    """An engine plus a seq counter, like the shared change log."""

    def __init__(self, cfg):
        self.engine = Engine(cfg, config_seq=1)
        self.seq = 1

    def device(self, *args, **kw):
        self.seq += 1
        return self.engine.update_device(dev(*args, **kw), self.seq)

    def client(self, state):
        self.seq += 1
        return self.engine.update_client(state, self.seq)

    def lamp(self, client):
        return self.engine.member(client).lamp


def test_devices_start_unknown_and_member_lamp_merges_them():
    f = Feed(config())
    assert f.lamp("alice") is Lamp.UNKNOWN
    f.device("201")
    assert f.lamp("alice") is Lamp.IDLE  # idle > unknown
    f.device("202", call("c", CallState.CONNECTED))
    assert f.lamp("alice") is Lamp.BUSY


@pytest.mark.parametrize(
    "a,b,expected",
    [
        (CallState.RINGING, CallState.CONNECTED, Lamp.RINGING),
        (CallState.CONNECTED, CallState.HELD, Lamp.BUSY),
        (CallState.HELD, CallState.DIALING, Lamp.HELD),
        (CallState.DIALING, None, Lamp.OUTGOING),
    ],
)
def test_priority_ringing_busy_held_outgoing_idle(a, b, expected):
    f = Feed(config())
    f.device("201", call("x", a))
    f.device("202", *([call("y", b)] if b else []))
    assert f.lamp("alice") is expected


def test_offline_beats_unknown_and_idle_beats_offline():
    f = Feed(config())
    f.device("201", status=DeviceStatus.OFFLINE)
    assert f.lamp("alice") is Lamp.OFFLINE  # 202 still unknown
    f.device("202")
    assert f.lamp("alice") is Lamp.IDLE


def test_mode_first_uses_only_the_first_device():
    f = Feed(config("first"))
    f.device("201")
    f.device("202", call("c", CallState.RINGING))
    assert f.lamp("alice") is Lamp.IDLE
    assert f.engine.member("alice").calls == ()


def test_mode_current_follows_the_selected_device():
    f = Feed(config("current"))
    f.device("201")
    f.device("202", call("c", CallState.CONNECTED))
    assert f.lamp("alice") is Lamp.IDLE  # nothing selected yet: the first device
    deltas = f.client(ClientState("alice", logged_in=True, current_device="202"))
    assert f.lamp("alice") is Lamp.BUSY
    assert [d.key for d in deltas] == ["alice"]


def test_member_without_devices_shows_whether_logged_in():
    f = Feed(config())
    assert f.lamp("nodev") is Lamp.OFFLINE
    f.client(ClientState("nodev", logged_in=True))
    assert f.lamp("nodev") is Lamp.IDLE


def test_number_is_the_clients_own_or_live_from_its_device():
    f = Feed(config())
    assert f.engine.member("bob").number == "299"
    assert f.engine.member("alice").number == "201"


def test_softphone_calls_feed_the_lamp_when_on():
    f = Feed(config())
    f.device("201")
    f.device("202")
    sp = call("sp:alice/1", CallState.DIALING, Direction.OUT, remote="0301")
    f.client(ClientState("alice", logged_in=True, softphone=(sp,)))
    assert f.lamp("alice") is Lamp.OUTGOING


def test_softphone_calls_ignored_when_off():
    f = Feed(config(softphone="false"))
    f.device("201")
    f.device("202")
    sp = call("sp:alice/1", CallState.CONNECTED)
    f.client(ClientState("alice", logged_in=True, softphone=(sp,)))
    assert f.lamp("alice") is Lamp.IDLE
    assert f.engine.member("alice").calls == ()


def test_one_call_reported_by_line_and_softphone_is_shown_once():
    f = Feed(config())
    f.device("202")
    f.device("201", call("201/x", CallState.RINGING, remote="+49 30 123456", since=100.0))
    sp = call("sp:alice/1", CallState.RINGING, remote="030123456", since=101.5)
    f.client(ClientState("alice", logged_in=True, softphone=(sp,)))
    calls = f.engine.member("alice").calls
    assert [c.id for c in calls] == ["201/x"]  # the line's report is the one shown


def test_shown_once_by_shared_call_identity():
    f = Feed(config())
    f.device("202")
    f.device("201", call("201/x", CallState.CONNECTED, remote=None, link="L1"))
    sp = call("sp:alice/1", CallState.CONNECTED, remote="999", since=500.0, link="L1")
    f.client(ClientState("alice", logged_in=True, softphone=(sp,)))
    assert [c.id for c in f.engine.member("alice").calls] == ["201/x"]


def test_two_different_calls_are_both_shown():
    f = Feed(config())
    f.device("202")
    f.device("201", call("201/x", CallState.CONNECTED, remote="0301111111"))
    sp = call("sp:alice/1", CallState.RINGING, remote="0402222222")
    f.client(ClientState("alice", logged_in=True, softphone=(sp,)))
    assert len(f.engine.member("alice").calls) == 2
    assert f.lamp("alice") is Lamp.RINGING


def test_same_call_rules():
    a = call("a", CallState.CONNECTED, remote="+4930123456", since=0)
    assert same_call(a, call("b", CallState.CONNECTED, remote="030123456", since=3))
    assert not same_call(a, call("b", CallState.CONNECTED, remote="030123456", since=30))
    assert not same_call(a, call("b", CallState.CONNECTED, Direction.OUT, remote="030123456"))
    assert not same_call(a, call("b", CallState.CONNECTED, remote="030999999", since=1))
    assert not same_call(call("a", CallState.CONNECTED, link="X"),
                         call("b", CallState.CONNECTED, link="Y"))


def test_delta_only_on_change():
    f = Feed(config())
    assert f.device("201")
    assert f.device("201") == []  # the same state again: nothing to say


def test_stale_state_from_the_log_is_ignored():
    f = Feed(config())
    f.engine.update_device(dev("201", call("c", CallState.CONNECTED)), 10)
    assert f.engine.update_device(dev("201"), 9) == []
    assert f.lamp("alice") is Lamp.BUSY


def test_changes_since_lists_exactly_the_members_changed_after():
    f = Feed(config())
    f.device("201")  # seq 2: alice
    f.device("203")  # seq 3: bob
    names = lambda vs: sorted(v.client for v in vs)  # noqa: E731
    assert names(f.engine.panel_changes_since("team", 2)) == ["bob"]
    assert names(f.engine.panel_changes_since("team", 3)) == []
    assert names(f.engine.panel_changes_since("team", 1)) == ["alice", "bob"]
    assert f.engine.panel_changes_since("team", 0) is None  # before the config: snapshot
    assert f.engine.panel_changes_since("team", 99) is None  # not one of ours: snapshot


def test_reconfigure_blf_mode_changes_the_lamp_and_keeps_panel():
    f = Feed(config("all"))
    f.device("201")
    f.device("202", call("c", CallState.CONNECTED))
    assert f.lamp("alice") is Lamp.BUSY
    deltas, reshaped = f.engine.reconfigure(config("first"), 50)
    assert f.lamp("alice") is Lamp.IDLE
    assert [(d.key, d.seq) for d in deltas if d.kind == "member"] == [("alice", 50)]
    assert reshaped == set()


def test_reconfigure_membership_requires_snapshot():
    f = Feed(config())
    cfg = parse_config((CONFIG % ("all", "true")).replace('members = ["alice", "bob", "nodev"]',
                                                           'members = ["alice"]'))
    _, reshaped = f.engine.reconfigure(cfg, 60)
    assert reshaped == {"team"}
    assert f.engine.panel_changes_since("team", 59) is None


def test_untrusted_state_makes_every_lamp_unknown():
    f = Feed(config())
    f.device("201", call("c", CallState.CONNECTED))
    f.device("202")
    deltas = f.engine.set_trusted(False)
    assert f.lamp("alice") is Lamp.UNKNOWN and f.engine.member("alice").calls == ()
    assert any(d.key == "alice" for d in deltas)
    f.engine.set_trusted(True)
    assert f.lamp("alice") is Lamp.BUSY


def test_load_sets_view_seq_from_what_it_depends_on():
    e = Engine(config(), config_seq=5)
    e.load([(dev("201"), 7), (dev("203"), 9)], [(ClientState("alice"), 12)])
    assert e.member_seq("alice") == 12
    assert e.member_seq("bob") == 9
    assert e.seq == 12


def test_shown_once_keeps_the_furthest_progress_of_either_report():
    f = Feed(config())
    f.device("202")
    sp = call("sp:alice/1", CallState.CONNECTED, Direction.OUT, remote="0301555", since=101.0)
    f.client(ClientState("alice", logged_in=True, softphone=(sp,)))
    assert f.lamp("alice") is Lamp.BUSY
    # The line's slower report of the same call catches up, still dialing: it is the one
    # shown, but the lamp does not step back to outgoing.
    f.device("201", call("201/x", CallState.DIALING, Direction.OUT, remote="0301555", since=100.0))
    [shown] = f.engine.member("alice").calls
    assert shown.id == "201/x" and shown.state is CallState.CONNECTED
    assert f.lamp("alice") is Lamp.BUSY


def test_an_untrusted_lamp_says_why_and_a_new_reason_reaches_every_lamp():
    f = Feed(config())
    f.device("201", call("c", CallState.CONNECTED))
    f.engine.set_trusted(False, reason="store_disk_full")
    assert f.engine.member("alice").reason == "store_disk_full"
    assert f.engine.device_view("201").reason == "store_disk_full"
    deltas = f.engine.set_trusted(False, reason="store_unreachable")  # Redis then went away
    assert {d.key for d in deltas} >= {"alice", "201"}
    assert f.engine.member("alice").reason == "store_unreachable"
    assert f.engine.set_trusted(False, reason="store_unreachable") == []  # nothing new
    f.engine.set_trusted(True)
    assert f.lamp("alice") is Lamp.BUSY and f.engine.member("alice").reason is None
