"""Browser switchboard under load: bridge line -> lamp in the page's DOM, 500 members.

    .venv/bin/python bench/web_panel_load.py [--members 500] [--rate 100] [--seconds 60]

A benchmark, not a test. On this machine it runs:

1. the gateway (`python -m gateway run --config FILE`, its own process, embedded Redis,
   the TAPI bridge source) with one panel of MEMBERS members, each with one line;
2. headless chromium (Playwright, /usr/bin/chromium) opening the web panel at 1920x1080,
   logging in as a member of that panel and waiting for all cards;
3. a TAPI bridge connection (plain TCP, contract section 5) sending RATE changes a second for
   SECONDS seconds. Each change moves one random line one step through
   offering (a unique caller number) -> connected -> disconnected, so each lamp frame the page
   gets is known: by its caller number, or (idle) as the end of the line's last call.

In the page (window.__blf hooks of web_panel/board.js): `trace` records when each lamp frame
was handed to the page (performance.now() at `applyLamp`), `applied` when its card was
written (the requestAnimationFrame flush that put it in the DOM). The bench stamps each
bridge line with time.time() just before writing it; the page's clock is
performance.timeOrigin + performance.now(), the same machine clock. So:

- send -> DOM: bridge line written -> card written (gateway, network, the page's JS, and the
  wait for the next animation frame);
- send -> page: bridge line written -> frame handled by the page's JS;
- page -> DOM: frame handled -> card written.

Per 10 s window it prints the latencies and whether a backlog grows: changes sent but not
yet in the DOM at the window's end, and the page's main-thread stalls (long tasks).
A reference Python WebSocket client watching the same panel shows the gateway's share.

A run on the 2-core development machine (`.venv/bin/python bench/web_panel_load.py`):

    web panel under load: 500 members, 100 changes/s for 60 s, headless chromium 1920x1080, 2 CPUs
    board of 500 cards shown 0.3 s after the login click; page clock vs bench clock: +0.0 ms (one round trip)
    bridge lines sent 6000 (driver at most 41 ms behind schedule); lamp frames in the page 5999, matched 5999, unmatched 0; reached the DOM 5999; no frame of their own 1 (superseded by a newer state of the line: 1)
    at the end, cards showing the line's last state: 500 of 500 lines changed

       window  sent in DOM | send->DOM p50    p95    max | send->page p50    p95 | page->DOM p50    p95 | behind dirty long tasks
    -----------------------------------------------------------------------------------------------------------------------------
       0-10 s  1000   1000 |       10.2 ms   34.9   79.2 |         3.0 ms   17.8 |        7.7 ms   17.8 |      0     0          0
      10-20 s  1000    999 |       13.9 ms   67.6  200.8 |         6.0 ms   40.0 |        7.3 ms   33.9 |      0     0  9 (95 ms)
      20-30 s  1000   1000 |       16.1 ms   73.7  215.6 |         8.9 ms   54.7 |        6.4 ms   26.7 |      1     0 9 (129 ms)
      30-40 s  1000   1000 |       12.6 ms   40.1   88.7 |         4.3 ms   22.7 |        7.4 ms   17.1 |      1     1  6 (74 ms)
      40-50 s  1000   1000 |       14.1 ms   42.3  133.8 |         5.1 ms   24.8 |        6.9 ms   17.6 |      0     0  7 (92 ms)
      50-60 s  1000   1000 |       14.1 ms   40.2   87.1 |         5.0 ms   23.2 |        7.6 ms   17.6 |      1     0  4 (68 ms)
          all  6000   5999 |       13.4 ms   50.2  215.6 |         5.0 ms   33.3 |        7.2 ms   19.8 |      0     0 36 (129 ms)

    send->DOM over the run: p50 13.4 ms, p95 50.2 ms (send->page p50 5.0 / p95 33.3 ms; page->DOM p50 7.2 / p95 19.8 ms)
    reference: the same frames to a plain Python WebSocket client on this machine (no browser): 5999 frames, send->client p50 1.5 ms, p95 6.9 ms
    'behind': changes sent before the window's end not yet in the DOM at its end (in flight); 'dirty': cards waiting for the next flush at the last sample
    keeps up: YES (every change reached the DOM or was superseded, and every card ends on its line's last state: True; no growth of latency or backlog across windows: True)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.auth import hash_password  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PANEL = "floor"
VIEWER = "op"
PASSWORD = "bench-password-1"
WINDOW_S = 10.0

# Long tasks (main thread busy > 50 ms), recorded from the start of the page.
INIT_SCRIPT = """
window.__blfLong = [];
try {
  new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__blfLong.push([e.startTime, e.duration]); })
    .observe({ type: 'longtask', buffered: true });
} catch (_) {}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def line_of(i: int) -> str:
    return f"L{5000 + i}"


