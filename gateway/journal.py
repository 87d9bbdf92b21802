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
from collections.abc import Callable

from .calls import EndedCall
from .config import Config
from .panels.engine import Engine
from .panels.rights import Rights, combined_rights, panel_rights
from .store import RedisError, Store, wait_for_redis

__all__ = ["Journal", "entry_of", "render_entry"]

log = logging.getLogger("gateway.journal")

MAX_PENDING = 100_000  # entries held while Redis is away; the oldest are dropped beyond


def entry_of(ended: EndedCall, device: str | None, client: str | None) -> dict:
    c = ended.call
    return {
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


def render_entry(entry_id: str, entry: dict, rights: Rights) -> dict:
    visible = rights.numbers == "all" or (rights.numbers == "inbound"
                                          and entry["direction"] == "in")
    return {"id": entry_id, **entry,
            "remote": entry["remote"] if visible else None,
            "remote_name": entry["remote_name"] if visible else None}


class Journal:
    """Queues entries of ended calls, writes them (:meth:`run`), reads them for a client.

    `engine()` (whether an owner is logged in) and `config()` give the current ones.
    """

    def __init__(self, store: Store, engine: Callable[[], Engine],
                 config: Callable[[], Config]) -> None:
        self.store = store
        self._engine = engine
        self._config = config
        self._server: list[str] = []
        self._offline: list[tuple[str, str]] = []
        self._wake = asyncio.Event()
        self.written = 0

    # -- writing ------------------------------------------------------------------------

    def record(self, ended: list[EndedCall]) -> None:
        """Queue journal entries for calls that ended (no I/O here)."""
        cfg = self._config()
        engine = self._engine()
        for e in ended:
            if e.owner.startswith("sp:"):
                client = e.owner[3:]
                ccfg = cfg.client_by_name.get(client)
                if ccfg is not None and "w" in ccfg.journal:
                    self._server.append(json.dumps(entry_of(e, None, client)))
                continue
            dcfg = cfg.device_by_id.get(e.owner)
            if dcfg is None:
                continue
            text = json.dumps(entry_of(e, e.owner, None))
            if dcfg.journal:
                self._server.append(text)
            for owner in cfg.owners_of(e.owner):
                if owner.offline_monitor and not engine.client_state(owner.name).logged_in:
                    self._offline.append((owner.name, text))
        if len(self._server) > MAX_PENDING:
            del self._server[: len(self._server) - MAX_PENDING]
        if len(self._offline) > MAX_PENDING:
            del self._offline[: len(self._offline) - MAX_PENDING]
        if self._server or self._offline:
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._server or self._offline:
                server, offline = self._server, self._offline
                self._server, self._offline = [], []
                jcfg = self._config().journal
                try:
                    await self.store.append_journal(
                        server, offline, retention_seconds=jcfg.retention_days * 86400,
                        max_entries=jcfg.max_entries, offline_max=jcfg.offline_max_entries)
                    self.written += len(server) + len(offline)
                except (RedisError, OSError) as exc:
                    self._server[:0] = server
                    self._offline[:0] = offline
                    log.warning("writing %d journal entries failed (%s); will retry",
                                len(server) + len(offline), exc)
                    await wait_for_redis(self.store)

    # -- reading ------------------------------------------------------------------------

    def _rights(self, reader: str, entry: dict, temp: tuple[str, ...]) -> Rights | None:
        cfg = self._config()
        if entry.get("device"):
            if entry["device"] not in cfg.device_by_id:
                return None
            return combined_rights(cfg, reader, entry["device"], temp)
        client = entry.get("client")
        if client == reader:
            return Rights(numbers="all")
        shared = [panel_rights(g, reader) for g in cfg.groups
                  if reader in g.members and client in g.members]
        if not shared:
            return None
        order = {"none": 0, "inbound": 1, "all": 2}
        return Rights(numbers=max((r.numbers for r in shared), key=order.__getitem__))

    async def read(self, reader: str, scope: str, since: float | None,
                   temp: tuple[str, ...] = ()) -> list[dict]:
        store = self.store
        if scope == "offline":
            start = "-"
            entries = await store.read_journal(reader, start)
            return [render_entry(i, e, Rights(numbers="all")) for i, e in entries]
        start = f"{int(since * 1000)}-0" if since else "-"
        out = []
        for i, e in await store.read_journal(None, start, count=5000):
            rights = self._rights(reader, e, temp)
            if rights is not None:
                out.append(render_entry(i, e, rights))
        return out[-1000:]
