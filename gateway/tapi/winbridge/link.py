"""The bridge's connection to the gateway, and the glue between it and the TAPI side.

:class:`Bridge` lives in the asyncio thread. The TAPI side (the live driver's thread, or a
replay) hands it events with :meth:`Bridge.post` (thread-safe, never blocks: a queue between
the two); it runs them through the :class:`~.translate.Translator` and writes the bridge
lines to the gateway. While there is no connection nothing is queued: the translator holds
the current state, and every (re)connection starts with the full state (after asking the
TAPI side to read it afresh: lineGetNewCalls + lineGetCallStatus). A gateway that stops
reading gets its connection dropped once 1 MiB is waiting, and the full state again when it
is back.

The connection: TCP or TLS, an optional first line ``{"auth": SECRET}``, reconnects with
exponential backoff and jitter (0.5 s doubling to 30 s). The gateway may write command lines
back (docs/tapi-bridge.md, "Commands"): each gets exactly one result line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ... import __version__
from ...backoff import Backoff as _Backoff
from .translate import Event, Out, TapiRequest, Translator

__all__ = ["Provider", "LinkOptions", "Backoff", "Bridge", "Command"]

log = logging.getLogger("blf_tapi_bridge")

MAX_COMMAND_BYTES = 8192
STABLE_SECONDS = 10.0  # a connection that held this long resets the backoff


class Provider(Protocol):
    """The TAPI side as the link sees it (the live driver, or a replay)."""

    async def resync(self) -> None:
        """Read the state of every line and call afresh and post it (live), or nothing."""

    def execute(self, request: TapiRequest) -> None:
        """Make a TAPI request; its return value comes back through
        :meth:`Bridge.post_request_result`, its outcome as a LINE_REPLY message."""


@dataclass(frozen=True, slots=True)
class LinkOptions:
    host: str
    port: int
    ssl: ssl.SSLContext | None = None
    server_hostname: str | None = None
    secret: str | None = None
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    connect_timeout: float = 10.0
    max_buffer: int = 1 << 20  # bytes waiting for a gateway that does not read
    pickup_mode: str = "pickup"  # "pickup" (linePickupW) or "redirect" (lineRedirectW)


class Backoff(_Backoff):
    """The gateway's backoff (doubling from `low` to `high`) with up to 25 % jitter, so that
    many bridges do not hammer a restarted gateway in step."""

    def __init__(self, low: float, high: float, rng: random.Random | None = None) -> None:
        super().__init__(low, high)
        self.rng = rng or random.Random()

    def next(self) -> float:
        return super().next() * (1 - 0.25 * self.rng.random())


class Command(BaseModel):
    """A command line from the gateway (docs/tapi-bridge.md)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    cmd: Literal["pickup"]
    op: Annotated[str, Field(min_length=1, max_length=128)]
    device: Annotated[str, Field(min_length=1, max_length=128)]
    call: Annotated[str, Field(min_length=1, max_length=128)]
    to: Annotated[str, Field(min_length=1, max_length=128)]


class _NoProvider:
    async def resync(self) -> None:
        return None

    def execute(self, request: TapiRequest) -> None:
        raise RuntimeError("no TAPI side to carry out requests")


