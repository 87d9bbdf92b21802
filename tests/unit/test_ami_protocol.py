"""AMI wire format: the pure parser and serializer."""

from __future__ import annotations

import pytest

from gateway.ami.protocol import (
    AmiMessage,
    AmiParser,
    AmiProtocolError,
    format_action,
    format_message,
)

# What Asterisk sends on a fresh connection after a successful Login, byte for byte.
LOGIN_TRANSCRIPT = (
    b"Asterisk Call Manager/9.0.0\r\n"
    b"Response: Success\r\n"
    b"ActionID: gw-1\r\n"
    b"Message: Authentication accepted\r\n"
    b"\r\n"
    b"Event: FullyBooted\r\n"
    b"Privilege: system,all\r\n"
    b"Uptime: 1234\r\n"
    b"LastReload: 1234\r\n"
    b"Status: Fully Booted\r\n"
    b"\r\n"
    b"Event: Newchannel\r\n"
    b"Privilege: call,all\r\n"
    b"Channel: PJSIP/201-0000002a\r\n"
    b"ChannelState: 4\r\n"
    b"ChannelStateDesc: Ring\r\n"
    b"CallerIDNum: 201\r\n"
    b"CallerIDName: Alice Archer\r\n"
    b"ConnectedLineNum: <unknown>\r\n"
    b"ConnectedLineName: <unknown>\r\n"
    b"Language: en\r\n"
    b"AccountCode: \r\n"
    b"Context: from-internal\r\n"
    b"Exten: 202\r\n"
    b"Priority: 1\r\n"
    b"Uniqueid: 1700000000.42\r\n"
    b"Linkedid: 1700000000.42\r\n"
    b"\r\n"
)


def messages(items):
    return [i for i in items if isinstance(i, AmiMessage)]


def errors(items):
    return [i for i in items if isinstance(i, AmiProtocolError)]


def test_transcript_parses_into_banner_response_and_events():
    out = AmiParser().feed(LOGIN_TRANSCRIPT)
    assert [(m.kind, m.name) for m in out] == [
        ("banner", "9.0.0"),
        ("response", "Success"),
        ("event", "FullyBooted"),
        ("event", "Newchannel"),
    ]
    resp, new = out[1], out[3]
    assert resp.action_id == "gw-1"
    assert resp.get("Message") == "Authentication accepted"
    assert new.fields["Channel"] == "PJSIP/201-0000002a"
    assert new.fields["uniqueid"] == "1700000000.42"  # keys are case-insensitive
    assert new.get("AccountCode") == ""  # an empty value is a value
    assert new.action_id is None


def test_every_split_position_gives_the_same_messages():
    whole = AmiParser().feed(LOGIN_TRANSCRIPT)
    for cut in range(1, len(LOGIN_TRANSCRIPT)):
        p = AmiParser()
        got = p.feed(LOGIN_TRANSCRIPT[:cut]) + p.feed(LOGIN_TRANSCRIPT[cut:])
        assert got == whole, cut


def test_byte_by_byte_feeding():
    p = AmiParser()
    got = []
    for i in range(len(LOGIN_TRANSCRIPT)):
        got += p.feed(LOGIN_TRANSCRIPT[i : i + 1])
    assert got == AmiParser().feed(LOGIN_TRANSCRIPT)


def test_bare_lf_is_tolerated():
    data = LOGIN_TRANSCRIPT.replace(b"\r\n", b"\n")
    assert AmiParser().feed(data) == AmiParser().feed(LOGIN_TRANSCRIPT)


def test_repeated_keys_keep_first_in_fields_and_all_in_pairs():
    data = (
        b"Event: Hangup\r\nPrivilege: call,all\r\nChannel: PJSIP/201-00000001\r\n"
        b"ChanVariable: FROM_DID=4930123\r\nChanVariable: QUEUE=sales\r\n\r\n"
    )
    (m,) = AmiParser().feed(data)
    assert m.fields["ChanVariable"] == "FROM_DID=4930123"
    assert m.values("chanvariable") == ["FROM_DID=4930123", "QUEUE=sales"]
    assert len(m.pairs) == 5


def test_unknown_events_and_fields_are_passed_through():
    data = b"Event: SomethingNew2030\r\nPrivilege: call,all\r\nX-Future: 1\r\n\r\n"
    (m,) = AmiParser().feed(data)
    assert (m.kind, m.name, m.get("X-Future")) == ("event", "SomethingNew2030", "1")


def test_value_with_colons_and_latin1_name():
    data = b"Event: Newchannel\r\nCallerIDName: M\xfcller: Vertrieb\r\nApp: Dial(PJSIP/1,30)\r\n\r\n"
    (m,) = AmiParser().feed(data)
    assert m.get("CallerIDName") == "Müller: Vertrieb"
    assert m.get("App") == "Dial(PJSIP/1,30)"


def test_garbage_between_messages_is_reported_and_later_messages_survive():
    p = AmiParser()
    out = p.feed(b"\x00\xff\xfe garbage without colon\r\nEvent: Hold\r\nChannel: X\r\n\r\n")
    assert [e.reason for e in errors(out)] == ["line without key"]
    assert [m.name for m in messages(out)] == ["Hold"]
    assert p.errors == 1


def test_key_value_noise_before_a_message_does_not_swallow_it():
    out = AmiParser().feed(b"Junk: 1\r\nEvent: Unhold\r\nChannel: X\r\n\r\n")
    assert [m.name for m in messages(out)] == ["Unhold"]
    assert messages(out)[0].pairs == (("Event", "Unhold"), ("Channel", "X"))
    assert len(errors(out)) == 1


