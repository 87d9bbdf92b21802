"""The admin requests (`admin_overview`, `explain`, `admin_reload`): what the admin view shows.

Only clients with ``admin = true`` may send them (others get `forbidden`). An admin sees
every source, process, device lamp, session and limit; numbers only where its own rights say
so: the overview carries no number at all, and an explanation is redacted with the admin's
rights (:func:`gateway.panels.rights.number_policy`) before it is rendered. Sessions are
this process's (each process serves its own); sources and processes come from every
process's health entry in Redis, and failed logins (per address, per client) from the
counts every process shares there: every process shows the same.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..clients import Clients
from ..config import Config
from ..errors import WireError
from ..panels.engine import Engine
from ..panels.rights import number_policy
from ..provenance import explanation_json, redact
from ..recorder import load_explanation
from ..store import RedisError, Store
from .guard import WINDOW_SECONDS
from .login import Auth

__all__ = ["Admin"]

LEASED = ("ami", "sip")
SOURCES = ("tapi_bridge", "ami", "sip")


class Admin:
    """Answers the admin requests of a session (see the module docstring)."""

    def __init__(self, *, pid: str, config: Callable[[], Config], engine: Callable[[], Engine],
                 store: Store, clients: Clients, auth: Auth,
                 metrics: Counter[str], config_path: Path | None,
                 reload: Callable[[], Awaitable[dict]] | None,
                 last_reload: Callable[[], dict | None]) -> None:
        self.pid = pid
        self._config = config
        self._engine = engine
        self.store = store
        self.clients = clients
        self.auth = auth
        self.metrics = metrics
        self.config_path = config_path
        self._reload = reload
        self._last_reload = last_reload

    @staticmethod
    def check(config: Config, client: str | None, msg_id: Any) -> None:
        me = config.client_by_name.get(client or "")
        if me is None or not me.admin:
            raise WireError("forbidden", "the admin view is for clients with admin = true",
                            msg_id)

    # -- overview ----------------------------------------------------------------------------

    async def overview(self, msg_id: Any) -> dict:
        cfg = self._config()
        engine = self._engine()
        now = time.time()
        try:
            health = {pid: json.loads(v) for pid, v in (await self.store.health()).items()}
            holders = await self.store.lease_holders(
                [s for s in LEASED if getattr(cfg.sources, s) is not None])
            failed = await self.store.failed_logins()
            addresses = await self.store.failed_addresses(WINDOW_SECONDS)
        except (RedisError, OSError):
            raise WireError("unavailable", "the gateway's state store is unreachable",
                            msg_id) from None
        processes = [{"process": pid, "here": pid == self.pid,
                      "age": round(now - h.get("t", now), 1),
                      "leases": h.get("leases", []), "sessions": h.get("sessions", 0),
                      "uptime": round(now - h["started"], 1) if h.get("started") else None,
                      "redis_latency_ms": round(1000 * h.get("redis_latency", 0.0), 2),
                      "provenance_dropped": h.get("provenance_dropped", 0)}
                     for pid, h in sorted(health.items())]
        sources = []
        for name in SOURCES:
            if getattr(cfg.sources, name) is None:
                continue
            seen = [(pid, h["sources"][name]) for pid, h in health.items()
                    if name in h.get("sources", {})]
            last = max((s["last_event"] for _, s in seen if s.get("last_event")), default=None)
            sources.append({
                "source": name,
                "holder": holders.get(name) if name in LEASED else "every process",
                "up": any(s.get("up") for _, s in seen),
                "up_in": sorted(pid for pid, s in seen if s.get("up")),
                "last_event_age": round(now - last, 1) if last else None,
                "events": sum(s.get("events", 0) for _, s in seen),
                "reconnects": sum(s.get("reconnects", 0) for _, s in seen),
                "connections": sum(s.get("connections", 0) for _, s in seen),
                "lines_bad": sum(s.get("lines_bad", 0) for _, s in seen),
                "devices": sum(1 for d in cfg.devices if d.source == name),
            })
        devices = []
        for d in cfg.devices:
            view = engine.device_view(d.id)
            devices.append({"device": d.id, "name": d.name, "number": d.number,
                            "source": d.source, "lamp": view.lamp.value,
                            "calls": len(view.calls)})
        members = [{"client": c.name, "display": c.display,
                    "lamp": engine.member(c.name).lamp.value, "admin": c.admin}
                   for c in cfg.clients]
        mono = time.monotonic()
        srv = cfg.server
        sessions = []
        for name, subs in sorted(self.clients.sessions.items()):
            for s in subs:
                bucket = s.bucket  # type: ignore[attr-defined]
                tokens = min(bucket.burst, bucket.tokens + (mono - bucket.stamp) * bucket.rate)
                sessions.append({
                    "client": name, "address": s.address,
                    "subscriptions": sorted(f"{k}:{v}" for k, v in s.subs),  # type: ignore[attr-defined]
                    "outbox": len(s.outbox.pending),  # type: ignore[attr-defined]
                    "batch": s.batch,  # type: ignore[attr-defined]
                    "tokens": round(tokens, 1),
                })
        out: dict = {
            "type": "admin_overview", "process": self.pid, "t": round(now, 3),
            "processes": processes, "sources": sources, "devices": devices,
            "members": members, "sessions": sessions,
            "rate_limits": {
                "messages_per_second": srv.messages_per_second, "burst": srv.message_burst,
                "login_attempts_per_minute": srv.login_attempts_per_minute,
                "login_attempts": [{"address": a, "last_minute": n,
                                    "limited": n >= srv.login_attempts_per_minute}
                                   for a, n in sorted(addresses.items())],
                "failed_logins": [{"client": c, "failures": n}
                                  for c, n in sorted(failed.items())],
                "rate_limited_total": self.metrics["rate_limited"],
                "client_messages_per_second": srv.client_messages_per_second,
                "client_message_burst": srv.client_message_burst,
                "client_changes_per_second": srv.client_changes_per_second,
                "client_change_burst": srv.client_change_burst,
                "login_timeout_seconds": srv.login_timeout_seconds,
                "max_connections_per_address": srv.max_connections_per_address,
                "flood_closed_total": self.metrics["flood_closed"],
                "login_timeouts_total": self.metrics["login_timeouts"],
                "connections_refused_total": self.metrics["connections_refused"],
            },
            "config": {"path": str(self.config_path) if self.config_path else None,
                       "digest": cfg.digest, "last_reload": self._last_reload()},
            "provenance": {"keep": cfg.provenance.keep},
        }
        if msg_id is not None:
            out["id"] = msg_id
        return out

    # -- one lamp's story --------------------------------------------------------------------

    async def explain(self, me: str, device: str | None, client: str | None,
                      msg_id: Any) -> dict:
        cfg = self._config()
        if device is not None and device not in cfg.device_by_id:
            raise WireError("not_found", f"no device {device!r}", msg_id)
        if client is not None and client not in cfg.client_by_name:
            raise WireError("not_found", f"no client {client!r}", msg_id)
        try:
            expl = await load_explanation(self.store, self._engine(), cfg,
                                          device if device is not None else client,  # type: ignore[arg-type]
                                          "device" if device is not None else "client")
        except (RedisError, OSError):
            raise WireError("unavailable", "the gateway's state store is unreachable",
                            msg_id) from None
        out = {"type": "explanation", **explanation_json(redact(expl, number_policy(cfg, me)))}
        if msg_id is not None:
            out["id"] = msg_id
        return out

    # -- configuration reload ------------------------------------------------------------------

    async def reload(self, msg_id: Any) -> dict:
        if self._reload is None:
            raise WireError("not_found", "this gateway runs without a configuration file",
                            msg_id)
        try:
            result = await self._reload()
        except (RedisError, OSError):
            raise WireError("unavailable", "the configuration is valid but could not be "
                            "applied now (Redis away): try again", msg_id) from None
        out = {"type": "reload_result", **result}
        if msg_id is not None:
            out["id"] = msg_id
        return out
