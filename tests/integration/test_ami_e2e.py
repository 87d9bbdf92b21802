"""Asterisk lines end to end: the AMI test peer -> the gateway -> Redis -> WebSocket watchers,
and call pickup through the PBX (Redirect, PickupChan) or the picker's own phone."""

from __future__ import annotations

import asyncio

import pytest

from conftest import (
    HASH,
    ami_line,
    ami_source,
    eventually,
    gateway_config,
    login,
    toml_table,
)

def config(redis_url: str, ami_port: int, method: str) -> str:
    """alice, bob and carol on Asterisk (carol's line is the hint 203), dan on the TAPI
    bridge; eve monitors bob's line and may pick up his calls (by `method`)."""
    return gateway_config(
        redis_url, server={"login_attempts_per_minute": 1000},
        sections=ami_source(ami_port, pickup=method, context="from-internal")
        + toml_table("[pickup]", dial="**{number}"),
        lines=("201", "202", "203", "204"), owners=("alice", "bob", "carol", "dan"),
        device_keys=lambda n: {"201": ami_line(n), "202": ami_line(n),
                               "203": {"source": "ami", "line": "203"},
                               "204": {"source": "tapi_bridge"}}[n],
        client_keys={"bob": {"sip_user": "bob.sip"}}, password_hash=HASH,
        more=toml_table("[[clients]]", name="eve", password_hash=HASH,
                        monitor=[{"device": "202", "clip": False, "pickup": True}])
        + toml_table("[[groups]]", name="team", members=["alice", "bob", "carol", "dan"],
                     rights={"numbers": "all", "pickup": True})
        + toml_table("[[groups]]", name="quiet", members=["alice", "bob", "eve"],
                     rights={"numbers": "none", "pickup": False}))


@pytest.fixture
async def gw(peer, redis_url, start_gateway):
    return await start(peer, redis_url, start_gateway)


async def start(peer, redis_url, start_gateway, method="redirect", secret="s3cret"):
    (start_gateway.dir / "ami.secret").write_text(secret + "\n")
    gw = await start_gateway(config(redis_url, peer.port, method))
    return gw


def lamp(gw, client):
    return gw.engine.member(client).lamp.value


async def synced(gw):
    await eventually(lambda: all(lamp(gw, c) == "idle" for c in ("alice", "bob", "carol")))


async def watchers(connect, gw):
    full = await login(connect, gw, "dan")
    await full.request({"type": "subscribe", "panel": "team"})
    quiet = await login(connect, gw, "eve")
    await quiet.request({"type": "subscribe", "panel": "quiet"})
    return full, quiet


def member_lamp(c, member, value, start=0):
    return c.wait(lambda m: m.get("member") == member and m.get("lamp") == value, start=start)


async def test_internal_call_answered(gw, peer, connect):
    await synced(gw)
    full, quiet = await watchers(connect, gw)
    call = peer.model.internal_call("201", "202")
    m = await member_lamp(full, "bob", "ringing")
    assert m["calls"][0]["remote"] == "201" and m["calls"][0]["direction"] == "in"
    await member_lamp(full, "alice", "outgoing")
    q = await member_lamp(quiet, "bob", "ringing")
    assert q["calls"][0]["remote"] is None  # no number right
    peer.model.answer(call)
    await member_lamp(full, "bob", "busy")
    m = await member_lamp(full, "alice", "busy")
    assert m["calls"][0]["remote"] == "202"
    peer.model.hangup(call)
    await member_lamp(full, "bob", "idle")
    await member_lamp(full, "alice", "idle")
    assert not any("Alice" in f or '"201"' in f.split('"number"')[0] for f in quiet.raw
                   if '"remote":"' in f)


async def test_external_call_missed(gw, peer, connect):
    await synced(gw)
    full, quiet = await watchers(connect, gw)
    call = peer.model.external_call("+4930999888", "Miller Ltd", "203")
    m = await member_lamp(full, "carol", "ringing")
    assert m["calls"][0]["remote"] == "+4930999888"
    assert m["calls"][0]["remote_name"] == "Miller Ltd"
    peer.model.cancel(call)
    await member_lamp(full, "carol", "idle")


async def test_call_waiting_hold_and_unhold(gw, peer, connect):
    await synced(gw)
    full, _ = await watchers(connect, gw)
    first = peer.model.external_call("+4930111", "First", "202")
    peer.model.answer(first)
    await member_lamp(full, "bob", "busy")
    mark = len(full.received)
    second = peer.model.external_call("+4930222", "Second", "202")
    m = await member_lamp(full, "bob", "ringing", start=mark)
    assert {c["remote"] for c in m["calls"]} == {"+4930111", "+4930222"}
    peer.model.cancel(second)
    await member_lamp(full, "bob", "busy", start=mark)
    mark = len(full.received)
    peer.model.hold(first.callee)
    await member_lamp(full, "bob", "held", start=mark)
    peer.model.unhold(first.callee)
    await member_lamp(full, "bob", "busy", start=mark)


