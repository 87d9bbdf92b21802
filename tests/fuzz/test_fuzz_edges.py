"""Fuzzing of every parser at the edge (hypothesis; a few seconds each in CI).

What a hostile or broken peer can send: WebSocket frames, TAPI bridge lines, AMI bytes,
PIDF bodies. For each parser the promise is the same: it returns a value of the documented
kind or refuses with its documented error, never anything else; and whatever it returns can
be kept in Redis and sent on as valid JSON (finite numbers, strings that encode as UTF-8).
"""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.calls import CallReport, ServiceReport
from gateway.server.hub import dumps
from gateway.server.wire import WireError, error, parse_request
from gateway.sip.presence import PidfError, PresenceInfo, parse_pidf
from gateway.ami.protocol import AmiMessage, AmiParser, AmiProtocolError
from gateway.ami.translate import AmiTranslator
from gateway.tapi.bridge import BridgeLineError, parse_line

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# Values a hostile peer puts in a field: every JSON type, odd numbers, odd strings.
odd_strings = st.sampled_from(["", "\ud800", "a\udfffb", "x" * 200, "9" * 130, "\x00", "é",
                               "💥", "NaN", "-1", "1e999", "true"])
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40), odd_strings)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
# The values that broke things before, drawn often rather than by luck.
hostile = st.sampled_from([math.nan, math.inf, -math.inf, 10**30, 2**64, -1, "\ud800",
                           "a\udfffb", True, False, [], {}, "x" * 200, "7" * 4000, 1.5])
field_values = st.one_of(hostile, json_values)


def raw_json(value) -> str:
    """What Python would write, NaN/Infinity and lone-surrogate escapes included."""
    return json.dumps(value, allow_nan=True, ensure_ascii=True)


def assert_sendable(obj) -> None:
    """What a strict JSON reader at the other end would accept."""
    text = json.dumps(obj, allow_nan=False, ensure_ascii=False)  # raises on NaN/Infinity
    text.encode("utf-8")  # raises on a lone surrogate
    assert dumps(obj) == json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# -- WebSocket requests ------------------------------------------------------------------

WIRE_TYPES = ["login", "subscribe", "unsubscribe", "select_device", "softphone", "pickup",
              "journal", "journal_ack", "presence", "nope"]
WIRE_FIELDS = ["id", "client", "password", "token", "computer", "batch", "panel", "device",
               "since", "call", "state", "direction", "remote", "remote_name", "link", "member",
               "op", "scope", "upto", "status", "info", "locked"]


@st.composite
def wire_messages(draw) -> str:
    msg = {k: draw(field_values) for k in draw(st.lists(st.sampled_from(WIRE_FIELDS),
                                                         unique=True, max_size=6))}
    if draw(st.booleans()):
        msg["type"] = draw(st.sampled_from(WIRE_TYPES))
    return raw_json(msg)


def check_request(text: str) -> None:
    try:
        req = parse_request(text)
    except WireError as exc:
        assert exc.code == "bad_request"
        assert_sendable(error(exc.code, exc.message, exc.id))
        return
    # An accepted request: everything in it can be stored and echoed.
    assert_sendable({"type": "ok", "id": req.id, "req": req.model_dump(mode="json")})
    for value in req.model_dump().values():
        if isinstance(value, float):
            assert math.isfinite(value)


@FUZZ
@given(wire_messages())
def test_wire_requests_with_hostile_fields(text):
    check_request(text)


@FUZZ
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200),
                 json_values.map(raw_json)))
def test_wire_frames_of_anything(frame):
    try:
        check_request(frame)
    except WireError as exc:  # binary frames
        assert exc.code == "bad_request"


# -- TAPI bridge lines -------------------------------------------------------------------

LINES = {"Line 201": ("201", "201"), "202": ("202", "+49 30 555-202")}
BRIDGE_FIELDS = ["device", "call", "state", "caller", "called", "caller_name", "called_name",
                 "blocked", "devstate"]
BRIDGE_STATES = ["idle", "offering", "accepted", "dialtone", "dialing", "ringback", "busy",
                 "connected", "proceeding", "onhold", "conferenced", "onholdpendconf",
                 "onholdpendtransfer", "disconnected", "specialinfo", "unknown", "OFFERING"]


@st.composite
def bridge_lines(draw) -> str:
    msg = {k: draw(field_values) for k in draw(st.lists(st.sampled_from(BRIDGE_FIELDS),
                                                         unique=True, max_size=8))}
    # Mostly well-formed skeletons, so that the deeper checks are reached too.
    if draw(st.booleans()):
        msg["device"] = draw(st.sampled_from(list(LINES) + ["Line 999"]))
        msg["state"] = draw(st.sampled_from(BRIDGE_STATES))
        msg.setdefault("call", draw(st.one_of(st.text(max_size=5), st.integers(-5, 2**65),
                                              hostile)))
    return raw_json(msg)


