"""The browser switchboard (web_panel/) against a real gateway process.

A gateway subprocess runs a test configuration with the TAPI bridge source; the test plays the
TAPI bridge over TCP (contract section 5) and drives Debian's chromium with Playwright. For
pickup through the PBX a second gateway subprocess has Asterisk lines, fed by tests/amipeer.py
(an AMI peer: Asterisk itself is not packaged for Debian 12). A second CTI client, where a
test needs one, speaks the WebSocket protocol directly.

    apt-get install -y chromium && .venv/bin/pip install playwright
    .venv/bin/pytest -m browser tests/browser -v
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[2]
GATEWAY_BIN = Path(sys.executable).with_name("blf-gateway")
# How long a test waits for the page (ms) before it calls a change lost: chromium, the
# gateway and the test share a loaded 2-core CI machine, where a render can take seconds.
WAIT_MS = 30000

playwright_sync = pytest.importorskip("playwright.sync_api")
if not os.path.exists(CHROMIUM):
    pytest.skip("needs /usr/bin/chromium (apt-get install -y chromium)", allow_module_level=True)

SECRET_NUMBER = "0301234567"
SECRET_NAME = "Confidential Caller"

PASSWORDS = {"alice": "alice-pass-1", "bob": "bob-pass-12", "carol": "carol-pass-1"}


def free_port() -> int:
    from conftest import free_port as free  # one picker: never the same port twice

    return free()


# What every switchboard test gateway has: its ports, its state directory and a TAPI bridge.
CONFIG_HEAD = """
[server]
listen = "127.0.0.1:{port}"
login_attempts_per_minute = 500

[state]
dir = "{state}"

[sources.tapi_bridge]
listen = "127.0.0.1:{bport}"
"""

CONFIG = CONFIG_HEAD + """
[[devices]]
id = "201"
name = "Alice line"
number = "201"
line = "L201"

[[devices]]
id = "202"
name = "Bob line"
number = "202"
line = "L202"

[[devices]]
id = "203"
name = "Carol line"
number = "203"
line = "L203"

[[devices]]
id = "204"
name = "Dave line"
number = "204"
line = "L204"

[[devices]]
id = "205"
name = "Erin line"
number = "205"
line = "L205"

[[clients]]
name = "alice"
first_name = "Alice"
last_name = "Archer"
devices = ["201"]
monitor = [ {{ device = "205", clip = true, pickup = true }} ]

[[clients]]
name = "bob"
first_name = "Bob"
last_name = "Baker"
devices = ["202"]

[[clients]]
name = "carol"
first_name = "Carol"
last_name = "Chen"
devices = ["203"]

[[clients]]
name = "dave"
first_name = "Dave"
last_name = "Dunn"
devices = ["204"]

[[clients]]
name = "erin"
first_name = "Erin"
last_name = "Evans"
devices = ["205"]

[[clients]]
name = "frank"
first_name = "Frank"
last_name = "Fischer"

[[groups]]
name = "desk"
members = ["alice", "bob", "carol"]
rights = {{ visible = true, calls = true, numbers = "all", pickup = true, presence = true }}

