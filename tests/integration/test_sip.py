"""SIP through pjsua2 against real SIP peers in other processes on 127.0.0.1.

- The PBX's presence server is sipp, playing scenarios from tests/sip/scenarios.py; what the
  gateway makes of it is checked as a user sees it: the device lamps of a real LineTracker.
- The BLF server for desk phones has its own tests (test_blf_server.py): it no longer uses
  pjsua2.

The gateway's own endpoint lives in this pytest process, ONE for the whole session (pjsua2
aborts on a second Endpoint per process): a session fixture, shared by every test here.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pjsua2", reason="pjsua2-python has no wheel for this Python (3.10-3.12 only)")

from gateway.calls import CallReport  # noqa: E402
from gateway.model import Lamp  # noqa: E402
from gateway.sip.endpoint import SipEndpoint  # noqa: E402
from gateway.sip.source import SipPresenceSource  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sip import scenarios as sc  # noqa: E402
from sip.pbx import Lamps, Pbx, until  # noqa: E402
from sip.phones import DeskPhone  # noqa: E402,F401 - used by test_sip_e2e

pytestmark = pytest.mark.sip

needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None,
                                reason="sipp is not installed (apt-get install sip-tester)")


def _free_udp_port() -> int:
    from conftest import free_udp_port  # one picker: never the same port twice

    return free_udp_port()


@pytest.fixture(scope="session")
def endpoint():
    ep = SipEndpoint("127.0.0.1:0")
    ep.start()
    yield ep
    ep.stop()
    ep.stop()  # idempotent


@pytest.fixture
async def watch(endpoint, tmp_path):
    """`lamps, pbx = await watch(steps)`: sipp as PBX + a SipPresenceSource watching it."""
    started: list[tuple[SipPresenceSource, Pbx]] = []

    async def start(steps, *, device="201", backoff=0.3, subscribe_timeout=10.0,
                    pbx_running=True, keys=None):
        pbx = Pbx(tmp_path, steps, user=device, keys=keys)
        if pbx_running:
            pbx.start()
        lamps = Lamps([device])
        source = SipPresenceSource(endpoint, {pbx.uri: device}, lamps.on_reports,
                                   lamps.on_connection_lost, backoff_initial=backoff,
                                   backoff_max=2.0, subscribe_timeout=subscribe_timeout)
        await source.start()
        started.append((source, pbx))
        lamps.source = source  # type: ignore[attr-defined]
        return lamps, pbx

    yield start
    for source, pbx in started:
        await source.stop()
        pbx.stop()


# ---------------------------------------------------------------------------- line source


@needs_sipp
async def test_presence_notifies_drive_the_device_lamp(watch):
    steps = sc.STANDARD["flow"]  # Ready, Ringing, On the phone, On hold, Ready
    lamps, _ = await watch(steps)
    await until(lambda: len(lamps.history["201"]) >= 5, what="five lamp changes")
    assert lamps.history["201"] == [Lamp.IDLE, Lamp.RINGING, Lamp.BUSY, Lamp.HELD, Lamp.IDLE]
    calls = {r.call for r in lamps.reports if isinstance(r, CallReport)}
    assert len(calls) == 1, "ringing -> connected -> held -> ended is one synthetic call"
    assert all(r.conn == "sip:201" for r in lamps.reports)


@needs_sipp
async def test_call_waiting_and_unavailable(watch):
    steps = [sc.answer(), sc.notify("On the phone"), sc.pause(150), sc.notify("Ringing"),
             sc.pause(150), sc.notify("Unavailable"), sc.pause(150), sc.notify("Ready")]
    lamps, _ = await watch(steps)
    await until(lambda: len(lamps.history["201"]) >= 4, what="four lamp changes")
    assert lamps.history["201"] == [Lamp.BUSY, Lamp.RINGING, Lamp.OFFLINE, Lamp.IDLE]
    calls = [r.call for r in lamps.reports if isinstance(r, CallReport)]
    assert len(set(calls)) == 2, "a ringing after on-the-phone is a new call"


@needs_sipp
async def test_terminated_subscription_makes_the_lamp_unknown_then_resubscribes(watch):
    steps = [sc.answer(), sc.notify("On the phone"), sc.pause(400),
             sc.notify("On the phone", state="terminated;reason=noresource")]
    lamps, pbx = await watch(steps, backoff=0.3)
    # busy, then unknown when the PBX ends the subscription, then busy again: re-subscribed
    await until(lambda: lamps.history["201"][:3] == [Lamp.BUSY, Lamp.UNKNOWN, Lamp.BUSY],
                what="busy -> unknown -> busy")
    assert "sip:201" in lamps.lost
    assert (await lamps.source.watches())[0].attempts >= 2


@needs_sipp
async def test_refresh_answered_481_makes_the_lamp_unknown(watch):
    # pjsua refreshes 5 s before expiry: Expires 6 makes it refresh after about 1 s.
    steps = [sc.answer(expires=6), sc.notify("Ringing", state="active;expires=6"),
             sc.respond_refresh(481)]
    lamps, pbx = await watch(steps, backoff=0.3)
    await until(lambda: Lamp.UNKNOWN in lamps.history["201"][1:], timeout=25,
                what="unknown after the 481")
    assert lamps.history["201"][:2] == [Lamp.RINGING, Lamp.UNKNOWN]
    # and the source subscribes again (a fresh dialog the scenario answers: ringing again)
    await until(lambda: lamps.history["201"][2:3] == [Lamp.RINGING], timeout=25,
                what="ringing again after re-subscribing")


@needs_sipp
async def test_pbx_that_never_answers_keeps_unknown_until_it_does(watch, tmp_path):
    lamps, silent = await watch([sc.ignore_subscribe()], subscribe_timeout=1.0, backoff=0.3)
    deadline = time.monotonic() + 20
    while (await lamps.source.watches())[0].attempts < 2:
        assert time.monotonic() < deadline, "no second SUBSCRIBE after the timeout"
        await asyncio.sleep(0.05)
    assert lamps.lamp("201") is Lamp.UNKNOWN
    assert lamps.history["201"] == []
    # The PBX comes back (same address): the next attempt gets an answer.
    silent.stop()
    back = Pbx(tmp_path, [sc.answer(), sc.notify("Ready")], port=silent.port)
    back.start()
    try:
        await until(lambda: lamps.lamp("201") is Lamp.IDLE, timeout=20, what="idle")
    finally:
        back.stop()


@needs_sipp
async def test_hostile_and_broken_bodies_change_nothing(watch):
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
            '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
            '<presence xmlns="urn:ietf:params:xml:ns:pidf"><note>&lol3;</note>'
            '<tuple id="x"><status><basic>open</basic></status></tuple></presence>')
    # sipp reads [..] as its keywords: the bodies go in through -key, unparsed.
    keys = {"bomb": bomb, "broken": "this is <not xml", "deep": "<presence><tuple>" * 300,
            "external": '<?xml version="1.0"?><!DOCTYPE presence SYSTEM '
                        '"http://127.0.0.1:9/evil.dtd"><presence/>'}
    steps = [sc.answer(), sc.notify("On the phone"), sc.pause(100)]
    for key in keys:
        steps += [sc.notify(body=f"[{key}]", expect="any"), sc.pause(100)]
    steps += [sc.notify(body="garbage", content_type="text/plain", expect="any"),
              sc.pause(100), sc.notify("On hold")]
    lamps, _ = await watch(steps, keys=keys)
    await until(lambda: Lamp.HELD in lamps.history["201"], what="held after the garbage")
    assert lamps.history["201"] == [Lamp.BUSY, Lamp.HELD]
