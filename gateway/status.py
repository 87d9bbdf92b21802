"""What ``/healthz`` and ``/metrics`` say about this process, read from the parts that know.

:class:`Status` is given the parts it reports on and renders the health document (JSON) and
the Prometheus text exposition; :class:`~gateway.server.http.HttpRoutes` only serves them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from .clients import Clients
from .cluster import LEASED_SOURCES, Cluster
from .config import Config
from .follower import LogFollower
from .journal import Journal
from .publisher import Publisher
from .sources import LineSources

__all__ = ["Status"]


class Status:
    """Health and metrics of one gateway process."""

    def __init__(self, *, pid: str, config: Callable[[], Config], cluster: Cluster,
                 follower: LogFollower, clients: Clients, sources: LineSources,
                 journal: Journal, publisher: Publisher, metrics: Counter[str]) -> None:
        self.pid = pid
        self._config = config
        self.cluster = cluster
        self.follower = follower
        self.clients = clients
        self.sources = sources
        self.journal = journal
        self.publisher = publisher
        self.metrics = metrics
        self.started = time.time()

    def _ami_connected(self) -> bool:
        ami = self.sources.ami
        return bool(ami is not None and ami.connected)

    def _sip_up(self) -> bool:
        sip = self.sources.sip
        return bool(sip is not None and sip.healthy)

    def health(self) -> tuple[int, dict]:
        """(HTTP status, body): 503 while Redis is unreachable."""
        cfg = self._config()
        leases = self.cluster.leases
        redis_up = self.follower.redis_up
        sources: dict[str, dict] = {}
        bridge = self.sources.bridge
        if bridge is not None:
            sources["tapi_bridge"] = {"connections": bridge.connections}
        if cfg.sources.ami is not None:
            sources["ami"] = {"held_here": "ami" in leases, "connected": self._ami_connected()}
        if cfg.sources.sip is not None:
            sources["sip"] = {"held_here": "sip" in leases, "up": self._sip_up()}
        for name, why in self.cluster.start_failures.items():
            if name in sources:
                sources[name]["start_failed"] = why  # retried with a growing pause
        refused = self.follower.write_refused
        healthy = redis_up and refused is None
        body = {
            "status": "ok" if healthy else "degraded",
            "problem": (None if healthy else refused or "store_unreachable"),
            "process": self.pid,
            "leases": sorted(leases),
            "redis": redis_up,
            "seq": self.follower.engine.seq,
            "clients": sum(len(s) for s in self.clients.sessions.values()),
            "sources": sources,
            "uptime": round(time.time() - self.started, 1),
        }
        return (200 if healthy else 503), body

    def process_entry(self) -> dict:
        """This process's sources and sessions, for its health entry in Redis (the admin
        view shows every process's)."""
        cfg = self._config()
        leases = self.cluster.leases
        sources: dict[str, dict] = {}
        bridge = self.sources.bridge
        if bridge is not None:
            sources["tapi_bridge"] = {"up": bridge.connections > 0,
                                      "connections": bridge.connections,
                                      "lines_in": bridge.lines_in, "lines_bad": bridge.lines_bad}
        if cfg.sources.ami is not None and "ami" in leases:
            sources["ami"] = {"up": self._ami_connected()}
        if cfg.sources.sip is not None and "sip" in leases:
            sources["sip"] = {"up": self.sources.sip is not None}
        return {"sources": sources, "leases": sorted(leases),
                "sessions": sum(len(s) for s in self.clients.sessions.values()),
                "started": round(self.started, 3),
                "redis_latency": round(self.cluster.redis_latency, 6)}

    def metrics_text(self) -> str:
        """The Prometheus text exposition (version 0.0.4)."""
        cfg = self._config()
        hub = self.follower.hub
        engine = self.follower.engine
        redis_up = self.follower.redis_up
        leases = self.cluster.leases
        m = self.metrics
        sessions = [s for subs in self.clients.sessions.values() for s in subs]
        pending = [len(s.outbox.pending) for s in sessions]  # type: ignore[attr-defined]
        lines = [
            "# TYPE blf_clients gauge",
            f"blf_clients {len(sessions)}",
            "# TYPE blf_subscriptions gauge",
            f"blf_subscriptions {hub.subscriber_count()}",
            "# TYPE blf_changes_in_total counter",
            f"blf_changes_in_total {m['changes_in']}",
            "# TYPE blf_deliveries_total counter",
            f"blf_deliveries_total {hub.deliveries}",
            "# TYPE blf_queue_depth_max gauge",
            f"blf_queue_depth_max {max(pending, default=0)}",
            "# TYPE blf_redis_up gauge",
            f"blf_redis_up {int(redis_up)}",
            "# TYPE blf_seq gauge",
            f"blf_seq {engine.seq}",
            "# TYPE blf_config_reloads_total counter",
            f"blf_config_reloads_total {m['config_reloads']}",
            "# TYPE blf_rate_limited_total counter",
            f"blf_rate_limited_total {m['rate_limited']}",
            # Connections closed for flooding, for never logging in; refused as one too many
            # from their address (docs/reliability.md).
            "# TYPE blf_flood_closed_total counter",
            f"blf_flood_closed_total {m['flood_closed']}",
            "# TYPE blf_login_timeouts_total counter",
            f"blf_login_timeouts_total {m['login_timeouts']}",
            "# TYPE blf_connections_refused_total counter",
            f"blf_connections_refused_total {m['connections_refused']}",
            "# TYPE blf_redis_latency_seconds gauge",
            f"blf_redis_latency_seconds {self.cluster.redis_latency:.6f}",
            "# TYPE blf_source_up gauge",
        ]
        for name in LEASED_SOURCES:
            if getattr(cfg.sources, name) is not None:
                here = name in leases
                up = here and (self._ami_connected() if name == "ami" else
                               self._sip_up() if name == "sip" else True)
                lines.append(f'blf_source_up{{source="{name}",held_here="{int(here)}"}} '
                             f"{int(up)}")
        lines += [
            "# TYPE blf_outbox_frames gauge",
            f"blf_outbox_frames {sum(pending)}",
            "# TYPE blf_journal_written_total counter",
            f"blf_journal_written_total {self.journal.written}",
            "# TYPE blf_journal_spooled_total counter",
            f"blf_journal_spooled_total {self.journal.spooled}",
            "# TYPE blf_journal_dropped_total counter",
            f"blf_journal_dropped_total {self.journal.dropped}",
            "# TYPE blf_published_device_states_total counter",
            f"blf_published_device_states_total {self.publisher.published}",
        ]
        bridge = self.sources.bridge
        if bridge is not None:
            lines += [
                "# TYPE blf_source_connections gauge",
                f'blf_source_connections{{source="tapi_bridge"}} {bridge.connections}',
                "# TYPE blf_source_lines_total counter",
                f'blf_source_lines_total{{source="tapi_bridge"}} {bridge.lines_in}',
                "# TYPE blf_source_bad_lines_total counter",
                f'blf_source_bad_lines_total{{source="tapi_bridge"}} {bridge.lines_bad}',
                "# TYPE blf_source_refused_total counter",  # allow-list, secret, certificate
                f'blf_source_refused_total{{source="tapi_bridge"}} {bridge.refused}',
            ]
        return "\n".join(lines) + "\n"
