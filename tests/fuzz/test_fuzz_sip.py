"""Fuzzing of the SIP layer's parsers (dialog-info bodies, SIP messages, the stream framer).

Same promise as tests/fuzz/test_fuzz_edges.py: the documented value or the documented error,
never anything else, whatever a hostile peer sends.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sip import dialoginfo
from gateway.sip.proto import message

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

DIALOG_PARTS = [
    '<?xml version="1.0"?>',
    '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full" '
    'entity="sip:201@pbx">',
    '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="%s" state="partial">'
    % ("9" * 5000),
    '<dialog id="a" call-id="c1" local-tag="l" remote-tag="r" direction="recipient">',
    '<dialog id="b" direction="initiator">', '<state>early</state>', '<state>confirmed</state>',
    '<state>terminated</state>', '<state>bogus</state>',
    '<remote><identity display="Mrs &amp; B">sip:0301234@pbx</identity></remote>',
    '<local><target uri="sip:201@pbx"><param pname="+sip.rendering" pvalue="no"/></target>'
    '</local>',
    "</dialog>", "</dialog-info>",
    '<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>', "&b;",
    '<!ENTITY xxe SYSTEM "file:///etc/passwd">', "&#xD800;", "<", "\x00",
]


@FUZZ
@given(st.one_of(st.lists(st.sampled_from(DIALOG_PARTS), max_size=14).map("".join),
                 st.binary(max_size=300), st.text(max_size=300)))
def test_dialog_info_parser_refuses_or_parses(body):
    try:
        info = dialoginfo.parse_dialog_info(body)
    except dialoginfo.DialogInfoError as exc:
        assert str(exc)
        return
    assert isinstance(info, dialoginfo.DialogInfo)
    assert len(info.dialogs) <= dialoginfo.MAX_DIALOGS
    for d in info.dialogs:
        assert d.state in dialoginfo.DIALOG_STATES
        dialoginfo.dialog_phase(d)  # every parsed dialog means something to the core


SIP_LINES = [
    "SUBSCRIBE sip:201@gw SIP/2.0", "NOTIFY sip:201@gw SIP/2.0", "SIP/2.0 200 OK",
    "SIP/2.0 99 Odd", "GARBAGE", "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx",
    "v: SIP/2.0/TCP [::1]:99999", "From: <sip:a@b>;tag=1", "f: \"x\" <sip:a@b", "To: <sip:201@gw>",
    "Call-ID: abc", "i: " + "x" * 9000, "CSeq: 1 SUBSCRIBE", "CSeq: 99999999999999999999 NOTIFY",
    "CSeq: x", "Content-Length: 0", "Content-Length: 5", "l: -1",
    "Content-Length: " + "9" * 5000, "Event: dialog", " folded continuation",
    "Expires: 3600", "Expires: " + "9" * 5000, "bad header", "",
]


@st.composite
def sip_messages(draw) -> bytes:
    lines = draw(st.lists(st.sampled_from(SIP_LINES), max_size=12))
    body = draw(st.sampled_from(["", "hello", "\r\n", "x" * 70000]))
    sep = draw(st.sampled_from(["\r\n", "\n"]))
    return (sep.join(lines) + sep + sep + body).encode("utf-8", "surrogatepass")


@FUZZ
@given(st.one_of(sip_messages(), st.binary(max_size=400)))
def test_sip_message_parser_refuses_or_parses(data):
    try:
        msg = message.parse_message(data)
    except message.SipParseError as exc:
        assert str(exc)
        return
    assert isinstance(msg, (message.Request, message.Response))
    for name in ("Call-ID", "From", "To", "CSeq", "Via"):
        assert msg.header(name)


@FUZZ
@given(st.lists(sip_messages(), max_size=4), st.lists(st.integers(1, 200), max_size=10))
def test_sip_stream_framer_cuts_any_stream(msgs, cuts):
    stream = b"".join(msgs)
    framer = message.StreamFramer()
    pos = 0
    try:
        for cut in [*cuts, len(stream)]:
            for frame in framer.feed(stream[pos:pos + cut]):
                assert len(frame) <= message.MAX_MESSAGE_BYTES
            pos += cut
    except message.SipParseError:
        pass  # framing lost: the caller closes the connection
