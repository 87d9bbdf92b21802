"""The TAPI bridge's pure parser (contract section 5), and the listener's line handling
without a socket."""

from __future__ import annotations

import json

import pytest

from gateway.calls import CallReport, Phase, ServiceReport
from gateway.model import Direction
from gateway.tapi.bridge import TAPI_PHASES, BridgeLineError, TapiBridgeServer, parse_line

from conftest import within

LINES = {"Line 201": ("201", "201"), "Line 202": ("202", "+49 30 202")}


def line(**fields) -> str:
    return json.dumps({"device": "Line 201", "call": "c1", **fields})


@pytest.mark.parametrize(("state", "phase", "direction"), [
    ("offering", Phase.RINGING, Direction.IN),
    ("accepted", Phase.RINGING, Direction.IN),
    ("dialtone", Phase.DIALING, Direction.OUT),
    ("dialing", Phase.DIALING, Direction.OUT),
    ("ringback", Phase.DIALING, Direction.OUT),
    ("proceeding", Phase.DIALING, Direction.OUT),
    ("busy", Phase.DIALING, Direction.OUT),
    ("specialinfo", Phase.DIALING, Direction.OUT),
    ("connected", Phase.CONNECTED, None),
    ("conferenced", Phase.CONNECTED, None),
    ("onhold", Phase.HELD, None),
    ("onholdpendconf", Phase.HELD, None),
    ("onholdpendtransfer", Phase.HELD, None),
    ("disconnected", Phase.ENDED, None),
    ("idle", Phase.ENDED, None),
])
def test_every_linecallstate(state, phase, direction):
    r = parse_line(line(state=state.upper()), LINES, "tapi#1")
    assert r == CallReport("201", "c1", phase, direction, conn="tapi#1")
    assert TAPI_PHASES[state] == (phase, direction)


def test_unknown_state_carries_no_information():
    assert parse_line(line(state="unknown"), LINES) is None


def test_remote_party_is_the_caller_of_an_incoming_and_the_called_of_an_outgoing_call():
    r = parse_line(line(state="offering", caller="0301", caller_name="Customer",
                        called="201", called_name="Alice"), LINES)
    assert (r.remote, r.remote_name) == ("0301", "Customer")
    r = parse_line(line(state="dialing", caller="201", called="0302", called_name="Vendor"),
                   LINES)
    assert (r.remote, r.remote_name) == ("0302", "Vendor")


def test_a_call_first_seen_connected_takes_its_side_from_the_own_number():
    r = parse_line(line(state="connected", caller="0301", called="201"), LINES)
    assert r.direction is Direction.IN and r.remote == "0301"
    r = parse_line(line(state="connected", caller="201", called="0302"), LINES)
    assert r.direction is Direction.OUT and r.remote == "0302"
    # Written with a prefix or punctuation, it is the same number.
    r = parse_line(json.dumps({"device": "Line 202", "call": 7, "state": "onhold",
                               "caller": "0301", "called": "0049 30 202"}), LINES)
    assert r.direction is Direction.IN and r.call == "7"
    r = parse_line(line(state="connected", caller="0301", called="0302"), LINES)
    assert r.direction is None and r.remote == "0301"


def test_blocked_caller_id_is_withheld_on_incoming_calls_only():
    assert parse_line(line(state="offering", caller="0301", blocked=True), LINES).withheld
    assert not parse_line(line(state="dialing", called="0301", blocked=True), LINES).withheld


def test_device_service_state():
    assert parse_line(json.dumps({"device": "Line 202", "devstate": "outofservice"}),
                      LINES, "tapi#2") == ServiceReport("202", False, "tapi#2")
    assert parse_line(json.dumps({"device": "Line 202", "devstate": "inservice"}),
                      LINES) == ServiceReport("202", True, "")


@pytest.mark.parametrize(("text", "reason"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('"Line 201"', "not a JSON object"),
    (json.dumps({"device": "Line 999", "call": "1", "state": "offering"}),
     "no device is configured for line 'Line 999'"),
    (json.dumps({"device": "Line 999", "devstate": "inservice"}),
     "no device is configured for line 'Line 999'"),
    (json.dumps({"device": "Line 201", "call": "1", "state": "ringing"}),
     "state 'ringing' is not a LINECALLSTATE name"),
    (json.dumps({"device": "Line 201", "call": "1"}), "state: Field required"),
    (json.dumps({"device": "Line 201", "devstate": "maybe"}), "devstate:"),
    (json.dumps({"device": "Line 201", "call": "1", "state": "offering", "caller": "9" * 65}),
     "caller:"),
    (json.dumps({"device": "", "call": "1", "state": "offering"}), "device:"),
    ("[" * 100000, "not valid JSON"),
])
def test_malformed_lines_say_why(text, reason):
    with pytest.raises(BridgeLineError) as exc:
        parse_line(text, LINES)
    assert str(exc.value).startswith(reason)


