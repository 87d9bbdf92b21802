"""Every TAPI scenario replayed end to end: the bridge program's own translator and gateway
connection, the real gateway (real Redis, real TCP bridge port), real WebSocket watchers.

Two watchers look at the same three lines: dan in a group with `numbers = "all"`, nina in a
group with `numbers = "none"`. Each test plays a trace mark by mark and checks what they see.
"""

from __future__ import annotations

import asyncio

import pytest

from conftest import PATIENCE, eventually, free_port, login
from gateway.tapi.winbridge.link import Bridge
from gateway.tapi.winbridge.trace import Replay
from tapikit import office_config

# Numbers and names of the traces' outside parties: nina must never receive them.
SECRETS = ("+4930", "0401234567", "Miller", "First Caller", "Second Caller")


class Office:
    """The gateway, the bridge program replaying a trace into it, and the two watchers."""

    def __init__(self, gw, bridge: Bridge, replay: Replay, dan, nina) -> None:
        self.gw, self.bridge, self.replay = gw, bridge, replay
        self.dan, self.nina = dan, nina

    async def to(self, mark: str) -> None:
        assert await self.replay.play(mark)

    async def sees(self, member: str, lamp: str, watcher=None, *, calls: int | None = None,
                   remote: str | None = None, timeout: float = PATIENCE) -> dict:
        """The newest state of a member on the watcher's panel, once it shows `lamp` (with
        that many calls, one of them with that remote party, where given)."""
        w = watcher or self.dan
        panel = "office" if w is self.dan else "quiet"

        def newest():
            frames = [m for m in w.received if m.get("type") == "lamp"
                      and m.get("panel") == panel and m.get("member") == member]
            if not frames or frames[-1]["lamp"] != lamp:
                return None
            last = frames[-1]
            if calls is not None and len(last["calls"]) != calls:
                return None
            if remote is not None and not any(c["remote"] == remote for c in last["calls"]):
                return None
            return last

        try:
            return await eventually(newest, timeout)
        except AssertionError:
            last = [m for m in w.received if m.get("member") == member][-1:]
            raise AssertionError(f"{member} never showed {lamp}; last frame: {last}") from None

    def nina_saw_no_number(self) -> None:
        for frame in self.nina.raw:
            assert not any(s in frame for s in SECRETS), frame
        for m in self.nina.received:
            for call in m.get("calls", []) + [c for mem in m.get("members", [])
                                              for c in mem.get("calls", [])]:
                assert call["remote"] is None and call["remote_name"] is None, m


@pytest.fixture
def office(redis_url, start_gateway, connect, replay_bridge):
    async def open_(trace: str, bridge_port: int | None = None) -> Office:
        port = bridge_port or free_port()
        gw = await start_gateway(office_config(redis_url, port))
        dan = await login(connect, gw, "dan", panel="office")
        nina = await login(connect, gw, "nina", panel="quiet")
        bridge, replay = await replay_bridge(port, trace)
        return Office(gw, bridge, replay, dan, nina)

    return open_


async def test_internal_call_answered(office):
    o = await office("internal_answered.jsonl")
    await o.to("ringing")
    bob = await o.sees("bob", "ringing")
    assert [(c["direction"], c["remote"], c["remote_name"]) for c in bob["calls"]] == [
        ("in", "201", "Alice Archer")]
    alice = await o.sees("alice", "outgoing")
    assert [(c["direction"], c["remote"]) for c in alice["calls"]] == [("out", "202")]
    await o.to("talking")
    assert (await o.sees("bob", "busy"))["calls"][0]["remote"] == "201"
    assert (await o.sees("alice", "busy"))["calls"][0]["remote"] == "202"
    await o.sees("bob", "busy", o.nina)
    await o.to("done")
    await o.sees("alice", "idle")
    await o.sees("bob", "idle")
    await o.sees("bob", "idle", o.nina)
    o.nina_saw_no_number()


async def test_external_call_missed(office):
    o = await office("external_missed.jsonl")
    await o.to("ringing")
    alice = await o.sees("alice", "ringing")
    assert [(c["direction"], c["state"], c["remote"], c["remote_name"])
            for c in alice["calls"]] == [("in", "ringing", "+4930123456", "Miller Ltd")]
    await o.sees("alice", "ringing", o.nina)
    await o.to("done")
    assert (await o.sees("alice", "idle"))["calls"] == []
    await o.sees("alice", "idle", o.nina)
    o.nina_saw_no_number()


async def test_call_waiting(office):
    o = await office("call_waiting.jsonl")
    await o.to("talking")
    await o.sees("alice", "busy")
    await o.to("waiting")
    alice = await o.sees("alice", "ringing")  # ringing outranks busy: it can be picked up
    assert sorted((c["state"], c["remote"]) for c in alice["calls"]) == [
        ("connected", "+4930111111"), ("ringing", "+4930222222")]
    await o.to("second")
    alice = await o.sees("alice", "busy", calls=2)
    assert sorted((c["state"], c["remote"]) for c in alice["calls"]) == [
        ("connected", "+4930222222"), ("held", "+4930111111")]
    await o.to("back")
    alice = await o.sees("alice", "busy", calls=1)
    assert [(c["state"], c["remote"]) for c in alice["calls"]] == [("connected", "+4930111111")]
    await o.to("done")
    await o.sees("alice", "idle")
    await o.sees("alice", "idle", o.nina)
    o.nina_saw_no_number()


