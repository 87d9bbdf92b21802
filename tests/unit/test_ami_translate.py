"""AMI events -> CallReport/ServiceReport -> LineTracker device states -> lamps (pure)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.calls import CallReport, LineTracker, Phase, ServiceReport
from gateway.model import Direction, Lamp
from gateway.panels.lamps import device_lamp
from gateway.ami.protocol import AmiMessage, AmiParser, format_message
from gateway.ami.translate import AmiTranslator, channel_device, channel_phase

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amipeer import PbxModel  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ami"

# Device lines and hint lines side by side, as an admin would mix them.
LINES = {"PJSIP/201": "alice", "202": "bob", "PJSIP/203": "carol", "204@from-internal": "dave"}


class Pbx:
    """The peer's model -> wire bytes -> parser -> translator -> LineTracker."""

    def __init__(self, lines=LINES) -> None:
        self.wire: list[bytes] = []
        self.model = PbxModel(sink=lambda pairs: self.wire.append(format_message(pairs)))
        for n, name in (("201", "Alice"), ("202", "Bob"), ("203", "Carol"), ("204", "Dave")):
            self.model.add_endpoint(f"PJSIP/{n}", n, name)
        self.parser = AmiParser()
        self.tr = AmiTranslator(lines)
        self.tracker = LineTracker(sorted(set(lines.values())))
        self.now = 1000.0

    def pump(self) -> list:
        data, self.wire[:] = b"".join(self.wire), []
        reports = []
        for m in self.parser.feed(data):
            assert isinstance(m, AmiMessage), m
            reports += self.tr.feed(m)
        self.apply(reports)
        return reports

    def apply(self, reports) -> None:
        for r in reports:
            self.now += 1
            if isinstance(r, CallReport):
                self.tracker.call(r, self.now)
            else:
                self.tracker.service(r, self.now)

    def lamp(self, device: str) -> Lamp:
        return device_lamp(self.tracker.state(device))

    def lamps(self) -> dict[str, str]:
        return {d: self.lamp(d).value for d in self.tracker.devices}

    def calls(self, device: str):
        return self.tracker.state(device).calls

    def resync(self) -> list:
        """What a reconnecting client gets: the three lists, into a fresh translator."""
        self.tr.reset()
        self.tracker.connection_lost()
        m = self.model
        msgs = []
        for items, complete in (
            (m.extension_states("x1"), "ExtensionStateListComplete"),
            (m.device_states("x2"), "DeviceStateListComplete"),
            (m.coreshowchannels("x3"), "CoreShowChannelsComplete"),
        ):
            msgs += items + [[("Event", complete), ("ActionID", "x"),
                              ("EventList", "Complete"), ("ListItems", str(len(items)))]]
        self.wire[:] = [format_message(p) for p in msgs]
        return self.pump()


@pytest.fixture
def pbx() -> Pbx:
    p = Pbx()
    p.resync()  # all idle and in service, as after a first connect
    return p


def calls_of(reports, device):
    return [r for r in reports if isinstance(r, CallReport) and r.device == device]


def test_first_sync_puts_every_line_in_service(pbx):
    assert pbx.lamps() == {"alice": "idle", "bob": "idle", "carol": "idle", "dave": "idle"}


def test_internal_call_answered_and_hung_up(pbx):
    call = pbx.model.internal_call("201", "202")
    reports = pbx.pump()
    assert pbx.lamps()["alice"] == "outgoing" and pbx.lamps()["bob"] == "ringing"
    (a,) = pbx.calls("alice")
    (b,) = pbx.calls("bob")
    assert (a.direction, a.remote) == (Direction.OUT, "202")
    assert (b.direction, b.remote, b.remote_name) == (Direction.IN, "201", "Alice")
    # Both legs carry the Linkedid: the same call seen from two devices.
    assert a.link == b.link == call.caller.uniqueid
    assert calls_of(reports, "bob")[-1].call == call.callee.uniqueid

    pbx.model.answer(call)
    pbx.pump()
    assert pbx.lamps()["alice"] == "busy" and pbx.lamps()["bob"] == "busy"
    assert pbx.calls("alice")[0].remote_name == "Bob"

    pbx.model.hangup(call)
    reports = pbx.pump()
    assert {r.device for r in reports if isinstance(r, CallReport)
            and r.phase is Phase.ENDED} == {"alice", "bob"}
    assert pbx.lamps()["alice"] == "idle" and pbx.lamps()["bob"] == "idle"