def test_block_without_event_or_response_is_skipped():
    out = AmiParser().feed(b"Foo: bar\r\nBaz: 1\r\n\r\nEvent: A\r\n\r\n")
    assert [m.name for m in messages(out)] == ["A"]
    assert len(errors(out)) == 1


def test_garbage_inside_a_message_drops_that_message_only():
    out = AmiParser().feed(
        b"Event: Newstate\r\nChannel: X\r\n\x01\x02binary\r\nUniqueid: 1\r\n\r\n"
        b"Event: Hangup\r\nChannel: X\r\n\r\n"
    )
    assert [m.name for m in messages(out)] == ["Hangup"]


def test_missing_empty_line_drops_the_cut_message_and_keeps_the_next():
    out = AmiParser().feed(b"Event: A\r\nChannel: X\r\nEvent: B\r\nChannel: Y\r\n\r\n")
    assert [m.name for m in messages(out)] == ["B"]
    assert [e.reason for e in errors(out)] == ["message boundary missing"]


def test_oversized_line_is_skipped_without_buffering_it():
    p = AmiParser(max_line=100, max_message=1000)
    out = p.feed(b"Event: A\r\nCallerIDName: " + b"x" * 500)
    assert [e.reason for e in errors(out)] == ["line too long"]
    assert len(p._buf) == 0  # nothing of the monster line is kept
    out = p.feed(b"y" * 10_000)  # still the same line
    assert out == [] and len(p._buf) == 0
    out = p.feed(b"\r\n\r\nEvent: B\r\n\r\n")
    # The message that lost a line is dropped; the next one parses.
    assert [m.name for m in messages(out)] == ["B"]


def test_oversized_complete_line_in_one_read():
    p = AmiParser(max_line=100)
    out = p.feed(b"Event: A\r\nX: " + b"x" * 200 + b"\r\n\r\nEvent: B\r\n\r\n")
    assert [m.name for m in messages(out)] == ["B"]
    assert [e.reason for e in errors(out)] == ["line too long"]


def test_oversized_message_is_skipped_and_memory_stays_bounded():
    p = AmiParser(max_line=100, max_message=1000)
    big = b"Event: Flood\r\n" + b"Key: " + b"v" * 50 + b"\r\n"
    out = p.feed(big)
    for _ in range(2000):  # 120 KB of lines in one message
        out += p.feed(b"Key: " + b"v" * 50 + b"\r\n")
        assert len(p._pairs) * 60 <= 1100
    out += p.feed(b"\r\nEvent: After\r\n\r\n")
    assert [m.name for m in messages(out)] == ["After"]
    assert [e.reason for e in errors(out)] == ["message too long"]


def test_random_bytes_never_raise():
    import random

    rng = random.Random(7)
    p = AmiParser(max_line=64, max_message=512)
    for _ in range(300):
        chunk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        p.feed(chunk)
        assert len(p._buf) <= 65
    # and it still parses a proper message afterwards (after a line end resynchronises)
    out = p.feed(b"\r\n\r\nEvent: Recovered\r\n\r\n")
    assert "Recovered" in [m.name for m in messages(out)]


def test_banner_anywhere_and_stray_empty_lines():
    out = AmiParser().feed(b"\r\n\r\nAsterisk Call Manager/2.10.4\r\n\r\nEvent: A\r\n\r\n")
    assert [(m.kind, m.name) for m in out] == [("banner", "2.10.4"), ("event", "A")]


def test_format_action_round_trips_through_the_parser():
    data = format_action("Originate", "gw-7", Channel="PJSIP/201", Application="PickupChan",
                         Data="PJSIP/202", Variable=["A=1", "B=2"], CallerID=None)
    assert data.endswith(b"\r\n\r\n")
    (m,) = AmiParser().feed(data)
    assert (m.kind, m.name, m.action_id) == ("action", "Originate", "gw-7")
    assert m.values("Variable") == ["A=1", "B=2"]
    assert "CallerID" not in m.fields


@pytest.mark.parametrize("bad", ["x\r\nAction: Hangup", "a\nb", "c\rd"])
def test_format_refuses_injected_line_breaks(bad):
    with pytest.raises(ValueError):
        format_action("Redirect", "1", Exten=bad)
    with pytest.raises(ValueError):
        format_message([("Event", bad)])


def test_a_message_read_at_once_is_immutable_and_equals_one_built_from_its_lines():
    import pickle
    from dataclasses import FrozenInstanceError

    from gateway.ami.protocol import AmiFields

    (m,) = AmiParser().feed(b"Event: Hangup\r\nChannel: PJSIP/201-1\r\nUniqueID: u1\r\n"
                            b"Uniqueid: u2\r\nCause-txt:  Normal Clearing \r\n\r\n")
    eager = AmiMessage("event", "Hangup", AmiFields(m.pairs), m.pairs)
    assert m == eager and hash(m) == hash(eager) and repr(m) == repr(eager)
    assert m.get("uniqueid") == "u1" and m.values("UNIQUEID") == ["u1", "u2"]
    assert m.fields["cause-TXT"] == "Normal Clearing" and len(m.fields) == 4
    assert pickle.loads(pickle.dumps(m)) == m
    with pytest.raises(FrozenInstanceError):
        m.name = "Newstate"  # type: ignore[misc]
    with pytest.raises(KeyError):
        m.fields["Nope"]
