"""The live driver (the TAPI message loop in its thread) against a stand-in TSP that fills
TAPI's structures byte for byte (faketsp.py), through the bridge's link into the real
gateway, watched over a real WebSocket."""

from __future__ import annotations

import asyncio

import pytest

from conftest import eventually, free_port, login
from faketsp import FakeTapi
from gateway.tapi.winbridge import constants as C
from gateway.tapi.winbridge.callinfo import CallInfo, Party
from gateway.tapi.winbridge.driver import Driver, LineChoice
from gateway.tapi.winbridge.link import Bridge, LinkOptions
from gateway.tapi.winbridge.trace import Recorder, Replay, load_trace
from gateway.tapi.winbridge.translate import Translator
from tapikit import office_config

EXTERNAL = C.CALLORIGIN["LINECALLORIGIN_EXTERNAL"]
MILLER = CallInfo(call_id=0x77, origin=EXTERNAL, called=Party("201"),
                  caller=Party("+4930123456", "Miller Ltd", 0xC))


@pytest.fixture
async def live(redis_url, start_gateway, connect):
    made = []

    async def open_(choice=LineChoice(), port=None, record=None):
        port = port or free_port()
        gw = await start_gateway(office_config(redis_url, port))
        dan = await login(connect, gw, "dan", panel="office")
        tsp = FakeTapi([("Line 201", "201"), ("Line 202", "202"), ("Line 203", "203"),
                        ("Fax", "299")])
        bridge = Bridge(LinkOptions("127.0.0.1", port, backoff_min=0.05, backoff_max=0.2))
        driver = Driver(tsp, bridge, choice, retry_min=0.05, reopen_after=0.2)
        if record is not None:
            bridge.recorder = Recorder(record)
        bridge.provider = driver
        task = asyncio.create_task(bridge.run())
        await asyncio.sleep(0)  # the link owns the loop before the TAPI thread posts
        driver.start()
        made.append((bridge, driver, task))
        await asyncio.wait_for(bridge.connected.wait(), 10)
        return gw, dan, tsp, bridge, driver

    yield open_
    for bridge, driver, task in made:
        driver.stop()
        bridge.stop()
        await asyncio.wait_for(task, 5)


def lamp(dan, member):
    frames = [m for m in dan.received if m.get("member") == member and m.get("type") == "lamp"]
    return frames[-1] if frames else None


async def shows(dan, member, value, **kw):
    def ok():
        f = lamp(dan, member)
        return f if f and f["lamp"] == value and all(
            any(c.get(k) == v for c in f["calls"]) for k, v in kw.items()) else None
    return await eventually(ok, 5)


async def test_live_call_ringing_answered_and_ended(live, tmp_path):
    recording = tmp_path / "tsp.jsonl"
    gw, dan, tsp, bridge, driver = await live(LineChoice(names=("Line *",)), record=recording)
    await shows(dan, "alice", "idle")
    key = tsp.offer(0, MILLER)
    f = await shows(dan, "alice", "ringing", remote="+4930123456")
    assert f["calls"][0]["id"] == "201/0x77" and f["calls"][0]["remote_name"] == "Miller Ltd"
    tsp.state(key, "CONNECTED", 1)
    await shows(dan, "alice", "busy")
    handle = next(h for h, k in tsp.handles.items() if k == key)
    tsp.state(key, "IDLE")
    await shows(dan, "alice", "idle")
    # The IDLE call's handle went back to TAPI (lineDeallocateCall).
    await eventually(lambda: handle in tsp.deallocated)
    # --lines "Line *": the fax line was not opened.
    assert [name for _, name, _ in bridge.translator.lines()] == [
        "Line 201", "Line 202", "Line 203"]
    # --record wrote what the TSP said as a trace; replayed, it gives the same lines.
    bridge.recorder.close()

    class Sink:
        def __init__(self):
            self.translator, self.lines = Translator(), []

        def feed(self, ev):
            out = self.translator.feed(ev)
            self.lines += out.lines
            return out

    sink = Sink()
    await Replay(load_trace(recording), sink, speed=0).play()
    assert sink.translator.snapshot() == bridge.translator.snapshot()
    assert {"device": "Line 201", "call": "0x77", "state": "offering",
            "caller": "+4930123456", "caller_name": "Miller Ltd", "called": "201"} in sink.lines


async def test_live_reinit_reopens_and_finds_the_call_again(live):
    gw, dan, tsp, bridge, driver = await live()
    key = tsp.offer(0, MILLER, state="CONNECTED")
    await shows(dan, "alice", "busy", remote="+4930123456")
    tsp.reinit()
    # Handles dead, the bridge starts over: the gateway shows what it cannot know.
    await shows(dan, "alice", "unknown")
    # Initialized again; the call, still up, is found with lineGetNewCalls.
    f = await shows(dan, "alice", "busy", remote="+4930123456")
    assert f["calls"][0]["id"] == "201/0x77"
    assert tsp.session == 2
    tsp.state(key, "IDLE")
    await shows(dan, "alice", "idle")


async def test_live_gateway_restart_resends_state_read_from_tapi(live, start_gateway, connect,
                                                                 redis_url):
    port = free_port()
    gw, dan, tsp, bridge, driver = await live(port=port)
    tsp.offer(1, MILLER, state="CONNECTED")
    await shows(dan, "bob", "busy")
    tsp.out_of_service(2)
    await shows(dan, "carol", "offline")
    await start_gateway.stop(gw)
    await eventually(lambda: not bridge.connected.is_set())
    # While the gateway is away the call goes on hold; nothing is queued for it, the state
    # is read again (lineGetCallStatus) when the gateway is back.
    key = next(iter(tsp.calls))
    tsp.calls[key].state = C.CALLSTATE["LINECALLSTATE_ONHOLD"]
    gw2 = await start_gateway(office_config(redis_url, port))
    await asyncio.wait_for(bridge.connected.wait(), 10)
    dan2 = await login(connect, gw2, "dan")
    await eventually(lambda: gw2.engine.member("bob").lamp.value == "held")
    snap = await dan2.request({"type": "subscribe", "panel": "office"})
    members = {m["client"]: m for m in snap["members"]}
    assert members["bob"]["lamp"] == "held"
    assert members["bob"]["calls"][0]["remote"] == "+4930123456"
    assert members["carol"]["lamp"] == "offline"
    assert members["alice"]["lamp"] == "idle"


async def test_line_closed_by_the_provider_is_opened_again(live):
    gw, dan, tsp, bridge, driver = await live()
    tsp.offer(2, MILLER, state="CONNECTED")
    await shows(dan, "carol", "busy")
    tsp.close_line(2)
    # The bridge cannot watch it any more: not in service for the gateway.
    await shows(dan, "carol", "offline")
    # Opened again a moment later, its call found again.
    await shows(dan, "carol", "busy", remote="+4930123456")
    assert sum(1 for h, (d, _) in tsp.opened.items() if d == 2) == 1


def test_list_lines_reads_names_addresses_and_provider():
    from gateway.tapi.winbridge.driver import list_lines

    tsp = FakeTapi([("Line 201", "201"), ("Fax", "299")])
    assert list_lines(tsp) == [(0, "Line 201", "201", "Fake TSP"), (1, "Fax", "299", "Fake TSP")]
    assert tsp.happ == 0  # TAPI shut down again