def test_external_call_missed(pbx):
    call = pbx.model.external_call("04930123456", "ACME GmbH", "201")
    pbx.pump()
    (c,) = pbx.calls("alice")
    assert (pbx.lamp("alice"), c.remote, c.remote_name) == (Lamp.RINGING, "04930123456",
                                                             "ACME GmbH")
    pbx.model.cancel(call)
    reports = pbx.pump()
    assert pbx.lamp("alice") is Lamp.IDLE
    assert [r.phase for r in calls_of(reports, "alice")] == [Phase.ENDED]
    # The trunk is nobody's device: none of its events became a report.
    assert all(r.device in LINES.values() for r in reports)


def test_outbound_call_through_trunk_shows_dialled_number(pbx):
    call = pbx.model.outbound_call("203", "004412345")
    pbx.pump()
    (c,) = pbx.calls("carol")
    assert (pbx.lamp("carol"), c.direction, c.remote) == (Lamp.OUTGOING, Direction.OUT,
                                                          "004412345")
    pbx.model.answer(call)
    pbx.pump()
    assert pbx.lamp("carol") is Lamp.BUSY


def test_call_waiting_rings_over_busy(pbx):
    first = pbx.model.internal_call("201", "202")
    pbx.model.answer(first)
    second = pbx.model.external_call("030999", "Caller", "202")
    pbx.pump()
    assert pbx.lamp("bob") is Lamp.RINGING
    assert sorted(c.state.value for c in pbx.calls("bob")) == ["connected", "ringing"]
    pbx.model.cancel(second)
    pbx.pump()
    assert pbx.lamp("bob") is Lamp.BUSY and len(pbx.calls("bob")) == 1


def test_hold_and_unhold(pbx):
    call = pbx.model.internal_call("201", "202")
    pbx.model.answer(call)
    pbx.pump()
    pbx.model.hold(call.caller)
    pbx.pump()
    # The holder's lamp is held; the held party is still in a call.
    assert (pbx.lamp("alice"), pbx.lamp("bob")) == (Lamp.HELD, Lamp.BUSY)
    pbx.model.unhold(call.caller)
    pbx.pump()
    assert (pbx.lamp("alice"), pbx.lamp("bob")) == (Lamp.BUSY, Lamp.BUSY)


def test_blind_transfer_moves_the_caller(pbx):
    call = pbx.model.external_call("0301111", "Customer", "201")
    pbx.model.answer(call)
    pbx.pump()
    new = pbx.model.blind_transfer(call, call.callee, "203")
    pbx.pump()
    assert pbx.lamp("alice") is Lamp.IDLE
    (c,) = pbx.calls("carol")
    assert (pbx.lamp("carol"), c.remote, c.remote_name) == (Lamp.RINGING, "0301111",
                                                            "Customer")
    pbx.model.answer(new)
    pbx.pump()
    assert pbx.lamp("carol") is Lamp.BUSY


def test_pickup_by_redirect(pbx):
    call = pbx.model.external_call("0302222", "Vendor", "202")
    pbx.pump()
    assert pbx.lamp("bob") is Lamp.RINGING
    new = pbx.model.redirect(call.caller.name, "201", "from-internal")
    pbx.pump()
    assert (pbx.lamp("bob"), pbx.lamp("alice")) == (Lamp.IDLE, Lamp.RINGING)
    pbx.model.answer(new)
    pbx.pump()
    (c,) = pbx.calls("alice")
    assert (pbx.lamp("alice"), c.remote) == (Lamp.BUSY, "0302222")


def test_pickup_by_pickupchan(pbx):
    call = pbx.model.external_call("0303333", "Supplier", "202")
    pbx.pump()
    pbx.model.pickup("PJSIP/201", call.callee)
    pbx.pump()
    assert pbx.lamp("bob") is Lamp.IDLE
    (c,) = pbx.calls("alice")
    assert (pbx.lamp("alice"), c.remote, c.remote_name) == (Lamp.BUSY, "0303333", "Supplier")


