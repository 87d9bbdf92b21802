"""End to end: real Redis, the real gateway, real WebSocket clients and a real TCP bridge."""

from __future__ import annotations

import asyncio
import json

import pytest

from conftest import HASH, PATIENCE, PW, eventually, login
from gateway.auth import hash_password

CONFIG = """
[server]
listen = "127.0.0.1:0"
{server_extra}

[redis]
url = "{redis}"

[sources.tapi_bridge]
listen = "127.0.0.1:0"

[[devices]]
id = "201"
name = "Alice desk"
number = "201"
line = "Line 201"
[[devices]]
id = "202"
number = "202"
line = "Line 202"
[[devices]]
id = "203"
number = "203"
line = "Line 203"
[[devices]]
id = "209"
number = "209"
line = "Line 209"

[[clients]]
name = "alice"
first_name = "Alice"
last_name = "Archer"
devices = ["201", "209"]
blf = {{ devices = "{alice_mode}", softphone = {alice_softphone} }}
password_hash = "{hash}"

[[clients]]
name = "bob"
devices = ["202"]
password_hash = "{hash}"
monitor = [ {{ device = "201", clip = false }} ]

[[clients]]
name = "carol"
devices = ["203"]
password_hash = "{hash}"
monitor = [ {{ device = "201", clip = true }} ]

[[clients]]
name = "dan"
password_hash = "{hash}"

[[clients]]
name = "room"
type = "nologin"
devices = ["209"]

[[groups]]
name = "all_numbers"
members = ["alice", "carol", "room"]
rights = {{ numbers = "all" }}

[[groups]]
name = "no_numbers"
members = ["alice", "bob"]
rights = {{ numbers = "none" }}

[[groups]]
name = "inbound_numbers"
members = ["alice", "dan"]
rights = {{ numbers = "inbound" }}

[[groups]]
name = "lamps_only"
members = ["alice", "dan", "bob"]
rights = {{ calls = false, numbers = "all" }}

[[groups]]
name = "hidden"
members = ["alice", "bob"]
rights = {{ visible = false }}
"""


def config(redis_url, alice_mode="all", alice_softphone="true", server_extra=""):
    return CONFIG.format(redis=redis_url, alice_mode=alice_mode, alice_softphone=alice_softphone,
                         hash=HASH, server_extra=server_extra)


async def all_in_service(b):
    await b.send(*[{"device": f"Line {n}", "devstate": "inservice"} for n in (201, 202, 203, 209)])


def member(snapshot, name):
    return next(m for m in snapshot["members"] if m["client"] == name)


async def test_welcome_lists_what_the_client_may_see(redis_url, start_gateway, connect):
    gw = await start_gateway(config(redis_url))
    c = await connect(gw)
    w = await c.request({"type": "login", "client": "alice", "password": PW})
    assert w["type"] == "welcome" and w["client"]["display"] == "Alice Archer"
    assert w["panels"] == ["all_numbers", "no_numbers", "inbound_numbers", "lamps_only"]
    assert [d["id"] for d in w["devices"]] == ["201", "209"]
    assert isinstance(w["token"], str) and len(w["token"]) >= 32
    assert "password" not in w
    b = await connect(gw)
    wb = await b.request({"type": "login", "client": "bob", "password": PW})
    assert wb["monitors"] == [{"device": "201", "clip": False, "pickup": False}]


@pytest.mark.parametrize(
    "client,password", [("alice", "wrong"), ("nobody", PW), ("room", PW)]
)
async def test_failed_login_says_the_same_whatever_was_wrong(redis_url, start_gateway, connect,
                                                             client, password):
    gw = await start_gateway(config(redis_url))
    c = await connect(gw)
    r = await c.request({"type": "login", "client": client, "password": password})
    assert r["type"] == "error" and r["code"] == "auth_failed"
    assert r["message"] == "wrong client name or password"
    r = await c.request({"type": "subscribe", "panel": "all_numbers"})
    assert r["code"] == "unauthenticated"


