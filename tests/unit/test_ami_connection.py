"""The sans-I/O Asterisk Manager connection: bytes and a hand-moved clock, no socket, no loop.

First with hand-written bytes (each step of the connection), then wired in memory to the
protocol-faithful AMI peer (tests/amipeer.py) for the call scenarios: the same peer the
end-to-end tests reach over TCP, here driven step by step.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

from gateway.ami.connection import (
    SYNC_LISTS,
    ActionAnswered,
    ActionFailed,
    AmiConnection,
    AmiError,
    Closing,
    Connected,
    LoggedIn,
    ReportsReady,
    State,
    Synced,
)
from gateway.ami.protocol import AmiMessage, AmiParser, format_message
from gateway.ami.translate import AmiTranslator
from gateway.calls import CallReport, LineTracker, ServiceReport
from gateway.panels.lamps import device_lamp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amipeer import AmiPeer  # noqa: E402

BANNER = b"Asterisk Call Manager/9.0.0\r\n"
LINES = {"PJSIP/201": "alice", "202": "bob", "PJSIP/203": "carol"}


def new(now: float = 100.0, **kw) -> AmiConnection:
    ids = (f"id-{n}" for n in itertools.count(1))
    return AmiConnection(AmiTranslator({"PJSIP/201": "alice"}), "blf", "s3cret", now,
                         action_ids=ids, **kw)


def sent(conn: AmiConnection) -> list[AmiMessage]:
    return [m for m in AmiParser().feed(conn.data_to_send()) if isinstance(m, AmiMessage)]


def msg(*pairs: tuple[str, str]) -> bytes:
    return format_message(list(pairs))


def logged_in(now: float = 100.0, **kw) -> tuple[AmiConnection, list[AmiMessage]]:
    """A connection past the login; returns it and the three list actions it sent."""
    conn = new(now, **kw)
    conn.receive_data(BANNER, now)
    (login,) = sent(conn)
    events = conn.receive_data(msg(("Response", "Success"), ("ActionID", login.action_id),
                                   ("Message", "Authentication accepted")), now)
    assert events == [LoggedIn()]
    return conn, sent(conn)


def complete_lists(conn: AmiConnection, lists: list[AmiMessage], now: float = 100.0) -> list:
    out = []
    for action in lists:
        out += conn.receive_data(msg(("Response", "Success"), ("ActionID", action.action_id),
                                     ("EventList", "start")), now)
        out += conn.receive_data(msg(("Event", action.name + "Complete"),
                                     ("ActionID", action.action_id),
                                     ("EventList", "Complete"), ("ListItems", "0")), now)
    return out


DEVICE_201_IDLE = (("Event", "DeviceStateChange"), ("Device", "PJSIP/201"),
                   ("State", "NOT_INUSE"))


# -- banner and login ----------------------------------------------------------------------


def test_login_is_sent_after_the_banner_and_the_secret_is_not_kept():
    conn = new()
    assert conn.state is State.BANNER and sent(conn) == []
    events = conn.receive_data(BANNER, 100.0)
    assert events == [Connected("9.0.0")]
    (login,) = sent(conn)
    assert login.name == "Login" and login.get("Username") == "blf"
    assert login.get("Secret") == "s3cret" and login.get("Events") == "call"
    assert conn.state is State.LOGIN
    assert "s3cret" not in repr(vars(conn))


def test_no_banner_in_time_closes():
    conn = new(now=100.0, banner_timeout=10.0)
    assert conn.next_deadline() == 110.0
    assert conn.handle_timer(109.9) == []
    assert conn.handle_timer(110.0) == [Closing("no Manager banner in time")]
    assert conn.state is State.CLOSED and conn.next_deadline() is None


def test_eof_before_the_banner_or_during_login_says_so():
    assert new().receive_eof() == [Closing("connection closed before the banner")]
    conn = new()
    conn.receive_data(BANNER, 100.0)
    assert conn.receive_eof() == [Closing("connection closed during login")]


def test_refused_login_closes_with_asterisks_message():
    conn = new()
    conn.receive_data(BANNER, 100.0)
    (login,) = sent(conn)
    events = conn.receive_data(msg(("Response", "Error"), ("ActionID", login.action_id),
                                   ("Message", "Authentication failed")), 100.0)
    assert events == [Closing("Authentication failed", refused=True)]
    assert conn.refused and not conn.logged_in


def test_login_unanswered_closes_after_the_action_timeout():
    conn = new(now=100.0, action_timeout=5.0)
    conn.receive_data(BANNER, 101.0)
    assert conn.next_deadline() == 106.0
    assert conn.handle_timer(106.0) == [Closing("no answer to Login in 5 s")]


# -- the re-sync -------------------------------------------------------------------------------


def test_the_three_lists_are_asked_hints_first():
    _, lists = logged_in()
    assert [m.name for m in lists] == [name for name, _ in SYNC_LISTS]
    assert lists[0].name == "ExtensionStateList"


def test_resync_is_held_back_and_delivered_as_one_batch_then_live_reports_per_read():
    conn, lists = logged_in()
    ext, dev, chans = lists
    out = conn.receive_data(msg(("Response", "Success"), ("ActionID", dev.action_id)), 100.0)
    out += conn.receive_data(msg(*DEVICE_201_IDLE, ("ActionID", dev.action_id)), 100.0)
    assert out == [] and conn.state is State.SYNC  # held back: the lists are not complete
    # ExtensionStateList answers Error when there are no hints: an empty list.
    out = conn.receive_data(msg(("Response", "Error"), ("ActionID", ext.action_id),
                                ("Message", "No extensions found")), 100.0)
    out += conn.receive_data(
        msg(("Event", "DeviceStateListComplete"), ("ActionID", dev.action_id))
        + msg(("Event", "CoreShowChannelsComplete"), ("ActionID", chans.action_id))
        # a live event in the same read, after the lists completed
        + msg(("Event", "DeviceStateChange"), ("Device", "PJSIP/201"),
              ("State", "UNAVAILABLE")), 100.0)
    assert out == [ReportsReady((ServiceReport("alice", True, "ami"),), resync=True),
                   Synced(1),
                   ReportsReady((ServiceReport("alice", False, "ami"),))]
    assert conn.synced and conn.synced_once


def test_resync_not_complete_in_time_closes():
    conn, _ = logged_in(now=100.0, action_timeout=10.0)
    assert conn.next_deadline() == 130.0  # three action timeouts
    assert conn.handle_timer(130.0) == [Closing("re-sync not complete after 30 s")]


def test_messages_before_the_login_answer_join_the_resync():
    conn = new()
    conn.receive_data(BANNER + msg(*DEVICE_201_IDLE), 100.0)
    (login,) = sent(conn)
    conn.receive_data(msg(("Response", "Success"), ("ActionID", login.action_id)), 100.0)
    out = complete_lists(conn, sent(conn))
    assert out[0] == ReportsReady((ServiceReport("alice", True, "ami"),), resync=True)


def test_garbage_is_counted_and_skipped():
    conn, lists = logged_in()
    complete_lists(conn, lists)
    out = conn.receive_data(b"\x00\xff\xfe\r\nnot ami at all\r\n\r\n" + msg(*DEVICE_201_IDLE),
                            100.0)
    assert conn.protocol_errors >= 1
    assert out == [ReportsReady((ServiceReport("alice", True, "ami"),))]
    assert conn.state is State.LIVE


# -- actions and the ping ----------------------------------------------------------------------


def test_an_action_is_answered_by_its_action_id():
    conn, lists = logged_in()
    aid = conn.send_action("Redirect", 100.0, Channel="PJSIP/202-1", Exten="201")
    (action,) = sent(conn)
    assert action.name == "Redirect" and action.action_id == aid
    answer = msg(("Response", "Error"), ("ActionID", aid), ("Message", "No such channel"))
    (ev,) = conn.receive_data(answer, 100.5)
    assert isinstance(ev, ActionAnswered) and ev.action_id == aid
    assert ev.response.name == "Error" and ev.response.get("Message") == "No such channel"


def test_an_unanswered_action_fails_at_its_deadline_and_the_connection_lives_on():
    conn, _ = logged_in(now=100.0, action_timeout=2.0)
    aid = conn.send_action("Ping", 101.0)
    assert conn.next_deadline() == 103.0
    assert conn.handle_timer(103.0) == [ActionFailed(aid, "no answer in 2 s")]
    assert conn.logged_in


def test_no_action_before_login_and_no_line_break_in_a_field():
    with pytest.raises(AmiError):
        new().send_action("Ping", 100.0)
    conn, _ = logged_in()
    with pytest.raises(ValueError):
        conn.send_action("Redirect", 100.0, Channel="PJSIP/1\r\nAction: Originate")


def test_a_ping_every_interval_once_synced_and_an_unanswered_one_closes():
    conn, lists = logged_in(now=100.0, ping_interval=20.0, action_timeout=5.0)
    complete_lists(conn, lists, now=101.0)
    assert conn.next_deadline() == 121.0
    assert conn.handle_timer(121.0) == []
    (ping,) = sent(conn)
    assert ping.name == "Ping"
    # Answered: the next one 20 s after the answer.
    assert conn.receive_data(msg(("Response", "Success"), ("ActionID", ping.action_id),
                                 ("Ping", "Pong")), 122.0) == []
    assert conn.next_deadline() == 142.0
    conn.handle_timer(142.0)
    sent(conn)
    assert conn.next_deadline() == 147.0
    assert conn.handle_timer(147.0) == [Closing("ping failed: no answer to Ping in 5 s")]


def test_connection_end_fails_pending_actions():
    conn, _ = logged_in()
    aid = conn.send_action("Redirect", 100.0, Channel="X")
    assert conn.receive_eof() == [ActionFailed(aid, "connection lost"),
                                  Closing("connection closed by Asterisk")]
    assert conn.receive_data(msg(*DEVICE_201_IDLE), 100.0) == []  # closed: nothing more


def test_close_logs_off_when_logged_in():
    conn, _ = logged_in()
    events = conn.close()
    assert events == [Closing("closed by the gateway")]
    assert [m.name for m in sent(conn)] == ["Logoff"]
    conn = new()
    conn.close()
    assert sent(conn) == []


# -- wired to the AMI peer, in memory -------------------------------------------------------------


class Buffer:
    """What the peer writes to its session (a transport without a socket)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class Link:
    """An AmiConnection and the peer passing bytes in memory; reports go to a tracker as
    the gateway's handler would apply them."""

    def __init__(self, peer: AmiPeer, secret: str = "s3cret") -> None:
        self.peer = peer
        self.tracker = LineTracker(sorted(LINES.values()))
        self.batches: list[tuple] = []
        self.events: list = []
        self.now = 1000.0
        self.wire = Buffer()
        self.session = peer.open_session(self.wire)
        self.conn = AmiConnection(AmiTranslator(LINES), "blf", secret, self.now,
                                  action_ids=(f"t-{n}" for n in itertools.count(1)))
        self.pump()

    def pump(self) -> None:
        """Move bytes both ways until neither side has anything to say."""
        while True:
            out = self.conn.data_to_send()
            if out and not self.wire.closed:
                self.peer.receive(self.session, out)
            back, self.wire.data = bytes(self.wire.data), bytearray()
            if back:
                self._apply(self.conn.receive_data(back, self.now))
            elif self.wire.closed and self.conn.state is not State.CLOSED:
                self._apply(self.conn.receive_eof())
            if not out and not back:
                return

    def _apply(self, events: list) -> None:
        self.events += events
        for ev in events:
            if isinstance(ev, ReportsReady):
                self.batches.append(ev.reports)
                for r in ev.reports:
                    if isinstance(r, CallReport):
                        self.tracker.call(r, self.now)
                    else:
                        self.tracker.service(r, self.now)

    def action(self, name: str, **fields: object) -> AmiMessage:
        aid = self.conn.send_action(name, self.now, **fields)
        self.pump()
        (answer,) = [e for e in self.events if isinstance(e, ActionAnswered)
                     and e.action_id == aid]
        return answer.response

    def lamps(self) -> dict[str, str]:
        return {d: device_lamp(self.tracker.state(d)).value for d in self.tracker.devices}


