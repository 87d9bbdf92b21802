"""This process among the others on one Redis: liveness, the janitor, source leases.

Every second (:meth:`Cluster.run`) a process renews its liveness key, takes or renews the
leases of the sources only one process may hold (the Asterisk login and the SIP user agent),
and runs the janitor: devices owned by a process whose liveness key expired turn `unknown`
(its source connection went with it) until the process that takes the source over re-syncs
them. A process that was only silent (stopped, starved of CPU, a VM paused) finds its own
key expired at its next round: it publishes what its sources know again, so the lamps the
others turned unknown come back without waiting for the next event. See docs/scale-out.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from .backoff import Backoff
from .config import Config
from .model import DeviceState
from .store import RedisError, Store, encode_device, write_refusal

__all__ = ["Cluster", "LEASED_SOURCES", "HEARTBEAT_SECONDS"]

log = logging.getLogger("gateway")

HEARTBEAT_SECONDS = 1.0
HEARTBEAT_TTL_MS = 3000  # a process silent this long is taken for dead
LEASE_TTL_MS = 3000  # so another process takes a source over within about 4 s
OWNERS_REREAD_SECONDS = 30.0  # the janitor's whole read of the owners hash, at least this often
PING_TIMEOUT = 2.0  # seconds without an answer from a connected Redis: lamps unknown
REASON_NOT_ANSWERING = "store_not_answering"
LEASED_SOURCES = ("ami", "sip")  # held by one process at a time; every process hears bridges

_LABEL = {"ami": "Asterisk", "sip": "SIP"}


class Cluster:
    """Liveness key, leases and janitor of process `pid`.

    `start_source(name)` is awaited when this process takes the lease of a configured source,
    `stop_source(name)` when it lost it to another process.
    """

    def __init__(
        self,
        store: Store,
        pid: str,
        config: Callable[[], Config],
        start_source: Callable[[str], Awaitable[None]],
        stop_source: Callable[[str], Awaitable[None]],
        orphaned: Callable[[str, str], None] | None = None,
        on_write_refused: Callable[[str | None, str], None] | None = None,
        presumed_dead: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        # Awaited when this process finds its liveness key expired: publish everything again.
        self._presumed_dead = presumed_dead
        self._joined = False
        # Told (device, dead process) when the janitor turns a device unknown: provenance.
        self._orphaned = orphaned
        self.pid = pid
        self._config = config
        self._start_source = start_source
        self._stop_source = stop_source
        self._on_write_refused = on_write_refused
        self.leases: set[str] = set()
        self.redis_latency = 0.0  # seconds, measured every second
        # A source that failed to start (its port taken, a bad certificate...) is tried again
        # after a growing pause; meanwhile its lease stays free for another process.
        self._retry: dict[str, Backoff] = {}
        self._retry_at: dict[str, float] = {}
        self.start_failures: dict[str, str] = {}  # source -> why its last start failed
        # The janitor's copy of the owners hash, its version and when it was read.
        self._owners: dict[str, str] | None = None
        self._owners_version: str | None = None
        self._owners_read = 0.0

    async def join(self) -> None:
        """Say we are alive and take the free leases (before serving clients)."""
        await self.store.heartbeat(self.pid, HEARTBEAT_TTL_MS)
        self._joined = True
        await self.renew_leases()

    async def run(self) -> None:
        """Every second: liveness, leases, janitor (until cancelled)."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel.
                    async with asyncio.timeout(PING_TIMEOUT):
                        self.redis_latency = await self.store.ping()
                except TimeoutError:
                    # Connected but silent (stopped, swapping, a network black hole): the
                    # lamps cannot be vouched for any more than with Redis gone.
                    if self._on_write_refused is not None:
                        self._on_write_refused(REASON_NOT_ANSWERING, f"Redis has not answered "
                                               f"a PING for {PING_TIMEOUT:.0f} s")
                    continue
                still = await self.store.heartbeat(self.pid, HEARTBEAT_TTL_MS)
                if self._on_write_refused is not None:
                    self._on_write_refused(None, "")  # the heartbeat was written
                if not still and self._joined:
                    await self._rejoin()
                await self.renew_leases()
                await self.janitor()
            except (RedisError, OSError) as exc:
                # The heartbeat is a write every second: it notices a Redis that answers but
                # refuses writes (PING too is refused then) and when it takes them again.
                reason = write_refusal(exc)
                if reason is not None and self._on_write_refused is not None:
                    self._on_write_refused(reason, str(exc))
                log.debug("keepalive: Redis away (%s)", exc)
            except Exception:  # noqa: BLE001 - liveness must outlive any one failing round
                log.exception("keepalive round failed; trying again in %.0f s",
                              HEARTBEAT_SECONDS)

    async def _rejoin(self) -> None:
        log.warning("this process was silent for over %.0f s (stopped, starved of CPU, Redis "
                    "away): the others may have made its devices unknown; publishing what "
                    "its sources know again", HEARTBEAT_TTL_MS / 1000)
        if self._presumed_dead is not None:
            await self._presumed_dead()

    async def renew_leases(self) -> None:
        cfg = self._config()
        for name in LEASED_SOURCES:
            if getattr(cfg.sources, name) is None:
                continue
            if name not in self.leases and time.monotonic() < self._retry_at.get(name, 0.0):
                continue  # our last start failed: wait, and leave the lease to the others
            held = await self.store.lease(name, self.pid, LEASE_TTL_MS)
            if held and name not in self.leases:
                log.info("took the %s lease: this process now holds the %s connection",
                         name, _LABEL[name])
                try:
                    await self._start_source(name)
                except (RedisError, OSError, Exception) as exc:  # noqa: BLE001
                    await self._start_failed(name, exc)
                    continue
                self.leases.add(name)
                self._retry.pop(name, None)
                self._retry_at.pop(name, None)
                self.start_failures.pop(name, None)
            elif not held and name in self.leases:
                log.warning("lost the %s lease to another process: stopping that source", name)
                self.leases.discard(name)
                await self._stop_source(name)

    async def _start_failed(self, name: str, exc: BaseException) -> None:
        delay = self._retry.setdefault(name, Backoff(1.0, 60.0)).next()
        self._retry_at[name] = time.monotonic() + delay
        self.start_failures[name] = f"{type(exc).__name__}: {exc}"
        log.error("the %s source could not start (%s): lease given back, next try in %.0f s",
                  _LABEL[name], self.start_failures[name], delay)
        try:
            await self.store.release(name, self.pid)
        except (RedisError, OSError):
            pass  # it expires by itself within LEASE_TTL_MS

    async def janitor(self) -> None:
        """Devices owned by a process that is gone turn unknown (its source connection went
        with it); the process that takes over re-syncs them."""
        # The owners hash (a field per device: 10,000 at 10,000 devices) is read again only
        # when its version moved, and at least every OWNERS_REREAD_SECONDS (a process of an
        # older version changes it without the version); else one GET a round.
        version = await self.store.owners_version()
        now = time.monotonic()
        if (self._owners is None or version != self._owners_version
                or now - self._owners_read >= OWNERS_REREAD_SECONDS):
            self._owners = await self.store.owners()
            self._owners_version, self._owners_read = version, now
        owners = self._owners
        if not owners:
            return
        alive = await self.store.alive(p for p in owners.values() if p != self.pid)
        known = self._config().device_by_id
        dead = [(d, p) for d, p in owners.items() if p not in alive and p != self.pid]
        for device, pid in dead:
            if await self.store.drop_owner(device, pid) and device in known:
                log.warning("device %s: its owner process %s is gone: unknown until its "
                            "source reports again", device, pid)
                await self.store.publish([("device", device, encode_device(DeviceState(device)))])
                if self._orphaned is not None:
                    self._orphaned(device, pid)

    async def release_all(self) -> None:
        """Give the leases back (at shutdown), so another process takes over at once."""
        for name in list(self.leases):
            try:
                await asyncio.wait_for(self.store.release(name, self.pid), 2)
            except (RedisError, OSError, asyncio.TimeoutError):
                pass
        self.leases.clear()
