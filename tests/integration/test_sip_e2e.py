"""SIP end to end: a real gateway process with its pjsua2 user agent, a desk phone (a second
pjsua2 process) subscribed to the gateway's BLF server, and a call ringing on a TAPI bridge
line. The gateway runs in its own process: pjsua2 allows one Endpoint per process, and the
pytest process already has one for the SIP adapter tests."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess

import pytest

from conftest import HASH, PATIENCE, free_port, gateway_config, toml_table, wait_port
from test_cli import BIN, cli

pj = pytest.importorskip("pjsua2", reason="pjsua2 has no wheel for this Python")

from test_sip import DeskPhone, _free_udp_port  # noqa: E402


def config(ws: int, bridge: int, sip: int, redis_url: str) -> str:
    """alice's 201 and bob's 202 on a desk panel; mallory owns no line and is on no panel."""
    return gateway_config(
        redis_url, listen=f"127.0.0.1:{ws}", bridge=f"127.0.0.1:{bridge}",
        sip={"bind": f"127.0.0.1:{sip}"},
        more=toml_table("[[clients]]", name="mallory")
        + toml_table("[[groups]]", name="desk", members=["alice", "bob"]))


@pytest.fixture
async def sip_gateway(tmp_path, redis_url):
    ws, bridge, sip = free_port(), free_port(), _free_udp_port()
    cfg = tmp_path / "gw.toml"
    cfg.write_text(config(ws, bridge, sip, redis_url))
    for client, pw in (("alice", "alice-pass-1"), ("mallory", "mallory-pass")):
        r = await asyncio.to_thread(cli, "password", client, "--config", str(cfg), "--stdin",
                                    stdin=pw + "\n")
        assert r.returncode == 0, r.stderr
    proc = subprocess.Popen([*BIN, "run", "--config", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        await asyncio.to_thread(wait_port, ws, 30)
        await asyncio.to_thread(wait_port, bridge, 30)
        _, w = await asyncio.open_connection("127.0.0.1", bridge)
        yield {"sip": sip, "ws": ws, "bridge": w, "proc": proc}
        w.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
        print(out[-3000:])
    assert proc.returncode == 0, out[-3000:]
    assert "alice-pass-1" not in out


async def send(w, *msgs):
    for m in msgs:
        w.write(json.dumps(m).encode() + b"\n")
    await w.drain()


async def until(pred, timeout=PATIENCE, phone=None):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            seen = "" if phone is None else (
                f": the phone saw {phone.events[-8:]}, exit code {phone.proc.returncode}")
            raise AssertionError("condition not reached in time" + seen)
        await asyncio.sleep(0.05)


async def test_desk_phone_key_follows_a_bridge_line(sip_gateway):
    g = sip_gateway
    await send(g["bridge"], {"device": "201", "devstate": "inservice"},
               {"device": "202", "devstate": "inservice"})
    phone = await DeskPhone.start(f"sip:201@127.0.0.1:{g['sip']}", "alice", "alice-pass-1")
    member = None
    try:
        await until(lambda: "Ready" in phone.notes(), phone=phone)
        assert 401 in phone.codes() and 200 in phone.codes()  # digest as the client
        await send(g["bridge"], {"device": "201", "call": "1", "state": "offering",
                                 "caller": "0301"})
        await until(lambda: phone.notes()[-1:] == ["Ringing"], phone=phone)
        await send(g["bridge"], {"device": "201", "call": "1", "state": "connected"})
        await until(lambda: phone.notes()[-1:] == ["On the phone"])
        await send(g["bridge"], {"device": "201", "call": "1", "state": "disconnected"})
        await until(lambda: phone.notes()[-1:] == ["Ready"])
        # A client name as target: bob's member lamp (the gateway's de-duplicated lamp).
        member = await DeskPhone.start(f"sip:bob@127.0.0.1:{g['sip']}", "alice", "alice-pass-1")
        await until(lambda: "Ready" in member.notes(), phone=member)
        await send(g["bridge"], {"device": "202", "call": "2", "state": "offering"})
        await until(lambda: member.notes()[-1:] == ["Ringing"], phone=member)
    finally:
        await phone.close()
        if member is not None:
            await member.close()


async def test_desk_phone_sees_only_what_its_client_may_see(sip_gateway):
    g = sip_gateway
    spy = await DeskPhone.start(f"sip:201@127.0.0.1:{g['sip']}", "mallory", "mallory-pass")
    wrong = await DeskPhone.start(f"sip:201@127.0.0.1:{g['sip']}", "alice", "not-her-password")
    try:
        await until(lambda: 403 in spy.codes())  # authenticated, but no right on 201
        await until(lambda: 403 in wrong.codes())
        assert spy.notes() == [] and wrong.notes() == []
    finally:
        await spy.close()
        await wrong.close()


SOFTPHONE = BIN[0], str(__import__("pathlib").Path(__file__).resolve().parents[1] / "sip" / "softphone.py")


def softphone_config(redis_url: str, softphone: bool) -> str:
    """alice has 201 and a softphone (`softphone`: shown on her lamp); carol watches her."""
    return gateway_config(
        redis_url, lines=(), owners=(),
        more=toml_table("[[devices]]", id="201", number="201")
        + toml_table("[[clients]]", name="alice", sip_user="alice.sip", devices=["201"],
                     password_hash=HASH, blf={"devices": "all", "softphone": softphone})
        + toml_table("[[clients]]", name="carol", password_hash=HASH)
        + toml_table("[[groups]]", name="g", members=["alice", "carol"],
                     rights={"numbers": "all"}))


_STATE = {"CALLING": "dialing", "EARLY": "dialing", "CONNECTING": "dialing",
          "CONFIRMED": "connected", "DISCONNECTED": "ended"}
_TAPI = {"dialing": "dialing", "connected": "connected", "ended": "disconnected"}


@pytest.mark.parametrize("softphone", ["true", "false"])
async def test_real_softphone_call_also_on_the_line_is_shown_once(
        redis_url, start_gateway, connect, bridge, softphone):
    """A pjsua2 softphone places a real call (to a sipp UAS); alice's CTI client reports it
    with `softphone` messages while her TAPI line reports the same call."""
    from conftest import login

    gw = await start_gateway(softphone_config(redis_url, softphone == "true"))
    b = await bridge(gw)
    await b.send({"device": "201", "devstate": "inservice"})
    carol = await login(connect, gw, "carol")
    await carol.request({"type": "subscribe", "panel": "g"})
    alice = await login(connect, gw, "alice")

    port = _free_udp_port()
    uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-m", "1",
                            "-nostdin"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    phone = await asyncio.create_subprocess_exec(
        *SOFTPHONE, "--call", f"sip:0301555@127.0.0.1:{port}", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    seen_states = []
    try:
        async def follow() -> None:
            last = None
            async for raw in phone.stdout:  # type: ignore[union-attr]
                if not raw.startswith(b"{"):
                    continue
                ev = json.loads(raw)
                if ev.get("event") != "call":
                    continue
                state = _STATE.get(ev["state"])
                if state is None or state == last:
                    continue
                last = state
                seen_states.append(state)
                # The CTI client reports its softphone's call; the PBX line reports it too.
                r = await alice.request({"type": "softphone", "call": ev["call_id"],
                                         "state": state, "direction": "out",
                                         "remote": "0301555", "link": ev["call_id"]})
                assert r["type"] == "ok"
                await b.send({"device": "201", "call": "0x77", "state": _TAPI[state],
                              "caller": "201", "called": "0301555"})
                if state == "connected":
                    await carol.wait(lambda m: m.get("member") == "alice" and
                                     m.get("lamp") == "busy")
                    await asyncio.sleep(0.3)
                    phone.stdin.write(b"hangup\n")  # type: ignore[union-attr]
                    await phone.stdin.drain()  # type: ignore[union-attr]
                if state == "ended":
                    return

        await asyncio.wait_for(follow(), 30)
    finally:
        if phone.returncode is None:
            phone.stdin.close()  # type: ignore[union-attr]
            try:
                await asyncio.wait_for(phone.wait(), 10)
            except asyncio.TimeoutError:
                phone.kill()
        uas.kill()
        uas.wait()
    assert seen_states == ["dialing", "connected", "ended"]
    await carol.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "idle")
    lamps = carol.lamps(member="alice")
    assert {m["lamp"] for m in lamps} >= {"outgoing", "busy", "idle"}
    # Whether or not the softphone feeds the lamp, the one call is never shown twice.
    assert max(len(m["calls"]) for m in lamps) == 1
    shown = [c for m in lamps for c in m["calls"]]
    assert all(c["remote"] == "0301555" for c in shown)
    if softphone == "false":
        assert all(c["id"].startswith("201/") for c in shown)  # softphone reports ignored
    else:
        # Whichever report comes first shows the call; once both did, the line's report is
        # the one kept, and the lamp never steps back from busy to outgoing.
        seq = [m["lamp"] for m in lamps]
        assert "outgoing" not in seq[seq.index("busy"):]
        busy = [m for m in lamps if m["lamp"] == "busy"]
        assert busy[-1]["calls"][0]["id"].startswith("201/")
