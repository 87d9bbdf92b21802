"""The gateway PUBLISHes its lamps to a real Kamailio presence server (packaging/kamailio/,
started by scripts/kamailio); a sipp desk phone subscribed to Kamailio follows a TAPI bridge
line, without ever seeing a number (nobody's rights can be applied there). The gateway talks
to Kamailio over UDP, TCP and TLS (Kamailio listening on that transport only for the gateway;
the phones stay on UDP), as publisher and as the watcher of a SIP line."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HASH  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sip.pbx import free_udp_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PRESENCE_MODULE = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules/presence_dialoginfo.so")
TLS_MODULE = PRESENCE_MODULE.with_name("tls.so")
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
publish_to = "{publish_to}"
publish_domain = "127.0.0.1"
{transport_cfg}
[[devices]]
id = "201"
number = "201"
[[clients]]
name = "alice"
devices = ["201"]
password_hash = "{hash}"
"""


def test_certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the gateway verifies Kamailio against it)."""
    cert, key = tmp_path / "sip-cert.pem", tmp_path / "sip-key.pem"
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no test certificate for TLS")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(cert)], capture_output=True)
    if r.returncode:
        pytest.skip(f"openssl could not make a test certificate: {r.stderr[-300:]!r}")
    return cert, key


test_certificate.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def _free_tcp_port() -> int:
    from conftest import free_port  # one picker: never the same port twice in a run

    return free_port()


def gateway_sip_cfg(transport: str, cert: Path | None = None,
                    key: Path | None = None) -> str:
    """[sources.sip] lines for a gateway talking to Kamailio on `transport`: Kamailio's
    requests come back to the gateway's Contact (sip:...;transport=tcp or sips:), so it
    listens there too; over TLS with the test certificate, which it also checks Kamailio's
    against."""
    if transport == "tcp":
        return f'tcp = "127.0.0.1:{_free_tcp_port()}"'
    if transport == "tls":
        return (f'tls = "127.0.0.1:{_free_tcp_port()}"\ntls_cert = "{cert}"\n'
                f'tls_key = "{key}"\ntls_verify = true\ntls_ca = "{cert}"')
    return ""


class Kamailio:
    """scripts/kamailio in its own process: UDP for the phones and publishing softphones,
    and where asked a TCP or TLS socket for the gateway."""

    def __init__(self, tmp_path: Path, transport: str = "udp") -> None:
        self.transport = transport
        self.port = free_udp_port()
        self.gw_port = self.port if transport == "udp" else _free_tcp_port()
        listen = f"udp:127.0.0.1:{self.port}"
        env = dict(os.environ)
        if transport != "udp":
            listen += f",{transport}:127.0.0.1:{self.gw_port}"
        if transport == "tls":
            if not TLS_MODULE.exists():
                pytest.skip("Kamailio's TLS module is not installed "
                            "(apt-get install kamailio-tls-modules)")
            self.cert, self.key = test_certificate(tmp_path)
            env.update(KAMAILIO_TLS_CERT=str(self.cert), KAMAILIO_TLS_KEY=str(self.key))
        self.proc = subprocess.Popen([str(ROOT / "scripts" / "kamailio"), listen, "127.0.0.1",
                                      str(tmp_path / "kdb")], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    async def ready(self) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + 15
        while True:
            assert self.proc.poll() is None, self.proc.communicate()[0][-2000:]
            if self.transport == "udp":
                await asyncio.sleep(1.0)
                return
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.gw_port)
                w.close()
                return
            except OSError:
                assert loop.time() < end, "Kamailio did not listen"
                await asyncio.sleep(0.1)

    def uri(self, user: str = "") -> str:
        """How the gateway reaches Kamailio on its transport."""
        at = f"{user}@" if user else ""
        if self.transport == "tls":
            return f"sips:{at}127.0.0.1:{self.gw_port}"
        tail = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{at}127.0.0.1:{self.gw_port}{tail}"

    def gateway_cfg(self, tmp_path: Path) -> str:
        """[sources.sip] lines for the gateway on this transport."""
        return gateway_sip_cfg(self.transport, getattr(self, "cert", None),
                               getattr(self, "key", None))

    def stop(self) -> None:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        print(out[-3000:])


@pytest.fixture
async def kamailio_on(tmp_path):
    started: list[Kamailio] = []

    async def start(transport: str = "udp") -> Kamailio:
        k = Kamailio(tmp_path, transport)
        started.append(k)
        await k.ready()
        return k

    yield start
    for k in started:
        k.stop()


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_phone_subscribed_to_kamailio_follows_a_bridge_line(
        kamailio_on, redis_url, start_gateway, bridge, tmp_path, transport):
    k = await kamailio_on(transport)
    kamailio = k.port  # the phone subscribes over UDP
    gw = await start_gateway(CONFIG.format(redis=redis_url, sip=free_udp_port(),
                                           publish_to=k.uri(),
                                           transport_cfg=k.gateway_cfg(tmp_path), hash=HASH))
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
    # Over TCP/TLS, Kamailio's socket for the gateway has no UDP side: the lamp reached the
    # phone only because the PUBLISHes went over that transport.


LINE_CONFIG = """
[server]
listen = "127.0.0.1:0"
[redis]
url = "{redis}"
[sources.sip]
bind = "127.0.0.1:{sip}"
probe_seconds = 5
{transport_cfg}
[[devices]]
id = "301"
number = "301"
source = "sip"
line = "{line}"
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


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_line_watched_through_kamailio_merges_devices_and_notices_expiry(
        kamailio_on, redis_url, start_gateway, connect, tmp_path, transport):
    from conftest import login

    k = await kamailio_on(transport)
    kamailio = k.port  # the softphones publish over UDP; the gateway watches on `transport`
    desk = publish(tmp_path, kamailio, "desk", "open", "On the phone", expires=6)
    soft = None
    try:
        await asyncio.sleep(0.5)
        gw = await start_gateway(LINE_CONFIG.format(
            redis=redis_url, sip=free_udp_port(), line=k.uri("carol"),
            transport_cfg=k.gateway_cfg(tmp_path), hash=HASH))
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