async def test_token_login_and_token_dies_with_password_change(redis_url, start_gateway, connect):
    gw = await start_gateway(config(redis_url))
    c = await connect(gw)
    w = await c.request({"type": "login", "client": "alice", "password": PW})
    c2 = await connect(gw)
    assert (await c2.request({"type": "login", "client": "alice", "token": w["token"]}))[
        "type"] == "welcome"
    c3 = await connect(gw)
    bad = await c3.request({"type": "login", "client": "bob", "token": w["token"]})
    assert bad["code"] == "auth_failed"  # a token is for its own client only
    await gw.store.set_password("alice", hash_password("a new password", n=2**10),
                                at_next_login=False)
    c4 = await connect(gw)
    r = await c4.request({"type": "login", "client": "alice", "token": w["token"]})
    assert r["code"] == "auth_failed"
    c5 = await connect(gw)
    assert (await c5.request({"type": "login", "client": "alice", "password": "a new password"})
            )["type"] == "welcome"


async def test_ringing_call_lights_lamps_with_numbers_per_rights(redis_url, start_gateway,
                                                                 connect, bridge):
    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await all_in_service(b)
    carol = await login(connect, gw, "carol")   # all_numbers
    bob = await login(connect, gw, "bob")       # no_numbers, lamps_only, monitor 201 w/o clip
    dan = await login(connect, gw, "dan")       # inbound_numbers, lamps_only
    snaps = {}
    for who, c, panel in [("carol", carol, "all_numbers"), ("bob", bob, "no_numbers"),
                          ("dan", dan, "inbound_numbers"), ("dan-lo", dan, "lamps_only")]:
        snaps[who] = await c.request({"type": "subscribe", "panel": panel})
    await eventually(lambda: gw.engine.member("alice").lamp.value == "idle")
    bob_dev = await bob.request({"type": "subscribe", "device": "201"})
    carol_dev = await carol.request({"type": "subscribe", "device": "201"})
    assert bob_dev["type"] == "snapshot" and bob_dev["rights"]["numbers"] == "none"

    await b.send({"device": "Line 201", "call": "0x1", "state": "offering",
                  "caller": "+4930555123", "caller_name": "Miller Ltd", "called": "201"})

    def ringing(c, **match):
        return [m for m in c.lamps(**match) if m["lamp"] == "ringing"]

    lamp = await carol.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "ringing")
    assert lamp["panel"] == "all_numbers"
    assert lamp["calls"][0]["remote"] == "+4930555123"
    assert lamp["calls"][0]["remote_name"] == "Miller Ltd"
    assert lamp["calls"][0]["direction"] == "in" and lamp["calls"][0]["state"] == "ringing"
    lamp = await dan.wait(lambda m: m.get("panel") == "inbound_numbers" and m.get("lamp") == "ringing")
    assert lamp["calls"][0]["remote"] == "+4930555123"  # inbound: numbers of incoming calls
    lamp = await dan.wait(lambda m: m.get("panel") == "lamps_only" and m.get("lamp") == "ringing")
    assert lamp["calls"] == []  # no calls right: the lamp only
    lamp = await bob.wait(lambda m: m.get("panel") == "no_numbers" and m.get("lamp") == "ringing")
    assert lamp["calls"][0]["remote"] is None and lamp["calls"][0]["remote_name"] is None
    dl = await bob.wait(lambda m: m.get("device") == "201" and m.get("lamp") == "ringing")
    assert dl["calls"][0]["remote"] is None
    dl = await carol.wait(lambda m: m.get("device") == "201" and m.get("lamp") == "ringing")
    assert dl["calls"][0]["remote"] == "+4930555123"
    assert ringing(bob, member="alice")

    # An outgoing call: the inbound-only watcher does not see the dialled number.
    await b.send({"device": "Line 209", "call": "0x2", "state": "dialing",
                  "caller": "209", "called": "0401234567"})
    lamp = await dan.wait(lambda m: m.get("panel") == "inbound_numbers" and
                          any(c["direction"] == "out" for c in m.get("calls", [])))
    out = [c for c in lamp["calls"] if c["direction"] == "out"][0]
    assert out["remote"] is None
    lamp = await carol.wait(lambda m: m.get("panel") == "all_numbers" and m.get("member") == "room"
                            and m.get("lamp") == "outgoing")
    assert lamp["calls"][0]["remote"] == "0401234567"
    await asyncio.sleep(0.2)
    # The hidden numbers never left the gateway, in any frame to these watchers.
    assert not any("555123" in f or "Miller" in f for f in bob.raw)
    assert not any("0401234567" in f for f in dan.raw)
    assert any("0401234567" in f for f in carol.raw)


