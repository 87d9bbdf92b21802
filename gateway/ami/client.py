"""The Asterisk Manager Interface line source: a thin asyncio loop around the pure parts.

:class:`AmiSource` opens the TCP connection and runs one
:class:`~gateway.ami.connection.AmiConnection` (banner, login, re-sync, pending actions,
ping: all there, sans I/O) per connection: it feeds it what it reads with the loop's clock,
writes what it says, arms one timer at its next deadline, and acts on its events. Reports
go to the :class:`~gateway.linesource.SourceEvents` handler (the re-sync in one batch, then
one batch per read). When a synced connection drops, the handler hears
``connection_lost("ami", None)`` (the devices turn unknown) and the client reconnects with
exponential backoff (:class:`~gateway.backoff.Backoff`); a refused login is logged as
``AMI login as USER refused: MESSAGE`` and retried the same way. The secret is read from its
file at every connect and never logged.

It is a :class:`~gateway.linesource.LineSource` (:meth:`AmiSource.start`,
:meth:`AmiSource.stop`, :meth:`AmiSource.update_lines`: changed lines reconnect at once, to
re-sync them), and sends actions for call pickup: :meth:`AmiSource.pickup`,
:meth:`AmiSource.redirect`, :meth:`AmiSource.originate_pickupchan`,
:meth:`AmiSource.originate_pickup`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..backoff import Backoff
from ..linesource import Lines, SourceEvents, device_lines
from .connection import (
    ActionAnswered,
    ActionFailed,
    AmiConnection,
    AmiError,
    AmiLoginRefused,
    Closing,
    Connected,
    Event,
    LoggedIn,
    ReportsReady,
    State,
    Synced,
)
from .protocol import AmiMessage
from .translate import AmiTranslator, channel_device

__all__ = ["AmiSource", "AmiError", "AmiLoginRefused"]

log = logging.getLogger("gateway.ami")

READ_SIZE = 65536


class AmiSource:
    """One Asterisk Manager connection, kept up until :meth:`close`.

    `lines` maps AMI line names (``PJSIP/201``, ``201``) to (device id, number). `handler`
    and `on_synced` (called after the re-sync batch of every (re)connect) run on the event
    loop and must not block. `conn` names this source in the reports.
    """

    name = "ami"

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret_file: Path,
        lines: Lines,
        handler: SourceEvents,
        *,
        on_synced: Callable[[], None] | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        action_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        ping_interval: float = 20.0,
        events: str = "call",
        conn: str = "ami",
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.secret_file = Path(secret_file)
        self.handler = handler
        self.on_synced = on_synced
        self.backoff = Backoff(backoff_initial, backoff_max)
        self.action_timeout = action_timeout
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self.events = events
        self.conn = conn
        self._lines = device_lines(lines)
        self.translator = AmiTranslator(self._lines, conn=conn)
        # Counters a metrics endpoint may read.
        self.connects = 0  # TCP connections opened
        self.logins_refused = 0
        self.syncs = 0  # completed re-syncs
        self.last_error: str | None = None
        self._done_events = self._done_errors = 0  # of connections that ended
        self._ids = (f"gw{os.getpid()}-{n}" for n in itertools.count(1))
        self._conn: AmiConnection | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._futures: dict[str, tuple[str, asyncio.Future[AmiMessage]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closing = False
        self._reconnect_now = False
        self._run_task: asyncio.Task | None = None

    # -- public ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Logged in now (actions can be sent)."""
        return self._conn is not None and self._conn.logged_in

    @property
    def synced(self) -> bool:
        """Logged in and the re-sync of this connection has been delivered."""
        return self._conn is not None and self._conn.synced

    @property
    def events_seen(self) -> int:
        return self._done_events + (self._conn.events_seen if self._conn else 0)

    @property
    def protocol_errors(self) -> int:
        return self._done_errors + (self._conn.protocol_errors if self._conn else 0)

    async def start(self) -> None:
        """Run the connection in a task of its own (returns at once)."""
        if self._run_task is None or self._run_task.done():
            self._closing = False
            self._run_task = asyncio.create_task(self.run(), name="ami")

    async def stop(self) -> None:
        await self.close()

    async def update_lines(self, lines: Lines) -> None:
        """New lines: drop the connection and reconnect at once, so the re-sync covers them
        (the devices are unknown meanwhile)."""
        new = device_lines(lines)
        if new == self._lines:
            return
        log.info("AMI lines changed: reconnecting to Asterisk to re-sync them")
        self._lines = new
        self.translator = AmiTranslator(new, conn=self.conn)
        if self._conn is not None:
            self._reconnect_now = True
            self._apply(self._conn.close())

    async def run(self) -> None:
        """Connect, sync and follow events; reconnect with backoff until :meth:`close`."""
        self._run_task = asyncio.current_task()
        while not self._closing:
            try:
                await self._session()
            except asyncio.CancelledError:
                if self._closing:
                    break
                raise
            except AmiLoginRefused:
                pass  # logged where it happened
            except (OSError, asyncio.TimeoutError, AmiError) as e:
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("AMI %s:%s: %s", self.host, self.port, self.last_error)
            finally:
                was_synced = self._teardown()
            if was_synced:
                self.backoff.reset()  # it worked: the next outage starts afresh
                try:
                    self.handler.connection_lost(self.name, None)
                except Exception:
                    log.exception("AMI connection_lost handler failed")
            if self._closing:
                break
            if self._reconnect_now:
                self._reconnect_now = False
                self.backoff.reset()
                continue
            delay = self.backoff.next()
            log.info("AMI reconnecting to %s:%s in %.1f s", self.host, self.port, delay)
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                if self._closing:
                    break
                raise

    async def close(self) -> None:
        """Log off, drop the connection and stop :meth:`run`."""
        self._closing = True
        if self._conn is not None:
            self._apply(self._conn.close())
        t = self._run_task
        if t is not None and t is not asyncio.current_task() and not t.done():
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                pass

    async def action(self, name: str, **fields: object) -> AmiMessage:
        """Send one action and return Asterisk's Response to it (Success or Error).

        Raises AmiError when not logged in, when the connection drops first, or after
        ``action_timeout`` seconds without an answer. ValueError for a line break in a field.
        """
        conn = self._conn
        if conn is None or not conn.logged_in:
            raise AmiError("AMI not connected")
        loop = asyncio.get_running_loop()
        aid = conn.send_action(name, loop.time(), **fields)
        fut: asyncio.Future[AmiMessage] = loop.create_future()
        self._futures[aid] = (name, fut)
        try:
            self._apply([])
            return await fut
        finally:
            self._futures.pop(aid, None)

    async def redirect(self, channel: str, exten: str, context: str,
                       priority: int = 1) -> AmiMessage:
        """Move `channel` (e.g. a ringing caller) to `exten`@`context` (pickup by redirect)."""
        return await self.action("Redirect", Channel=channel, Exten=exten, Context=context,
                                 Priority=priority)

    async def originate_pickupchan(self, picker_channel_dev: str, target_channel_dev: str,
                                   *, caller_id: str | None = None,
                                   timeout_ms: int = 30000) -> AmiMessage:
        """Call the picker's device (``PJSIP/201``) and run PickupChan on the ringing
        channel of `target_channel_dev` (``PJSIP/202``) once it answers."""
        return await self.action("Originate", Channel=picker_channel_dev,
                                 Application="PickupChan", Data=target_channel_dev,
                                 CallerID=caller_id, Timeout=timeout_ms, Async="true")

    async def originate_pickup(self, picker_dev: str, exten: str, context: str, *,
                               caller_id: str | None = None,
                               timeout_ms: int = 30000) -> AmiMessage:
        """Call the picker's device and run Pickup(`exten`@`context`) once it answers."""
        return await self.action("Originate", Channel=picker_dev, Application="Pickup",
                                 Data=f"{exten}@{context}", CallerID=caller_id,
                                 Timeout=timeout_ms, Async="true")

    async def pickup(self, call_id: str, picker_number: str, picker_line: str, *,
                     mode: str, context: str) -> tuple[bool, str | None]:
        """Move the ringing call `call_id` (a gateway call id, ``DEVICE/UNIQUEID``) to the
        picker: by ``Redirect`` of the caller's channel to `picker_number`@`context` (`mode`
        "redirect"), else by ``Originate`` to the picker's line with ``PickupChan``.
        Returns (True, None) or (False, why not); never raises."""
        if not self.connected:
            return False, "the Asterisk connection is down"
        uniqueid = call_id.split("/", 1)[1]
        try:
            if mode == "redirect":
                caller = self.translator.caller_channel(uniqueid)
                if caller is None:
                    return False, "the caller's channel is not known"
                reply = await self.redirect(caller, picker_number, context)
            else:
                ringing = self.translator.channel_name(uniqueid)
                if ringing is None:
                    return False, "the ringing channel is not known"
                picker_dial = (picker_line if "/" in picker_line
                               else f"Local/{picker_number}@{context}")
                reply = await self.originate_pickupchan(picker_dial, channel_device(ringing))
        except Exception as exc:  # AmiError: no answer, connection dropped
            return False, f"Asterisk did not take the request: {exc}"
        if reply.get("Response", "").lower() != "success":
            return False, f"Asterisk refused: {reply.get('Message') or 'error'}"
        return True, None

    # -- the loop around the connection ---------------------------------------------------------

    def _read_secret(self) -> str:
        # Read at every connect, so a rotated secret takes effect without a restart.
        try:
            return self.secret_file.read_text(encoding="utf-8").strip("\r\n")
        except OSError as e:
            raise AmiError(f"cannot read AMI secret file {self.secret_file}: "
                           f"{e.strerror or e}") from None

    async def _session(self) -> None:
        """One connection from connect to its end; raises why it ended (unless we ended it)."""
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.connect_timeout)
        self.connects += 1
        self._writer = writer
        conn = self._conn = AmiConnection(
            self.translator, self.username, self._read_secret(), loop.time(),
            action_ids=self._ids, events=self.events, banner_timeout=self.connect_timeout,
            action_timeout=self.action_timeout, ping_interval=self.ping_interval)
        self._arm()
        while conn.state is not State.CLOSED:
            data = await reader.read(READ_SIZE)
            self._apply(conn.receive_data(data, loop.time()) if data else conn.receive_eof())
            # A read returns at once while data is buffered: give the loop a turn between
            # reads, so a reload burst does not hold up everything else.
            await asyncio.sleep(0)
        if self._closing or self._reconnect_now:
            return
        if conn.refused:
            raise AmiLoginRefused(conn.close_reason or "refused")
        raise AmiError(conn.close_reason or "connection closed")

    def _apply(self, events: list[Event]) -> None:
        """Act on the connection's events, write what it has to send, re-arm its timer."""
        closing = False
        for ev in events:
            if isinstance(ev, ReportsReady):
                try:
                    self.handler.reports(self.name, ev.reports)
                except Exception:
                    log.exception("AMI reports handler failed")
            elif isinstance(ev, ActionAnswered):
                self._resolve(ev.action_id, ev.response, None)
            elif isinstance(ev, ActionFailed):
                self._resolve(ev.action_id, None, ev.reason)
            elif isinstance(ev, Synced):
                self.syncs += 1
                log.info("AMI re-synced (%d reports)", ev.reports)
                if self.on_synced is not None:
                    try:
                        self.on_synced()
                    except Exception:
                        log.exception("AMI on_synced callback failed")
            elif isinstance(ev, Connected):
                log.info("AMI connected to %s:%s (Asterisk Call Manager/%s)", self.host,
                         self.port, ev.version)
            elif isinstance(ev, LoggedIn):
                log.info("AMI logged in as %s", self.username)
            elif isinstance(ev, Closing):
                closing = True
                if ev.refused:
                    self.logins_refused += 1
                    self.last_error = f"login refused: {ev.reason}"
                    log.error("AMI login as %s refused: %s", self.username, ev.reason)
        conn, writer = self._conn, self._writer
        if conn is not None and writer is not None and not writer.is_closing():
            data = conn.data_to_send()
            if data:
                writer.write(data)
            if closing:
                writer.close()  # the reader sees the end and the session returns
        self._arm()

    def _resolve(self, aid: str, response: AmiMessage | None, reason: str | None) -> None:
        entry = self._futures.get(aid)
        if entry is None:
            return
        name, fut = entry
        if fut.done():
            return
        if response is not None:
            fut.set_result(response)
        else:
            fut.set_exception(AmiError(f"AMI {name}: {reason}"))

    def _arm(self) -> None:
        conn = self._conn
        at = conn.next_deadline() if conn is not None else None
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, at
        if at is not None:
            self._timer = asyncio.get_running_loop().call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        at, self._timer, self._timer_at = self._timer_at, None, None
        conn = self._conn
        if conn is not None and at is not None:
            # The loop may run a timer a hair early: the deadline itself is "now".
            self._apply(conn.handle_timer(max(asyncio.get_running_loop().time(), at)))

    def _teardown(self) -> bool:
        """Forget the connection; True if it had delivered a re-sync."""
        conn, self._conn = self._conn, None
        writer, self._writer = self._writer, None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None
        if writer is not None:
            writer.close()
        for aid in list(self._futures):
            self._resolve(aid, None, "connection lost")
        if conn is None:
            return False
        self._done_events += conn.events_seen
        self._done_errors += conn.protocol_errors
        return conn.synced_once
