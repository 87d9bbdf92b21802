"""Privacy and truth of calls, end to end: a real gateway, real Redis, a real TCP bridge and
real WebSocket watchers. Every test looks at the raw frames a watcher received: a number it
may not see must not be in any of them."""

from __future__ import annotations

import time

from conftest import HASH, eventually, gateway_config, login, toml_table

def config(redis_url: str, server_extra: str = "") -> str:
    """alice (201) and bob (202) journal their calls; inb, full, lamp and mix watch them on
    panels with each of the numbers rights and read the journal."""
    readers = ("inb", "full", "lamp", "mix")
    return gateway_config(
        redis_url, server={"login_attempts_per_minute": 1000}, server_extra=server_extra,
        device_keys=lambda n: {"line": f"Line {n}", "journal": True},
        client_keys={"alice": {"journal": "w"}}, password_hash=HASH,
        more="".join(toml_table("[[clients]]", name=c, journal="r", password_hash=HASH)
                     for c in readers)
        + toml_table("[[groups]]", name="inbound", members=["alice", "bob", "inb"],
                     rights={"numbers": "inbound"})
        + toml_table("[[groups]]", name="all", members=["alice", "bob", "full"],
                     rights={"numbers": "all"})
        + toml_table("[[groups]]", name="lamps", members=["alice", "bob", "lamp", "mix"],
                     rights={"calls": False, "numbers": "all"})
        + toml_table("[[groups]]", name="plain", members=["alice", "bob", "mix"],
                     rights={"numbers": "none"}))


async def in_service(b) -> None:
    await b.send({"device": "Line 201", "devstate": "inservice"},
                 {"device": "Line 202", "devstate": "inservice"})


async def watchers(connect, gw):
    inb = await login(connect, gw, "inb")
    full = await login(connect, gw, "full")
    assert (await inb.request({"type": "subscribe", "panel": "inbound"}))["type"] == "snapshot"
    assert (await full.request({"type": "subscribe", "panel": "all"}))["type"] == "snapshot"
    return inb, full


def member_calls(c, member: str) -> list[dict]:
    return [call for m in c.lamps(member=member) for call in m["calls"]]


async def test_a_transfer_target_on_an_inbound_call_is_not_shown_to_inbound_watchers(
        redis_url, start_gateway, connect, bridge):
    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await in_service(b)
    inb, full = await watchers(connect, gw)
    t0 = time.time()
    await b.send({"device": "Line 201", "call": "1", "state": "offering",
                  "caller": "0301111", "called": "201"},
                 {"device": "Line 201", "call": "1", "state": "connected",
                  "caller": "0301111", "called": "201"})
    await inb.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "busy")
    # The call is transferred: the line now reports the number it was transferred to.
    await b.send({"device": "Line 201", "call": "1", "state": "connected",
                  "caller": "201", "called": "0409999"})
    seen = await full.wait(lambda m: m.get("member") == "alice" and m.get("calls")
                           and m["calls"][0]["remote"] == "0409999")
    assert seen["calls"][0]["direction"] == "in"  # the call keeps its first direction
    await b.send({"device": "Line 201", "call": "1", "state": "disconnected"})
    await inb.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "idle")
    # The caller's number (inbound information) was shown to the inbound watcher ...
    assert "0301111" in [c["remote"] for c in member_calls(inb, "alice")]
    # ... the transfer target (dialled: outbound information) never.
    assert not any("0409999" in f for f in inb.raw)

    await eventually(lambda: gw.journal.written >= 1)
    r = await inb.request({"type": "journal", "scope": "server", "since": t0 - 1})
    [entry] = r["entries"]
    assert entry["direction"] == "in" and entry["remote"] is None
    assert not any("0409999" in f for f in inb.raw)
    r = await full.request({"type": "journal", "scope": "server", "since": t0 - 1})
    assert [e["remote"] for e in r["entries"]] == ["0409999"]


