"""Make docs/screenshots/board.png, board-tablet.png and admin.png from `blf-gateway demo`.

    .venv/bin/python docs/screenshots/make_screenshots.py [NAME.png ...]

Runs the demo (its own process, temporary state), logs in as alice / alice-demo in headless
chromium and waits until the simulated office has several lamps ringing and busy; for the
admin view, as mallory / mallory-demo, with the story of a ringing line. Names given: only
those pictures.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BUSY_ENOUGH = """() => {
  const cards = [...document.querySelectorAll('section.panel:not([hidden]) li.card')];
  const n = (l) => cards.filter(c => c.dataset.lamp === l).length;
  return n('ringing') >= 2 && n('busy') >= 3 && (n('held') + n('outgoing')) >= 1;
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="blf-shots-"))
    port, bport = free_port(), free_port()
    demo = subprocess.Popen(
        [str(Path(sys.executable).with_name("blf-gateway")), "demo", "--state", str(tmp / "demo"),
         "--listen", f"127.0.0.1:{port}", "--bridge", f"127.0.0.1:{bport}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                if demo.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the demo did not start")
                time.sleep(0.3)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            wanted = set(sys.argv[1:]) or {"board.png", "board-tablet.png", "admin.png"}
            for name, viewport in (("board.png", (1920, 1080)), ("board-tablet.png", (1024, 768))):
                if name not in wanted:
                    continue
                ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                          reduced_motion="reduce")
                page = ctx.new_page()
                page.goto(f"http://127.0.0.1:{port}/")
                page.fill("#login-client", "alice")
                page.fill("#login-password", "alice-demo")
                page.click("#login-submit")
                page.wait_for_selector("section.panel:not(.loading)", timeout=20000)
                page.wait_for_function(BUSY_ENOUGH, timeout=120000, polling=250)
                page.wait_for_timeout(300)  # let the call timers tick once
                page.screenshot(path=str(HERE / name))
                ctx.close()
                print(HERE / name, (HERE / name).stat().st_size, "bytes")
            if "admin.png" in wanted:
                ctx = browser.new_context(viewport={"width": 1920, "height": 1080},
                                          reduced_motion="reduce")
                page = ctx.new_page()
                page.goto(f"http://127.0.0.1:{port}/")
                page.fill("#login-client", "mallory")
                page.fill("#login-password", "mallory-demo")
                page.click("#login-submit")
                page.wait_for_selector("#admin-toggle:not([hidden])", timeout=20000)
                page.click("#admin-toggle")
                ringing = '#admin-devices li[data-lamp="ringing"]'
                page.wait_for_selector(ringing, timeout=120000)
                page.click(ringing)
                page.wait_for_selector("#admin-explain:not([hidden])", timeout=10000)
                page.screenshot(path=str(HERE / "admin.png"))
                ctx.close()
                print(HERE / "admin.png", (HERE / "admin.png").stat().st_size, "bytes")
            browser.close()
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGTERM)
            try:
                demo.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
