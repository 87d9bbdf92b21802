"""Desk phones against the real gateway process: sipp as a phone's BLF key in its factory
setting (``Event: dialog`` with digest), a TAPI bridge line ringing, the caller's number only
for a phone whose client may see it, and a gateway restart while a phone is subscribed."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import PATIENCE, free_port, gateway_config, toml_table, wait_port
from test_cli import BIN, cli

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None,
                                reason="sipp is not installed (apt-get install sip-tester)")

SIPDIR = Path(__file__).resolve().parents[1] / "sip"
ALICE_PW, BOB_PW, CAROL_PW = "s3cret-desk", "hunter2-desk", "carol-hot-desk"


def scenario(name: str) -> str:
    """A desk phone scenario with the passwords of this test's clients."""
    return (SIPDIR / name).read_text().replace("password=s3cret", f"password={ALICE_PW}")

def config(ws: int, bridge: int, sip: int, redis_url: str) -> str:
    """alice's 201 and bob's 202 on a desk panel without numbers; 203 is the device of the
    computer DESK-3, carol's while she is logged in there."""
    return gateway_config(
        redis_url, listen=f"127.0.0.1:{ws}", bridge=f"127.0.0.1:{bridge}",
        sip={"bind": f"127.0.0.1:{sip}", "tcp": f"127.0.0.1:{sip}"},
        more=toml_table("[[devices]]", id="203", number="203", computer="DESK-3")
        + toml_table("[[clients]]", name="carol", devices_by_computer=True)
        + toml_table("[[groups]]", name="desk", members=["alice", "bob"],
                     rights={"numbers": "none"}))


