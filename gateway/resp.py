"""A lean Redis connection for the commands on a lamp's path: RESP over an asyncio protocol,
its replies parsed by hiredis as the bytes arrive.

Every lamp change goes to Redis (the publish script) and comes back (the change-log read)
before any client sees it, so the cost of one round trip is a floor under every lamp's
latency. Most of that cost, after a quiet moment, was the client's own Python: redis-py's
pool, its stream reader and parser layers took 523-706 µs for a round trip that a plain
socket makes in 145 µs (docs/performance.md, "Why the 200-client p99"). Here a command that
is already packed (:func:`pack`) is written to the transport at once, and
`data_received` feeds hiredis and resolves the waiting futures in order: nothing else runs
between the bytes and the caller.

Commands are pipelined: several callers may have commands in flight on one connection, and
their replies come back in the order they were sent (Redis's own guarantee on a connection).
A reply whose caller was cancelled is read and dropped. A blocking command (XREAD BLOCK)
holds its connection until it is served, so it gets a connection of its own
(`blocking=True`); if its caller is cancelled the connection is closed, not left blocked.

Errors are redis-py's exception classes (ConnectionError, NoScriptError, ReadOnlyError,
ResponseError, ...), so callers handle both connections alike. A connection that dropped is
opened again by the next command; a command that finds its connection gone before its
reply is tried once more on a new one when the connection was an old one (Redis restarted
since), the way redis-py retries.

Only plain TCP (`redis://`) and unix sockets (`unix://`) are spoken here;
:func:`supported` says so, and the store keeps redis-py for the rest (TLS, Sentinel).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import (AuthenticationError, BusyLoadingError, InvalidResponse,
                              NoPermissionError, NoScriptError, OutOfMemoryError,
                              ReadOnlyError, RedisError, ResponseError)
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["LeanLink", "pack", "supported"]

CONNECT_TIMEOUT = 2.0  # seconds, as the store's redis-py pool

# Error codes -> redis-py's classes, the code taken off the message as redis-py does; any
# other code (MISCONF, WRONGTYPE, ...) is a ResponseError with the whole message.
_ERRORS: dict[str, type[RedisError]] = {
    "NOSCRIPT": NoScriptError,
    "READONLY": ReadOnlyError,
    "OOM": OutOfMemoryError,
    "LOADING": BusyLoadingError,
    "NOAUTH": AuthenticationError,
    "WRONGPASS": AuthenticationError,
    "NOPERM": NoPermissionError,
    "ERR": ResponseError,
}


def _error(message: str) -> RedisError:
    code, _, rest = message.partition(" ")
    cls = _ERRORS.get(code)
    if cls is None:
        return ResponseError(message)
    return cls(rest)


def supported(url: str) -> bool:
    """True where this connection speaks to `url` itself (plain TCP or a unix socket)."""
    return url.startswith(("redis://", "unix://"))


def pack(args: list[bytes]) -> bytes:
    """A command in RESP (an array of bulk strings), packed in one pass. redis-py's packer
    joins its whole buffer again for every argument (up to 6 KB each time) and runs an
    encoder call per argument: for a batch of hundreds of keys and values that cost more
    CPU than building the batch."""
    return b"".join([b"*%d\r\n" % len(args), *[b"$%d\r\n%b\r\n" % (len(a), a) for a in args]])


class _Protocol(asyncio.Protocol):
    """One connection: writes packed commands, resolves their futures in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[asyncio.Future] = deque()
        self.closed = False
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=_error,
                                     encoding="utf-8")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, packed: bytes) -> asyncio.Future:
        fut = self.loop.create_future()
        self.waiting.append(fut)
        self.transport.write(packed)  # type: ignore[union-attr]
        return fut

    def data_received(self, data: bytes) -> None:
        reader, waiting = self.reader, self.waiting
        reader.feed(data)
        try:
            while True:
                reply = reader.gets()
                if reply is False:
                    return
                if not waiting:
                    raise InvalidResponse("a reply nobody asked for")
                fut = waiting.popleft()
                if fut.done():
                    continue  # its caller was cancelled: the reply is read and dropped
                if isinstance(reply, RedisError):  # (what _error made of an error reply)
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)
        except (InvalidResponse, UnicodeDecodeError) as exc:
            # Bytes that are not RESP (or text that is not UTF-8): nothing after them can be
            # matched to a command.
            self.abort(RedisConnectionError(f"Redis sent what is not RESP: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(
            f"connection to Redis lost: {exc}" if exc else "Redis closed the connection"))

    def eof_received(self) -> bool:
        return False  # closes the transport; connection_lost fails what waits

    def abort(self, exc: Exception) -> None:
        self._fail(exc)
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(exc)


