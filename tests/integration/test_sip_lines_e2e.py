"""SIP lines through the real gateway (in this test's loop) with sipp as the PBX: a dialog
line's caller reaches a CTI client with the number where it may see it, and /healthz and
/metrics say the truth when the PBX refuses every subscription."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("defusedxml", reason="defusedxml is needed for the XML bodies")

from conftest import HASH, login  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sip import scenarios as sc  # noqa: E402
from sip.pbx import Pbx, free_udp_port, until  # noqa: E402
from test_sip_lines import DIALOG, dialog  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None,
                                reason="sipp is not installed (apt-get install sip-tester)")

CONFIG = """
[server]
listen = "127.0.0.1:0"
[redis]
url = "{redis}"
[sources.sip]
bind = "127.0.0.1:{sip}"
probe_seconds = 2
[[devices]]
id = "201"
number = "201"
source = "sip"
line = "{line}"
sip_event = "{event}"
[[clients]]
name = "alice"
devices = ["201"]
password_hash = "{hash}"
[[clients]]
name = "carol"
password_hash = "{hash}"
[[groups]]
name = "g"
members = ["alice", "carol"]
rights = {{ numbers = "{numbers}" }}
"""


async def http(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("numbers", ["all", "none"])
async def test_dialog_line_caller_reaches_the_panel_per_rights(
        redis_url, start_gateway, connect, tmp_path, numbers):
    steps = [sc.answer(), sc.notify_dialog(DIALOG.format(v=0, dialogs="")), sc.pause(1000),
             sc.notify_dialog(DIALOG.format(v=1, dialogs=dialog("early")))]
    pbx = Pbx(tmp_path, steps).start()
    try:
        gw = await start_gateway(CONFIG.format(redis=redis_url, sip=free_udp_port(),
                                               line=pbx.uri, event="dialog", hash=HASH,
                                               numbers=numbers))
        carol = await login(connect, gw, "carol")
        await carol.request({"type": "subscribe", "panel": "g"})
        msg = await carol.wait(lambda m: m.get("member") == "alice"
                               and m.get("lamp") == "ringing", timeout=15)
        (call,) = msg["calls"]
        assert call["direction"] == "in"
        if numbers == "all":
            assert (call["remote"], call["remote_name"]) == ("0301234", "Eve")
        else:
            assert call["remote"] is None and call["remote_name"] is None
        status, body = await http(gw.ws_port, "/healthz")
        assert status == 200 and json.loads(body)["sources"]["sip"]["up"] is True
        assert gw.sources.sip.endpoint is None, "no pjsua2 user agent on the native path"
    finally:
        pbx.stop()


async def test_health_says_down_when_every_subscription_is_refused(
        redis_url, start_gateway, tmp_path):
    pbx = Pbx(tmp_path, [sc.answer(403)]).start()
    try:
        gw = await start_gateway(CONFIG.format(redis=redis_url, sip=free_udp_port(),
                                               line=pbx.uri, event="presence", hash=HASH,
                                               numbers="all"))
        await asyncio.sleep(1.0)
        status, body = await http(gw.ws_port, "/healthz")
        assert json.loads(body)["sources"]["sip"]["up"] is False
        _, metrics = await http(gw.ws_port, "/metrics")
        assert b'blf_source_up{source="sip",held_here="1"} 0' in metrics
    finally:
        pbx.stop()


async def test_pbx_restart_noticed_within_the_probe(redis_url, start_gateway, connect,
                                                    tmp_path):
    # The presence server forgets us (481 to the probe refresh); the gateway subscribes
    # again within probe_seconds (2 s here) and the lamp follows the new dialog.
    steps = [sc.answer(), sc.notify("On the phone"), sc.respond_refresh(481),
             sc.pause(100000)]
    pbx = Pbx(tmp_path, steps).start()
    try:
        gw = await start_gateway(CONFIG.format(redis=redis_url, sip=free_udp_port(),
                                               line=pbx.uri, event="presence", hash=HASH,
                                               numbers="all"))
        alice = await login(connect, gw, "alice")
        snap = await alice.request({"type": "subscribe", "device": "201"})
        if snap["lamp"] != "busy":
            await alice.wait(lambda m: m.get("lamp") == "busy", timeout=10)
        sip = gw.sources.sip
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await until(lambda: sip.lines.lines()[0].attempts >= 2, what="subscribed again")
        # probe_seconds is 2; without the probe the 600 s subscription would be refreshed
        # after minutes (slack for a loaded machine, which runs timers late).
        assert loop.time() - t0 < 20
        await asyncio.sleep(0.5)
        assert not any(m.get("lamp") == "unknown" for m in alice.lamps()), \
            "no passing unknown while the subscription is renewed"
    finally:
        pbx.stop()


REGISTRAR = Path(__file__).resolve().parents[1] / "sip" / "registrar.xml"


@pytest.mark.parametrize(("right", "transport"), [(True, "udp"), (False, "udp"), (True, "tcp")],
                         ids=["registered", "refused", "registered-tcp"])
async def test_lines_follow_the_registration(redis_url, start_gateway, connect, tmp_path,
                                             right, transport):
    import subprocess

    # Over TCP both the registrar and the PBX listen on TCP only: nothing reaches them by UDP.
    reg_port = free_udp_port()
    registrar = subprocess.Popen(
        ["sipp", "-sf", str(REGISTRAR), "-i", "127.0.0.1", "-p", str(reg_port), "-nostdin",
         "-t", "t1" if transport == "tcp" else "u1",
         "-key", "password", "secret-pw"], cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pbx = Pbx(tmp_path, [sc.answer(), sc.notify("On the phone")], transport=transport).start()
    registrar_uri = f"sip:127.0.0.1:{reg_port}" + (";transport=tcp" if transport == "tcp"
                                                     else "")
    (tmp_path / "sip.secret").write_text("secret-pw\n" if right else "wrong-pw\n")
    text = CONFIG.format(redis=redis_url, sip=free_udp_port(), line=pbx.uri, event="presence",
                         hash=HASH, numbers="all").replace(
        "probe_seconds = 2\n", f'probe_seconds = 2\nregistrar = "{registrar_uri}"\n'
        f'username = "gw"\npassword_file = "{tmp_path / "sip.secret"}"\n')
    try:
        gw = await start_gateway(text)
        alice = await login(connect, gw, "alice")
        snap = await alice.request({"type": "subscribe", "device": "201"})
        if right:
            if snap["lamp"] != "busy":
                await alice.wait(lambda m: m.get("lamp") == "busy", timeout=10)
            assert gw.sources.sip.registration.up
            status, body = await http(gw.ws_port, "/healthz")
            assert json.loads(body)["sources"]["sip"]["up"] is True
        else:
            await until(lambda: "refused" in gw.sources.sip.registration.reg.reason
                        or "403" in gw.sources.sip.registration.reg.reason,
                        what="registration refused")
            await asyncio.sleep(0.5)
            assert snap["lamp"] == "unknown"
            assert not alice.lamps(), "no line state without the registration"
            status, body = await http(gw.ws_port, "/healthz")
            assert json.loads(body)["sources"]["sip"]["up"] is False
            _, metrics = await http(gw.ws_port, "/metrics")
            assert b'blf_source_up{source="sip",held_here="1"} 0' in metrics
    finally:
        pbx.stop()
        registrar.kill()
        registrar.wait(10)


async def test_pickup_action_carries_replaces_from_the_dialog_line(redis_url, start_gateway,
                                                                   connect, tmp_path):
    steps = [sc.answer(), sc.notify_dialog(DIALOG.format(v=0, dialogs="")), sc.pause(1000),
             sc.notify_dialog(DIALOG.format(v=1, dialogs=dialog("early")))]
    pbx = Pbx(tmp_path, steps).start()
    try:
        text = CONFIG.format(redis=redis_url, sip=free_udp_port(), line=pbx.uri,
                             event="dialog", hash=HASH, numbers="all")
        text = text.replace('rights = { numbers = "all" }',
                            'rights = { numbers = "all", pickup = true }')
        gw = await start_gateway(text)
        carol = await login(connect, gw, "carol")
        await carol.request({"type": "subscribe", "panel": "g"})
        await carol.wait(lambda m: m.get("member") == "alice" and m.get("lamp") == "ringing",
                         timeout=15)
        reply = await carol.request({"type": "pickup", "panel": "g", "member": "alice"})
        assert reply["type"] == "ok", reply
        action = await carol.wait(lambda m: m.get("type") == "action")
        assert action["replaces"] == "abc123@pbx;to-tag=lt1;from-tag=rt1;early-only"
        assert action["number"] == "201"
    finally:
        pbx.stop()
