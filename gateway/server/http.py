"""The plain HTTP side of the one port: `/` (web panel files), `/healthz`, `/metrics`.

Everything except `/ws` is answered here before any WebSocket handshake.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

__all__ = ["HttpRoutes", "WEB_PANEL_DIR"]

def _web_panel_dir() -> Path:
    """web_panel/ beside the package in a source checkout (and an editable install), else
    where a wheel installs it: <prefix>/share/blf-gateway/web_panel (pyproject data-files)."""
    import sys
    import sysconfig

    here = Path(__file__).resolve().parent.parent.parent / "web_panel"
    if here.is_dir():
        return here
    for prefix in (sysconfig.get_path("data"), sys.prefix):
        candidate = Path(prefix) / "share" / "blf-gateway" / "web_panel"
        if candidate.is_dir():
            return candidate
    return here


WEB_PANEL_DIR = _web_panel_dir()

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
    """The plain HTTP answers. `health()` gives (status code, JSON body) for ``/healthz``,
    `metrics()` the Prometheus text for ``/metrics``; `web_dir` holds the web panel."""

    def __init__(self, health: Callable[[], tuple[int, dict]], metrics: Callable[[], str],
                 web_dir: Path = WEB_PANEL_DIR) -> None:
        self.health = health
        self.metrics = metrics
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
        status, body = self.health()
        return _response(status, json.dumps(body).encode(), "application/json")

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
