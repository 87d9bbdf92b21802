"""PUBLISH (RFC 3903), sans-I/O: entity tags, 412, one in flight, new dialog entities."""

from __future__ import annotations

from gateway.auth import sip_ha1
from gateway.sip.digest import DigestAuthenticator
from gateway.sip.proto import Local, make_response
from gateway.sip.proto.publication import Publication

LOCAL = Local("UDP", "192.0.2.1:5070", "sip:blf@192.0.2.1:5070")
IDLE = b'<dialog-info version="0"><dialog id="201"><state>terminated</state></dialog></dialog-info>'
RING = b'<dialog-info version="0"><dialog id="c1"><state>early</state></dialog></dialog-info>'
BUSY = b'<dialog-info version="0"><dialog id="c1"><state>confirmed</state></dialog></dialog-info>'


def ok(req, etag):
    return make_response(req, 200, headers=(("SIP-ETag", etag), ("Expires", "120")))


def pub():
    return Publication("sip:201@kam", LOCAL, "dialog", "application/dialog-info+xml")


def test_first_state_then_modify_with_the_entity_tag():
    p = pub()
    r1 = p.set_state(BUSY, 0.0)
    assert r1.header("SIP-If-Match") is None and r1.body == BUSY and r1.header("Event") == "dialog"
    assert p.on_response(ok(r1, "e1"), 0.1) is None
    assert p.set_state(BUSY, 0.2) is None  # the server has it
    r2 = p.set_state(RING.replace(b"early", b"confirmed").replace(b"c1", b"c2"), 0.3)
    assert r2.header("SIP-If-Match") == "e1"
    p.on_response(ok(r2, "e2"), 0.4)
    refresh = p.tick(0.4 + 96)
    assert refresh is not None and refresh.body == b"" and refresh.header("SIP-If-Match") == "e2"


def test_one_in_flight_newest_state_after_the_answer():
    p = pub()
    r1 = p.set_state(RING, 0.0)
    assert p.set_state(BUSY, 0.01) is None  # waits
    r2 = p.on_response(ok(r1, "e1"), 0.1)
    assert r2 is not None and r2.body == BUSY and r2.header("SIP-If-Match") == "e1"


def test_412_publishes_the_whole_state_again():
    p = pub()
    r1 = p.set_state(BUSY, 0.0)
    p.on_response(ok(r1, "e1"), 0.1)
    refresh = p.tick(100.0)
    again = p.on_response(make_response(refresh, 412), 100.1)
    assert again is not None and again.header("SIP-If-Match") is None and again.body == BUSY


def test_after_an_all_terminated_document_a_new_dialog_is_a_new_entity():
    p = pub()
    r1 = p.set_state(IDLE, 0.0)
    p.on_response(ok(r1, "e-idle"), 0.1)
    r2 = p.set_state(RING, 1.0)
    assert r2.header("SIP-If-Match") is None  # Kamailio would refuse to revive a terminated one


def test_failure_is_reported_and_retried_with_the_whole_state():
    p = pub()
    r1 = p.set_state(BUSY, 0.0)
    assert p.on_response(make_response(r1, 403), 0.1) is None
    assert p.failed == "403 Forbidden"
    retry = p.tick(5.1)
    assert retry is not None and retry.body == BUSY and retry.header("SIP-If-Match") is None


def test_a_proxy_challenge_is_answered_with_the_whole_state_again():
    auth = DigestAuthenticator("kam", lifetime=60)
    p = Publication("sip:201@kam", LOCAL, "dialog", "application/dialog-info+xml",
                    credentials=("gw", "secret-pw"))
    r1 = p.set_state(BUSY, 0.0)
    assert r1.header("Proxy-Authorization") is None
    again = p.on_response(make_response(r1, 407, headers=(
        ("Proxy-Authenticate", auth.challenge(0.0)),)), 0.1)
    assert again is not None and again.body == BUSY and again.cseq[0] > r1.cseq[0]
    assert again.header("Authorization") is None
    assert auth.verify(again.header("Proxy-Authorization"), "PUBLISH",
                       lambda u: sip_ha1("gw", "secret-pw", realm="kam"), 0.2).client == "gw"