[[groups]]
name = "backoffice"
members = ["carol", "dave"]
rights = {{ visible = true, calls = true, numbers = "none", pickup = false, presence = true }}
"""

ALL_LINES = ["L201", "L202", "L203", "L204", "L205"]


class Gateway:
    """A `blf-gateway run` subprocess plus one TAPI bridge connection to it."""

    in_service = ALL_LINES  # the lines the bridge says are in service when it connects

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.bport = free_port()
        self.state = tmp / "state"
        self.state.mkdir()
        self.config = tmp / "gateway.toml"
        self.config.write_text(CONFIG.format(port=self.port, bport=self.bport, state=self.state))
        self.proc: subprocess.Popen | None = None
        self.bridge: socket.socket | None = None
        self.log = open(tmp / "gateway.log", "ab")
        self.lines: dict[str, dict] = {}  # what the bridge last said per call, replayed on restart

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(GATEWAY_BIN), *args, "--config", str(self.config)],
                              input=stdin, capture_output=True, text=True, timeout=60)

    def set_password(self, client: str, password: str) -> None:
        r = self.cli("password", client, "--stdin", stdin=password + "\n")
        assert r.returncode == 0, r.stderr

    def start(self) -> None:
        self.proc = subprocess.Popen([str(GATEWAY_BIN), "run", "--config", str(self.config)],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"gateway exited: see {self.tmp / 'gateway.log'}"
            try:
                with urllib.request.urlopen(f"{self.url}healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError("gateway did not become healthy")
        self.connect_bridge()

    def connect_bridge(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self.bridge = socket.create_connection(("127.0.0.1", self.bport), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        # Full current state first (contract section 5).
        for line in self.in_service:
            self._send({"device": line, "devstate": "inservice"})
        for msg in self.lines.values():
            self._send(msg)

    def _send(self, obj: dict) -> None:
        assert self.bridge is not None
        self.bridge.sendall((json.dumps(obj) + "\n").encode())

    def call(self, line: str, call: str, state: str, **kw) -> None:
        msg = {"device": line, "call": call, "state": state, **kw}
        if state in ("idle", "disconnected"):
            self.lines.pop(f"{line}/{call}", None)
        else:
            self.lines[f"{line}/{call}"] = msg
        self._send(msg)

    def stop(self) -> None:
        if self.bridge is not None:
            try:
                self.bridge.close()
            except OSError:
                pass
            self.bridge = None
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        self.log.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("webpanel")
    gw = Gateway(tmp)
    for client, pw in PASSWORDS.items():
        gw.set_password(client, pw)
    r = gw.cli("password", "erin", "--at-next-login")
    assert r.returncode == 0, r.stderr
    r = gw.cli("password", "frank", "--at-next-login")
    assert r.returncode == 0, r.stderr
    gw.start()
    yield gw
    gw.close()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class Frames:
    """Every WebSocket frame the page sends and receives."""

    def __init__(self, page) -> None:
        self.sent: list[str] = []
        self.received: list[str] = []
        page.on("websocket", self._ws)

    def _ws(self, ws) -> None:
        ws.on("framesent", lambda payload: self.sent.append(payload if isinstance(payload, str) else payload.decode()))
        ws.on("framereceived", lambda payload: self.received.append(payload if isinstance(payload, str) else payload.decode()))

    def sent_json(self) -> list[dict]:
        return [json.loads(f) for f in self.sent]

    def received_json(self) -> list[dict]:
        return [json.loads(f) for f in self.received]


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1920, "height": 1080})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.frames_log = Frames(pg)
    pg.js_errors = errors
    yield pg
    ctx.close()
    # A refused or dropped WebSocket is logged by chromium itself: expected in some tests.
    assert not [e for e in errors if "WebSocket connection" not in e], errors


def submit_login(page, client: str, password: str) -> None:
    """Fill in the login form the page shows and send it."""
    page.fill("#login-client", client)
    page.fill("#login-password", password)
    page.click("#login-submit")


def login(page, gw: Gateway, client: str, password: str | None = None, panels: bool = True) -> None:
    """Log in as `client` (its password in PASSWORDS unless given) and wait for the board
    (and its panels loaded, where `panels`)."""
    page.goto(gw.url)
    submit_login(page, client, password if password is not None else PASSWORDS[client])
    page.wait_for_selector("#board-view:not([hidden])", timeout=WAIT_MS)
    if panels:
        page.wait_for_selector("section.panel:not(.loading)", timeout=WAIT_MS)


def card(page, panel: str, member: str):
    return page.locator(f'section.panel[data-panel="{panel}"] li.card[data-member="{member}"]')


def wait_lamp(page, panel: str, member: str, lamp: str, timeout: float = WAIT_MS) -> None:
    page.wait_for_selector(
        f'section.panel[data-panel="{panel}"] li.card[data-member="{member}"][data-lamp="{lamp}"]',
        timeout=timeout)


# ----- tests -----------------------------------------------------------------------------


def test_wrong_password_is_refused_clearly(page, gateway):
    page.goto(gateway.url)
    submit_login(page, "alice", "not-the-password")
    msg = page.locator("#login-message")
    msg.filter(has_text="Wrong client name or password").wait_for(timeout=WAIT_MS)
    assert page.locator("#board-view").is_hidden()


def test_gateway_down_at_login(page, gateway):
    dead = free_port()
    page.goto(f"{gateway.url}?gateway=ws://127.0.0.1:{dead}/ws")
    submit_login(page, "alice", PASSWORDS["alice"])
    page.locator("#login-message").filter(has_text="Cannot reach the gateway").wait_for(timeout=WAIT_MS)


def test_login_shows_panels_monitors_and_idle_lamps(page, gateway):
    login(page, gateway, "alice")
    assert page.locator("section.panel").evaluate_all("els => els.map(e => e.dataset.panel)") == ["desk"]
    for member in ("alice", "bob", "carol"):
        wait_lamp(page, "desk", member, "idle")
    page.wait_for_selector('#monitor-grid li.card[data-device="205"][data-lamp="idle"]')
    assert page.locator("#conn").get_attribute("data-state") == "connected"
    assert page.locator('section.panel[data-panel="desk"]').get_attribute("data-seq") != ""
    # A label, not only a colour.
    assert card(page, "desk", "bob").locator(".lamp-label").inner_text() == "Idle"
    page.screenshot(path=str(gateway.tmp / "board.png"))


def test_lamps_light_change_and_clear(page, gateway):
    login(page, gateway, "alice")
    wait_lamp(page, "desk", "bob", "idle")
    gateway.call("L202", "c-bob-1", "offering", caller="0711555111", caller_name="Max Muster",
                 called="202")
    wait_lamp(page, "desk", "bob", "ringing")
    bob = card(page, "desk", "bob")
    assert bob.locator(".lamp-label").inner_text() == "Ringing"
    assert "0711555111" in bob.inner_text()
    assert "Max Muster" in bob.inner_text()
    assert "pickable" in (bob.get_attribute("class") or "")
    gateway.call("L202", "c-bob-1", "connected", caller="0711555111", called="202")
    wait_lamp(page, "desk", "bob", "busy")
    # The call timer runs.
    timer = bob.locator(".call-timer")
    first = timer.inner_text()
    assert re.fullmatch(r"\d+:\d\d", first), first
    page.wait_for_function(
        """([sel, t]) => { const e = document.querySelector(sel); return e && e.textContent !== t; }""",
        arg=['section.panel[data-panel="desk"] li.card[data-member="bob"] .call-timer', first],
        timeout=WAIT_MS)
    gateway.call("L202", "c-bob-1", "onhold", caller="0711555111", called="202")
    wait_lamp(page, "desk", "bob", "held")
    gateway.call("L202", "c-bob-1", "idle")
    wait_lamp(page, "desk", "bob", "idle")
    assert bob.locator(".call").count() == 0
    # seq on the panel moved on, never back.
    seqs = [int(json.loads(f)["seq"]) for f in page.frames_log.received
            if '"lamp"' in f and json.loads(f).get("type") == "lamp"]
    assert seqs == sorted(seqs)


def test_hidden_number_never_reaches_the_page(page, gateway):
    login(page, gateway, "carol")
    wait_lamp(page, "backoffice", "dave", "idle")
    gateway.call("L204", "c-dave-1", "offering", caller=SECRET_NUMBER, caller_name=SECRET_NAME,
                 called="204")
    wait_lamp(page, "backoffice", "dave", "ringing")
    gateway.call("L204", "c-dave-1", "connected", caller=SECRET_NUMBER, caller_name=SECRET_NAME,
                 called="204")
    wait_lamp(page, "backoffice", "dave", "busy")
    dave = card(page, "backoffice", "dave")
    assert "Number hidden" in dave.inner_text()
    html = page.content()
    assert SECRET_NUMBER not in html and SECRET_NAME not in html
    frames = "\n".join(page.frames_log.received)
    assert SECRET_NUMBER not in frames and SECRET_NAME not in frames
    assert '"lamp"' in frames  # the frames were recorded at all
    gateway.call("L204", "c-dave-1", "idle")
    wait_lamp(page, "backoffice", "dave", "idle")


def test_filter_narrows_members(page, gateway):
    login(page, gateway, "alice")
    page.fill("#filter", "bak")
    page.wait_for_function(
        """() => [...document.querySelectorAll('section.panel[data-panel="desk"] li.card')]
                 .filter(c => !c.hidden).map(c => c.dataset.member).join() === 'bob'""",
        timeout=WAIT_MS)
    page.fill("#filter", "203")
    page.wait_for_function(
        """() => [...document.querySelectorAll('section.panel[data-panel="desk"] li.card')]
                 .filter(c => !c.hidden).map(c => c.dataset.member).join() === 'carol'""",
        timeout=WAIT_MS)
    page.fill("#filter", "")
    page.wait_for_function(
        """() => [...document.querySelectorAll('section.panel[data-panel="desk"] li.card')]
                 .filter(c => !c.hidden).length === 3""", timeout=WAIT_MS)


def _pickup_frames(page) -> list[dict]:
    return [m for m in page.frames_log.sent_json() if m.get("type") == "pickup"]


def _sel(panel: str, member: str) -> str:
    return f'section.panel[data-panel="{panel}"] li.card[data-member="{member}"]'


def _outcome(page, panel: str, member: str, timeout: float = WAIT_MS) -> tuple[str, str]:
    """Wait for the pickup outcome at the lamp; returns (data-pickup, the text shown)."""
    sel = _sel(panel, member)
    page.wait_for_selector(f"{sel}[data-pickup]:not([data-pickup='pending'])", timeout=timeout)
    return (page.locator(sel).get_attribute("data-pickup"),
            page.locator(f"{sel} .pickup-result").inner_text().strip())


def _wait_announced(page, text: str) -> None:
    page.wait_for_function("t => document.getElementById('announcer').textContent.includes(t)",
                           arg=text, timeout=WAIT_MS)


def _wait_frame(page, pred, timeout: float = WAIT_MS / 1000) -> dict:
    """Playwright reports frames asynchronously: poll for one."""
    deadline = time.monotonic() + timeout
    while True:
        for m in page.frames_log.received_json():
            if pred(m):
                return m
        assert time.monotonic() < deadline, "frame not received"
        page.wait_for_timeout(50)


class RawClient:
    """A second CTI client speaking the WebSocket protocol directly (no browser)."""

    def __init__(self, ws, client: str) -> None:
        self.ws = ws
        self.n = 0
        welcome = self.request({"type": "login", "client": client, "password": PASSWORDS[client]})
        assert welcome["type"] == "welcome", welcome

    def request(self, msg: dict, timeout: float = WAIT_MS / 1000) -> dict:
        self.n += 1
        self.ws.send(json.dumps({**msg, "id": self.n}))
        return self.wait(lambda m: m.get("id") == self.n, timeout)

    def wait(self, pred, timeout: float = WAIT_MS / 1000) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            m = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if pred(m):
                return m



@contextlib.contextmanager
def raw_client(gw: Gateway, client: str):
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{gw.port}/ws", open_timeout=10) as ws:
        yield RawClient(ws, client)


def test_pickup_by_click_shows_what_to_dial(page, gateway):
    # alice's line is a TAPI phone: the gateway answers `ok`, then an `action` telling
    # her phone what to dial; the page shows it at the lamp and in the status area.
    login(page, gateway, "alice")
    gateway.call("L203", "c-carol-1", "offering", caller="0899111222", called="203")
    wait_lamp(page, "desk", "carol", "ringing")
    card(page, "desk", "carol").click()
    state, text = _outcome(page, "desk", "carol")
    reqs = _pickup_frames(page)
    assert len(reqs) == 1
    assert reqs[0]["panel"] == "desk" and reqs[0]["member"] == "carol" and reqs[0]["op"]
    action = _wait_frame(page, lambda m: m.get("type") == "action" and m.get("op") == reqs[0]["op"])
    assert action["action"] == "pickup" and action["dial"] == "**203" and action["number"] == "203"
    assert state == "dial", (state, text)
    assert text == "Dial **203 on your phone to take the call"
    assert card(page, "desk", "carol").locator(".pickup-result .dial").inner_text() == "**203"
    status = page.locator("#pickup-status")
    assert status.is_visible() and status.get_attribute("aria-live") == "polite"
    assert "Dial **203 on your phone to take the call" in status.inner_text()
    assert "Carol Chen" in status.inner_text()
    page.click("#pickup-status-close")
    status.wait_for(state="hidden", timeout=WAIT_MS)
    gateway.call("L203", "c-carol-1", "idle")
    wait_lamp(page, "desk", "carol", "idle")


def test_pickup_by_keyboard(page, gateway):
    login(page, gateway, "carol")
    gateway.call("L202", "c-bob-2", "offering", caller="0899555666", called="202")
    wait_lamp(page, "desk", "bob", "ringing")
    bob = card(page, "desk", "bob")
    bob.focus()
    assert page.evaluate("() => document.activeElement.dataset.member") == "bob"
    page.keyboard.press("Enter")
    state, text = _outcome(page, "desk", "bob")
    assert (state, text) == ("dial", "Dial **202 on your phone to take the call")
    # Said once, by the status area (a polite live region), not twice.
    page.locator("#pickup-status").filter(has_text="Dial **202 on your phone").wait_for(timeout=WAIT_MS)
    reqs = _pickup_frames(page)
    assert len(reqs) == 1 and reqs[0]["member"] == "bob" and reqs[0]["panel"] == "desk"
    gateway.call("L202", "c-bob-2", "idle")
    wait_lamp(page, "desk", "bob", "idle")


def test_pickup_lost_to_someone_else(page, gateway):
    # bob takes carol's call first over the protocol; alice's click then meets bob's claim
    # (held in Redis for pickup.claim_seconds) and gets `conflict`.
    login(page, gateway, "alice")
    gateway.call("L203", "c-carol-race", "offering", caller="0899777888", called="203")
    wait_lamp(page, "desk", "carol", "ringing")
    with raw_client(gateway, "bob") as bob:
        ok = bob.request({"type": "pickup", "panel": "desk", "member": "carol", "op": "bob-op-1"})
        assert ok["type"] == "ok", ok
        action = bob.wait(lambda m: m.get("type") == "action")
        assert action["op"] == "bob-op-1" and action["dial"] == "**203"
        card(page, "desk", "carol").click()
        state, text = _outcome(page, "desk", "carol")
        assert state == "lost", (state, text)
        assert text.startswith("Lost to someone else: ") and "bob" in text, text
        _wait_announced(page, "Lost to someone else")
        err = _wait_frame(page, lambda m: m.get("type") == "error" and m.get("code") == "conflict")
        assert err["id"] == _pickup_frames(page)[0]["id"]
        assert page.locator("#pickup-status").is_hidden()
    gateway.call("L203", "c-carol-race", "idle")
    wait_lamp(page, "desk", "carol", "idle")


def test_pickup_not_offered_without_the_right(page, gateway):
    # carol sees backoffice, whose group has no pickup right: a ringing card there offers
    # nothing, and neither click nor Enter sends a request.
    login(page, gateway, "carol")
    gateway.call("L204", "c-dave-2", "offering", caller="0899333444", called="204")
    wait_lamp(page, "backoffice", "dave", "ringing")
    dave = card(page, "backoffice", "dave")
    assert "pickable" not in (dave.get_attribute("class") or "")
    assert dave.get_attribute("role") != "button"
    assert dave.locator(".pickup-hint").is_hidden()
    assert "pick up" not in (dave.get_attribute("aria-label") or "").lower()
    dave.click()
    dave.focus()
    page.keyboard.press("Enter")
    page.keyboard.press("Space")
    # Handlers run synchronously inside the dispatched events: nothing was sent.
    assert page.evaluate("() => window.__blf.pickupsSent || 0") == 0
    assert dave.get_attribute("data-pickup") is None
    # The gateway enforces it too: a request made anyway is `forbidden`, shown as such.
    page.evaluate("""() => { const a = window.__blf.app;
        a.pickup({panel: 'backoffice', member: 'dave'}, a.board.lookup({panel: 'backoffice', member: 'dave'})); }""")
    state, text = _outcome(page, "backoffice", "dave")
    assert state == "error" and text.startswith("Not allowed"), (state, text)
    # Nothing ringing: `not_found`, "nothing to take".
    wait_lamp(page, "desk", "alice", "idle")
    page.evaluate("""() => { const a = window.__blf.app;
        a.pickup({panel: 'desk', member: 'alice'}, a.board.lookup({panel: 'desk', member: 'alice'})); }""")
    state, text = _outcome(page, "desk", "alice")
    assert state == "none" and text.startswith("Nothing to take"), (state, text)
    assert [r["member"] for r in _pickup_frames(page)] == ["dave", "alice"]
    gateway.call("L204", "c-dave-2", "idle")
    wait_lamp(page, "backoffice", "dave", "idle")


AMI_CONFIG = """
[server]
listen = "127.0.0.1:{port}"
login_attempts_per_minute = 500

