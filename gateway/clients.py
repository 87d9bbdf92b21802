"""Client run-time state owned by this process: sessions, selected device, softphone calls.

Every change is a read-modify-publish of the client's full :class:`ClientState`, serialised
per client by a lock, so two quick requests of one client never overwrite each other. The
state read is the newer of what this process last published and what the shared log says.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from .calls import MAX_SOFTPHONE_CALLS, CallReport, CallTable
from .clock import ClockSteps
from .config import Config
from .errors import WireError
from .journal import Journal
from .model import ClientState, Presence
from .panels.engine import Engine
from .recorder import Recorder
from .store import Store, encode_client

__all__ = ["Clients", "ClientSession"]

log = logging.getLogger("gateway")


class ClientSession(Protocol):
    """What the client state needs of a logged-in connection."""

    client: str | None
    computer: str | None
    address: str


class Clients:
    """The run-time state of the clients whose sessions this process holds.

    `engine()` and `config()` give the current engine and configuration (both are replaced on
    a reload); ended softphone calls go to `journal`.
    """

    def __init__(self, store: Store, engine: Callable[[], Engine], journal: Journal,
                 config: Callable[[], Config], recorder: Recorder | None = None) -> None:
        self.store = store
        # Notes every softphone report and what became of it (lamp provenance).
        self.recorder = recorder
        self._engine = engine
        self.journal = journal
        self._config = config
        self.sessions: dict[str, set[ClientSession]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._mine: dict[str, tuple[ClientState, int]] = {}  # last published by us, its seq
        self._clock = ClockSteps()
        self._softphones: dict[str, CallTable] = {}

    def current(self, client: str) -> ClientState:
        engine = self._engine()
        mine = self._mine.get(client)
        shared = engine.client_state(client)
        if mine is not None and mine[1] > engine.client_seq(client):
            return mine[0]
        return shared

    async def _update(self, client: str, change: Callable[[ClientState], ClientState]) -> None:
        lock = self._locks.setdefault(client, asyncio.Lock())
        async with lock:
            old = self.current(client)
            new = change(old)
            if new == old:
                return
            (seq, _), = await self.store.publish([("client", client, encode_client(new))])
            self._mine[client] = (new, seq)

    # -- sessions -------------------------------------------------------------------------

    def desk_device(self, client: str, computer: str | None) -> str | None:
        """The hot-desk device a client gets when it logs in from `computer`."""
        config = self._config()
        cfg = config.client_by_name.get(client)
        if cfg is None or not cfg.devices_by_computer or not computer:
            return None
        wanted = computer.strip().lower()
        return next((d.id for d in config.devices
                     if d.computer and d.computer.strip().lower() == wanted), None)

    async def session_started(self, session: ClientSession) -> None:
        name = session.client
        assert name is not None
        self.sessions.setdefault(name, set()).add(session)
        desk = self.desk_device(name, session.computer)
        if desk is not None:
            # A hot-desk device has one holder: whoever logged in there last.
            for other in self._engine().desk_holders(desk) - {name}:
                await self._update(other, lambda s: replace(
                    s, temp_devices=tuple(d for d in s.temp_devices if d != desk),
                    current_device=None if s.current_device == desk else s.current_device))
        temp = (desk,) if desk is not None else ()

        def start(s: ClientState) -> ClientState:
            moved = desk is not None or not s.logged_in
            return replace(s, logged_in=s.logged_in or True, address=session.address,
                           temp_devices=temp if moved else s.temp_devices)

        await self._update(name, start)

    async def session_ended(self, session: ClientSession) -> None:
        name = session.client
        assert name is not None
        live = self.sessions.get(name, set())
        live.discard(session)
        if live:
            return
        self.sessions.pop(name, None)
        self._softphones.pop(name, None)
        # The last session is gone: nobody selects a device any more, and the softphone that
        # reported calls is no longer there to report their end.
        try:
            await self._update(
                name,
                lambda s: replace(s, logged_in=False, current_device=None, softphone=(),
                                  temp_devices=()),
            )
        except Exception:  # Redis away: the state is republished when it returns
            log.warning("could not record the logout of %s (Redis away)", name)

    async def select_device(self, client: str, device: str) -> None:
        await self._update(client, lambda s: replace(s, current_device=device))

    async def presence(self, client: str, status: str, info: str | None,
                       locked: bool | None = None) -> None:
        def change(s: ClientState) -> ClientState:
            s = replace(s, presence=Presence(status, info))
            if locked is not None and s.logged_in:
                s = replace(s, logged_in="locked" if locked else True)
            return s

        await self._update(client, change)

    async def softphone(self, client: str, report: CallReport) -> None:
        """A call report of the client's softphone (`report.device` is the client)."""
        table = self._softphones.get(client)
        if table is None:
            table = self._softphones[client] = CallTable(f"sp:{client}", MAX_SOFTPHONE_CALLS)
            table.load(self.current(client).softphone)
        now = time.time()
        step = self._clock.step(now, time.monotonic())
        if step:  # the wall clock was stepped: softphone call times move with it
            for name, other in list(self._softphones.items()):
                if other.shift(step):
                    calls = other.snapshot()
                    await self._update(name, lambda s, calls=calls: replace(s, softphone=calls))
        table.expire(now)
        if table.refuses(report):
            raise WireError("forbidden", f"your softphone has {len(table.calls)} calls, the "
                            "most the gateway keeps for one: end one first")
        # Applied through the recorder: the report and what became of it are kept for
        # `blf-gateway explain` and the admin view.
        sessions = self.sessions.get(client) or ()
        address = next(iter(sessions)).address if sessions else ""
        changed = (self.recorder.softphone(client, table, report, address, now)
                   if self.recorder is not None and self.recorder.enabled
                   else table.apply(report, now))
        if changed:
            calls = table.snapshot()
            await self._update(client, lambda s: replace(s, softphone=calls))
            ended = table.take_ended()
            if ended:
                self.journal.record(ended)

    async def republish(self) -> None:
        """After Redis came back: make sure what our sessions told us is there again."""
        for client in list(self.sessions):
            mine = self._mine.get(client)
            if mine is not None:
                (seq, _), = await self.store.publish(
                    [("client", client, encode_client(mine[0]))]
                )
                self._mine[client] = (mine[0], seq)
