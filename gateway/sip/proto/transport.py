"""Thin asyncio transports for the SIP layer: UDP, TCP and TLS, and the agent that joins
them to the pure transaction layer.

:class:`SipAgent` owns the sockets and one :class:`~.transaction.TransactionLayer`; it parses
what arrives (:func:`~.message.parse_message`: a malformed datagram is logged and dropped, a
malformed stream closes that connection only), matches responses to client transactions and
hands new requests to its `handler`. Timers: one asyncio timer at the earliest deadline of
the transaction layer and of the handler. `now` is ``loop.time()``.

A :class:`Peer` names where a message came from and where an answer goes: for TCP/TLS the
connection it arrived on (answers and in-dialog NOTIFYs go back on it, as phones behind NAT
need); a new connection is opened where none is left.

Connections we open are kept and reused per address (RFC 3261 18.1.1): a presence server
gets every PUBLISH on one connection, not one handshake each; messages given while the
connection is being made wait for it. When a connection is lost (the peer closed it, a TLS
error), the requests still waiting for an answer on it fail at once (17.1.4: the transaction
user is told of the transport error) instead of after timer F's 32 seconds, so a publisher
or registrar client sends again soon over a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .message import Request, Response, SipParseError, StreamFramer, parse_message
from .subscription import Local
from .transaction import Deliver, Send, ServerTransaction, TimedOut, TransactionLayer

__all__ = ["Peer", "SipAgent"]

log = logging.getLogger("gateway.sip")

MAX_CONNECTIONS = 2000
IDLE_TIMEOUT = 600.0  # a stream connection silent this long is closed
UDP_BUFFER = 4 * 1024 * 1024  # asked for; the kernel caps it at net.core.rmem_max


@dataclass(frozen=True, slots=True)
class Peer:
    transport: str  # "UDP" | "TCP" | "TLS"
    host: str
    port: int
    conn: int = 0  # the stream connection it arrived on (0: none / UDP)


class _Stream(asyncio.Protocol):
    def __init__(self, agent: SipAgent, transport_name: str) -> None:
        self.agent, self.name = agent, transport_name
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.id = 0
        self.peer: tuple[str, int] = ("", 0)
        self.last = 0.0
        self.dialed: tuple[str, str, int] | None = None  # the address we connected to
        self.requests: set[tuple[str, str]] = set()  # client transactions sent on it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        addr = transport.get_extra_info("peername") or ("", 0)
        self.peer = (addr[0], addr[1])
        if len(self.agent._conns) >= self.agent.max_connections:
            log.warning("SIP %s: too many connections, refusing %s", self.name, self.peer)
            transport.close()
            return
        self.id = next(self.agent._ids)
        self.agent._conns[self.id] = self
        self.last = self.agent.loop.time()

    def data_received(self, data: bytes) -> None:
        self.last = self.agent.loop.time()
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:
            log.info("SIP %s from %s:%d: %s; closing the connection", self.name, *self.peer,
                     exc)
            if self.transport is not None:
                self.transport.close()
            return
        peer = Peer(self.name, self.peer[0], self.peer[1], self.id)
        for raw in messages:
            self.agent._received(raw, peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.agent._lost(self, exc)

    def send(self, data: bytes) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        return True


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self, agent: SipAgent) -> None:
        self.agent = agent
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.strip(b"\r\n") == b"":
            return  # a keep-alive
        self.agent._received(data, Peer("UDP", addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP UDP: %s", exc)


Handler = Callable[[Request, Peer, ServerTransaction, float], None]


class SipAgent:
    """Sockets + transactions for one SIP agent (see the module docstring).

    `handler(request, peer, tx, now)` gets every new request (``handlers[method]`` first,
    where one is registered); it answers with :meth:`respond`. `deadline()` (optional) gives
    the handler's next deadline and `on_tick(now)` is called when it is due; more such pairs
    go in :attr:`timers`.
    """

    def __init__(self, handler: Handler, *, deadline: Callable[[], float | None] = lambda: None,
                 on_tick: Callable[[float], None] = lambda now: None,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.handler = handler
        self.handlers: dict[str, Handler] = {}  # by method, before `handler`
        self.timers: list[tuple[Callable[[], float | None], Callable[[float], None]]] = [
            (deadline, on_tick)]
        self.layer = TransactionLayer()
        self.max_connections = max_connections
        self.loop = asyncio.get_event_loop()
        self._udp: _Datagram | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._conns: dict[int, _Stream] = {}
        # Connections we opened, by the address dialed, and messages waiting for one.
        self._dialed: dict[tuple[str, str, int], _Stream] = {}
        self._connecting: dict[tuple[str, str, int], list[Request | Response]] = {}
        self._ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._resched_pending = False
        self._waiting: dict[tuple[str, str], Callable[[Response | None], None]] = {}
        self.addresses: dict[str, tuple[str, int]] = {}
        self.client_tls: ssl.SSLContext | None = None  # for connections we open (None: defaults)
        self.dropped = 0  # malformed messages dropped (metrics)
        self._idle_task: asyncio.Task | None = None
        self._closing = False

    # ------------------------------------------------------------------ listening

    async def listen_udp(self, host: str, port: int) -> tuple[str, int]:
        self.loop = asyncio.get_running_loop()
        transport, proto = await self.loop.create_datagram_endpoint(
            lambda: _Datagram(self), local_addr=(host, port))
        self._udp = proto
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Room for a burst: every phone of a site re-subscribing after a restart.
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, UDP_BUFFER)
        addr = transport.get_extra_info("sockname")
        self.addresses["UDP"] = (addr[0], addr[1])
        return self.addresses["UDP"]

    async def listen_stream(self, host: str, port: int, *, tls: ssl.SSLContext | None = None,
                            client_tls: ssl.SSLContext | None = None) -> tuple[str, int]:
        self.loop = asyncio.get_running_loop()
        name = "TLS" if tls is not None else "TCP"
        server = await self.loop.create_server(lambda: _Stream(self, name), host, port,
                                               ssl=tls)
        self._servers.append(server)
        addr = server.sockets[0].getsockname()
        self.addresses[name] = (addr[0], addr[1])
        if client_tls is not None:
            self.client_tls = client_tls
        if self._idle_task is None:
            self._idle_task = asyncio.create_task(self._close_idle())
        return self.addresses[name]

    def local(self, peer: Peer) -> Local:
        """How we appear to `peer` (Via sent-by and Contact on its transport)."""
        host, port = self.addresses.get(peer.transport) or next(iter(self.addresses.values()))
        shown = f"[{host}]" if ":" in host else host
        scheme = "sips" if peer.transport == "TLS" else "sip"
        transport = "" if peer.transport == "UDP" else f";transport={peer.transport.lower()}"
        return Local(peer.transport, f"{shown}:{port}",
                     f"{scheme}:blf@{shown}:{port}{transport}")

    async def close(self) -> None:
        self._closing = True  # what closing the connections fails is not sent again
        if self._timer is not None:
            self._timer.cancel()
        if self._idle_task is not None:
            self._idle_task.cancel()
        for conn in list(self._conns.values()):
            if conn.transport is not None:
                conn.transport.close()
        for server in self._servers:
            server.close()
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def _close_idle(self) -> None:
        while True:
            await asyncio.sleep(30)
            now = self.loop.time()
            for conn in list(self._conns.values()):
                if now - conn.last > IDLE_TIMEOUT and conn.transport is not None:
                    conn.transport.close()

    # ------------------------------------------------------------------ wire

    def _write(self, message: Request | Response, peer: Peer) -> bool:
        data = message.serialize()
        if peer.transport == "UDP":
            if self._udp is None or self._udp.transport is None:
                return False
            self._udp.transport.sendto(data, (peer.host, peer.port))
            return True
        if self._closing:
            return False
        conn = self._conns.get(peer.conn) if peer.conn else None
        key = (peer.transport, peer.host, peer.port)
        if conn is None or conn.transport is None or conn.transport.is_closing():
            conn = self._dialed.get(key)
        if conn is not None and conn.send(data):
            self._sent_on(conn, message)
            return True
        # No connection left: open one to the peer's address (phones listen there), once;
        # what is sent meanwhile waits for it.
        waiting = self._connecting.get(key)
        if waiting is not None:
            waiting.append(message)
        else:
            self._connecting[key] = [message]
            self.loop.create_task(self._connect(key))
        return True

    @staticmethod
    def _sent_on(conn: _Stream, message: Request | Response) -> None:
        if isinstance(message, Request):
            if len(conn.requests) > 256:  # forget the answered ones (kept bounded)
                conn.requests = {k for k in conn.requests if k in conn.agent.layer.client}
            conn.requests.add((message.branch, message.method))

    async def _connect(self, key: tuple[str, str, int]) -> None:
        transport, host, port = key
        proto: _Stream | None = None
        try:
            ctx = self.client_tls if transport == "TLS" else None
            if transport == "TLS" and ctx is None:
                ctx = ssl.create_default_context()
            _, proto = await asyncio.wait_for(self.loop.create_connection(
                lambda: _Stream(self, transport), host, port, ssl=ctx,
                server_hostname=host if ctx is not None else None), 10)
            if not proto.id:
                raise OSError("too many SIP connections")
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            log.info("SIP %s: cannot reach %s:%d: %s", transport, host, port, exc)
            self._fail([m for m in self._connecting.pop(key, []) if isinstance(m, Request)])
            return
        if self._closing:  # the agent closed while this connection was being made
            if proto.transport is not None:
                proto.transport.close()
            return
        proto.dialed = key
        self._dialed[key] = proto
        for message in self._connecting.pop(key, []):
            if proto.send(message.serialize()):
                self._sent_on(proto, message)
            elif isinstance(message, Request):
                self._fail([message])

    def _lost(self, conn: _Stream, exc: Exception | None) -> None:
        self._conns.pop(conn.id, None)
        if conn.dialed is not None and self._dialed.get(conn.dialed) is conn:
            del self._dialed[conn.dialed]
        if self._closing:
            return
        pending = [tx.request for k in conn.requests
                   if (tx := self.layer.client.get(k)) is not None]
        if pending:
            log.info("SIP %s connection to %s:%d lost (%s): %d request(s) without an answer "
                     "failed", conn.name, *conn.peer, exc or "closed", len(pending))
            self._fail(pending)
        conn.requests = set()

    def _fail(self, requests: list[Request]) -> None:
        actions: list = []
        for req in requests:
            actions += self.layer.transport_error(req)
        if actions:
            self._run(actions)

    def _run(self, actions: list) -> None:
        for a in actions:
            if isinstance(a, Send):
                self._write(a.message, a.dest)
            elif isinstance(a, Deliver):
                cb = self._waiting.pop((a.request.branch, a.request.method), None)
                if cb is not None and a.response.status >= 200:
                    cb(a.response)
                elif cb is not None:
                    self._waiting[(a.request.branch, a.request.method)] = cb
            elif isinstance(a, TimedOut):
                cb = self._waiting.pop((a.request.branch, a.request.method), None)
                if cb is not None:
                    cb(None)
        self._reschedule()

    def _received(self, data: bytes, peer: Peer) -> None:
        now = self.loop.time()
        try:
            msg = parse_message(data)
        except SipParseError as exc:
            self.dropped += 1
            log.info("SIP %s from %s:%d dropped: %s", peer.transport, peer.host, peer.port,
                     exc)
            return
        if isinstance(msg, Response):
            actions = self.layer.receive_response(msg, now)
            if actions is not None:
                self._run(actions)
            return
        got = self.layer.receive_request(msg, peer, reliable=peer.transport != "UDP")
        if got is None:
            from .subscription import make_response  # noqa: PLC0415

            self._write(make_response(msg, 503, headers=(("Retry-After", "5"),)), peer)
            return
        tx, actions = got
        if actions or not self.layer.is_new(tx):
            self._run(actions)
            return
        try:
            self.handlers.get(msg.method, self.handler)(msg, peer, tx, now)
        except Exception:  # noqa: BLE001 - one bad request must not stop the agent
            log.exception("SIP handler failed on %s", msg.method)
            from .subscription import make_response  # noqa: PLC0415

            self.respond(tx, make_response(msg, 500))
        self._reschedule()

    # ------------------------------------------------------------------ for the handler

    def respond(self, tx: ServerTransaction, resp: Response) -> None:
        self._run(self.layer.respond(tx, resp, self.loop.time()))

    def request(self, req: Request, peer: Peer,
                on_done: Callable[[Response | None], None] | None = None) -> None:
        """Send `req` in a client transaction; `on_done(final response or None)`."""
        if on_done is not None:
            self._waiting[(req.branch, req.method)] = on_done
        self._run(self.layer.send_request(req, peer, self.loop.time(),
                                          reliable=peer.transport != "UDP"))

    async def request_async(self, req: Request, peer: Peer) -> Response | None:
        fut: asyncio.Future[Response | None] = self.loop.create_future()

        def done(resp: Response | None) -> None:
            if not fut.done():
                fut.set_result(resp)

        self.request(req, peer, done)
        return await fut

    def _reschedule(self) -> None:
        # Deadlines are gathered once per loop turn, not once per message: a lamp change that
        # NOTIFYs a thousand phones would otherwise scan every transaction a thousand times.
        if not self._resched_pending:
            self._resched_pending = True
            self.loop.call_soon(self._do_reschedule)

    def _do_reschedule(self) -> None:
        self._resched_pending = False
        times = [t for t in (self.layer.next_deadline(), *(d() for d, _ in self.timers))
                 if t is not None]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if times:
            self._timer = self.loop.call_at(max(min(times), self.loop.time()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self.loop.time()
        actions = self.layer.tick(now)
        for _, on_tick in list(self.timers):
            try:
                on_tick(now)
            except Exception:  # noqa: BLE001
                log.exception("SIP timer handler failed")
        self._run(actions)

    def reschedule(self) -> None:
        """The handler's deadline changed (called by the handler)."""
        self._reschedule()