async def test_hold_and_retrieve(office):
    o = await office("hold_retrieve.jsonl")
    await o.to("dialing")
    alice = await o.sees("alice", "outgoing")
    assert [(c["direction"], c["remote"]) for c in alice["calls"]] == [("out", "0401234567")]
    await o.to("talking")
    await o.sees("alice", "busy")
    await o.to("held")
    assert (await o.sees("alice", "held"))["calls"][0]["state"] == "held"
    await o.sees("alice", "held", o.nina)
    await o.to("retrieved")
    await o.sees("alice", "busy")
    await o.to("done")
    await o.sees("alice", "idle")
    o.nina_saw_no_number()


async def test_blind_transfer_shows_the_transferred_caller(office):
    o = await office("blind_transfer.jsonl")
    await o.to("talking")
    await o.sees("alice", "busy")
    await o.to("transferred")
    await o.sees("alice", "idle")
    carol = await o.sees("carol", "ringing")
    assert [(c["direction"], c["remote"], c["remote_name"]) for c in carol["calls"]] == [
        ("in", "+4930123456", "Miller Ltd")]
    await o.to("answered")
    assert (await o.sees("carol", "busy"))["calls"][0]["remote"] == "+4930123456"
    await o.sees("carol", "busy", o.nina)
    await o.to("done")
    await o.sees("carol", "idle")
    o.nina_saw_no_number()


async def test_consultation_transfer(office):
    o = await office("consultation_transfer.jsonl")
    await o.to("consulting")
    # One call held, the consultation ringing out: held outranks outgoing (contract 2).
    alice = await o.sees("alice", "held", calls=2)
    assert sorted((c["state"], c["remote"]) for c in alice["calls"]) == [
        ("dialing", "202"), ("held", "+4930123456")]
    bob = await o.sees("bob", "ringing")
    assert bob["calls"][0]["remote"] == "201"
    await o.to("announced")
    await o.sees("alice", "busy", remote="202")
    await o.sees("bob", "busy")
    await o.to("transferred")
    await o.sees("alice", "idle")
    bob = await o.sees("bob", "busy", remote="+4930123456")
    assert [(c["remote"], c["remote_name"]) for c in bob["calls"]] == [
        ("+4930123456", "Miller Ltd")]
    await o.to("done")
    await o.sees("bob", "idle")
    await o.sees("bob", "idle", o.nina)
    o.nina_saw_no_number()


async def test_conference_shows_both_parties_and_no_bridge_call(office):
    o = await office("conference.jsonl")
    await o.to("conference")
    alice = await o.sees("alice", "busy", calls=2)
    assert sorted((c["state"], c["remote"]) for c in alice["calls"]) == [
        ("connected", "+4930123456"), ("connected", "203")]
    assert (await o.sees("carol", "busy"))["calls"][0]["remote"] == "201"
    await o.to("done")
    await o.sees("alice", "idle")
    await o.sees("carol", "idle")
    o.nina_saw_no_number()


async def test_call_picked_up_by_another_line(office):
    o = await office("picked_up_elsewhere.jsonl")
    await o.to("ringing")
    await o.sees("alice", "ringing")
    await o.to("picked")
    await o.sees("alice", "idle")
    bob = await o.sees("bob", "busy")
    assert [(c["direction"], c["remote"]) for c in bob["calls"]] == [("in", "+4930123456")]
    await o.sees("bob", "busy", o.nina)
    await o.to("done")
    await o.sees("bob", "idle")
    o.nina_saw_no_number()


async def test_line_out_of_service_and_back(office):
    o = await office("out_of_service.jsonl")
    await o.to("up")
    await o.sees("carol", "idle")
    await o.to("down")
    await o.sees("carol", "offline")
    await o.sees("carol", "offline", o.nina)
    await o.to("back")
    await o.sees("carol", "idle")


async def test_tsp_reinit_turns_lamps_unknown_then_exact(office):
    o = await office("tsp_reinit.jsonl")
    await o.to("talking")
    await o.sees("alice", "busy")
    connections = o.bridge.connections
    await o.to("reinit")
    # Every handle is gone: the bridge starts its gateway connection afresh, the gateway
    # shows the lines unknown until the bridge has them again.
    await o.sees("alice", "unknown")
    await o.sees("bob", "unknown")
    await eventually(lambda: o.bridge.connections == connections + 1)
    await o.to("resynced")
    alice = await o.sees("alice", "busy")
    assert [(c["id"], c["remote"]) for c in alice["calls"]] == [("201/0x9001", "+4930123456")]
    await o.sees("bob", "idle")
    await o.to("done")
    await o.sees("alice", "idle")
    o.nina_saw_no_number()


async def test_gateway_restart_mid_call(office, start_gateway, connect, redis_url):
    port = free_port()
    o = await office("external_missed.jsonl", bridge_port=port)
    await o.to("ringing")
    await o.sees("alice", "ringing")
    await start_gateway.stop(o.gw)
    await eventually(lambda: not o.bridge.connected.is_set())
    # The bridge keeps retrying; a new gateway on the same port gets the full state.
    gw2 = await start_gateway(office_config(redis_url, port))
    await asyncio.wait_for(o.bridge.connected.wait(), 10)
    dan = await login(connect, gw2, "dan")
    await eventually(lambda: gw2.engine.member("alice").lamp.value == "ringing")
    snap = await dan.request({"type": "subscribe", "panel": "office"})
    alice = next(m for m in snap["members"] if m["client"] == "alice")
    assert alice["lamp"] == "ringing"
    assert [(c["id"], c["remote"]) for c in alice["calls"]] == [("201/0x2001", "+4930123456")]
    # The rest of the trace reaches the new gateway.
    o.dan = dan
    await o.to("done")
    await o.sees("alice", "idle")