def check_line(line: str | bytes) -> None:
    try:
        report = parse_line(line, LINES, "tapi#1")
    except BridgeLineError as exc:
        assert str(exc)
        assert len(str(exc)) < 300  # a reason, not an echo of the line
        return
    if report is None:
        return
    assert isinstance(report, (CallReport, ServiceReport))
    raw = json.loads(line)
    if isinstance(report, CallReport):
        # Only the documented call ids get through: a string of 1-128 characters or an
        # integer from 0 to 2^64-1 (never true, 1.5, or 4,000 digits).
        call = raw["call"]
        assert (isinstance(call, str) and 1 <= len(call) <= 128) or (
            type(call) is int and 0 <= call <= 2**64 - 1), call
        assert raw.get("blocked") is None or isinstance(raw["blocked"], bool)
    assert report.device in ("201", "202")
    if isinstance(report, CallReport):
        assert 1 <= len(report.call) <= 128
        for text in (report.call, report.remote, report.remote_name):
            if text is not None:
                text.encode("utf-8")
        assert report.remote is None or len(report.remote) <= 64


@FUZZ
@given(bridge_lines())
def test_bridge_lines_with_hostile_fields(line):
    check_line(line)


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_bridge_lines_of_anything(line):
    check_line(line)


# Raw member texts, so that lines hold what json.dumps never writes: repeated keys, NaN,
# numbers too large for a float, lone-surrogate escapes, deep nesting, keys out of place.
raw_members = st.lists(st.tuples(
    st.sampled_from(BRIDGE_FIELDS + ["pad"]),
    st.one_of(field_values.map(raw_json),
              st.sampled_from(["NaN", "-Infinity", "1e999", "1" * 400 + ".5", "1.0", "-0",
                               "1E2", '"\\ud800"', '"a\\"b"', '"x:y"', "[[[[1]]]]", "{}",
                               "18446744073709551616", "18446744073709551615", "007"]))),
    max_size=9)


@st.composite
def raw_bridge_lines(draw) -> bytes:
    members = draw(raw_members)
    if draw(st.booleans()):
        members = [("device", '"Line 201"'), ("call", '"c1"'), ("state", '"offering"')] + members
    members = draw(st.permutations(members))
    sep = draw(st.sampled_from([",", ", ", " ,"]))
    return ("{" + sep.join(f'"{k}": {v}' for k, v in members) + "}").encode()


@FUZZ
@given(st.one_of(raw_bridge_lines(), bridge_lines().map(str.encode)))
def test_the_fast_reading_of_a_bridge_line_agrees_with_the_strict_one(line):
    """The one-pass reading of call lines (gateway.tapi.bridge._fast_read) may only take a
    line the strict reading takes, and must read it the same; every other line goes the
    strict way, so refusals and their texts are the strict reader's."""
    from gateway.tapi.bridge import _fast_read, _strict_read

    fast = _fast_read(line)
    if fast is None:
        return
    strict = _strict_read(line, LINES, "tapi#1")  # raises if the strict reading refuses
    assert strict.model_dump() == fast.model_dump()
    assert type(strict.call) is type(fast.call)
    check_line(line)


# Values at and around every limit of the strict reading, none needing an escape, so that
# the fast reading takes many of these lines and both readings are compared on them.
def _text(n: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(blacklist_characters='"\\:', blacklist_categories=("Cs", "Cc")),
                   min_size=n, max_size=n)


edge_values = st.one_of(
    st.sampled_from([0, 1, 32, 33, 64, 65, 128, 129]).flatmap(_text),
    st.sampled_from([0, 1, -1, 2**32, 2**64 - 1, 2**64, True, False, None, 1.5]),
    st.text(max_size=8))


@st.composite
def edge_lines(draw) -> bytes:
    # A valid line, then one field (or a key the strict reading ignores) set to a value at
    # or around a limit, or left out.
    msg: dict = {"device": "202", "call": draw(st.sampled_from(["c1", 7])),
                 "state": draw(st.sampled_from(BRIDGE_STATES))}
    for key in draw(st.lists(st.sampled_from(BRIDGE_FIELDS[3:7]), unique=True, max_size=4)):
        msg[key] = draw(st.one_of(st.none(), st.sampled_from(["0301", "Bob"])))
    key = draw(st.sampled_from(BRIDGE_FIELDS[:8] + ["pad"]))
    if draw(st.integers(0, 9)) == 0:
        msg.pop(key, None)
    else:
        msg[key] = draw(edge_values)
    return json.dumps(msg, ensure_ascii=False).encode()


