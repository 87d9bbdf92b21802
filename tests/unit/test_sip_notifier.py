"""The BLF notifier core: what a desk phone's SUBSCRIBEs get, no sockets, `now` passed in."""

from __future__ import annotations

import secrets

import pytest

pytest.importorskip("defusedxml", reason="defusedxml is needed for the XML bodies")

from gateway.auth import SIP_REALM, sip_ha1  # noqa: E402
from gateway.model import Call, CallState, Direction, Lamp  # noqa: E402
from gateway.panels.rights import Rights, render_call  # noqa: E402
from gateway.sip.dialoginfo import parse_dialog_info  # noqa: E402
from gateway.sip.digest import digest_response, parse_digest  # noqa: E402
from gateway.sip.notifier import BlfNotifier, BlfView, Notify, Reply  # noqa: E402
from gateway.sip.presence import LineActivity, read_presence  # noqa: E402
from gateway.sip.proto import Local, Request, make_response, parse_name_addr  # noqa: E402


class Office:
    """The gateway's state as the notifier reads it: lamps, calls, rights, passwords."""

    def __init__(self) -> None:
        self.ha1s = {"alice": sip_ha1("alice", "pw-a"), "bob": sip_ha1("bob", "pw-b")}
        self.lamps = {"201": Lamp.IDLE, "202": Lamp.IDLE}
        self.calls: dict[str, tuple[Call, ...]] = {"201": (), "202": ()}
        # who may see what, with which rights (the gateway computes these with
        # gateway.panels.rights; here they are given)
        self.rights = {("alice", "201"): Rights(numbers="all"),
                       ("alice", "202"): Rights(numbers="none"),
                       ("bob", "201"): Rights(numbers="none")}

    def ha1(self, client):
        return self.ha1s.get(client)

    def exists(self, target):
        return target in self.lamps

    def list_members(self, client, target):
        # alice's panel "desk" shows 201 and 202 (with her rights on each)
        return ["201", "202"] if (client, target) == ("alice", "desk") else None

    def view(self, client, target):
        r = self.rights.get((client, target))
        if r is None:
            return None
        return BlfView(self.lamps[target], tuple(render_call(c, r) for c in self.calls[target]))


LOCAL = Local("UDP", "192.0.2.1:5070", "sip:blf@192.0.2.1:5070")


class Phone:
    """A desk phone's SIP as bytes-free requests (what sipp sends in the end-to-end tests)."""

    def __init__(self, user="alice", password="pw-a", target="201", event="dialog"):
        self.user, self.password, self.target, self.event = user, password, target, event
        self.cseq, self.to_tag, self.nc = 0, "", 0
        self.call_id = f"c-{user}-{target}-{event}"
        self.challenge = None
        self.cnonce = secrets.token_hex(6)

    def subscribe(self, expires=600, *, auth=True, eventlist=False):
        self.cseq += 1
        uri = f"sip:{self.target}@192.0.2.1:5070"
        to = f"<sip:{self.target}@192.0.2.1>" + (f";tag={self.to_tag}" if self.to_tag else "")
        headers = [("Via", f"SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-{self.cseq}-{id(self)}"),
                   ("From", f"<sip:{self.user}@192.0.2.1>;tag=ph"), ("To", to),
                   ("Call-ID", self.call_id), ("CSeq", f"{self.cseq} SUBSCRIBE"),
                   ("Contact", "<sip:phone@192.0.2.9:5060>"), ("Event", self.event),
                   ("Expires", str(expires))]
        if eventlist:
            headers.append(("Supported", "eventlist"))
        if auth and self.challenge:
            p = parse_digest(self.challenge)
            self.nc += 1
            nc = f"{self.nc:08x}"
            ha1 = sip_ha1(self.user, self.password, realm=SIP_REALM)
            cnonce = self.cnonce  # each phone its own, as real ones do
            resp = digest_response(ha1, "SUBSCRIBE", uri, p["nonce"], qop="auth", nc=nc,
                                   cnonce=cnonce)
            headers.append(("Authorization",
                            f'Digest username="{self.user}", realm="{SIP_REALM}", '
                            f'nonce="{p["nonce"]}", uri="{uri}", response="{resp}", '
                            f'qop=auth, nc={nc}, cnonce="{cnonce}"'))
        return Request(tuple(headers), b"", "SUBSCRIBE", uri)

    def take(self, actions):
        reply = next(a.response for a in actions if isinstance(a, Reply))
        if reply.status == 401:
            self.challenge = reply.header("WWW-Authenticate")
            self.nc = 0
        if reply.status == 200 and not self.to_tag:
            self.to_tag = parse_name_addr(reply.header("To")).tag
        return reply, [a for a in actions if isinstance(a, Notify)]


