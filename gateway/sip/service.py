"""The SIP side of one gateway process: the pjsua2 endpoint, the presence line source on it,
and the BLF server that shows gateway lamps to desk phones.

:class:`SipService` starts and stops the three together (one endpoint per process: pjsua2
aborts on a second); it is the SIP :class:`~gateway.linesource.LineSource`. The BLF server
answers on the pjsua thread and cannot wait for the loop, so this service keeps plain-dict
copies it reads there: the lamp of every device and client (updated from the engine's
deltas, :meth:`SipService.lamps_changed`) and the SIP digest HA1 of every client (re-read
from Redis every 2 s, so a new password reaches desk phones quickly). Both dicts are only
changed item by item from the loop: each a single atomic store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from ..config import Config
from ..linesource import Lines, SourceEvents, device_lines
from ..panels.engine import Delta, Engine
from ..panels.rights import combined_rights, visible_panels
from ..store import RedisError, Store

__all__ = ["SipService", "HA1_REFRESH_SECONDS"]

log = logging.getLogger("gateway.sip")

HA1_REFRESH_SECONDS = 2.0
STOP_TIMEOUT = 5.0


class SipService:
    """Endpoint + presence source + BLF server. `lines` are the SIP URIs watched; what the
    presence source says goes to `handler` (on the loop); `engine()` and `config()` are read
    when lamps are (re)loaded and when a desk phone subscribes."""

    name = "sip"

    def __init__(
        self,
        config: Callable[[], Config],
        store: Store,
        engine: Callable[[], Engine],
        lines: Lines,
        handler: SourceEvents,
    ) -> None:
        self._config = config
        self.store = store
        self._engine = engine
        self._lines = dict(lines)
        self.handler = handler
        self.endpoint = None
        self.source = None
        self.blf_server = None
        self._lamps: dict[str, str] = {}
        self._ha1: dict[str, str] = {}
        self._refresh: asyncio.Task | None = None

    async def start(self) -> None:
        """Start the user agent, watch the lines, serve desk phones."""
        from .blf_server import BlfServer
        from .endpoint import SipEndpoint
        from .source import SipPresenceSource

        cfg = self._config()
        scfg = cfg.sources.sip
        assert scfg is not None
        self.endpoint = SipEndpoint(
            scfg.bind, registrar=scfg.registrar, username=scfg.username,
            password_file=str(cfg.path(scfg.password_file)) if scfg.password_file else None)
        await asyncio.to_thread(self.endpoint.start)
        self.source = SipPresenceSource(
            self.endpoint, device_lines(self._lines),
            lambda reports: self.handler.reports(self.name, reports),
            lambda conn: self.handler.connection_lost(self.name, conn))
        await self.source.start()
        self._lamps.clear()
        self._reload_lamps()
        await self._load_ha1()  # before the first phone can ask
        self.blf_server = BlfServer(self.endpoint, self._lookup, self._authorize, self._ha1.get)
        await self.blf_server.start()
        self._refresh = asyncio.create_task(self._refresh_ha1())
        log.info("SIP user agent on %s (presence source for %d device(s), BLF server)",
                 scfg.bind, len(self._lines))

    async def stop(self) -> None:
        """Unsubscribe and end the desk phones' subscriptions, then stop the user agent."""
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        for part in ("source", "blf_server"):
            obj = getattr(self, part)
            if obj is not None:
                try:
                    await asyncio.wait_for(obj.stop(), STOP_TIMEOUT)
                except (asyncio.TimeoutError, Exception):
                    log.exception("stopping the SIP %s", part)
                setattr(self, part, None)
        if self.endpoint is not None:
            await asyncio.to_thread(self.endpoint.stop)
            self.endpoint = None

    async def update_lines(self, lines: Lines) -> None:
        """A configuration reload: watch the new lines (unchanged ones keep their
        subscription); desk phones may ask for the lamps of their devices at once."""
        self._lines = dict(lines)
        if self.source is not None:
            await self.source.update_lines(device_lines(self._lines))
        for device, _ in self._lines.values():
            self._lamps.setdefault(device, "unknown")

    def lamps_changed(self, deltas: Iterable[Delta]) -> None:
        """Engine deltas: NOTIFY the desk phones whose lamp changed."""
        if self.blf_server is None:
            return
        for d in deltas:
            lamp = d.view.lamp.value
            if self._lamps.get(d.key) != lamp:
                self._lamps[d.key] = lamp
                self.blf_server.lamp_changed(d.key, lamp)

    # -- read on the pjsua thread ---------------------------------------------------------

    def _reload_lamps(self) -> None:
        cfg, engine = self._config(), self._engine()
        for d in cfg.device_by_id:
            self._lamps[d] = engine.device_view(d).lamp.value
        for c in cfg.client_by_name:
            self._lamps[c] = engine.member(c).lamp.value

    def _lookup(self, subscriber: str, target: str) -> tuple[str, str] | None:
        lamp = self._lamps.get(target)
        if lamp is None:
            return None
        return ("device" if target in self._config().device_by_id else "client", lamp)

    def _authorize(self, subscriber: str, target: str) -> bool:
        """A desk phone sees what its client may see: its own and monitored devices,
        devices of members of its visible panels, and those members."""
        cfg = self._config()
        if subscriber not in cfg.client_by_name:
            return False
        panels = visible_panels(cfg, subscriber)
        if target in cfg.client_by_name:
            return target == subscriber or any(
                target in cfg.group_by_name[p].members for p in panels)
        if target in cfg.device_by_id:
            return combined_rights(cfg, subscriber, target) is not None
        return False

    # -- digest credentials -----------------------------------------------------------------

    async def _load_ha1(self) -> None:
        for name, c in self._config().client_by_name.items():
            if c.type == "nologin":
                continue
            ha1 = (await self.store.get_password(name)).get("ha1")
            if ha1:
                self._ha1[name] = ha1
            else:
                self._ha1.pop(name, None)

    async def _refresh_ha1(self) -> None:
        """The SIP thread checks digests against this copy (it cannot wait for Redis): a
        changed password reaches desk phones within 2 s."""
        while True:
            await asyncio.sleep(HA1_REFRESH_SECONDS)
            try:
                await self._load_ha1()
            except (RedisError, OSError):
                pass
