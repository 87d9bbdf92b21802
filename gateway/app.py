"""The gateway process: builds the parts, wires them together, starts and stops them.

Data flows one way: a source's reports -> its LineTracker (:mod:`gateway.sources`) ->
changed device states -> :class:`~gateway.publisher.Publisher` -> Redis (entity + change
log) -> every process's :class:`~gateway.follower.LogFollower` ->
:class:`~gateway.panels.engine.Engine` -> deltas -> :class:`~gateway.server.hub.Hub` ->
client outboxes (and the desk phones' BLF server). Client requests that change state
(softphone, selected device, presence, logins) take the same path through Redis, so every
process sees the same changes in the same order.

Nothing here but wiring: each part gets what it needs passed in, the configuration through
one getter (:meth:`Gateway.current_config`), and stopping is one
:class:`contextlib.AsyncExitStack`: every part registers its own shutdown as it starts, and
they run in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

from . import logrepeat
from .clients import Clients
from .cluster import Cluster
from .config import Config, parse_hostport
from .config_watch import ConfigWatcher, restart_needed
from .follower import LogFollower
from .journal import Journal
from .panels.engine import Engine
from .pickup import Pickups
from .presence_import import PresenceImporter
from .publisher import Publisher
from .recorder import Recorder
from .server.admin import Admin
from .server.http import HttpRoutes
from .server.hub import Hub
from .server.login import Auth
from .server.session import SessionFactory
from .sources import LineSources
from .spool import Spool
from .status import Status
from .store import EmbeddedRedis, Store, wait_for_redis
from .tapi.bridge import TapiBridgeServer
from .tls import TlsFiles

__all__ = ["Gateway", "install_signal_handlers"]

log = logging.getLogger("gateway")

LISTEN_BACKLOG = 4096  # a reconnect storm of thousands of clients queues, not refused
CLOSE_TIMEOUT = 5.0
TLS_CHECK_SECONDS = 2.0  # how often certificate files are checked for a renewal


class Gateway:
    """One gateway process. `run()` until `stop()` (or SIGINT/SIGTERM in the CLI).

    The parts it built are attributes (`store`, `engine`, `clients`, `journal`, `sources`,
    `bridge`...) for the command line and the tests; the parts never reach through it.
    """

    def __init__(self, config: Config, config_path: str | Path | None = None) -> None:
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        self.metrics: Counter[str] = Counter()
        # This process's identity in Redis: its liveness key, the devices it owns, its leases.
        self.pid = uuid.uuid4().hex[:12]
        self.ready = asyncio.Event()
        self.ws_port: int | None = None
        self._stop = asyncio.Event()
        self.tls: TlsFiles | None = None  # the WebSocket/HTTPS port's certificate, if any

        # Every part, built here without I/O; run() starts them.
        conf = self.current_config
        # No [redis]: a redis-server of our own, on a unix socket under the state dir.
        self.embedded: EmbeddedRedis | None = None
        if config.redis is None:
            self.embedded = EmbeddedRedis(config.path(config.state.dir))
            url = self.embedded.url
        else:
            url = config.redis.url
        self.store = store = Store(url)
        self.hub = Hub(config)
        self.follower = LogFollower(store, conf, self.hub, self.metrics, self._republish)
        engine = self._engine
        self.journal = Journal(store, engine, conf, Spool(config.path(config.state.dir)))
        self.publisher = Publisher(store, self.pid)
        # Lamp provenance: every source and softphone report and what became of it.
        self.recorder = Recorder(store, self.pid, lambda: conf().provenance.keep)
        self.sources = LineSources(conf, self.publisher, self.journal, store, engine,
                                   self.recorder)
        self.follower.listeners.append(self.sources.lamps_changed)
        self.clients = Clients(store, engine, self.journal, conf, self.recorder)
        self.cluster = Cluster(store, self.pid, conf, self.sources.start, self.sources.stop,
                               orphaned=self.recorder.orphaned,
                               on_write_refused=self.follower.store_refusing,
                               presumed_dead=self._rejoin)
        self.config_watcher = (ConfigWatcher(self.config_path, conf, self.apply_config,
                                             self.metrics) if self.config_path else None)
        self.auth = auth = Auth(store, self.clients, conf)
        watcher = self.config_watcher
        admin = Admin(pid=self.pid, config=conf, engine=engine, store=store,
                      clients=self.clients, auth=auth, metrics=self.metrics,
                      config_path=self.config_path,
                      reload=watcher.reload if watcher is not None else None,
                      last_reload=lambda: watcher.last if watcher is not None else None)
        self.sessions = SessionFactory(
            config=conf, engine=engine, hub=self.hub, clients=self.clients, auth=auth,
            pickups=Pickups(store, engine, self.clients, conf, self.sources),
            journal=self.journal, store=store, metrics=self.metrics, admin=admin)
        status = Status(pid=self.pid, config=conf, cluster=self.cluster, follower=self.follower,
                        clients=self.clients, sources=self.sources, journal=self.journal,
                        publisher=self.publisher, metrics=self.metrics)
        self.http = HttpRoutes(status.health, status.metrics_text,
                               server=lambda: conf().server)
        self.recorder.health_provider = status.process_entry
        self.presence_import = PresenceImporter(conf, self.clients.presence, self.metrics)

    def current_config(self) -> Config:
        """The configuration in force (the one getter every part reads it through)."""
        return self.config

    def _engine(self) -> Engine:
        # A getter, not the object: the follower rebuilds the engine when Redis lost its data.
        return self.follower.engine

    @property
    def engine(self) -> Engine:
        return self.follower.engine

    @property
    def bridge(self) -> TapiBridgeServer | None:
        return self.sources.bridge

    async def run(self) -> None:
        async with AsyncExitStack() as stack:
            await self._start(stack)
            self.ready.set()
            await self._stop.wait()
        log.info("gateway stopped")

    def stop(self) -> None:
        self._stop.set()

    def tls_files(self) -> list[TlsFiles]:
        """The certificates this process serves with (for renewal checks)."""
        bridge_tls = self.sources.bridge_tls
        return [t for t in (self.tls, bridge_tls) if t is not None]

    async def _renew_certificates(self) -> None:
        """Renewed certificate files are picked up within a few seconds (and at SIGHUP):
        new connections get the new certificate, connected clients keep their session."""
        while True:
            await asyncio.sleep(TLS_CHECK_SECONDS)
            for t in self.tls_files():
                t.reload()

    def reload_config(self) -> None:
        """Re-read the configuration file now (SIGHUP, `systemctl reload`), and the TLS
        files."""
        for t in self.tls_files():
            t.reload()
        if self.config_watcher is not None:
            self.config_watcher.reload_now()
        else:
            log.warning("reload requested, but this gateway runs without a configuration file")

    async def _start(self, stack: AsyncExitStack) -> None:
        """Start the parts in order; each registers its shutdown (run in reverse)."""
        # Repeated warnings a peer can cause: a few lines per kind and source a minute.
        self.repeats = stack.enter_context(logrepeat.installed())
        if self.embedded is not None:
            # Started on the loop's thread: the server ends with the process that runs it.
            await self.embedded.start_async()
            stack.push_async_callback(asyncio.to_thread, self.embedded.stop)
            # Restarted with its data when it dies or hangs; the log follower then reloads.
            stack.push_async_callback(_cancel, [asyncio.create_task(self.embedded.supervise())])
        stack.push_async_callback(self.store.close)
        stack.push_async_callback(self.journal.close)  # after the sources and sessions ended
        await wait_for_redis(self.store, self._stop, refusal_is_fatal=True)
        await self.follower.load()

        # Leases are given back after the last word of the stopped sources.
        stack.push_async_callback(self.cluster.release_all)
        stack.push_async_callback(self._last_word)
        stack.push_async_callback(self.sources.close)
        await self.sources.start("tapi_bridge")
        await self.cluster.join()  # take the Asterisk/SIP leases that are free, before serving
        await self._serve(stack)

        runners = [self._renew_certificates(),
                   self.publisher.run(), self.follower.run(), self.sources.run_timers(),
                   self.journal.run(), self.cluster.run(), self.presence_import.run(),
                   self.recorder.run(), self.auth.watch_passwords(),
                   self.repeats.run()]
        if self.config_watcher is not None:
            runners.append(self.config_watcher.run())
        tasks = [asyncio.create_task(r) for r in runners]
        stack.push_async_callback(_cancel, tasks)

    async def _serve(self, stack: AsyncExitStack) -> None:
        from websockets.asyncio.server import serve

        scfg = self.config.server
        host, port = parse_hostport(scfg.listen)
        if scfg.tls_cert and scfg.tls_key:
            # Clear errors (expired, key mismatch, missing file) before anything listens.
            self.tls = TlsFiles(self.config.path(scfg.tls_cert), self.config.path(scfg.tls_key),
                                self.config.path(scfg.admin_client_ca) if scfg.admin_client_ca
                                else None, name="server")
        server = await serve(
            self.sessions.serve,
            host,
            port,
            ssl=self.tls.context if self.tls is not None else None,
            process_request=self.http.process_request,
            # Frames up to 4x the limit are read and refused with an error; beyond that the
            # connection is closed (1009) before the frame is even buffered.
            max_size=4 * self.config.server.max_message_bytes,
            compression=None,
            ping_interval=20,
            ping_timeout=20,
            max_queue=16,
            backlog=LISTEN_BACKLOG,
        )

        async def close() -> None:
            server.close()
            try:
                await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT)
            except asyncio.TimeoutError:
                pass

        stack.push_async_callback(close)
        self.ws_port = server.sockets[0].getsockname()[1]
        scheme = "https" if self.tls is not None else "http"
        log.info("WebSocket and web panel on %s://%s:%d/ (ws path /ws)", scheme, host,
                 self.ws_port)

    async def _last_word(self) -> None:
        """Publish what the stopped sources left (their devices unknown), and the provenance
        of it, if Redis answers."""
        try:
            await asyncio.wait_for(self.publisher.flush(), 2)
            await asyncio.wait_for(self.recorder.flush(), 2)
        except Exception:  # noqa: BLE001 - Redis away: the janitor of another process cleans up
            pass

    async def _republish(self) -> None:
        """After a Redis reload: what our sources and sessions know goes there again."""
        self.sources.republish()
        await self.clients.republish()

    async def _rejoin(self) -> None:
        """Taken for dead while silent: own our devices again and publish what we know."""
        self.publisher.forget_owned()
        await self._republish()

    async def apply_config(self, new: Config) -> None:
        """Install a new configuration (validated) in every part, live."""
        for part in restart_needed(self.config, new):
            log.warning("configuration: %s changed; that takes a restart", part)
        seq = await self.store.stamp_config(new.digest)
        self.config = new
        deltas, reshaped = self.follower.engine.reconfigure(new, seq)
        self.hub.reconfigure(new)
        await self.sources.reconfigure()
        self.sessions.revalidate(reshaped)
        self.follower.deliver(deltas)
        self.metrics["config_reloads"] += 1
        log.info("configuration reloaded (%d devices, %d clients, %d groups)",
                 len(new.devices), len(new.clients), len(new.groups))


async def _cancel(tasks: list[asyncio.Task]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def install_signal_handlers(gw: Gateway) -> None:
    """SIGINT and SIGTERM stop the gateway cleanly (where the platform allows it)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, gw.stop)
        except (NotImplementedError, RuntimeError):
            pass
    if hasattr(signal, "SIGHUP"):  # systemctl reload: re-read the configuration
        try:
            loop.add_signal_handler(signal.SIGHUP, gw.reload_config)
        except (NotImplementedError, RuntimeError):
            pass