class LeanLink:
    """A pipelined connection to the Redis at `url`, opened on first use and again after a
    loss. `blocking`: for a command that blocks its connection (see the module's text)."""

    def __init__(self, url: str, *, blocking: bool = False) -> None:
        if not supported(url):
            raise ValueError(f"not a redis:// or unix:// URL: {url.split('://')[0]}://")
        self._options = parse_url(url)
        self._blocking = blocking
        self._proto: _Protocol | None = None
        self._opening: asyncio.Future | None = None

    async def call(self, packed: bytes) -> Any:
        """Send one packed command and return its reply (raises redis-py's exceptions)."""
        proto = self._proto
        fresh = False
        if proto is None or proto.closed or proto.loop is not asyncio.get_running_loop():
            proto, fresh = await self._open(), True
        try:
            return await self._wait(proto, packed)
        except RedisConnectionError:
            if fresh:
                raise
        # The connection was an old one and is gone (Redis restarted, an idle connection
        # cut): once more on a new one, as redis-py's retry does.
        proto = self._proto
        if proto is None or proto.closed:
            proto = await self._open()
        return await self._wait(proto, packed)

    async def _wait(self, proto: _Protocol, packed: bytes) -> Any:
        fut = proto.send(packed)
        if not self._blocking:
            return await fut
        try:
            return await fut
        except asyncio.CancelledError:
            # A blocked read nobody waits for any more would hold the connection until it
            # is served: close it instead (the next call opens a new one).
            proto.abort(RedisConnectionError("blocked read cancelled"))
            raise

    async def _open(self) -> _Protocol:
        # Callers arriving while a connection is being opened share that one.
        if self._opening is not None:
            return await asyncio.shield(self._opening)
        loop = asyncio.get_running_loop()
        self._opening = opening = loop.create_future()
        try:
            proto = await asyncio.wait_for(self._connect(loop), CONNECT_TIMEOUT)
        except BaseException as exc:
            self._opening = None
            error = exc
            if isinstance(exc, (OSError, asyncio.TimeoutError)):
                error = RedisConnectionError(f"cannot connect to Redis: {exc or 'timed out'}")
            if not isinstance(exc, asyncio.CancelledError):
                opening.set_exception(error)
                opening.exception()  # (retrieved: nobody else may be waiting)
            else:
                opening.cancel()
            if error is exc:
                raise
            raise error from exc
        old, self._proto, self._opening = self._proto, proto, None
        if old is not None and not old.closed and old.transport is not None:
            try:
                old.transport.close()
            except RuntimeError:
                pass  # its event loop is closed (a connection of an earlier loop)
        opening.set_result(proto)
        return proto

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        o = self._options
        if "path" in o:
            _, proto = await loop.create_unix_connection(lambda: _Protocol(loop), o["path"])
        else:
            _, proto = await loop.create_connection(
                lambda: _Protocol(loop), o.get("host", "localhost"), o.get("port", 6379))
        # Authentication and database first, pipelined, before any command of a caller.
        first = []
        if o.get("password") is not None:
            user = o.get("username")
            first.append(pack([b"AUTH", *([user.encode()] if user else []),
                               o["password"].encode()]))
        if o.get("db"):
            first.append(pack([b"SELECT", b"%d" % int(o["db"])]))
        try:
            for command in first:
                await proto.send(command)
        except BaseException:
            proto.abort(RedisConnectionError("setup failed"))
            raise
        return proto

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        proto, self._proto = self._proto, None
        if proto is not None:
            proto.abort(RedisConnectionError("connection closed"))
