"""Lamp provenance end to end: an Asterisk line (the AMI peer), a TAPI bridge line and a
softphone feed one member's lamp through the real gateway; `blf-gateway explain` (a real
process reading the shared Redis) and the admin requests tell the same story, and a watcher
without the numbers right never sees a number in it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from conftest import (
    HASH,
    PW,
    ami_line,
    ami_source,
    eventually,
    gateway_config,
    login,
    toml_table,
    within,
)

NUMBER = "+4930123456"
NAME = "Miller Ltd"
OUT_NUMBER = "+4940999888"

def config(redis_url: str, ami_port: int, keep: int) -> str:
    """alice has an Asterisk line (201) and a TAPI line (204), bob an Asterisk line (202);
    root and auditor are admins, auditor without the numbers right."""
    admins = "".join(toml_table("[[clients]]", name=n, admin=True, password_hash=HASH)
                     for n in ("root", "auditor"))
    return gateway_config(
        redis_url, server={"login_attempts_per_minute": 1000},
        sections=toml_table("[provenance]", keep=keep) + ami_source(ami_port),
        lines=(), owners=(),
        more=toml_table("[[devices]]", id="201", name="Alice Asterisk", number="201",
                        **ami_line("201"))
        + toml_table("[[devices]]", id="204", name="Alice TAPI", number="204",
                     source="tapi_bridge", line="Line 204")
        + toml_table("[[devices]]", id="202", number="202", **ami_line("202"))
        + toml_table("[[clients]]", name="alice", first_name="Alice", last_name="Archer",
                     devices=["201", "204"], password_hash=HASH)
        + toml_table("[[clients]]", name="bob", devices=["202"], password_hash=HASH)
        + toml_table("[[clients]]", name="eve", password_hash=HASH) + admins
        + toml_table("[[groups]]", name="team", members=["alice", "bob", "root"],
                     rights={"numbers": "all", "pickup": True})
        + toml_table("[[groups]]", name="quiet", members=["alice", "eve", "auditor"],
                     rights={"numbers": "none"}))

BIN = [sys.executable, "-m", "gateway"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*BIN, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
async def office(peer, redis_url, start_gateway, bridge):
    (start_gateway.dir / "ami.secret").write_text("s3cret\n")
    gw = await start_gateway(config(redis_url, peer.port, 50))
    await eventually(lambda: gw.engine.device_view("201").lamp.value == "idle")
    b = await bridge(gw)
    return gw, b, start_gateway.dir / "gateway.toml"


async def play(gw, b, peer, connect):
    """Two sources and a softphone: the same story every test below checks."""
    await b.send({"device": "Line 204", "devstate": "inservice"},
                 {"device": "Line 204", "call": "0x3f1", "state": "offering",
                  "caller": NUMBER, "caller_name": NAME, "called": "204"})
    await eventually(lambda: gw.engine.member("alice").lamp.value == "ringing")
    # A late, garbled report of the same call: ignored.
    await b.send({"device": "Line 204", "call": "0x3f1", "state": "dialing"})
    # alice's softphone reports the same call: shown once (the line's report is shown).
    alice = await login(connect, gw, "alice")
    ok = await alice.request({"type": "softphone", "call": "sp-77", "state": "ringing",
                              "direction": "in", "remote": NUMBER})
    assert ok["type"] == "ok", ok
    # Meanwhile the Asterisk line makes an outgoing call that is abandoned.
    out = peer.model.outbound_call("201", OUT_NUMBER)
    await eventually(lambda: any(c.state.value == "dialing"
                                 for c in gw.engine.device_state("201").calls))
    peer.model.hangup(out)
    await eventually(lambda: not gw.engine.device_state("201").calls)
    await eventually(lambda: gw.engine.client_state("alice").softphone)
    # Every record has reached Redis.
    await eventually(lambda: len(gw.recorder.pending) == 0 and gw.recorder.written >= 6)
    return alice


async def test_explain_tells_why_the_lamp_is_ringing(office, peer, connect):
    gw, b, path = office
    await play(gw, b, peer, connect)
    r = await asyncio.to_thread(cli, "explain", "alice", "--config", str(path), "--numbers")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "Member alice (Alice Archer): lamp ringing."
    assert lines[1] == "Fed by blf.devices = all: 201 (idle), 204 (ringing)."
    now = lines[-1]
    assert now.startswith("Now: ringing since ") and (
        " because the TAPI bridge reported call 0x3f1 ringing on 204; the softphone report of "
        "the same call (its call sp-77, ringing since ") in now
    assert "was dropped (shown once: the call 0x3f1 on 204; same direction, same remote " \
           "number, started " in now
    text = r.stdout
    assert (f"204: the TAPI bridge (tapi#1): call 0x3f1 ringing, incoming, from {NUMBER} "
            f"({NAME}): accepted (a new incoming call is alerting). Lamp ringing.") in text
    assert ("204: the TAPI bridge (tapi#1): call 0x3f1 dialing, outgoing: ignored, out of order "
            "(dialing while the call is ringing: an incoming call never becomes outgoing). "
            "Lamp ringing.") in text
    assert "201: Asterisk" in text and f"outgoing, to {OUT_NUMBER}" in text
    assert "softphone: the softphone (127.0.0.1): call sp-77 ringing, incoming" in text
    # Newest last.
    times = [line.split()[0] for line in lines if line.startswith("  ")]
    assert times == sorted(times) and len(times) >= 6

    device = await asyncio.to_thread(cli, "explain", "201", "--config", str(path), "--numbers")
    assert device.returncode == 0, device.stderr
    assert device.stdout.splitlines()[0] == ('Device 201 "Alice Asterisk" (number 201; source '
                                             'Asterisk, line "PJSIP/201"): lamp idle.')
    assert "ended" in device.stdout and "accepted (abandoned, busy or rejected)" in device.stdout


async def test_explain_never_shows_a_number_without_the_right(office, peer, connect):
    gw, b, path = office
    await play(gw, b, peer, connect)
    for args in (["--as", "eve"], [], ["--as", "auditor"]):
        r = await asyncio.to_thread(cli, "explain", "alice", "--config", str(path), *args)
        assert r.returncode == 0, r.stderr
        assert NUMBER not in r.stdout and NAME not in r.stdout and OUT_NUMBER not in r.stdout
        assert "from [number hidden]" in r.stdout
        assert "because the TAPI bridge reported call 0x3f1 ringing on 204" in r.stdout
    j = await asyncio.to_thread(cli, "explain", "alice", "--config", str(path), "--as", "eve",
                                "--json")
    assert NUMBER not in j.stdout and json.loads(j.stdout)["lamp"] == "ringing"
    # eve shares a panel with alice but has no right on bob, and no device 202 of hers.
    r = await asyncio.to_thread(cli, "explain", "202", "--config", str(path), "--as", "eve")
    assert r.returncode == 3 and "eve may not see '202'" in r.stderr
    # bob sees alice's numbers through the team panel.
    r = await asyncio.to_thread(cli, "explain", "alice", "--config", str(path), "--as", "bob")
    assert NUMBER in r.stdout
    bad = await asyncio.to_thread(cli, "explain", "nobody", "--config", str(path))
    assert bad.returncode == 2 and "no device or client 'nobody'" in bad.stderr


async def test_history_is_capped_per_device(peer, redis_url, start_gateway, bridge):
    (start_gateway.dir / "ami.secret").write_text("s3cret\n")
    gw = await start_gateway(config(redis_url, peer.port, 5))
    b = await bridge(gw)
    await b.send({"device": "Line 204", "devstate": "inservice"})
    for i in range(12):
        await b.send({"device": "Line 204", "call": f"c{i}", "state": "offering"},
                     {"device": "Line 204", "call": f"c{i}", "state": "idle"})
    await eventually(lambda: gw.recorder.written >= 25 and len(gw.recorder.pending) == 0)
    kept = await gw.store.read_provenance([("dev", "204")])
    calls = [json.loads(t)[4] for t in kept[("dev", "204")]]
    assert calls == ["c9", "c10", "c10", "c11", "c11"]


# -- the admin requests (the admin view speaks them) --------------------------------------------

async def test_admin_requests_are_forbidden_to_non_admins(office, connect):
    gw, _, _ = office
    eve = await login(connect, gw, "eve")
    for req in ({"type": "admin_overview"}, {"type": "explain", "client": "alice"},
                {"type": "explain", "device": "204"}, {"type": "admin_reload"}):
        reply = await eve.request(req)
        assert reply["type"] == "error" and reply["code"] == "forbidden", reply
    welcome = await (await connect(gw)).request(
        {"type": "login", "client": "eve", "password": PW})
    assert "admin" not in welcome
    root = await (await connect(gw)).request({"type": "login", "client": "root", "password": PW})
    assert root["admin"] is True


async def test_admin_overview_shows_sources_processes_and_sessions(office, peer, connect):
    gw, b, path = office
    await play(gw, b, peer, connect)
    root = await login(connect, gw, "root")
    await root.request({"type": "subscribe", "panel": "team"})
    wrong = await connect(gw)  # a failed login: the admin sees the address's failures
    assert (await wrong.request({"type": "login", "client": "alice", "password": "no"}))[
        "code"] == "auth_failed"

    async def overview():
        return await root.request({"type": "admin_overview"})

    ov = await overview()
    for _ in within():  # health entries are written once a second
        if len(ov["sources"]) == 2 and all(s["up"] for s in ov["sources"]):
            break
        await asyncio.sleep(0.1)
        ov = await overview()
    by = {s["source"]: s for s in ov["sources"]}
    assert by["ami"]["holder"] == gw.pid and by["ami"]["up"] and by["ami"]["up_in"] == [gw.pid]
    assert by["tapi_bridge"]["holder"] == "every process" and by["tapi_bridge"]["connections"] == 1
    assert by["tapi_bridge"]["events"] >= 3 and 0 <= by["tapi_bridge"]["last_event_age"] < 30
    assert [p["process"] for p in ov["processes"]] == [gw.pid] and ov["processes"][0]["here"]
    devices = {d["device"]: d for d in ov["devices"]}
    assert devices["204"]["lamp"] == "ringing" and devices["204"]["calls"] == 1
    assert {m["client"]: m["lamp"] for m in ov["members"]}["alice"] == "ringing"
    sessions = {s["client"]: s for s in ov["sessions"]}
    assert sessions["alice"]["address"] == "127.0.0.1"
    assert sessions["root"]["subscriptions"] == ["panel:team"]
    assert ov["rate_limits"]["login_attempts"][0]["address"] == "127.0.0.1"
    assert ov["config"]["path"] == str(path) and ov["provenance"]["keep"] == 50
    # The overview carries no number at all.
    raw = next(f for f in root.raw if '"admin_overview"' in f and '"sources"' in f)
    assert NUMBER not in raw and OUT_NUMBER not in raw

    # A dropped source connection shows: the bridge goes away, the lamp turns unknown.
    await b.close()
    await eventually(lambda: gw.engine.device_view("204").lamp.value == "unknown")
    for _ in within():
        ov = await overview()
        by = {s["source"]: s for s in ov["sources"]}
        if by["tapi_bridge"]["reconnects"] == 1 and not by["tapi_bridge"]["up"]:
            break
        await asyncio.sleep(0.1)
    assert by["tapi_bridge"]["reconnects"] == 1 and not by["tapi_bridge"]["up"]


async def test_admin_explain_tells_the_same_story_as_the_cli(office, peer, connect):
    gw, b, path = office
    await play(gw, b, peer, connect)
    for admin, sees_numbers in (("root", True), ("auditor", False)):
        c = await login(connect, gw, admin)
        reply = await c.request({"type": "explain", "client": "alice"})
        assert reply["type"] == "explanation" and reply["lamp"] == "ringing", reply
        r = await asyncio.to_thread(cli, "explain", "alice", "--config", str(path),
                                    "--as", admin)
        assert r.returncode == 0, r.stderr
        assert reply["story"] == r.stdout.splitlines()
        raw = "\n".join(c.raw)
        assert (NUMBER in raw) is sees_numbers and (NAME in raw) is sees_numbers
        assert OUT_NUMBER not in raw or sees_numbers
        dev = await c.request({"type": "explain", "device": "201"})
        r = await asyncio.to_thread(cli, "explain", "201", "--config", str(path), "--as", admin)
        assert dev["story"] == r.stdout.splitlines() and dev["kind"] == "device"
    bad = await c.request({"type": "explain", "device": "999"})
    assert bad["code"] == "not_found"
    both = await c.request({"type": "explain", "device": "201", "client": "alice"})
    assert both["code"] == "bad_request"


async def test_admin_reload_reports_the_errors_of_a_refused_file(office, connect):
    gw, _, path = office
    root = await login(connect, gw, "root")
    good = path.read_text()
    path.write_text(good.replace('number = "204"', 'number = "204"\nbogus = 1'))
    reply = await root.request({"type": "admin_reload"})
    assert reply["type"] == "reload_result" and reply["ok"] is False, reply
    assert any("bogus: unknown key" in e for e in reply["errors"]), reply["errors"]
    assert gw.config.device_by_id["204"].number == "204"  # the last good one stays
    ov = await root.request({"type": "admin_overview"})
    assert ov["config"]["last_reload"]["ok"] is False
    path.write_text(good.replace('name = "Alice TAPI"', 'name = "Alice desk"'))
    reply = await root.request({"type": "admin_reload"})
    assert reply["ok"] is True and reply["changed"] is True and reply["errors"] == []
    assert gw.config.device_by_id["204"].name == "Alice desk"


async def test_every_process_tells_the_same_history(peer, redis_url, start_gateway, bridge,
                                                    connect):
    # Two gateway processes on one Redis: the bridge talks to the first; an admin connected
    # to the second sees both processes and the first one's reports.
    (start_gateway.dir / "ami.secret").write_text("s3cret\n")
    text = config(redis_url, peer.port, 50)
    first = await start_gateway(text, "first.toml")
    second = await start_gateway(text, "second.toml")
    b = await bridge(first)
    await b.send({"device": "Line 204", "devstate": "inservice"},
                 {"device": "Line 204", "call": "0x51", "state": "offering", "caller": NUMBER})
    await eventually(lambda: second.engine.device_view("204").lamp.value == "ringing")
    root = await login(connect, second, "root")
    for _ in within():
        ov = await root.request({"type": "admin_overview"})
        tapi = next(s for s in ov["sources"] if s["source"] == "tapi_bridge")
        if len(ov["processes"]) == 2 and tapi["up_in"] == [first.pid]:
            break
        await asyncio.sleep(0.1)
    assert sorted(p["process"] for p in ov["processes"]) == sorted([first.pid, second.pid])
    assert tapi["up_in"] == [first.pid] and tapi["events"] >= 2
    assert next(s for s in ov["sources"] if s["source"] == "ami")["holder"] in (first.pid,
                                                                                second.pid)
    for _ in within():
        reply = await root.request({"type": "explain", "device": "204"})
        if any(r["call"] == "0x51" for r in reply["records"]):
            break
        await asyncio.sleep(0.1)
    assert reply["story"][-1].startswith("Now: ringing since ")
    assert "because the TAPI bridge reported call 0x51 ringing" in reply["story"][-1]


async def test_a_stopped_gateway_says_why_its_lamps_are_unknown(office, peer, connect,
                                                                start_gateway, redis_url):
    gw, b, path = office
    await b.send({"device": "Line 204", "devstate": "inservice"},
                 {"device": "Line 204", "call": "0x9", "state": "connected", "caller": NUMBER})
    await eventually(lambda: gw.engine.device_view("204").lamp.value == "busy")
    await start_gateway.stop(gw)
    r = await asyncio.to_thread(cli, "explain", "204", "--config", str(path))
    assert r.returncode == 0, r.stderr
    now = [line for line in r.stdout.splitlines() if line.startswith("Now:")][0]
    assert now.startswith("Now: unknown since ") and "connection tapi#1 went away" in now, now
    # An Asterisk line: its connection went with the process.
    r = await asyncio.to_thread(cli, "explain", "201", "--config", str(path))
    now = r.stdout.splitlines()[-2]
    assert now.startswith("Now: unknown since ") and now.endswith(
        ": the gateway process that held its source stopped: unknown until a process reports "
        "it again."), now