@pytest.fixture
def pbx() -> AmiPeer:
    p = AmiPeer(secret="s3cret")
    for n, name in (("201", "Alice"), ("202", "Bob"), ("203", "Carol")):
        p.model.add_endpoint(f"PJSIP/{n}", n, name)
    return p


def test_login_and_first_sync_with_the_peer(pbx):
    link = Link(pbx)
    assert link.conn.synced
    assert link.lamps() == {"alice": "idle", "bob": "idle", "carol": "idle"}
    names = [a for a, _ in pbx.actions]
    assert names[0] == "Login"
    assert {"CoreShowChannels", "ExtensionStateList", "DeviceStateList"} <= set(names)
    assert all(isinstance(r, ServiceReport) for r in link.batches[0])


def test_refused_login_with_the_peer(pbx):
    link = Link(pbx, secret="nope")
    assert link.events[-1] == Closing("Authentication failed", refused=True)
    assert pbx.failed_logins == 1 and set(link.lamps().values()) == {"unknown"}


def test_resync_after_connect_shows_calls_already_up(pbx):
    m = pbx.model
    talk = m.internal_call("201", "202")
    m.answer(talk)
    m.external_call("0301", "Ext", "203")
    link = Link(pbx)
    assert link.conn.synced
    assert link.lamps() == {"alice": "busy", "bob": "busy", "carol": "ringing"}
    assert link.tracker.state("carol").calls[0].remote == "0301"


