"""DOM throughput of web_panel/: 500 members, 100 lamp changes a second.

Uses the stand-in gateway of mock_gateway.py (same wire protocol, no line sources) so the
measurement is about the page alone. Prints the figures it measured.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

playwright_sync = pytest.importorskip("playwright.sync_api")
if not os.path.exists("/usr/bin/chromium"):
    pytest.skip("needs /usr/bin/chromium", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent))
from mock_gateway import MockGateway  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MockThread:
    def __init__(self, members: int) -> None:
        from websockets.asyncio.server import serve

        self.port = free_port()
        self.gw = MockGateway(members=members)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def main() -> None:
            self.server = await serve(self.gw.handler, "127.0.0.1", self.port,
                                      process_request=self.gw.process_request)
            ready.set()
            await self.server.wait_closed()

        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def burst(self, rate: float, seconds: float) -> int:
        async def run() -> int:
            n = int(rate * seconds)
            start = time.monotonic()
            for i in range(n):
                self.gw.random_change()
                delay = start + (i + 1) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            return n

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(seconds + 30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.thread.join(10)


def test_500_members_at_100_changes_per_second():
    mock = MockThread(members=250)  # two panels of 250
    try:
        with playwright_sync.sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, headless=True)
            page = b.new_page(viewport={"width": 1920, "height": 1080})
            page.goto(f"http://127.0.0.1:{mock.port}/")
            page.fill("#login-client", "alice")
            page.fill("#login-password", "secret")
            page.click("#login-submit")
            page.wait_for_selector("section.panel:not(.loading)")
            assert page.locator("li.card[data-member]").count() == 500
            page.evaluate("() => { __blf.applied.length = 0; __blf.flushes = 0; }")
            sent = mock.burst(rate=100, seconds=6)
            final = mock.gw.seq
            t_end = time.monotonic()
            page.wait_for_function(
                "(s) => Math.max(...__blf.applied.map(a => a[0])) >= s", arg=final, timeout=10000)
            lag_after_last = time.monotonic() - t_end
            applied = page.evaluate("() => __blf.applied")
            flushes = page.evaluate("() => __blf.flushes")
            # Every member shows exactly its latest lamp.
            mismatches = page.evaluate(
                """(want) => Object.entries(want).filter(([k, lamp]) => {
                       const [panel, member] = k.split('/');
                       const el = document.querySelector(`section.panel[data-panel="${panel}"] li.card[data-member="${member}"]`);
                       return !el || el.dataset.lamp !== lamp; }).length""",
                {f"{p}/{m}": v["lamp"] for p, ms in mock.gw.panels.items() for m, v in ms.items()})
            b.close()
        lat = sorted(a[2] - a[1] for a in applied)
        p50 = statistics.median(lat)
        p95 = lat[int(len(lat) * 0.95) - 1]
        print(f"\nchanges sent {sent}, cards written {len(applied)}, flushes {flushes}, "
              f"receive->DOM p50 {p50:.1f} ms p95 {p95:.1f} ms max {lat[-1]:.1f} ms, "
              f"last change on screen {lag_after_last * 1000:.0f} ms after it was sent")
        assert mismatches == 0
        assert len(applied) <= sent  # one write per change at most (coalesced per frame)
        assert flushes < sent        # batched in animation frames, not one per message
        assert p95 < 100, p95
    finally:
        mock.close()