def config_text(port: int, bport: int, state: Path, members: int) -> str:
    out = [f'[server]\nlisten = "127.0.0.1:{port}"\nlogin_attempts_per_minute = 1000\n',
           f'[state]\ndir = "{state}"\n', f'[sources.tapi_bridge]\nlisten = "127.0.0.1:{bport}"\n']
    for i in range(members):
        out.append(f'[[devices]]\nid = "{5000 + i}"\nname = "Line {5000 + i}"\n'
                   f'number = "{5000 + i}"\nline = "{line_of(i)}"\n')
    pw = hash_password(PASSWORD, n=2**12)
    out.append(f'[[clients]]\nname = "{VIEWER}"\nfirst_name = "Operator"\n'
               f'password_hash = "{pw}"\ndevices = ["5000"]\n')
    for i in range(1, members):
        out.append(f'[[clients]]\nname = "m{i:03d}"\nfirst_name = "Member"\nlast_name = "{i:03d}"\n'
                   f'devices = ["{5000 + i}"]\n')
    names = [VIEWER] + [f"m{i:03d}" for i in range(1, members)]
    out.append(f'[[groups]]\nname = "{PANEL}"\nmembers = {json.dumps(names)}\n'
               'rights = { visible = true, calls = true, numbers = "all", pickup = true, '
               'presence = true }\n')
    return "\n".join(out)


def member_of(i: int) -> str:
    return VIEWER if i == 0 else f"m{i:03d}"


class Driver(threading.Thread):
    """The TAPI bridge: RATE changes a second, each stamped with time.time() when written."""

    STEPS = ("offering", "connected", "disconnected")

    def __init__(self, sock: socket.socket, members: int, rate: float, seconds: float) -> None:
        super().__init__(daemon=True)
        self.sock, self.members, self.rate, self.seconds = sock, members, rate, seconds
        self.step = [2] * members          # index into STEPS of the last thing sent (2: idle)
        self.cycle = [0] * members
        self.sent: list[tuple[float, int, str, str | None]] = []  # (t, line, state, caller)
        self.t0 = 0.0
        self.late_max = 0.0
        self.rng = random.Random(5)

    def run(self) -> None:
        n = int(self.rate * self.seconds)
        self.t0 = time.time() + 0.2
        for k in range(n):
            due = self.t0 + k / self.rate
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)
            else:
                self.late_max = max(self.late_max, -wait)
            i = self.rng.randrange(self.members)
            s = (self.step[i] + 1) % 3
            self.step[i] = s
            state = self.STEPS[s]
            msg = {"device": line_of(i), "call": f"c{i}-{self.cycle[i]}", "state": state}
            caller = None
            if state != "disconnected":
                caller = f"+49{i:03d}{self.cycle[i]:06d}"  # unique per call
                msg.update(caller=caller, called=str(5000 + i))
            else:
                self.cycle[i] += 1
            data = (json.dumps(msg) + "\n").encode()
            t = time.time()
            self.sock.sendall(data)
            self.sent.append((t, i, state, caller))


