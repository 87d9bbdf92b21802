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