class Gateway:
    def __init__(self, tmp: Path, redis_url: str) -> None:
        self.ws, self.bridge_port, self.sip = free_port(), free_port(), free_port()
        self.cfg = tmp / "gw.toml"
        self.cfg.write_text(config(self.ws, self.bridge_port, self.sip, redis_url))
        self.proc: subprocess.Popen | None = None
        self.out = ""
        self.writer: asyncio.StreamWriter | None = None

    async def passwords(self) -> None:
        for client, pw in (("alice", ALICE_PW), ("bob", BOB_PW), ("carol", CAROL_PW)):
            r = await asyncio.to_thread(cli, "password", client, "--config", str(self.cfg),
                                        "--stdin", stdin=pw + "\n")
            assert r.returncode == 0, r.stderr

    async def start(self) -> None:
        self.proc = subprocess.Popen([*BIN, "run", "--config", str(self.cfg)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        await asyncio.to_thread(wait_port, self.ws, 30)
        await asyncio.to_thread(wait_port, self.bridge_port, 30)
        await asyncio.to_thread(wait_port, self.sip, 30)  # the BLF server's TCP side
        _, self.writer = await asyncio.open_connection("127.0.0.1", self.bridge_port)

    async def send(self, *msgs: dict) -> None:
        assert self.writer is not None
        for m in msgs:
            self.writer.write(json.dumps(m).encode() + b"\n")
        await self.writer.drain()

    async def lamp(self, device: str, lamp: str, timeout: float = PATIENCE,
                   client: str = "alice") -> None:
        """Wait until the gateway shows `device` with `lamp` (as a CTI client sees it), so a
        phone subscribing next gets that state first."""
        import websockets

        async with websockets.connect(f"ws://127.0.0.1:{self.ws}/ws") as ws:
            await ws.send(json.dumps({"type": "login", "id": 1, "client": client,
                                      "password": ALICE_PW if client == "alice" else BOB_PW}))
            await ws.send(json.dumps({"type": "subscribe", "id": 2, "device": device}))

            async def seen() -> None:
                async for raw in ws:
                    m = json.loads(raw)
                    if m.get("type") in ("snapshot", "lamp") and m.get("lamp") == lamp:
                        return

            await asyncio.wait_for(seen(), timeout)

    async def stop(self) -> int:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(self.proc.communicate, timeout=30)
        self.out += out
        return self.proc.returncode


@pytest.fixture
async def gateway(tmp_path, redis_url):
    gw = Gateway(tmp_path, redis_url)
    await gw.passwords()
    await gw.start()
    yield gw
    if gw.proc is not None and gw.proc.returncode is None:
        assert await gw.stop() == 0, gw.out[-3000:]
    print(gw.out[-3000:])
    assert ALICE_PW not in gw.out and BOB_PW not in gw.out and CAROL_PW not in gw.out


class Sipp:
    """sipp as a desk phone; `notifies()` reads what it received from its message trace."""

    def __init__(self, tmp: Path, name: str, text: str) -> None:
        self.dir = tmp / name
        self.dir.mkdir()
        self.scenario = self.dir / "phone.xml"
        self.scenario.write_text(text)
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, port: int, *, target: str = "201", transport: str = "u1") -> Sipp:
        self.proc = await asyncio.create_subprocess_exec(
            "sipp", "-sf", str(self.scenario), "-i", "127.0.0.1", "-t", transport, "-s",
            target, "-m", "1", "-nostdin", "-timeout", "60", "-timeout_error", "-trace_err",
            # a phone keeps trying while the gateway restarts (sipp gives up after 5 tries)
            "-max_non_invite_retrans", "30",
            "-error_file", str(self.dir / "err.log"), "-trace_msg", "-message_file",
            str(self.dir / "msg.log"), f"127.0.0.1:{port}", cwd=self.dir,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        return self

    def notifies(self) -> list[str]:
        f = self.dir / "msg.log"
        if not f.exists():
            return []
        text = f.read_text(errors="replace")
        return [m for m in re.split(r"\n-{10,}[^\n]*\n", text)
                if re.search(r"(?m)^NOTIFY sip", m)]

    async def finish(self, timeout: float = 60) -> str:
        assert self.proc is not None
        rc = await asyncio.wait_for(self.proc.wait(), timeout)
        errors = (self.dir / "err.log").read_text()[-3000:] \
            if (self.dir / "err.log").exists() else ""
        assert rc == 0, f"the phone did not see what it should (sipp {rc}):\n{errors}"
        return errors


async def until(pred, timeout=PATIENCE, what="condition"):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"{what}: not reached in time")
        await asyncio.sleep(0.05)


def dialog_fetch(client: str, password: str) -> str:
    """A one-off query (Expires: 0) of a target's dialog state by `client`'s phone."""
    text = scenario("deskphone_fetch.xml")
    text = (text.replace("Event: presence", "Event: dialog")
                .replace("application/pidf+xml", "application/dialog-info+xml")
                .replace(f"username=alice password={ALICE_PW}",
                         f"username={client} password={password}")
                .replace("sip:alice@", f"sip:{client}@"))
    text = re.sub(r'\n *<ereg regexp="&lt;(note|basic)[^\n]*/>', "", text)
    return text.replace('<Reference variables="end,note,open"/>',
                        '<Reference variables="end"/>')


def dialog_scenario() -> str:
    # The standalone scenario puts the call on hold; here the bridge line answers it instead,
    # so the second NOTIFY is `confirmed` without the hold parameter.
    text = scenario("deskphone_dialog.xml")
    text = re.sub(r'\n *<ereg regexp="pname=[^\n]*assign_to="hold[12]"/>', "", text)
    return text.replace("v1,conf1,hold1,v2,hold2", "v1,conf1,v2")


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
async def test_desk_phone_dialog_blf_follows_a_bridge_line(gateway, tmp_path, transport):
    gw = gateway
    await gw.send({"device": "201", "devstate": "inservice"},
                  {"device": "201", "call": "1", "state": "offering", "caller": "0301234",
                   "caller_name": "Eve"})
    await gw.lamp("201", "ringing")
    phone = await Sipp(tmp_path, "alice", dialog_scenario()).start(gw.sip, transport=transport)
    await until(lambda: len(phone.notifies()) >= 1, what="first NOTIFY")
    await gw.send({"device": "201", "call": "1", "state": "connected"})
    await phone.finish()
    first, second = phone.notifies()[:2]
    # alice's own line: she sees who calls (identity and display name).
    assert "sip:0301234@" in first and 'display="Eve"' in first
    assert "<state>confirmed</state>" in second


async def test_caller_number_only_where_the_client_may_see_it(gateway, tmp_path):
    gw = gateway
    await gw.send({"device": "201", "devstate": "inservice"},
                  {"device": "201", "call": "1", "state": "offering", "caller": "0301234",
                   "caller_name": "Eve"})
    await gw.lamp("201", "ringing")
    # A fetch of 201's dialog state by bob (group right numbers = "none").
    phone = await Sipp(tmp_path, "bob", dialog_fetch("bob", BOB_PW)).start(gw.sip)
    await phone.finish()
    (notify,) = phone.notifies()
    assert "<state>early</state>" in notify and 'direction="recipient"' in notify
    assert "0301234" not in notify and "display=" not in notify


async def test_phones_come_back_after_a_gateway_restart(gateway, tmp_path):
    gw = gateway
    await gw.send({"device": "201", "devstate": "inservice"})
    phone = await Sipp(tmp_path, "restart",
                       scenario("deskphone_restart.xml")).start(gw.sip)
    await until(lambda: len(phone.notifies()) >= 1, what="subscribed")
    assert await gw.stop() == 0, gw.out[-3000:]
    await until(lambda: any("reason=probation" in n for n in phone.notifies()),
                what="the phone was told to come back")
    loop = asyncio.get_running_loop()
    restarted = loop.time()
    await gw.start()
    await gw.send({"device": "201", "devstate": "inservice"})
    n = len(phone.notifies())
    await until(lambda: len(phone.notifies()) > n, timeout=45, what="re-subscribed")
    back = loop.time() - restarted
    await gw.send({"device": "201", "call": "7", "state": "offering", "caller": "0301"})
    await phone.finish()
    print(f"phone subscribed again {back:.1f} s after the restart began")
    assert back < 45


async def test_blf_list_of_a_panel(gateway, tmp_path):
    gw = gateway
    await gw.send({"device": "201", "devstate": "inservice"},
                  {"device": "202", "devstate": "inservice"},
                  {"device": "202", "call": "1", "state": "offering", "caller": "0309999"})
    await gw.lamp("202", "ringing", client="bob")
    phone = await Sipp(tmp_path, "list", scenario("deskphone_list.xml")).start(
        gw.sip, target="desk")
    await phone.finish()
    (notify,) = phone.notifies()
    # bob's call through the panel's rights (numbers = "none"): the state, never the number.
    assert "0309999" not in notify


class RawPhone(asyncio.DatagramProtocol):
    """A desk phone's BLF key in a few lines (UDP, Event: dialog, digest): it holds one
    subscription and keeps every NOTIFY it receives (answering each 200)."""

    def __init__(self, port: int, client: str, password: str, target: str) -> None:
        self.server = ("127.0.0.1", port)
        self.client, self.password, self.target = client, password, target
        self.uri = f"sip:{target}@127.0.0.1:{port}"
        self.responses: list[str] = []
        self.notifies: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:  # noqa: ANN001
        self.transport = transport

    def subscribe(self, cseq: int, auth: str | None = None) -> None:
        port = self.transport.get_extra_info("sockname")[1]
        msg = (f"SUBSCRIBE {self.uri} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-raw{cseq}\r\n"
               f"From: <sip:{self.client}@127.0.0.1>;tag=raw\r\nTo: <{self.uri}>\r\n"
               f"Call-ID: raw-{self.target}\r\nCSeq: {cseq} SUBSCRIBE\r\n"
               f"Contact: <sip:{self.client}@127.0.0.1:{port}>\r\nEvent: dialog\r\n"
               "Accept: application/dialog-info+xml\r\nExpires: 120\r\n"
               + (f"Authorization: {auth}\r\n" if auth else "") + "Content-Length: 0\r\n\r\n")
        self.transport.sendto(msg.encode(), self.server)

    def datagram_received(self, data: bytes, addr) -> None:  # noqa: ANN001
        text = data.decode(errors="replace")
        head = text.split("\r\n\r\n", 1)[0]
        if not text.startswith("NOTIFY"):
            self.responses.append(text)
            return
        self.notifies.append(text)
        keep = [ln for ln in head.split("\r\n")[1:]
                if ln.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")]
        self.transport.sendto(("SIP/2.0 200 OK\r\n" + "\r\n".join(keep)
                               + "\r\nContent-Length: 0\r\n\r\n").encode(), addr)

    async def start(self) -> None:
        from gateway.auth import sip_ha1
        from gateway.sip.digest import digest_response, parse_digest

        self.subscribe(1)
        await until(lambda: self.responses, what="a challenge")
        challenge = self.responses[-1]
        assert challenge.startswith("SIP/2.0 401"), challenge[:200]
        value = re.search(r"(?im)^WWW-Authenticate:\s*(.*?)\r?$", challenge).group(1)
        p = parse_digest(value)
        resp = digest_response(sip_ha1(self.client, self.password), "SUBSCRIBE", self.uri,
                               p["nonce"], qop="auth", nc="00000001", cnonce="raw")
        self.subscribe(2, f'Digest username="{self.client}", realm="{p["realm"]}", '
                          f'nonce="{p["nonce"]}", uri="{self.uri}", response="{resp}", '
                          'qop=auth, nc=00000001, cnonce="raw"')
        await until(lambda: len(self.responses) >= 2, what="an answer to the digest")
        assert self.responses[-1].startswith("SIP/2.0 200"), self.responses[-1][:200]


async def test_hot_desk_device_is_seen_by_the_holders_desk_phone(gateway, tmp_path):
    """A client's hot-desk device (the one of the computer it logged in at) is its own for
    as long as it holds it: its desk phone's BLF key shows it like a main device (caller's
    number included), before the login and after the logout it is refused."""
    import websockets

    gw = gateway
    await gw.send({"device": "203", "devstate": "inservice"},
                  {"device": "203", "call": "7", "state": "offering", "caller": "0309876",
                   "caller_name": "Mallory"})

    async def fetch(name: str) -> tuple[int, list[str], str]:
        phone = Sipp(tmp_path, name, dialog_fetch("carol", CAROL_PW))
        await phone.start(gw.sip, target="203")
        assert phone.proc is not None
        rc = await asyncio.wait_for(phone.proc.wait(), 60)
        log = (phone.dir / "msg.log").read_text(errors="replace")
        return rc, phone.notifies(), log

    rc, notifies, log = await fetch("before")
    assert rc != 0 and notifies == [] and "SIP/2.0 403" in log, "not carol's device yet"

    async with websockets.connect(f"ws://127.0.0.1:{gw.ws}/ws") as ws:
        await ws.send(json.dumps({"type": "login", "id": 1, "client": "carol",
                                  "password": CAROL_PW, "computer": "desk-3"}))
        while (m := json.loads(await asyncio.wait_for(ws.recv(), 20))).get("id") != 1:
            pass
        assert {"id": "203", "temporary": True}.items() <= m["devices"][0].items()
        rc, notifies, log = await fetch("held")
        assert rc == 0, log[-2000:]
        (notify,) = notifies
        # Full rights as on a main device: the ringing call with its caller.
        assert "<state>early</state>" in notify and 'direction="recipient"' in notify
        assert "sip:0309876@" in notify and 'display="Mallory"' in notify
        # A BLF key that stays subscribed while carol holds the desk.
        _, key = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: RawPhone(gw.sip, "carol", CAROL_PW, "203"), local_addr=("127.0.0.1", 0))
        await key.start()
        await until(lambda: any("<state>early</state>" in n for n in key.notifies),
                    what="the key shows 203 ringing")

    # The logout ends the live subscription at once (no state of 203 after it).
    await until(lambda: any("terminated;reason=rejected" in n for n in key.notifies),
                what="the key's subscription ended by the logout")
    assert "0309876" not in key.notifies[-1]
    key.transport.close()

    # Logged out: the device is no longer carol's (the logout reaches the engine via Redis).
    for attempt in range(20):
        rc, notifies, log = await fetch(f"after-{attempt}")
        if rc != 0:
            break
        await asyncio.sleep(0.25)
    assert rc != 0 and notifies == [] and "SIP/2.0 403" in log


BARESIP_CONFIG = """module_path /usr/lib/baresip/modules
sip_listen 127.0.0.1:{port}
sip_trans_def udp
module_app account.so
module_app contact.so
module_app presence.so
audio_player ausine,nil
audio_source ausine,nil
audio_alert ausine,nil
"""


@pytest.mark.skipif(shutil.which("baresip") is None,
                    reason="baresip is not installed (apt-get install baresip-core)")
async def test_baresip_presence_watcher_follows_a_bridge_line(gateway, tmp_path):
    """A real softphone as a presence watcher (baresip's presence module subscribes to its
    contacts marked presence=p2p, with digest): its log shows the lamp the gateway gives."""
    gw = gateway
    home = tmp_path / "baresip"
    home.mkdir()
    from conftest import free_port as free

    (home / "config").write_text(BARESIP_CONFIG.format(port=free()))
    (home / "accounts").write_text(
        f"<sip:alice@127.0.0.1:{gw.sip}>;auth_pass={ALICE_PW};regint=0\n")
    (home / "contacts").write_text(f'"Reception" <sip:201@127.0.0.1:{gw.sip}>;presence=p2p\n')
    await gw.send({"device": "201", "devstate": "inservice"})
    await gw.lamp("201", "idle")
    proc = await asyncio.create_subprocess_exec(
        "baresip", "-f", str(home), "-v", stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out = bytearray()

    async def read() -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(4096):
            out.extend(chunk)

    reader = asyncio.create_task(read())

    def log() -> str:
        return re.sub(r"\x1b\[[0-9;]*m", "", out.decode(errors="replace"))

    try:
        await until(lambda: "Subscribing to 1 contacts" in log(), what="baresip started")
        await asyncio.sleep(1.0)  # its SUBSCRIBE, the digest round and the first NOTIFY
        await gw.send({"device": "201", "call": "1", "state": "offering", "caller": "0301234"})
        await until(lambda: re.search(r"<sip:201@[^>]*> changed status from \w+ to Busy",
                                      log()), what="baresip shows 201 busy (ringing)")
        await gw.send({"device": "201", "call": "1", "state": "disconnected"})
        await until(lambda: "changed status from Busy to Online" in log(),
                    what="baresip shows 201 online again")
    finally:
        proc.terminate()
        await proc.wait()
        await reader
        print(log())