@pytest.mark.parametrize(("text", "reason"), [
    # A repeated key whose first value the strict reading refuses: refused, whichever comes
    # last (the one-pass reading of plain call lines must not let it through).
    (b'{"device": "Line 201", "call": "c1", "state": "offering", "caller": NaN, '
     b'"caller": "0301"}', "NaN is not a JSON number"),
    (b'{"device": "Line 201", "call": "c1", "state": "offering", "caller": 1e999, '
     b'"caller": "0301"}', "number 1e999 is too large"),
    (b'{"device": "Line 201", "call": "c1", "state": "offering", "pad": Infinity}',
     "Infinity is not a JSON number"),
    (b'{"device": "Line 201", "call": "c1", "state": "offering", "caller": "\\ud800"}',
     "caller: a string with a lone surrogate"),
    (b'{"device": "Line 201", "call": 1.0, "state": "offering"}', "call:"),
    (b'{"device": "Line 201", "call": 18446744073709551616, "state": "offering"}', "call:"),
    (b'{"device": "Line 2\xed\xa0\x80", "call": "c1", "state": "offering"}',
     "not valid UTF-8"),
])
def test_call_lines_as_bytes_are_refused_as_strictly_as_text(text, reason):
    with pytest.raises(BridgeLineError) as exc:
        parse_line(text, LINES)
    assert str(exc.value).startswith(reason)


def test_plain_and_unusual_call_lines_as_bytes_read_alike():
    """Bytes from the wire: a plain line, and lines the one-pass reading leaves to the strict
    one (an escape, an extra key, a repeated key, a colon in a name), give the same report."""
    plain = b'{"device": "Line 201", "call": "c1", "state": "offering", "caller": "0301"}'
    want = CallReport("201", "c1", Phase.RINGING, Direction.IN, "0301", conn="tapi#1")
    assert parse_line(plain, LINES, "tapi#1") == want
    for text in (plain.replace(b'"0301"', b'"\\u00303\\u00301"'),
                 plain[:-1] + b', "extra": [1, {"x": null}]}',
                 plain[:-1] + b', "caller": "0301"}',
                 plain[:-1].replace(b'"caller": "0301"', b'"caller": "9", "caller": "0301"')
                 + b"}"):
        assert parse_line(text, LINES, "tapi#1") == want, text
    named = parse_line(plain[:-1] + b', "caller_name": "Sales: desk"}', LINES)
    assert named.remote_name == "Sales: desk"


class Handler:
    """The one handler of line-source events, recording."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, tuple]] = []
        self.lost: list[tuple[str, str | None]] = []

    def reports(self, source, reports) -> None:  # noqa: ANN001
        self.seen.append((source, tuple(reports)))

    def connection_lost(self, source, conn) -> None:  # noqa: ANN001
        self.lost.append((source, conn))


async def test_feed_hands_reports_to_the_handler_and_counts_bad_lines():
    handler = Handler()
    server = TapiBridgeServer("127.0.0.1", 0, handler, LINES)
    server.feed(line(state="offering", caller="0301").encode() + b"\r\n", "tapi#1")
    server.feed(b"   \n", "tapi#1")  # blank: nothing
    server.feed(b"{garbage\n", "tapi#1")
    server.feed(line(state="unknown").encode(), "tapi#1")
    assert handler.seen == [("tapi_bridge", (CallReport("201", "c1", Phase.RINGING,
                                                         Direction.IN, "0301", conn="tapi#1"),))]
    assert (server.lines_in, server.lines_bad) == (3, 1)
    # A reload's new lines apply from the next line on.
    await server.update_lines({"Line 9": ("9", "9")})
    server.feed(line(state="offering").encode(), "tapi#1")
    assert server.lines_bad == 2 and len(handler.seen) == 1


async def test_lines_split_anywhere_over_tcp_arrive_whole_and_an_over_long_line_is_skipped():
    """The listener reads in chunks: a line cut at any byte, several lines in one write, and a
    line longer than the limit (skipped, counted) all come out as the bridge meant them."""
    import asyncio

    handler = Handler()
    server = TapiBridgeServer("127.0.0.1", 0, handler, LINES, max_line_bytes=200)
    await server.start()
    try:
        _, w = await asyncio.open_connection("127.0.0.1", server.port)
        first = line(state="offering", caller="0301").encode() + b"\n"
        too_long = json.dumps({"device": "Line 201", "call": "c2", "state": "offering",
                               "pad": "x" * 300}).encode() + b"\n"  # valid, but too long
        last = (line(state="connected").encode() + b"\n"
                + json.dumps({"device": "Line 202", "devstate": "outofservice"}).encode())
        blob = first + too_long + last + b"\n"
        pieces = [blob[:5], blob[5:61], blob[61:140], blob[140:250], blob[250:330],
                  blob[330:-3], blob[-3:]]
        for p in pieces:
            w.write(p)
            await w.drain()
            await asyncio.sleep(0.02)

        async def settled() -> bool:
            for _ in within():
                if sum(len(r) for _, r in handler.seen) >= 3:
                    return True
                await asyncio.sleep(0.01)
            return False

        assert await settled()
        reports = [r for _, batch in handler.seen for r in batch]
        assert reports == [
            CallReport("201", "c1", Phase.RINGING, Direction.IN, "0301", conn="tapi#1"),
            CallReport("201", "c1", Phase.CONNECTED, None, conn="tapi#1"),
            ServiceReport("202", False, "tapi#1"),
        ]
        assert server.lines_bad == 1  # the over-long line, and nothing else
        w.close()
    finally:
        await server.stop()
