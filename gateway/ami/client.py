"""Asterisk Manager Interface line source: the thin asyncio client around the pure parts.

:class:`AmiSource` connects to Asterisk, logs in (the secret is read from its file at every
connect and never logged), re-syncs with the lists CoreShowChannels, ExtensionStateList and
DeviceStateList, then follows live events. Bytes go through
:class:`~gateway.ami.protocol.AmiParser`, events through
:class:`~gateway.ami.translate.AmiTranslator`; the resulting reports go to the
:class:`~gateway.linesource.SourceEvents` handler (the re-sync in one batch, then one batch
per read). When a synced connection drops, the handler hears ``connection_lost("ami", None)``
(the devices turn unknown) and the client reconnects with exponential backoff
(:class:`~gateway.backoff.Backoff`); a refused login is logged as
``AMI login as USER refused: MESSAGE`` and retried the same way. It is a
:class:`~gateway.linesource.LineSource`: :meth:`AmiSource.start`, :meth:`AmiSource.stop`,
:meth:`AmiSource.update_lines` (changed lines: reconnect at once, to re-sync them).

It also sends actions for call pickup: :meth:`AmiSource.redirect`,
:meth:`AmiSource.originate_pickupchan`, :meth:`AmiSource.originate_pickup`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..backoff import Backoff
from ..linesource import Lines, Report, SourceEvents, device_lines
from .protocol import AmiMessage, AmiParser, AmiProtocolError, format_action
from .translate import AmiTranslator, channel_device

__all__ = ["AmiSource", "AmiError", "AmiLoginRefused"]

log = logging.getLogger("gateway.ami")

# The lists asked for after every login, in this order: the hints first, so the translator
# knows which devices stand behind hint lines before the channels arrive.
_SYNC_LISTS = (
    ("ExtensionStateList", "extensionstatelistcomplete"),
    ("DeviceStateList", "devicestatelistcomplete"),
    ("CoreShowChannels", "coreshowchannelscomplete"),
)


class AmiError(Exception):
    """An AMI action failed (not connected, connection lost, or a timeout)."""


class AmiLoginRefused(AmiError):
    """Asterisk answered the Login with ``Response: Error``."""


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
        self.parser = AmiParser()
        # Counters a metrics endpoint may read.
        self.connects = 0  # TCP connections opened
        self.logins_refused = 0
        self.syncs = 0  # completed re-syncs
        self.events_seen = 0
        self.protocol_errors = 0
        self.last_error: str | None = None
        self._ids = itertools.count(1)
        self._id_prefix = f"gw{os.getpid()}"
        self._pending: dict[str, asyncio.Future[AmiMessage]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._logged_in = False
        self._synced = False
        self._closing = False
        self._run_task: asyncio.Task | None = None
        self._reconnect_now = False
        # Re-sync in progress: the list ActionIDs not yet complete and the reports held back.
        self._sync_wait: dict[str, str] = {}
        self._sync_buf: list[Report] = []

    # -- public ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Logged in now (actions can be sent)."""
        return self._logged_in

    @property
    def synced(self) -> bool:
        """Logged in and the re-sync of this connection has been delivered."""
        return self._synced

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
        if self._writer is not None:
            self._reconnect_now = True
            self._writer.close()

    async def run(self) -> None:
        """Connect, sync and follow events; reconnect with backoff until :meth:`close`."""
        self._run_task = asyncio.current_task()
        while not self._closing:
            was_synced = False
            try:
                was_synced = await self._session()
            except asyncio.CancelledError:
                if self._closing:
                    break
                raise
            except AmiLoginRefused:
                pass  # logged where it happened
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, AmiError) as e:
                if not self._reconnect_now:  # else we closed it ourselves, to re-sync
                    self.last_error = f"{type(e).__name__}: {e}"
                    log.warning("AMI %s:%s: %s", self.host, self.port, self.last_error)
            finally:
                was_synced = self._teardown() or was_synced
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
        w = self._writer
        if w is not None and self._logged_in:
            try:
                w.write(format_action("Logoff", self._next_id()))
            except (OSError, RuntimeError):
                pass
        if w is not None:
            w.close()
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
        if not self._logged_in or self._writer is None:
            raise AmiError("AMI not connected")
        aid = self._next_id()
        data = format_action(name, aid, **fields)
        fut: asyncio.Future[AmiMessage] = asyncio.get_running_loop().create_future()
        self._pending[aid] = fut
        try:
            self._writer.write(data)
            return await asyncio.wait_for(fut, self.action_timeout)
        except asyncio.TimeoutError:
            raise AmiError(f"AMI {name}: no answer in {self.action_timeout:g} s") from None
        finally:
            self._pending.pop(aid, None)

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

    # -- connection -----------------------------------------------------------------------

    def _next_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    def _read_secret(self) -> str:
        # Read at every connect, so a rotated secret takes effect without a restart.
        return self.secret_file.read_text(encoding="utf-8").strip("\r\n")

    async def _session(self) -> bool:
        """One connection from connect to its end; True if it got synced."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.connect_timeout)
        self.connects += 1
        self._writer = writer
        self.parser.reset()
        self.translator.reset()
        # Read the banner (with anything after it) before logging in.
        banner: AmiMessage | None = None
        early: list[AmiMessage] = []
        # One deadline for the whole banner: a peer that sends anything but a banner (some
        # other service on the port) must not keep us here.
        async with asyncio.timeout(self.connect_timeout):
            while banner is None:
                data = await reader.read(65536)
                if not data:
                    raise AmiError("connection closed before the banner")
                for item in self._parse(data):
                    if item.kind == "banner":
                        banner = item
                    elif len(early) < 100:
                        early.append(item)
        log.info("AMI connected to %s:%s (Asterisk Call Manager/%s)", self.host, self.port,
                 banner.name)
        try:
            secret = self._read_secret()
        except OSError as e:
            raise AmiError(f"cannot read AMI secret file {self.secret_file}: "
                           f"{e.strerror or e}") from None
        login_id = self._next_id()
        fields = {"Username": self.username, "Secret": secret}
        if self.events:
            fields["Events"] = self.events
        login_fut: asyncio.Future[AmiMessage] = asyncio.get_running_loop().create_future()
        self._pending[login_id] = login_fut
        writer.write(format_action("Login", login_id, **fields))
        del secret, fields
        reader_task = asyncio.create_task(self._read_loop(reader), name="ami-reader")
        ping_task: asyncio.Task | None = None
        try:
            done, _ = await asyncio.wait({login_fut, reader_task},
                                         timeout=self.action_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if login_fut not in done:
                if reader_task in done:
                    reader_task.result()  # raises what ended it
                    raise AmiError("connection closed during login")
                raise AmiError(f"no answer to Login in {self.action_timeout:g} s")
            resp = login_fut.result()
            if resp.name.lower() != "success":
                self.logins_refused += 1
                msg = resp.get("Message") or resp.name
                self.last_error = f"login refused: {msg}"
                log.error("AMI login as %s refused: %s", self.username, msg)
                raise AmiLoginRefused(msg)
            self._logged_in = True
            log.info("AMI logged in as %s", self.username)
            self._start_sync(writer)
            for item in early:
                self._dispatch(item)
            ping_task = asyncio.create_task(self._ping_loop(), name="ami-ping")
            await reader_task
            return self._synced
        finally:
            self._pending.pop(login_id, None)
            for t in (reader_task, ping_task):
                if t is not None and not t.done():
                    t.cancel()
            await asyncio.gather(*(t for t in (reader_task, ping_task) if t),
                                 return_exceptions=True)

    def _teardown(self) -> bool:
        """Forget the connection; True if it had been synced."""
        was = self._synced
        self._logged_in = False
        self._synced = False
        self._sync_wait.clear()
        self._sync_buf = []
        w, self._writer = self._writer, None
        if w is not None:
            w.close()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(AmiError("AMI connection lost"))
        self._pending.clear()
        return was

    async def _ping_loop(self) -> None:
        # A re-sync whose lists never complete would leave the lamps unknown for good: give
        # it a deadline, then start over with a new connection.
        deadline = asyncio.get_running_loop().time() + 3 * self.action_timeout
        while not self._synced:
            if asyncio.get_running_loop().time() > deadline:
                log.warning("AMI re-sync not complete after %.0f s: reconnecting",
                            3 * self.action_timeout)
                if self._writer is not None:
                    self._writer.close()
                return
            await asyncio.sleep(min(0.5, self.action_timeout / 4))
        # A half-open TCP connection (Asterisk host gone without a FIN) shows no error on
        # reads: a periodic Ping finds it, and closing the writer ends the reader.
        while self.ping_interval > 0:
            await asyncio.sleep(self.ping_interval)
            try:
                await self.action("Ping")
            except AmiError as e:
                log.warning("AMI ping failed (%s): reconnecting", e)
                if self._writer is not None:
                    self._writer.close()
                return

    def _start_sync(self, writer: asyncio.StreamWriter) -> None:
        self._sync_buf = []
        self._sync_wait = {}
        for action, complete in _SYNC_LISTS:
            aid = self._next_id()
            self._sync_wait[aid] = complete
            writer.write(format_action(action, aid))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                raise AmiError("connection closed by Asterisk")
            reports: list[Report] = []
            for msg in self._parse(data):
                reports += self._dispatch(msg)
            if reports:
                self._deliver(reports)
            # A read returns at once while data is buffered: give the loop a turn between
            # reads, so a reload burst does not hold up everything else.
            await asyncio.sleep(0)

    def _parse(self, data: bytes) -> list[AmiMessage]:
        out = []
        for item in self.parser.feed(data):
            if isinstance(item, AmiProtocolError):
                self.protocol_errors += 1
                log.warning("AMI: skipped bad data from Asterisk (%s): %r", item.reason,
                            item.sample[:60])
            else:
                out.append(item)
        return out

    def _dispatch(self, msg: AmiMessage) -> list[Report]:
        """Route one message; return the live reports it implies (None while syncing)."""
        aid = msg.action_id
        if msg.kind == "response":
            if aid is not None:
                fut = self._pending.get(aid)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                elif aid in self._sync_wait and msg.name.lower() != "success":
                    # ExtensionStateList answers Error when there are no hints: an empty list.
                    log.info("AMI list %s: %s", aid, msg.get("Message"))
                    self._list_done(aid)
            return []
        if msg.kind != "event":
            return []
        self.events_seen += 1
        try:
            reports = self.translator.feed(msg)
        except Exception:  # a translator bug must not take the source down
            log.exception("AMI: cannot translate %s event", msg.name)
            reports = []
        if self._sync_wait:
            self._sync_buf += reports
            if aid is not None and self._sync_wait.get(aid) == msg.name.lower():
                self._list_done(aid)
            return []
        return reports

    def _list_done(self, aid: str) -> None:
        self._sync_wait.pop(aid, None)
        if self._sync_wait:
            return
        batch, self._sync_buf = self._sync_buf, []
        self._synced = True
        self.syncs += 1
        log.info("AMI re-synced (%d reports)", len(batch))
        self._deliver(batch)
        if self.on_synced is not None:
            try:
                self.on_synced()
            except Exception:
                log.exception("AMI on_synced callback failed")

    def _deliver(self, reports: list[Report]) -> None:
        try:
            self.handler.reports(self.name, reports)
        except Exception:
            log.exception("AMI reports handler failed")
