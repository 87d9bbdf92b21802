"""The full client model end to end: client types, hot desking, the password lifecycle,
offline monitor, server journal, rights overrides, presence (set, locked, CSV import), status."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

from conftest import HASH, PW, eventually, login
from test_cli import cli

CONFIG = """
[server]
listen = "127.0.0.1:0"
login_attempts_per_minute = 1000
{server_extra}

[redis]
url = "{redis}"

[sources.tapi_bridge]
listen = "127.0.0.1:0"

[presence]
import_file = "presence.csv"

[[devices]]
id = "301"
number = "301"
computer = "DESK-1"
[[devices]]
id = "302"
number = "302"
computer = "DESK-2"
[[devices]]
id = "303"
number = "303"
[[devices]]
id = "304"
number = "304"
journal = true
[[devices]]
id = "305"
number = "305"

[[clients]]
name = "hot"
devices_by_computer = true
password_hash = "{hash}"
[[clients]]
name = "hot2"
devices_by_computer = true
password_hash = "{hash}"
[[clients]]
name = "FRONT-PC"
type = "computer"
devices = ["305"]
password_hash = "{hash}"
[[clients]]
name = "om"
devices = ["303"]
offline_monitor = true
password_hash = "{hash}"
[[clients]]
name = "jo"
devices = ["304"]
journal = "w"
password_hash = "{hash}"
[[clients]]
name = "reader"
journal = "r"
password_hash = "{hash}"
[[clients]]
name = "clerk"
journal = "r"
password_hash = "{hash}"
[[clients]]
name = "watcher"
password_hash = "{hash}"

