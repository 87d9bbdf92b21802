"""REGISTER with digest, sans-I/O: challenge, re-register before expiry, failures."""

from __future__ import annotations

from gateway.auth import sip_ha1
from gateway.backoff import Backoff
from gateway.sip.digest import DigestAuthenticator
from gateway.sip.proto import Local, make_response
from gateway.sip.proto.registration import Registration

LOCAL = Local("UDP", "192.0.2.1:5070", "sip:blf@192.0.2.1:5070")
AUTH = DigestAuthenticator("pbx", lifetime=60)
HA1 = sip_ha1("gw", "secret-pw", realm="pbx")


def reg(password="secret-pw"):
    return Registration("sip:pbx.example", "sip:gw@pbx.example", LOCAL,
                        credentials=("gw", password), expires=300,
                        backoff=Backoff(1.0, 8.0))


def test_register_with_digest_then_refresh_before_expiry():
    r = reg()
    first = r.tick(0.0)
    assert first is not None and first.header("Authorization") is None
    assert first.header("Expires") == "300" and first.uri == "sip:pbx.example"
    again = r.on_response(make_response(first, 401, headers=(
        ("WWW-Authenticate", AUTH.challenge(0.0)),)), 0.1)
    assert again is not None
    assert AUTH.verify(again.header("Authorization"), "REGISTER", lambda u: HA1,
                       0.2).client == "gw"
    ok = make_response(again, 200, to_tag="r", headers=(
        ("Contact", "<sip:blf@192.0.2.1:5070>;expires=120"),
        ("Contact", "<sip:other@192.0.2.9>;expires=3600")))
    assert r.on_response(ok, 0.3) is None and r.up
    assert r.next_deadline() == 0.3 + 90  # 120 s granted for our binding: 30 s before its end
    refresh = r.tick(90.3)
    assert refresh is not None and refresh.call_id == first.call_id
    assert refresh.cseq[0] > again.cseq[0]


def test_wrong_password_is_a_failure_not_a_loop_and_retries_with_backoff():
    r = reg("wrong")
    first = r.tick(0.0)
    second = r.on_response(make_response(first, 401, headers=(
        ("WWW-Authenticate", AUTH.challenge(0.0)),)), 0.0)
    assert second is not None
    third = r.on_response(make_response(second, 401, headers=(
        ("WWW-Authenticate", AUTH.challenge(0.0)),)), 0.0)
    assert third is None and not r.up and "refused" in r.reason
    assert r.next_deadline() == 1.0
    assert r.tick(1.0) is not None  # tries again, later
    r.on_response(None, 1.0)
    assert r.next_deadline() == 3.0  # backoff doubles


def test_binding_lapses_when_not_renewed():
    r = reg()
    req = r.tick(0.0)
    r.on_response(make_response(req, 200, headers=(("Expires", "60"),)), 0.0)
    assert r.up
    req = r.tick(30.0)  # the refresh goes out...
    assert req is not None
    r.tick(60.0)  # ...and is not answered before the binding ends
    assert not r.up and "expired" in r.reason


def test_min_expires_is_followed():
    r = reg()
    req = r.tick(0.0)
    again = r.on_response(make_response(req, 423, headers=(("Min-Expires", "600"),)), 0.0)
    assert again is not None and again.header("Expires") == "600"
