"""Warnings for `blf-gateway check`: a valid configuration that is probably not what the admin
wants before going live.

:func:`config_warnings` needs only the configuration (and `now` for certificate dates);
:func:`state_warnings` also looks at the gateway's state in Redis (passwords, what the sources
report) and is only run when that Redis is reachable. Each warning is one line, starting with
the key it is about.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from .config import Config

if TYPE_CHECKING:
    from .store import Store

__all__ = ["startup_problems", "config_warnings", "state_warnings", "EXPIRY_WARNING_DAYS"]

EXPIRY_WARNING_DAYS = 30


def _tls_files(cfg: Config) -> list[tuple[str, str]]:
    out = []
    if cfg.server.tls_cert:
        out.append(("server.tls_cert", cfg.server.tls_cert))
    if cfg.server.admin_client_ca:
        out.append(("server.admin_client_ca", cfg.server.admin_client_ca))
    bridge = cfg.sources.tapi_bridge
    if bridge is not None:
        if bridge.tls_cert:
            out.append(("sources.tapi_bridge.tls_cert", bridge.tls_cert))
        if bridge.tls_client_ca:
            out.append(("sources.tapi_bridge.tls_client_ca", bridge.tls_client_ca))
    return out


def startup_problems(cfg: Config) -> list[str]:
    """Files the configuration names that would stop the gateway at start: a TLS pair that
    is missing, expired or mismatched, a CA file that is not one, an unusable bridge secret."""
    import ssl

    from .tapi.access import load_secret
    from .tls import TlsError, check_pair

    out: list[str] = []
    pairs = [("server", cfg.server.tls_cert, cfg.server.tls_key, cfg.server.admin_client_ca)]
    bridge = cfg.sources.tapi_bridge
    if bridge is not None:
        pairs.append(("sources.tapi_bridge", bridge.tls_cert, bridge.tls_key,
                      bridge.tls_client_ca))
    for section, cert, key, ca in pairs:
        if cert and key:
            try:
                check_pair(cfg.path(cert), cfg.path(key))
            except TlsError as exc:
                out.append(f"{section}.tls_cert: {exc}")
        if ca:
            try:
                ssl.create_default_context(cafile=str(cfg.path(ca)))
            except (ssl.SSLError, OSError) as exc:
                out.append(f"{section}: {ca} is not a usable CA file ({exc})")
    if bridge is not None and bridge.secret_file:
        try:
            load_secret(cfg.path(bridge.secret_file))
        except ValueError as exc:
            out.append(f"sources.tapi_bridge.secret_file: {exc}")
    return out


def config_warnings(cfg: Config, now: dt.datetime | None = None) -> list[str]:
    """Warnings that the configuration file alone shows."""
    from .tls import TlsError, cert_info

    now = now or dt.datetime.now(dt.timezone.utc)
    out: list[str] = []
    for i, g in enumerate(cfg.groups):
        if not any(g.rights_of(m).visible for m in g.members):
            why = "it has no members" if not g.members else "it is visible to none of them"
            out.append(f"groups[{i}]: nobody can see panel {g.name!r}: {why}")
    on_panel = {d for g in cfg.groups for m in g.members
                for d in cfg.client_by_name[m].devices}
    monitored = {m.device for c in cfg.clients for m in c.monitor}
    for i, d in enumerate(cfg.devices):
        if d.id not in on_panel:
            extra = (" (only monitor rights watch it)" if d.id in monitored
                     else "; nobody watches it")
            out.append(f"devices[{i}]: device {d.id!r} is on no panel: no group has a member "
                       f"owning it{extra}")
    for key, path in _tls_files(cfg):
        try:
            info = cert_info(cfg.path(path))
        except TlsError as exc:
            out.append(f"{key}: {exc}")
            continue
        left = info.not_after - now
        if left.total_seconds() <= 0:
            out.append(f"{key}: {path} expired on {info.not_after:%Y-%m-%d} (the gateway "
                       "refuses to start with it)")
        elif left <= dt.timedelta(days=EXPIRY_WARNING_DAYS):
            out.append(f"{key}: {path} expires in {left.days} day(s), on "
                       f"{info.not_after:%Y-%m-%d}: renew it (the gateway picks up the "
                       "renewed file without a restart)")
    if cfg.server.tls_cert is None and not cfg.server.listen.startswith(("127.", "[::1]",
                                                                           "localhost")):
        out.append(f"server.listen: {cfg.server.listen} is reachable from the network "
                   "without TLS: passwords and tokens travel in clear text (set tls_cert and "
                   "tls_key, or put a TLS proxy in front)")
    bridge = cfg.sources.tapi_bridge
    if bridge is not None and bridge.secret_file is None and not bridge.allow \
            and not bridge.listen.startswith(("127.", "[::1]", "localhost")):
        out.append(f"sources.tapi_bridge: {bridge.listen} accepts bridge connections from "
                   "anyone who reaches it: set secret_file and/or allow")
    return out


async def state_warnings(cfg: Config, store: Store) -> list[str]:
    """Warnings that need the gateway's state (Redis): clients that cannot log in for want
    of a password, monitors on devices no source reports."""
    from .model import DeviceStatus

    out: list[str] = []
    for i, c in enumerate(cfg.clients):
        if c.type == "nologin" or c.password_hash:
            continue
        record = await store.get_password(c.name)
        if not record.get("hash") and record.get("at_next_login") != "1":
            out.append(f"clients[{i}]: client {c.name!r} has no password and cannot log in "
                       f"(blf-gateway password {c.name} --generate, or --at-next-login)")
    _, devices, _ = await store.load_all()
    trusted = {s.device for s, _ in devices if s.status is not DeviceStatus.UNKNOWN}
    for i, c in enumerate(cfg.clients):
        for j, m in enumerate(c.monitor):
            if m.device not in trusted:
                out.append(f"clients[{i}].monitor[{j}]: device {m.device!r} is reported by "
                           "no source at the moment (its lamp is unknown): is its "
                           f"{cfg.device_by_id[m.device].source} line name right?")
    return out
