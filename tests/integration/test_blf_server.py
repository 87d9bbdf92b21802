"""The BLF server for desk phones on the project's own SIP layer, against real SIP peers in
other processes: sipp as a desk phone in its factory setting (``Event: dialog`` with digest,
refresh, unsubscribe, fetch) over UDP and TCP, a pjsua2 presence watcher, and a TLS client.

The gateway's state (lamps, calls, rights, passwords) is given here directly through the
notifier's Directory; the whole gateway is exercised in test_sip_e2e.py.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("defusedxml", reason="defusedxml is needed for the XML bodies")

from gateway.auth import SIP_REALM, sip_ha1  # noqa: E402
from gateway.model import Call, CallState, Direction, Lamp  # noqa: E402
from gateway.panels.rights import Rights, render_call  # noqa: E402
from gateway.sip.blf_server import BlfServer  # noqa: E402
from gateway.sip.dialoginfo import parse_dialog_info  # noqa: E402
from gateway.sip.digest import digest_response, parse_digest  # noqa: E402
from gateway.sip.notifier import BlfView  # noqa: E402
from gateway.sip.proto import Request, StreamFramer, parse_message  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sip.phones import DeskPhone  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SIPDIR = ROOT / "tests" / "sip"
needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None,
                                reason="sipp is not installed (apt-get install sip-tester)")


class Office:
    def __init__(self) -> None:
        self.ha1s = {"alice": sip_ha1("alice", "s3cret"), "bob": sip_ha1("bob", "hunter2")}
        self.lamps = {"201": Lamp.IDLE, "202": Lamp.IDLE}
        self.calls: dict[str, tuple[Call, ...]] = {"201": (), "202": ()}
        self.rights = {("alice", "201"): Rights(numbers="all"),
                       ("alice", "202"): Rights(numbers="all"),
                       ("bob", "201"): Rights(numbers="none")}

    def ha1(self, client):
        return self.ha1s.get(client)

    def exists(self, target):
        return target in self.lamps

    def view(self, client, target):
        r = self.rights.get((client, target))
        if r is None:
            return None
        return BlfView(self.lamps[target],
                       tuple(render_call(c, r) for c in self.calls[target]))

    def set(self, target, lamp, *calls):
        self.lamps[target] = lamp
        self.calls[target] = calls


@pytest.fixture
async def blf():
    office = Office()
    server = BlfServer(office, udp="127.0.0.1:0", tcp="127.0.0.1:0")
    await server.start()
    server.office = office  # type: ignore[attr-defined]
    yield server
    await server.stop(grace=0.5)


async def until(pred, timeout=15.0, what="condition"):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"{what}: not reached in time")
        await asyncio.sleep(0.02)


async def sipp(scenario: str, port: int, tmp_path: Path, *, transport: str = "u1",
               target: str = "201"):
    err = tmp_path / f"{scenario}.err"
    return await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(SIPDIR / scenario), "-i", "127.0.0.1", "-t", transport,
        "-s", target, "-m", "1", "-nostdin", "-timeout", "20", "-timeout_error",
        "-trace_err", "-error_file", str(err), f"127.0.0.1:{port}",
        cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


def _errors(tmp_path: Path, scenario: str) -> str:
    f = tmp_path / f"{scenario}.err"
    return f.read_text()[-3000:] if f.exists() else ""


RINGING = Call("c1", Direction.IN, CallState.RINGING, 1.0, "0301234", "Eve")
HELD = Call("c1", Direction.IN, CallState.HELD, 1.0, "0301234", "Eve")


@needs_sipp
@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
async def test_sipp_desk_phone_dialog_subscribe_refresh_unsubscribe(blf, tmp_path, transport):
    office = blf.office
    office.set("201", Lamp.RINGING, RINGING)
    port = blf.addresses["UDP" if transport == "u1" else "TCP"][1]
    proc = await sipp("deskphone_dialog.xml", port, tmp_path, transport=transport)
    # The phone has its first NOTIFY (ringing): the call is put on hold.
    await until(lambda: any(s.notifies >= 1 for s in blf.subscribers()), what="subscribed")
    (sub,) = blf.subscribers()
    assert (sub.client, sub.target, sub.package) == ("alice", "201", "dialog")
    assert sub.expires_in <= 120
    office.set("201", Lamp.HELD, HELD)
    blf.changed(["201"])
    rc = await asyncio.wait_for(proc.wait(), 40)
    errors = _errors(tmp_path, "deskphone_dialog.xml")
    assert rc == 0, f"the phone did not see what it should:\n{errors}"
    assert blf.subscribers() == [], "the unsubscribe ended the subscription"


@needs_sipp
async def test_sipp_fetch_gets_the_real_lamp(blf, tmp_path):
    blf.office.set("201", Lamp.BUSY)
    proc = await sipp("deskphone_fetch.xml", blf.addresses["UDP"][1], tmp_path)
    rc = await asyncio.wait_for(proc.wait(), 40)
    assert rc == 0, _errors(tmp_path, "deskphone_fetch.xml")
    assert blf.subscribers() == []


needs_pjsua2 = pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import pjsua2"], capture_output=True).returncode,
    reason="pjsua2-python has no wheel for this Python (3.10-3.12 only)")


@needs_pjsua2
async def test_presence_watcher_sees_every_lamp_and_never_a_passing_offline(blf):
    office = blf.office
    office.set("201", Lamp.RINGING, RINGING)
    port = blf.addresses["UDP"][1]
    phone = await DeskPhone.start(f"sip:201@127.0.0.1:{port}", "alice", "s3cret")
    try:
        await until(lambda: phone.notes()[-1:] == ["Ringing"], what="Ringing")
        for lamp, note in ((Lamp.BUSY, "On the phone"), (Lamp.HELD, "On hold"),
                           (Lamp.OFFLINE, "Unavailable"), (Lamp.IDLE, "Ready")):
            office.set("201", lamp)
            blf.changed(["201"])
            await until(lambda note=note: phone.notes()[-1:] == [note], what=note)
        # The very first state the phone got was the lamp: no "closed" before it.
        assert phone.notes() == ["Ringing", "On the phone", "On hold", "Unavailable", "Ready"]
        # A clean shutdown tells the phone to come back (probation with retry-after).
        await blf.stop(grace=2)
        await until(lambda: any(e["event"] == "notify" and "terminated" in e["state"]
                                for e in phone.events), what="final NOTIFY")
        final = [e for e in phone.events if e["event"] == "notify"][-1]
        assert final["state"].startswith("terminated;reason=probation;retry-after=")
    finally:
        await phone.close()


@needs_pjsua2
async def test_password_change_and_removed_right_end_live_subscriptions(blf):
    office = blf.office
    port = blf.addresses["UDP"][1]
    alice = await DeskPhone.start(f"sip:201@127.0.0.1:{port}", "alice", "s3cret")
    bob = await DeskPhone.start(f"sip:201@127.0.0.1:{port}", "bob", "hunter2")
    try:
        await until(lambda: alice.notes() and bob.notes(), what="both subscribed")
        office.ha1s["alice"] = sip_ha1("alice", "new-pass")
        office.rights.pop(("bob", "201"))
        blf.recheck()

        def ended(phone, reason):
            return any(e["event"] == "notify" and e["state"].startswith(
                f"terminated;reason={reason}") for e in phone.events)

        await until(lambda: ended(alice, "deactivated") and ended(bob, "rejected"),
                    what="both ended")
        # alice's phone comes back with the old password and is refused; bob's does not
        # come back (rejected).
        await until(lambda: 403 in alice.codes(), what="alice refused")
        assert all(s.client != "alice" for s in blf.subscribers())
        office.set("201", Lamp.BUSY)
        blf.changed(["201"])
        await asyncio.sleep(0.3)
        assert "On the phone" not in bob.notes()
    finally:
        await alice.close()
        await bob.close()


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "1", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                       capture_output=True)
    if r.returncode:
        pytest.skip(f"openssl could not make a test certificate: {r.stderr[-300:]!r}")
    return str(cert), str(key)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
async def test_tls_subscription_with_digest_gets_notifies_on_the_same_connection(tmp_path):
    cert, key = _self_signed(tmp_path)
    office = Office()
    office.set("201", Lamp.RINGING, RINGING)
    server = BlfServer(office, tls="127.0.0.1:0", certfile=cert, keyfile=key)
    await server.start()
    ctx = ssl.create_default_context(cafile=cert)
    ctx.check_hostname = False
    reader, writer = await asyncio.open_connection("127.0.0.1", server.addresses["TLS"][1],
                                                   ssl=ctx)
    framer = StreamFramer()
    pending: list = []

    async def receive():
        while not pending:
            data = await asyncio.wait_for(reader.read(65536), 10)
            assert data, "the gateway closed the connection"
            pending.extend(parse_message(m) for m in framer.feed(data))
        return pending.pop(0)

    uri = f"sip:201@127.0.0.1:{server.addresses['TLS'][1]}"

    def subscribe(cseq, auth=None):
        headers = [("Via", f"SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK-tls{cseq}"),
                   ("From", "<sip:alice@127.0.0.1>;tag=t1"), ("To", f"<{uri}>"),
                   ("Call-ID", "tls-call"), ("CSeq", f"{cseq} SUBSCRIBE"),
                   ("Contact", "<sips:alice@127.0.0.1:5061;transport=tls>"),
                   ("Event", "dialog"), ("Expires", "300")]
        if auth:
            headers.append(("Authorization", auth))
        writer.write(Request(tuple(headers), b"", "SUBSCRIBE", uri).serialize())

    try:
        subscribe(1)
        challenge = await receive()
        assert challenge.status == 401
        p = parse_digest(challenge.header("WWW-Authenticate"))
        resp = digest_response(sip_ha1("alice", "s3cret"), "SUBSCRIBE", uri, p["nonce"],
                               qop="auth", nc="00000001", cnonce="tlsc")
        subscribe(2, f'Digest username="alice", realm="{SIP_REALM}", nonce="{p["nonce"]}", '
                     f'uri="{uri}", response="{resp}", qop=auth, nc=00000001, cnonce="tlsc"')
        ok = await receive()
        assert ok.status == 200 and ok.header("Expires") == "120"
        notify = await receive()
        assert notify.method == "NOTIFY" and "TLS" in notify.header("Via")
        (d,) = parse_dialog_info(notify.body).dialogs
        assert d.state == "early" and d.remote_uri.startswith("sip:0301234@")
    finally:
        writer.close()
        await server.stop(grace=0.2)