def login(n, phone, now=0.0, expires=600):
    reply, _ = phone.take(n.on_request(phone.subscribe(expires, auth=False), "ph", now))
    assert reply.status == 401
    return phone.take(n.on_request(phone.subscribe(expires), "ph", now))


def state(notify):
    return notify.request.header("Subscription-State")


def test_dialog_subscription_granted_short_and_first_notify_is_the_real_lamp():
    office = Office()
    office.lamps["201"] = Lamp.BUSY
    n = BlfNotifier(office, lambda d: LOCAL)
    reply, notifies = login(n, Phone())
    assert reply.status == 200 and reply.header("Expires") == "120"
    (first,) = notifies
    assert state(first) == "active;expires=120"
    assert first.request.header("Content-Type") == "application/dialog-info+xml"
    info = parse_dialog_info(first.request.body)
    assert info.version == 0 and [d.state for d in info.dialogs] == ["confirmed"]


def test_version_counts_up_and_only_changes_are_sent():
    office = Office()
    n = BlfNotifier(office, lambda d: LOCAL)
    _, (first,) = login(n, Phone())
    n.notify_done(first.key, 200, 1)
    assert n.changed({"201"}, 2) == []  # nothing changed for this phone
    office.lamps["201"] = Lamp.RINGING
    office.calls["201"] = (Call("k1", Direction.IN, CallState.RINGING, 1.0, "0301234", "Eve"),)
    (second,) = n.changed({"201"}, 3)
    info = parse_dialog_info(second.request.body)
    assert info.version == 1
    (d,) = info.dialogs
    assert d.state == "early" and d.direction == "recipient"
    assert d.remote_uri.startswith("sip:0301234@") and d.remote_display == "Eve"
    # A change while that NOTIFY is unanswered waits; the newest goes when it is answered.
    office.lamps["201"] = Lamp.BUSY
    office.calls["201"] = (Call("k1", Direction.IN, CallState.CONNECTED, 1.0, "0301234"),)
    assert n.changed({"201"}, 4) == []
    (third,) = n.notify_done(second.key, 200, 5)
    assert parse_dialog_info(third.request.body).version == 2
    assert parse_dialog_info(third.request.body).dialogs[0].state == "confirmed"


def test_remote_identity_follows_the_watchers_number_right():
    office = Office()
    office.lamps["201"] = Lamp.RINGING
    office.calls["201"] = (Call("k1", Direction.IN, CallState.RINGING, 1.0, "0301234", "Eve"),)
    n = BlfNotifier(office, lambda d: LOCAL)
    _, (seen,) = login(n, Phone("alice", "pw-a"))
    _, (hidden,) = login(n, Phone("bob", "pw-b"))
    assert b"0301234" in seen.request.body
    assert b"0301234" not in hidden.request.body and b"Eve" not in hidden.request.body
    assert parse_dialog_info(hidden.request.body).dialogs[0].state == "early"


def test_presence_subscription_gets_asterisk_pidf_and_unknown_gets_no_body():
    office = Office()
    office.lamps["201"] = Lamp.UNKNOWN
    n = BlfNotifier(office, lambda d: LOCAL)
    _, (first,) = login(n, Phone(event="presence"))
    assert first.request.body == b"" and first.request.header("Content-Type") is None
    n.notify_done(first.key, 200, 1)
    office.lamps["201"] = Lamp.HELD
    (second,) = n.changed(["201"], 2)
    assert read_presence(second.request.body) is LineActivity.HELD
    assert b"<note>On hold</note>" in second.request.body


@pytest.mark.parametrize(("phone", "status"), [
    (Phone("alice", "wrong"), 403),
    (Phone("mallory", "x"), 403),
    (Phone("bob", "pw-b", target="202"), 403),  # no right on 202
    (Phone("alice", "pw-a", target="299"), 404),
    (Phone(event="message-summary"), 489),
])
def test_refusals(phone, status):
    n = BlfNotifier(Office(), lambda d: LOCAL)
    first, _ = phone.take(n.on_request(phone.subscribe(auth=False), "ph", 0))
    if status == 489:
        assert first.status == 489 and "dialog" in first.header("Allow-Events")
        return
    reply, notifies = phone.take(n.on_request(phone.subscribe(), "ph", 0))
    assert reply.status == status and notifies == [] and not n.subs