class Bridge:
    """Translator + gateway connection. Create and run it in the asyncio thread."""

    def __init__(self, options: LinkOptions, provider: Provider | None = None,
                 translator: Translator | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.provider: Provider = provider or _NoProvider()
        self.translator = translator or Translator()
        self.clock = clock
        self.loop: asyncio.AbstractEventLoop | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._live = False  # connected and the full state sent
        self._stop = asyncio.Event()
        self._reset = asyncio.Event()
        self._tick = asyncio.Event()
        self.connected = asyncio.Event()  # set while live (tests and the CLI wait on it)
        self.connections = 0
        self.lines_sent = 0
        self.events = 0
        self.dropped_lines = 0  # produced while not connected (the next full state has them)
        self._thread = threading.get_ident()
        # Names this program run to the gateway, which closes an older connection of ours
        # it still holds when we connect again.
        self.instance = secrets.token_hex(8)
        self.recorder: Callable[[Event], None] | None = None  # run --record

    # -- from the TAPI side ---------------------------------------------------------------

    def post(self, event: Event) -> None:
        """Hand an event over from any thread; never blocks."""
        if self.loop is None or threading.get_ident() == self._thread:
            self.feed(event)
            return
        try:
            self.loop.call_soon_threadsafe(self.feed, event)
        except RuntimeError:
            pass  # the loop is closed: the program is ending

    def post_request_result(self, op: str, result: int) -> None:
        """What the TAPI function of a request returned (from any thread)."""
        if self.loop is None or threading.get_ident() == self._thread:
            self._apply(self.translator.request_sent(op, result))
            return
        try:
            self.loop.call_soon_threadsafe(
                lambda: self._apply(self.translator.request_sent(op, result)))
        except RuntimeError:
            pass  # the loop is closed: the program is ending

    def feed(self, event: Event) -> Out:
        """Apply one event in this thread (the replay calls this directly)."""
        self.events += 1
        if self.recorder is not None:
            self.recorder(event)
        out = self.translator.feed(event)
        self._apply(out)
        return out

    def _apply(self, out: Out) -> None:
        for note in out.notes:
            log.warning("%s", note)
        if out.deallocate and hasattr(self.provider, "deallocate"):
            self.provider.deallocate(out.deallocate)  # type: ignore[attr-defined]
        for line in out.lines:
            self._send(line)
        if out.reset:
            self._reset.set()
            self._drop("the telephony provider re-initialized")
        self._tick.set()

    def _send(self, line: dict) -> None:
        writer = self._writer
        if writer is None or not self._live:
            self.dropped_lines += 1
            return
        writer.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
        self.lines_sent += 1
        if writer.transport.get_write_buffer_size() > self.options.max_buffer:
            self._drop("the gateway does not read (more than "
                       f"{self.options.max_buffer} bytes waiting)")

    def _drop(self, why: str) -> None:
        writer, self._writer = self._writer, None
        self._live = False
        self.connected.clear()
        if writer is not None:
            log.warning("gateway connection dropped: %s", why)
            writer.transport.abort()

    # -- the connection -------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._drop("stopping")

    async def writable(self) -> None:
        """Wait while more than a quarter of the limit is waiting to be sent (a replay's
        pace); gives the loop a turn in any case."""
        writer = self._writer
        if writer is not None and self._live and \
                writer.transport.get_write_buffer_size() > self.options.max_buffer // 4:
            try:
                await writer.drain()
            except (OSError, ConnectionError):
                pass
        else:
            await asyncio.sleep(0)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until what was written has left (before stopping after a replay)."""
        writer = self._writer
        if writer is None or not self._live:
            return
        try:
            await asyncio.wait_for(writer.drain(), timeout)
        except (OSError, ConnectionError, asyncio.TimeoutError):
            pass

    async def run(self) -> None:
        """Connect, send the full state, follow; reconnect until stop()."""
        self.loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        opts = self.options
        backoff = Backoff(opts.backoff_min, opts.backoff_max)
        ticker = asyncio.create_task(self._ticker())
        try:
            while not self._stop.is_set():
                self._reset.clear()
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(
                            opts.host, opts.port, ssl=opts.ssl,
                            server_hostname=(opts.server_hostname or opts.host)
                            if opts.ssl else None,
                            limit=MAX_COMMAND_BYTES),
                        opts.connect_timeout)
                except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
                    delay = backoff.next()
                    log.warning("cannot reach the gateway at %s:%d (%s); next try in %.1f s",
                                opts.host, opts.port, exc or type(exc).__name__, delay)
                    await self._sleep(delay)
                    continue
                self.connections += 1
                log.info("connected to the gateway at %s:%d%s", opts.host, opts.port,
                         " (TLS)" if opts.ssl else "")
                started = self.clock()
                try:
                    await self._session(reader, writer)
                finally:
                    self._drop("connection closed")
                if self._stop.is_set():
                    break
                if self._reset.is_set():
                    continue  # re-initialized: reconnect at once with the new state
                lasted = self.clock() - started
                if lasted >= STABLE_SECONDS:
                    # Only a connection that held counts as success: a gateway that closes
                    # at once (a wrong secret) is retried ever more slowly, not in a loop.
                    backoff.reset()
                delay = backoff.next()
                if lasted < 2.0:
                    log.warning("the gateway closed the connection at once (a wrong secret, "
                                "an address not allowed, a missing client certificate?); "
                                "next try in %.1f s", delay)
                else:
                    log.warning("gateway connection lost; reconnecting in %.1f s", delay)
                await self._sleep(delay)
        finally:
            ticker.cancel()

    async def _sleep(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
        except asyncio.TimeoutError:
            pass

    async def _session(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        if self.options.secret is not None:
            writer.write(json.dumps({"auth": self.options.secret}).encode() + b"\n")
        # Says what it can do; a gateway without commands skips this line.
        writer.write(json.dumps({"bridge": f"blf-tapi-bridge {__version__}",
                                 "instance": self.instance,
                                 "commands": ["pickup"]}).encode() + b"\n")
        await self.provider.resync()
        if self._writer is not writer:
            return  # dropped while re-reading the state
        # The full state and the switch to live in one step: nothing in between is lost.
        self._live = True
        state = self.translator.snapshot()
        for line in state:
            self._send(line)
        if self._writer is not writer:
            return
        self.connected.set()
        log.info("full state sent: %d line(s)", len(state))
        try:
            await writer.drain()
            while True:
                try:
                    raw = await reader.readuntil(b"\n")
                except asyncio.LimitOverrunError:
                    log.warning("gateway sent a command longer than %d bytes; closing",
                                MAX_COMMAND_BYTES)
                    return
                except asyncio.IncompleteReadError:
                    return
                self._command(raw)
        except (OSError, ConnectionError, ssl.SSLError) as exc:
            if self._writer is writer:
                log.warning("gateway connection error: %s", exc)

    def _command(self, raw: bytes) -> None:
        line = raw.strip()
        if not line:
            return
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):
            log.warning("gateway sent a line that is not JSON; ignored: %.120r", line)
            return
        op = data.get("op") if isinstance(data, dict) else None
        try:
            cmd = Command.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            why = f"{'.'.join(str(p) for p in err['loc']) or 'command'}: {err['msg']}"
            log.warning("gateway command refused: %s", why)
            if isinstance(op, str) and 0 < len(op) <= 128:
                self._send({"result": op, "ok": False, "error": why})
            return
        log.info("gateway asks: %s of call %s on %r to %r (op %s)", cmd.cmd, cmd.call,
                 cmd.device, cmd.to, cmd.op)
        out, request = self.translator.command(cmd.model_dump(), self.clock(),
                                               self.options.pickup_mode)
        self._apply(out)
        if request is not None:
            try:
                self.provider.execute(request)
            except Exception as exc:  # the TAPI side is gone (re-initializing, stopped)
                self._apply(self.translator.request_sent(request.op, 0x80000048))
                log.warning("%s for op %s not made: %s", request.function, request.op, exc)

    async def _ticker(self) -> None:
        """Times out TAPI requests that never got their LINE_REPLY."""
        while True:
            self._tick.clear()
            deadline = self.translator.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            try:
                await asyncio.wait_for(self._tick.wait(), timeout)
            except asyncio.TimeoutError:
                self._apply(self.translator.tick(self.clock()))