[[groups]]
name = "floor"
members = ["hot", "hot2", "om", "jo", "watcher", "reader", "clerk", "FRONT-PC"]
rights = {{ numbers = "none", presence = true }}
overrides = [ {{ client = "reader", numbers = "all" }} ]
"""


def config(redis_url, server_extra=""):
    return CONFIG.format(redis=redis_url, hash=HASH, server_extra=server_extra)


async def devstates(b):
    await b.send(*[{"device": d, "devstate": "inservice"} for d in ("301", "302", "303", "304", "305")])


async def test_computer_client_logs_in_with_its_computer_name(redis_url, start_gateway, connect):
    gw = await start_gateway(config(redis_url))
    c = await connect(gw)
    w = await c.request({"type": "login", "client": "FRONT-PC", "password": PW})
    assert w["type"] == "welcome" and w["client"]["type"] == "computer"
    assert [d["id"] for d in w["devices"]] == ["305"]


async def test_hot_desking_gives_the_device_for_the_session(redis_url, start_gateway, connect,
                                                            bridge):
    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await devstates(b)
    watcher = await login(connect, gw, "watcher")
    snap = await watcher.request({"type": "subscribe", "panel": "floor"})
    hot_before = next(m for m in snap["members"] if m["client"] == "hot")
    assert hot_before["number"] == "" and hot_before["lamp"] == "offline"

    hot = await connect(gw)
    w = await hot.request({"type": "login", "client": "hot", "password": PW, "computer": "desk-1"})
    assert w["devices"] == [{"id": "301", "name": "", "number": "301", "temporary": True}]
    m = await watcher.wait(lambda m: m.get("member") == "hot" and m.get("number") == "301")
    assert m["lamp"] == "idle" and m["logged_in"] is True
    # Its lamp follows that device; it may watch and select it as its own.
    await b.send({"device": "301", "call": "1", "state": "offering", "caller": "0301"})
    await watcher.wait(lambda m: m.get("member") == "hot" and m.get("lamp") == "ringing")
    assert (await hot.request({"type": "subscribe", "device": "301"}))["lamp"] == "ringing"
    assert (await hot.request({"type": "select_device", "device": "301"}))["type"] == "ok"
    await b.send({"device": "301", "call": "1", "state": "disconnected"})

    # Someone else logs in at that desk: the device moves to them.
    hot2 = await connect(gw)
    await hot2.request({"type": "login", "client": "hot2", "password": PW, "computer": "DESK-1"})
    await watcher.wait(lambda m: m.get("member") == "hot2" and m.get("number") == "301")
    m = await watcher.wait(lambda m: m.get("member") == "hot" and m.get("number") == "")
    assert m["lamp"] == "idle"  # logged in, no device now
    # hot logs in at another desk: it gets that one.
    hot_b = await connect(gw)
    await hot_b.request({"type": "login", "client": "hot", "password": PW, "computer": "DESK-2"})
    await watcher.wait(lambda m: m.get("member") == "hot" and m.get("number") == "302")
    # The right ends with the session.
    await hot2.close()
    m = await watcher.wait(lambda m: m.get("member") == "hot2" and m.get("logged_in") is False)
    assert m["number"] == "" and m["lamp"] == "offline"
    await b.send({"device": "301", "call": "2", "state": "offering"})
    await asyncio.sleep(0.3)
    assert gw.engine.member("hot2").lamp.value == "offline"


async def test_next_login_transfer_is_one_shot_across_two_processes(redis_url, start_gateway,
                                                                    connect):
    text = config(redis_url)
    gw1 = await start_gateway(text, "a.toml")
    gw2 = await start_gateway(text, "b.toml")
    await gw1.store.set_password("watcher", None, at_next_login=True)
    c1, c2 = await connect(gw1), await connect(gw2)
    r1, r2 = await asyncio.gather(
        c1.request({"type": "login", "client": "watcher", "password": "guess"}),
        c2.request({"type": "login", "client": "watcher", "password": "guess"}))
    got = [r for r in (r1, r2) if r.get("type") == "welcome" and "password" in r]
    failed = [r for r in (r1, r2) if r.get("code") == "auth_failed"]
    assert len(got) == 1 and len(failed) == 1, (r1, r2)
    c3 = await connect(gw2)
    again = await c3.request({"type": "login", "client": "watcher", "password": got[0]["password"]})
    assert again["type"] == "welcome" and "password" not in again


async def test_repeated_failures_of_one_client_are_slowed_down(redis_url, start_gateway,
                                                               connect, caplog):
    gw = await start_gateway(config(redis_url))
    caplog.set_level(logging.INFO, logger="gateway.audit")
    codes = []
    for i in range(12):
        c = await connect(gw)
        codes.append((await c.request({"type": "login", "client": "om",
                                       "password": f"guess-{i}"}))["code"])
    assert codes[:10] == ["auth_failed"] * 10 and codes[10:] == ["rate_limited"] * 2
    c = await connect(gw)
    r = await c.request({"type": "login", "client": "om", "password": PW})
    assert r["code"] == "rate_limited"  # even the right password waits
    other = await connect(gw)
    assert (await other.request({"type": "login", "client": "jo", "password": PW}))[
        "type"] == "welcome"  # other clients are not affected
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.audit"]
    assert any("login failed: client 'om'" in m for m in lines)
    assert not any("guess-" in m for m in lines)  # never the password


async def test_offline_calls_arrive_at_next_login_exactly_once(redis_url, start_gateway,
                                                               connect, bridge):
    text = config(redis_url)
    gw = await start_gateway(text)
    b = await bridge(gw)
    await devstates(b)
    # om is offline: an answered and a missed call on its device.
    await b.send({"device": "303", "call": "a", "state": "offering", "caller": "0301111"},
                 {"device": "303", "call": "a", "state": "connected"},
                 {"device": "303", "call": "a", "state": "disconnected"},
                 {"device": "303", "call": "b", "state": "offering", "caller": "0302222",
                  "caller_name": "Mrs B"},
                 {"device": "303", "call": "b", "state": "disconnected"})
    await eventually(lambda: gw.journal.written >= 2)
    await start_gateway.stop(gw)

    gw = await start_gateway(text)  # a restart in between loses nothing
    om = await connect(gw)
    w = await om.request({"type": "login", "client": "om", "password": PW})
    assert w["offline_calls"] == 2
    j = await om.request({"type": "journal"})
    assert j["scope"] == "offline"
    entries = j["entries"]
    assert [(e["remote"], e["answered"]) for e in entries] == [("0301111", True),
                                                              ("0302222", False)]
    assert entries[1]["remote_name"] == "Mrs B" and entries[0]["device"] == "303"
    assert entries[0]["start"] <= entries[0]["end"]
    # While om is logged in, its calls are not kept for later.
    b = await bridge(gw)
    lines = gw.bridge.lines_in
    await devstates(b)
    await b.send({"device": "303", "call": "c", "state": "offering"},
                 {"device": "303", "call": "c", "state": "disconnected"})
    # The gateway has taken both lines of the call (decided while om is logged in) before
    # om goes away: otherwise the call could end after om left, and be kept rightly.
    await eventually(lambda: gw.bridge.lines_in >= lines + 5 + 2)
    assert (await om.request({"type": "journal_ack", "upto": entries[-1]["id"]}))["type"] == "ok"
    await om.close()
    om2 = await connect(gw)
    w2 = await om2.request({"type": "login", "client": "om", "password": PW})
    assert w2["offline_calls"] == 0
    assert (await om2.request({"type": "journal"}))["entries"] == []
    r = await om2.request({"type": "journal_ack", "upto": "not-an-id"})
    assert r["code"] == "bad_request"


async def test_server_journal_applies_number_rights(redis_url, start_gateway, connect, bridge):
    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await devstates(b)
    t0 = time.time()
    await b.send({"device": "304", "call": "x", "state": "offering", "caller": "0409999",
                  "caller_name": "Secret Caller"},
                 {"device": "304", "call": "x", "state": "connected"},
                 {"device": "304", "call": "x", "state": "disconnected"},
                 {"device": "305", "call": "y", "state": "offering", "caller": "0508888"},
                 {"device": "305", "call": "y", "state": "disconnected"})
    jo = await login(connect, gw, "jo")
    await jo.request({"type": "softphone", "call": "s1", "state": "dialing", "direction": "out",
                      "remote": "0607777"})
    await jo.request({"type": "softphone", "call": "s1", "state": "ended", "direction": "out"})
    await eventually(lambda: gw.journal.written >= 2)

    reader = await login(connect, gw, "reader")  # override: numbers = all
    clerk = await login(connect, gw, "clerk")  # group: numbers = none
    r = await reader.request({"type": "journal", "scope": "server", "since": t0 - 1})
    assert [(e["device"], e["client"], e["remote"]) for e in r["entries"]] == [
        ("304", None, "0409999"), (None, "jo", "0607777")]
    assert r["entries"][0]["answered"] is True
    c = await clerk.request({"type": "journal", "scope": "server"})
    assert [e["remote"] for e in c["entries"]] == [None, None]
    assert not any("0409999" in f or "Secret Caller" in f or "0607777" in f for f in clerk.raw)
    watcher = await login(connect, gw, "watcher")
    r = await watcher.request({"type": "journal", "scope": "server"})
    assert r["code"] == "forbidden"  # no journal right "r"


async def test_rights_override_per_member(redis_url, start_gateway, connect, bridge):
    gw = await start_gateway(config(redis_url))
    b = await bridge(gw)
    await devstates(b)
    reader = await login(connect, gw, "reader")
    clerk = await login(connect, gw, "clerk")
    s1 = await reader.request({"type": "subscribe", "panel": "floor"})
    s2 = await clerk.request({"type": "subscribe", "panel": "floor"})
    assert s1["rights"]["numbers"] == "all" and s2["rights"]["numbers"] == "none"
    await b.send({"device": "303", "call": "1", "state": "offering", "caller": "0701234"})
    m1 = await reader.wait(lambda m: m.get("member") == "om" and m.get("lamp") == "ringing")
    m2 = await clerk.wait(lambda m: m.get("member") == "om" and m.get("lamp") == "ringing")
    assert m1["calls"][0]["remote"] == "0701234" and m2["calls"][0]["remote"] is None


async def test_presence_locked_and_csv_import(redis_url, start_gateway, connect, caplog):
    caplog.set_level(logging.INFO, logger="gateway")
    gw = await start_gateway(config(redis_url))
    watcher = await login(connect, gw, "watcher")
    await watcher.request({"type": "subscribe", "panel": "floor"})
    jo = await login(connect, gw, "jo")
    await jo.request({"type": "presence", "status": "away", "info": "lunch", "locked": True})
    m = await watcher.wait(lambda m: m.get("member") == "jo" and m.get("logged_in") == "locked")
    assert m["presence"] == {"status": "away", "info": "lunch"}

    # The meeting must still be on when the file is read (polled about once a second): a few
    # seconds, so that a loaded machine reading it late still sees it before it ends.
    soon = datetime.fromtimestamp(time.time() + 6.0).isoformat(timespec="seconds")
    (start_gateway.dir / "presence.csv").write_text(
        "id,client,status,start,end,info,set by\n"
        "1,om,holiday,2020-01-01 00:00,,back in January,admin\n"
        "2,ghost,away,,,,admin\n"
        f"3,clerk,meeting,,{soon},board meeting,admin\n"
        "4,hot,sleeping,,,,admin\n")
    m = await watcher.wait(lambda m: m.get("member") == "om" and
                           (m.get("presence") or {}).get("status") == "holiday")
    assert m["presence"]["info"] == "back in January"
    await watcher.wait(lambda m: m.get("member") == "clerk" and
                       (m.get("presence") or {}).get("status") == "meeting")
    errors = [r.getMessage() for r in caplog.records if "presence import" in r.getMessage()]
    assert any("line 3: unknown client 'ghost'" in e for e in errors)
    assert any("line 5: unknown status 'sleeping'" in e for e in errors)
    # The meeting ends by itself.
    await watcher.wait(lambda m: m.get("member") == "clerk" and
                       (m.get("presence") or {}).get("status") == "available")


async def test_status_lists_every_client(redis_url, start_gateway, connect):
    gw = await start_gateway(config(redis_url))
    hot = await connect(gw)
    await hot.request({"type": "login", "client": "hot", "password": PW, "computer": "DESK-2"})
    await eventually(lambda: gw.engine.client_state("hot").logged_in)
    r = await asyncio.to_thread(cli, "status", "--config", str(start_gateway.dir / "gateway.toml"))
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines()[1:]}
    assert "Active" in lines["hot"] and "302 (temporary)" in lines["hot"]
    assert "127.0.0.1" in lines["hot"]
    assert "Offline monitor" in lines["om"]
    assert "Offline" in lines["jo"] and "304" in lines["jo"]