async def test_answer_hold_and_hangup_move_the_lamp(redis_url, start_gateway, connect, bridge):
    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await all_in_service(b)
    carol = await login(connect, gw, "carol")
    await carol.request({"type": "subscribe", "panel": "all_numbers"})
    steps = [("offering", "ringing"), ("connected", "busy"), ("onhold", "held"),
             ("connected", "busy"), ("disconnected", "idle")]
    for state, expected in steps:
        mark = len(carol.received)
        await b.send({"device": "Line 201", "call": "7", "state": state, "caller": "0301"})
        await carol.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == expected,
                         start=mark)
    # A late IDLE for the ended call changes nothing: no new lamp message.
    mark = len(carol.received)
    await b.send({"device": "Line 201", "call": "7", "state": "idle"})
    await b.send({"device": "Line 203", "call": "8", "state": "offering"})
    await carol.wait(lambda m: m.get("member") == "carol" and m.get("lamp") == "ringing", start=mark)
    assert not [m for m in carol.received[mark:] if m.get("member") == "alice"]


async def test_subscription_rights(redis_url, start_gateway, connect):
    gw = await start_gateway(config(redis_url))
    bob = await login(connect, gw, "bob")
    assert (await bob.request({"type": "subscribe", "panel": "all_numbers"}))["code"] == "forbidden"
    assert (await bob.request({"type": "subscribe", "panel": "hidden"}))["code"] == "forbidden"
    assert (await bob.request({"type": "subscribe", "panel": "nope"}))["code"] == "not_found"
    assert (await bob.request({"type": "subscribe", "device": "203"}))["code"] == "forbidden"
    assert (await bob.request({"type": "subscribe", "device": "202"}))["type"] == "snapshot"
    assert (await bob.request({"type": "subscribe", "device": "201"}))["type"] == "snapshot"
    assert (await bob.request({"type": "select_device", "device": "201"}))["code"] == "forbidden"
    assert (await bob.request({"type": "unsubscribe", "device": "201"}))["type"] == "ok"


async def test_bridge_disconnect_turns_lamps_unknown_until_resent(redis_url, start_gateway,
                                                                  connect, bridge):
    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await all_in_service(b)
    await b.send({"device": "Line 203", "call": "1", "state": "connected", "caller": "0301"})
    carol = await login(connect, gw, "carol")
    await carol.request({"type": "subscribe", "panel": "all_numbers"})
    await eventually(lambda: gw.engine.member("carol").lamp.value == "busy")
    await b.close()
    await carol.wait(lambda m: m.get("member") == "carol" and m.get("lamp") == "unknown")
    b2 = await bridge(gw)
    await b2.send({"device": "Line 203", "call": "1", "state": "connected", "caller": "0301"})
    lamp = await carol.wait(lambda m: m.get("member") == "carol" and m.get("lamp") == "busy")
    assert lamp["calls"][0]["remote"] == "0301"


async def test_malformed_bridge_lines_are_skipped_and_the_connection_lives(
        redis_url, start_gateway, connect, bridge):
    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await all_in_service(b)
    await b.send("this is not json", "[1,2]", {"device": "Line 201"},
                 {"device": "Line 201", "call": "1", "state": "exploded"},
                 {"device": "No such line", "call": "1", "state": "offering"},
                 b"x" * 200_000 + b"\n", b"\xff\xfe\n",
                 {"device": "Line 201", "call": "1", "state": "offering", "caller": "0301"})
    await eventually(lambda: gw.engine.member("alice").lamp.value == "ringing")
    assert gw.bridge.lines_bad >= 6
    assert gw.bridge.connections == 1
    assert gw.engine.member("bob").lamp.value == "idle"  # other devices untouched