class RawWatcher(threading.Thread):
    """A reference CTI client without a browser: the same login and panel over a plain
    WebSocket (Python), stamping each lamp frame with time.time() on arrival."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.got: list[tuple[float, str, str, str | None]] = []  # (t, member, lamp, remote)
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        from websockets.sync.client import connect

        with connect(f"ws://127.0.0.1:{self.port}/ws", open_timeout=10, compression=None) as ws:
            ws.send(json.dumps({"type": "login", "id": 1, "client": VIEWER, "password": PASSWORD}))
            ws.send(json.dumps({"type": "subscribe", "id": 2, "panel": PANEL}))
            while not self.stop.is_set():
                try:
                    raw = ws.recv(timeout=0.5)
                except TimeoutError:
                    continue
                t = time.time()
                m = json.loads(raw)
                if m.get("type") == "snapshot":
                    self.ready.set()
                elif m.get("type") == "lamp":
                    c = m["calls"][0]["remote"] if m.get("calls") else None
                    self.got.append((t, f"{m['panel']}/{m['member']}", m["lamp"], c))


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=500)
    ap.add_argument("--rate", type=float, default=100.0, help="lamp changes a second")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--reduced-motion", action="store_true",
                    help="emulate prefers-reduced-motion (no ringing animation)")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="blf-webload-"))
    port, bport = free_port(), free_port()
    state = tmp / "state"
    state.mkdir()
    cfg = tmp / "gateway.toml"
    cfg.write_text(config_text(port, bport, state, args.members))
    log = open(tmp / "gateway.log", "ab")
    gw = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(cfg)],
                          cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if gw.poll() is not None:
                raise SystemExit(f"gateway exited: see {tmp / 'gateway.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("gateway did not become healthy")
            time.sleep(0.2)
        bridge = socket.create_connection(("127.0.0.1", bport), timeout=10)
        bridge.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        bridge.sendall("".join(json.dumps({"device": line_of(i), "devstate": "inservice"}) + "\n"
                               for i in range(args.members)).encode())

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_context(viewport={"width": 1920, "height": 1080}).new_page()
            page.add_init_script(INIT_SCRIPT)
            if args.reduced_motion:
                page.emulate_media(reduced_motion="reduce")
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{port}/")
            page.fill("#login-client", VIEWER)
            page.fill("#login-password", PASSWORD)
            t_login = time.monotonic()
            page.click("#login-submit")
            page.wait_for_function(
                f"""() => document.querySelectorAll(
                      'section.panel[data-panel="{PANEL}"] li.card[data-lamp="idle"]').length === {args.members}""",
                timeout=60000, polling=100)
            t_board = time.monotonic() - t_login
            # Clock check: the page's clock against ours, both read within one round trip.
            a = time.time()
            page_now = page.evaluate("() => performance.timeOrigin + performance.now()") / 1000
            b = time.time()
            clock_skew_ms = (page_now - (a + b) / 2) * 1000
            origin = page.evaluate("() => performance.timeOrigin") / 1000
            page.evaluate("() => { window.__blf.trace = []; window.__blf.applied.length = 0; window.__blfLong.length = 0; }")

            raw = RawWatcher(port)
            raw.start()
            if not raw.ready.wait(30):
                raise SystemExit("the reference client got no snapshot")
            driver = Driver(bridge, args.members, args.rate, args.seconds)
            trace: list = []
            applied: list = []
            longs: list = []
            samples: list[tuple[float, int, int]] = []  # (t, dirty cards, lamp frames received)

            def drain() -> None:
                t, ap_, lg, dirty, received = page.evaluate(
                    """() => { const h = window.__blf; const t = h.trace; h.trace = [];
                               const a = h.applied.splice(0); const l = window.__blfLong.splice(0);
                               return [t, a, l, h.board.dirty.size, h.received]; }""")
                trace.extend(t)
                applied.extend(ap_)
                longs.extend(lg)
                samples.append((time.time(), dirty, received))

            driver.start()
            while driver.is_alive():
                driver.join(1.0)
                drain()
            # Let the last changes arrive (bounded), then collect.
            page.wait_for_timeout(1500)
            drain()
            final_dom = page.evaluate(
                f"""() => Object.fromEntries([...document.querySelectorAll(
                      'section.panel[data-panel="{PANEL}"] li.card')].map(c => [c.dataset.member, c.dataset.lamp]))""")
            raw.stop.set()
            raw.join(5)
            browser.close()
    finally:
        if gw.poll() is None:
            os.killpg(gw.pid, signal.SIGTERM)
            try:
                gw.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(gw.pid, signal.SIGKILL)
        log.close()

    # ---- match: every bridge line -> the frame it caused -> the flush that showed it --------
    to_wall = lambda ms: origin + ms / 1000.0  # noqa: E731
    sent_at: dict[tuple, float] = {}
    line_caller: dict[int, str | None] = {}
    for t, i, st, caller in driver.sent:
        key = f"{PANEL}/{member_of(i)}"
        if st == "disconnected":
            sent_at[(key, "end", line_caller.get(i))] = t
        else:
            line_caller[i] = caller
            sent_at[(key, st, caller)] = t
    # Flushes per card key, in order: (seq, inDom)
    flushes: dict[str, list[tuple[int, float]]] = {}
    for seq, _trecv, indom, key in applied:
        flushes.setdefault(key, []).append((seq, indom))
    last_caller: dict[str, str | None] = {}
    rows = []  # (sent_t, recv_t, dom_t)
    unmatched = 0
    import bisect
    flush_seqs = {k: [s for s, _ in v] for k, v in flushes.items()}
    for recv_ms, key, seq, lamp, remote in trace:
        if lamp == "idle":
            ident = (key, "end", last_caller.get(key))
        else:
            last_caller[key] = remote
            ident = (key, {"ringing": "offering", "busy": "connected"}.get(lamp, lamp), remote)
        t_sent = sent_at.get(ident)
        if t_sent is None:
            unmatched += 1
            continue
        seqs = flush_seqs.get(key, [])
        j = bisect.bisect_left(seqs, seq)
        dom = to_wall(flushes[key][j][1]) if j < len(seqs) else None
        rows.append((t_sent, to_wall(recv_ms), dom))

    # The reference client, matched the same way.
    raw_ms: list[float] = []
    last_caller = {}
    for t, key, lamp, remote in raw.got:
        if lamp == "idle":
            ident = (key, "end", last_caller.get(key))
        else:
            last_caller[key] = remote
            ident = (key, {"ringing": "offering", "busy": "connected"}.get(lamp, lamp), remote)
        if ident in sent_at:
            raw_ms.append((t - sent_at[ident]) * 1000)

    # A change without a frame of its own is fine if a newer state of that line followed it
    # (a lamp frame carries the whole state; the gateway may merge changes a moment apart).
    got = set()
    last_caller = {}
    for _r, key, _seq, lamp, remote in trace:
        if lamp == "idle":
            got.add((key, "end", last_caller.get(key)))
        else:
            last_caller[key] = remote
            got.add((key, {"ringing": "offering", "busy": "connected"}.get(lamp, lamp), remote))
    missing = [ident for ident in sent_at if ident not in got]
    last_sent: dict[int, str] = {}
    for _t, i, st, _c in driver.sent:
        last_sent[i] = st
    want = {member_of(i): {"offering": "ringing", "connected": "busy", "disconnected": "idle"}[st]
            for i, st in last_sent.items()}
    wrong_final = sorted(m for m, lamp in want.items() if final_dom.get(m) != lamp)
    superseded = [k for k in missing if k[0].split("/", 1)[1] not in wrong_final]

    n_sent = len(driver.sent)
    n_expect = n_sent - len(superseded)
    matched = len(rows)
    in_dom = [r for r in rows if r[2] is not None]
    print(f"\nweb panel under load: {args.members} members, {args.rate:g} changes/s for "
          f"{args.seconds:g} s, headless chromium 1920x1080, {os.cpu_count()} CPUs")
    print(f"board of {args.members} cards shown {t_board:.1f} s after the login click; "
          f"page clock vs bench clock: {clock_skew_ms:+.1f} ms (one round trip)")
    print(f"bridge lines sent {n_sent} (driver at most {driver.late_max * 1000:.0f} ms behind "
          f"schedule); lamp frames in the page {len(trace)}, matched {matched}, "
          f"unmatched {unmatched}; reached the DOM {len(in_dom)}; "
          f"no frame of their own {len(missing)} (superseded by a newer state of the line: "
          f"{len(superseded)})")
    print(f"at the end, cards showing the line's last state: {len(want) - len(wrong_final)} of "
          f"{len(want)} lines changed" + (f"; WRONG: {wrong_final[:10]}" if wrong_final else ""))
    if errors:
        print("page errors:", errors[:5])

    hdr = (f"{'window':>9} {'sent':>5} {'in DOM':>6} | {'send->DOM p50':>13} {'p95':>6} {'max':>6} | "
           f"{'send->page p50':>14} {'p95':>6} | {'page->DOM p50':>13} {'p95':>6} | "
           f"{'behind':>6} {'dirty':>5} {'long tasks':>10}")
    print()
    print(hdr)
    print("-" * len(hdr))
    t0 = driver.t0
    nwin = int((args.seconds + WINDOW_S - 1e-9) // WINDOW_S)
    windows = [(t0 + k * WINDOW_S, t0 + (k + 1) * WINDOW_S) for k in range(nwin)]
    all_e2e, all_net, all_dom = [], [], []
    verdict_rows = []
    for a, b in windows + [(t0, t0 + args.seconds + 10)]:
        total = (a, b) == (t0, t0 + args.seconds + 10)
        rs = [r for r in in_dom if a <= r[0] < b]
        e2e = [(r[2] - r[0]) * 1000 for r in rs]
        net = [(r[1] - r[0]) * 1000 for r in rs]
        dom = [(r[2] - r[1]) * 1000 for r in rs]
        sent = sum(1 for s in driver.sent if a <= s[0] < b)
        if total:
            label, behind, dirty = "all", n_expect - len(in_dom), samples[-1][1] if samples else 0
        else:
            label = f"{a - t0:>3.0f}-{b - t0:<3.0f}s"
            # sent before the window's end but not in the DOM by then
            behind = (sum(1 for s in driver.sent if s[0] < b) - sum(1 for r in in_dom if r[2] < b)
                      - sum(1 for k in superseded if sent_at[k] < b))
            near = [s for s in samples if s[0] <= b]
            dirty = near[-1][1] if near else 0
            verdict_rows.append((label, pct(e2e, 50), pct(e2e, 95), behind))
        lt = [d for st, d in longs if a <= to_wall(st) < b]
        lts = f"{len(lt)} ({max(lt):.0f} ms)" if lt else "0"
        print(f"{label:>9} {sent:>5} {len(rs):>6} | {pct(e2e, 50):>10.1f} ms {pct(e2e, 95):>6.1f} "
              f"{max(e2e) if e2e else float('nan'):>6.1f} | {pct(net, 50):>11.1f} ms {pct(net, 95):>6.1f} | "
              f"{pct(dom, 50):>10.1f} ms {pct(dom, 95):>6.1f} | {behind:>6} {dirty:>5} {lts:>10}")
        if total:
            all_e2e, all_net, all_dom = e2e, net, dom
    print()
    p95s = [r[2] for r in verdict_rows]
    behinds = [r[3] for r in verdict_rows]
    growing = len(p95s) >= 2 and (p95s[-1] > 2 * max(p95s[0], 20) or behinds[-1] > max(20, 3 * behinds[0]))
    all_shown = n_expect - len(in_dom) == 0 and not wrong_final
    print(f"send->DOM over the run: p50 {pct(all_e2e, 50):.1f} ms, p95 {pct(all_e2e, 95):.1f} ms "
          f"(send->page p50 {pct(all_net, 50):.1f} / p95 {pct(all_net, 95):.1f} ms; "
          f"page->DOM p50 {pct(all_dom, 50):.1f} / p95 {pct(all_dom, 95):.1f} ms)")
    print(f"reference: the same frames to a plain Python WebSocket client on this machine "
          f"(no browser): {len(raw_ms)} frames, send->client p50 {pct(raw_ms, 50):.1f} ms, "
          f"p95 {pct(raw_ms, 95):.1f} ms")
    print("'behind': changes sent before the window's end not yet in the DOM at its end (in flight);"
          " 'dirty': cards waiting for the next flush at the last sample")
    keeps_up = all_shown and not growing
    print(f"keeps up: {'YES' if keeps_up else 'NO'} "
          f"(every change reached the DOM or was superseded, and every card ends on its line's "
          f"last state: {all_shown}; no growth of latency or backlog across windows: {not growing})")
    if args.keep:
        print(f"kept {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if keeps_up else 1


if __name__ == "__main__":
    sys.exit(main())
