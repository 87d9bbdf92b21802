"""The SIP line source: watches devices by presence subscription through pjsua2.

Each device with ``source = "sip"`` and ``line`` = a SIP URI gets a pjsua2 Buddy that
subscribes to its presence (RFC 3856). What a NOTIFY says goes through the pure
:mod:`gateway.sip.presence` (classify + :class:`~gateway.sip.presence.PresenceTranslator`)
and leaves as core reports via `on_reports`, on the asyncio loop.

A subscription that is refused, terminated, never answered, or not active within
`subscribe_timeout` makes its device `unknown`: `on_connection_lost(conn)` is called with the
device's connection name, ``"sip:" + device`` (the `conn` of all its reports), which the
gateway passes to ``LineTracker.connection_lost(conn)``. The source then subscribes again with
exponential backoff (:class:`~gateway.backoff.Backoff`: `backoff_initial` doubling up to
`backoff_max`, reset by a working subscription). Status text that pjsua2 shows after a
termination is garbage and ignored.

What a NOTIFY says is read from its raw body (the endpoint's rx hook, on the pjsua thread,
before pjsua's own callback), not from pjsua2's reduced status, which knows neither RPID
``on-the-phone`` without a note nor merged multi-device documents: see
:func:`gateway.sip.presence.read_presence`. A NOTIFY without a body (the server lost the
publication) turns the device unknown at once.

Threads: all Buddy objects and the translator live on the pjsua thread; callbacks reach
asyncio with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..backoff import Backoff
from ..calls import CallReport, ServiceReport
from .endpoint import SipEndpoint, guarded
from .digest import header_values
from .presence import LineActivity, PidfError, PresenceTranslator, buddy_presence, classify, \
    read_presence

__all__ = ["SipPresenceSource", "WatchState"]

log = logging.getLogger("gateway.sip")


@dataclass(frozen=True, slots=True)
class WatchState:
    """One watched line as the source sees it (for status pages and tests)."""

    uri: str
    device: str
    up: bool  # a subscription is active and has delivered a state
    attempts: int  # subscriptions started for this line
    retry_in: float | None  # seconds of the pending backoff, None when none pending


class _Watch:
    __slots__ = ("uri", "device", "buddy", "up", "attempts", "backoff", "generation",
                 "retry_token", "retry_in", "from_body", "key")

    def __init__(self, uri: str, device: str, backoff: Backoff) -> None:
        self.uri, self.device = uri, device
        self.buddy: Any = None
        self.up = False
        self.attempts = 0
        self.backoff = backoff
        self.generation = 0  # bumped by every (re)subscription: stale timers/callbacks no-op
        self.retry_token: object | None = None  # set while a re-subscription is scheduled
        self.retry_in: float | None = None
        self.from_body: LineActivity | None = None  # what the last NOTIFY's body said
        self.key = _uri_key(uri)


class SipPresenceSource:
    """Presence watcher for `lines` (SIP URI -> device id). See the module docstring."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        lines: Mapping[str, str],
        on_reports: Callable[[list[CallReport | ServiceReport]], None],
        on_connection_lost: Callable[[str | None], None],
        *,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        subscribe_timeout: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self.on_reports = on_reports
        self.on_connection_lost = on_connection_lost
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.subscribe_timeout = subscribe_timeout
        # Synthetic call ids start at the clock (ms), so they never repeat across restarts.
        self.translator = PresenceTranslator(start=int(time.time() * 1000))
        self._lines = dict(lines)
        self._watches: dict[str, _Watch] = {}  # pjsua thread only
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False

    # ------------------------------------------------------------------ asyncio side

    @staticmethod
    def conn(device: str) -> str:
        """The connection name of a device's reports (pass it to LineTracker.connection_lost)."""
        return PresenceTranslator.conn(device)

    async def start(self) -> None:
        """Subscribe to every line (the endpoint must be started)."""
        self._loop = asyncio.get_running_loop()
        self._running = True
        self.endpoint.add_shutdown_hook(self._shutdown)
        self.endpoint.add_rx_hook(self._on_rx)
        await self.endpoint.run(self._sync, dict(self._lines))

    async def update_lines(self, lines: Mapping[str, str]) -> None:
        """A config reload: watch the new set (unchanged lines keep their subscription)."""
        self._lines = dict(lines)
        if self._running:
            await self.endpoint.run(self._sync, dict(self._lines))

    async def stop(self) -> None:
        """Unsubscribe everything; the devices become unknown (on_connection_lost(None))."""
        if not self._running:
            return
        self._running = False
        self.endpoint.remove_shutdown_hook(self._shutdown)
        self.endpoint.remove_rx_hook(self._on_rx)
        try:
            await self.endpoint.run(self._sync, {})
        except Exception:  # noqa: BLE001 - the endpoint may be gone already
            log.debug("SIP source stop: endpoint not running")
        self._emit_lost(None)

    async def watches(self) -> list[WatchState]:
        """A snapshot of the watched lines."""
        if not self.endpoint.running:
            return []
        return await self.endpoint.run(self._snapshot)

    # ------------------------------------------------------------------ to asyncio

    def _post(self, fn: Callable, *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._deliver, fn, args)
        except RuntimeError:
            pass  # the loop closed meanwhile

    @staticmethod
    def _deliver(fn: Callable, args: tuple) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001
            log.exception("SIP source callback failed")

    def _emit_reports(self, reports: list) -> None:
        if reports:
            self._post(self.on_reports, reports)

    def _emit_lost(self, conn: str | None) -> None:
        if conn is None:
            if self._loop is not None and not self._loop.is_closed():
                self._deliver(self.on_connection_lost, (None,))
            return
        self._post(self.on_connection_lost, conn)

    # ------------------------------------------------------------------ pjsua thread

    def _shutdown(self) -> None:
        # The endpoint stops before the source did: release the buddies on the pjsua thread.
        self._sync({})

    def _snapshot(self) -> list[WatchState]:
        return [WatchState(w.uri, w.device, w.up, w.attempts, w.retry_in)
                for w in self._watches.values()]

    def _sync(self, lines: dict[str, str]) -> None:
        for uri in [u for u, w in self._watches.items() if lines.get(u) != w.device]:
            w = self._watches.pop(uri)
            self._drop(w)
            self.translator.reset(w.device)
        for uri, device in lines.items():
            if uri not in self._watches:
                w = _Watch(uri, device, Backoff(self.backoff_initial, self.backoff_max))
                self._watches[uri] = w
                self._subscribe(w)

    def _drop(self, w: _Watch) -> None:
        w.generation += 1
        buddy, w.buddy = w.buddy, None
        if buddy is not None:
            buddy.source = None
            try:
                buddy.subscribePresence(False)
            except Exception:  # noqa: BLE001 - already terminated
                pass
            # Deleting the last reference deletes the pjsua buddy: here, on the pjsua thread.
            del buddy

    def _subscribe(self, w: _Watch) -> None:
        self._drop(w)
        pj = self.endpoint.pj
        w.attempts += 1
        w.retry_token = None
        w.retry_in = None
        gen = w.generation
        buddy = _make_buddy(pj)(self, w, gen)
        cfg = pj.BuddyConfig()
        cfg.uri = w.uri
        cfg.subscribe = True
        try:
            buddy.create(self.endpoint.account, cfg)
        except Exception as exc:  # noqa: BLE001 - a bad URI, or pjsua refusing
            log.warning("SIP source: cannot subscribe to %s (%s): %s", w.uri, w.device, exc)
            self._failed(w, gen, "cannot subscribe")
            return
        w.buddy = buddy
        log.debug("SIP source: subscribing to %s for device %s", w.uri, w.device)
        self.endpoint.call_later(self.subscribe_timeout, lambda: self._check_up(w, gen))

    def _check_up(self, w: _Watch, gen: int) -> None:
        if gen == w.generation and not w.up and self._watches.get(w.uri) is w:
            self._failed(w, gen, f"no state within {self.subscribe_timeout:.0f} s")

    def _failed(self, w: _Watch, gen: int, why: str) -> None:
        """The subscription `gen` of `w` is down: unknown now, subscribe again later."""
        if gen != w.generation or w.retry_token or self._watches.get(w.uri) is not w:
            return
        was_up, w.up = w.up, False
        self.translator.reset(w.device)
        self._emit_lost(self.conn(w.device))
        delay = w.backoff.next()
        token = w.retry_token = object()
        w.retry_in = delay
        (log.warning if was_up else log.info)(
            "SIP source: subscription to %s (%s) down: %s; again in %.1f s",
            w.uri, w.device, why, delay)
        # Drop the failed buddy now (from a timer, not inside its own callback), retry later.
        self.endpoint.call_later(0, lambda: self._drop_if(w, gen))
        self.endpoint.call_later(delay, lambda: self._retry(w, token))

    def _drop_if(self, w: _Watch, gen: int) -> None:
        if gen == w.generation:
            self._drop(w)

    def _retry(self, w: _Watch, token: object) -> None:
        if self._watches.get(w.uri) is w and w.retry_token is token:
            self._subscribe(w)

    def _on_evsub(self, w: _Watch, gen: int, buddy: Any) -> None:
        if gen != w.generation:
            return
        info = buddy.getInfo()
        pj = self.endpoint.pj
        if info.subState == pj.PJSIP_EVSUB_STATE_TERMINATED:
            code = info.subTermCode
            reason = info.subTermReason or ""
            self._failed(w, gen, f"terminated ({code} {reason})".strip())

    def _on_rx(self, method: str, raw: str) -> None:
        """Every received request (pjsua thread): keep what a presence NOTIFY's body says."""
        if method != "NOTIFY" or not self._watches:
            return
        event = (header_values(raw, "Event", "o") or [""])[0].split(";")[0].strip().lower()
        if event != "presence":
            return
        sender = (header_values(raw, "From", "f") or [""])[0]
        key = _uri_key(sender)
        w = next((w for w in self._watches.values() if w.key == key), None)
        if w is None or w.buddy is None:
            return
        state = (header_values(raw, "Subscription-State") or [""])[0].strip().lower()
        body = raw.replace("\r\n", "\n").split("\n\n", 1)[1] if "\n\n" in \
            raw.replace("\r\n", "\n") else ""
        try:
            activity = read_presence(body)
        except PidfError as exc:
            log.warning("SIP source: %s: unusable presence body (%s)", w.uri, exc)
            w.from_body = None
            return
        if activity is LineActivity.UNKNOWN and state.startswith(("active", "pending")):
            # The publication is gone (e.g. Kamailio after it expired): the lamp is no longer
            # known, not the last one seen.
            w.from_body = None
            if w.up:
                log.info("SIP source: %s (%s): NOTIFY without a body: state unknown",
                         w.uri, w.device)
                self.translator.update(w.device, activity)
                self._emit_lost(self.conn(w.device))
            return
        w.from_body = activity

    def _on_state(self, w: _Watch, gen: int, buddy: Any) -> None:
        if gen != w.generation:
            return
        pj = self.endpoint.pj
        info = buddy.getInfo()
        if info.subState != pj.PJSIP_EVSUB_STATE_ACTIVE:
            # ACCEPTED carries no state yet; after TERMINATED the status text is garbage.
            return
        activity, w.from_body = w.from_body, None
        if activity is None:
            # No raw body seen (logging of received messages off): pjsua2's own reading.
            st = info.presStatus
            online = {pj.PJSUA_BUDDY_STATUS_ONLINE: True,
                      pj.PJSUA_BUDDY_STATUS_OFFLINE: False}.get(st.status)
            presence = buddy_presence(online, st.note,
                                      busy=st.activity == pj.PJRPID_ACTIVITY_BUSY,
                                      away=st.activity == pj.PJRPID_ACTIVITY_AWAY)
            activity = classify(presence)
        if activity is None or activity is LineActivity.UNKNOWN:
            log.debug("SIP source: %s: nothing usable in the NOTIFY", w.uri)
            return
        if not w.up:
            w.up = True
            w.backoff.reset()
            log.info("SIP source: watching %s (%s)", w.uri, w.device)
        self._emit_reports(self.translator.update(w.device, activity))