async def test_restarted_gateway_keeps_lamps_and_seq(redis_url, start_gateway, connect, bridge):
    text = config(redis_url)
    gw = await start_gateway(text)
    b = await bridge(gw)
    await all_in_service(b)
    await b.send({"device": "Line 201", "call": "1", "state": "connected", "caller": "0301"})
    await eventually(lambda: gw.engine.member("alice").lamp.value == "busy")
    seq_before = gw.engine.seq
    await start_gateway.stop(gw)

    gw2 = await start_gateway(text)
    b2 = await bridge(gw2)  # the bridge reconnects and re-sends its state, as bridges do
    await all_in_service(b2)
    await b2.send({"device": "Line 201", "call": "1", "state": "connected", "caller": "0301"})
    c = await login(connect, gw2, "carol")
    await eventually(lambda: gw2.engine.member("alice").lamp.value == "busy")
    snap = await c.request({"type": "subscribe", "panel": "all_numbers"})
    assert snap["seq"] > seq_before
    assert member(snap, "alice")["lamp"] == "busy"
    assert member(snap, "alice")["calls"][0]["remote"] == "0301"


async def test_reconnect_with_since_gets_exactly_what_it_missed(redis_url, start_gateway,
                                                                connect, bridge):
    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await all_in_service(b)
    await eventually(lambda: gw.engine.member("carol").lamp.value == "idle")
    c = await login(connect, gw, "carol")
    snap = await c.request({"type": "subscribe", "panel": "all_numbers"})
    assert "since" not in snap and len(snap["members"]) == 3
    seen = snap["seq"]
    await c.close()

    await b.send({"device": "Line 203", "call": "1", "state": "offering", "caller": "0301"})
    await b.send({"device": "Line 203", "call": "1", "state": "connected", "caller": "0301"})
    await eventually(lambda: gw.engine.member("carol").lamp.value == "busy")

    c2 = await login(connect, gw, "carol")
    resumed = await c2.request({"type": "subscribe", "panel": "all_numbers", "since": seen})
    assert resumed["since"] == seen
    assert [m["client"] for m in resumed["members"]] == ["carol"]
    assert resumed["members"][0]["lamp"] == "busy"
    assert resumed["seq"] > seen
    # Nothing changed since then: nothing to resend.
    again = await c2.request({"type": "subscribe", "panel": "all_numbers",
                              "since": resumed["seq"]})
    assert again["members"] == []
    # A seq the gateway never issued: a full snapshot.
    full = await c2.request({"type": "subscribe", "panel": "all_numbers", "since": 10**9})
    assert "since" not in full and len(full["members"]) == 3


async def test_config_change_of_blf_mode_reaches_watchers_without_reconnect(
        redis_url, start_gateway, connect, bridge):
    gw = await start_gateway(config(redis_url, alice_mode="all"))
    b = await bridge(gw)
    await all_in_service(b)
    await b.send({"device": "Line 209", "call": "1", "state": "connected", "caller": "0301"})
    carol = await login(connect, gw, "carol")
    await carol.request({"type": "subscribe", "panel": "all_numbers"})
    await eventually(lambda: gw.engine.member("alice").lamp.value == "busy")
    mark = len(carol.received)
    (start_gateway.dir / "gateway.toml").write_text(config(redis_url, alice_mode="first"))
    lamp = await carol.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "idle",
                            start=mark)
    assert lamp["calls"] == []
    # An invalid file is refused; the gateway keeps the last good configuration.
    (start_gateway.dir / "gateway.toml").write_text(config(redis_url, alice_mode="sometimes"))
    await eventually(lambda: gw.metrics["config_rejected"] >= 1)
    assert gw.config.client_by_name["alice"].blf.devices == "first"
    assert (await carol.request({"type": "subscribe", "device": "203"}))["type"] == "snapshot"


async def test_current_mode_follows_select_device(redis_url, start_gateway, connect, bridge):
    gw = await start_gateway(config(redis_url, alice_mode="current"))
    b = await bridge(gw)
    await all_in_service(b)
    await b.send({"device": "Line 209", "call": "1", "state": "connected", "caller": "0301"})
    carol = await login(connect, gw, "carol")
    snap = await carol.request({"type": "subscribe", "panel": "all_numbers"})
    await eventually(lambda: gw.engine.member("room").lamp.value == "busy")
    assert gw.engine.member("alice").lamp.value == "idle"  # 201 is the first device
    alice = await login(connect, gw, "alice")
    assert (await alice.request({"type": "select_device", "device": "209"}))["type"] == "ok"
    await carol.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "busy")
    assert snap["type"] == "snapshot"


