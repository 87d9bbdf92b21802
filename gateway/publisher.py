"""Device states from the line sources -> Redis, newest per device, in pipelined batches.

Sources hand their changed states to :meth:`Publisher.put` without waiting; one task
(:meth:`Publisher.run`) writes whatever accumulated while the previous round trip was in
flight, so a burst becomes a few round trips. While Redis is away the states wait here (a
newer state of a device replaces the waiting one) and go out when it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from .model import DeviceState
from .backoff import Backoff
from .store import RedisError, Store, encode_device, wait_for_redis, write_refusal

__all__ = ["Publisher"]

log = logging.getLogger("gateway")

CHUNK = 1000  # states per pipelined round trip
# A batch of at least this many states means a source is in a burst (a PBX reload, a flood,
# a bridge catching up): it waits one more turn of the event loop before it is written, so
# that the source's next chunk of lines coalesces into it. The bridge reader gives the loop
# a turn after every chunk it reads (about 400 lines), and the round trip of a batch is
# about as long as one chunk takes, so without the wait every chunk became a batch of its
# own: twice the changes in the log, each one read back and applied by every process's
# follower, for states that a line of the same chunk-pair had already replaced. A device
# that changes twice within that turn (about 10-20 ms of a burst: far below what anybody
# watching a lamp can see) shows its newer state; an everyday change, alone in its batch,
# is written at once.
BURST = 100


class Publisher:
    """Publishes device states in batches; retries while Redis is away.

    `pid` is this process's identity: the devices it publishes are recorded as owned by it,
    so the janitor of another process can make them unknown if this one dies.
    """

    def __init__(self, store: Store, pid: str = "") -> None:
        self.store = store
        self.pid = pid
        self._owned: set[str] = set()  # devices this process has told Redis it owns
        self._dirty: dict[str, DeviceState] = {}
        self._wake = asyncio.Event()
        self._refused = Backoff(0.5, 5.0)
        self.published = 0
        self.healthy = True

    def put(self, states: Iterable[DeviceState]) -> None:
        """Queue states (no I/O); the newest state of a device wins."""
        for s in states:
            self._dirty.pop(s.device, None)
            self._dirty[s.device] = s
        self._wake.set()

    async def run(self) -> None:
        """Write queued states until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                if len(self._dirty) >= BURST:
                    await asyncio.sleep(0)  # see BURST
                batch = self._dirty
                self._dirty = {}
                try:
                    await self._write(batch)
                except (RedisError, OSError) as exc:
                    self.healthy = False
                    # Keep what failed, unless a newer state for the device came meanwhile.
                    for d, s in batch.items():
                        self._dirty.setdefault(d, s)
                    log.warning("publishing %d device state(s) failed (%s); will retry",
                                len(batch), exc)
                    if write_refusal(exc) is not None:
                        # It answers but refuses writes (disk full): no use retrying at once.
                        await asyncio.sleep(self._refused.next())
                    await wait_for_redis(self.store)
                else:
                    self._refused.reset()

    def forget_owned(self) -> None:
        """Record ownership again with the next write of each device (the janitor of another
        process may have dropped it while this one was silent)."""
        self._owned.clear()

    async def flush(self) -> None:
        """Write what is queued now, once, without retrying (the last word at shutdown)."""
        batch, self._dirty = self._dirty, {}
        if batch:
            await self._write(batch)

    async def _write(self, batch: dict[str, DeviceState]) -> None:
        items = [("device", d, encode_device(s)) for d, s in batch.items()]
        for i in range(0, len(items), CHUNK):
            await self.store.publish(items[i : i + CHUNK])
        new = [d for d in batch if d not in self._owned]
        if new and self.pid:
            await self.store.set_owner(new, self.pid)
            self._owned.update(new)
        self.published += len(items)
        self.healthy = True
