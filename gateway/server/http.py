"""The plain HTTP side of the one port: `/` (web panel files), `/healthz`, `/metrics`.

Everything except `/ws` is answered here before any WebSocket handshake.
"""

from __future__ import annotations

import json
import logging
import mimetypes
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from ..config import ServerCfg

__all__ = ["HttpRoutes", "WEB_PANEL_DIR", "origin_allowed"]

log = logging.getLogger("gateway.http")


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


def origin_allowed(origin: str | None, host: str | None, allowed: list[str] | None) -> bool:
    """Whether a WebSocket upgrade with this Origin header may go on.

    No Origin: not a browser (a CTI program), allowed: the check protects users' browsers
    from pages elsewhere opening a session with their cookies or saved logins. `allowed`
    None means the gateway's own origin: the page came from the host:port the browser is
    talking to (compared with the Host header, so it holds behind a TLS proxy too)."""
    if origin is None:
        return True
    origin = origin.strip().lower()
    if allowed is not None:
        return "*" in allowed or origin in allowed
    scheme, sep, netloc = origin.partition("://")
    return bool(sep) and scheme in ("http", "https") and host is not None \
        and netloc == host.strip().lower()


class HttpRoutes:
    """The plain HTTP answers. `health()` gives (status code, JSON body) for ``/healthz``,
    `metrics()` the Prometheus text for ``/metrics``; `web_dir` holds the web panel.
    `server()` (optional) gives the `[server]` settings in force: `allowed_origins` for the
    WebSocket upgrade, `admin_client_ca` for /metrics."""

    def __init__(self, health: Callable[[], tuple[int, dict]], metrics: Callable[[], str],
                 web_dir: Path = WEB_PANEL_DIR,
                 server: Callable[[], ServerCfg] | None = None) -> None:
        self.health = health
        self.metrics = metrics
        self.web_dir = web_dir
        self.server = server
        self.refused_origins = 0
        self._origins_said: set[str] = set()

    def process_request(self, connection, request: Request) -> Response | None:  # noqa: ANN001
        path = request.path.split("?", 1)[0]
        if path == "/ws":
            return self._check_origin(request)  # None: go on with the WebSocket handshake
        if path == "/healthz":
            return self.healthz()
        if path == "/metrics":
            cfg = self.server() if self.server is not None else None
            if cfg is not None and cfg.admin_client_ca and \
                    not connection.transport.get_extra_info("peercert"):
                return _response(403, b"a client certificate is required for /metrics\n",
                                 "text/plain")
            return _response(200, self.metrics().encode(), "text/plain; version=0.0.4")
        return self.static(path)

    def _check_origin(self, request: Request) -> Response | None:
        allowed = self.server().allowed_origins if self.server is not None else None
        origin = request.headers.get("Origin")
        if origin_allowed(origin, request.headers.get("Host"), allowed):
            return None
        self.refused_origins += 1
        if origin not in self._origins_said and len(self._origins_said) < 1000:
            # Once per origin: a page elsewhere retrying in a loop writes one line.
            self._origins_said.add(origin)  # type: ignore[arg-type]
            log.warning("WebSocket from origin %.200s refused (not in [server] "
                        "allowed_origins; this is logged once per origin)", origin)
        return _response(403, b"this origin may not open a session: see [server] "
                         b"allowed_origins\n", "text/plain")

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
