"""Desk phones at scale: bridge line -> NOTIFY at the phone, and memory per subscription.

    .venv/bin/python bench/blf_sip.py                 # 1,000 subscriptions (50 lines x 20)
    .venv/bin/python bench/blf_sip.py --lines 10 --per-line 20 --events 100
    .venv/bin/python bench/blf_sip.py --via-kamailio  # the same through Kamailio (below)

The gateway runs in its own process (embedded Redis, `[sources.sip]` on a free UDP port) with
a TAPI bridge; the phones are one process holding every subscription on one UDP socket
(`Event: dialog`, digest as client `bench`, answering each NOTIFY 200). For each event the
driver writes one bridge line (a call offered, then cleared, on one line) and notes the time;
the phones note when each NOTIFY for that line arrives (CLOCK_MONOTONIC is shared by the
processes). Baseline, in the same run: a bare asyncio process that, for each bridge line,
sends one ready-made NOTIFY-sized datagram to every phone watching that line (the least any
server must do for the same fan-out). Figures: p50/p99 of line -> NOTIFY over every phone of
every event, and gateway RSS growth per subscription.

`--via-kamailio`: the same phones subscribe to a real Kamailio presence server instead
(scripts/kamailio, packaging/kamailio/kamailio.cfg; no digest there), which the gateway
PUBLISHes every line's dialog state to (`publish_to`); the path measured is bridge line ->
gateway -> PUBLISH -> Kamailio -> NOTIFY at the phone. Its baselines, in the same run: the
gateway serving the phones itself, and the bare asyncio fan-out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.auth import SIP_REALM, hash_password, sip_ha1  # noqa: E402
from gateway.sip.digest import digest_response, parse_digest  # noqa: E402

HOST = "127.0.0.1"
PASSWORD = "bench-password"


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------- phones


class Phones(asyncio.DatagramProtocol):
    """Every subscription on one socket; records NOTIFY arrival times per line."""

    def __init__(self, server: tuple[str, int], lines: list[str], per_line: int,
                 uri_host: str | None = None) -> None:
        self.server, self.lines, self.per_line = server, lines, per_line
        # Request-URI host[:port]: the gateway's address, or Kamailio's domain (the
        # presentity is sip:LINE@DOMAIN there).
        self.uri_host = uri_host or f"{server[0]}:{server[1]}"
        self.by_call: dict[str, str] = {}
        self.user: dict[str, str] = {}
        self.arrivals: list[tuple[str, float]] = []
        self.subscribed: set[str] = set()
        self.challenges: dict[str, str] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.nc = 0

    def connection_made(self, transport) -> None:  # noqa: ANN001
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def subscribe(self, call: str, line: str, cseq: int, auth: str | None = None) -> None:
        uri = f"sip:{line}@{self.uri_host}"
        msg = (f"SUBSCRIBE {uri} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {HOST}:{self.port};branch=z9hG4bK-{call}-{cseq}\r\n"
               f"From: <sip:{self.user[call]}@{HOST}>;tag=t{call}\r\nTo: <{uri}>\r\n"
               f"Call-ID: {call}\r\nCSeq: {cseq} SUBSCRIBE\r\n"
               f"Contact: <sip:bench@{HOST}:{self.port}>\r\nEvent: dialog\r\n"
               f"Accept: application/dialog-info+xml\r\nExpires: 600\r\n")
        if auth:
            msg += f"Authorization: {auth}\r\n"
        msg += "Content-Length: 0\r\n\r\n"
        assert self.transport is not None
        self.transport.sendto(msg.encode(), self.server)

    async def start(self) -> None:
        """Subscribe like phones do: spread out, retransmitting what is not answered."""
        n = 0
        for line in self.lines:
            for k in range(self.per_line):
                call = f"c{n}"
                self.by_call[call] = line
                self.user[call] = f"bench{k}"
                self.subscribe(call, line, 1)
                n += 1
                if n % 50 == 0:
                    await asyncio.sleep(0.02)
        for _ in range(20):
            await asyncio.sleep(1.0)
            missing = [c for c in self.by_call if c not in self.subscribed]
            if not missing:
                return
            for call in missing:
                self.challenges.pop(call, None)
                self.subscribe(call, self.by_call[call], 1)

    def datagram_received(self, data: bytes, addr) -> None:  # noqa: ANN001
        now = time.monotonic()
        head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
        call = re.search(r"(?im)^Call-ID:\s*(\S+)", head).group(1)
        if head.startswith("SIP/2.0 401"):
            p = parse_digest(re.search(r"(?im)^WWW-Authenticate:\s*(.*)$", head).group(1))
            line = self.by_call[call]
            uri = f"sip:{line}@{self.uri_host}"
            self.nc += 1
            user = self.user[call]
            resp = digest_response(sip_ha1(user, PASSWORD), "SUBSCRIBE", uri, p["nonce"],
                                   qop="auth", nc="00000001", cnonce=call)
            self.subscribe(call, line, 2, f'Digest username="{user}", realm="{SIP_REALM}", '
                           f'nonce="{p["nonce"]}", uri="{uri}", response="{resp}", '
                           f'qop=auth, nc=00000001, cnonce="{call}"')
            return
        if head.startswith(("SIP/2.0 200", "SIP/2.0 202")):
            self.subscribed.add(call)
            return
        if head.startswith("NOTIFY"):
            self.arrivals.append((self.by_call.get(call, "?"), now))
            via = "\r\n".join(re.findall(r"(?im)^(Via:.*)$", head))
            hdrs = {k: re.search(rf"(?im)^{k}:.*$", head).group(0)
                    for k in ("From", "To", "Call-ID", "CSeq")}
            ok = (f"SIP/2.0 200 OK\r\n{via}\r\n{hdrs['From']}\r\n{hdrs['To']}\r\n"
                  f"{hdrs['Call-ID']}\r\n{hdrs['CSeq']}\r\nContent-Length: 0\r\n\r\n")
            assert self.transport is not None
            self.transport.sendto(ok.encode(), addr)


def phones_main(server, lines, per_line, ctl, uri_host=None) -> None:  # noqa: ANN001
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, phones = await loop.create_datagram_endpoint(
            lambda: Phones(server, lines, per_line, uri_host), local_addr=(HOST, 0))
        await phones.start()
        deadline = time.monotonic() + 60
        while len(phones.subscribed) < len(lines) * per_line and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        ctl.send(("subscribed", len(phones.subscribed), phones.port))
        await loop.run_in_executor(None, ctl.recv)  # "report"
        ctl.send(("arrivals", phones.arrivals))
        transport.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------- baseline

BASELINE = r'''
import asyncio, sys
N_PER = int(sys.argv[2])
async def main():
    loop = asyncio.get_running_loop()
    tr, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    phones = {}
    body = b"x" * 700
    async def conn(reader, writer):
        async for raw in reader:
            line = raw.decode().strip()
            if line.startswith("PHONE "):
                _, port = line.split()
                phones["port"] = int(port)
                continue
            dev = line
            for i in range(N_PER):
                msg = (b"NOTIFY sip:bench@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-b\r\n"
                       b"From: <sip:x@b>;tag=b\r\nTo: <sip:bench@b>;tag=t\r\nCall-ID: base-" + dev.encode()
                       + b"-" + str(i).encode() + b"\r\nCSeq: 1 NOTIFY\r\nContent-Length: 700\r\n\r\n" + body)
                tr.sendto(msg, ("127.0.0.1", phones["port"]))
    server = await asyncio.start_server(conn, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()
asyncio.run(main())
'''


# ---------------------------------------------------------------------------- driver

CONFIG = """
[server]
listen = "{host}:{ws}"
[state]
dir = "{state}"
[sources.tapi_bridge]
listen = "{host}:{bridge}"
[sources.sip]
bind = "{host}:{sip}"
{publish}
{devices}
{clients}
"""
# One client per phone position (a phone's client may hold up to 500 subscriptions).
CLIENT = """[[clients]]
name = "bench{k}"
password_hash = "{hash}"
devices = [{devlist}]
"""


def wait_port(port: int, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection((HOST, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} not open")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def latencies(sent: list[tuple[str, float]], arrivals: list[tuple[str, float]],
              per_line: int) -> tuple[list[float], int]:
    """Each event's arrivals: for its line, after its send time, the first `per_line`."""
    by_line: dict[str, list[float]] = {}
    for line, t in arrivals:
        by_line.setdefault(line, []).append(t)
    for ts in by_line.values():
        ts.sort()
    out, missing = [], 0
    cursor: dict[str, int] = {}
    for line, t0 in sent:
        ts = by_line.get(line, [])
        i = cursor.get(line, 0)
        while i < len(ts) and ts[i] < t0:
            i += 1
        got = ts[i:i + per_line]
        missing += per_line - len(got)
        out += [(t - t0) * 1000 for t in got]
        cursor[line] = i + len(got)
    return out, missing