REGISTRAR_CFG = ROOT / "tests" / "sip" / "kamailio_registrar.cfg"
REGISTER_CONFIG = """
[server]
listen = "127.0.0.1:0"
[redis]
url = "{redis}"
[sources.sip]
bind = "127.0.0.1:{sip}"
registrar = "{registrar}"
username = "gw"
password_file = "{secret}"
{transport_cfg}
[sources.tapi_bridge]
listen = "127.0.0.1:0"
[[devices]]
id = "201"
number = "201"
[[clients]]
name = "alice"
devices = ["201"]
password_hash = "{hash}"
"""


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_gateway_registers_at_kamailio_with_digest(redis_url, start_gateway, tmp_path,
                                                         transport):
    """The gateway's REGISTER (digest, realm "pbx") reaches a real Kamailio registrar over TCP
    and TLS, the binding is saved with the gateway's Contact on that transport, and /healthz
    says the SIP side is up; a wrong password is refused and /healthz says so."""
    from test_sip_lines_e2e import http  # noqa: PLC0415

    if transport == "tls" and not TLS_MODULE.exists():
        pytest.skip("Kamailio's TLS module is not installed (apt-get install "
                    "kamailio-tls-modules)")
    port = _free_tcp_port()
    defines = ["-A", f"LISTEN={transport}:127.0.0.1:{port}", "-A", 'PASSWORD="secret-pw"']
    cert = key = None
    if transport == "tls":
        cert, key = test_certificate(tmp_path)
        (tmp_path / "tls.cfg").write_text(
            f"[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
            f"require_certificate = no\ncertificate = {cert}\nprivate_key = {key}\n")
        defines += ["-A", "WITH_TLS", "-A", f'TLS_CONFIG="{tmp_path / "tls.cfg"}"']
    log = tmp_path / "kamailio.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["kamailio", "-DD", "-E", "-f", str(REGISTRAR_CFG), "-Y",
                                 str(tmp_path), "-w", str(tmp_path), *defines],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + 15
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                assert loop.time() < end, "Kamailio did not listen"
                await asyncio.sleep(0.1)
        registrar = (f"sips:127.0.0.1:{port}" if transport == "tls"
                     else f"sip:127.0.0.1:{port};transport=tcp")
        for password, up in (("secret-pw", True), ("wrong-pw", False)):
            secret = tmp_path / f"sip-{up}.secret"
            secret.write_text(password + "\n")
            gw = await start_gateway(REGISTER_CONFIG.format(
                redis=redis_url, sip=free_udp_port(), registrar=registrar, secret=secret,
                transport_cfg=gateway_sip_cfg(transport, cert, key), hash=HASH))
            reg = gw.sources.sip.registration
            end = loop.time() + 20
            while (not reg.up if up else "refused" not in (reg.reg.reason or "")):
                assert loop.time() < end, (f"registration {'up' if up else 'refused'} not "
                                           f"seen: {reg.reg.reason}\n{log.read_text()[-2000:]}")
                await asyncio.sleep(0.1)
            _, body = await http(gw.ws_port, "/healthz")
            assert json.loads(body)["sources"]["sip"]["up"] is up, body
            contact = f"{'sips' if transport == 'tls' else 'sip'}:blf@127.0.0.1:" \
                      f"{gw.sources.sip.blf_server.addresses[transport.upper()][1]}"

            def saved(contact: str = contact) -> list[str]:
                return [x.split(" expires ")[-1] for x in log.read_text().splitlines()
                        if "REGISTERED sip:gw@127.0.0.1 contact" in x
                        and f"<{contact};transport={transport}> over {transport} " in x]

            if up:
                # Kamailio saved the binding with the gateway's Contact on this transport.
                assert saved() and saved()[0] != "0", log.read_text()[-2000:]
            else:
                assert saved() == [], "a wrong password must not register"
            await start_gateway.stop(gw)
            if up:  # a gateway that stops takes its binding back (Expires: 0)
                assert saved()[-1] == "0", saved()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