def test_live_scenarios(pbx):
    link = Link(pbx)
    m = pbx.model

    def step(**want: str) -> None:
        link.pump()
        lamps = link.lamps()
        assert {d: lamps[d] for d in want} == want

    # internal call answered
    call = m.internal_call("201", "202")
    step(alice="outgoing", bob="ringing")
    m.answer(call)
    step(alice="busy", bob="busy")
    # hold / unhold
    m.hold(call.caller)
    step(alice="held")
    m.unhold(call.caller)
    step(alice="busy")
    # call waiting on bob while he talks
    waiting = m.external_call("0309", "Waiting", "202")
    step(bob="ringing")
    assert len(link.tracker.state("bob").calls) == 2
    # ... which is missed
    m.cancel(waiting)
    step(bob="busy")
    m.hangup(call)
    step(alice="idle", bob="idle")
    # blind transfer of an external caller from alice to carol
    ext = m.external_call("0301111", "Customer", "201")
    m.answer(ext)
    step(alice="busy")
    moved = m.blind_transfer(ext, ext.callee, "203")
    step(alice="idle", carol="ringing")
    assert link.tracker.state("carol").calls[0].remote == "0301111"
    m.answer(moved)
    step(carol="busy")
    m.hangup(moved)
    step(carol="idle")
    # unregistered
    m.set_registered("PJSIP/203", False)
    step(carol="offline")