@settings(max_examples=1500, deadline=None)
@given(edge_lines())
def test_the_fast_reading_at_every_limit_of_the_strict_one(line):
    """Lines at every length and range limit: what the fast reading takes, the strict one
    takes alike; a line the strict reading takes with nothing that needs the strict way (a
    colon or an escape inside a string) the fast reading takes too."""
    from gateway.tapi.bridge import BridgeLineError, _fast_read, _strict_read

    fast = _fast_read(line)
    try:
        strict = _strict_read(line, LINES, "tapi#1")
    except BridgeLineError:
        strict = None
    if fast is not None:
        assert strict is not None and strict.model_dump() == fast.model_dump()
        assert type(strict.call) is type(fast.call)
    elif strict is not None and not hasattr(strict, "devstate"):
        assert line.count(b":") != len(json.loads(line)) or b"\\" in line or \
            "devstate" in json.loads(line) or "pad" in json.loads(line), line


# -- AMI ---------------------------------------------------------------------------------

AMI_EVENTS = ["Newchannel", "Newstate", "NewConnectedLine", "Hangup", "DialBegin", "DialEnd",
              "Hold", "Unhold", "Rename", "DeviceStateChange", "ExtensionStatus",
              "CoreShowChannel", "CoreShowChannelsComplete", "Bogus"]
AMI_KEYS = ["Channel", "Uniqueid", "Linkedid", "ChannelState", "ChannelStateDesc",
            "CallerIDNum", "CallerIDName", "ConnectedLineNum", "ConnectedLineName", "Exten",
            "Context", "DestChannel", "DestUniqueid", "DestLinkedid", "Device", "State",
            "Status", "Newname", "DialStatus", "Hint"]
ami_values = st.one_of(st.sampled_from(["PJSIP/201-0001", "PJSIP/202-0002", "SIP/201-1",
                                        "1", "2", "4", "6", "Up", "Ringing", "201", "202",
                                        "INUSE", "NOT_INUSE", "RINGING", "ONHOLD", "", "a1",
                                        "a2", "<unknown>"]),
                       st.text(max_size=12).filter(lambda s: "\n" not in s and "\r" not in s))


@st.composite
def ami_streams(draw) -> bytes:
    out = bytearray(b"Asterisk Call Manager/5.0.1\r\n")
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 9)) == 0:
            out += draw(st.binary(max_size=60))  # garbage between messages
            continue
        out += f"Event: {draw(st.sampled_from(AMI_EVENTS))}\r\n".encode()
        for key in draw(st.lists(st.sampled_from(AMI_KEYS), max_size=8)):
            out += f"{key}: {draw(ami_values)}\r\n".encode("utf-8", "surrogatepass")
        out += b"\r\n"
    return bytes(out)


@FUZZ
@given(ami_streams(), st.lists(st.integers(1, 64), max_size=20))
def test_ami_parser_and_translator_take_any_stream(stream, cuts):
    parser = AmiParser(max_line=256, max_message=2048)
    translator = AmiTranslator({"PJSIP/201": "201", "202": "202"})
    pos = 0
    chunks = []
    for cut in cuts:  # the transport splits the stream anywhere
        chunks.append(stream[pos:pos + cut])
        pos += cut
    chunks.append(stream[pos:])
    for chunk in chunks:
        for item in parser.feed(chunk):
            assert isinstance(item, (AmiMessage, AmiProtocolError))
            if isinstance(item, AmiMessage):
                for report in translator.feed(item):
                    assert report.device in ("201", "202")
        assert len(parser._buf) <= parser.max_line + 1  # never more than one line buffered


# Lines that make a message unusual, for the whole-message reading to leave alone.
odd_ami_lines = st.sampled_from([
    b"Event: Newstate", b"event: Hangup", b"Response: Success", b"Action: Ping",
    b"Channel: PJSIP/201-0001", b"Uniqueid: a1", b"CallerIDName: M\xfcller",  # Latin-1
    b"CallerIDName: M\xc3\xbcller", b": no key", b"no colon", b"Key\x01: control",
    b"  Spaced  :  value  ", b"Value: a:b:c", b"Key: cr\rinside", b"Key: trailing\r",
    b"Asterisk Call Manager/9.0.0", b"ChanVariable: x=1", b"ChanVariable: y=2", b"",
    b"Status: " + b"x" * 300])