def test_refresh_is_authenticated_and_a_stale_nonce_gets_401_stale():
    n = BlfNotifier(Office(), lambda d: LOCAL, nonce_lifetime=300)
    phone = Phone()
    _, (first,) = login(n, phone)
    n.notify_done(first.key, 200, 1)  # the phone answered the first NOTIFY
    # Refresh without credentials: challenged, subscription kept.
    reply, _ = phone.take(n.on_request(phone.subscribe(auth=False), "ph", 60))
    assert reply.status == 401 and len(n.subs) == 1
    reply, (notify,) = phone.take(n.on_request(phone.subscribe(), "ph", 61))
    assert reply.status == 200 and state(notify) == "active;expires=120"
    # Nine minutes later the nonce is too old: 401 stale=true, then fine with the new one.
    reply, _ = phone.take(n.on_request(phone.subscribe(), "ph", 61 + 540))
    assert reply.status == 401 and "stale=true" in reply.header("WWW-Authenticate")
    # (the subscription expired meanwhile in real life; here we only look at the answer)


def test_refresh_with_an_old_cseq_or_unknown_dialog():
    n = BlfNotifier(Office(), lambda d: LOCAL)
    phone = Phone()
    login(n, phone)
    phone.cseq -= 2
    reply, _ = phone.take(n.on_request(phone.subscribe(), "ph", 1))
    assert reply.status == 500
    stranger = Phone()
    stranger.to_tag = "forgotten"  # e.g. the gateway restarted
    reply, _ = stranger.take(n.on_request(stranger.subscribe(), "ph", 1))
    assert reply.status == 481


def test_fetch_and_unsubscribe_carry_the_real_lamp():
    office = Office()
    office.lamps["201"] = Lamp.BUSY
    n = BlfNotifier(office, lambda d: LOCAL)
    reply, (notify,) = login(n, Phone(event="presence"), expires=0)
    assert reply.status == 200 and reply.header("Expires") == "0"
    assert state(notify) == "terminated;reason=timeout"
    assert read_presence(notify.request.body) is LineActivity.BUSY and not n.subs
    phone = Phone()
    login(n, phone)
    reply, (final,) = phone.take(n.on_request(phone.subscribe(0), "ph", 5))
    assert reply.status == 200 and state(final) == "terminated;reason=timeout"
    assert parse_dialog_info(final.request.body).dialogs[0].state == "confirmed"
    assert not n.subs


def test_expiry_shutdown_and_failed_notify_end_subscriptions():
    n = BlfNotifier(Office(), lambda d: LOCAL)
    _, (first,) = login(n, Phone(), now=0)
    assert n.next_deadline() == 120
    (last,) = n.tick(120)
    assert state(last) == "terminated;reason=timeout" and not n.subs
    _, (first,) = login(n, Phone(target="202"), now=200)
    (bye,) = n.shutdown(201)
    assert state(bye) == "terminated;reason=probation;retry-after=10"
    # A phone coming back while this process is still closing is sent away.
    phone = Phone(target="201")
    reply, _ = phone.take(n.on_request(phone.subscribe(auth=False), "ph", 202))
    assert reply.status == 503 and reply.header("Retry-After") == "5"
    n = BlfNotifier(Office(), lambda d: LOCAL)
    _, (first,) = login(n, Phone(target="201"), now=300)
    n.notify_done(first.key, 481, 301)
    assert not n.subs


def test_password_and_rights_changes_end_live_subscriptions_at_once():
    office = Office()
    n = BlfNotifier(office, lambda d: LOCAL)
    login(n, Phone("alice", "pw-a", "201"))
    login(n, Phone("alice", "pw-a", "202"))
    login(n, Phone("bob", "pw-b", "201"))
    office.rights.pop(("alice", "202"))
    office.ha1s["bob"] = sip_ha1("bob", "new")
    ended = {(parse_name_addr(x.request.header("From")).uri, state(x))
             for x in n.recheck(10)}
    assert ended == {("sip:202@192.0.2.1", "terminated;reason=rejected"),
                     ("sip:201@192.0.2.1", "terminated;reason=deactivated")}
    assert [(b.client, b.target) for b in n.subs.values()] == [("alice", "201")]
    # The rejected one carried no state; the deactivated one the lamp (no flicker).


