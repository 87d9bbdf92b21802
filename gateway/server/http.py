"""The plain HTTP side of the one port: `/` (web panel files), `/healthz`, `/metrics`.

Everything except `/ws` is answered here before any WebSocket handshake.
"""

from __future__ import annotations

import json
import mimetypes
import time
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

if TYPE_CHECKING:
    from ..app import Gateway

__all__ = ["HttpRoutes", "WEB_PANEL_DIR"]

WEB_PANEL_DIR = Path(__file__).resolve().parent.parent.parent / "web_panel"

_SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    (
        "Content-Security-Policy",
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    ),
]


def _response(status: int, body: bytes, content_type: str, extra=()) -> Response:
    headers = Headers(
        [("Content-Type", content_type), ("Content-Length", str(len(body))),
         ("Cache-Control", "no-cache"), *_SECURITY_HEADERS, *extra]
    )
    return Response(status, HTTPStatus(status).phrase, headers, body)


class HttpRoutes:
    def __init__(self, gw: Gateway, web_dir: Path = WEB_PANEL_DIR) -> None:
        self.gw = gw
        self.web_dir = web_dir

    def process_request(self, connection, request: Request) -> Response | None:  # noqa: ANN001
        path = request.path.split("?", 1)[0]
        if path == "/ws":
            return None  # go on with the WebSocket handshake
        if path == "/healthz":
            return self.healthz()
        if path == "/metrics":
            return _response(200, self.metrics().encode(), "text/plain; version=0.0.4")
        return self.static(path)

    def healthz(self) -> Response:
        gw = self.gw
        sources = {}
        if gw.bridge is not None:
            sources["tapi_bridge"] = {"connections": gw.bridge.connections}
        if gw.config.sources.ami is not None:
            sources["ami"] = {"held_here": "ami" in gw.leases,
                              "connected": bool(gw.ami is not None and gw.ami.connected)}
        if gw.config.sources.sip is not None:
            sources["sip"] = {"held_here": "sip" in gw.leases}
        body = {
            "status": "ok" if gw.redis_up else "degraded",
            "process": gw.pid,
            "leases": sorted(gw.leases),
            "redis": gw.redis_up,
            "seq": gw.engine.seq,
            "clients": sum(len(s) for s in gw.clients.sessions.values()),
            "sources": sources,
            "uptime": round(time.time() - gw.started, 1),
        }
        return _response(200 if gw.redis_up else 503, json.dumps(body).encode(),
                         "application/json")

    def metrics(self) -> str:
        gw = self.gw
        sessions = [s for subs in gw.clients.sessions.values() for s in subs]
        lines = [
            "# TYPE blf_clients gauge",
            f"blf_clients {len(sessions)}",
            "# TYPE blf_subscriptions gauge",
            f"blf_subscriptions {gw.hub.subscriber_count()}",
            "# TYPE blf_changes_in_total counter",
            f"blf_changes_in_total {gw.metrics['changes_in']}",
            "# TYPE blf_deliveries_total counter",
            f"blf_deliveries_total {gw.hub.deliveries}",
            "# TYPE blf_queue_depth_max gauge",
            f"blf_queue_depth_max {max((len(s.outbox.pending) for s in sessions), default=0)}",
            "# TYPE blf_redis_up gauge",
            f"blf_redis_up {int(gw.redis_up)}",
            "# TYPE blf_seq gauge",
            f"blf_seq {gw.engine.seq}",
            "# TYPE blf_config_reloads_total counter",
            f"blf_config_reloads_total {gw.metrics['config_reloads']}",
            "# TYPE blf_rate_limited_total counter",
            f"blf_rate_limited_total {gw.metrics['rate_limited']}",
        ]
        lines += [
            "# TYPE blf_redis_latency_seconds gauge",
            f"blf_redis_latency_seconds {gw.redis_latency:.6f}",
            "# TYPE blf_source_up gauge",
        ]
        for name in ("ami", "sip"):
            if getattr(gw.config.sources, name) is not None:
                up = name in gw.leases and (name != "ami" or bool(gw.ami and gw.ami.connected))
                lines.append(f'blf_source_up{{source="{name}",held_here="{int(name in gw.leases)}"}} {int(up)}')
        lines += [
            "# TYPE blf_outbox_frames gauge",
            f"blf_outbox_frames {sum(len(s.outbox.pending) for s in sessions)}",
            "# TYPE blf_journal_written_total counter",
            f"blf_journal_written_total {gw.journal.written}",
            "# TYPE blf_published_device_states_total counter",
            f"blf_published_device_states_total {gw.publisher.published}",
        ]
        if gw.bridge is not None:
            lines += [
                "# TYPE blf_source_connections gauge",
                f'blf_source_connections{{source="tapi_bridge"}} {gw.bridge.connections}',
                "# TYPE blf_source_lines_total counter",
                f'blf_source_lines_total{{source="tapi_bridge"}} {gw.bridge.lines_in}',
                "# TYPE blf_source_bad_lines_total counter",
                f'blf_source_bad_lines_total{{source="tapi_bridge"}} {gw.bridge.lines_bad}',
            ]
        return "\n".join(lines) + "\n"

    def static(self, path: str) -> Response:
        name = "index.html" if path in ("/", "") else path.lstrip("/")
        # Only plain file names inside web_panel/ (and one level of sub-folder): no '..'.
        parts = name.split("/")
        if len(parts) > 2 or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            return _response(404, b"not found\n", "text/plain")
        file = self.web_dir.joinpath(*parts)
        if not file.is_file():
            return _response(404, b"not found\n", "text/plain")
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript",):
            ctype += "; charset=utf-8"
        return _response(200, file.read_bytes(), ctype)
