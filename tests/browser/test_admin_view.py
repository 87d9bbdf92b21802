"""The admin view of the switchboard (web_panel/admin.js) against a real gateway process fed
by two sources (a TAPI bridge over TCP, Asterisk through tests/amipeer.py) and a softphone
(a CTI client over the WebSocket): it tells the same story as `blf-gateway explain`, never
shows a number the admin's rights do not allow, and is forbidden to everyone else.

    .venv/bin/pytest -m browser tests/browser/test_admin_view.py -v
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from test_web_panel import (  # noqa: F401 - fixtures used by name
    CONFIG_HEAD,
    AsteriskPeer,
    WAIT_MS,
    Gateway,
    browser,
    page,
)
from test_web_panel import login as web_login

pytestmark = pytest.mark.browser

NUMBER = "+4930123456"
NAME = "Miller Ltd"
OUT_NUMBER = "+4940999888"
PASSWORDS = {"alice": "alice-pass-1", "bob": "bob-pass-12", "root": "root-pass-12",
             "auditor": "auditor-pass"}

CONFIG = CONFIG_HEAD + """
[sources.ami]
host = "127.0.0.1"
port = {ami_port}
username = "blf"
secret_file = "ami.secret"

[[devices]]
id = "201"
name = "Alice desk"
number = "201"
line = "L201"

[[devices]]
id = "202"
name = "Alice Asterisk"
number = "202"
source = "ami"
line = "PJSIP/202"

[[devices]]
id = "203"
name = "Bob desk"
number = "203"
line = "L203"

[[clients]]
name = "alice"
first_name = "Alice"
last_name = "Archer"
devices = ["201", "202"]

[[clients]]
name = "bob"
first_name = "Bob"
last_name = "Baker"
devices = ["203"]

[[clients]]
name = "root"
first_name = "Rita"
last_name = "Root"
admin = true

[[clients]]
name = "auditor"
admin = true

[[groups]]
name = "team"
members = ["alice", "bob", "root"]
rights = {{ numbers = "all", pickup = true }}

[[groups]]
name = "quiet"
members = ["alice", "auditor"]
rights = {{ numbers = "none" }}
"""


class Office(Gateway):
    """The switchboard tests' gateway process, with an Asterisk line and admins."""

    in_service = ["L201", "L203"]  # its TAPI lines (202 is Asterisk's)

    def __init__(self, tmp, ami_port: int) -> None:
        super().__init__(tmp)
        self.config.write_text(CONFIG.format(port=self.port, bport=self.bport,
                                             state=self.state, ami_port=ami_port))
        (tmp / "ami.secret").write_text("s3cret\n")


@pytest.fixture(scope="module")
def office(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("admin-view")
    ami = AsteriskPeer()
    ami.peer.model.add_endpoint("PJSIP/203", "203", "Bob")  # unused by config: harmless
    gw = Office(tmp, ami.port)
    for client, pw in PASSWORDS.items():
        gw.set_password(client, pw)
    gw.start()
    yield gw, ami
    gw.close()
    ami.close()
    shutil.rmtree(tmp, ignore_errors=True)


def login(page, gw, client: str) -> None:
    web_login(page, gw, client, PASSWORDS[client], panels=False)


def wait_for(pred, timeout: float = WAIT_MS / 1000):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def healthz(gw) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"{gw.url}healthz", timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def story_played(office):
    """Two sources and a softphone: a call rings on alice's TAPI line, a late garbled report
    of it is ignored, her softphone reports the same call (shown once), and her Asterisk
    line makes an outgoing call that is abandoned."""
    gw, ami = office
    wait_for(lambda: healthz(gw)["sources"]["ami"]["connected"], 20)
    gw.call("L201", "0x3f1", "offering", caller=NUMBER, caller_name=NAME, called="201")
    gw.call("L201", "0x3f1", "dialing")
    with raw_client_as(gw, "alice") as alice:
        ok = alice.request({"type": "softphone", "call": "sp-77", "state": "ringing",
                            "direction": "in", "remote": NUMBER})
        assert ok["type"] == "ok", ok
        call = ami.call(ami.peer.model.outbound_call, "202", OUT_NUMBER)
        wait_for(lambda: any(" dialing, outgoing" in x for x in explain_cli(gw, "202")))
        ami.call(ami.peer.model.hangup, call)
        wait_for(lambda: any(" ended, outgoing" in x for x in explain_cli(gw, "202")))
        # Health entries are written once a second: wait until the admin overview has both
        # sources up (what the admin view shows first), not a fixed second.
        with raw_client_as(gw, "root") as root:
            wait_for(lambda: sorted(s["source"] for s in root.request(
                {"type": "admin_overview"})["sources"] if s["up"]) == ["ami", "tapi_bridge"])
        yield gw, alice


class _Raw:
    def __init__(self, ws, client):
        self.ws, self.n = ws, 0
        welcome = self.request({"type": "login", "client": client, "password": PASSWORDS[client]})
        assert welcome["type"] == "welcome", welcome

    def request(self, msg):
        self.n += 1
        self.ws.send(json.dumps({**msg, "id": self.n}))
        while True:
            m = json.loads(self.ws.recv(timeout=WAIT_MS / 1000))
            if m.get("id") == self.n:
                return m


class raw_client_as:
    def __init__(self, gw, client):
        from websockets.sync.client import connect

        self.cm = connect(f"ws://127.0.0.1:{gw.port}/ws", open_timeout=10)
        self.client = client

    def __enter__(self):
        return _Raw(self.cm.__enter__(), self.client)

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc)


