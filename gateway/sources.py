"""The line sources of this process and the one handler their reports go to.

:class:`LineSources` builds the configured sources (each a
:class:`~gateway.linesource.LineSource`), starts and stops them, tells them when the lines
change, and is their :class:`~gateway.linesource.SourceEvents` handler: reports go through
the source's :class:`~gateway.calls.LineTracker` (the clock is read here, at the edge), the
device states that changed go to the :class:`~gateway.publisher.Publisher`, the calls that
ended to the :class:`~gateway.journal.Journal`. Every process listens for TAPI bridges; the
Asterisk connection and the SIP user agent run only while this process holds their lease
(:class:`~gateway.cluster.Cluster` calls :meth:`LineSources.start` / :meth:`LineSources.stop`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from .ami.client import AmiSource
from .calls import MAX_LINE_CALLS, CallReport, LineTracker
from .clock import ClockSteps
from .config import Config, DeviceCfg, parse_hostport
from .journal import Journal
from .linesource import Lines, LineSource, Report
from .logrepeat import should_log
from .model import Call, DeviceState, DeviceStatus
from .panels.engine import Delta, Engine
from .publisher import Publisher
from .recorder import Recorder
from .sip.service import SipService
from .store import Store
from .tapi.access import BridgeAccess, SecretFile
from .tapi.bridge import TapiBridgeServer
from .tls import TlsFiles

__all__ = ["LineSources", "SOURCE_NAMES"]

log = logging.getLogger("gateway")

SOURCE_NAMES = ("tapi_bridge", "ami", "sip")
STOP_TIMEOUT = 5.0
_LABEL = {"tapi_bridge": "TAPI bridge", "ami": "Asterisk", "sip": "SIP"}
_REFUSED = "%s %s: device %s has %d calls, the most kept for a line: new call %.40r ignored"


class LineSources:
    """Trackers and running sources (see the module docstring)."""

    def __init__(self, config: Callable[[], Config], publisher: Publisher, journal: Journal,
                 store: Store, engine: Callable[[], Engine],
                 recorder: Recorder | None = None) -> None:
        self._config = config
        # With a recorder, every report and what its tracker did with it is kept as lamp
        # provenance (gateway.recorder); the tracker's decisions are the same either way.
        self.recorder = recorder
        self.publisher = publisher
        self.journal = journal
        self.store = store
        self._engine = engine
        self._clock = ClockSteps()
        cfg = config()
        # A new connection knows nothing yet: every device starts unknown.
        self.trackers: dict[str, LineTracker] = {
            name: LineTracker(self._devices_of(name))
            for name in SOURCE_NAMES if getattr(cfg.sources, name) is not None}
        self.running: dict[str, LineSource] = {}
        self.bridge_tls: TlsFiles | None = None  # the bridge port's certificate, if any
        self.calls_refused: Counter[str] = Counter()  # new calls over MAX_LINE_CALLS, by source
        self._lines_of: tuple[Config, dict[str, dict[str, tuple[str, str]]]] | None = None

    @property
    def bridge(self) -> TapiBridgeServer | None:
        return self.running.get("tapi_bridge")  # type: ignore[return-value]

    @property
    def ami(self) -> AmiSource | None:
        return self.running.get("ami")  # type: ignore[return-value]

    @property
    def sip(self) -> SipService | None:
        return self.running.get("sip")  # type: ignore[return-value]

    # -- configuration ----------------------------------------------------------------------

    def _devices_of(self, source: str) -> list[str]:
        return [d.id for d in self._config().devices if d.source == source]

    def lines(self, source: str) -> Lines:
        """The source's line names -> (device id, number), from the current configuration."""
        cfg = self._config()
        if self._lines_of is None or self._lines_of[0] is not cfg:
            mapping: dict[str, dict[str, tuple[str, str]]] = {}
            for d in cfg.devices:
                mapping.setdefault(d.source, {})[d.line_name] = (d.id, d.number)
            self._lines_of = (cfg, mapping)
        return self._lines_of[1].get(source, {})

    # -- the handler of every source (SourceEvents) -------------------------------------------

    def reports(self, source: str, reports: Sequence[Report]) -> None:
        tracker = self.trackers.get(source)
        if tracker is None:
            return
        now = self._now()
        if self.recorder is not None and self.recorder.enabled:
            states = self.recorder.reports(source, tracker, reports, now)
        elif len(reports) == 1:  # the common case: one bridge line
            (r,) = reports
            states = tracker.call(r, now) if isinstance(r, CallReport) else tracker.service(r, now)
        else:
            changed: dict[str, DeviceState] = {}
            for r in reports:
                for st in (tracker.call(r, now) if isinstance(r, CallReport)
                           else tracker.service(r, now)):
                    changed[st.device] = st
            states = list(changed.values())
        if states:
            self.publisher.put(states)
            ended = tracker.take_ended()
            if ended:
                self.journal.record(ended)
        for refused in tracker.take_refused():
            self.calls_refused[source] += 1
            if should_log(log, _REFUSED, refused.conn):
                log.warning(_REFUSED, _LABEL[source], refused.conn, refused.device,
                            MAX_LINE_CALLS, refused.call, extra={"source": refused.conn})

    def connection_lost(self, source: str, conn: str | None) -> None:
        tracker = self.trackers.get(source)
        if tracker is None:
            return
        lost = (self.recorder.lost(source, tracker, conn)
                if self.recorder is not None and self.recorder.enabled
                else tracker.connection_lost(conn))
        if lost:
            log.warning("%s connection %s lost: %d device(s) unknown until it reports them "
                        "again", _LABEL[source], conn or "", len(lost))
            self.publisher.put(lost)

    # -- lifecycle --------------------------------------------------------------------------

    def _make(self, name: str) -> LineSource:
        cfg = self._config()
        lines = self.lines(name)
        if name == "tapi_bridge":
            bcfg = cfg.sources.tapi_bridge
            assert bcfg is not None
            host, port = parse_hostport(bcfg.listen)
            self.bridge_tls = None
            if bcfg.tls_cert and bcfg.tls_key:
                self.bridge_tls = TlsFiles(cfg.path(bcfg.tls_cert), cfg.path(bcfg.tls_key),
                                           cfg.path(bcfg.tls_client_ca) if bcfg.tls_client_ca
                                           else None, name="TAPI bridge")
            return TapiBridgeServer(
                host, port, self, lines, max_line_bytes=bcfg.max_line_bytes,
                access=self._bridge_access_getter(),
                ssl=self.bridge_tls.context if self.bridge_tls else None,
                require_client_cert=bool(bcfg.tls_client_ca))
        if name == "ami":
            acfg = cfg.sources.ami
            assert acfg is not None
            return AmiSource(acfg.host, acfg.port, acfg.username, cfg.path(acfg.secret_file),
                             lines, self,
                             on_synced=lambda: log.info("Asterisk state re-synced"))
        return SipService(self._config, self.store, self._engine, lines, self)

    def _bridge_access_getter(self) -> Callable[[], BridgeAccess]:
        """Per bridge connection: the allow-list of the configuration in force and the
        secret of its file (re-read when the file changes). An unusable secret file at
        start is a clear error; later, the last good secret stays."""
        secrets: dict[Path, SecretFile] = {}

        def secret_of(path: Path) -> bytes:
            holder = secrets.get(path)
            if holder is None:
                try:
                    holder = secrets[path] = SecretFile(path)
                except ValueError as exc:
                    if not secrets:  # at start
                        raise RuntimeError(str(exc)) from None
                    log.error("%s: keeping the previous bridge secret", exc)
                    return next(iter(secrets.values())).secret
            secret, warning = holder.get()
            if warning:
                log.error("%s", warning)
            return secret

        def access() -> BridgeAccess:
            cfg = self._config()
            bcfg = cfg.sources.tapi_bridge
            if bcfg is None:
                return BridgeAccess()
            secret = secret_of(cfg.path(bcfg.secret_file)) if bcfg.secret_file else None
            return BridgeAccess.build(secret, bcfg.allow)

        access()  # a missing or short secret file stops the start with its reason
        return access

    async def start(self, name: str) -> None:
        """Start a configured source. The bridge's devices stay as Redis has them until a
        bridge reports (unknown on a fresh state, or made unknown by the janitor when the
        process that owned them is gone); the Asterisk and SIP devices are published unknown
        until the new connection has re-synced them."""
        if name in self.running or name not in self.trackers:
            return
        if name != "tapi_bridge":
            tracker = self.trackers[name]
            self.publisher.put([tracker.state(d) for d in tracker.devices])
        source = self._make(name)
        try:
            await source.start()
        except BaseException:
            # Half started (an endpoint up, a subscription not): take down what did start.
            try:
                await asyncio.wait_for(source.stop(), STOP_TIMEOUT)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                log.debug("stopping the half-started %s source", _LABEL[name], exc_info=True)
            raise
        self.running[name] = source

    async def stop(self, name: str) -> None:
        """Stop a source (its lease went to another process, or shutdown)."""
        source = self.running.pop(name, None)
        if source is None:
            return
        try:
            await asyncio.wait_for(source.stop(), STOP_TIMEOUT)
        except (asyncio.TimeoutError, Exception):
            log.exception("stopping the %s source", _LABEL[name])

    async def close(self) -> None:
        """Stop every source and leave their devices unknown (nobody reports them while we
        are down); the publisher writes them on its last flush."""
        for name in ("sip", "ami", "tapi_bridge"):
            await self.stop(name)
        for source, tracker in self.trackers.items():
            if self.recorder is not None and self.recorder.enabled:
                self.publisher.put(self.recorder.lost(
                    source, tracker, None, reason="the gateway process that held its source "
                    "stopped: unknown until a process reports it again"))
            else:
                self.publisher.put(tracker.connection_lost())

    # -- configuration reload, Redis reload ---------------------------------------------------

    async def reconfigure(self) -> None:
        """The configuration changed: follow its devices, tell the sources their lines."""
        for source, tracker in self.trackers.items():
            wanted = set(self._devices_of(source))
            for d in set(tracker.devices) - wanted:
                tracker.remove_device(d)
            for d in wanted - set(tracker.devices):
                tracker.add_device(d)
                if source != "tapi_bridge" and source in self.running:
                    self.publisher.put([tracker.state(d)])
        for name, source in list(self.running.items()):
            await source.update_lines(self.lines(name))

    def republish(self) -> None:
        """After a Redis reload: what our sources know may be missing there."""
        for source, tracker in self.trackers.items():
            if source in self.running:
                self.publisher.put([tracker.state(d) for d in tracker.devices
                                    if tracker.state(d).status is not DeviceStatus.UNKNOWN
                                    or source != "tapi_bridge"])

    def _now(self) -> float:
        """The wall clock, read here for every report and timer; a step of it (not time
        passing) moves the trackers' times with it (see gateway/clock.py)."""
        now = time.time()
        step = self._clock.step(now, time.monotonic())
        if step:
            log.warning("the wall clock was stepped by %+.1f s: call times and the memory of "
                        "ended calls move with it", step)
            for tracker in self.trackers.values():
                changed = tracker.shift(step)
                if changed:
                    self.publisher.put(changed)
        return now

    async def run_timers(self) -> None:
        """Deadlines of the trackers (ended-call memory), without a busy loop."""
        while True:
            now = self._now()
            deadlines = [d for t in self.trackers.values() if (d := t.next_deadline())]
            for t in self.trackers.values():
                t.tick(now)
            nxt = min(deadlines, default=now + 5.0)
            await asyncio.sleep(min(max(nxt - now, 0.05), 5.0))

    # -- to the other parts -----------------------------------------------------------------

    def lamps_changed(self, deltas: list[Delta]) -> None:
        """Engine deltas, for the desk phones of the BLF server."""
        sip = self.sip
        if sip is not None:
            sip.lamps_changed(deltas)

    # PbxPickup (gateway.pickup): the Asterisk connection and TAPI bridges that take
    # commands carry out pickups themselves.

    def handles(self, picker: DeviceCfg, target: DeviceCfg) -> bool:
        if picker.source == "ami":
            return "ami" in self.running
        bridge = self.bridge
        return (picker.source == target.source == "tapi_bridge" and bridge is not None
                and bridge.can_pickup(target.id, picker.id))

    async def pickup(self, picker: DeviceCfg, target: DeviceCfg,
                     call: Call) -> tuple[bool, str | None]:
        if picker.source == "tapi_bridge":
            bridge = self.bridge
            if bridge is None:
                return False, "the TAPI bridge listener is not running"
            # The bridge's own call id is what follows the device prefix of ours.
            return await bridge.pickup(target.id, target.line_name, call.id.split("/", 1)[1],
                                       picker.line_name)
        ami, acfg = self.ami, self._config().sources.ami
        if ami is None or acfg is None:
            return False, "the Asterisk connection is down"
        return await ami.pickup(call.id, picker.number, picker.line_name,
                                mode=acfg.pickup, context=acfg.context)
