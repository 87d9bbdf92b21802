"""The shared state as this process sees it: the change log -> the engine -> the fan-out.

:class:`LogFollower` loads every entity from Redis at start, then follows the change log in
order, applies each change to the pure :class:`~gateway.panels.engine.Engine` and hands the
deltas to the hub (WebSocket clients) and to the other listeners (the desk phones' BLF server).
A gap in the log (it was trimmed past us) or a Redis that lost its data makes it reload
everything; while Redis is away every lamp is `unknown`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from .config import Config
from .panels.engine import Delta, Engine
from .server.hub import Hub
from .store import RedisError, Store, wait_for_redis

__all__ = ["LogFollower", "YIELD_FRAMES"]

log = logging.getLogger("gateway")

# Lamp frames (one change to one client) before the loop gets a turn for other work. A chunk
# of changes goes to a client that keeps up in one socket write (gateway.server.hub.broadcast),
# so 8,000 frames at 1,000 clients is 1,000 writes of 8 frames (about 2.6 KiB) each: a
# quarter of the system calls of one write per frame, and a turn for requests every few
# milliseconds of a burst. (32,000 made bench/run.py's burst answer a request after 285 ms
# on a loaded machine: the target is 250.)
YIELD_FRAMES = 8_000
READ_COUNT = 500  # changes per read of the log
CHUNK_MAX = 500  # deltas per fan-out chunk


class LogFollower:
    """Owns the engine; `listeners` get every batch of deltas after the hub.

    `on_reloaded` is awaited after a full reload (Redis came back or lost its data): what this
    process's sources and sessions know is published again from there.
    """

    def __init__(self, store: Store, config: Callable[[], Config], hub: Hub,
                 metrics: Counter[str],
                 on_reloaded: Callable[[], Awaitable[None]] | None = None) -> None:
        self.store = store
        self._config = config
        self.hub = hub
        self.metrics = metrics
        self.on_reloaded = on_reloaded
        self.listeners: list[Callable[[list[Delta]], None]] = []
        self.engine = Engine(config())
        self.redis_up = False
        # Why Redis refuses writes (disk full, read-only...), None while it takes them.
        self.write_refused: str | None = None
        self._pos = 0

    async def load(self) -> None:
        """Stamp the configuration and load the whole shared state (Redis must answer)."""
        cfg = self._config()
        config_seq = await self.store.stamp_config(cfg.digest)
        self.engine = Engine(cfg, config_seq)
        last, devices, clients = await self.store.load_all()
        known = cfg.device_by_id
        self.engine.load([(s, q) for s, q in devices if s.device in known], clients)
        self._pos = last
        self.redis_up = True

    async def run(self) -> None:
        """Follow the change log until cancelled."""
        after = self._pos
        while True:
            try:
                changes = await self.store.read_log(after, block_ms=1000, count=READ_COUNT)
            except (RedisError, OSError) as exc:
                after = await self._redis_lost(exc)
                continue
            if changes and after and changes[0].seq != after + 1:
                log.warning("change log moved past us (%d -> %d): reloading all state",
                            after, changes[0].seq)
                after = await self._reload()
                continue
            deltas: list[Delta] = []
            known = self._config().device_by_id
            for ch in changes:
                after = ch.seq
                self.metrics["changes_in"] += 1
                if ch.kind == "device" and ch.id in known:
                    deltas += self.engine.update_device(ch.state, ch.seq)  # type: ignore[arg-type]
                elif ch.kind == "client":
                    deltas += self.engine.update_client(ch.state, ch.seq)  # type: ignore[arg-type]
            if deltas:
                await self.fan_out(deltas)

    async def _redis_lost(self, exc: Exception) -> int:
        log.error("lost Redis (%s): every lamp is unknown until it is back", exc)
        self.redis_up = False
        self.deliver(self.engine.set_trusted(False))
        await wait_for_redis(self.store)
        log.info("Redis is back: reloading the shared state")
        return await self._reload()

    async def _reload(self) -> int:
        cfg = self._config()
        last = await self.store.last_seq()
        if last < self.engine.seq:
            # Redis lost its data (restarted without persistence): start the views afresh.
            log.warning("Redis lost its state (seq %d < %d): rebuilding", last, self.engine.seq)
            config_seq = await self.store.stamp_config(cfg.digest)
            self.engine = Engine(cfg, config_seq)
        last, devices, clients = await self.store.load_all()
        known = cfg.device_by_id
        deltas = self.engine.load([(s, q) for s, q in devices if s.device in known], clients)
        deltas += (self.engine.set_trusted(True) if self.write_refused is None
                   else self.engine.set_trusted(False, reason=self.write_refused))
        self.redis_up = True
        self.deliver(deltas)
        # What our sources and sessions know may be missing from a Redis that restarted.
        if self.on_reloaded is not None:
            await self.on_reloaded()
        return last

    def store_refusing(self, reason: str | None, detail: str = "") -> None:
        """Redis answers but refuses writes (`reason`, e.g. store_disk_full), or is connected
        but silent (store_not_answering), or is fine again (None). Refused, nothing we publish is kept, so the lamps cannot be vouched
        for: `unknown`, with the reason, until a write goes through."""
        if reason == self.write_refused:
            return
        self.write_refused = reason
        if reason is not None:
            log.error("Redis %s (%s): every lamp is unknown until it recovers",
                      "does not answer" if reason == "store_not_answering"
                      else "refuses writes", detail or reason)
            self.deliver(self.engine.set_trusted(False, reason=reason))
        else:
            log.info("Redis answers and takes writes again: lamps are exact again")
            if self.redis_up:
                self.deliver(self.engine.set_trusted(True))

    async def fan_out(self, deltas: list[Delta]) -> None:
        """Deliver a read batch's deltas, giving the loop a turn every YIELD_FRAMES frames
        so that requests are answered during a burst. A batch may change one view
        many times: only its newest state goes out (each delta is a full state), so a client
        that subscribes during a pause never gets an older state after its snapshot."""
        if len(deltas) > 1:
            newest = {(d.kind, d.key): d for d in deltas}
            if len(newest) < len(deltas):
                deltas = sorted(newest.values(), key=lambda d: d.seq)
        # Chunks sized so that one chunk is about YIELD_FRAMES frames for the clients that
        # take one frame per change (a client that takes batches gets a chunk as one frame).
        step = min(CHUNK_MAX, max(1, YIELD_FRAMES // max(1, self.hub.unbatched_count())))
        for i in range(0, len(deltas), step):
            self.deliver(deltas[i : i + step])
            if i + step < len(deltas):
                await asyncio.sleep(0)

    def deliver(self, deltas: list[Delta]) -> None:
        """Hand deltas to the WebSocket fan-out, then to the other listeners."""
        if not deltas:
            return
        self.hub.deliver(deltas)
        for listener in self.listeners:
            listener(deltas)
