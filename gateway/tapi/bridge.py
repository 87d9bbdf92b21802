"""The TAPI bridge source (contract section 5): JSON lines over TCP from a Windows TAPI program.

:func:`parse_line` is pure: one line of text -> a :class:`~gateway.calls.CallReport` or
:class:`~gateway.calls.ServiceReport` for a configured device, or :class:`BridgeLineError`
saying what is wrong with it. :class:`TapiBridgeServer` is the thin asyncio listener, a
:class:`~gateway.linesource.LineSource`: each connection's reports go to the one
:class:`~gateway.linesource.SourceEvents` handler. A malformed line is logged and skipped;
the connection lives on. When a connection drops the handler hears `connection_lost` with its
name: the devices it reported turn `unknown` until a bridge reports them again.

Commands (an extension of the contract, docs/tapi-bridge.md): a bridge that announces them
(``{"bridge": ..., "commands": ["pickup"]}``) may be sent command lines on its connection,
e.g. ``{"cmd": "pickup", "op": ..., "device": LINE, "call": ID, "to": LINE}``, and answers
each with ``{"result": OP, "ok": BOOL, "error"?: TEXT}``. :meth:`TapiBridgeServer.pickup`
sends one to the connection that reported the ringing line and waits for the result.
Bridges that never announce commands are never sent any.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import secrets
import ssl as ssl_module
from collections.abc import Callable, Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import strictjson
from ..calls import CallReport, Phase, ServiceReport
from ..linesource import Lines, SourceEvents
from ..logrepeat import should_log
from ..model import Direction
from ..numbers import digits, own_match, redact
from .access import AUTH_TIMEOUT, MAX_UNAUTHENTICATED, BridgeAccess

__all__ = ["parse_line", "BridgeLineError", "TAPI_PHASES", "TapiBridgeServer",
           "COMMAND_TIMEOUT"]

log = logging.getLogger("gateway.tapi")

_SKIPPED = "TAPI bridge %s: line skipped: %s: %.200r"
YIELD_EVERY = 100  # bridge lines handled before the loop gets a turn for other work
READ_CHUNK = 32768  # bytes read from a bridge connection at a time
COMMAND_TIMEOUT = 10.0  # seconds a bridge has to answer a command
MAX_PENDING = 32  # commands waiting for their result, per bridge connection

# LINECALLSTATE (lower case) -> phase and, where the state says it, the direction.
# UNKNOWN (0x8000) is absent on purpose: it carries no information, so it changes nothing.
TAPI_PHASES: dict[str, tuple[Phase, Direction | None]] = {
    "offering": (Phase.RINGING, Direction.IN),  # a new incoming call alerts
    "accepted": (Phase.RINGING, Direction.IN),  # offered and accepted by an app, still alerting
    "dialtone": (Phase.DIALING, Direction.OUT),
    "dialing": (Phase.DIALING, Direction.OUT),
    "ringback": (Phase.DIALING, Direction.OUT),  # the far end rings
    "proceeding": (Phase.DIALING, Direction.OUT),
    "busy": (Phase.DIALING, Direction.OUT),  # busy tone: our side is still off hook
    "specialinfo": (Phase.DIALING, Direction.OUT),  # network announcement, still off hook
    "connected": (Phase.CONNECTED, None),
    "conferenced": (Phase.CONNECTED, None),
    "onhold": (Phase.HELD, None),
    "onholdpendconf": (Phase.HELD, None),
    "onholdpendtransfer": (Phase.HELD, None),
    "disconnected": (Phase.ENDED, None),
    "idle": (Phase.ENDED, None),
}

# Limits of a bridge line (docs/configuration.md): types are strict (no `true` for a call id, no
# "yes" for `blocked`, no number-strings read as numbers), every string is bounded.
CALL_ID_MAX_CHARS = 128  # a string call id
CALL_ID_INT_MAX = 2**64 - 1  # a numeric call id: TAPI's are 32-bit, a 64-bit one is kept too
Line = Annotated[str, Field(strict=True, min_length=1, max_length=128)]
Num = Annotated[str, Field(strict=True, max_length=64)]
Label = Annotated[str, Field(strict=True, max_length=128)]


class _CallLine(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    device: Line
    call: Annotated[str, Field(strict=True, min_length=1, max_length=CALL_ID_MAX_CHARS)] | \
        Annotated[int, Field(strict=True, ge=0, le=CALL_ID_INT_MAX)]
    state: Annotated[str, Field(strict=True, max_length=32)]
    caller: Num | None = None
    called: Num | None = None
    caller_name: Label | None = None
    called_name: Label | None = None
    blocked: Annotated[bool, Field(strict=True)] | None = None


class _DevLine(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    device: Line
    devstate: Literal["inservice", "outofservice"]


class BridgeLineError(ValueError):
    """A line that is not a valid bridge message; the reason is the text."""


class _PlainCallLine(_CallLine):
    """A call line with nothing but the known keys, for the fast reading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# The model's JSON validator itself: model_validate_json is a Python wrapper around it that
