"""Keeps lamp provenance and source health in Redis (the I/O side of :mod:`gateway.provenance`).

The one handler of the line sources (:meth:`gateway.sources.LineSources.reports`) applies
every report through :meth:`Recorder.reports` (which calls the tracker exactly as before and
notes what it did); the records wait in a bounded buffer and
are written in pipelined batches, each device's list capped at ``[provenance] keep``. So the
hot path pays a small object and a JSON string per report, never a round trip. Once a second
the process also writes its health entry (its sources: up, last event, reconnects, events;
its sessions), so an admin connected to any process sees every process.

:func:`load_explanation` reads it back for `blf-gateway explain` and the admin view.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .calls import CallReport, CallTable, LineTracker, ServiceReport
from .config import Config
from .model import DeviceState
from .panels.engine import Engine
from .provenance import (
    DeviceExplanation,
    MemberExplanation,
    Pending,
    Record,
    apply_report,
    apply_softphone,
    explain_device,
    explain_member,
    lose_connection,
    lost_record,
    records_text,
)
from .store import RedisError, Store

__all__ = ["Recorder", "SourceStats", "load_explanation", "FLUSH_SECONDS", "HEALTH_SECONDS"]

log = logging.getLogger("gateway.provenance")

FLUSH_SECONDS = 0.2  # records reach Redis within about this long
HEALTH_SECONDS = 1.0


@dataclass(slots=True)
class SourceStats:
    """What this process saw of one source."""

    events: int = 0  # reports applied
    last_event: float | None = None  # when the last report came
    reconnects: int = 0  # connections lost (each followed by a reconnect attempt)
    last_lost: float | None = None


class Recorder:
    """Notes what each source report did; writes the notes and this process's health."""

    def __init__(self, store: Store, pid: str, keep: Callable[[], int],
                 health: Callable[[], dict] | None = None, limit: int = 20000) -> None:
        self.store = store
        self.pid = pid
        self.keep = keep  # read at every write: a reloaded configuration takes effect
        self.health_provider = health
        self.pending = Pending(limit)
        self.stats: dict[str, SourceStats] = {}
        self.written = 0
        self._wake = asyncio.Event()

    def _stats(self, source: str) -> SourceStats:
        st = self.stats.get(source)
        if st is None:
            st = self.stats[source] = SourceStats()
        return st

    # -- the hot path (no await) ------------------------------------------------------------

    def reports(self, source: str, tracker: LineTracker,
                reports: Iterable[CallReport | ServiceReport],
                now: float | None = None) -> list[DeviceState]:
        """Apply reports to `tracker` (as it would without provenance); returns the device
        states that changed, newest per device."""
        now = time.time() if now is None else now
        changed: dict[str, DeviceState] = {}
        st = self._stats(source)
        add = self.pending.add
        n = 0
        for r in reports:
            states, record = apply_report(tracker, source, r, now)
            n += 1
            if record is not None:
                add("dev", r.device, record)
            for s in states:
                changed.pop(s.device, None)
                changed[s.device] = s
        if n:  # counted once per batch: every report of it came at `now`
            st.events += n
            st.last_event = now
        self._wake.set()
        return list(changed.values())

    def lost(self, source: str, tracker: LineTracker, conn: str | None = None,
             now: float | None = None, reason: str = "") -> list[DeviceState]:
        """The source (or one of its connections) went away: its devices go unknown."""
        now = time.time() if now is None else now
        states, records = lose_connection(tracker, source, conn, now, reason)
        st = self._stats(source)
        st.reconnects += 1
        st.last_lost = now
        for device, record in records:
            self.pending.add("dev", device, record)
        self._wake.set()
        return states

    def softphone(self, client: str, table: CallTable, report: CallReport, conn: str = "",
                  now: float | None = None) -> bool:
        now = time.time() if now is None else now
        changed, record = apply_softphone(table, report, now, conn)
        st = self._stats("softphone")
        st.events += 1
        st.last_event = now
        self.pending.add("cli", client, record)
        self._wake.set()
        return changed

    def orphaned(self, device: str, pid: str, now: float | None = None) -> None:
        """The janitor turned `device` unknown: the process that reported it (`pid`) died."""
        now = time.time() if now is None else now
        self.pending.add("dev", device, lost_record(
            "janitor", pid, now, f"the gateway process {pid} that held its source connection "
            "is gone: unknown until the source reports it again"))
        self._wake.set()

    # -- writing ---------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """`[provenance] keep = 0` turns provenance off (reports then cost nothing extra)."""
        return self.keep() > 0

    async def flush(self) -> None:
        keep = max(1, self.keep())
        self.pending.per_key = keep
        items = self.pending.take()
        if not items:
            return
        try:
            # Only the newest `keep` of a key are encoded (Pending holds no more than that,
            # unless `keep` was just lowered): nothing is encoded that the trim drops.
            lists = [v[-keep:] for v in items.values()]
            await self.store.append_records(list(items), [len(v) for v in lists],
                                            records_text([r for v in lists for r in v]), keep)
            self.written += sum(len(v) for v in items.values())
        except (RedisError, OSError):
            self.pending.put_back(items)  # bounded: the oldest go first while Redis is away
            raise

    def health_entry(self, now: float) -> dict:
        entry: dict = {"t": round(now, 3), "sources": {}}
        for name, st in self.stats.items():
            entry["sources"][name] = {
                "events": st.events, "last_event": st.last_event,
                "reconnects": st.reconnects, "last_lost": st.last_lost,
            }
        if self.health_provider is not None:
            extra = self.health_provider()
            for name, info in extra.pop("sources", {}).items():
                entry["sources"].setdefault(name, {"events": 0, "last_event": None,
                                                   "reconnects": 0, "last_lost": None})
                entry["sources"][name].update(info)
            entry.update(extra)
        entry["provenance_dropped"] = self.pending.dropped
        return entry

    async def run(self) -> None:
        """Write records as they come (batched) and the health entry once a second."""
        next_health = 0.0
        while True:
            # Woken by a record, or by a timer for the health entry. (Not asyncio.wait_for:
            # on Python 3.11 it can swallow a cancellation that meets a wake-up, and the
            # gateway would then wait for this task at shutdown.)
            timer = asyncio.get_running_loop().call_later(HEALTH_SECONDS, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                timer.cancel()
            self._wake.clear()
            try:
                await self.flush()
                now = time.time()
                if now >= next_health:
                    next_health = now + HEALTH_SECONDS
                    await self.store.set_health(self.pid, json.dumps(self.health_entry(now)))
            except (RedisError, OSError) as exc:
                log.debug("provenance not written yet (Redis away: %s)", exc)
                await asyncio.sleep(1.0)
            await asyncio.sleep(FLUSH_SECONDS)  # let a burst gather into one round trip


def _decode(texts: Iterable[str]) -> list[Record]:
    return [r for r in (Record.from_json(t) for t in texts) if r is not None]


async def load_explanation(store: Store, engine: Engine, config: Config, target: str,
                           kind: str | None = None) -> DeviceExplanation | MemberExplanation:
    """The explanation of a device id or a client name (`kind` "device" or "client"; None:
    a device wins where both exist), from the engine's state and the records kept in Redis.
    KeyError: no such target."""
    keep = config.provenance.keep
    if kind != "client" and target in config.device_by_id:
        found = await store.read_provenance([("dev", target)])
        return explain_device(engine, target, _decode(found.get(("dev", target), ())), keep)
    if kind == "device" or target not in config.client_by_name:
        raise KeyError(target)
    cfg = config.client_by_name[target]
    feeding = engine.feeding_devices(cfg, engine.client_state(target))
    keys = [("dev", d) for d in feeding] + [("cli", target)]
    found = await store.read_provenance(keys)
    return explain_member(engine, target, {d: _decode(found.get(("dev", d), ())) for d in feeding},
                          _decode(found.get(("cli", target), ())), keep)
