"""The sans-I/O SIP layer: messages, non-INVITE transactions and subscriptions, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.auth import sip_ha1
from gateway.sip.digest import DigestAuthenticator
from gateway.sip.proto import (
    Active,
    ClientSubscription,
    Deliver,
    Failed,
    Local,
    Notified,
    Request,
    Send,
    ServerSubscription,
    SipParseError,
    StreamFramer,
    Terminated,
    TimedOut,
    TransactionLayer,
    make_response,
    parse_message,
    parse_name_addr,
)
from gateway.sip.proto.transaction import T1, T2, T4

SUB = (
    "SUBSCRIBE sip:201@192.0.2.1:5070 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-1;rport\r\n"
    "f: \"Desk\" <sip:alice@192.0.2.1>;tag=ph1\r\n"
    "t: <sip:201@192.0.2.1>\r\n"
    "i: call-1@192.0.2.9\r\n"
    "CSeq: 1 SUBSCRIBE\r\n"
    "m: <sip:alice@192.0.2.9:5060>\r\n"
    "o: dialog\r\n"
    "Expires: 600\r\n"
    "Subject: folded\r\n"
    "  across lines\r\n"
    "l: 0\r\n\r\n"
).encode()


def test_parse_request_with_compact_and_folded_headers():
    req = parse_message(SUB)
    assert isinstance(req, Request)
    assert req.method == "SUBSCRIBE" and req.uri == "sip:201@192.0.2.1:5070"
    assert req.call_id == "call-1@192.0.2.9" and req.cseq == (1, "SUBSCRIBE")
    assert req.header("Event") == "dialog" and req.header("subject") == "folded across lines"
    assert parse_name_addr(req.header("From")).tag == "ph1"
    assert req.branch == "z9hG4bK-1"
    again = parse_message(req.serialize())
    assert again.headers == req.headers and again.body == req.body


def test_response_copies_the_transaction_headers_and_adds_our_tag():
    req = parse_message(SUB)
    resp = parse_message(make_response(req, 200, to_tag="gw1").serialize())
    assert resp.status == 200 and resp.reason == "OK"
    assert parse_name_addr(resp.header("To")).tag == "gw1"
    assert resp.header("Via") == req.header("Via") and resp.cseq == req.cseq


BAD = [
    b"",
    b"garbage\r\n\r\n",
    b"SUBSCRIBE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n",  # no Call-ID, From...
    SUB.replace(b"CSeq: 1 SUBSCRIBE", b"CSeq: 1 NOTIFY"),
    SUB.replace(b"CSeq: 1 SUBSCRIBE", b"CSeq: x SUBSCRIBE"),
    SUB.replace(b"l: 0", b"l: 99"),
    SUB.replace(b"l: 0", b"l: -1"),
    SUB.replace(b"o: dialog", b"bad header line"),
    b"SIP/2.0 99 Weird\r\n" + SUB.split(b"\r\n", 1)[1],
    SUB.replace(b"Expires: 600", b"X: " + b"a" * 9000),
    SUB[:-4] + b"".join(b"\r\nX-%d: y" % i for i in range(120)) + b"\r\n\r\n",
    b"x" * 70000,
    b"\xff\xfe" + SUB,
]


@pytest.mark.parametrize("data", BAD, ids=range(len(BAD)))
def test_malformed_or_oversized_messages_are_refused_with_a_reason(data):
    with pytest.raises(SipParseError) as err:
        parse_message(data)
    assert str(err.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_sip_parse_error(data):
    try:
        parse_message(data)
    except SipParseError:
        pass


def test_stream_framer_cuts_messages_and_refuses_a_flood():
    framer = StreamFramer()
    two = SUB + b"\r\n\r\n" + SUB  # keep-alive CRLFs between
    got = framer.feed(two[:50]) + framer.feed(two[50:])
    assert [parse_message(m).call_id for m in got] == ["call-1@192.0.2.9"] * 2
    with pytest.raises(SipParseError):
        StreamFramer(max_message=1000).feed(b"NOTIFY sip:x SIP/2.0\r\n" + b"a" * 2000)
    with pytest.raises(SipParseError):
        StreamFramer().feed(SUB.replace(b"l: 0\r\n", b""))


def test_stream_framer_finds_content_length_anywhere_in_the_head():
    # Kamailio puts Content-Length before other headers (sipp puts it last): framing must
    # not depend on its place, or a PBX's NOTIFYs over TCP/TLS close the connection.
    body = b'<?xml version="1.0"?><presence/>'
    msg = (b"NOTIFY sip:blf@127.0.0.1:5070;transport=tcp SIP/2.0\r\n"
           b"Via: SIP/2.0/TCP 127.0.0.1:5090;branch=z9hG4bK1\r\n"
           b"From: <sip:carol@127.0.0.1>;tag=k1\r\nTo: <sip:blf@127.0.0.1>;tag=g1\r\n"
           b"Call-ID: kam-1\r\nCSeq: 2 NOTIFY\r\nMax-Forwards: 70\r\n"
           b"Content-Length: " + str(len(body)).encode() + b"  \r\n"
           b"Event: presence\r\nContent-Type: application/pidf+xml\r\n\r\n" + body)
    got = StreamFramer().feed(msg + msg[:30])
    assert got == [msg]
    assert parse_message(got[0]).body == body


# ------------------------------------------------------------------ transactions


def notify_req(branch="z9hG4bK-n1"):
    return Request((("Via", f"SIP/2.0/UDP 192.0.2.1:5070;branch={branch}"),
                    ("From", "<sip:201@gw>;tag=a"), ("To", "<sip:alice@ph>;tag=b"),
                    ("Call-ID", "c1"), ("CSeq", "2 NOTIFY")), b"", "NOTIFY", "sip:alice@ph")


def test_client_transaction_retransmits_on_timer_e_and_times_out_on_f():
    layer = TransactionLayer()
    req = notify_req()
    sends = layer.send_request(req, "peer", 0.0, reliable=False)
    assert sends == [Send(req, "peer")]
    times, now, resent, timed_out = [], 0.0, 0, False
    while (d := layer.next_deadline()) is not None:
        now = d
        for a in layer.tick(now):
            if isinstance(a, Send):
                resent += 1
                times.append(now)
            elif isinstance(a, TimedOut):
                timed_out = True
    # E: T1, 2T1, 4T1, then T2 each, until F = 64*T1
    assert times[:4] == [T1, 3 * T1, 7 * T1, 7 * T1 + T2]
    assert timed_out and now == 64 * T1 and not layer.client
    assert all(b - a <= T2 for a, b in zip(times, times[1:]))


def test_client_transaction_final_response_then_timer_k():
    layer = TransactionLayer()
    req = notify_req()
    layer.send_request(req, "peer", 0.0, reliable=False)
    resp = make_response(req, 200)
    assert layer.receive_response(resp, 0.2) == [Deliver(req, resp, "peer")]
    assert layer.receive_response(resp, 0.3) == []  # retransmission absorbed
    assert layer.next_deadline() == pytest.approx(0.2 + T4)
    assert layer.tick(0.2 + T4) == [] and not layer.client
    assert layer.receive_response(make_response(notify_req("z9hG4bK-other"), 200), 1) is None


def test_reliable_transport_does_not_retransmit():
    layer = TransactionLayer()
    layer.send_request(notify_req(), "peer", 0.0, reliable=True)
    assert layer.next_deadline() == 64 * T1
    assert isinstance(layer.tick(64 * T1)[0], TimedOut)


def test_server_transaction_answers_retransmissions_with_the_same_response():
    layer = TransactionLayer()
    req = parse_message(SUB)
    tx, actions = layer.receive_request(req, "phone", reliable=False)
    assert actions == [] and layer.is_new(tx)
    resp = make_response(req, 401)
    assert layer.respond(tx, resp, 1.0) == [Send(resp, "phone")]
    tx2, again = layer.receive_request(req, "phone", reliable=False)
    assert tx2 is tx and again == [Send(resp, "phone")]
    assert layer.next_deadline() == 1.0 + 64 * T1
    layer.tick(1.0 + 64 * T1)
    assert not layer.server


def test_server_transactions_are_bounded():
    layer = TransactionLayer(max_server=2)
    for i in range(2):
        assert layer.receive_request(
            parse_message(SUB.replace(b"z9hG4bK-1", b"z9hG4bK-x%d" % i)), "p",
            reliable=False) is not None
    assert layer.receive_request(parse_message(SUB), "p", reliable=False) is None


# ------------------------------------------------------------------ subscriptions

LOCAL = Local("UDP", "192.0.2.1:5070", "sip:gw@192.0.2.1:5070")


def test_notifier_dialog_refresh_and_terminate():
    req = parse_message(SUB)
    sub = ServerSubscription(req, local=LOCAL, dest="phone", expires=120, now=100.0)
    ok = sub.answer(req, 200, expires=120)
    assert ok.header("Expires") == "120" and parse_name_addr(ok.header("To")).tag
    n1 = sub.notify(110.0, b"<x/>", "application/dialog-info+xml")
    assert n1.uri == "sip:alice@192.0.2.9:5060"
    assert n1.header("Subscription-State") == "active;expires=110"
    assert parse_name_addr(n1.header("To")).tag == "ph1"
    assert n1.header("Event") == "dialog"
    n2 = sub.notify(111.0, None, None, reason="deactivated")
    assert n2.cseq[0] == n1.cseq[0] + 1
    assert n2.header("Subscription-State") == "terminated;reason=deactivated"
    assert sub.terminated and n2.header("Content-Type") is None
    # In-dialog CSeq order
    refresh = parse_message(SUB.replace(b"CSeq: 1", b"CSeq: 2"))
    assert sub.in_order(refresh) and not sub.in_order(refresh)


def test_subscriber_digest_stale_and_refresh():
    auth = DigestAuthenticator("pbx", lifetime=60)
    ha1 = sip_ha1("gw", "secret", realm="pbx")
    sub = ClientSubscription("sip:201@pbx", "sip:gw@pbx", LOCAL, "presence",
                             "application/pidf+xml", "pbx", expires=120,
                             credentials=("gw", "secret"))
    first = sub.subscribe(0.0)
    assert first.header("Authorization") is None
    challenge = make_response(first, 401, headers=(("WWW-Authenticate", auth.challenge(0.0)),))
    events, retry = sub.on_response(first, challenge, 0.1)
    assert events == [] and retry is not None and retry.cseq[0] == first.cseq[0] + 1
    verdict = auth.verify(retry.header("Authorization"), "SUBSCRIBE", lambda u: ha1, 0.2)
    assert verdict.client == "gw"
    ok = make_response(retry, 200, to_tag="srv", headers=(("Expires", "100"),
                                                         ("Contact", "<sip:201@pbx2>")))
    events, nxt = sub.on_response(retry, ok, 0.3)
    assert events == [Active(100)] and nxt is None and sub.established
    assert sub.next_deadline() == pytest.approx(0.3 + 70)  # 100 - 30 s margin
    refresh = sub.tick(70.3)
    assert refresh is not None and refresh.uri == "sip:201@pbx2"
    assert parse_name_addr(refresh.header("To")).tag == "srv"
    # The nonce went stale: the server says so and the client retries once more, silently.
    stale = make_response(refresh, 401, headers=(("WWW-Authenticate",
                                                  auth.challenge(70.4, stale=True)),))
    events, retry2 = sub.on_response(refresh, stale, 70.4)
    assert events == [] and retry2 is not None
    assert auth.verify(retry2.header("Authorization"), "SUBSCRIBE", lambda u: ha1,
                       70.5).client == "gw"
    # Wrong password: one try, then a failure (no loop).
    bad = ClientSubscription("sip:201@pbx", "sip:gw@pbx", LOCAL, "presence", "x", "pbx",
                             credentials=("gw", "wrong"))
    r = bad.subscribe(0)
    _, r2 = bad.on_response(r, make_response(r, 401, headers=(
        ("WWW-Authenticate", auth.challenge(0)),)), 0)
    events, r3 = bad.on_response(r2, make_response(r2, 401, headers=(
        ("WWW-Authenticate", auth.challenge(0)),)), 0)
    assert isinstance(events[0], Failed) and r3 is None


def test_subscriber_481_starts_a_new_dialog_at_once():
    sub = ClientSubscription("sip:201@pbx", "sip:gw@pbx", LOCAL, "presence", "x", "pbx")
    first = sub.subscribe(0)
    sub.on_response(first, make_response(first, 200, to_tag="s1",
                                         headers=(("Expires", "120"),)), 0)
    old_call = sub.call_id
    refresh = sub.tick(1000)
    events, again = sub.on_response(refresh, make_response(refresh, 481), 1000)
    assert isinstance(events[0], Failed) and events[0].retry_after == 0.0
    assert again is not None and again.call_id != old_call
    assert ";tag=" not in again.header("To")


def _notify_for(sub, state, body=b"", cseq=1):
    return Request((("Via", "SIP/2.0/UDP pbx;branch=z9hG4bK-n"),
                    ("From", f"<sip:201@pbx>;tag={sub.remote_tag or 's9'}"),
                    ("To", f"<sip:gw@pbx>;tag={sub.local_tag}"),
                    ("Call-ID", sub.call_id), ("CSeq", f"{cseq} NOTIFY"),
                    ("Event", "presence"), ("Subscription-State", state),
                    ("Content-Type", "application/pidf+xml")), body, "NOTIFY",
                   "sip:gw@192.0.2.1")


def test_subscriber_reads_notifies_and_terminations():
    sub = ClientSubscription("sip:201@pbx", "sip:gw@pbx", LOCAL, "presence", "x", "pbx")
    sub.subscribe(0)
    n = _notify_for(sub, "active;expires=60", b"<presence/>")
    assert sub.matches(n)  # before the 2xx: the NOTIFY establishes the dialog
    resp, events = sub.on_notify(n, 0.1)
    assert resp.status == 200 and events == [Notified(b"<presence/>",
                                                      "application/pidf+xml", "active")]
    assert sub.established
    resp, events = sub.on_notify(_notify_for(sub, "active", b"", 2), 1)
    assert events == [Notified(b"", "application/pidf+xml", "active")]
    resp, events = sub.on_notify(
        _notify_for(sub, "terminated;reason=probation;retry-after=20", b"", 3), 2)
    assert events == [Terminated("probation", 20.0)]
    other = _notify_for(sub, "active")
    assert not sub.matches(other.with_headers(("Call-ID", "x"), drop=("Call-ID",)))


def test_fetch_is_expires_zero_and_schedules_nothing():
    sub = ClientSubscription("sip:201@pbx", "sip:gw@pbx", LOCAL, "presence", "x", "pbx")
    req = sub.subscribe(0, expires=0)
    assert req.header("Expires") == "0"
    events, nxt = sub.on_response(req, make_response(req, 200, to_tag="s",
                                                     headers=(("Expires", "0"),)), 0)
    assert events == [Active(0)] and sub.next_deadline() is None
