"""AmiSource against the AMI peer over real TCP on 127.0.0.1: what needs the socket and the
loop (connect, backoff, a peer that restarts or goes away, actions awaited, garbage split
across reads). The call scenarios and every step of the connection are unit tests of the
sans-I/O connection (tests/unit/test_ami_connection.py)."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

import pytest

from gateway.calls import CallReport, LineTracker, ServiceReport
from gateway.panels.lamps import device_lamp
from gateway.ami.client import AmiError, AmiSource

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amipeer import AmiPeer  # noqa: E402
from conftest import PATIENCE  # noqa: E402

LINES = {"PJSIP/201": "alice", "202": "bob", "PJSIP/203": "carol"}


class Rig:
    """A peer, a source and the tracker it feeds, as the app would wire them."""

    def __init__(self, peer: AmiPeer, secret_file: Path, **kw) -> None:
        self.peer = peer
        self.tracker = LineTracker(sorted(LINES.values()))
        self.batches: list[list] = []
        self.lost = 0
        self.synced = 0
        self.lamps_when_lost: dict[str, str] = {}
        self.source = AmiSource(
            "127.0.0.1", peer.port, "blf", secret_file,
            {line: (device, "") for line, device in LINES.items()}, self,
            on_synced=self.on_synced,
            backoff_initial=kw.pop("backoff_initial", 0.02), backoff_max=0.2,
            action_timeout=10.0, **kw)  # no test here waits for one to time out
        self.task: asyncio.Task | None = None

    # The source's handler (gateway.linesource.SourceEvents), as the gateway's would do it.

    def reports(self, source, reports) -> None:
        self.batches.append(list(reports))
        for r in reports:
            if isinstance(r, CallReport):
                self.tracker.call(r, time.time())
            else:
                self.tracker.service(r, time.time())

    def connection_lost(self, source, conn) -> None:
        self.lost += 1
        self.tracker.connection_lost(conn)
        self.lamps_when_lost = self.lamps()

    def on_synced(self) -> None:
        self.synced += 1

    def lamps(self) -> dict[str, str]:
        return {d: device_lamp(self.tracker.state(d)).value for d in self.tracker.devices}

    async def until(self, cond, timeout: float = PATIENCE) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not cond():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; lamps now {self.lamps()}")
            await asyncio.sleep(0.005)

    async def lamps_become(self, **want: str) -> None:
        await self.until(lambda: all(self.lamps()[d] == v for d, v in want.items()))


@pytest.fixture
def secret_file(tmp_path) -> Path:
    p = tmp_path / "ami.secret"
    p.write_text("s3cret\n")
    return p


@pytest.fixture
async def rig(peer, secret_file):
    r = Rig(peer, secret_file)
    r.task = asyncio.create_task(r.source.run())
    await r.until(lambda: r.synced == 1)
    yield r
    await r.source.close()
    await asyncio.wait_for(r.task, PATIENCE)


async def test_login_and_first_sync(rig, peer):
    assert rig.lamps() == {"alice": "idle", "bob": "idle", "carol": "idle"}
    assert rig.source.connected and rig.source.synced
    names = [a for a, _ in peer.actions]
    assert names[0] == "Login"
    assert {"CoreShowChannels", "ExtensionStateList", "DeviceStateList"} <= set(names)
    login = peer.actions[0][1]
    assert login["Username"] == "blf" and "Secret" not in login  # peer never stores it
    # The re-sync arrives as one batch before on_synced.
    assert all(isinstance(r, ServiceReport) for r in rig.batches[0])


async def test_pickup_by_redirect_round_trip(rig, peer):
    call = peer.model.external_call("0302222", "Vendor", "202")
    await rig.lamps_become(bob="ringing")
    resp = await rig.source.redirect(call.caller.name, "201", "from-internal")
    assert resp.name == "Success"
    await rig.lamps_become(bob="idle", alice="ringing")
    assert ("Redirect", ) == (peer.actions[-1][0],)
    assert peer.actions[-1][1]["Exten"] == "201"


async def test_failed_login_is_reported_and_retried_with_backoff(peer, tmp_path, caplog):
    bad = tmp_path / "wrong.secret"
    bad.write_text("nope\n")
    r = Rig(peer, bad, backoff_initial=0.05)
    caplog.set_level(logging.INFO, logger="gateway.ami")
    t0 = asyncio.get_running_loop().time()
    r.task = asyncio.create_task(r.source.run())
    try:
        await r.until(lambda: peer.failed_logins >= 3)
        elapsed = asyncio.get_running_loop().time() - t0
        # Backoff 0.05 + 0.1 before the third try: not a tight loop.
        assert elapsed >= 0.14
        refused = [rec.getMessage() for rec in caplog.records
                   if "refused" in rec.getMessage()]
        assert refused[0] == "AMI login as blf refused: Authentication failed"
        assert all("nope" not in rec.getMessage() for rec in caplog.records)
        assert r.synced == 0 and r.lost == 0
        assert set(r.lamps().values()) == {"unknown"}
        # The secret is read at every connect: fixing the file lets the next try in.
        bad.write_text("s3cret\n")
        await r.until(lambda: r.synced == 1)
        assert r.lamps()["alice"] == "idle"
    finally:
        await r.source.close()
        await r.task


async def test_peer_restart_mid_call_then_exact_state_again(rig, peer):
    m = peer.model
    call = m.internal_call("201", "202")
    m.answer(call)
    await rig.lamps_become(alice="busy", bob="busy")

    def while_down(model):
        # Asterisk restarted: every channel is gone, and a new call rings carol.
        model.external_call("0305555", "New", "203")

    await peer.restart(change=while_down, lose_channels=True)
    await rig.until(lambda: rig.lost == 1)
    # The moment the connection dropped the lamps went unknown ...
    assert set(rig.lamps_when_lost.values()) == {"unknown"}
    await rig.until(lambda: rig.synced == 2)
    # ... and after the re-sync they are exact again.
    assert rig.lamps() == {"alice": "idle", "bob": "idle", "carol": "ringing"}
    assert [c.remote for c in rig.tracker.state("carol").calls] == ["0305555"]


async def test_lamps_unknown_while_disconnected(rig, peer):
    await peer.stop()
    await rig.until(lambda: rig.lost == 1)
    assert set(rig.lamps().values()) == {"unknown"}
    with pytest.raises(AmiError):
        await rig.source.action("Ping")
    await peer.start()
    await rig.until(lambda: rig.synced == 2)
    assert set(rig.lamps().values()) == {"idle"}


async def test_garbage_never_crashes_it(rig, peer):
    peer.send_garbage(b"\x00\xff\xfe\r\nnot ami at all\r\n\r\n")
    peer.send_garbage(b"Event: Newstate\r\nChannel: " + b"A" * 20000 + b"\r\n\r\n")
    peer.send_garbage(b"Event: Newstate\r\nChannel: PJSIP/201-ff\r\nChannelState: x\r\n"
                      b"Uniqueid: \r\n\r\n")
    peer.send_garbage(bytes(range(256)) * 50)
    peer.send_garbage(b"\r\n\r\n")
    call = peer.model.external_call("0306666", "After", "201")
    await rig.lamps_become(alice="ringing")
    assert rig.source.protocol_errors >= 3
    assert rig.lost == 0 and rig.source.connected
    resp = await rig.source.action("Ping")
    assert resp.get("Ping") == "Pong"
    peer.model.cancel(call)
    await rig.lamps_become(alice="idle")