async def test_blind_transfer_moves_the_call(gw, peer, connect):
    await synced(gw)
    full, _ = await watchers(connect, gw)
    call = peer.model.external_call("+4930333", "Caller", "201")
    peer.model.answer(call)
    await member_lamp(full, "alice", "busy")
    peer.model.blind_transfer(call, call.callee, "202")
    m = await member_lamp(full, "bob", "ringing")
    assert m["calls"][0]["remote"] == "+4930333"
    await member_lamp(full, "alice", "idle")


async def test_asterisk_restart_mid_call_leaves_no_stuck_lamp(gw, peer, connect):
    await synced(gw)
    full, _ = await watchers(connect, gw)
    call = peer.model.internal_call("201", "202")
    peer.model.answer(call)
    await member_lamp(full, "alice", "busy")
    mark = len(full.received)
    await peer.restart(lose_channels=True, down_for=0.3)
    await member_lamp(full, "alice", "unknown", start=mark)
    await member_lamp(full, "alice", "idle", start=mark)
    await member_lamp(full, "bob", "idle", start=mark)


async def test_garbage_from_asterisk_never_corrupts_state(gw, peer, connect):
    await synced(gw)
    full, _ = await watchers(connect, gw)
    call = peer.model.external_call("+4930444", "X", "202")
    await member_lamp(full, "bob", "ringing")
    peer.send_garbage(b"\x00\xff garbage\r\nnot: a message\r\n\r\n" + b"A" * 20000 + b"\r\n\r\n")
    peer.send_garbage(b"Event: Newstate\r\nChannel: PJSIP/999-1\r\nChannelState: x\r\n\r\n")
    peer.model.answer(call)
    await member_lamp(full, "bob", "busy")
    assert lamp(gw, "alice") == "idle" and lamp(gw, "carol") == "idle"


async def test_failed_ami_login_is_reported_and_retried(peer, redis_url, start_gateway,
                                                        caplog):
    gw = await start(peer, redis_url, start_gateway, secret="wrong")
    await eventually(lambda: peer.failed_logins >= 2, timeout=10)
    assert lamp(gw, "alice") == "unknown"
    assert any("refused" in r.getMessage() for r in caplog.records)
    assert not any("wrong" in r.getMessage() for r in caplog.records)  # secret never logged
    # The admin fixes the secret file: the next retry logs in.
    (start_gateway.dir / "ami.secret").write_text("s3cret\n")
    await eventually(lambda: lamp(gw, "alice") == "idle", timeout=40)


# -- pickup ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["redirect", "pickupchan"])
async def test_pickup_through_asterisk(peer, redis_url, start_gateway, connect, method):
    gw = await start(peer, redis_url, start_gateway, method=method)
    await synced(gw)
    full, _ = await watchers(connect, gw)
    alice = await login(connect, gw, "alice")
    peer.model.external_call("+4930555", "Customer", "202")
    await member_lamp(full, "bob", "ringing")
    r = await alice.request({"type": "pickup", "panel": "team", "member": "bob", "op": "p1"})
    assert r["type"] == "ok"
    result = await alice.wait(lambda m: m.get("type") == "pickup_result")
    assert result == {"type": "pickup_result", "op": "p1", "ok": True, "by": "alice",
                      "device": "201", "target": "bob"}
    sent = [a for a, _ in peer.actions]
    assert ("Redirect" if method == "redirect" else "Originate") in sent
    # Every watcher sees the lamps move: bob stops ringing; with Redirect the call now rings
    # at alice's phone (she answers it there), with PickupChan her phone took it at once.
    m = await member_lamp(full, "alice", "ringing" if method == "redirect" else "busy")
    assert m["calls"][0]["remote"] == "+4930555"
    await member_lamp(full, "bob", "idle")


