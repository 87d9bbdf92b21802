"""The pure translator: TAPI messages and LINECALLINFO -> bridge lines, commands -> requests."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.tapi.bridge import parse_line
from gateway.tapi.winbridge import constants as C
from gateway.tapi.winbridge.callinfo import CallInfo, Party
from gateway.tapi.winbridge.trace import (
    Replay,
    TraceError,
    load_trace,
    parse_trace,
    to_record,
)
from gateway.tapi.winbridge.translate import (
    MAX_CALLS_PER_LINE,
    LineOpened,
    Reinitialized,
    TapiMessage,
    Translator,
)

TRACES = Path(__file__).parent / "traces"
M, CS = C.MESSAGES, C.CALLSTATE
ADDR_NAME = C.CALLPARTYID["LINECALLPARTYID_ADDRESS"] | C.CALLPARTYID["LINECALLPARTYID_NAME"]
EXTERNAL = C.CALLORIGIN["LINECALLORIGIN_EXTERNAL"]


def new_call(line: int, hcall: int, info: CallInfo) -> TapiMessage:
    return TapiMessage(M["LINE_APPNEWCALL"], line, line, 0, hcall, 2, info)


def state(hcall: int, line: int, name: str, info: CallInfo | None = None,
          mode: int = 0) -> TapiMessage:
    return TapiMessage(M["LINE_CALLSTATE"], hcall, line, CS[f"LINECALLSTATE_{name}"], mode, 0,
                       info)


@pytest.fixture
def t() -> Translator:
    tr = Translator()
    for dev, n in enumerate(("201", "202", "203")):
        out = tr.feed(LineOpened(dev, f"Line {n}", n, owner=(n == "202")))
        assert out.lines == [{"device": f"Line {n}", "devstate": "inservice"}]
    return tr


def lines(t: Translator, *events) -> list[dict]:
    got: list[dict] = []
    for ev in events:
        got += t.feed(ev).lines
    return got


def test_incoming_call_with_late_caller_id(t):
    info = CallInfo(call_id=0x3F1, origin=EXTERNAL, called=Party("201"))
    got = lines(t, new_call(0, 5, info), state(5, 0, "OFFERING"))
    assert got == [{"device": "Line 201", "call": "0x3f1", "state": "offering",
                    "called": "201"}]
    later = CallInfo(call_id=0x3F1, origin=EXTERNAL, called=Party("201"),
                     caller=Party("+4930123456", "Miller Ltd", ADDR_NAME))
    got = lines(t, TapiMessage(M["LINE_CALLINFO"], 5, 0, 0x8000, 0, 0, later))
    assert got == [{"device": "Line 201", "call": "0x3f1", "state": "offering",
                    "caller": "+4930123456", "caller_name": "Miller Ltd", "called": "201"}]
    # The same info again sends nothing.
    assert lines(t, TapiMessage(M["LINE_CALLINFO"], 5, 0, 0x8000, 0, 0, later)) == []


def test_direction_from_origin_first_state_or_reason(t):
    # Outbound by origin even when first seen connected (a resync): our number is the caller.
    out = lines(t, state(7, 0, "CONNECTED", CallInfo(
        call_id=1, origin=C.CALLORIGIN["LINECALLORIGIN_OUTBOUND"], called=Party("0401"))))
    assert out[-1] == {"device": "Line 201", "call": "0x1", "state": "connected",
                       "caller": "201", "called": "0401"}
    # No origin: the first state says it.
    out = lines(t, new_call(1, 8, CallInfo(call_id=2, called=Party("0402"))),
                state(8, 1, "DIALTONE"))
    assert out[-1]["caller"] == "202" and out[-1]["called"] == "0402"
    # No origin, first seen connected, arrived by pickup: inbound.
    out = lines(t, new_call(2, 9, CallInfo(call_id=3, reason=0x10, caller=Party("0403"),
                                           called=Party("201"))),
                state(9, 2, "CONNECTED"))
    assert out[-1]["caller"] == "0403"


def test_connected_id_wins_and_own_number_is_never_the_remote(t):
    info = CallInfo(call_id=4, origin=C.CALLORIGIN["LINECALLORIGIN_OUTBOUND"],
                    caller=Party("201"), called=Party("202"),
                    connected=Party("205", "Forwarded To", ADDR_NAME))
    out = lines(t, state(3, 0, "RINGBACK", info))
    assert out[-1]["called"] == "205" and out[-1]["called_name"] == "Forwarded To"
    # A provider that puts the line itself into ConnectedID of an incoming call.
    info = CallInfo(call_id=5, origin=EXTERNAL, caller=Party("0301"), called=Party("202"),
                    connected=Party("202"))
    out = lines(t, state(4, 1, "CONNECTED", info))
    assert out[-1]["caller"] == "0301"


def test_withheld_number_is_blocked_and_not_sent(t):
    info = CallInfo(call_id=6, origin=EXTERNAL,
                    caller=Party(None, None, C.CALLPARTYID["LINECALLPARTYID_BLOCKED"]))
    out = lines(t, state(5, 0, "OFFERING", info))
    assert out[-1]["blocked"] is True and "caller" not in out[-1]


def test_transfer_takes_the_party_of_the_related_call(t):
    first = CallInfo(call_id=0x10, origin=EXTERNAL, caller=Party("+4930123456", "Miller"))
    lines(t, state(1, 0, "CONNECTED", first), state(1, 0, "IDLE"))
    moved = CallInfo(call_id=0x11, related_call_id=0x10, origin=2,
                     reason=C.CALLREASON["LINECALLREASON_TRANSFER"], caller=Party("201"))
    out = lines(t, state(2, 2, "OFFERING", moved))
    assert out[-1]["caller"] == "+4930123456" and out[-1]["caller_name"] == "Miller"
    # Without the related call known, the transferring line is what the provider says.
    other = CallInfo(call_id=0x12, related_call_id=0x99, origin=2,
                     reason=C.CALLREASON["LINECALLREASON_TRANSFER"], caller=Party("201"))
    assert lines(t, state(3, 1, "OFFERING", other))[-1]["caller"] == "201"


def test_conference_bridge_call_is_not_reported(t):
    conf = CallInfo(call_id=0x20, origin=C.CALLORIGIN["LINECALLORIGIN_CONFERENCE"])
    assert lines(t, new_call(0, 30, conf), state(30, 0, "ONHOLDPENDCONF"),
                 state(30, 0, "CONNECTED")) == []
    out = t.feed(state(30, 0, "IDLE"))
    assert out.lines == [] and out.deallocate == [30]


def test_disconnected_then_idle_ends_once_and_deallocates(t):
    info = CallInfo(call_id=0x30, origin=EXTERNAL, caller=Party("0301"))
    lines(t, new_call(0, 40, info), state(40, 0, "OFFERING"))
    out = t.feed(state(40, 0, "DISCONNECTED"))
    assert [ln["state"] for ln in out.lines] == ["disconnected"]
    out = t.feed(state(40, 0, "IDLE"))
    assert out.lines == [] and out.deallocate == [40]
    assert t.calls() == []


def test_idle_without_disconnected_sends_idle(t):
    lines(t, state(41, 0, "CONNECTED", CallInfo(call_id=0x31, origin=EXTERNAL)))
    out = t.feed(state(41, 0, "IDLE"))
    assert out.lines == [{"device": "Line 201", "call": "0x31", "state": "idle"}]


def test_new_call_id_mid_call_ends_the_old_one(t):
    lines(t, state(42, 0, "CONNECTED", CallInfo(call_id=0x40, origin=EXTERNAL)))
    out = lines(t, TapiMessage(M["LINE_CALLINFO"], 42, 0, 0x40, 0, 0,
                               CallInfo(call_id=0x41, origin=EXTERNAL)))
    assert out == [{"device": "Line 201", "call": "0x40", "state": "idle"},
                   {"device": "Line 201", "call": "0x41", "state": "connected", "called": "201"}]


def test_no_call_id_uses_the_handle(t):
    out = lines(t, state(0xAB, 0, "OFFERING", CallInfo(caller=Party("0301"))))
    assert out[-1]["call"] == "hab"


def test_out_of_service_and_back_resends_the_calls(t):
    lines(t, state(50, 0, "CONNECTED", CallInfo(call_id=0x50, origin=EXTERNAL)))
    out = lines(t, TapiMessage(M["LINE_LINEDEVSTATE"], 0, 0, 0x80))
    assert out == [{"device": "Line 201", "devstate": "outofservice"}]
    snap = t.snapshot()
    assert {"device": "Line 201", "devstate": "outofservice"} in snap
    assert not [ln for ln in snap if ln.get("call")]
    out = lines(t, TapiMessage(M["LINE_LINEDEVSTATE"], 0, 0, 0x40))
    # Back in service: the call still up is sent again (the gateway had dropped it).
    assert out == [{"device": "Line 201", "devstate": "inservice"},
                   {"device": "Line 201", "call": "0x50", "state": "connected",
                    "called": "201"}]


def test_snapshot_is_the_full_state(t):
    lines(t, state(60, 0, "CONNECTED", CallInfo(call_id=0x60, origin=EXTERNAL,
                                                caller=Party("0301"))),
          state(61, 1, "OFFERING", CallInfo(call_id=0x61, origin=EXTERNAL)))
    snap = t.snapshot()
    assert [ln.get("devstate") or ln["state"] for ln in snap] == [
        "inservice", "connected", "inservice", "offering", "inservice"]


def test_reinit_forgets_everything_and_asks_for_a_fresh_connection(t):
    lines(t, state(70, 0, "CONNECTED", CallInfo(call_id=0x70, origin=EXTERNAL)))
    out = t.feed(TapiMessage(M["LINE_LINEDEVSTATE"], 0, 0, C.DEVSTATE["LINEDEVSTATE_REINIT"]))
    assert out.reset and out.lines == []
    assert t.snapshot() == [] and t.calls() == []
    # Nothing left to forget: a provider failing again does not restart the connection.
    assert not t.feed(Reinitialized()).reset
    t.feed(LineOpened(0, "Line 201", "201"))
    assert t.feed(Reinitialized()).reset


def test_line_removed_or_closed_is_out_of_service_and_its_calls_given_back(t):
    lines(t, state(80, 2, "CONNECTED", CallInfo(call_id=0x80, origin=EXTERNAL)))
    out = t.feed(TapiMessage(M["LINE_REMOVE"], 0, 0, 2))
    assert out.lines == [{"device": "Line 203", "devstate": "outofservice"}]
    assert out.deallocate == [80]
    out = t.feed(TapiMessage(M["LINE_CLOSE"], 1, 1))
    assert out.lines == [{"device": "Line 202", "devstate": "outofservice"}]


def test_calls_per_line_are_bounded(t):
    for h in range(MAX_CALLS_PER_LINE):
        t.feed(new_call(0, 1000 + h, CallInfo(call_id=h + 1)))
    out = t.feed(new_call(0, 5000, CallInfo(call_id=9999)))
    assert out.deallocate == [5000] and "more than" in out.notes[0]
    assert len(t.calls()) == MAX_CALLS_PER_LINE


def test_messages_for_unknown_lines_change_nothing(t):
    assert t.feed(new_call(9, 90, CallInfo(call_id=1))).deallocate == [90]
    assert t.feed(TapiMessage(M["LINE_LINEDEVSTATE"], 9, 9, 0x80)).lines == []
    assert t.feed(TapiMessage(M["LINE_MONITORDIGITS"], 1, 0, 0x31)).lines == []


# -- commands ------------------------------------------------------------------------------


def ringing_at_201(t):
    lines(t, state(100, 0, "OFFERING", CallInfo(call_id=0x100, origin=EXTERNAL)))


CMD = {"cmd": "pickup", "op": "op1", "device": "Line 201", "call": "0x100", "to": "Line 202"}


def test_pickup_becomes_linePickupW_and_LINE_REPLY_its_result(t):
    ringing_at_201(t)
    out, req = t.command(CMD, now=100.0)
    assert out.lines == []
    assert (req.function, req.line, req.dest) == ("linePickupW", 1, "201")
    assert t.request_sent("op1", 0x42).lines == []
    assert t.next_deadline() == pytest.approx(115.0)
    out = t.feed(TapiMessage(M["LINE_REPLY"], 0, 0, 0x42, 0))
    assert out.lines == [{"result": "op1", "ok": True}]
    assert t.next_deadline() is None


def test_pickup_refused_by_the_provider(t):
    ringing_at_201(t)
    _, req = t.command(CMD, now=0.0)
    t.request_sent("op1", 7)
    out = t.feed(TapiMessage(M["LINE_REPLY"], 0, 0, 7, C.ERRORS["LINEERR_INVALCALLSTATE"]))
    assert out.lines == [{"result": "op1", "ok": False,
                          "error": "linePickupW: LINEERR_INVALCALLSTATE"}]
    # An error returned at once by the function itself.
    _, req = t.command({**CMD, "op": "op2"}, now=0.0)
    out = t.request_sent("op2", C.ERRORS["LINEERR_NOTOWNER"])
    assert out.lines[0]["error"] == "linePickupW: LINEERR_NOTOWNER"


def test_pickup_without_reply_times_out(t):
    ringing_at_201(t)
    t.command(CMD, now=0.0)
    t.request_sent("op1", 3)
    assert t.tick(14.0).lines == []
    out = t.tick(15.0)
    assert out.lines == [{"result": "op1", "ok": False,
                          "error": "linePickupW: no LINE_REPLY from the provider"}]


@pytest.mark.parametrize("change,error", [
    ({"device": "Line 999"}, "no line 'Line 999'"),
    ({"to": "Line 999"}, "no line 'Line 999'"),
    ({"call": "0x999"}, "no call '0x999'"),
    ({"to": "Line 203"}, "not opened with owner privilege"),
])
def test_pickup_that_cannot_be_done_is_answered_at_once(t, change, error):
    ringing_at_201(t)
    out, req = t.command({**CMD, **change}, now=0.0)
    assert req is None and out.lines[0]["ok"] is False and error in out.lines[0]["error"]


def test_pickup_of_a_call_no_longer_ringing(t):
    ringing_at_201(t)
    lines(t, state(100, 0, "CONNECTED"))
    out, req = t.command(CMD, now=0.0)
    assert req is None and "not ringing (connected)" in out.lines[0]["error"]


def test_redirect_mode_uses_lineRedirectW_on_the_ringing_call(t):
    lines(t, state(101, 1, "OFFERING", CallInfo(call_id=0x101, origin=EXTERNAL)))
    out, req = t.command({**CMD, "device": "Line 202", "call": "0x101", "to": "Line 203"},
                         now=0.0, mode="redirect")
    assert (req.function, req.hcall, req.dest) == ("lineRedirectW", 101, "203")


# -- traces --------------------------------------------------------------------------------


class Collect:
    def __init__(self) -> None:
        self.translator = Translator()
        self.lines: list[dict] = []

    def feed(self, ev):
        out = self.translator.feed(ev)
        self.lines += out.lines
        return out

    def post_request_result(self, op, result):
        self.lines += self.translator.request_sent(op, result).lines


@pytest.mark.parametrize("trace", sorted(p.name for p in TRACES.glob("*.jsonl")))
def test_every_trace_gives_lines_the_gateway_accepts(trace):
    """Every line the translator makes of the shipped traces is a valid contract line for
    the gateway's own parser (no line is skipped as malformed)."""
    sink = Collect()
    replay = Replay(load_trace(TRACES / trace), sink, speed=0)

    async def play():
        while replay.pos < len(replay.records):
            rec = replay.records[replay.pos]
            replay.pos += 1
            if rec.kind == "await" or rec.data.get("msg") == "LINE_REPLY":
                continue  # no gateway here to make the request, no request to answer
            await replay._play(rec)

    asyncio.run(play())
    devices = {f"Line {n}": (n, n) for n in ("201", "202", "203")}
    assert sink.lines, "the trace produced no lines"
    for ln in sink.lines:
        if "result" in ln:
            continue
        parse_line(json.dumps(ln), devices)  # raises BridgeLineError if malformed