async def test_softphone_call_also_on_the_line_is_shown_once(redis_url, start_gateway, connect,
                                                             bridge):
    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await all_in_service(b)
    carol = await login(connect, gw, "carol")
    await carol.request({"type": "subscribe", "panel": "all_numbers"})
    alice = await login(connect, gw, "alice")
    await alice.request({"type": "softphone", "call": "sp-1", "state": "ringing",
                         "direction": "in", "remote": "+49 30 555123"})
    await b.send({"device": "Line 201", "call": "0x9", "state": "offering",
                  "caller": "030555123"})
    # Once the line's report is shown (its call id is the line's), the softphone's report
    # of the same call must not be shown beside it.
    await carol.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "ringing"
                     and any(c["id"].startswith("201/") for c in m.get("calls", [])))
    last = carol.lamps(member="alice")[-1]
    assert last["lamp"] == "ringing" and len(last["calls"]) == 1, last
    await alice.request({"type": "softphone", "call": "sp-1", "state": "connected",
                         "direction": "in", "remote": "+49 30 555123"})
    await b.send({"device": "Line 201", "call": "0x9", "state": "connected",
                  "caller": "030555123"})
    lamp = await carol.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "busy")
    await asyncio.sleep(0.3)
    assert all(len(m["calls"]) == 1 for m in carol.lamps(member="alice")[-1:])
    assert lamp["calls"][0]["id"].startswith("201/")  # the line's report is the one shown


async def test_softphone_off_ignores_its_reports(redis_url, start_gateway, connect, bridge):
    gw = await start_gateway(config(redis_url, alice_softphone="false"))
    b = await bridge(gw)
    await all_in_service(b)
    carol = await login(connect, gw, "carol")
    await carol.request({"type": "subscribe", "panel": "all_numbers"})
    alice = await login(connect, gw, "alice")
    r = await alice.request({"type": "softphone", "call": "sp-1", "state": "connected",
                             "direction": "out", "remote": "0301"})
    assert r["type"] == "ok"
    await b.send({"device": "Line 203", "call": "1", "state": "offering"})  # a later change
    await carol.wait(lambda m: m.get("member") == "carol" and m.get("lamp") == "ringing")
    assert gw.engine.member("alice").lamp.value == "idle"
    assert not [m for m in carol.lamps(member="alice") if m["lamp"] != "idle"]


async def test_logged_in_and_presence_reach_watchers_with_the_right(redis_url, start_gateway,
                                                                    connect):
    gw = await start_gateway(config(redis_url))
    carol = await login(connect, gw, "carol")
    snap = await carol.request({"type": "subscribe", "panel": "all_numbers"})
    assert member(snap, "alice")["logged_in"] is False
    alice = await login(connect, gw, "alice")
    await carol.wait(lambda m: m.get("member") == "alice" and m.get("logged_in") is True)
    await alice.request({"type": "presence", "status": "meeting", "info": "until 3"})
    m = await carol.wait(lambda m: m.get("member") == "alice" and
                         (m.get("presence") or {}).get("status") == "meeting")
    assert m["presence"]["info"] == "until 3"
    await alice.close()
    await carol.wait(lambda m: m.get("member") == "alice" and m.get("logged_in") is False)


async def test_bad_input_gets_its_error_and_others_carry_on(redis_url, start_gateway, connect,
                                                            bridge):
    gw = await start_gateway(config(redis_url, server_extra="max_message_bytes = 4096"))
    b = await bridge(gw)
    await all_in_service(b)
    good = await login(connect, gw, "carol")
    await good.request({"type": "subscribe", "panel": "all_numbers"})
    bad = await connect(gw)
    await bad.send("{not json")
    await bad.wait(lambda m: m.get("code") == "bad_request" and "JSON" in m["message"])
    r = await bad.request({"type": "teleport"})
    assert r["code"] == "bad_request" and "unknown type" in r["message"]
    r = await bad.request({"type": "subscribe", "panel": "all_numbers"})
    assert r["code"] == "unauthenticated"
    r = await bad.request({"type": "login", "password": PW})
    assert r["code"] == "bad_request" and "client" in r["message"]
    # Too large to be read at all: refused without looking inside (so without its id).
    await bad.send({"type": "login", "client": "carol", "password": PW, "x": "y" * 5000})
    r = await bad.wait(lambda m: "too large" in m.get("message", ""))
    assert r["code"] == "bad_request"
    await bad.request({"type": "login", "client": "alice", "password": PW})
    r = await bad.request({"type": "subscribe"})
    assert r["code"] == "bad_request"
    r = await bad.request({"type": "softphone", "call": "1", "state": "exploded",
                           "direction": "in"})
    assert r["code"] == "bad_request" and "state" in r["message"]
    r = await bad.request({"type": "subscribe", "panel": "all_numbers", "since": -1})
    assert r["code"] == "bad_request"
    # The good client still gets its lamps.
    await b.send({"device": "Line 203", "call": "1", "state": "offering"})
    await good.wait(lambda m: m.get("member") == "carol" and m.get("lamp") == "ringing")
    assert gw.engine.member("alice").lamp.value == "idle"  # the bad requests changed nothing