[state]
dir = "{state}"

[sources.ami]
host = "127.0.0.1"
port = {ami_port}
username = "blf"
secret_file = "ami.secret"
pickup = "redirect"
context = "from-internal"

[[devices]]
id = "201"
name = "Alice line"
number = "201"
source = "ami"
line = "PJSIP/201"

[[devices]]
id = "202"
name = "Bob line"
number = "202"
source = "ami"
line = "PJSIP/202"

[[clients]]
name = "alice"
first_name = "Alice"
last_name = "Archer"
devices = ["201"]

[[clients]]
name = "bob"
first_name = "Bob"
last_name = "Baker"
devices = ["202"]

[[groups]]
name = "desk"
members = ["alice", "bob"]
rights = {{ visible = true, calls = true, numbers = "all", pickup = true, presence = true }}
"""


class AsteriskPeer:
    """tests/amipeer.py (a protocol-faithful Asterisk Manager Interface peer: Asterisk itself
    is not packaged for Debian 12) on its own event loop in a thread."""

    def __init__(self) -> None:
        import asyncio
        import threading

        sys.path.insert(0, str(ROOT / "tests"))
        from amipeer import AmiPeer

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.peer = AmiPeer(secret="s3cret")
        for n, name in (("201", "Alice"), ("202", "Bob")):
            self.peer.model.add_endpoint(f"PJSIP/{n}", n, name)
        self.port = self.run(self.peer.start())

    def run(self, coro):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def call(self, fn, *args):
        """Run a PbxModel scenario step on the peer's loop (its events go to the gateway)."""
        async def step():
            return fn(*args)
        return self.run(step())

    def close(self) -> None:
        self.run(self.peer.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def asterisk_gateway(tmp_path_factory):
    """A second gateway whose lines are Asterisk lines (AMI): pickup by the PBX."""
    tmp = tmp_path_factory.mktemp("webpanel-ami")
    ami = AsteriskPeer()
    gw = Gateway(tmp)
    gw.config.write_text(AMI_CONFIG.format(port=gw.port, state=gw.state, ami_port=ami.port))
    (tmp / "ami.secret").write_text("s3cret\n")
    gw.connect_bridge = lambda: None  # no TAPI bridge here
    for client in ("alice", "bob"):
        gw.set_password(client, PASSWORDS.get(client))
    gw.start()
    yield gw, ami
    gw.close()
    ami.close()
    shutil.rmtree(tmp, ignore_errors=True)


def test_pickup_through_asterisk_shows_the_result(page, asterisk_gateway):
    # alice's line is an Asterisk line: the PBX carries the pickup out (Redirect) and the
    # gateway answers `ok`, then `pickup_result`.
    gw, ami = asterisk_gateway
    login(page, gw, "alice")
    wait_lamp(page, "desk", "bob", "idle", timeout=WAIT_MS)
    ami.call(ami.peer.model.external_call, "+4930555", "Customer", "202")
    wait_lamp(page, "desk", "bob", "ringing")
    card(page, "desk", "bob").click()
    state, text = _outcome(page, "desk", "bob")
    result = _wait_frame(page, lambda m: m.get("type") == "pickup_result")
    assert result["ok"] is True and result["by"] == "alice", result
    assert (state, text) == ("taken", "Taken: the call is coming to your phone")
    _wait_announced(page, "Taken")
    # The lamps move as the PBX reports it: the call now rings at alice's phone.
    wait_lamp(page, "desk", "bob", "idle")
    wait_lamp(page, "desk", "alice", "ringing")
    assert "Redirect" in [a for a, _ in ami.peer.actions]


def test_password_transfer_is_shown_once(page, gateway):
    # erin was marked --at-next-login: that login is not checked and carries the password.
    login(page, gateway, "erin", password="anything", panels=False)
    assert page.locator("#no-panels").is_visible()
    dialog = page.locator("#password-dialog")
    dialog.wait_for(state="visible", timeout=WAIT_MS)
    shown = page.locator("#pw-value").inner_text().strip()
    welcome = next(m for m in page.frames_log.received_json() if m.get("type") == "welcome")
    assert welcome.get("password") and shown == welcome["password"]
    page.click("#pw-ok")
    dialog.wait_for(state="hidden", timeout=WAIT_MS)
    # Shown once: gone from the page after it is acknowledged.
    page.wait_for_function("() => document.getElementById('pw-value').textContent === ''", timeout=WAIT_MS)


def test_first_login_with_an_empty_password_field(page, gateway):
    # frank was marked --at-next-login and has no password yet: he leaves the field empty,
    # the page sends no `password` at all, and he is shown the one the gateway made for him.
    login(page, gateway, "frank", password="", panels=False)
    page.locator("#password-dialog").wait_for(state="visible", timeout=WAIT_MS)
    sent = [m for m in page.frames_log.sent_json() if m.get("type") == "login"]
    assert len(sent) == 1 and "password" not in sent[0] and "token" not in sent[0], sent
    shown = page.locator("#pw-value").inner_text().strip()
    assert len(shown) >= 12
    page.click("#pw-ok")
    # The mark is used up: an empty field now gets the ordinary refusal.
    page.click("#logout")
    submit_login(page, "frank", "")
    page.locator("#login-message").filter(has_text="Wrong client name or password").wait_for(
        timeout=WAIT_MS)
    # And the password he was shown works.
    page.fill("#login-password", shown)
    page.click("#login-submit")
    page.wait_for_selector("#board-view:not([hidden])", timeout=WAIT_MS)


def _drop_connection_with_pickup_in_flight(page, panel: str, member: str) -> None:
    """Click-equivalent pickup, then the socket drops in the same instant: the request has
    left, its answer never arrives on this connection."""
    page.evaluate("""([panel, member]) => { const a = window.__blf.app;
        const target = {panel, member};
        a.pickup(target, a.board.lookup(target));
        a.conn.ws.close(); }""", [panel, member])


def test_pickup_in_flight_is_resent_after_a_reconnect(page, gateway):
    login(page, gateway, "alice")
    gateway.call("L203", "c-carol-drop", "offering", caller="0899000111", called="203")
    wait_lamp(page, "desk", "carol", "ringing")
    _drop_connection_with_pickup_in_flight(page, "desk", "carol")
    page.wait_for_function("() => window.__blf.reconnects >= 1", timeout=WAIT_MS)
    state, text = _outcome(page, "desk", "carol")
    assert (state, text) == ("dial", "Dial **203 on your phone to take the call"), (state, text)
    reqs = _pickup_frames(page)
    # Sent twice, with one op: the gateway answered the repeat from what it recorded.
    assert len(reqs) == 2 and reqs[0]["op"] == reqs[1]["op"], reqs
    op = reqs[0]["op"]
    log = (gateway.tmp / "gateway.log").read_text()
    assert log.count(f"pickup {op} by alice") == 1, "carried out more than once"
    gateway.call("L203", "c-carol-drop", "idle")
    wait_lamp(page, "desk", "carol", "idle")


def test_pickup_in_flight_shows_unknown_when_the_gateway_stays_away(page, gateway):
    login(page, gateway, "alice")
    page.evaluate("() => { window.__blf.pickupResendMs = 600; }")
    gateway.call("L202", "c-bob-drop", "offering", caller="0899000222", called="202")
    wait_lamp(page, "desk", "bob", "ringing")
    # The gateway is unreachable from now on (the page's reconnects are refused).
    real_url = page.evaluate("() => window.__blf.app.url")
    page.evaluate("d => { window.__blf.app.url = d; }", f"ws://127.0.0.1:{free_port()}/ws")
    _drop_connection_with_pickup_in_flight(page, "desk", "bob")
    state, text = _outcome(page, "desk", "bob")
    assert state == "unknown", (state, text)
    assert text.startswith("Connection lost: whether the pickup happened is unknown"), text
    _wait_announced(page, "whether the pickup happened is unknown")
    # Back: the stale answer is not acted on (the pickup is not sent again).
    page.evaluate("u => { window.__blf.app.url = u; window.__blf.app._retryNow(); }", real_url)
    page.wait_for_function("() => window.__blf.connState === 'connected'", timeout=WAIT_MS)
    assert len(_pickup_frames(page)) == 1
    gateway.call("L202", "c-bob-drop", "idle")
    wait_lamp(page, "desk", "bob", "idle")


def test_reload_resumes_the_session_with_the_token(page, gateway):
    login(page, gateway, "alice")
    page.reload()
    page.wait_for_selector("section.panel:not(.loading)", timeout=WAIT_MS)
    logins = [m for m in page.frames_log.sent_json() if m.get("type") == "login"]
    assert "password" in logins[0] and "token" in logins[-1] and "password" not in logins[-1]
    page.click("#logout")
    page.wait_for_selector("#login-view:not([hidden])")
    page.reload()
    page.wait_for_selector("#login-view:not([hidden])")
    assert page.locator("#board-view").is_hidden()


def test_gateway_restart_reconnects_without_reload(page, gateway):
    login(page, gateway, "alice")
    wait_lamp(page, "desk", "bob", "idle")
    gateway.call("L202", "c-bob-3", "connected", caller="0711000333", called="202")
    wait_lamp(page, "desk", "bob", "busy")
    page.evaluate("() => { window.__noReload = 'still here'; }")
    seq_before = int(page.locator('section.panel[data-panel="desk"]').get_attribute("data-seq"))

    gateway.stop()
    page.wait_for_function("() => ['reconnecting', 'offline'].includes(window.__blf.connState)",
                           timeout=WAIT_MS)
    # The old state stays on screen, marked stale, never blank.
    page.wait_for_selector('section.panel[data-panel="desk"].stale', timeout=WAIT_MS)
    # (On shutdown the gateway may first publish `unknown`: its bridge went away. Either way
    # the card stays, with the last thing the gateway said.)
    assert page.locator('section.panel[data-panel="desk"] li.card').count() == 3
    assert card(page, "desk", "bob").get_attribute("data-lamp") in ("busy", "unknown")
    assert page.locator("#banner").is_visible()
    page.screenshot(path=str(gateway.tmp / "reconnecting.png"))

    # While it is down the calls change: bob's ends, alice's line rings.
    gateway.lines.pop("L202/c-bob-3", None)
    gateway.lines["L201/c-alice-1"] = {"device": "L201", "call": "c-alice-1", "state": "offering",
                                       "caller": "0711000444", "called": "201"}
    gateway.start()
    page.wait_for_function("() => window.__blf.connState === 'connected'", timeout=WAIT_MS)
    wait_lamp(page, "desk", "bob", "idle", timeout=WAIT_MS)
    wait_lamp(page, "desk", "alice", "ringing", timeout=WAIT_MS)
    page.wait_for_selector('section.panel[data-panel="desk"]:not(.stale)', timeout=WAIT_MS)
    assert page.evaluate("() => window.__noReload") == "still here"
    assert page.locator("#banner").is_hidden()
    # Re-logged in with the token, resubscribed with since.
    sent = page.frames_log.sent_json()
    logins = [m for m in sent if m.get("type") == "login"]
    assert len(logins) >= 2 and "token" in logins[-1] and "password" not in logins[-1]
    subs = [m for m in sent if m.get("type") == "subscribe" and m.get("panel") == "desk"]
    assert len(subs) >= 2 and subs[-1].get("since", -1) >= seq_before
    gateway.call("L201", "c-alice-1", "idle")
    wait_lamp(page, "desk", "alice", "idle")