def _uri_key(text: str) -> str:
    """user@host of a URI or name-addr (From header values included), lower case."""
    text = text.strip()
    if "<" in text:
        text = text.split("<", 1)[1].split(">", 1)[0]
    text = text.split(";", 1)[0]
    scheme, _, rest = text.partition(":")
    if scheme.lower() not in ("sip", "sips"):
        rest = text
    user, _, host = rest.rpartition("@")
    host = host.split(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return f"{user}@{host}".lower()


def _make_buddy(pj: Any) -> type:
    """The Buddy subclass (built lazily: pjsua2 is imported only when SIP is used)."""
    cls = _BUDDY_CLASSES.get(id(pj))
    if cls is not None:
        return cls

    class Buddy(pj.Buddy):
        def __init__(self, source: SipPresenceSource, watch: _Watch, gen: int) -> None:
            super().__init__()
            self.source: SipPresenceSource | None = source
            self.watch, self.gen = watch, gen

        @guarded
        def onBuddyState(self) -> None:  # noqa: N802 - pjsua2 name
            if self.source is not None:
                self.source._on_state(self.watch, self.gen, self)

        @guarded
        def onBuddyEvSubState(self, prm: Any) -> None:  # noqa: N802 - pjsua2 name
            if self.source is not None:
                self.source._on_evsub(self.watch, self.gen, self)

    _BUDDY_CLASSES[id(pj)] = Buddy
    return Buddy


_BUDDY_CLASSES: dict[int, type] = {}