async def test_login_flood_is_rate_limited(redis_url, start_gateway, connect):
    gw = await start_gateway(config(redis_url, server_extra="login_attempts_per_minute = 5"))
    codes = []
    for _ in range(8):
        c = await connect(gw)
        codes.append((await c.request({"type": "login", "client": "alice", "password": "x"}))["code"])
        await c.close()
    assert codes[:5] == ["auth_failed"] * 5
    assert codes[5:] == ["rate_limited"] * 3


async def test_message_flood_is_rate_limited_per_connection(redis_url, start_gateway, connect):
    gw = await start_gateway(config(redis_url, server_extra="messages_per_second = 5\nmessage_burst = 10"))
    flood = await connect(gw)
    other = await login(connect, gw, "carol")
    for i in range(40):
        await flood.send({"type": "subscribe", "panel": "x", "id": i})
    await flood.wait(lambda m: m.get("code") == "rate_limited")
    r = await other.request({"type": "subscribe", "panel": "all_numbers"})
    assert r["type"] == "snapshot"


async def test_healthz_and_metrics(redis_url, start_gateway):
    gw = await start_gateway(config(redis_url))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.ws_port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    data = await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["redis"] is True


async def _small_buffer_client(gw, **login):
    """A raw WebSocket client with a 2 KiB receive buffer, logged in as carol (with the
    `login` keys); the test decides when, if ever, it reads."""
    import socket

    import websockets

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", gw.ws_port))
    ws = await websockets.connect(f"ws://127.0.0.1:{gw.ws_port}/ws", sock=sock, max_queue=1)
    await ws.send(json.dumps({"type": "login", "id": 1, "client": "carol", "password": PW,
                              **login}))
    await ws.recv()
    return ws


async def test_a_client_that_stops_reading_never_slows_the_others(redis_url, start_gateway,
                                                                   connect, bridge):
    import socket

    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await all_in_service(b)
    # The stalled client: a tiny receive buffer and it never reads after subscribing.
    stalled = await _small_buffer_client(gw)
    await stalled.send(json.dumps({"type": "subscribe", "id": 2, "panel": "all_numbers"}))
    await stalled.recv()
    [stalled_session] = gw.clients.sessions["carol"]
    # A slow network: the kernel holds little for it, so the gateway's own buffering shows.
    stalled_session.ws.transport.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    reader = await login(connect, gw, "carol")
    await reader.request({"type": "subscribe", "panel": "all_numbers"})

    rounds = 500
    for i in range(rounds):
        mark = len(reader.received)
        await b.send({"device": "Line 201", "call": str(i), "state": "offering",
                      "caller": f"0301{i:06d}", "caller_name": "x" * 100})
        # The reading client gets each change, whatever the stalled one does (a gateway
        # that waited on the stalled one would hold it up for good; the bound leaves a
        # loaded machine's slack).
        await reader.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "ringing",
                          timeout=10, start=mark)
        await b.send({"device": "Line 201", "call": str(i), "state": "disconnected"})
        await reader.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "idle",
                          timeout=10, start=mark)
    # The stalled one holds at most one pending frame per lamp, not a backlog of 3,000.
    assert not stalled_session.writable()  # it did fall behind
    assert len(stalled_session.outbox.pending) <= 3
    assert stalled_session.ws.transport.get_write_buffer_size() < 256 * 1024
    # When it reads again it catches up with the newest state: read until the newest state
    # came (generously: the gateway writes again only when it gets a turn), then until 2 s
    # pass without a frame (nothing older may follow it).
    last = None
    while True:
        caught_up = last is not None and last["lamp"] == "idle"
        try:
            frame = json.loads(await asyncio.wait_for(stalled.recv(),
                                                      2 if caught_up else PATIENCE))
        except asyncio.TimeoutError:
            break
        if frame.get("member") == "alice":
            last = frame
    assert last is not None and last["lamp"] == "idle"
    await stalled.close()