def test_pickup_by_originate_pickupchan_and_pickup(pbx):
    link = Link(pbx)
    call = pbx.model.external_call("0303333", "Supplier", "202")
    link.pump()
    assert link.lamps()["bob"] == "ringing"
    resp = link.action("Originate", Channel="PJSIP/201", Application="PickupChan",
                       Data=call.callee.name, Timeout=30000, Async="true")
    assert resp.name == "Success"
    assert link.lamps()["bob"] == "idle" and link.lamps()["alice"] == "busy"
    assert link.tracker.state("alice").calls[0].remote == "0303333"

    pbx.model.external_call("0304444", "Other", "202")
    link.pump()
    assert link.lamps()["bob"] == "ringing"
    resp = link.action("Originate", Channel="PJSIP/203", Application="Pickup",
                       Data="202@from-internal", Timeout=30000, Async="true")
    assert resp.name == "Success"
    assert link.lamps()["bob"] == "idle" and link.lamps()["carol"] == "busy"


def test_failed_action_is_an_error_response_not_a_crash(pbx):
    link = Link(pbx)
    resp = link.action("Redirect", Channel="PJSIP/nonexistent-1", Exten="201",
                       Context="from-internal", Priority=1)
    assert resp.name == "Error" and "does not exist" in resp.get("Message")
    resp = link.action("NoSuchAction")
    assert resp.name == "Error"
    assert link.conn.logged_in

