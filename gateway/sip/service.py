"""The SIP side of one gateway process: the BLF server that shows gateway lamps to desk
phones (the project's own SIP layer, on the asyncio loop), and the pjsua2 endpoint with the
presence line source on it. :class:`SipService` is the SIP
:class:`~gateway.linesource.LineSource`.

The SIP port (:class:`~gateway.sip.proto.transport.SipAgent`) listens on ``[sources.sip]
bind`` (UDP) and on ``tcp`` / ``tls`` where configured; on it the BLF server answers desk
phones, the native line source (:mod:`gateway.sip.lines`, ``watcher = "native"``, the
default) watches SIP lines and the registration (``registrar``) is kept. With ``watcher =
"pjsua2"`` a pjsua2 user agent on ``agent_bind`` (default: the same host, a free port) watches
presence lines and registers instead.

The BLF server reads the gateway through :class:`GatewayDirectory`: lamps and calls from the
engine, rendered with the subscribing client's rights (:mod:`gateway.panels.rights`, the one
place rights are applied), and the client's SIP digest HA1 from a copy re-read from Redis every
2 s. A changed HA1 or a configuration reload makes the server re-check every live
subscription at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from ..config import Config
from ..linesource import Lines, SourceEvents, device_lines
from ..model import Lamp
from ..panels.engine import Delta, Engine
from ..panels.rights import (
    FULL_RIGHTS,
    Rights,
    combined_rights,
    panel_rights,
    render_device,
    render_member,
    visible_panels,
)
from ..store import RedisError, Store
from .notifier import BlfView

__all__ = ["SipService", "GatewayDirectory", "HA1_REFRESH_SECONDS"]

log = logging.getLogger("gateway.sip")

HA1_REFRESH_SECONDS = 2.0
# Every client's HA1 is read again at least this often even when no password change was
# marked (a process of an older version does not mark it).
HA1_RECHECK_SECONDS = 30.0
STOP_TIMEOUT = 5.0


_NUMBERS = {"none": 0, "inbound": 1, "all": 2}


class GatewayDirectory:
    """What the BLF notifier reads: HA1s, targets, and each target as a client may see it."""

    def __init__(self, config: Callable[[], Config], engine: Callable[[], Engine],
                 ha1: dict[str, str]) -> None:
        self._config, self._engine, self._ha1 = config, engine, ha1

    def ha1(self, client: str) -> str | None:
        return self._ha1.get(client)

    def exists(self, target: str) -> bool:
        cfg = self._config()
        return target in cfg.device_by_id or target in cfg.client_by_name

    def rights(self, client: str, target: str) -> Rights | None:
        """A desk phone sees what its client may see: its own devices (main, and the
        hot-desk devices it holds now, with the same full rights), monitored devices and the
        devices of members of its visible panels (combined_rights), those members (the
        rights of its visible panels that show them), and itself."""
        cfg = self._config()
        if client not in cfg.client_by_name:
            return None
        if target in cfg.device_by_id:
            return combined_rights(cfg, client, target, self.temp_devices(client))
        if target not in cfg.client_by_name:
            return None
        if target == client:
            return FULL_RIGHTS
        found = [panel_rights(cfg.group_by_name[p], client)
                 for p in visible_panels(cfg, client)
                 if target in cfg.group_by_name[p].members]
        if not found:
            return None
        return Rights(calls=any(r.calls for r in found),
                      numbers=max((r.numbers for r in found), key=_NUMBERS.__getitem__),
                      pickup=any(r.pickup for r in found),
                      presence=any(r.presence for r in found))

    def temp_devices(self, client: str) -> tuple[str, ...]:
        """The hot-desk devices `client` holds now (its login computer's device)."""
        return self._engine().client_state(client).temp_devices

    def list_members(self, client: str, target: str) -> list[str] | None:
        """A resource list (a Yealink "BLF List") is one of the client's visible panels:
        its members, in the panel's order."""
        cfg = self._config()
        if client not in cfg.client_by_name or target not in visible_panels(cfg, client):
            return None
        return list(cfg.group_by_name[target].members)

    def view(self, client: str, target: str) -> BlfView | None:
        rights = self.rights(client, target)
        if rights is None:
            return None
        engine = self._engine()
        if target in self._config().device_by_id:
            shown = render_device(engine.device_view(target), rights)
        else:
            shown = render_member(engine.member(target), rights)
        return BlfView(Lamp(shown["lamp"]), tuple(shown["calls"]))

    def published(self, target: str, event: str, domain: str) -> bytes | None:
        """A target's body for a presence server: the lamp and calls without any number
        (whoever subscribes there sees it)."""
        from .dialoginfo import render_dialog_info
        from .presence import lamp_pidf

        cfg, engine = self._config(), self._engine()
        blind = Rights(calls=True, numbers="none")
        if target in cfg.device_by_id:
            shown = render_device(engine.device_view(target), blind)
        elif target in cfg.client_by_name:
            shown = render_member(engine.member(target), blind)
        else:
            return None
        entity = f"sip:{target}@{domain}"
        if event == "presence":
            if shown["lamp"] == Lamp.UNKNOWN.value:
                return lamp_pidf(entity, Lamp.OFFLINE, target).encode()
            return lamp_pidf(entity, shown["lamp"], target).encode()
        return render_dialog_info(entity, 0, shown["lamp"], shown["calls"]).encode()


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
        self.lines = None  # the native line source (SipLineSource)
        self.registration = None  # the native registration (SipRegistration)
        self.publisher = None  # PUBLISH to a presence server (SipPublisher)
        self._ha1: dict[str, str] = {}
        self._refresh: asyncio.Task | None = None
        # Hot-desk devices per client as last seen: a change (login at another desk, logout)
        # re-checks the live subscriptions, since a phone's rights follow them.
        self._desks: dict[str, tuple[str, ...]] = {}
        self.directory = GatewayDirectory(config, engine, self._ha1)

    async def start(self) -> None:
        """Serve desk phones, start the user agent where it has work, watch the lines."""
        from .blf_server import BlfServer

        cfg = self._config()
        scfg = cfg.sources.sip
        assert scfg is not None
        await self._load_ha1()  # before the first phone can ask
        self.blf_server = BlfServer(
            self.directory, udp=scfg.bind, tcp=scfg.tcp, tls=scfg.tls,
            certfile=str(cfg.path(scfg.tls_cert)) if scfg.tls_cert else None,
            keyfile=str(cfg.path(scfg.tls_key)) if scfg.tls_key else None,
            verify_peers=scfg.tls_verify,
            cafile=str(cfg.path(scfg.tls_ca)) if scfg.tls_ca else None)
        await self.blf_server.start()
        self._refresh = asyncio.create_task(self._refresh_ha1())
        if scfg.watcher == "native":
            await self._start_native()
        elif self._lines or scfg.registrar:
            await self._start_agent()
        if scfg.publish_to:
            await self._start_publisher()
        log.info("SIP: BLF server on %s; %d line(s) watched%s",
                 ", ".join(f"{t} {h}:{p}" for t, (h, p) in self.blf_server.addresses.items()),
                 len(self._lines), f" (user agent on {self.endpoint.host}:"
                 f"{self.endpoint.port})" if self.endpoint is not None else "")

    def _watch_lines(self) -> dict:
        from .watcher import WatchLine

        cfg = self._config()
        out = {}
        for uri, (device, _) in self._lines.items():
            d = cfg.device_by_id.get(device)
            out[uri] = WatchLine(uri, device, d.sip_event if d is not None else "presence")
        return out

    async def _start_native(self) -> None:
        from .lines import SipLineSource

        cfg = self._config()
        scfg = cfg.sources.sip
        assert scfg is not None and self.blf_server is not None
        credentials = self._credentials()
        self.lines = SipLineSource(
            self.blf_server.agent, self._watch_lines(),
            lambda reports: self.handler.reports(self.name, reports),
            lambda conn: self.handler.connection_lost(self.name, conn),
            identity=scfg.username or "blf-gateway", credentials=credentials,
            probe=scfg.probe_seconds)
        if scfg.registrar:
            from .lines import SipRegistration, peer_of_uri

            # Lines are subscribed once the registration that carries them stands.
            self.lines.core.suspended = True
            aor = f"sip:{scfg.username or 'blf-gateway'}@{peer_of_uri(scfg.registrar).host}"
            self.registration = SipRegistration(self.blf_server.agent, scfg.registrar, aor,
                                                credentials=credentials, lines=self.lines)
        await self.lines.start()
        if self.registration is not None:
            await self.registration.start()

    async def _start_publisher(self) -> None:
        from .lines import SipPublisher, peer_of_uri

        cfg = self._config()
        scfg = cfg.sources.sip
        assert scfg is not None and scfg.publish_to and self.blf_server is not None
        domain = scfg.publish_domain or peer_of_uri(scfg.publish_to).host
        self.publisher = SipPublisher(
            self.blf_server.agent, scfg.publish_to, domain,
            lambda: [*self._config().device_by_id, *self._config().client_by_name],
            lambda target, event: self.directory.published(target, event, domain),
            events=scfg.publish_events, credentials=self._credentials())
        await self.publisher.start()

    def _credentials(self) -> tuple[str, str] | None:
        cfg = self._config()
        scfg = cfg.sources.sip
        if scfg is not None and scfg.username and scfg.password_file:
            return (scfg.username, cfg.path(scfg.password_file).read_text().strip())
        return None

    @property
    def healthy(self) -> bool:
        """Whether the SIP side does its job: the BLF server listens, and where lines are
        watched at least one delivers state (a PBX refusing every SUBSCRIBE is not up)."""
        if self.blf_server is None or self.blf_server.agent is None:
            return False
        if self.registration is not None and not self.registration.up:
            return False
        if self.publisher is not None and not self.publisher.healthy:
            return False
        if self.lines is not None:
            return self.lines.healthy
        return True

    async def _start_agent(self) -> None:
        from .endpoint import SipEndpoint, split_hostport
        from .source import SipPresenceSource

        cfg = self._config()
        scfg = cfg.sources.sip
        assert scfg is not None
        bind = scfg.agent_bind or f"{split_hostport(scfg.bind)[0]}:0"
        self.endpoint = SipEndpoint(
            bind, registrar=scfg.registrar, username=scfg.username,
            password_file=str(cfg.path(scfg.password_file)) if scfg.password_file else None)
        await asyncio.to_thread(self.endpoint.start)
        self.source = SipPresenceSource(
            self.endpoint, device_lines(self._lines),
            lambda reports: self.handler.reports(self.name, reports),
            lambda conn: self.handler.connection_lost(self.name, conn))
        await self.source.start()

    async def stop(self) -> None:
        """End the desk phones' subscriptions (they come back after a restart), unsubscribe
        the presence source, stop the user agent."""
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        for part in ("publisher", "registration", "lines", "blf_server", "source"):
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
        subscription); re-check the desk phones' subscriptions against the new rights."""
        self._lines = dict(lines)
        if self.lines is not None:
            await self.lines.update_lines(self._watch_lines())
        elif self.source is not None:
            await self.source.update_lines(device_lines(self._lines))
        elif self._lines and self.endpoint is None:
            log.warning("SIP: lines to watch appeared; the presence source starts at the "
                        "next restart")
        if self.blf_server is not None:
            self.blf_server.recheck()

    def lamps_changed(self, deltas: Iterable[Delta]) -> None:
        """Engine deltas: NOTIFY the desk phones that see a difference."""
        deltas = list(deltas)
        keys = {d.key for d in deltas}
        if self.blf_server is not None:
            self.blf_server.changed(keys)
            if self._desks_moved(d.key for d in deltas if d.kind == "member"):
                self.blf_server.recheck()
        if self.publisher is not None:
            self.publisher.changed(keys)

    def _desks_moved(self, clients: Iterable[str]) -> bool:
        """Whether a client's hot-desk devices changed (its member view changed with them)."""
        moved = False
        for client in clients:
            now = self.directory.temp_devices(client)
            if self._desks.get(client, ()) != now:
                moved = True
                if now:
                    self._desks[client] = now
                else:
                    self._desks.pop(client, None)
        return moved

    # -- digest credentials -----------------------------------------------------------------

    async def _load_ha1(self) -> bool:
        """Re-read every client's HA1 (one pipelined round trip); True when one changed."""
        changed = False
        names = [name for name, c in self._config().client_by_name.items()
                 if c.type != "nologin"]
        ha1s = await self.store.ha1s(names)
        for name in names:
            ha1 = ha1s[name]
            if ha1 and self._ha1.get(name) != ha1:
                self._ha1[name] = ha1
                changed = True
            elif not ha1 and name in self._ha1:
                del self._ha1[name]
                changed = True
        for gone in set(self._ha1) - set(names):
            del self._ha1[gone]
            changed = True
        return changed

    async def _refresh_ha1(self) -> None:
        """Digests are checked against this copy (a SUBSCRIBE cannot wait for Redis): a
        changed password reaches desk phones within 2 s and ends their subscriptions.

        Every 2 s this reads one marker (`Store.passwords_version`, moved by every password
        change) and re-reads the HA1s only when it moved, when the configuration was
        reloaded (clients may have come or gone), or every HA1_RECHECK_SECONDS. It read
        every client's password, one round trip each, every 2 s: 1,000 round trips at
        1,000 clients."""
        last: object = object()  # nothing read yet
        last_config: Config | None = None
        last_full = float("-inf")
        while True:
            await asyncio.sleep(HA1_REFRESH_SECONDS)
            try:
                # Read before the HA1s: a change after this read moves it again.
                marker = await self.store.passwords_version()
                config = self._config()  # a reload replaces it: clients may have come or gone
                now = time.monotonic()
                if (marker == last and config is last_config
                        and now - last_full < HA1_RECHECK_SECONDS):
                    continue
                if await self._load_ha1() and self.blf_server is not None:
                    self.blf_server.recheck()
                last, last_config, last_full = marker, config, now
            except (RedisError, OSError):
                pass
