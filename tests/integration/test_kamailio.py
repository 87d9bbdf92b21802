"""The gateway PUBLISHes its lamps to a real Kamailio presence server (packaging/kamailio/,
started by scripts/kamailio); a sipp desk phone subscribed to Kamailio follows a TAPI bridge
line, without ever seeing a number (nobody's rights can be applied there)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_gateway_e2e import HASH  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sip.pbx import free_udp_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PRESENCE_MODULE = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules/presence_dialoginfo.so")
pytestmark = [
    pytest.mark.skipif(shutil.which("kamailio") is None or not PRESENCE_MODULE.exists(),
                       reason="Kamailio is not installed (apt-get install kamailio "
                              "kamailio-presence-modules)"),
    pytest.mark.skipif(shutil.which("sipp") is None,
                       reason="sipp is not installed (apt-get install sip-tester)"),
]

CONFIG = """
[server]
listen = "127.0.0.1:0"
[redis]
url = "{redis}"
[sources.tapi_bridge]
listen = "127.0.0.1:0"
[sources.sip]
bind = "127.0.0.1:{sip}"
publish_to = "sip:127.0.0.1:{kam}"
publish_domain = "127.0.0.1"
[[devices]]
id = "201"
number = "201"
[[clients]]
name = "alice"
devices = ["201"]
password_hash = "{hash}"
"""


@pytest.fixture
async def kamailio(tmp_path):
    port = free_udp_port()
    proc = subprocess.Popen([str(ROOT / "scripts" / "kamailio"), f"udp:127.0.0.1:{port}",
                             "127.0.0.1", str(tmp_path / "kdb")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    await asyncio.sleep(1.0)
    assert proc.poll() is None, proc.communicate()[0][-2000:]
    yield port
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    print(out[-3000:])


async def test_phone_subscribed_to_kamailio_follows_a_bridge_line(
        kamailio, redis_url, start_gateway, bridge, tmp_path):
    gw = await start_gateway(CONFIG.format(redis=redis_url, sip=free_udp_port(), kam=kamailio,
                                           hash=HASH))
    b = await bridge(gw)
    await b.send({"device": "201", "devstate": "inservice"})
    await asyncio.sleep(0.5)
    phone = await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(ROOT / "tests" / "sip" / "kamailio_phone.xml"), "-i", "127.0.0.1",
        "-s", "201", "-m", "1", "-nostdin", "-timeout", "40", "-timeout_error", "-trace_err",
        "-error_file", str(tmp_path / "err.log"), "-trace_msg", "-message_file",
        str(tmp_path / "msg.log"), f"127.0.0.1:{kamailio}", cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await asyncio.sleep(1.0)
    await b.send({"device": "201", "call": "1", "state": "offering", "caller": "0301234"})
    rc = await asyncio.wait_for(phone.wait(), 60)
    errors = (tmp_path / "err.log").read_text()[-3000:] if (tmp_path / "err.log").exists() \
        else ""
    assert rc == 0, f"the phone did not see the line ringing through Kamailio:\n{errors}"
    assert "0301234" not in (tmp_path / "msg.log").read_text()
    assert gw.sources.sip.publisher.healthy


LINE_CONFIG = """
[server]
listen = "127.0.0.1:0"
[redis]
url = "{redis}"
[sources.sip]
bind = "127.0.0.1:{sip}"
probe_seconds = 5
[[devices]]
id = "301"
number = "301"
source = "sip"
line = "sip:carol@127.0.0.1:{kam}"
[[clients]]
name = "carol"
devices = ["301"]
password_hash = "{hash}"
"""


def publish(tmp_path: Path, kam: int, tuple_id: str, basic: str, note: str,
            expires: int = 60) -> subprocess.Popen:
    """A softphone (sipp) publishing one device's presence for carol at Kamailio."""
    return subprocess.Popen(
        ["sipp", "-sf", str(ROOT / "tests" / "sip" / "publisher.xml"), "-i", "127.0.0.1",
         "-s", "carol", "-m", "1", "-nostdin", "-key", "tuple", tuple_id, "-key", "basic",
         basic, "-key", "note", note, "-key", "expires", str(expires),
         f"127.0.0.1:{kam}"], cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_line_watched_through_kamailio_merges_devices_and_notices_expiry(
        kamailio, redis_url, start_gateway, connect, tmp_path):
    from test_gateway_e2e import login

    desk = publish(tmp_path, kamailio, "desk", "open", "On the phone", expires=6)
    soft = None
    try:
        await asyncio.sleep(0.5)
        gw = await start_gateway(LINE_CONFIG.format(redis=redis_url, sip=free_udp_port(),
                                                    kam=kamailio, hash=HASH))
        carol = await login(connect, gw, "carol")
        snap = await carol.request({"type": "subscribe", "device": "301"})
        if snap["lamp"] != "busy":
            await carol.wait(lambda m: m.get("lamp") == "busy", timeout=15)
        # A second device of carol's publishes "Available" (newer): Kamailio merges both
        # tuples into one document; the busiest device still wins.
        soft = publish(tmp_path, kamailio, "soft", "open", "Available", expires=6)
        await asyncio.sleep(1.5)
        assert not any(m.get("lamp") == "idle" for m in carol.lamps())
        # Both publications expire: Kamailio NOTIFYs without a body; the lamp is no longer
        # known (not the old busy, not idle).
        await carol.wait(lambda m: m.get("lamp") == "unknown", timeout=20)
    finally:
        for p in (desk, soft):
            if p is not None:
                p.kill()
                p.wait(10)
