"""Wire requests (contract section 4): one frame -> a typed request, or an error code and a
message saying what is wrong, with the request's id whenever it could be read."""

from __future__ import annotations

import json

import pytest

from gateway.errors import ERROR_CODES, WireError, error
from gateway.server.wire import (
    Journal,
    JournalAck,
    Login,
    Pickup,
    PresenceSet,
    SelectDevice,
    Softphone,
    Subscribe,
    Unsubscribe,
    parse_request,
)


def bad(frame, *, id=None) -> str:  # noqa: A002 - the wire's name
    with pytest.raises(WireError) as exc:
        parse_request(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))
    assert exc.value.code == "bad_request"
    assert exc.value.id == id
    return exc.value.message


@pytest.mark.parametrize(("frame", "model"), [
    ({"type": "login", "client": "alice", "password": "x"}, Login),
    ({"type": "login", "client": "alice", "token": "t", "computer": "PC1", "batch": True}, Login),
    ({"type": "subscribe", "panel": "team", "since": 12}, Subscribe),
    ({"type": "subscribe", "device": "201"}, Subscribe),
    ({"type": "unsubscribe", "panel": "team"}, Unsubscribe),
    ({"type": "select_device", "device": "201"}, SelectDevice),
    ({"type": "softphone", "call": "a", "state": "ringing", "direction": "in",
      "remote": "0301"}, Softphone),
    ({"type": "pickup", "panel": "team", "member": "bob", "op": "p1"}, Pickup),
    ({"type": "pickup", "device": "202"}, Pickup),
    ({"type": "journal"}, Journal),
    ({"type": "journal_ack", "upto": "1700000000000-0"}, JournalAck),
    ({"type": "presence", "status": "away", "info": "lunch", "locked": True}, PresenceSet),
])
def test_every_request_type(frame, model):
    req = parse_request(json.dumps({"id": 7, **frame}))
    assert type(req) is model and req.id == 7
    assert req.type == frame["type"]


def test_defaults():
    req = parse_request('{"type": "journal"}')
    assert (req.scope, req.since, req.id) == ("offline", None, None)
    assert parse_request('{"type":"login","client":"a","password":"p"}').batch is False


def test_frames_that_are_not_requests():
    assert bad(b'{"type": "journal"}') == "binary frames are not accepted: send JSON text"
    assert bad("{not json") == "not valid JSON"
    assert bad("[" * 100000).startswith("not valid JSON")
    assert bad("[1]") == "a message must be a JSON object"
    assert bad({"id": 3}, id=3) == "missing 'type'"
    assert bad({"id": "x", "type": "dance" * 20}, id="x").startswith("unknown type 'dancedance")
    assert len(bad({"type": "z" * 500})) < 60  # the echo is cut short


def test_the_id_is_recovered_when_it_can_be():
    assert bad({"id": "abc", "type": "subscribe"}, id="abc")
    assert bad({"id": 1.5, "type": "subscribe"}, id=1.5)
    # Not an id: true/false, objects, over-long strings.
    bad({"id": True, "type": "subscribe"}, id=None)
    bad({"id": {"a": 1}, "type": "subscribe"}, id=None)
    bad({"id": "x" * 129, "type": "subscribe"}, id=None)


def test_field_errors_name_the_field():
    assert bad({"id": 1, "type": "login", "password": "p"}, id=1) == "login: client: required"
    assert bad({"type": "select_device", "device": "1", "colour": "red"}) == (
        "select_device: colour: unknown field")
    assert bad({"type": "softphone", "call": "a", "state": "talking", "direction": "in"}) \
        .startswith("softphone: state: ")
    assert bad({"type": "presence", "status": "sleeping"}).startswith("presence: status: ")
    assert bad({"type": "subscribe", "panel": "t", "since": -1}).startswith(
        "subscribe: since: ")
    assert bad({"type": "login", "client": "a" * 129, "password": "p"}).startswith(
        "login: client: ")


@pytest.mark.parametrize(("frame", "message"), [
    ({"type": "subscribe"}, "subscribe: give exactly one of 'panel' or 'device'"),
    ({"type": "unsubscribe", "panel": "t", "device": "1"},
     "unsubscribe: give exactly one of 'panel' or 'device'"),
    ({"type": "pickup", "panel": "t"}, "pickup: give 'panel' and 'member', or 'device'"),
    ({"type": "pickup", "panel": "t", "member": "b", "device": "1"},
     "pickup: give 'panel' and 'member', or 'device'"),
    ({"type": "login", "client": "a", "password": "p", "token": "t"},
     "login: give 'password' or 'token', not both"),
    ({"type": "explain", "device": "1", "client": "a"},
     "explain: give exactly one of 'device' or 'client'"),
    ({"type": "explain"}, "explain: give exactly one of 'device' or 'client'"),
])
def test_one_of_rules(frame, message):
    assert bad(frame) == message


def test_login_may_carry_no_password_at_all():
    # Contract section 4: a client marked --at-next-login has no password yet.
    req = parse_request('{"type": "login", "client": "erin"}')
    assert req.password is None and req.token is None


def test_requests_are_frozen():
    req = parse_request('{"type": "select_device", "device": "201"}')
    with pytest.raises(Exception):
        req.device = "202"  # type: ignore[misc]


def test_error_frames_and_codes():
    assert error("forbidden", "no") == {"type": "error", "code": "forbidden", "message": "no"}
    assert error("conflict", "taken", 4)["id"] == 4
    assert "bad_request" in ERROR_CODES and "unavailable" in ERROR_CODES
    with pytest.raises(AssertionError):
        WireError("teapot", "not a code")