@pytest.mark.parametrize("text,error", [
    ('{"msg": "LINE_NOSUCH"}', r"not a LINE_\* message"),
    ('{"msg": "LINE_CALLSTATE", "dwParam1": "LINECALLSTATE_IDLE"}', "needs hCall"),
    ('{"msg": "LINE_CALLSTATE", "hCall": 1, "dwParam1": "LINECALLSTATE_NOPE"}',
     "unknown TAPI constant 'LINECALLSTATE_NOPE'"),
    ('{"msg": "LINE_CALLINFO", "hCall": 1, "callinfo": {"Foo": 1}}', "not a LINECALLINFO"),
    ('{"open": "x", "LineName": "a"}', "open takes a dwDeviceID"),
    ('[1, 2]', "not a JSON object"),
    ('{"what": 1}', "a record has"),
])
def test_bad_trace_records_are_refused_with_their_line(text, error):
    with pytest.raises(TraceError, match=error) as exc:
        parse_trace(["# comment", "", text], "t.jsonl")
    assert str(exc.value).startswith("t.jsonl:3:")


class Recording(Collect):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[str] = []

    def feed(self, ev):
        self.records.append(json.dumps(to_record(ev)))
        return super().feed(ev)


async def _play_all(replay: Replay) -> None:
    while replay.pos < len(replay.records):
        rec = replay.records[replay.pos]
        replay.pos += 1
        if rec.kind != "await" and rec.data.get("msg") != "LINE_REPLY":
            await replay._play(rec)


@pytest.mark.parametrize("trace", sorted(p.name for p in TRACES.glob("*.jsonl")))
def test_a_recording_replays_to_the_same_lines(trace):
    """What --record writes of the events is a trace that replays to exactly the same bridge
    lines (the recorded LINECALLINFO goes through the byte layout and the reader again)."""
    first = Recording()
    asyncio.run(_play_all(Replay(load_trace(TRACES / trace), first, speed=0)))
    second = Collect()
    asyncio.run(_play_all(Replay(parse_trace(first.records, "recording"), second, speed=0)))
    assert second.lines == first.lines and first.lines