@st.composite
def odd_ami_streams(draw) -> bytes:
    out = bytearray()
    for _ in range(draw(st.integers(0, 10))):
        lines = draw(st.lists(odd_ami_lines, max_size=8))
        if draw(st.booleans()):
            lines = [b"Event: " + draw(st.sampled_from(AMI_EVENTS)).encode()] + lines
        for line in lines:
            out += line + draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
        out += draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b""]))
    return bytes(out)


def ami_items(parser: AmiParser, stream: bytes, cuts: list[int]) -> list:
    pos, out = 0, []
    for cut in [*cuts, len(stream)]:
        for item in parser.feed(stream[pos:pos + cut]):
            out.append((item.kind, item.name, item.pairs, dict(item.fields))
                       if isinstance(item, AmiMessage) else (item.reason, item.sample))
        pos += cut
    return out + [(parser.messages, parser.errors)]


class LineByLine(AmiParser):
    """The parser with its whole-message reading off: every line on its own, at once."""

    def _blocks(self, out: list) -> int:
        return 0

    def _event(self, *args) -> bool:
        return False

    def _whole_block(self, *args) -> bool:
        return False

    def _pending_event(self, pos: int) -> bool:
        return False


@FUZZ
@given(st.one_of(ami_streams(), odd_ami_streams()), st.lists(st.integers(1, 64), max_size=20))
@example(b"Event: Hangup\r\nChannel: a\r\nEvent: Newstate\r\n\r\n", [])  # kind twice
@example(b"Event: Hangup\r\nX: 1\r\nX: 2\r\nevent: Newstate\r\n\r\n", [])
@example(b"Event: Hangup\r\nResponse: Success\r\n\r\n", [])
@example(b"Channel: a\r\nEvent: Hangup\r\n\r\n", [])  # a line before the kind line
@example(b"Event: Hangup\r\nCallerIDName: M\xfcller\r\n\r\n", [])  # Latin-1
@example(b"Event: Hangup\nChannel: a\r\n\r\n", [])  # a bare LF inside
@example(b"Asterisk Call Manager/9.0.0\r\nResponse: Success\r\n\r\n", [3, 30])
def test_the_whole_message_reading_of_ami_agrees_with_the_line_by_line_one(stream, cuts):
    """Reading a well-formed message at once must give exactly the messages, errors and
    counts that reading it line by line gives, however the stream is cut."""
    assert ami_items(AmiParser(max_line=256, max_message=2048), stream, cuts) == \
        ami_items(LineByLine(max_line=256, max_message=2048), stream, cuts)
    # And with the translator's values picked, twice over: the second time, the orders of
    # keys of the first are read by their matches.
    picking = AmiParser(max_line=256, max_message=2048)
    picking.picks = AmiTranslator({"PJSIP/201": "a", "202": "b"}).picks
    assert ami_items(picking, stream * 2, cuts) == \
        ami_items(LineByLine(max_line=256, max_message=2048), stream * 2, cuts)


# -- PIDF (SIP presence bodies) ----------------------------------------------------------

PIDF_PARTS = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:201@pbx">',
    '<tuple id="t"><status><basic>open</basic></status></tuple>',
    '<tuple id="t"><status><basic>closed</basic></status><note>On the phone</note></tuple>',
    '<dm:person xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
    'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"><rpid:activities><rpid:on-the-phone/>'
    '</rpid:activities></dm:person>',
    "<note>Ready</note>",
    '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>',
    "&lol2;",
    '<!ENTITY xxe SYSTEM "file:///etc/passwd">',
    "</presence>",
    "<",
    "&#xD800;",
    "\x00",
]


@FUZZ
@given(st.one_of(st.lists(st.sampled_from(PIDF_PARTS), max_size=10).map("".join),
                 st.binary(max_size=300), st.text(max_size=300)))
def test_pidf_parser_refuses_or_parses(body):
    try:
        info = parse_pidf(body)
    except PidfError as exc:
        assert str(exc)
        return
    assert isinstance(info, PresenceInfo)
    assert len(info.note) <= 256
    info.note.encode("utf-8")


# -- the bridge's auth line --------------------------------------------------------------

@FUZZ
@given(st.one_of(st.binary(max_size=200),
                 st.dictionaries(st.sampled_from(["auth", "x"]), field_values,
                                 max_size=2).map(lambda d: raw_json(d).encode())))
def test_bridge_auth_line_is_refused_with_a_reason_or_taken(line):
    from gateway.tapi.access import BridgeAccess

    access = BridgeAccess.build(b"a-shared-secret-of-some-length", [])
    reason = access.check_auth(line)
    assert reason is None or (isinstance(reason, str) and "a-shared-secret" not in reason)
    if reason is None:
        assert json.loads(line) == {"auth": "a-shared-secret-of-some-length"}
