"""The SIP line watcher core: subscriptions and NOTIFYs in, reports and lost devices out."""

from __future__ import annotations

import pytest

pytest.importorskip("defusedxml", reason="defusedxml is needed for the XML bodies")

from gateway.calls import CallReport, LineTracker, Phase  # noqa: E402
from gateway.model import Lamp  # noqa: E402
from gateway.panels.lamps import device_lamp  # noqa: E402
from gateway.sip.dialoginfo import parse_dialog_info  # noqa: E402
from gateway.sip.proto import Local, Request, make_response  # noqa: E402
from gateway.sip.watcher import DialogTranslator, Lost, WatchCore, WatchLine  # noqa: E402

LOCAL = Local("UDP", "192.0.2.1:5070", "sip:blf@192.0.2.1:5070")


def doc(version, *dialogs, full=True):
    body = "".join(
        f'<dialog id="{i}" call-id="{cid}" direction="{direction}"><state>{state}</state>'
        f'<remote><identity display="Eve">sip:{remote}@pbx</identity></remote></dialog>'
        for i, cid, direction, state, remote in dialogs)
    return parse_dialog_info(
        f'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" '
        f'state="{"full" if full else "partial"}" entity="sip:201@pbx">{body}</dialog-info>')


def lamps_of(translator, docs):
    tracker = LineTracker(["201"])
    out = []
    for i, d in enumerate(docs):
        for r in translator.update(d):
            states = (tracker.call(r, 100.0 + i) if isinstance(r, CallReport)
                      else tracker.service(r, 100.0 + i))
            for st in states:
                out.append(device_lamp(st))
    return out


def test_dialog_documents_become_calls_with_identity():
    tr = DialogTranslator("201", "sip:201")
    reports = tr.update(doc(1, ("a", "c1@pbx", "recipient", "early", "0301")))
    (r,) = reports
    assert (r.phase, r.direction.value, r.remote, r.remote_name, r.link) == (
        Phase.RINGING, "in", "0301", "Eve", "c1@pbx")


def test_full_state_ends_calls_no_longer_listed_and_old_versions_are_ignored():
    tr = DialogTranslator("201", "sip:201")
    lamps = lamps_of(tr, [
        doc(0),
        doc(1, ("a", "c1", "recipient", "early", "0301")),
        doc(2, ("a", "c1", "recipient", "confirmed", "0301")),
        doc(1, ("a", "c1", "recipient", "early", "0301")),  # late: ignored
        doc(3),
    ])
    assert [x for i, x in enumerate(lamps) if i == 0 or lamps[i - 1] is not x] == [
        Lamp.IDLE, Lamp.RINGING, Lamp.BUSY, Lamp.IDLE]


def test_partial_state_changes_only_what_it_lists():
    tr = DialogTranslator("201", "sip:201")
    tr.update(doc(0, ("a", "c1", "initiator", "confirmed", "0301"),
                  ("b", "c2", "recipient", "early", "0302")))
    reports = tr.update(doc(1, ("b", "c2", "recipient", "terminated", "0302"), full=False))
    assert [(r.call, r.phase) for r in reports if isinstance(r, CallReport)] == [
        ("dlg-201-b", Phase.ENDED)]
    assert tr.calls == {"dlg-201-a": Phase.CONNECTED}


def test_anonymous_caller_is_withheld():
    tr = DialogTranslator("201", "sip:201")
    (r,) = tr.update(doc(0, ("a", "c1", "recipient", "early", "anonymous")))
    assert r.withheld and r.remote is None


class Clock:
    now = 0.0


def core(**kw):
    return WatchCore(lambda dest: LOCAL, lambda uri: "pbx", local_uri="sip:gw@192.0.2.1",
                     call_ids_from=1, **kw)


def answer_first(c, now=0.0, status=200, expires="600"):
    outs, _ = c.update_lines({"sip:201@pbx": WatchLine("sip:201@pbx", "201")}, now)
    (out,) = outs
    resp = make_response(out.request, status, to_tag="srv",
                         headers=(("Expires", expires), ("Contact", "<sip:201@pbx>")))
    return out, c.on_response(out.key, resp, now)


def notify(c, body, state="active;expires=600", cseq=1):
    ln = c.lines["sip:201@pbx"]
    return Request((("Via", "SIP/2.0/UDP pbx;branch=z9hG4bK-n"),
                    ("From", f"<sip:201@pbx>;tag={ln.sub.remote_tag or 'srv'}"),
                    ("To", f"<sip:gw@192.0.2.1>;tag={ln.sub.local_tag}"),
                    ("Call-ID", ln.sub.call_id), ("CSeq", f"{cseq} NOTIFY"),
                    ("Event", "presence"), ("Subscription-State", state),
                    ("Content-Type", "application/pidf+xml")), body, "NOTIFY", "sip:gw@x")


PIDF = (b'<presence xmlns="urn:ietf:params:xml:ns:pidf"><note>On the phone</note>'
        b'<tuple id="a"><status><basic>open</basic></status></tuple></presence>')


def test_probe_refresh_and_silent_server():
    c = core(probe=10, answer_within=4)
    answer_first(c)
    resp, events = c.on_notify(notify(c, PIDF), 0.5)
    assert resp.status == 200 and len(events) == 1  # the reports
    assert c.next_deadline() == 10.0  # the probe, not 80 % of 600 s
    outs, _ = c.tick(10.0)
    (probe,) = outs
    assert probe.request.header("Expires") == "600" and ";tag=srv" in probe.request.header("To")
    assert c.next_deadline() == 14.0
    _, events = c.tick(14.0)
    assert events == [Lost("sip:201", "the server does not answer")]


def test_no_notify_after_the_2xx_is_a_failure():
    c = core(first_notify=10)
    answer_first(c)
    _, events = c.tick(10.0)
    assert isinstance(events[0], Lost)
    assert c.lines["sip:201@pbx"].retry_at is not None


def test_refused_subscription_retries_with_backoff():
    c = core(backoff_initial=1, backoff_max=8)
    _, (outs, events) = answer_first(c, status=403)
    assert isinstance(events[0], Lost)
    assert c.next_deadline() == 1.0
    outs, _ = c.tick(1.0)
    assert len(outs) == 1 and outs[0].request.method == "SUBSCRIBE"


def test_a_notify_for_nobody_gets_481():
    c = core()
    answer_first(c)
    stray = notify(c, PIDF).with_headers(("Call-ID", "other"), drop=("Call-ID",))
    resp, events = c.on_notify(stray, 1)
    assert resp is None and events == []


def test_dialog_identifiers_become_a_replaces_value():
    tr = DialogTranslator("201", "sip:201")
    info = parse_dialog_info(
        '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" '
        'entity="sip:201@pbx"><dialog id="a" call-id="abc@pbx" local-tag="lt" '
        'remote-tag="rt" direction="recipient"><state>early</state></dialog></dialog-info>')
    (r,) = tr.update(info)
    # RFC 3891: to-tag is the watched phone's own tag; early-only while it rings.
    assert r.replaces == "abc@pbx;to-tag=lt;from-tag=rt;early-only"
    (r,) = tr.update(doc(1, ("a", "abc@pbx", "recipient", "confirmed", "0301")))
    assert r.replaces is None  # Asterisk-style: no tags, no Replaces