def test_unregistered_phone_is_offline_and_comes_back(pbx):
    pbx.model.set_registered("PJSIP/203", False)
    pbx.model.set_registered("PJSIP/202", False)
    reports = pbx.pump()
    assert ServiceReport("carol", False, "ami") in reports
    assert (pbx.lamp("carol"), pbx.lamp("bob")) == (Lamp.OFFLINE, Lamp.OFFLINE)
    pbx.model.set_registered("PJSIP/203", True)
    pbx.pump()
    assert pbx.lamp("carol") is Lamp.IDLE


def test_hint_line_with_context(pbx):
    call = pbx.model.internal_call("204", "201")
    pbx.pump()
    assert (pbx.lamp("dave"), pbx.lamp("alice")) == (Lamp.OUTGOING, Lamp.RINGING)
    pbx.model.cancel(call)
    pbx.pump()
    assert pbx.lamp("dave") is Lamp.IDLE


def test_resync_restores_ringing_busy_held_and_offline():
    pbx = Pbx()
    m = pbx.model
    talk = m.internal_call("201", "202")
    m.answer(talk)
    m.hold(talk.caller)
    m.external_call("0304444", "Ringer", "203")
    m.set_registered("PJSIP/204", False)
    pbx.wire.clear()  # the gateway was not connected: it saw none of that
    reports = pbx.resync()
    assert pbx.lamps() == {"alice": "held", "bob": "busy", "carol": "ringing",
                           "dave": "offline"}
    (a,) = pbx.calls("alice")
    (b,) = pbx.calls("bob")
    (c,) = pbx.calls("carol")
    # Directions from the list alone: the dialling leg is out, the dialled legs in.
    assert (a.direction, b.direction, c.direction) == (Direction.OUT, Direction.IN,
                                                       Direction.IN)
    assert (a.remote, b.remote, c.remote) == ("202", "201", "0304444")
    # A second identical re-sync changes nothing a user could see.
    before = pbx.lamps()
    assert pbx.resync() and pbx.lamps() == before
    assert any(isinstance(r, ServiceReport) for r in reports)


def test_hint_devices_are_learned_from_extension_status():
    # The endpoint is named after its user, not its number: only the hint connects them.
    pbx = Pbx(lines={"201": "alice", "PJSIP/202": "bob"})
    pbx.model.endpoints.clear()
    pbx.model.add_endpoint("PJSIP/alice-desk", "201", "Alice")
    pbx.model.add_endpoint("PJSIP/202", "202", "Bob")
    pbx.resync()
    pbx.model.internal_call("202", "201")
    pbx.pump()
    assert (pbx.lamp("alice"), pbx.lamp("bob")) == (Lamp.RINGING, Lamp.OUTGOING)


def test_recorded_transcript_external_call_answered_then_held():
    tr = AmiTranslator({"PJSIP/201": "alice"})
    tracker = LineTracker(["alice"])
    data = (FIXTURES / "external_answered_then_held.txt").read_bytes()
    phases = []
    for i, m in enumerate(AmiParser().feed(data)):
        for r in tr.feed(m):
            if isinstance(r, CallReport):
                phases.append(r.phase)
                tracker.call(r, float(i))
            else:
                tracker.service(r, float(i))
    assert phases == [Phase.RINGING, Phase.CONNECTED, Phase.HELD]
    (c,) = tracker.state("alice").calls
    assert (c.id, c.direction, c.remote, c.remote_name, c.link) == (
        "alice/1712345678.92", Direction.IN, "04930123456", "ACME GmbH", "1712345678.91")
    assert device_lamp(tracker.state("alice")) is Lamp.HELD


def test_unknown_events_and_foreign_channels_yield_nothing():
    tr = AmiTranslator({"PJSIP/201": "alice"})
    msgs = AmiParser().feed(
        b"Event: Newstate\r\nChannel: PJSIP/2010-00000001\r\nChannelState: 5\r\n"
        b"Uniqueid: 1.1\r\n\r\n"
        b"Event: FutureThing\r\nChannel: PJSIP/201-00000002\r\nUniqueid: 1.2\r\n\r\n"
        b"Event: Newstate\r\nChannel: PJSIP/201-00000003\r\nChannelState: garbage\r\n"
        b"Uniqueid: 1.3\r\n\r\n"
        b"Event: DeviceStateChange\r\nDevice: PJSIP/999\r\nState: INUSE\r\n\r\n"
        b"Response: Success\r\nActionID: 1\r\n\r\n"
        b"Event: Hangup\r\nUniqueid: 9.9\r\n\r\n"
    )
    assert tr.feed_all(m for m in msgs if isinstance(m, AmiMessage)) == []