def test_limits_per_client():
    n = BlfNotifier(Office(), lambda d: LOCAL, max_per_client=1)
    login(n, Phone(target="201"))
    reply, notifies = login(n, Phone(target="202"))
    assert reply.status == 503 and reply.header("Retry-After") and not notifies


def test_too_brief_expiry_gets_423():
    n = BlfNotifier(Office(), lambda d: LOCAL)
    reply, _ = login(n, Phone(), expires=5)
    assert reply.status == 423 and reply.header("Min-Expires") == "30"


def test_options_and_other_methods():
    n = BlfNotifier(Office(), lambda d: LOCAL)
    req = Phone().subscribe()
    opt = Request(tuple((k, v.replace("SUBSCRIBE", "OPTIONS")) for k, v in req.headers), b"",
                  "OPTIONS", req.uri)
    (reply,) = n.on_request(opt, "ph", 0)
    assert reply.response.status == 200 and "dialog" in reply.response.header("Allow-Events")
    pub = Request(tuple((k, v.replace("SUBSCRIBE", "PUBLISH")) for k, v in req.headers), b"",
                  "PUBLISH", req.uri)
    assert n.on_request(pub, "ph", 0)[0].response.status == 405
    assert make_response  # used by the phone helpers through the notifier


def test_a_flood_from_one_address_is_held_back_others_unaffected():
    n = BlfNotifier(Office(), lambda d: LOCAL)
    phone = Phone("alice", "wrong")
    statuses = [n.on_request(phone.subscribe(auth=False), "10.0.0.66", 0.0)[0].response.status
                for _ in range(2050)]
    assert statuses.count(401) == 2000 and statuses[-1] == 503
    # Another phone is served normally meanwhile.
    other = Phone()
    reply, _ = other.take(n.on_request(other.subscribe(auth=False), "10.0.0.7", 0.0))
    assert reply.status == 401
    # A tenth of a second later the flooder gets 20 more answers.
    later = [n.on_request(phone.subscribe(auth=False), "10.0.0.66", 0.1)[0].response.status
             for _ in range(25)]
    assert later.count(401) == 20


def list_login(n, phone, now=0.0):
    reply, _ = phone.take(n.on_request(phone.subscribe(auth=False, eventlist=True), "ph", now))
    return phone.take(n.on_request(phone.subscribe(eventlist=True), "ph", now))


def parts(body: bytes) -> list[bytes]:
    return [p for p in body.split(b"--blf-gateway-rlmi-boundary") if b"Content-Type" in p]


def test_a_panel_as_resource_list_rfc4662():
    office = Office()
    office.lamps["201"] = Lamp.RINGING
    office.calls["201"] = (Call("k1", Direction.IN, CallState.RINGING, 1.0, "0301234", "Eve"),)
    office.lamps["202"] = Lamp.UNKNOWN
    n = BlfNotifier(office, lambda d: LOCAL)
    reply, (first,) = list_login(n, Phone(target="desk"))
    assert reply.status == 200 and reply.header("Require") == "eventlist"
    req = first.request
    assert req.header("Content-Type").startswith('multipart/related;type="application/rlmi+xml"')
    rlmi, dlg = parts(req.body)
    assert b'fullState="true"' in rlmi and b'version="1"' not in rlmi  # counts from 0
    assert b'uri="sip:201@192.0.2.1"' in rlmi and b'state="active"' in rlmi
    assert b'uri="sip:202@192.0.2.1"' in rlmi and b'state="pending"' in rlmi  # unknown: no part
    info = parse_dialog_info(dlg.split(b"\r\n\r\n", 1)[1])
    assert info.dialogs[0].state == "early" and info.dialogs[0].remote_uri.startswith(
        "sip:0301234@")
    # A change of one member: the list again, version 1.
    n.notify_done(first.key, 200, 1)
    office.lamps["202"] = Lamp.BUSY
    (second,) = n.changed({"202"}, 2)
    rlmi2 = parts(second.request.body)[0]
    assert b'version="1"' in rlmi2 and rlmi2.count(b'state="active"') == 2


def test_a_list_needs_eventlist_support_and_the_panel_right():
    n = BlfNotifier(Office(), lambda d: LOCAL)
    phone = Phone(target="desk")
    phone.take(n.on_request(phone.subscribe(auth=False), "ph", 0))
    reply, _ = phone.take(n.on_request(phone.subscribe(), "ph", 0))
    assert reply.status == 421 and reply.header("Require") == "eventlist"
    reply, _ = list_login(n, Phone("bob", "pw-b", target="desk"))
    assert reply.status == 404  # not bob's panel: no such target for him
