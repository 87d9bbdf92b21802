"""SIP lines watched on the project's own SIP layer, against sipp playing the PBX (presence
and dialog notifiers) in another process. What the gateway makes of it is checked as a user
sees it: the device lamps of a real LineTracker (tests/sip/pbx.py)."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("defusedxml", reason="defusedxml is needed for the XML bodies")

from gateway.calls import CallReport  # noqa: E402
from gateway.model import Lamp  # noqa: E402
from gateway.sip.blf_server import BlfServer  # noqa: E402
from gateway.sip.lines import SipLineSource  # noqa: E402
from gateway.sip.watcher import WatchLine  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sip import scenarios as sc  # noqa: E402
from sip.pbx import Lamps, Pbx, until  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None,
                                reason="sipp is not installed (apt-get install sip-tester)")


class Nobody:
    """No desk phone clients: the BLF server is only the SIP port here."""

    def ha1(self, client):
        return None

    def exists(self, target):
        return False

    def view(self, client, target):
        return None


@pytest.fixture
async def watch(tmp_path):
    started: list = []
    server = BlfServer(Nobody(), udp="127.0.0.1:0")
    await server.start()

    async def start(steps, *, device="201", event="presence", keys=None, transport="udp",
                    **options):
        pbx = Pbx(tmp_path, steps, user=device, keys=keys, transport=transport).start()
        lamps = Lamps([device])
        options = {"backoff_initial": 0.3, "backoff_max": 2.0, **options}
        source = SipLineSource(server.agent, {pbx.uri: WatchLine(pbx.uri, device, event)},
                               lamps.on_reports, lamps.on_connection_lost, **options)
        await source.start()
        started.append((source, pbx))
        lamps.source = source  # type: ignore[attr-defined]
        return lamps, pbx

    yield start
    for source, pbx in started:
        await source.stop()
        pbx.stop()
    await server.stop(grace=0.2)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_presence_notifies_drive_the_device_lamp(watch, transport):
    # Over TCP the PBX's NOTIFYs come back on the connection the gateway opened.
    lamps, _ = await watch(sc.STANDARD["flow"], transport=transport)
    await until(lambda: len(lamps.history["201"]) >= 5, what="five lamp changes")
    assert lamps.history["201"] == [Lamp.IDLE, Lamp.RINGING, Lamp.BUSY, Lamp.HELD, Lamp.IDLE]
    assert all(r.conn == "sip:201" for r in lamps.reports)


async def test_old_asterisk_closed_bodies_are_not_offline(watch):
    # Asterisk before 13.18: closed for everything but Ready; the note decides.
    steps = [sc.answer(), sc.notify(body=sc.asterisk_pidf("closed", "Ringing", "busy")),
             sc.pause(150), sc.notify(body=sc.asterisk_pidf("closed", "On the phone", "busy")),
             sc.pause(150), sc.notify(body=sc.asterisk_pidf("closed", "Unavailable", "away"))]
    lamps, _ = await watch(steps)
    await until(lambda: len(lamps.history["201"]) >= 3, what="three lamp changes")
    assert lamps.history["201"] == [Lamp.RINGING, Lamp.BUSY, Lamp.OFFLINE]


async def test_body_less_notify_makes_the_lamp_unknown(watch):
    steps = [sc.answer(), sc.notify("On the phone"), sc.pause(200),
             sc.notify(body="", content_type="application/pidf+xml")]
    lamps, _ = await watch(steps)
    await until(lambda: lamps.history["201"][-1:] == [Lamp.UNKNOWN]
                and Lamp.BUSY in lamps.history["201"], what="busy, then unknown")


async def test_terminated_subscription_makes_the_lamp_unknown_then_resubscribes(watch):
    steps = [sc.answer(), sc.notify("On the phone"), sc.pause(400),
             sc.notify("On the phone", state="terminated;reason=noresource")]
    lamps, _ = await watch(steps)
    await until(lambda: lamps.history["201"][:3] == [Lamp.BUSY, Lamp.UNKNOWN, Lamp.BUSY],
                what="busy -> unknown -> busy")
    assert lamps.source.lines()[0].attempts >= 2


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_server_that_forgot_us_is_noticed_at_the_next_probe(watch, transport):
    # A presence server restarted without its subscriptions answers the refresh 481; the
    # probe refreshes every 0.5 s here (10 s by default) instead of at the end of 600 s.
    steps = [sc.answer(), sc.notify("On the phone"), sc.respond_refresh(481),
             sc.pause(100000)]
    loop = asyncio.get_running_loop()
    lamps, _ = await watch(steps, probe=0.5, transport=transport)
    await until(lambda: lamps.history["201"] == [Lamp.BUSY], what="busy")
    started = loop.time()
    # The second dialog of the scenario starts from its beginning: answer + On the phone.
    await until(lambda: lamps.source.lines()[0].attempts >= 2, what="subscribed anew")
    # The probe is 0.5 s; without it the 600 s subscription would be refreshed after minutes.
    # (A bound of seconds, not of the probe's 0.5 s: a loaded machine runs timers late.)
    assert loop.time() - started < 20
    await asyncio.sleep(0.3)
    assert lamps.history["201"] == [Lamp.BUSY], "no passing unknown while re-subscribing"


async def test_server_that_stops_answering_makes_the_lamp_unknown_within_seconds(watch):
    steps = [sc.answer(), sc.notify("On the phone"), sc.pause(100000)]
    lamps, pbx = await watch(steps, probe=0.5, answer_within=1.0)
    await until(lambda: lamps.history["201"] == [Lamp.BUSY], what="busy")
    loop = asyncio.get_running_loop()
    pbx.stop()
    stopped = loop.time()
    await until(lambda: lamps.history["201"][-1:] == [Lamp.UNKNOWN], what="unknown")
    # Probe 0.5 s + 1 s without an answer; without them only the transaction's timeout
    # (64 x T1 = 32 s) would tell. Slack for a loaded machine, still well under that.
    assert loop.time() - stopped < 15


DIALOG = """<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{v}" state="full" entity="sip:[service]@[local_ip]">
{dialogs}</dialog-info>"""


def dialog(state: str, direction: str = "recipient", hold: bool = False) -> str:
    local = ('<local><target uri="sip:[service]@[local_ip]"><param pname="+sip.rendering" '
             'pvalue="no"/></target></local>' if hold else "")
    return (f'<dialog id="d1" call-id="abc123@pbx" local-tag="lt1" remote-tag="rt1" '
            f'direction="{direction}"><state>{state}</state><remote>'
            '<identity display="Eve">sip:0301234@[local_ip]</identity></remote>'
            f"{local}</dialog>\n")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_dialog_lines_carry_direction_number_and_call_id(watch, transport):
    steps = [sc.answer(),
             sc.notify_dialog(DIALOG.format(v=0, dialogs="")), sc.pause(150),
             sc.notify_dialog(DIALOG.format(v=1, dialogs=dialog("early"))), sc.pause(150),
             sc.notify_dialog(DIALOG.format(v=2, dialogs=dialog("confirmed"))), sc.pause(150),
             sc.notify_dialog(DIALOG.format(v=3, dialogs=dialog("confirmed", hold=True))),
             sc.pause(150), sc.notify_dialog(DIALOG.format(v=4, dialogs=""))]
    lamps, _ = await watch(steps, event="dialog", transport=transport)
    await until(lambda: len(lamps.history["201"]) >= 5, what="five lamp changes")
    assert lamps.history["201"] == [Lamp.IDLE, Lamp.RINGING, Lamp.BUSY, Lamp.HELD, Lamp.IDLE]
    ringing = next(r for r in lamps.reports if isinstance(r, CallReport)
                   and r.phase.value == "ringing")
    assert (ringing.remote, ringing.remote_name, ringing.link) == ("0301234", "Eve",
                                                                    "abc123@pbx")
    assert ringing.direction.value == "in"
