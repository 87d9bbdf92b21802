"""The line sources of this process and the one path their reports take.

Every source's reports go through its :class:`~gateway.calls.LineTracker` (the clock is read
here, at the edge) and the device states that changed go to the
:class:`~gateway.publisher.Publisher`; calls that ended go to the
:class:`~gateway.journal.Journal`. Every process listens for TAPI bridges; the Asterisk
connection and the SIP user agent run only while this process holds their lease
(:class:`~gateway.cluster.Cluster` calls :meth:`LineSources.start` / :meth:`LineSources.stop`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .calls import CallReport, LineTracker, ServiceReport
from .config import Config, DeviceCfg, parse_hostport
from .journal import Journal
from .model import Call, DeviceState, DeviceStatus
from .panels.engine import Delta, Engine
from .publisher import Publisher
from .sip.service import SipService
from .store import Store
from .tapi.ami import AmiSource
from .tapi.bridge import TapiBridgeServer

__all__ = ["LineSources", "SOURCE_NAMES"]

log = logging.getLogger("gateway")

SOURCE_NAMES = ("tapi_bridge", "ami", "sip")
STOP_TIMEOUT = 5.0


class LineSources:
    """Trackers and adapters of the configured sources (see the module docstring)."""

    def __init__(self, config: Callable[[], Config], publisher: Publisher, journal: Journal,
                 store: Store, engine: Callable[[], Engine]) -> None:
        self._config = config
        self.publisher = publisher
        self.journal = journal
        self.store = store
        self._engine = engine
        cfg = config()
        # A new connection knows nothing yet: every device starts unknown.
        self.trackers: dict[str, LineTracker] = {
            name: LineTracker(self._devices_of(name))
            for name in SOURCE_NAMES if getattr(cfg.sources, name) is not None}
        self.bridge: TapiBridgeServer | None = None
        self.ami: AmiSource | None = None
        self._ami_task: asyncio.Task | None = None
        self._ami_lines: dict[str, str] = {}
        self.sip: SipService | None = None

    # -- configuration ----------------------------------------------------------------------

    def _devices_of(self, source: str) -> list[str]:
        return [d.id for d in self._config().devices if d.source == source]

    def lines(self, source: str) -> dict[str, tuple[str, str]]:
        """The source's line names -> (device id, number), from the current configuration."""
        cfg = self._config()
        cache = getattr(self, "_lines_cache", None)
        if cache is None or cache[0] is not cfg:
            mapping: dict[str, dict[str, tuple[str, str]]] = {}
            for d in cfg.devices:
                mapping.setdefault(d.source, {})[d.line_name] = (d.id, d.number)
            cache = self._lines_cache = (cfg, mapping)
        return cache[1].get(source, {})

    def _line_map(self, source: str) -> dict[str, str]:
        return {line: dev for line, (dev, _) in self.lines(source).items()}

    def running(self, source: str) -> bool:
        """Whether this process speaks for the source now."""
        if source == "tapi_bridge":
            return self.bridge is not None
        return (self.ami if source == "ami" else self.sip) is not None

    # -- the one path of reports ------------------------------------------------------------

    def _changed(self, tracker: LineTracker, states: list[DeviceState]) -> None:
        """A source changed device states: publish them, journal the calls that ended."""
        self.publisher.put(states)
        ended = tracker.take_ended()
        if ended:
            self.journal.record(ended)

    def _reports_to(self, tracker: LineTracker) -> Callable[[list], None]:
        def on_reports(reports: list[CallReport | ServiceReport]) -> None:
            now = time.time()
            changed: dict[str, DeviceState] = {}
            for r in reports:
                states = (tracker.call(r, now) if isinstance(r, CallReport)
                          else tracker.service(r, now))
                for st in states:
                    changed[st.device] = st
            if changed:
                self._changed(tracker, list(changed.values()))

        return on_reports

    # -- lifecycle --------------------------------------------------------------------------

    async def start_bridge(self) -> None:
        bcfg = self._config().sources.tapi_bridge
        if bcfg is None:
            return
        tracker = self.trackers["tapi_bridge"]
        host, port = parse_hostport(bcfg.listen)
        self.bridge = TapiBridgeServer(
            host, port, tracker, lambda: self.lines("tapi_bridge"),
            lambda states: self._changed(tracker, states),
            max_line_bytes=bcfg.max_line_bytes,
        )
        await self.bridge.start()
        # Its devices stay as Redis has them until a bridge reports: unknown on a fresh
        # state, or made unknown by the janitor when the process that owned them is gone.

    async def start(self, name: str) -> None:
        """Start the Asterisk or SIP source (this process took its lease)."""
        tracker = self.trackers[name]
        self.publisher.put([tracker.state(d) for d in tracker.devices])
        if name == "ami":
            self._start_ami()
        else:
            self.sip = SipService(self._config, self.store, self._engine,
                                  self._reports_to(tracker),
                                  lambda conn: self.publisher.put(tracker.connection_lost(conn)))
            await self.sip.start(self._line_map("sip"))

    async def stop(self, name: str) -> None:
        """Stop the Asterisk or SIP source (lease lost, or shutdown)."""
        if name == "ami":
            await self._stop_ami()
        elif self.sip is not None:
            sip, self.sip = self.sip, None
            await sip.stop()

    async def close(self) -> None:
        """Stop every source; leave their devices unknown (nobody reports them while we are
        down)."""
        for name in ("sip", "ami"):
            try:
                await self.stop(name)
            except Exception:
                log.exception("stopping the %s source", name)
        if self.bridge is not None:
            await self.bridge.close()
        self.publisher.put([s for t in self.trackers.values() for s in t.connection_lost()])

    def _start_ami(self) -> None:
        acfg = self._config().sources.ami
        assert acfg is not None
        tracker = self.trackers["ami"]

        def on_lost() -> None:
            lost = tracker.connection_lost()
            log.warning("Asterisk connection lost: %d device(s) unknown until re-synced",
                        len(lost))
            self.publisher.put(lost)

        self._ami_lines = self._line_map("ami")
        self.ami = AmiSource(
            acfg.host, acfg.port, acfg.username, self._config().path(acfg.secret_file),
            self._ami_lines, self._reports_to(tracker), on_lost,
            on_synced=lambda: log.info("Asterisk state re-synced"),
        )
        self._ami_task = asyncio.create_task(self.ami.run())

    async def _stop_ami(self) -> None:
        ami, task = self.ami, self._ami_task
        self.ami = self._ami_task = None
        if ami is not None:
            try:
                await asyncio.wait_for(ami.close(), STOP_TIMEOUT)
            except (asyncio.TimeoutError, Exception):
                log.exception("stopping the Asterisk source")
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    # -- configuration reload, Redis reload ---------------------------------------------------

    async def reconfigure(self) -> None:
        """The configuration changed: follow its devices and lines."""
        for source, tracker in self.trackers.items():
            wanted = set(self._devices_of(source))
            for d in set(tracker.devices) - wanted:
                tracker.remove_device(d)
            for d in wanted - set(tracker.devices):
                tracker.add_device(d)
                if source != "tapi_bridge" and self.running(source):
                    self.publisher.put([tracker.state(d)])
        if self.sip is not None:
            await self.sip.update_lines(self._line_map("sip"), self._devices_of("sip"))
        if self.ami is not None and self._line_map("ami") != self._ami_lines:
            log.info("AMI lines changed: reconnecting to Asterisk to re-sync them")
            await self._stop_ami()
            self.publisher.put(self.trackers["ami"].connection_lost())
            self._start_ami()

    def republish(self) -> None:
        """After a Redis reload: what our sources know may be missing there."""
        for source, tracker in self.trackers.items():
            if self.running(source):
                self.publisher.put([tracker.state(d) for d in tracker.devices
                                    if tracker.state(d).status is not DeviceStatus.UNKNOWN
                                    or source != "tapi_bridge"])

    # -- to the other parts -----------------------------------------------------------------

    def lamps_changed(self, deltas: list[Delta]) -> None:
        """Engine deltas, for the desk phones of the BLF server."""
        if self.sip is not None:
            self.sip.lamps_changed(deltas)

    async def run_timers(self) -> None:
        """Deadlines of the trackers (ended-call memory), without a busy loop."""
        while True:
            now = time.time()
            deadlines = [d for t in self.trackers.values() if (d := t.next_deadline())]
            for t in self.trackers.values():
                t.tick(now)
            nxt = min(deadlines, default=now + 5.0)
            await asyncio.sleep(min(max(nxt - now, 0.05), 5.0))

    # PbxPickup (gateway.pickup): the Asterisk connection carries out pickups itself.

    def handles(self, picker: DeviceCfg) -> bool:
        return picker.source == "ami" and self.ami is not None

    async def pickup(self, picker: DeviceCfg, target: DeviceCfg,
                     call: Call) -> tuple[bool, str | None]:
        acfg = self._config().sources.ami
        if self.ami is None or acfg is None:
            return False, "the Asterisk connection is down"
        return await self.ami.pickup(call.id, picker.number, picker.line_name,
                                     mode=acfg.pickup, context=acfg.context)