def explain_cli(gw, *args: str) -> list[str]:
    r = gw.cli("explain", *args)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def open_admin(page) -> None:
    page.click("#admin-toggle")
    page.wait_for_selector("#admin-view:not([hidden])")
    page.wait_for_selector('#admin-sources tr[data-source="ami"]', timeout=WAIT_MS)


def shown_story(page) -> list[str]:
    return page.locator("#admin-story li").evaluate_all("els => els.map(e => e.textContent)")


def test_admin_view_tells_the_same_story_as_explain(page, story_played):
    gw, _ = story_played
    login(page, gw, "root")
    open_admin(page)
    # Sources and their health, the process, every device with its lamp.
    ami_row = page.locator('#admin-sources tr[data-source="ami"] td')
    assert ami_row.nth(1).inner_text() == "up"
    assert ami_row.nth(3).inner_text() == healthz(gw)["process"]
    tapi_row = page.locator('#admin-sources tr[data-source="tapi_bridge"] td')
    assert tapi_row.nth(1).inner_text() == "up" and tapi_row.nth(3).inner_text() == "every process"
    assert page.locator("#admin-processes tbody tr").count() == 1
    page.wait_for_selector('#admin-devices li[data-key="device:201"][data-lamp="ringing"]')
    page.wait_for_selector('#admin-devices li[data-key="device:202"][data-lamp="idle"]')
    sessions = page.locator("#admin-sessions tbody tr[data-client]").evaluate_all(
        "els => els.map(e => e.dataset.client)")
    assert "alice" in sessions and "root" in sessions

    # Click alice: the story, newest last, word for word what the command line says.
    page.click('#admin-members li[data-key="client:alice"]')
    page.wait_for_selector('#admin-explain[data-target="alice"]:not([hidden])')
    cli_lines = explain_cli(gw, "alice", "--as", "root")
    assert shown_story(page) == cli_lines
    now = cli_lines[-1]
    assert " because the TAPI bridge reported call 0x3f1 ringing on 201; the softphone report " \
           "of the same call (its call sp-77, ringing since " in now
    assert "(shown once: the call 0x3f1 on 201; same direction, same remote number" in now
    assert any("ignored, out of order (dialing while the call is ringing" in x for x in cli_lines)
    assert any(f"202: Asterisk (ami): call " in x and f"to {OUT_NUMBER}" in x for x in cli_lines)
    # root's rights (team: numbers all) let it see the numbers.
    assert NUMBER in page.content()
    # The records table has every report, the ignored one marked.
    assert page.locator('#admin-records tr[data-outcome="out_of_order"]').count() == 1

    # A device's story too, chosen with the keyboard.
    page.focus('#admin-devices li[data-key="device:202"]')
    page.keyboard.press("Enter")
    page.wait_for_selector('#admin-explain[data-target="202"]')
    assert page.evaluate("() => document.activeElement.id") == "admin-explain"
    assert shown_story(page) == explain_cli(gw, "202", "--as", "root")
    if os.environ.get("BLF_SCREENSHOTS"):  # a folder to keep a picture of the view in
        page.screenshot(path=os.path.join(os.environ["BLF_SCREENSHOTS"], "admin.png"),
                        full_page=True)


def test_admin_without_the_numbers_right_sees_no_number(page, story_played):
    gw, _ = story_played
    login(page, gw, "auditor")
    open_admin(page)
    page.click('#admin-members li[data-key="client:alice"]')
    page.wait_for_selector('#admin-explain[data-target="alice"]:not([hidden])')
    page.locator("#admin-records").evaluate("t => t.closest('details').open = true")
    cli_lines = explain_cli(gw, "alice", "--as", "auditor")
    assert shown_story(page) == cli_lines
    html = page.content()
    frames = "\n".join(page.frames_log.received)
    for secret in (NUMBER, NAME, OUT_NUMBER):
        assert secret not in html and secret not in frames and secret not in "\n".join(cli_lines)
    assert "from [number hidden]" in html
    assert '"type":"explanation"' in frames  # the frames were recorded at all


def test_admin_view_is_forbidden_to_others(page, story_played):
    gw, _ = story_played
    login(page, gw, "bob")
    assert page.locator("#admin-toggle").is_hidden()
    # Asked anyway, the gateway refuses, and nothing of it reaches the page.
    for req in ({"type": "admin_overview"}, {"type": "explain", "client": "alice"},
                {"type": "admin_reload"}):
        code = page.evaluate("""r => window.__blf.app.conn.request(r).then(
            () => 'answered', e => e.code)""", req)
        assert code == "forbidden", (req, code)
    received = {m.get("type") for m in page.frames_log.received_json()}
    assert "error" in received
    assert not received & {"admin_overview", "explanation", "reload_result"}, received
    assert page.locator("#admin-view").is_hidden()


def test_reload_shows_the_errors_of_a_refused_file(page, office):
    gw, _ = office
    login(page, gw, "root")
    open_admin(page)
    good = gw.config.read_text()
    try:
        gw.config.write_text(good.replace('number = "203"', 'number = "203"\nlamp = "red"'))
        page.click("#admin-reload")
        page.wait_for_selector('#admin-reload-result[data-ok="false"]', timeout=WAIT_MS)
        errors = page.locator("#admin-reload-result .reload-errors li").all_inner_texts()
        assert any("lamp: unknown key" in e for e in errors), errors
        assert "refused, the running gateway keeps its last good configuration" in \
            page.locator("#admin-reload-result").inner_text()
    finally:
        gw.config.write_text(good)
    page.click("#admin-reload")
    page.wait_for_selector('#admin-reload-result[data-ok="true"]', timeout=WAIT_MS)