# checks options this reading never passes (and it runs for every line).
_validate_plain = _PlainCallLine.__pydantic_validator__.validate_json


def _fast_read(line: str | bytes) -> _CallLine | None:
    """A call line read in one pass by pydantic's JSON parser straight into the model, where
    that provably comes to the same as the strict reading; None: read it strictly.

    Accepted here is only a line whose every key is a known field, each once, with a value of
    its strict type (a string without escapes, an integer in range, a boolean, null): nothing
    in it can be what the strict reader refuses (NaN, Infinity, a number too large for a
    float, a lone surrogate, deep nesting, an integer over Python's digit limit), and both
    parsers read it alike. Anything else, including what this reading refuses, is read again
    strictly, so every refusal and its text are the strict reader's (the fuzz tests hold both
    readings to the same result on any line).
    """
    # (`find`, not `in`: bytes' `in` first tries its operand as an integer, and the
    # TypeError it raises and clears costs more than the search itself, on every line.)
    if type(line) is not bytes or line.find(b"\\") >= 0:
        return None
    try:
        msg = _validate_plain(line)
    except ValidationError:
        return None
    # One colon per key outside the strings: a repeated key (whose first value the strict
    # reader might refuse) shows as more colons than fields set. A colon inside a string
    # only sends the line the strict way.
    if line.count(b":") != len(msg.__pydantic_fields_set__):  # (the property, without its call)
        return None
    return msg


def _strict_read(line: str | bytes, devices: Mapping[str, tuple[str, str]],
                 conn: str) -> _CallLine | ServiceReport:
    """The strict reading: any line, every refusal with its reason."""
    try:
        raw = strictjson.loads(line)
    except strictjson.StrictJSONError as exc:
        raise BridgeLineError(str(exc)) from None
    if not isinstance(raw, dict):
        raise BridgeLineError("not a JSON object")
    try:
        if "devstate" in raw:
            dev = _DevLine.model_validate(raw)
            target = devices.get(dev.device)
            if target is None:
                raise BridgeLineError(f"no device is configured for line {dev.device!r}")
            return ServiceReport(target[0], dev.devstate == "inservice", conn)
        return _CallLine.model_validate(raw)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = str(e["loc"][0]) if e["loc"] else "line"
        raise BridgeLineError(f"{where[:40]}: {e['msg']}") from None


@functools.lru_cache(maxsize=16384)
def _own_digits(number: str) -> str:
    # The configured numbers are few and read on every line: their digits once each.
    return digits(number)


def parse_line(
    line: str | bytes, devices: Mapping[str, tuple[str, str]], conn: str = ""
) -> CallReport | ServiceReport | None:
    """Translate one bridge line. `devices` maps a TAPI line name to (device id, number).

    Returns None for a state that carries no information (`unknown`); raises
    BridgeLineError for anything malformed or for a line no device is configured for.
    """
    msg = _fast_read(line)
    if msg is None:
        read = _strict_read(line, devices, conn)
        if isinstance(read, ServiceReport):
            return read
        msg = read
    # The fields read from the model's dict, once: an attribute of a pydantic model goes
    # through its __getattr__ hook each time, and this reads eight of them per line.
    fields = msg.__dict__
    target = devices.get(fields["device"])
    if target is None:
        raise BridgeLineError(f"no device is configured for line {msg.device!r}")
    state = fields["state"].lower()
    if state == "unknown":
        return None
    if state not in TAPI_PHASES:
        raise BridgeLineError(f"state {msg.state!r} is not a LINECALLSTATE name")
    phase, direction = TAPI_PHASES[state]
    device_id, own_number = target
    own = _own_digits(own_number)
    caller_own = 0
    if direction is None:
        # A state that does not say the direction (connected, held: a re-sync, an answer,
        # a transfer): the side our own number is on does. Called is us: incoming; caller
        # is us (in any form, see gateway.numbers.own_match): outgoing.
        caller_own = own_match(fields["caller"], own)
        called_own = own_match(fields["called"], own)
        if caller_own != called_own:
            direction = Direction.IN if called_own > caller_own else Direction.OUT
    if direction is Direction.OUT:
        remote, remote_name = fields["called"], fields["called_name"]
    elif direction is Direction.IN:
        remote, remote_name = fields["caller"], fields["caller_name"]
    elif not caller_own:
        remote, remote_name = fields["caller"], fields["caller_name"]
    else:
        # Both numbers look like ours: nothing trustworthy about the far party.
        remote, remote_name = None, None
    if own_match(remote, own) == 2:
        # The line's own extension is never the far party (a garbled or half-filled line).
        remote, remote_name = None, None
    # Positional, in the field order (device, call, phase, direction, remote, remote_name,
    # link, withheld, replaces, conn): keyword arguments cost this call twice as much.
    return CallReport(device_id, str(fields["call"]), phase, direction, remote or None,
                      remote_name or None, None,
                      bool(fields["blocked"]) and direction is not Direction.OUT, None, conn)