def test_late_caller_id_is_reported_once_then_deduplicated():
    tr = AmiTranslator({"PJSIP/201": "alice"})
    base = [("Channel", "PJSIP/201-0000000a"), ("ChannelState", "5"),
            ("Uniqueid", "5.1"), ("Linkedid", "5.0")]
    first = tr.feed(AmiMessage("event", "Newstate", *_f(base + [("ConnectedLineNum",
                                                                 "<unknown>")])))
    again = tr.feed(AmiMessage("event", "Newstate", *_f(base)))
    late = tr.feed(AmiMessage("event", "NewConnectedLine",
                              *_f(base + [("ConnectedLineNum", "0171"),
                                          ("ConnectedLineName", "Mobile")])))
    assert [r.remote for r in first] == [None]
    assert again == []
    assert [(r.phase, r.remote, r.remote_name) for r in late] == [(Phase.RINGING, "0171",
                                                                   "Mobile")]


def _f(pairs):
    from gateway.ami.protocol import AmiFields

    return AmiFields(pairs), tuple(pairs)


def test_reset_forgets_channels():
    tr = AmiTranslator({"PJSIP/201": "alice"})
    pairs = [("Channel", "PJSIP/201-1"), ("ChannelState", "6"), ("Uniqueid", "7.1")]
    assert tr.feed(AmiMessage("event", "Newstate", *_f(pairs)))
    tr.reset()
    # After a reset the same channel is new again: it is reported again (re-sync).
    assert tr.feed(AmiMessage("event", "Newstate", *_f(pairs)))


@pytest.mark.parametrize(
    ("channel", "device"),
    [
        ("PJSIP/201-0000002a", "PJSIP/201"),
        ("SIP/201-00000001", "SIP/201"),
        ("PJSIP/trunk-provider-0000000b", "PJSIP/trunk-provider"),
        ("PJSIP/201-0000002a<ZOMBIE>", "PJSIP/201"),
        ("Local/201@from-internal-00000001;2", "Local/201@from-internal"),
        ("DAHDI/1-1", "DAHDI/1"),
        ("PJSIP/201", "PJSIP/201"),
    ],
)
def test_channel_device(channel, device):
    assert channel_device(channel) == device


def test_device_line_matches_technology_case_insensitively():
    tr = AmiTranslator({"pjsip/201": "alice"})
    assert tr.devices_of_channel("PJSIP/201-00000001") == ("alice",)
    assert tr.devices_of_channel("PJSIP/2011-00000001") == ()


@pytest.mark.parametrize(
    ("state", "held", "phase"),
    [(0, False, None), (4, False, Phase.DIALING), (5, False, Phase.RINGING),
     (6, False, Phase.CONNECTED), (6, True, Phase.HELD), (7, False, Phase.DIALING),
     (9, False, Phase.RINGING), (None, False, None), (42, False, None)],
)
def test_channel_phase(state, held, phase):
    assert channel_phase(state, held) is phase


@pytest.mark.parametrize(
    ("status", "ok"),
    [("-2", False), ("-1", False), ("0", True), ("1", True), ("4", False), ("8", True),
     ("16", True)],
)
def test_extension_status_service(status, ok):
    tr = AmiTranslator({"201": "alice"})
    msg = AmiMessage("event", "ExtensionStatus", *_f([
        ("Exten", "201"), ("Context", "from-internal"), ("Hint", "PJSIP/201"),
        ("Status", status)]))
    assert tr.feed(msg) == [ServiceReport("alice", ok, "ami")]


@pytest.mark.parametrize(
    ("state", "ok"),
    [("UNAVAILABLE", False), ("INVALID", False), ("NOT_INUSE", True), ("INUSE", True),
     ("RINGING", True), ("UNKNOWN", True), ("ONHOLD", True)],
)
def test_device_state_service(state, ok):
    tr = AmiTranslator({"PJSIP/201": "alice"})
    msg = AmiMessage("event", "DeviceStateChange", *_f([("Device", "PJSIP/201"),
                                                         ("State", state)]))
    assert tr.feed(msg) == [ServiceReport("alice", ok, "ami")]
