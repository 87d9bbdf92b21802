"""The AMI parser, translator and connection against their reference (tests/ami_reference.py:
the code before the fast reading), on recorded and random streams cut anywhere.

What must not move: the messages (kind, name, every line, every lookup), the errors and
their samples, the counts, the reports, what a connection says and counts. The streams:

- what the test peer's model emits for random call scenarios (the events Asterisk writes,
  with the Newexten, VarSet, DialState, ... a real stream carries besides them, and list
  items and answers in a session);
- the recorded transcript in tests/fixtures/ami;
- events with random keys and values: keys in other spellings, repeated, with spaces or odd
  characters; values with colons, CRs, control characters, Latin-1 or any Unicode; second
  kind lines, lines without a key, banners, garbage, bare LFs, missing empty lines.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ami_reference as ref  # noqa: E402
from amipeer import PbxModel  # noqa: E402

from gateway.ami.connection import (  # noqa: E402
    ActionAnswered,
    AmiConnection,
    Connected,
    ReportsReady,
)
from gateway.ami.protocol import (  # noqa: E402
    AmiFields,
    AmiMessage,
    AmiParser,
    AmiProtocolError,
    format_message,
)
from gateway.ami.translate import AmiTranslator  # noqa: E402

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
# Whole scenarios through the translator or a connection: fewer, each covers more.
SCENARIOS = settings(FUZZ, max_examples=120)
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ami"
LINES = {"PJSIP/201": "alice", "202": "bob", "PJSIP/203": "carol", "204@from-internal": "dave"}
PROBES = ["Channel", "UNIQUEID", "uniqueid", "ActionID", "Event", "ChanVariable", "Exten",
          "DestChannel", "X-Future", "Message", "Nope"]

# -- streams -------------------------------------------------------------------------------

# What a real Asterisk sends besides the events the translator reads (classes call and
# dialplan), in its own form.
NOISE = [
    [("Event", "Newexten"), ("Privilege", "dialplan,all"), ("Channel", "PJSIP/201-00000001"),
     ("Uniqueid", "1700000000.1"), ("Extension", "201"), ("Application", "Dial"),
     ("AppData", "PJSIP/201,30,tT")],
    [("Event", "VarSet"), ("Privilege", "dialplan,all"), ("Channel", "PJSIP/202-00000002"),
     ("Uniqueid", "1700000000.2"), ("Variable", "DIALSTATUS"), ("Value", "")],
    [("Event", "DialState"), ("Privilege", "call,all"), ("Channel", "PJSIP/trunk-00000003"),
     ("DestChannel", "PJSIP/201-00000004"), ("DialStatus", "RINGING")],
    [("Event", "RTCPSent"), ("Privilege", "reporting,all"), ("Channel", "PJSIP/203-00000005"),
     ("SSRC", "0x1234"), ("PT", "200(SR)"), ("To", "10.0.0.5:4002")],
    [("Event", "BridgeCreate"), ("Privilege", "call,all"), ("BridgeUniqueid", "b-1"),
     ("BridgeType", "basic")],
    [("Event", "HangupRequest"), ("Privilege", "call,all"), ("Channel", "PJSIP/204-00000006"),
     ("Uniqueid", "1700000000.6"), ("Cause", "16")],
    [("Event", "FullyBooted"), ("Privilege", "system,all"), ("Status", "Fully Booted")],
]


def _scenario_step(model: PbxModel, step: int, arg: int) -> None:
    """One operation of an office on the model (a no-op where it does not apply)."""
    exts = ["201", "202", "203", "204"]
    calls = model.calls
    if step == 0:
        model.internal_call(exts[arg % 4], exts[(arg + 1 + arg // 4) % 4])
    elif step == 1:
        model.external_call(f"+4930{arg}", "Caller", exts[arg % 4])
    elif step == 2:
        model.outbound_call(exts[arg % 4], f"0049{arg}")
    elif calls:
        call = calls[arg % len(calls)]
        chans = [c for c in (call.caller, call.callee) if c is not None]
        if step == 3 and call.callee is not None and call.callee.state != 6:
            model.answer(call)
        elif step == 4:
            model.hangup(call)
        elif step == 5 and call.callee is not None and call.callee.state != 6:
            model.cancel(call)
        elif step == 6 and call.callee is not None and call.callee.state == 6:
            chan = chans[arg % len(chans)]
            (model.unhold if chan.held else model.hold)(chan)
        elif step == 7 and call.callee is not None and call.callee.state == 6:
            model.blind_transfer(call, chans[arg % len(chans)], exts[arg % 4])
    if step == 8:
        model.set_registered(f"PJSIP/{exts[arg % 4]}", bool(arg % 3))


@st.composite
def office_events(draw) -> list[list[tuple[str, str]]]:
    """A call scenario as the model emits it, with noise events in between."""
    events: list[list[tuple[str, str]]] = []
    model = PbxModel(sink=events.append)
    for n, name in (("201", "Alice"), ("202", "Bob"), ("203", "Carol"), ("204", "Dave")):
        model.add_endpoint(f"PJSIP/{n}", n, name)
    for step, arg in draw(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 50)),
                                   max_size=25)):
        try:
            _scenario_step(model, step, arg)
        except (KeyError, StopIteration, AssertionError, ValueError):
            pass  # an operation the model cannot do in this state
        if draw(st.integers(0, 3)) == 0:
            events.append(draw(st.sampled_from(NOISE)))
    if draw(st.booleans()):  # a re-sync's list items, as after a reconnect
        events += model.extension_states("9") + model.device_states("9")
        events += model.coreshowchannels("9")
        events.append([("Event", "CoreShowChannelsComplete"), ("ActionID", "9"),
                       ("EventList", "Complete"), ("ListItems", "1")])
    return events


@st.composite
def office_streams(draw) -> bytes:
    return b"".join(format_message(e) for e in draw(office_events()))


KEYS = ["Event", "Channel", "Uniqueid", "UniqueID", "uniqueid", "Linkedid", "ChannelState",
        "ConnectedLineNum", "ConnectedLineName", "CallerIDNum", "CallerIDName", "Exten",
        "Context", "DestChannel", "DestUniqueid", "DestChannelState", "Device", "State",
        "Status", "Hint", "Newname", "ActionID", "ChanVariable", "Cause-txt", "X_Under",
        "Message", "Application", " Channel", "Channel ", "Chan Variable", "ChanVariable(X)",
        "Key\x01", "Kéy", "", "event", "EVENT", "Response", "action"]
VALUES = st.one_of(
    st.sampled_from(["PJSIP/201-00000001", "PJSIP/202-00000002", "SIP/201-1",
                     "PJSIP/trunk-00000009", "Local/201@from-internal-00000001;1",
                     "1700000000.1", "1700000000.2", "5", "6", "4", "0", "RINGING", "ONHOLD",
                     "UNAVAILABLE", "16", "8", "-1", "201", "202", "<unknown>", "", " ",
                     "a:b: c", "PJSIP/201&SIP/201,CustomPresence:201", "Dial", "AppDial"]),
    st.text(max_size=10).filter(lambda s: "\n" not in s and "\r" not in s),
    st.sampled_from(["cr\rinside", "trailing\r", "\x00nul", "\x0bvt\x0c", " pad ",
                     "\xa0nbsp\xa0", "\u2028ls"]))


@st.composite
def field_streams(draw) -> bytes:
    """Messages of random lines in Asterisk's form and out of it."""
    out = bytearray()
    if draw(st.booleans()):
        out += b"Asterisk Call Manager/9.0.0\r\n"
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            out += draw(st.binary(max_size=40))  # garbage between messages
            continue
        first = ("Response", draw(st.sampled_from(["Success", "Error", "Follows"]))) \
            if kind == 1 else ("Event", draw(st.sampled_from(
                ["Newchannel", "Newstate", "Hangup", "DialBegin", "Hold", "Unhold", "Rename",
                 "DeviceStateChange", "ExtensionStatus", "CoreShowChannel", "Newexten",
                 "VarSet", "Bogus", "newstate", "NEWSTATE"])))
        lines = [f"{first[0]}: {first[1]}"]
        for key in draw(st.lists(st.sampled_from(KEYS), max_size=8)):
            sep = draw(st.sampled_from([": ", ":", ":  ", " : "]))
            lines.append(f"{key}{sep}{draw(VALUES)}")
        if draw(st.integers(0, 9)) == 0:
            lines.insert(draw(st.integers(0, len(lines))),
                         draw(st.sampled_from(["no colon", ": no key", "Event: Second"])))
        enc = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "latin-1"]))
        end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"]))
        for line in lines:
            out += line.encode(enc, "replace") + end
        out += draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b""]))
    return bytes(out)


def cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    """The stream as the transport may deliver it: split at the given sizes."""
    out, pos = [], 0
    for n in cuts:
        out.append(stream[pos:pos + n])
        pos += n
    return [*out, stream[pos:]]


# -- what is compared ------------------------------------------------------------------------


def view(item) -> tuple:
    """Everything a user of a parsed item can see of it."""
    if isinstance(item, (AmiProtocolError, ref.AmiProtocolError)):
        return ("error", item.reason, item.sample)
    f = item.fields
    return ("message", item.kind, item.name, item.pairs, dict(f), list(f), len(f),
            tuple(item.get(k) for k in PROBES), tuple(f.get(k) for k in PROBES),
            tuple(k in f for k in PROBES), item.action_id,
            tuple(tuple(item.values(k)) for k in PROBES), repr(f))


def parse(parser, chunks: list[bytes]) -> list:
    return [item for data in chunks for item in parser.feed(data)]


def agree(stream: bytes, cuts: list[int]) -> None:
    chunks = cut(stream, cuts)
    old, new = ref.AmiParser(), AmiParser()
    old_items, new_items = parse(old, chunks), parse(new, chunks)
    assert [view(i) for i in new_items] == [view(i) for i in old_items]
    assert (new.messages, new.errors, new.skipped) == (old.messages, old.errors, 0)
    for item in new_items:
        if isinstance(item, AmiMessage):
            # A message read at once equals (and hashes as) the one built from its lines.
            eager = AmiMessage(item.kind, item.name, AmiFields(item.pairs), item.pairs)
            assert item == eager and hash(item) == hash(eager) and repr(item) == repr(eager)