class _Conn:
    """One bridge connection: where to write commands, what it said it can do, what waits."""

    __slots__ = ("name", "writer", "commands", "pending", "instance")

    def __init__(self, name: str, writer: asyncio.StreamWriter) -> None:
        self.name = name
        self.writer = writer
        self.commands: frozenset[str] = frozenset()
        self.pending: dict[str, asyncio.Future] = {}
        self.instance: str | None = None


class TapiBridgeServer:
    """Listens for TAPI bridge programs; their reports go to `handler`.

    `lines` maps TAPI line names to (device id, number); :meth:`update_lines` replaces it (a
    configuration reload applies from the next line on).
    """

    name = "tapi_bridge"

    def __init__(
        self,
        host: str,
        port: int,
        handler: SourceEvents,
        lines: Lines,
        *,
        max_line_bytes: int = 65536,
        access: Callable[[], BridgeAccess] | None = None,
        ssl: ssl_module.SSLContext | None = None,
        require_client_cert: bool = False,
    ) -> None:
        self.host, self.port = host, port
        # Who may connect (allow-list) and the auth line (shared secret); read per
        # connection, so a changed allow-list or a rotated secret applies at once.
        self.access = access
        self.ssl = ssl
        # The TLS context asks for a client certificate and verifies one that is presented
        # (CERT_OPTIONAL); a connection that presents none is refused here, with a log line.
        self.require_client_cert = require_client_cert
        self.refused = 0
        self._unauthenticated = 0
        self.handler = handler
        self._lines: Mapping[str, tuple[str, str]] = dict(lines)
        self.max_line_bytes = max_line_bytes
        self.server: asyncio.Server | None = None
        self.connections = 0
        self.lines_in = 0
        self.lines_bad = 0
        self._ids = itertools.count(1)
        self._handlers: set[asyncio.Task] = set()
        self._conns: dict[str, _Conn] = {}
        self._device_conn: dict[str, str] = {}  # device id -> connection that reported it
        self._instances: dict[str, str] = {}  # a bridge program's instance -> its connection
        self._superseded: set[str] = set()  # older connections of a reconnected bridge

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=self.max_line_bytes, ssl=self.ssl
        )
        sock = self.server.sockets[0].getsockname()
        self.port = sock[1]
        log.info("TAPI bridge listener on %s:%d%s", sock[0], sock[1],
                 " (TLS)" if self.ssl is not None else "")

    async def stop(self) -> None:
        """Stop listening and drop every bridge connection (each one's devices go unknown)."""
        if self.server is not None:
            self.server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        if self.server is not None:
            await self.server.wait_closed()

    async def update_lines(self, lines: Lines) -> None:
        self._lines = dict(lines)

    async def _admit(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """The allow-list, then the auth line. A refused connection is closed having
        changed nothing; refusals are logged aggregated (a flood writes a few lines)."""
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if peer else "?"
        access = self.access() if self.access is not None else BridgeAccess()
        reason = None
        if self.require_client_cert and not writer.get_extra_info("peercert"):
            reason = "no client certificate (tls_client_ca is set)"
        elif not access.address_allowed(host):
            reason = "address not in [sources.tapi_bridge] allow"
        elif access.secret is not None:
            if self._unauthenticated >= MAX_UNAUTHENTICATED:
                reason = "too many connections waiting to authenticate"
            else:
                self._unauthenticated += 1
                try:
                    line = await asyncio.wait_for(reader.readuntil(b"\n"), AUTH_TIMEOUT)
                    reason = access.check_auth(line)
                except asyncio.TimeoutError:
                    reason = f"no auth line within {AUTH_TIMEOUT:.0f} s"
                except asyncio.IncompleteReadError:
                    reason = "closed before sending the auth line"
                except asyncio.LimitOverrunError:
                    reason = "the first line is too long to be an auth line"
                except (ConnectionError, OSError) as exc:
                    reason = f"connection error before the auth line ({exc})"
                finally:
                    self._unauthenticated -= 1
        if reason is None:
            return True
        self.refused += 1
        # The address is the source: gateway.logrepeat logs the first few refusals of an
        # address at once and counts the rest in one line a minute (a flood writes a few).
        log.warning("TAPI bridge connection from %s refused: %s (nothing applied)", host,
                    reason, extra={"source": host})
        writer.close()
        return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if (self.access is not None or self.require_client_cert) \
                and not await self._admit(reader, writer):
            return
        conn = f"tapi#{next(self._ids)}"
        peer = writer.get_extra_info("peername")
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self.connections += 1
        self._conns[conn] = _Conn(conn, writer)
        host = peer[0] if isinstance(peer, tuple) and peer else str(peer)
        log.info("TAPI bridge %s connected from %s", conn, peer, extra={"source": host})
        try:
            await self._read_lines(reader, conn)
        except (ConnectionError, OSError) as exc:
            log.warning("TAPI bridge %s connection error: %s", conn, exc,
                        extra={"source": host})
        except asyncio.CancelledError:
            pass  # the gateway is stopping
        finally:
            self._handlers.discard(task)  # type: ignore[arg-type]
            self.connections -= 1
            self._forget(conn)
            writer.close()
            log.warning("TAPI bridge %s disconnected: its devices are unknown until re-sent",
                        conn, extra={"source": host})
            self.handler.connection_lost(self.name, conn)

    async def _read_lines(self, reader: asyncio.StreamReader, conn: str) -> None:
        """Read the connection in chunks and apply every whole line in each (one handler
        call per chunk, not one await and one call per line); a line longer than
        max_line_bytes is skipped, with a log line, and the connection lives on."""
        partial = b""
        skipping = False  # inside an over-long line, until its newline
        since_yield = 0
        while True:
            data = await reader.read(READ_CHUNK)
            if not data:
                if partial.strip() and not skipping:
                    self.feed_lines([partial], conn)
                return
            lines = data.split(b"\n")
            if partial:
                lines[0] = partial + lines[0]
            partial = lines.pop()  # after the last newline: the start of the next line
            if skipping and lines:
                lines.pop(0)  # the end of the over-long line
                skipping = False
            if len(partial) > self.max_line_bytes:
                self.lines_bad += 1
                log.warning("TAPI bridge %s: line longer than %d bytes skipped",
                            conn, self.max_line_bytes, extra={"source": conn})
                partial, skipping = b"", True
            elif skipping:
                partial = b""
            if lines:
                self.feed_lines(lines, conn)
                since_yield += len(lines)
                if since_yield >= YIELD_EVERY:
                    # A chunk read from a full buffer does not give the loop a turn: a
                    # burst of thousands of lines (a PBX reload) must not hold up
                    # everybody else.
                    since_yield = 0
                    await asyncio.sleep(0)

    def feed(self, raw: bytes, conn: str) -> None:
        """Apply one line (without I/O): public so tests and benchmarks can drive it."""
        self.feed_lines([raw], conn)

    def feed_lines(self, raws: list[bytes], conn: str) -> None:
        """Apply lines in order (without I/O); their reports go to the handler in one call."""
        if self._superseded and conn in self._superseded:
            return  # a superseded connection's lines are older than its successor's state
        reports: list[CallReport | ServiceReport] = []
        lines, device_conn, longest = self._lines, self._device_conn, self.max_line_bytes
        for raw in raws:
            if len(raw) > longest:
                self.lines_bad += 1
                log.warning("TAPI bridge %s: line longer than %d bytes skipped", conn, longest,
                            extra={"source": conn})
                continue
            line = raw.strip()
            if not line:
                continue
            if line.find(b'"device"') < 0 and self._control(line, conn):  # (see _fast_read)
                if self._superseded and conn in self._superseded:
                    break  # a hello just now made this connection the older one
                continue
            self.lines_in += 1
            try:
                report = parse_line(line, lines, conn)
            except BridgeLineError as exc:
                self.lines_bad += 1
                if should_log(log, _SKIPPED, conn):
                    log.warning(_SKIPPED, conn, exc, redact(line), extra={"source": conn})
                continue
            if report is not None:
                device_conn[report.device] = conn
                reports.append(report)
        if reports:
            self.handler.reports(self.name, reports)

    # -- commands (docs/tapi-bridge.md) -----------------------------------------------------

    def _control(self, line: bytes, conn: str) -> bool:
        """A command's result or the bridge's hello; False: not one (a bad line)."""
        try:
            msg = strictjson.loads(line)
        except strictjson.StrictJSONError:
            return False
        c = self._conns.get(conn)
        if not isinstance(msg, dict) or c is None:
            return False
        if "result" in msg:
            op, ok = msg.get("result"), msg.get("ok")
            fut = c.pending.get(op) if isinstance(op, str) else None
            if fut is None or not isinstance(ok, bool):
                log.warning("TAPI bridge %s: result for no waiting command skipped: %.200r",
                            conn, redact(line), extra={"source": conn})
                return True
            error = msg.get("error")
            if not fut.done():
                fut.set_result((ok, str(error)[:300] if error is not None else None))
            return True
        commands = msg.get("commands")
        if "bridge" in msg and isinstance(commands, list):
            c.commands = frozenset(x for x in commands[:16] if isinstance(x, str))
            log.info("TAPI bridge %s is %.64s, takes commands: %s", conn, msg["bridge"],
                     ", ".join(sorted(c.commands)) or "none")
            instance = msg.get("instance")
            if isinstance(instance, str) and 0 < len(instance) <= 64:
                self._supersede(instance, c)
            return True
        return False

    def _supersede(self, instance: str, c: _Conn) -> None:
        """The same bridge program connected again (it gave up on a connection we had not
        noticed was dead, e.g. while this process was stalled): whatever is still buffered
        on the older connection is older than the new one's full state, so it is dropped
        unread and the older connection closed."""
        if c.instance is not None and self._instances.get(c.instance) == c.name:
            del self._instances[c.instance]  # one name per connection, however many hellos
        c.instance = instance
        old = self._instances.get(instance)
        self._instances[instance] = c.name
        if old is None or old == c.name or old not in self._conns:
            return
        self._superseded.add(old)
        log.warning("TAPI bridge %s replaces %s (the same bridge, reconnected): the older "
                    "connection is closed", c.name, old)
        self._conns[old].writer.transport.abort()

    def _forget(self, conn: str) -> None:
        self._superseded.discard(conn)
        c = self._conns.pop(conn, None)
        if c is not None and c.instance is not None \
                and self._instances.get(c.instance) == conn:
            del self._instances[c.instance]
        if c is not None:
            for fut in c.pending.values():
                if not fut.done():
                    fut.set_result((False, "the TAPI bridge connection dropped"))
        for device in [d for d, cn in self._device_conn.items() if cn == conn]:
            del self._device_conn[device]

    def can_pickup(self, target: str, picker: str) -> bool:
        """Whether one bridge connection reports both devices and takes pickup commands."""
        conn = self._device_conn.get(target)
        c = self._conns.get(conn) if conn is not None else None
        return c is not None and "pickup" in c.commands and \
            self._device_conn.get(picker) == conn

    async def pickup(self, target: str, target_line: str, call: str, picker_line: str,
                     timeout: float = COMMAND_TIMEOUT) -> tuple[bool, str | None]:
        """Ask the bridge that reported device `target` to move its ringing `call` (the
        bridge's own id) to the line `picker_line`: (True, None) or (False, why not)."""
        conn = self._device_conn.get(target)
        c = self._conns.get(conn) if conn is not None else None
        if c is None or "pickup" not in c.commands:
            return False, "no TAPI bridge that takes commands reports that line"
        if len(c.pending) >= MAX_PENDING:
            return False, "the TAPI bridge has too many commands waiting"
        op = secrets.token_hex(8)
        fut = asyncio.get_running_loop().create_future()
        c.pending[op] = fut
        cmd = {"cmd": "pickup", "op": op, "device": target_line, "call": call,
               "to": picker_line}
        try:
            c.writer.write(json.dumps(cmd).encode() + b"\n")
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            return False, f"the TAPI bridge did not answer within {timeout:g} s"
        except (ConnectionError, OSError) as exc:
            return False, f"the TAPI bridge connection failed: {exc}"
        finally:
            c.pending.pop(op, None)
