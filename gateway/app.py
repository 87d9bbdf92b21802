"""The gateway process: wires the sources, the store, the engine and the WebSocket server.

Data flows one way: a source's reports -> its LineTracker -> changed device states ->
:class:`Publisher` -> Redis (entity + change log) -> every process's log follower ->
:class:`~gateway.panels.engine.Engine` -> deltas -> :class:`~gateway.server.hub.Hub` ->
client outboxes. Client requests that change state (softphone, selected device, presence,
logins) take the same path through Redis, so every process sees the same changes in the
same order.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

from .calls import CallReport, LineTracker, ServiceReport
from .clients import Clients
from .config import Config, ConfigError, load_config, parse_hostport
from .model import DeviceState, DeviceStatus
from .panels.engine import Engine
from .server.hub import Hub
from .server.http import HttpRoutes
from .server.login import Auth
from .server.session import Session
from .store import EmbeddedRedis, RedisError, Store, encode_device, wait_for_redis
from .journal import Journal
from .pickup import Pickups
from .tapi.ami import AmiSource
from .tapi.bridge import TapiBridgeServer

__all__ = ["Gateway", "Publisher"]

log = logging.getLogger("gateway")

HEARTBEAT_SECONDS = 1.0
HEARTBEAT_TTL_MS = 3000  # a process silent this long is taken for dead
LEASE_TTL_MS = 3000  # so another process takes a source over within about 4 s
YIELD_DELIVERIES = 4000  # socket writes before the loop gets a turn for other work
LISTEN_BACKLOG = 4096  # a reconnect storm of thousands of clients queues, not refused


class Publisher:
    """Publishes device states, newest per device, in batches; retries while Redis is away.

    Sources call :meth:`put` without waiting; one task writes whatever accumulated while the
    previous round trip was in flight, so a burst becomes a few pipelined round trips.
    """

    def __init__(self, store: Store, pid: str = "") -> None:
        self.store = store
        self.pid = pid
        self._owned: set[str] = set()  # devices this process has told Redis it owns
        self._dirty: dict[str, DeviceState] = {}
        self._wake = asyncio.Event()
        self.published = 0
        self.healthy = True

    def put(self, states: list[DeviceState]) -> None:
        for s in states:
            self._dirty.pop(s.device, None)
            self._dirty[s.device] = s
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                batch = self._dirty
                self._dirty = {}
                items = [("device", d, encode_device(s)) for d, s in batch.items()]
                try:
                    for i in range(0, len(items), 1000):
                        await self.store.publish(items[i : i + 1000])
                    new = [d for d in batch if d not in self._owned]
                    if new and self.pid:
                        await self.store.set_owner(new, self.pid)
                        self._owned.update(new)
                    self.published += len(items)
                    self.healthy = True
                except (RedisError, OSError) as exc:
                    self.healthy = False
                    # Keep what failed, unless a newer state for the device came meanwhile.
                    for d, s in batch.items():
                        self._dirty.setdefault(d, s)
                    log.warning("publishing %d device state(s) failed (%s); will retry",
                                len(batch), exc)
                    await wait_for_redis(self.store)


class Gateway:
    """One gateway process. `run()` until `stop()` (or SIGINT/SIGTERM in the CLI)."""

    def __init__(self, config: Config, config_path: str | Path | None = None) -> None:
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        self.log = log
        self.metrics: Counter[str] = Counter()
        self.started = time.time()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.embedded: EmbeddedRedis | None = None
        self.redis_up = False
        self.trackers: dict[str, LineTracker] = {}
        self.bridge: TapiBridgeServer | None = None
        self.ami: AmiSource | None = None
        self.sip_endpoint = self.sip_source = self.blf_server = None
        self._ami_task: asyncio.Task | None = None
        self.ready = asyncio.Event()
        self.ws_port: int | None = None
        # This process's identity in Redis: its liveness key, the devices it owns, its leases.
        self.pid = uuid.uuid4().hex[:12]
        self.leases: set[str] = set()
        self.redis_latency = 0.0  # seconds, measured by the keepalive every second

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._start()
            self.ready.set()
            await self._stop.wait()
        finally:
            await self._shutdown()

    def stop(self) -> None:
        self._stop.set()

    async def _start(self) -> None:
        cfg = self.config
        if cfg.redis is None:
            self.embedded = EmbeddedRedis(cfg.path(cfg.state.dir))
            url = await asyncio.to_thread(self.embedded.start)
        else:
            url = cfg.redis.url
        self.store = Store(url)
        await wait_for_redis(self.store, self._stop)
        self.redis_up = True
        config_seq = await self.store.stamp_config(cfg.digest)
        self.engine = Engine(cfg, config_seq)
        self.hub = Hub(cfg)
        self.clients = Clients(self)
        self.auth = Auth(self)
        self.pickups = Pickups(self)
        self.journal = Journal(self)
        self.publisher = Publisher(self.store, self.pid)
        self._log_pos = await self._load_state()

        # Sources: a new connection knows nothing yet, so their devices start unknown.
        if cfg.sources.tapi_bridge is not None:
            tracker = self.trackers["tapi_bridge"] = LineTracker(self._devices_of("tapi_bridge"))
            host, port = parse_hostport(cfg.sources.tapi_bridge.listen)
            self.bridge = TapiBridgeServer(
                host, port, tracker, lambda: self._lines("tapi_bridge"),
                lambda states, t=tracker: self._source_update(t, states),
                max_line_bytes=cfg.sources.tapi_bridge.max_line_bytes,
            )
            await self.bridge.start()
            # Its devices stay as Redis has them until a bridge reports: unknown on a fresh
            # state, or made unknown by the janitor when the process that owned them is gone.
        if cfg.sources.ami is not None:
            self.trackers["ami"] = LineTracker(self._devices_of("ami"))
        # The Asterisk login and the SIP user agent are held by one process at a time (a
        # lease in Redis): see _leases.

        await self.store.heartbeat(self.pid, HEARTBEAT_TTL_MS)
        await self._leases()  # take what is free now, before serving

        self.http = HttpRoutes(self)
        from websockets.asyncio.server import serve

        host, port = parse_hostport(cfg.server.listen)
        self.ws_server = await serve(
            self._ws_handler,
            host,
            port,
            process_request=self.http.process_request,
            # Frames up to 4x the limit are read and refused with an error; beyond that the
            # connection is closed (1009) before the frame is even buffered.
            max_size=4 * cfg.server.max_message_bytes,
            compression=None,
            ping_interval=20,
            ping_timeout=20,
            max_queue=16,
            backlog=LISTEN_BACKLOG,
        )
        self.ws_port = self.ws_server.sockets[0].getsockname()[1]
        log.info("WebSocket and web panel on http://%s:%d/ (ws path /ws)", host, self.ws_port)

        for coro in (self.publisher.run(), self._follow_log(), self._watch_config(),
                     self._timers(), self.journal.run(), self._presence_import(),
                     self._keepalive()):
            self._tasks.append(asyncio.create_task(coro))

    def _holds(self, source: str) -> bool:
        """Whether this process speaks for a source: every process listens for TAPI
        bridges; the Asterisk and SIP connections go with their lease."""
        return source == "tapi_bridge" or source in self.leases

    def _reports_to(self, tracker: LineTracker):  # noqa: ANN202
        """The callback a source adapter hands its reports to (on the loop's thread)."""

        def on_reports(reports: list[CallReport | ServiceReport]) -> None:
            now = time.time()
            changed: dict[str, DeviceState] = {}
            for r in reports:
                states = (tracker.call(r, now) if isinstance(r, CallReport)
                          else tracker.service(r, now))
                for st in states:
                    changed[st.device] = st
            if changed:
                self._source_update(tracker, list(changed.values()))

        return on_reports

    def _source_update(self, tracker: LineTracker, states: list[DeviceState]) -> None:
        """A source changed device states: publish them, journal the calls that ended."""
        self.publisher.put(states)
        ended = tracker.take_ended()
        if ended:
            self.journal.record(ended)

    # -- SIP: presence source and BLF server for desk phones ------------------------------

    async def _start_sip(self) -> None:
        from .sip.blf_server import BlfServer
        from .sip.endpoint import SipEndpoint
        from .sip.source import SipPresenceSource

        scfg = self.config.sources.sip
        assert scfg is not None
        tracker = self.trackers["sip"] = LineTracker(self._devices_of("sip"))
        self.publisher.put([tracker.state(d) for d in tracker.devices])
        self.sip_endpoint = SipEndpoint(
            scfg.bind, registrar=scfg.registrar, username=scfg.username,
            password_file=str(self.config.path(scfg.password_file)) if scfg.password_file
            else None)
        await asyncio.to_thread(self.sip_endpoint.start)

        def on_lost(conn: str | None) -> None:
            self.publisher.put(tracker.connection_lost(conn))

        self.sip_source = SipPresenceSource(self.sip_endpoint, self._sip_line_map(),
                                            self._reports_to(tracker), on_lost)
        await self.sip_source.start()
        # The BLF server reads these on the SIP thread: plain dicts, only replaced whole or
        # item by item from the loop (each a single atomic store).
        self._sip_lamps: dict[str, str] = {}
        self._sip_ha1: dict[str, str] = {}
        self._refresh_sip_lamps()
        await self._load_ha1()  # before the first phone can ask
        self.blf_server = BlfServer(self.sip_endpoint, self._sip_lookup, self._sip_authorize,
                                    self._sip_ha1.get)
        await self.blf_server.start()
        self._tasks.append(asyncio.create_task(self._refresh_ha1()))
        log.info("SIP user agent on %s (presence source for %d device(s), BLF server)",
                 scfg.bind, len(tracker.devices))

    def _sip_line_map(self) -> dict[str, str]:
        return {line: dev for line, (dev, _) in self._lines("sip").items()}

    def _refresh_sip_lamps(self) -> None:
        for d in self.config.device_by_id:
            self._sip_lamps[d] = self.engine.device_view(d).lamp.value
        for c in self.config.client_by_name:
            self._sip_lamps[c] = self.engine.member(c).lamp.value

    def _sip_lookup(self, subscriber: str, target: str) -> tuple[str, str] | None:
        lamp = self._sip_lamps.get(target)
        if lamp is None:
            return None
        return ("device" if target in self.config.device_by_id else "client", lamp)

    def _sip_authorize(self, subscriber: str, target: str) -> bool:
        """A desk phone sees what its client may see: its own and monitored devices,
        devices of members of its visible panels, and those members."""
        from .panels.rights import combined_rights, visible_panels

        cfg = self.config
        if subscriber not in cfg.client_by_name:
            return False
        panels = visible_panels(cfg, subscriber)
        if target in cfg.client_by_name:
            return target == subscriber or any(
                target in cfg.group_by_name[p].members for p in panels)
        if target in cfg.device_by_id:
            return combined_rights(cfg, subscriber, target) is not None
        return False

    async def _load_ha1(self) -> None:
        for name, c in self.config.client_by_name.items():
            if c.type == "nologin":
                continue
            ha1 = (await self.store.get_password(name)).get("ha1")
            if ha1:
                self._sip_ha1[name] = ha1
            else:
                self._sip_ha1.pop(name, None)

    async def _refresh_ha1(self) -> None:
        """The SIP thread checks digests against this copy (it cannot wait for Redis): a
        changed password reaches desk phones within 2 s."""
        while True:
            await asyncio.sleep(2.0)
            try:
                await self._load_ha1()
            except (RedisError, OSError):
                pass

    async def _fan_out(self, deltas: list) -> None:
        """Deliver a read batch's deltas, giving the loop a turn every few thousand socket
        writes so that requests are answered during a burst. A batch may change one view
        many times: only its newest state goes out (each delta is a full state), so a client
        that subscribes during a pause never gets an older state after its snapshot."""
        if len(deltas) > 1:
            newest = {(d.kind, d.key): d for d in deltas}
            if len(newest) < len(deltas):
                deltas = sorted(newest.values(), key=lambda d: d.seq)
        # Chunks sized so that one chunk costs about YIELD_DELIVERIES socket writes: a client
        # that takes batches takes a whole chunk in one write, the others one per change.
        step = min(500, max(1, YIELD_DELIVERIES // max(1, self.hub.unbatched_count())))
        for i in range(0, len(deltas), step):
            self._deliver(deltas[i : i + step])
            if i + step < len(deltas):
                await asyncio.sleep(0)

    def _deliver(self, deltas) -> None:  # noqa: ANN001
        """Hand deltas to the WebSocket fan-out and to the desk phones' BLF server."""
        if not deltas:
            return
        self.hub.deliver(deltas)
        if self.blf_server is not None:
            for d in deltas:
                lamp = d.view.lamp.value
                if self._sip_lamps.get(d.key) != lamp:
                    self._sip_lamps[d.key] = lamp
                    self.blf_server.lamp_changed(d.key, lamp)

    # -- several processes: liveness, the janitor, leases --------------------------------

    async def _keepalive(self) -> None:
        """Every second: say we are alive, renew or take leases, clean up after the dead."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                self.redis_latency = await self.store.ping()
                await self.store.heartbeat(self.pid, HEARTBEAT_TTL_MS)
                await self._leases()
                await self._janitor()
            except (RedisError, OSError) as exc:
                log.debug("keepalive: Redis away (%s)", exc)

    async def _leases(self) -> None:
        for name in ("ami", "sip"):
            if getattr(self.config.sources, name) is None:
                continue
            held = await self.store.lease(name, self.pid, LEASE_TTL_MS)
            running = (self.ami is not None) if name == "ami" else (self.sip_source is not None)
            if held and not running:
                log.info("took the %s lease: this process now holds the %s connection",
                         name, "Asterisk" if name == "ami" else "SIP")
                self.leases.add(name)
                if name == "ami":
                    self.publisher.put([self.trackers["ami"].state(d)
                                        for d in self.trackers["ami"].devices])
                    self._start_ami()
                else:
                    await self._start_sip()
            elif not held and running:
                log.warning("lost the %s lease to another process: stopping that source", name)
                self.leases.discard(name)
                await self._stop_source(name)

    async def _stop_source(self, name: str) -> None:
        if name == "ami" and self.ami is not None:
            await self.ami.close()
            if self._ami_task is not None:
                self._ami_task.cancel()
            self.ami = None
        elif name == "sip":
            for part in ("sip_source", "blf_server"):
                obj = getattr(self, part, None)
                if obj is not None:
                    try:
                        await asyncio.wait_for(obj.stop(), 5)
                    except (asyncio.TimeoutError, Exception):
                        log.exception("stopping %s", part)
                setattr(self, part, None)
            if self.sip_endpoint is not None:
                await asyncio.to_thread(self.sip_endpoint.stop)
                self.sip_endpoint = None

    async def _janitor(self) -> None:
        """Devices owned by a process that is gone turn unknown (its source connection went
        with it); the process that takes over re-syncs them."""
        owners = await self.store.owners()
        if not owners:
            return
        alive = await self.store.alive()
        dead = [(d, p) for d, p in owners.items() if p not in alive and p != self.pid]
        for device, pid in dead:
            if await self.store.drop_owner(device, pid) and device in self.config.device_by_id:
                log.warning("device %s: its owner process %s is gone: unknown until its "
                            "source reports again", device, pid)
                await self.store.publish([("device", device, encode_device(DeviceState(device)))])

    # -- the Asterisk source --------------------------------------------------------------

    def _ami_line_map(self) -> dict[str, str]:
        return {line: dev for line, (dev, _) in self._lines("ami").items()}

    def _start_ami(self) -> None:
        acfg = self.config.sources.ami
        assert acfg is not None
        tracker = self.trackers["ami"]

        def on_lost() -> None:
            lost = tracker.connection_lost()
            log.warning("Asterisk connection lost: %d device(s) unknown until re-synced",
                        len(lost))
            self.publisher.put(lost)

        self.ami = AmiSource(
            acfg.host, acfg.port, acfg.username, self.config.path(acfg.secret_file),
            self._ami_line_map(), self._reports_to(tracker), on_lost,
            on_synced=lambda: log.info("Asterisk state re-synced"),
        )
        self._ami_task = asyncio.create_task(self.ami.run())
        self._ami_lines_in_use = self._ami_line_map()

    async def _restart_ami(self) -> None:
        if self.ami is not None:
            await self.ami.close()
        if self._ami_task is not None:
            self._ami_task.cancel()
            try:
                await self._ami_task
            except (asyncio.CancelledError, Exception):
                pass
        self.publisher.put(self.trackers["ami"].connection_lost())
        self._start_ami()

    async def _shutdown(self) -> None:
        for part in ("sip_source", "blf_server"):
            obj = getattr(self, part, None)
            if obj is not None:
                try:
                    await asyncio.wait_for(obj.stop(), 5)
                except (asyncio.TimeoutError, Exception):
                    log.exception("stopping %s", part)
        if getattr(self, "sip_endpoint", None) is not None:
            await asyncio.to_thread(self.sip_endpoint.stop)
        if self.ami is not None:
            try:
                await asyncio.wait_for(self.ami.close(), 5)
            except (asyncio.TimeoutError, Exception):
                pass
        if self._ami_task is not None:
            self._ami_task.cancel()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        if getattr(self, "ws_server", None) is not None:
            self.ws_server.close()
            try:
                await asyncio.wait_for(self.ws_server.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass
        if self.bridge is not None:
            await self.bridge.close()
        if getattr(self, "store", None) is not None:
            try:
                # Leave the source's devices unknown: nobody reports them while we are down.
                states = [s for t in self.trackers.values() for s in t.connection_lost()]
                if states:
                    await asyncio.wait_for(
                        self.store.publish([("device", s.device, encode_device(s))
                                            for s in states]), 2)
            except (RedisError, OSError, asyncio.TimeoutError):
                pass
            for name in list(self.leases):
                try:
                    await asyncio.wait_for(self.store.release(name, self.pid), 2)
                except (RedisError, OSError, asyncio.TimeoutError):
                    pass
            await self.store.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        log.info("gateway stopped")

    # -- configuration --------------------------------------------------------------------

    def _devices_of(self, source: str) -> list[str]:
        return [d.id for d in self.config.devices if d.source == source]

    def _lines(self, source: str) -> dict[str, tuple[str, str]]:
        cache = getattr(self, "_lines_cache", None)
        if cache is None or cache[0] is not self.config:
            mapping: dict[str, dict[str, tuple[str, str]]] = {}
            for d in self.config.devices:
                mapping.setdefault(d.source, {})[d.line_name] = (d.id, d.number)
            cache = self._lines_cache = (self.config, mapping)
        return cache[1].get(source, {})

    async def _watch_config(self) -> None:
        if self.config_path is None:
            return
        path = self.config_path

        def stamp() -> tuple[int, int] | None:
            try:
                st = path.stat()
                return st.st_mtime_ns, st.st_size
            except OSError:
                return None

        seen = stamp()
        while True:
            await asyncio.sleep(0.5)
            now = stamp()
            if now == seen:
                continue
            seen = now
            try:
                new = load_config(path)
            except ConfigError as exc:
                log.error("configuration %s NOT applied, keeping the last good one:\n  %s",
                          path, "\n  ".join(exc.errors))
                self.metrics["config_rejected"] += 1
                continue
            if new.digest == self.config.digest:
                continue
            try:
                await self.apply_config(new)
            except (RedisError, OSError) as exc:
                log.error("configuration change not applied (Redis away: %s); will retry", exc)
                seen = None

    async def apply_config(self, new: Config) -> None:
        old = self.config
        for key in ("server", "redis", "state", "sources"):
            if key != "server" and getattr(old, key) != getattr(new, key):
                log.warning("configuration: [%s] changed; that takes a restart", key)
        if old.server.listen != new.server.listen:
            log.warning("configuration: server.listen changed; that takes a restart")
        seq = await self.store.stamp_config(new.digest)
        self.config = new
        deltas, reshaped = self.engine.reconfigure(new, seq)
        self.hub.reconfigure(new)
        for source, tracker in self.trackers.items():
            wanted = set(self._devices_of(source))
            for d in set(tracker.devices) - wanted:
                tracker.remove_device(d)
            for d in wanted - set(tracker.devices):
                tracker.add_device(d)
                if self._holds(source) and source != "tapi_bridge":
                    self.publisher.put([tracker.state(d)])
        if self.sip_source is not None:
            await self.sip_source.update_lines(self._sip_line_map())
            for d in self._devices_of("sip"):
                self._sip_lamps.setdefault(d, "unknown")
        if self.ami is not None and self._ami_line_map() != self._ami_lines_in_use:
            log.info("AMI lines changed: reconnecting to Asterisk to re-sync them")
            await self._restart_ami()
        for session in [s for subs in self.clients.sessions.values() for s in subs]:
            session.revalidate(reshaped)
        self._deliver(deltas)
        self.metrics["config_reloads"] += 1
        log.info("configuration reloaded (%d devices, %d clients, %d groups)",
                 len(new.devices), len(new.clients), len(new.groups))

    # -- shared state ---------------------------------------------------------------------

    async def _load_state(self) -> int:
        last, devices, clients = await self.store.load_all()
        known = self.config.device_by_id
        self.engine.load([(s, q) for s, q in devices if s.device in known], clients)
        return last

    async def _follow_log(self) -> None:
        after = self._log_pos
        while True:
            try:
                changes = await self.store.read_log(after, block_ms=1000, count=500)
            except (RedisError, OSError) as exc:
                after = await self._redis_lost(exc)
                continue
            if changes and after and changes[0].seq != after + 1:
                log.warning("change log moved past us (%d -> %d): reloading all state",
                            after, changes[0].seq)
                after = await self._reload()
                continue
            deltas = []
            for ch in changes:
                after = ch.seq
                self.metrics["changes_in"] += 1
                if ch.kind == "device":
                    if ch.id in self.config.device_by_id:
                        deltas.extend(self.engine.update_device(ch.state, ch.seq))  # type: ignore[arg-type]
                elif ch.kind == "client":
                    deltas.extend(self.engine.update_client(ch.state, ch.seq))  # type: ignore[arg-type]
            if deltas:
                await self._fan_out(deltas)

    async def _redis_lost(self, exc: Exception) -> int:
        log.error("lost Redis (%s): every lamp is unknown until it is back", exc)
        self.redis_up = False
        self._deliver(self.engine.set_trusted(False))
        await wait_for_redis(self.store)
        log.info("Redis is back: reloading the shared state")
        return await self._reload()

    async def _reload(self) -> int:
        last = await self.store.last_seq()
        if last < self.engine.seq:
            # Redis lost its data (restarted without persistence): start the views afresh.
            log.warning("Redis lost its state (seq %d < %d): rebuilding", last, self.engine.seq)
            config_seq = await self.store.stamp_config(self.config.digest)
            self.engine = Engine(self.config, config_seq)
        last, devices, clients = await self.store.load_all()
        known = self.config.device_by_id
        deltas = self.engine.load([(s, q) for s, q in devices if s.device in known], clients)
        deltas += self.engine.set_trusted(True)
        self.redis_up = True
        self._deliver(deltas)
        # What our sources and sessions know may be missing from a Redis that restarted.
        for source, tracker in self.trackers.items():
            if self._holds(source):
                self.publisher.put([tracker.state(d) for d in tracker.devices
                                    if tracker.state(d).status is not DeviceStatus.UNKNOWN
                                    or source != "tapi_bridge"])
        await self.clients.republish()
        return last

    async def _timers(self) -> None:
        """Deadlines of the pure parts (ended-call memory), without a busy loop."""
        while True:
            now = time.time()
            deadlines = [d for t in self.trackers.values() if (d := t.next_deadline())]
            for t in self.trackers.values():
                t.tick(now)
            nxt = min(deadlines, default=now + 5.0)
            await asyncio.sleep(min(max(nxt - now, 0.05), 5.0))

    async def _presence_import(self) -> None:
        """Apply the admin's presence CSV: re-read when it changes, rows start and end by
        themselves (the pure part says when the next change is due)."""
        from .presence_import import in_force, next_change, parse_presence_csv

        seen: tuple | None = None
        rows: list = []
        applied: dict[str, tuple[str, str | None]] = {}
        while True:
            pcfg = self.config.presence
            path = self.config.path(pcfg.import_file) if pcfg.import_file else None
            try:
                st = path.stat() if path else None
                stamp = (str(path), st.st_mtime_ns, st.st_size) if st else None
            except OSError:
                stamp = None
            if stamp != seen:
                seen = stamp
                if stamp is None:
                    rows = []
                else:
                    try:
                        text = path.read_text(encoding="utf-8")  # type: ignore[union-attr]
                    except (OSError, UnicodeDecodeError) as exc:
                        log.error("presence import %s: cannot read: %s", path, exc)
                        text = ""
                    rows, errors = parse_presence_csv(text, set(self.config.client_by_name))
                    for e in errors:
                        log.error("presence import %s: %s (row skipped)", path, e)
                    self.metrics["presence_rows_rejected"] += len(errors)
                    log.info("presence import %s: %d row(s) applied, %d rejected",
                             path, len(rows), len(errors))
            now = time.time()
            want = {c: (r.status, r.info) for c, r in in_force(rows, now).items()}
            try:
                for client in set(applied) | set(want):
                    status = want.get(client, ("available", None))
                    if applied.get(client) != status and client in self.config.client_by_name:
                        await self.clients.presence(client, *status)
                applied = {c: s for c, s in want.items()}
            except (RedisError, OSError):
                pass  # applied again on the next round
            nxt = next_change(rows, now)
            await asyncio.sleep(min(max((nxt or now + 1.0) - now, 0.05), 1.0))

    # -- sessions -------------------------------------------------------------------------

    async def _ws_handler(self, ws) -> None:  # noqa: ANN001 - websockets' ServerConnection
        self.metrics["connections"] += 1
        session = Session(self, ws)
        await session.run()


def install_signal_handlers(gw: Gateway) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, gw.stop)
        except (NotImplementedError, RuntimeError):
            pass