def agree_wanted(stream: bytes, cuts: list[int], wanted: frozenset[str]) -> None:
    """With `wanted`, the parser returns what it returns without, less the events whose
    name is not in it, and counts those."""
    chunks = cut(stream, cuts)
    old_items = parse(ref.AmiParser(), chunks)
    new = AmiParser()
    new.wanted = wanted
    new_items = parse(new, chunks)
    kept = [i for i in old_items if not (isinstance(i, ref.AmiMessage) and i.kind == "event"
                                          and i.name.lower() not in wanted)]
    assert [view(i) for i in new_items] == [view(i) for i in kept]
    assert new.skipped == len(old_items) - len(kept)
    assert new.messages + new.skipped + new.errors == len(old_items)


PICKS = AmiTranslator(LINES).picks


def agree_picked(stream: bytes, cuts: list[int], wanted: frozenset[str] | None) -> None:
    """With `picks` (and `wanted`), the parser returns what it returns without, the events
    read by their picks carrying the values `get` gives; and, `bare`, those events as the
    tuples (name in lower case, those values, name). The stream twice: the second time,
    every order of keys of the first is known."""
    chunks = cut(stream, cuts) * 2
    old_items = [i for i in parse(ref.AmiParser(), chunks)
                 if wanted is None or not (isinstance(i, ref.AmiMessage) and i.kind == "event"
                                           and i.name.lower() not in wanted)]
    for bare in (False, True):
        new = AmiParser()
        new.wanted = wanted
        new.picks = PICKS
        new.bare = bare
        new_items = parse(new, chunks)
        assert len(new_items) == len(old_items)
        for got, old in zip(new_items, old_items):
            keys = PICKS.get(getattr(old, "name", "").lower()) \
                if getattr(old, "kind", None) == "event" else None
            if got.__class__ is tuple:
                assert bare and keys is not None
                assert got == (old.name.lower(), tuple(old.get(k) for k in keys), old.name)
                continue
            assert view(got) == view(old)
            if keys is not None:
                assert got.pick(keys) == tuple(old.get(k) for k in keys)
        errors = sum(isinstance(i, ref.AmiProtocolError) for i in old_items)
        assert (new.messages, new.errors) == (len(old_items) - errors, errors)


