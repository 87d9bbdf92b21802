"""Browsers may open a session only from allowed origins ([server] allowed_origins).

A page served by a second local HTTP server (another origin) tries to open a WebSocket to the
gateway in a real chromium, as a malicious page on another site would in a user's browser.
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import free_port, wait_port
from gateway.auth import hash_password

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
playwright_sync = pytest.importorskip("playwright.sync_api")
if not os.path.exists(CHROMIUM):
    pytest.skip("needs /usr/bin/chromium (apt-get install -y chromium)", allow_module_level=True)

PW = "origin test password"

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
{extra}

[redis]
url = "{redis}"

[[clients]]
name = "alice"
password_hash = "{hash}"
"""

# What the page tries: open a session and log in; the result says how far it got.
TRY = """(url) => new Promise(resolve => {
  const ws = new WebSocket(url);
  ws.onopen = () => ws.send(JSON.stringify({type: "login", id: 1, client: "alice",
                                            password: "%s"}));
  ws.onmessage = (e) => { resolve("session:" + JSON.parse(e.data).type); ws.close(); };
  ws.onclose = (e) => resolve("closed:" + e.code);
})""" % PW


class OtherSite:
    """A second origin: a plain HTTP server with one empty page."""

    def __init__(self, root: Path) -> None:
        (root / "index.html").write_text("<!doctype html><title>elsewhere</title>")
        handler = lambda *a: http.server.SimpleHTTPRequestHandler(  # noqa: E731
            *a, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()


def test_only_allowed_origins_open_a_session(tmp_path, redis_url):
    port = free_port()
    hashed = hash_password(PW, n=2**10)
    cfg = tmp_path / "gw.toml"
    cfg.write_text(CONFIG.format(port=port, redis=redis_url, hash=hashed, extra=""))
    gw_bin = Path(sys.executable).with_name("blf-gateway")
    (tmp_path / "site").mkdir()
    site = OtherSite(tmp_path / "site")
    log = open(tmp_path / "gateway.log", "wb")
    proc = subprocess.Popen([str(gw_bin), "run", "--config", str(cfg)], stdout=log,
                            stderr=subprocess.STDOUT)
    ws_url = f"ws://127.0.0.1:{port}/ws"
    try:
        wait_port(port)
        with playwright_sync.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                        headless=True)
            page = browser.new_page()
            # From the gateway's own origin (the switchboard's page): allowed by default.
            page.goto(f"http://127.0.0.1:{port}/")
            assert page.evaluate(TRY, ws_url) == "session:welcome"
            # From another site: the upgrade is refused, no session.
            page.goto(f"{site.origin}/index.html")
            assert page.evaluate(TRY, ws_url) == "closed:1006"

            # The admin allows that site; the gateway picks the change up live.
            cfg.write_text(CONFIG.format(port=port, redis=redis_url, hash=hashed,
                                         extra=f'allowed_origins = ["{site.origin}"]'))
            deadline = time.monotonic() + 10
            result = None
            while time.monotonic() < deadline:
                result = page.evaluate(TRY, ws_url)
                if result == "session:welcome":
                    break
                time.sleep(0.3)
            assert result == "session:welcome"
            # ... and now only that site: the gateway's own page is not on the list.
            page.goto(f"http://127.0.0.1:{port}/")
            assert page.evaluate(TRY, ws_url) == "closed:1006"
            browser.close()
    finally:
        site.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        log.close()
    text = (tmp_path / "gateway.log").read_text()
    assert f"origin {site.origin} refused" in text