async def test_a_batching_client_that_fell_behind_catches_up_in_few_frames(
        redis_url, start_gateway, connect, bridge):
    import socket

    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await all_in_service(b)
    slow = await _small_buffer_client(gw, batch=True)
    await slow.send(json.dumps({"type": "subscribe", "id": 2, "panel": "all_numbers"}))
    await slow.recv()
    [session] = gw.clients.sessions["carol"]
    session.ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET,
                                                             socket.SO_SNDBUF, 4096)
    reader = await login(connect, gw, "alice")
    await reader.request({"type": "subscribe", "panel": "all_numbers"})
    lines = {"alice": "Line 201", "room": "Line 209", "carol": "Line 203"}
    for i in range(300):
        member_name = list(lines)[i % 3]
        mark = len(reader.received)
        state = "offering" if (i // 3) % 2 == 0 else "disconnected"
        await b.send({"device": lines[member_name], "call": str(i // 6), "state": state,
                      "caller": f"0301{i:06d}", "caller_name": "y" * 100})
        await reader.wait(lambda m: m.get("member") == member_name, timeout=10, start=mark)
    assert not session.writable()
    frames = []

    def caught_up() -> bool:
        """The frames so far end with the gateway's lamps of the three members."""
        changes = [c for f in frames for c in (f["changes"] if f["type"] == "lamps" else [f])
                   if c.get("type") == "lamp"]
        final = {c["member"]: c["lamp"] for c in changes}
        return final == {m: gw.engine.member(m).lamp.value for m in lines}

    # Read until the newest state came (generously: the gateway writes again only when it
    # gets a turn), then until 2 s pass without a frame.
    while True:
        try:
            frames.append(json.loads(await asyncio.wait_for(
                slow.recv(), 2 if caught_up() else PATIENCE)))
        except asyncio.TimeoutError:
            break
    batches = [f for f in frames if f["type"] == "lamps"]
    assert batches, [f["type"] for f in frames]
    assert any(len({c["member"] for c in f["changes"]}) >= 2 for f in batches)
    changes = [c for f in frames for c in (f["changes"] if f["type"] == "lamps" else [f])]
    assert all(c["type"] == "lamp" for c in changes)
    final = {c["member"]: c["lamp"] for c in changes}
    assert final == {m: gw.engine.member(m).lamp.value for m in final}
    assert len(frames) < 300  # far fewer frames than changes
    await slow.close()


async def test_a_reload_rechecks_every_subscription(redis_url, start_gateway, connect, bridge):
    """Rights taken away by a new configuration take effect on open subscriptions: a device
    no longer watchable ends with an error, a panel whose rights changed gets a fresh
    snapshot, and later lamps follow the new rights."""
    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await all_in_service(b)
    carol = await login(connect, gw, "carol")
    await carol.request({"type": "subscribe", "panel": "all_numbers"})
    await carol.request({"type": "subscribe", "device": "201"})
    mark = len(carol.received)
    text = config(redis_url)
    text = text.replace('monitor = [ { device = "201", clip = true } ]', "")
    text = text.replace('members = ["alice", "carol", "room"]\nrights = { numbers = "all" }',
                        'members = ["alice", "carol", "room"]\nrights = { numbers = "none" }')
    (start_gateway.dir / "gateway.toml").write_text(text)
    dropped = await carol.wait(lambda m: m.get("type") == "error", start=mark)
    assert dropped == {"type": "error", "code": "forbidden",
                       "message": "device '201' is no longer yours to see"}
    snap = await carol.wait(lambda m: m.get("type") == "snapshot", start=mark)
    assert snap["panel"] == "all_numbers" and snap["rights"]["numbers"] == "none"
    mark = len(carol.received)
    await b.send({"device": "Line 201", "call": "7", "state": "offering", "caller": "0301"})
    lamp = await carol.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "ringing",
                            start=mark)
    assert lamp["calls"][0]["remote"] is None
    assert not [m for m in carol.received[mark:] if m.get("device") == "201"]