def translate(parser, translator, chunks: list[bytes]) -> list:
    out = []
    for data in chunks:
        for item in parser.feed(data):
            if item.__class__ is tuple:  # a bare parser's event read by its picks
                out += translator.feed_picked(item[0], item[1])
            elif not hasattr(item, "reason"):
                out += translator.feed(item)
    return out


def agree_reports(stream: bytes, cuts: list[int], lines: dict[str, str] = LINES) -> None:
    chunks = cut(stream, cuts)
    old_tr, new_tr = ref.AmiTranslator(lines), AmiTranslator(lines)
    expected = translate(ref.AmiParser(), old_tr, chunks)
    assert translate(AmiParser(), new_tr, chunks) == expected
    # And with the events the translator does not want dropped by the parser, as the
    # connection has it.
    dropping = AmiParser()
    dropping.wanted = AmiTranslator(lines).events
    skipping_tr = AmiTranslator(lines)
    assert translate(dropping, skipping_tr, chunks) == expected
    # And with the values the translator reads picked, the events handed over as messages
    # or (bare, as a live connection has it) as the picked values alone.
    picking_trs = []
    for bare in (False, True):
        tr = AmiTranslator(lines)
        picking = AmiParser()
        picking.wanted, picking.picks, picking.bare = tr.events, tr.picks, bare
        assert translate(picking, tr, chunks) == expected
        picking_trs.append(tr)
    for tr in (new_tr, skipping_tr, *picking_trs):
        assert tr._chans.keys() == old_tr._chans.keys()
        for uid in old_tr._chans:
            assert tr.caller_channel(uid) == old_tr.caller_channel(uid)
            assert tr.channel_name(uid) == old_tr.channel_name(uid)


# -- parser ----------------------------------------------------------------------------------

WANTED = frozenset({"newchannel", "newstate", "hangup", "dialbegin", "hold"})


@FUZZ
@given(st.one_of(office_streams(), field_streams()), st.lists(st.integers(1, 80), max_size=20))
@example(b"Event: Hangup\r\nUniqueID: a\r\nUniqueid: b\r\n\r\n", [])  # first spelling wins
@example(b"Event: Hangup\r\nChannel: a\r\nEvent: Newstate\r\n\r\n", [])  # kind twice
@example(b"Event: Hangup\r\nX: 1\r\nevent: Newstate\r\n\r\n", [7])
@example(b"Event: Hangup\r\nKey: cr\rinside\r\n\r\n", [])
@example(b"Event: Hangup\r\nCallerIDName: M\xfcller\r\n\r\n", [])  # Latin-1
@example(b"Event: Hangup\r\n Channel : x \r\n\r\n", [])  # spaces around the key
@example(b"Event:Hangup\r\nChannel:\x0bx\xc2\xa0\r\n\r\n", [])  # Unicode spaces stripped
@example(b"Event: Hangup\r\nChannel: a\r\n\r\nEvent: Hold", [3, 40])
@example(b"Event: Newchannel\r\nEvent: PJSIP/201-00000001\r\n", [])  # told, though cut
@example(b"Event: Hangup\r\nChannel: a\r\n\r\nEvent: Hangup\r\nChannel:  b\xc2\xa0\r\n\r\n"
         b"Event: Hangup\r\nChannel: c\r\n\r\nEvent: Hangup\r\nChannel:\r\n\r\n", [])  # a known
# order with a picked value out of Asterisk's form: read by the split, the order kept
@example(b"Event: Hold\r\nChannel: a\r\nno colon\r\nX: 1\r\n\r\n", [30])
def test_the_parser_agrees_with_its_reference(stream, cuts):
    agree(stream, cuts)
    agree_wanted(stream, cuts, WANTED)
    agree_picked(stream, cuts, None)
    agree_picked(stream, cuts, WANTED)