async def test_pickup_rights_and_nothing_to_take(gw, peer, connect):
    await synced(gw)
    alice = await login(connect, gw, "alice")
    eve = await login(connect, gw, "eve")
    r = await alice.request({"type": "pickup", "panel": "team", "member": "bob"})
    assert r["code"] == "not_found"  # nothing ringing
    peer.model.external_call("+4930666", "C", "202")
    await eventually(lambda: lamp(gw, "bob") == "ringing")
    r = await alice.request({"type": "pickup", "panel": "quiet", "member": "bob"})
    assert r["code"] == "forbidden"  # the quiet group has no pickup right
    r = await alice.request({"type": "pickup", "device": "202"})
    assert r["code"] == "forbidden"  # no monitor right
    r = await alice.request({"type": "pickup", "panel": "team", "member": "alice"})
    assert r["code"] == "forbidden"
    r = await alice.request({"type": "pickup", "panel": "team", "member": "zed"})
    assert r["code"] == "not_found"
    assert not [a for a, _ in peer.actions if a in ("Redirect", "Originate")]
    # A monitor right with pickup works for a device; eve has no phone of her own, so her
    # client gets the action with the dial string.
    r = await eve.request({"type": "pickup", "device": "202", "op": "e1"})
    assert r["type"] == "ok"
    action = await eve.wait(lambda m: m.get("type") == "action")
    assert action["action"] == "pickup" and action["dial"] == "**202"
    assert action["number"] == "202" and action["sip_user"] == "bob.sip"


async def test_two_pickers_race_exactly_one_wins(gw, peer, connect):
    await synced(gw)
    alice = await login(connect, gw, "alice")
    carol = await login(connect, gw, "carol")
    peer.model.external_call("+4930777", "C", "202")
    await eventually(lambda: lamp(gw, "bob") == "ringing")
    ra, rc = await asyncio.gather(
        alice.request({"type": "pickup", "panel": "team", "member": "bob", "op": "a"}),
        carol.request({"type": "pickup", "panel": "team", "member": "bob", "op": "c"}),
    )
    outcomes = sorted([ra.get("code", ra["type"]), rc.get("code", rc["type"])])
    assert outcomes == ["conflict", "ok"]
    loser, winner = (ra, "carol") if ra.get("code") == "conflict" else (rc, "alice")
    # Either still being taken, or just taken: the loser hears who has it.
    assert loser["message"].startswith(winner) and "that call" in loser["message"]
    assert len([a for a, _ in peer.actions if a == "Redirect"]) == 1


async def test_repeated_op_is_answered_like_the_first_not_run_twice(gw, peer, connect):
    await synced(gw)
    alice = await login(connect, gw, "alice")
    peer.model.external_call("+4930888", "C", "202")
    await eventually(lambda: lamp(gw, "bob") == "ringing")
    first = await alice.request({"type": "pickup", "panel": "team", "member": "bob", "op": "x1"})
    r1 = await alice.wait(lambda m: m.get("type") == "pickup_result")
    await eventually(lambda: lamp(gw, "bob") == "idle")
    mark = len(alice.received)
    again = await alice.request({"type": "pickup", "panel": "team", "member": "bob", "op": "x1"})
    r2 = await alice.wait(lambda m: m.get("type") == "pickup_result", start=mark)
    assert first["type"] == again["type"] == "ok"
    assert r1 == r2
    assert len([a for a, _ in peer.actions if a == "Redirect"]) == 1
    # A new op now finds nothing ringing.
    r = await alice.request({"type": "pickup", "panel": "team", "member": "bob", "op": "x2"})
    assert r["code"] == "not_found"


async def test_softphone_picker_gets_an_action(gw, peer, connect):
    await synced(gw)
    dan = await login(connect, gw, "dan")  # his device is a TAPI line: his phone must act
    peer.model.external_call("+4930999", "C", "202")
    await eventually(lambda: lamp(gw, "bob") == "ringing")
    r = await dan.request({"type": "pickup", "panel": "team", "member": "bob", "op": "d1"})
    assert r["type"] == "ok"
    action = await dan.wait(lambda m: m.get("type") == "action")
    assert action["dial"] == "**202" and action["op"] == "d1" and action["target"] == "bob"
    assert not [a for a, _ in peer.actions if a in ("Redirect", "Originate")]


async def test_changed_ami_lines_are_resynced_at_once(gw, peer, connect):
    """A reload that changes which AMI line a device is watched on reconnects to Asterisk and
    re-syncs: the lamp is exact again without waiting for a new event."""
    await synced(gw)
    full, _ = await watchers(connect, gw)
    peer.model.external_call("0301", "Customer", "203")
    await member_lamp(full, "carol", "ringing")
    logins = sum(1 for a, _ in peer.actions if a == "Login")
    path = gw.config_path
    path.write_text(path.read_text().replace('line = "203"', 'line = "PJSIP/203"'))
    await eventually(lambda: sum(1 for a, _ in peer.actions if a == "Login") == logins + 1,
                     timeout=5)
    await eventually(lambda: lamp(gw, "carol") == "ringing" and gw.engine.device_state(
        "203").calls[0].remote == "0301", timeout=5)
    assert gw.config.device_by_id["203"].line == "PJSIP/203"
