"""Call journals: the server journal and the offline monitor.

An ended call (from a line source's LineTracker or a client's softphone) becomes an entry:
`call`, `device`, `client` (softphone calls), `direction`, `remote`, `remote_name`, `start`,
`end`, `answered`. It goes

- to the **server journal** when it happened on a device with `journal = true`, or on the
  softphone of a client with journal right `w`;
- to the **offline journal** of every client with `offline_monitor` that owns the device and
  has no session at that moment; delivered at its next login (`offline_calls` in `welcome`,
  `journal` to read, `journal_ack` to remove).

Only the process that owns a line (or a session) writes its entries, so each call is written
once. Reading applies the reader's number rights (:func:`gateway.panels.rights.combined_rights`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable

from .calls import EndedCall
from .config import Config
from .panels.engine import Engine
from .panels.rights import (
    FULL_RIGHTS,
    Rights,
    combined_rights,
    may_see_number,
    most_permissive,
    panel_rights,
)
from .ratelimit import KeyedBuckets
from .spool import Spool, SpoolItem
from .store import RedisError, Store

__all__ = ["Journal", "EntryFilter", "entry_of", "render_entry", "READ_LIMIT", "SCAN_BUDGET"]

log = logging.getLogger("gateway.journal")

MAX_PENDING = 100_000  # entries held in memory when neither Redis nor the spool takes them


def entry_of(ended: EndedCall, device: str | None, client: str | None) -> dict:
    c = ended.call
    out = {
        "call": c.id,
        "device": device,
        "client": client,
        "direction": c.direction.value,
        "remote": c.remote,
        "remote_name": c.remote_name,
        "start": round(ended.start, 3),
        "end": round(ended.end, 3),
        "answered": ended.answered,
    }
    if c.remote_out:
        # Kept with the entry (never sent): the number is outbound information.
        out["remote_out"] = True
    return out


def render_entry(entry_id: str, entry: dict, rights: Rights) -> dict:
    """An entry as a reader with `rights` may see it (the same rule as the lamps)."""
    shown = {k: v for k, v in entry.items() if k != "remote_out"}
    visible = may_see_number(entry["direction"], bool(entry.get("remote_out")), rights)
    return {"id": entry_id, **shown,
            "remote": entry["remote"] if visible else None,
            "remote_name": entry["remote_name"] if visible else None}


def _uid(e: EndedCall) -> str:
    """One id per entry, kept with it wherever it goes: Redis writes each id once."""
    return f"{int(e.end // 3600)}.{uuid.uuid4().hex[:16]}"


class Journal:
    """Queues entries of ended calls, writes them (:meth:`run`), reads them for a client.

    `engine()` (whether an owner is logged in) and `config()` give the current ones. Entries
    that cannot reach Redis go to the durable `spool` and are delivered, once, when Redis
    answers again (also by the next start, after a stop or a crash while Redis was away).
    """

    def __init__(self, store: Store, engine: Callable[[], Engine],
                 config: Callable[[], Config], spool: Spool | None = None) -> None:
        self.store = store
        self._engine = engine
        self._config = config
        self.spool = spool
        self._items: list[SpoolItem] = []
        self._wake = asyncio.Event()
        self._spooled = False  # entries wait in the spool (deliver those first, in order)
        self._warned = False
        self.written = 0
        self.spooled = 0  # entries kept in the spool since the start
        self.dropped = 0  # entries lost: no Redis, no spool, memory bound reached
        self._read_buckets = KeyedBuckets(READS_PER_SECOND, READ_BURST, max_keys=10_000)
        # (highest, lowest, count) -> (until, entries written by us then, the page)
        self._pages: dict[tuple[str, str, int], tuple[float, int, list]] = {}

    # -- writing ------------------------------------------------------------------------

    def record(self, ended: list[EndedCall]) -> None:
        """Queue journal entries for calls that ended (no I/O here)."""
        cfg = self._config()
        engine = self._engine()
        # Read once per batch: these lookups go through pydantic's private attributes.
        device_by_id, client_by_name = cfg.device_by_id, cfg.client_by_name
        owners_of = cfg.owners_of
        for e in ended:
            if e.owner.startswith("sp:"):
                client = e.owner[3:]
                ccfg = client_by_name.get(client)
                if ccfg is not None and "w" in ccfg.journal:
                    self._items.append(SpoolItem(_uid(e), None,
                                                 json.dumps(entry_of(e, None, client))))
                continue
            dcfg = device_by_id.get(e.owner)
            if dcfg is None:
                continue
            # The entry's text and id are made only where some journal keeps it (most calls
            # that end are journaled nowhere, and this runs for every one of them).
            uid = text = None
            if dcfg.journal:
                uid, text = _uid(e), json.dumps(entry_of(e, e.owner, None))
                self._items.append(SpoolItem(uid, None, text))
            for owner in owners_of(e.owner):
                if owner.offline_monitor and not engine.client_state(owner.name).logged_in:
                    if uid is None or text is None:
                        uid, text = _uid(e), json.dumps(entry_of(e, e.owner, None))
                    self._items.append(SpoolItem(f"{uid}:{owner.name}", owner.name, text))
        self._bound()
        if self._items:
            self._wake.set()

    def _bound(self) -> None:
        if len(self._items) > MAX_PENDING:
            over = len(self._items) - MAX_PENDING
            del self._items[:over]
            self.dropped += over
            log.error("%d journal entries dropped: Redis and the spool are both "
                      "unavailable and %d are held in memory", over, MAX_PENDING)

    async def _write(self, items: list[SpoolItem]) -> None:
        jcfg = self._config().journal
        for i in range(0, len(items), 500):
            chunk = items[i : i + 500]
            await self.store.append_journal(
                [(it.uid, it.client, it.entry) for it in chunk],
                retention_seconds=jcfg.retention_days * 86400,
                max_entries=jcfg.max_entries, offline_max=jcfg.offline_max_entries)
            self.written += len(chunk)

    async def _to_spool(self, items: list[SpoolItem]) -> bool:
        if self.spool is None:
            return False
        try:
            await asyncio.to_thread(self.spool.append, items)
        except OSError as exc:
            log.error("journal spool: %d entries could not be kept on disk (%s): holding "
                      "them in memory", len(items), exc)
            return False
        self._spooled = True
        self.spooled += len(items)
        return True

    async def _deliver_spool(self) -> None:
        assert self.spool is not None
        spool = self.spool
        files = await asyncio.to_thread(spool.take)
        for path in files:
            items = await asyncio.to_thread(spool.read, path)
            await self._write(items)
            await asyncio.to_thread(spool.done, path)
            if items:
                log.info("journal spool: %d entries delivered to Redis", len(items))
        self._spooled = await asyncio.to_thread(spool.pending)

    async def run(self) -> None:
        if self.spool is not None:
            self._spooled = await asyncio.to_thread(self.spool.pending)
        delay = 0.2
        while True:
            if self._spooled:
                try:
                    await self._deliver_spool()
                except (RedisError, OSError):
                    pass  # still away: the entries are safe on disk
            if self._items:
                batch, self._items = self._items, []
                try:
                    if self._spooled:
                        raise OSError("older entries wait in the spool")  # keep their order
                    await self._write(batch)
                    self._warned = False
                except (RedisError, OSError) as exc:
                    if not self._warned:
                        log.warning("journal: Redis unavailable (%s): ended calls are kept in "
                                    "the spool until it is back", exc)
                        self._warned = True
                    if not await self._to_spool(batch):
                        self._items[:0] = batch
                        self._bound()
                except asyncio.CancelledError:
                    self._items[:0] = batch  # close() keeps them
                    raise
            if self._spooled or self._items:
                try:  # retry with backoff, earlier when a new entry comes
                    await asyncio.wait_for(self._wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                delay = min(delay * 2, 5.0)
            else:
                delay = 0.2
                await self._wake.wait()
            self._wake.clear()

    async def close(self) -> None:
        """At shutdown (after :meth:`run` was cancelled): entries still in memory go to
        Redis if it answers at once, else to the spool."""
        if not self._items:
            return
        batch, self._items = self._items, []
        try:
            if self._spooled:
                raise OSError("older entries wait in the spool")
            await asyncio.wait_for(self._write(batch), 2)
        except (RedisError, OSError, asyncio.TimeoutError):
            if not await self._to_spool(batch):
                self.dropped += len(batch)
                log.error("journal: %d entries lost at shutdown (no Redis, no spool)",
                          len(batch))

    # -- reading ------------------------------------------------------------------------

    def may_read_server(self, reader: str, now: float) -> bool:
        """Server-journal reads are the most expensive request there is: each client (all
        its connections together) gets READS_PER_SECOND, READ_BURST at once."""
        return self._read_buckets.take(reader, now)

    async def _page(self, highest: str, lowest: str, count: int) -> list[tuple[str, dict]]:
        """One page of the server journal, newest first. Pages are shared by every reader
        for PAGE_CACHE_SECONDS (many switchboards opening their journal at once cost one
        read); an entry this process writes is seen at once, one another process writes
        within that time."""
        now = time.monotonic()
        key = (highest, lowest, count)
        hit = self._pages.get(key)
        if hit is not None and hit[0] > now and hit[1] == self.written:
            return hit[2]
        page = await self.store.read_journal_newest(None, highest, lowest, count=count)
        self._pages[key] = (now + PAGE_CACHE_SECONDS, self.written, page)
        while len(self._pages) > PAGE_CACHE_SIZE:
            del self._pages[next(iter(self._pages))]  # the oldest
        return page

    async def read(self, reader: str, scope: str, since: float | None,
                   temp: tuple[str, ...] = ()) -> list[dict]:
        store = self.store
        if scope == "offline":
            start = "-"
            entries = await store.read_journal(reader, start)
            return [render_entry(i, e, Rights(numbers="all")) for i, e in entries]
        # The newest visible entries (after `since` when given), read newest first in pages
        # until READ_LIMIT are found or SCAN_BUDGET entries were looked at: a read costs the
        # same whatever the journal holds.
        lowest = f"{int(since * 1000)}-0" if since else "-"
        highest = "+"
        out: list[dict] = []
        visible = EntryFilter(self._config(), reader, temp)
        scanned = 0
        while scanned < SCAN_BUDGET and len(out) < READ_LIMIT:
            page = await self._page(highest, lowest, min(PAGE, SCAN_BUDGET - scanned))
            scanned += len(page)
            out.extend(visible.render(page))
            if len(page) < PAGE:
                break
            highest = "(" + page[-1][0]  # exclusive: below the oldest entry of this page
        del out[READ_LIMIT:]
        out.reverse()  # oldest first
        return out


READ_LIMIT = 1000  # entries in one `journal` reply
PAGE_CACHE_SECONDS = 1.0  # a server-journal page read is shared this long
PAGE_CACHE_SIZE = 16  # pages kept (each at most PAGE entries)
SCAN_BUDGET = 5000  # entries one read looks at, at most
PAGE = 1000
READS_PER_SECOND = 1.0  # server-journal reads per client, sustained
READ_BURST = 5.0


class EntryFilter:
    """Which server-journal entries a reader may see, and how (pure; the rights of each
    device or client are worked out once per read, not once per entry)."""

    def __init__(self, config: Config, reader: str, temp: tuple[str, ...] = ()) -> None:
        self.config, self.reader, self.temp = config, reader, temp
        self._memo: dict[tuple[str | None, str | None], Rights | None] = {}

    def rights(self, entry: dict) -> Rights | None:
        """The reader's rights on one entry, or None: not theirs to see. A right that shows
        the lamp only (a group's `calls = false`) does not show journal entries either."""
        key = (entry.get("device"), entry.get("client"))
        if key not in self._memo:
            self._memo[key] = self._rights(*key)
        return self._memo[key]

    def _rights(self, device: str | None, client: str | None) -> Rights | None:
        cfg = self.config
        if device:
            if device not in cfg.device_by_id:
                return None
            rights = combined_rights(cfg, self.reader, device, self.temp)
        elif client == self.reader:
            return FULL_RIGHTS  # its own softphone's calls
        else:
            rights = most_permissive([panel_rights(g, self.reader) for g in cfg.groups
                                      if self.reader in g.members and client in g.members])
        return rights if rights is not None and rights.calls else None

    def render(self, entries: list[tuple[str, dict]]) -> list[dict]:
        out = []
        for entry_id, entry in entries:
            rights = self.rights(entry)
            if rights is not None:
                out.append(render_entry(entry_id, entry, rights))
        return out