def test_the_recorded_transcript_parses_as_before_however_it_is_cut():
    data = (FIXTURE / "external_answered_then_held.txt").read_bytes()
    for size in (1, 2, 3, 7, 64, 333, len(data)):
        agree(data, [size] * (len(data) // size))
        agree_wanted(data, [size] * (len(data) // size), WANTED)
        agree_picked(data, [size] * (len(data) // size), WANTED)


def test_limits_and_oversized_input_as_before():
    big_value = b"Event: Newstate\r\nChannel: " + b"x" * 9000 + b"\r\n\r\n"
    many_lines = b"Event: Newstate\r\n" + b"Key: value\r\n" * 7000 + b"\r\n"
    for stream in (big_value, many_lines, big_value + b"Event: Hold\r\nChannel: a\r\n\r\n"):
        for size in (100, 4096, 65536):
            agree(stream, [size] * (len(stream) // size))


def test_a_peer_sending_ever_new_orders_of_keys_is_read_the_same_and_held_in_bounds():
    from gateway.ami.protocol import MAX_FAST_ORDERS, MAX_LAYOUT_KEYS, MAX_LAYOUTS

    stream = b"".join(b"Event: Newstate\r\nX%d: 1\r\nChannel: PJSIP/201-1\r\n\r\n" % i
                      for i in range(MAX_LAYOUTS + 100))
    agree(stream, [65536])
    parser = AmiParser()
    assert len(parse(parser, [stream])) == MAX_LAYOUTS + 100
    assert len(parser._layouts) == MAX_LAYOUTS  # the rest are worked out each time
    # An order of more keys, or longer ones, than a real event has is not remembered.
    long = b"Event: Newstate\r\n" + b"".join(b"K%d: v\r\n" % i
                                                for i in range(MAX_LAYOUT_KEYS + 1)) + b"\r\n"
    wide = b"Event: Newstate\r\n" + b"".join(b"K%d%s: v\r\n" % (i, b"y" * 100)
                                                for i in range(12)) + b"\r\n"
    for stream in (long, wide):
        agree(stream * 3, [])
        parser = AmiParser()
        assert len(parse(parser, [stream * 3])) == 3 and not parser._layouts
        parser = AmiParser()
        parser.picks = PICKS
        assert len(parse(parser, [stream * 3])) == 3 and not parser._fast
    # Orders read by one match each: a few per name, MAX_LAYOUTS in all.
    names = [b"Newstate", b"Hangup"] + [b"X%d" % i for i in range(MAX_LAYOUTS)]
    stream = b"".join(b"Event: %s\r\nX%d: 1\r\nChannel: PJSIP/201-1\r\n\r\n" % (name, i)
                      for name in names for i in range(MAX_FAST_ORDERS + 2))
    for wanted in (None, frozenset({"newstate"})):
        agree_picked(stream, [65536] * (len(stream) // 65536), wanted)
        parser = AmiParser()
        parser.picks, parser.wanted = {"newstate": PICKS["newstate"]}, wanted
        parse(parser, [stream])
        assert parser._fast_orders == sum(map(len, parser._fast.values()))
        assert {len(orders) for orders in parser._fast.values()} <= {MAX_FAST_ORDERS}
        assert parser._fast_orders <= MAX_LAYOUTS


# -- translator ------------------------------------------------------------------------------


@SCENARIOS
@given(office_streams(), st.lists(st.integers(1, 400), max_size=10))
def test_the_translator_reports_as_before_on_office_streams(stream, cuts):
    agree_reports(stream, cuts)
    agree_reports(stream, cuts, {"PJSIP/201": "alice", "PJSIP/202": "bob"})  # no hint lines
    agree_reports(stream, cuts, {"201": "alice", "202@from-internal": "bob"})  # hints only


@FUZZ
@given(field_streams(), st.lists(st.integers(1, 80), max_size=10))
def test_the_translator_reports_as_before_on_random_fields(stream, cuts):
    agree_reports(stream, cuts, {"PJSIP/201": "a", "SIP/201": "b", "202": "c"})


def test_fields_present_but_empty_count_as_sent():
    # An empty ConnectedLineNum is a value ("not known"): it replaces a known one.
    stream = (b"Event: Newchannel\r\nChannel: PJSIP/201-1\r\nUniqueid: u1\r\n"
              b"ChannelState: 5\r\nConnectedLineNum: 202\r\nConnectedLineName: Bob\r\n\r\n"
              b"Event: NewConnectedLine\r\nChannel: PJSIP/201-1\r\nUniqueid: u1\r\n"
              b"ConnectedLineNum:\r\nConnectedLineName: \r\nExten: 203\r\n\r\n"
              b"Event: Newstate\r\nChannel: PJSIP/201-1\r\nUniqueid: u1\r\n"
              b"ChannelState: 6\r\n\r\n")
    agree_reports(stream, [])
    reports = translate(AmiParser(), AmiTranslator(LINES), [stream])
    assert [(r.phase.value, r.remote, r.remote_name) for r in reports] == [
        ("ringing", "202", "Bob"), ("ringing", None, None), ("connected", None, None)]


def test_the_recorded_transcript_reports_as_before():
    data = (FIXTURE / "external_answered_then_held.txt").read_bytes()
    for size in (1, 5, 64, len(data)):
        agree_reports(data, [size] * (len(data) // size), {"PJSIP/201": "alice"})
        agree_reports(data, [size] * (len(data) // size), {"201": "alice"})


# -- connection ------------------------------------------------------------------------------


def session(events: list[list[tuple[str, str]]], late: list[list[tuple[str, str]]]) -> bytes:
    """A whole session as Asterisk writes it to the gateway (ActionIDs 1-4: Login and the
    three lists, as the connection numbers them)."""
    out = [b"Asterisk Call Manager/9.0.0\r\n",
           format_message([("Response", "Success"), ("ActionID", "1"),
                           ("Message", "Authentication accepted")]),
           format_message([("Event", "FullyBooted"), ("Privilege", "system,all")])]
    for aid, complete in ((2, "ExtensionStateListComplete"), (3, "DeviceStateListComplete")):
        out.append(format_message([("Response", "Success"), ("ActionID", str(aid)),
                                   ("EventList", "start")]))
        out += [format_message(e) for e in events[:3]]
        out.append(format_message([("Event", complete), ("ActionID", str(aid)),
                                   ("EventList", "Complete")]))
    out.append(format_message([("Response", "Error"), ("ActionID", "4"),
                               ("Message", "No channels")]))
    out += [format_message(e) for e in events[3:]]
    out.append(format_message([("Response", "Success"), ("ActionID", "5"), ("Ping", "Pong")]))
    out += [format_message(e) for e in late]
    out.append(b"Event: Broken\r\nno colon here\r\n\r\n")
    return b"".join(out)


def conversation(module, chunks: list[bytes]) -> tuple[list, int, int]:
    ids = (str(n) for n in itertools.count(1))
    conn = module.AmiConnection(module.AmiTranslator(LINES), "blf", "s", 0.0, action_ids=ids,
                                ping_interval=0)
    said = []
    for data in chunks:
        for ev in conn.receive_data(data, 1.0):
            if isinstance(ev, (ActionAnswered, ref.ActionAnswered)):
                said.append(("answered", ev.action_id, view(ev.response)))
            elif isinstance(ev, (ReportsReady, ref.ReportsReady)):
                said.append(("reports", ev.reports, ev.resync))
            else:
                said.append((type(ev).__name__, getattr(ev, "version", None),
                             getattr(ev, "reports", None)))
        if conn.logged_in and "5" not in conn._pending:
            conn._pending["5"] = ("Ping", 99.0)  # an action of the caller's, answered above
    return said, conn.events_seen, conn.protocol_errors


@SCENARIOS
@given(office_events(), office_events(), st.lists(st.integers(1, 600), max_size=12))
def test_a_connection_says_and_counts_what_it_did(events, late, cuts):
    chunks = cut(session(events, late), cuts)
    got = conversation(sys.modules[AmiConnection.__module__], chunks)
    assert got == conversation(ref, chunks)
    assert got[0][0][0] == Connected.__name__  # the session was read at all


def test_a_channel_named_as_another_channels_device_routes_as_before():
    # "PJSIP/my-phone-0001" is a channel of device PJSIP/my-phone; a channel named
    # "PJSIP/my-phone" is one of device PJSIP/my: remembering either must not answer the other.
    lines = {"PJSIP/my-phone": "a", "PJSIP/my": "b", "my": "c"}
    names = ["PJSIP/my-phone-0001", "PJSIP/my-phone", "PJSIP/my-phone-0002", "PJSIP/my",
             "pjsip/my-phone-0003", "SIP/my-1", "PJSIP/my-phone<ZOMBIE>", "Local/my@x-1;2"]
    old, new = ref.AmiTranslator(lines), AmiTranslator(lines)
    for name in names * 2:
        assert new.devices_of_channel(name) == old.devices_of_channel(name), name