def run_events(write, lines: list[str], events: int, rate: float) -> list[tuple[str, float]]:
    sent = []
    gap = 1.0 / rate
    states: dict[str, int] = {}
    nxt = time.monotonic()
    for k in range(events):
        line = lines[k % len(lines)]
        n = states.get(line, 0)
        states[line] = n + 1
        call = f"k{line}-{n // 2}"  # a new call each time (an ended call id stays ended)
        msg = ({"device": line, "call": call, "state": "offering", "caller": "0301"}
               if n % 2 == 0 else {"device": line, "call": call, "state": "disconnected"})
        while time.monotonic() < nxt:
            time.sleep(0.0005)
        t0 = time.monotonic()
        write(msg)
        sent.append((line, t0))
        nxt = t0 + gap
    return sent


def kamailio_start(tmp: Path) -> tuple[subprocess.Popen, int]:
    """scripts/kamailio on a free UDP port (the gateway publishes, the phones subscribe)."""
    port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen([str(ROOT / "scripts" / "kamailio"), f"udp:{HOST}:{port}", HOST,
                             str(tmp / "kamailio-db")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    if proc.poll() is not None:
        raise SystemExit("Kamailio did not start (apt-get install kamailio "
                         "kamailio-presence-modules)")
    return proc, port


def gateway_run(args, lines: list[str], tmp: Path, kamailio: int | None = None) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    ws, bridge, sip = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    devices = "\n".join(f'[[devices]]\nid = "{d}"\nnumber = "{d}"' for d in lines)
    cfg = tmp / "gw.toml"
    pw_hash = hash_password(PASSWORD, n=2**10)
    devlist = ", ".join(f'"{d}"' for d in lines)
    clients = "".join(CLIENT.format(k=k, hash=pw_hash, devlist=devlist)
                      for k in range(args.per_line))
    publish = (f'publish_to = "sip:{HOST}:{kamailio}"\npublish_domain = "{HOST}"\n'
               'publish_events = ["dialog"]' if kamailio else "")
    cfg.write_text(CONFIG.format(host=HOST, ws=ws, state=tmp / "state", bridge=bridge, sip=sip,
                                 devices=devices, clients=clients, publish=publish))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    setters = [subprocess.Popen([sys.executable, "-m", "gateway", "password", f"bench{k}",
                                 "--config", str(cfg), "--stdin"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
               for k in range(args.per_line)]
    for p in setters:
        p.communicate(PASSWORD.encode() + b"\n")
        assert p.returncode == 0, "could not set a client's password"
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_port(ws)
        wait_port(bridge)
        sock = socket.create_connection((HOST, bridge))
        for d in lines:
            sock.sendall(json.dumps({"device": d, "devstate": "inservice"}).encode() + b"\n")
        time.sleep(1.0)
        rss0 = rss_kib(proc.pid)
        parent, child = mp.Pipe()
        # Through Kamailio the phones subscribe there, to sip:LINE@HOST (its domain).
        server, uri_host = ((HOST, kamailio), HOST) if kamailio else ((HOST, sip), None)
        phones = mp.Process(target=phones_main,
                            args=(server, lines, args.per_line, child, uri_host))
        phones.start()
        _, subscribed, _ = parent.recv()
        time.sleep(1.0)
        rss1 = rss_kib(proc.pid)
        sent = run_events(lambda m: sock.sendall(json.dumps(m).encode() + b"\n"), lines,
                          args.events, args.rate)
        time.sleep(2.0)
        parent.send("report")
        _, arrivals = parent.recv()
        phones.join(10)
        lat, missing = latencies(sent, arrivals, args.per_line)
        return {"subscribed": subscribed, "lat": lat, "missing": missing,
                "kib_per_sub": (rss1 - rss0) / max(1, subscribed)}
    finally:
        proc.terminate()
        proc.wait(30)


def baseline_run(args, lines: list[str]) -> dict:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BASELINE, str(port), str(args.per_line)])
    try:
        wait_port(port)
        parent, child = mp.Pipe()
        arrivals_box: list = []

        async def phones() -> None:
            loop = asyncio.get_running_loop()
            rx: list[tuple[str, float]] = []

            class P(asyncio.DatagramProtocol):
                def datagram_received(self, data, addr):  # noqa: ANN001
                    now = time.monotonic()
                    m = re.search(rb"Call-ID: base-([^-\r]+)-", data)
                    rx.append((m.group(1).decode(), now))

            tr, _ = await loop.create_datagram_endpoint(P, local_addr=(HOST, 0))
            child.send(tr.get_extra_info("sockname")[1])
            await loop.run_in_executor(None, child.recv)
            arrivals_box.append(rx)
            tr.close()

        # The baseline's phones run in a thread of this process (they only timestamp).
        import threading

        t = threading.Thread(target=lambda: asyncio.run(phones()))
        t.start()
        phone_port = parent.recv()
        sock = socket.create_connection((HOST, port))
        sock.sendall(f"PHONE {phone_port}\n".encode())
        sent = run_events(lambda m: sock.sendall(m["device"].encode() + b"\n"), lines,
                          args.events, args.rate)
        time.sleep(2.0)
        parent.send("report")
        t.join(10)
        lat, missing = latencies(sent, arrivals_box[0], args.per_line)
        return {"lat": lat, "missing": missing}
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=50)
    ap.add_argument("--per-line", type=int, default=20, help="phones watching each line")
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--rate", type=float, default=20.0, help="bridge lines per second")
    ap.add_argument("--via-kamailio", action="store_true",
                    help="phones subscribe to Kamailio, which the gateway PUBLISHes to "
                         "(baselines: the gateway serving them itself, bare asyncio)")
    args = ap.parse_args()
    lines = [f"{300 + i}" for i in range(args.lines)]
    kam = None
    if args.via_kamailio:
        with tempfile.TemporaryDirectory() as tmp:
            kproc, kport = kamailio_start(Path(tmp))
            try:
                kam = gateway_run(args, lines, Path(tmp) / "gw", kamailio=kport)
            finally:
                kproc.terminate()
                kproc.wait(15)
    with tempfile.TemporaryDirectory() as tmp:
        gw = gateway_run(args, lines, Path(tmp))
    base = baseline_run(args, lines)
    subs = args.lines * args.per_line
    print(f"{subs} subscriptions ({args.lines} lines x {args.per_line} phones), "
          f"{args.events} events at {args.rate:.0f}/s; subscribed: {gw['subscribed']}"
          + (f" (at Kamailio: {kam['subscribed']})" if kam else ""))
    if kam:
        print("| figure | through Kamailio | gateway serving the phones | bare asyncio |")
        print("|---|---|---|---|")
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            print(f"| line -> NOTIFY {name} ms | {pct(kam['lat'], q):.2f} | "
                  f"{pct(gw['lat'], q):.2f} | {pct(base['lat'], q):.2f} |")
        print(f"| NOTIFYs missing | {kam['missing']} | {gw['missing']} | {base['missing']} |")
        return
    print("| figure | gateway | baseline | ratio |")
    print("|---|---|---|---|")
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        g, b = pct(gw["lat"], q), pct(base["lat"], q)
        print(f"| line -> NOTIFY {name} ms | {g:.2f} | {b:.2f} | {g / b:.1f}x |")
    print(f"| NOTIFYs missing | {gw['missing']} | {base['missing']} | |")
    print(f"| gateway RSS per subscription, KiB | {gw['kib_per_sub']:.1f} | - | |")
    if gw["lat"]:
        print(f"(mean {statistics.mean(gw['lat']):.2f} ms over {len(gw['lat'])} NOTIFYs)")


if __name__ == "__main__":
    main()
