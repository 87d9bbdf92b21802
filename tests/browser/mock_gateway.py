"""A stand-in gateway for exercising web_panel/ alone: serves the static files and speaks the
public WebSocket protocol (contract section 4) from an in-memory board.

It is not the gateway: it exists so the page's rendering, reconnect logic and DOM throughput can
be checked without line sources. Run it by hand:

    .venv/bin/python tests/browser/mock_gateway.py --port 8799 --members 500 --rate 100

and log in as alice / secret.
"""
from __future__ import annotations

import argparse
import asyncio
import http
import json
import mimetypes
import random
import time
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

WEB = Path(__file__).resolve().parents[2] / "web_panel"
LAMPS = ["idle", "ringing", "busy", "held", "outgoing", "offline", "unknown"]


class MockGateway:
    def __init__(self, members: int = 12, panels: tuple[str, ...] = ("sales", "support")) -> None:
        self.seq = 0
        self.token = "tok-alice"
        self.sessions: set[ServerConnection] = set()
        self.subs: dict[ServerConnection, set[str]] = {}
        self.panels: dict[str, dict[str, dict]] = {}
        self.rights = {"calls": True, "numbers": "all", "pickup": True, "presence": True}
        self.device = {"lamp": "idle", "calls": []}
        self.history: dict[str, list[tuple[int, str]]] = {}
        first = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy"]
        last = ["Archer", "Baker", "Cole", "Dunn", "Ellis", "Fox", "Gray", "Hill"]
        n = 0
        for p in panels:
            self.panels[p] = {}
            for i in range(members):
                n += 1
                name = f"u{n:03d}" if not (p == panels[0] and i == 0) else "alice"
                self.panels[p][name] = {
                    "client": name,
                    "display": f"{first[n % len(first)]} {last[n % len(last)]}",
                    "number": str(200 + n),
                    "lamp": "idle",
                    "calls": [],
                    "presence": {"status": "available", "info": ""},
                    "logged_in": True,
                    "seq": 0,
                }

    # ----- state changes ------------------------------------------------------------
    def set_member(self, panel: str, member: str, lamp: str, calls: list[dict] | None = None) -> int:
        self.seq += 1
        m = self.panels[panel][member]
        m.update(lamp=lamp, calls=calls or [], seq=self.seq)
        msg = {"type": "lamp", "panel": panel, "member": member, "lamp": lamp, "calls": m["calls"],
               "seq": self.seq, "display": m["display"], "number": m["number"]}
        self._send_to(f"panel:{panel}", msg)
        return self.seq

    def random_change(self) -> None:
        panel = random.choice(list(self.panels))
        member = random.choice(list(self.panels[panel]))
        lamp = random.choice(LAMPS[:5])
        calls = []
        if lamp != "idle":
            st = {"ringing": "ringing", "busy": "connected", "held": "held", "outgoing": "dialing"}[lamp]
            calls = [{"id": f"c{self.seq}", "direction": "out" if lamp == "outgoing" else "in", "state": st,
                      "since": int(time.time()) - random.randint(0, 300),
                      "remote": str(random.randint(1000000, 9999999)), "remote_name": random.choice([None, "ACME Ltd"])}]
        self.set_member(panel, member, lamp, calls)

    def _send_to(self, topic: str, msg: dict) -> None:
        data = json.dumps(msg)
        for ws, topics in list(self.subs.items()):
            if topic in topics:
                asyncio.ensure_future(self._safe_send(ws, data))

    @staticmethod
    async def _safe_send(ws: ServerConnection, data: str) -> None:
        try:
            await ws.send(data)
        except Exception:
            pass

    # ----- protocol -------------------------------------------------------------------
    def _snapshot(self, panel: str, since: int | None, rid) -> dict:
        members = [
            {k: v for k, v in m.items() if k != "seq"}
            for m in self.panels[panel].values()
            if since is None or m["seq"] > since
        ]
        snap = {"type": "snapshot", "id": rid, "panel": panel, "seq": self.seq, "rights": self.rights,
                "members": members}
        if since is not None:
            snap["since"] = since
        return snap

    async def handler(self, ws: ServerConnection) -> None:
        authed = False
        self.subs[ws] = set()
        try:
            async for raw in ws:
                msg = json.loads(raw)
                rid = msg.get("id")
                t = msg.get("type")
                if t == "login":
                    ok = msg.get("client") == "alice" and (
                        msg.get("password") == "secret" or msg.get("token") == self.token)
                    if not ok:
                        await ws.send(json.dumps({"type": "error", "id": rid, "code": "auth_failed",
                                                  "message": "wrong client or password"}))
                        continue
                    authed = True
                    await ws.send(json.dumps({
                        "type": "welcome", "id": rid,
                        "client": {"name": "alice", "type": "user", "display": "Alice Archer"},
                        "devices": [{"id": "201", "name": "Reception", "number": "201"}],
                        "current_device": "201", "panels": list(self.panels),
                        "monitors": [{"device": "205", "clip": True, "pickup": True}],
                        "offline_calls": 0, "token": self.token}))
                elif not authed:
                    await ws.send(json.dumps({"type": "error", "id": rid, "code": "unauthenticated",
                                              "message": "log in first"}))
                elif t == "subscribe" and "panel" in msg:
                    self.subs[ws].add(f"panel:{msg['panel']}")
                    await ws.send(json.dumps(self._snapshot(msg["panel"], msg.get("since"), rid)))
                elif t == "subscribe" and "device" in msg:
                    self.subs[ws].add(f"device:{msg['device']}")
                    await ws.send(json.dumps({"type": "snapshot", "id": rid, "device": msg["device"],
                                              "seq": self.seq, "lamp": self.device["lamp"],
                                              "calls": self.device["calls"],
                                              "rights": {"calls": True, "numbers": "all", "pickup": True,
                                                         "presence": False}}))
                elif t == "pickup":
                    m = self.panels.get(msg.get("panel"), {}).get(msg.get("member"))
                    if m is None or m["lamp"] != "ringing":
                        await ws.send(json.dumps({"type": "error", "id": rid, "code": "not_found",
                                                  "message": "nothing is ringing"}))
                        continue
                    await ws.send(json.dumps({"type": "ok", "id": rid}))
                    await asyncio.sleep(0.2)
                    self.set_member(msg["panel"], msg["member"], "idle", [])
                    await ws.send(json.dumps({"type": "pickup_result", "op": msg.get("op"), "ok": True,
                                              "by": "alice"}))
                else:
                    await ws.send(json.dumps({"type": "ok", "id": rid}))
        finally:
            self.subs.pop(ws, None)

    def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/ws":
            return None
        name = "index.html" if path == "/" else path.lstrip("/")
        f = (WEB / name).resolve()
        if WEB not in f.parents or not f.is_file():
            return conn.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        body = f.read_bytes()
        ctype = mimetypes.guess_type(f.name)[0] or "application/octet-stream"
        if f.suffix == ".js":
            ctype = "text/javascript"
        headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-store")])
        return Response(200, "OK", headers, body)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8799)
    ap.add_argument("--members", type=int, default=12)
    ap.add_argument("--rate", type=float, default=2.0, help="random lamp changes per second")
    args = ap.parse_args()
    gw = MockGateway(members=args.members)
    async with serve(gw.handler, "127.0.0.1", args.port, process_request=gw.process_request):
        print(f"mock gateway on http://127.0.0.1:{args.port}/  (alice / secret)", flush=True)
        while True:
            if args.rate > 0:
                await asyncio.sleep(1 / args.rate)
                gw.random_change()
            else:
                await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main())