async def test_a_softphone_call_reported_in_then_out_with_a_new_number_hides_it(
        redis_url, start_gateway, connect, bridge):
    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await in_service(b)
    inb, full = await watchers(connect, gw)
    alice = await login(connect, gw, "alice")
    t0 = time.time()
    for state, direction, remote in [("ringing", "in", "0302222"),
                                     ("connected", "in", None),
                                     ("connected", "out", "0408888")]:
        r = await alice.request({"type": "softphone", "call": "s1", "state": state,
                                 "direction": direction, "remote": remote})
        assert r["type"] == "ok", r
    await full.wait(lambda m: m.get("member") == "alice" and m.get("calls")
                    and m["calls"][0]["remote"] == "0408888")
    await alice.request({"type": "softphone", "call": "s1", "state": "ended", "direction": "out"})
    await inb.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "idle")
    assert "0302222" in [c["remote"] for c in member_calls(inb, "alice")]
    assert not any("0408888" in f for f in inb.raw)
    await eventually(lambda: gw.journal.written >= 1)
    r = await inb.request({"type": "journal", "scope": "server", "since": t0 - 1})
    assert [(e["client"], e["remote"]) for e in r["entries"]] == [("alice", None)]
    assert not any("0408888" in f for f in inb.raw)


async def test_own_number_in_long_form_as_caller_means_outgoing(redis_url, start_gateway,
                                                                 connect, bridge):
    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await in_service(b)
    inb, full = await watchers(connect, gw)
    # A call first seen connected (the bridge re-synced): the caller is line 202 itself,
    # written as an international number.
    await b.send({"device": "Line 202", "call": "9", "state": "connected",
                  "caller": "+4930555202", "called": "0301234"})
    lamp = await full.wait(lambda m: m.get("member") == "bob" and m.get("lamp") == "busy")
    [call] = lamp["calls"]
    assert call["direction"] == "out" and call["remote"] == "0301234"
    # An outgoing call set up, then answered: the answer must not make our own number the
    # remote party.
    await b.send({"device": "Line 201", "call": "10", "state": "dialing",
                  "caller": "+49 30 555-201", "called": "0307777"},
                 {"device": "Line 201", "call": "10", "state": "connected",
                  "caller": "+49 30 555-201", "called": "0307777"})
    lamp = await full.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "busy")
    [call] = lamp["calls"]
    assert call["direction"] == "out" and call["remote"] == "0307777"
    assert not any("555202" in f or "555-201" in f for f in full.raw)
    assert not any("0301234" in f or "0307777" in f for f in inb.raw)


async def test_server_journal_honours_calls_false_and_no_combining_of_rights(
        redis_url, start_gateway, connect, bridge):
    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await in_service(b)
    t0 = time.time()
    await b.send({"device": "Line 201", "call": "1", "state": "offering", "caller": "0301111"},
                 {"device": "Line 201", "call": "1", "state": "idle"})
    await eventually(lambda: gw.journal.written >= 1)
    # `lamp` is in group "lamps" only: calls = false there, so the lamp and nothing else.
    lamp = await login(connect, gw, "lamp")
    r = await lamp.request({"type": "journal", "scope": "server", "since": t0 - 1})
    assert r["type"] == "journal" and r["entries"] == []
    r = await lamp.request({"type": "journal", "scope": "server"})
    assert r["entries"] == []
    assert not any("0301111" in f for f in lamp.raw)
    # `mix` sees calls without numbers (group "plain") and numbers without calls (group
    # "lamps"): the two never add up to calls with numbers.
    mix = await login(connect, gw, "mix")
    r = await mix.request({"type": "journal", "scope": "server"})
    assert [e["remote"] for e in r["entries"]] == [None]
    assert not any("0301111" in f for f in mix.raw)
    full = await login(connect, gw, "full")
    r = await full.request({"type": "journal", "scope": "server"})
    assert [e["remote"] for e in r["entries"]] == ["0301111"]


async def test_server_journal_without_since_returns_the_newest_entries(
        redis_url, start_gateway, connect, bridge):
    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await in_service(b)
    n = 5200
    lines = []
    for i in range(n):
        lines.append({"device": "Line 201", "call": i, "state": "offering", "caller": f"0{i}"})
        lines.append({"device": "Line 201", "call": i, "state": "idle"})
    await b.send(*lines)
    await eventually(lambda: gw.journal.written >= n, timeout=30)
    full = await login(connect, gw, "full")
    r = await full.request({"type": "journal", "scope": "server"}, timeout=10)
    entries = r["entries"]
    assert len(entries) == 1000
    assert entries[-1]["remote"] == f"0{n - 1}"  # the newest, oldest first
    assert entries[0]["remote"] == f"0{n - 1000}"
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
