"""The gateway's SIP stream connections (TCP here; TLS is the same code with a handshake):
one connection per presence server for every PUBLISH, and a lost connection does not leave
the lamps stuck for timer F's 32 seconds.

The peer is a presence server as Kamailio answers a PUBLISH (200 OK with SIP-ETag and
Expires, Server: kamailio), over a real TCP socket; it can hang up on the first request
without answering, as Kamailio 5.6 does after a TLS read error."""

from __future__ import annotations

import asyncio
import re
import time

from gateway.sip.lines import SipPublisher
from gateway.sip.proto.transport import SipAgent


class PresenceServer:
    """Answers PUBLISH over TCP the way Kamailio does; counts connections and requests."""

    def __init__(self, *, hang_up_first: bool = False) -> None:
        self.hang_up_first = hang_up_first
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.etags = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                if self.hang_up_first and len(self.requests) == 1:
                    writer.close()  # no answer: the connection is gone
                    return
                writer.write(self._ok(head))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _ok(self, head: bytes) -> bytes:
        lines = head.decode().split("\r\n")

        def copy(name: str) -> list[str]:
            return [x for x in lines if x.lower().startswith(name.lower() + ":")]

        self.etags += 1
        to = copy("To")[0]
        if ";tag=" not in to:
            to += ";tag=a6a1c5f60faecf035a1ae5b6e96e979a-8b8d"
        return ("\r\n".join(["SIP/2.0 200 OK", *copy("Via"), *copy("From"), to,
                             *copy("Call-ID"), *copy("CSeq"), "Expires: 120",
                             f"SIP-ETag: a.1764579318.{1000 + self.etags}.1.0",
                             "Server: kamailio (5.6.3 (x86_64/linux))",
                             "Content-Length: 0", "", ""])).encode()

    def published(self, text: str) -> bool:
        return any(text.encode() in r for r in self.requests)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def _agent() -> SipAgent:
    agent = SipAgent(lambda *a: None)
    await agent.listen_stream("127.0.0.1", 0)
    return agent


async def _until(cond, seconds: float, what: str) -> None:  # noqa: ANN001
    end = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < end, what
        await asyncio.sleep(0.02)


def _publisher(agent: SipAgent, port: int, states: dict[str, bytes]) -> SipPublisher:
    return SipPublisher(agent, f"sip:127.0.0.1:{port};transport=tcp", "example.org",
                        lambda: list(states), lambda target, event: states.get(target),
                        events=("presence",))


async def test_every_publish_to_a_presence_server_goes_over_one_connection() -> None:
    server = PresenceServer()
    await server.start()
    agent = await _agent()
    states = {str(n): f"<presence>{n} idle</presence>".encode() for n in range(201, 221)}
    pub = _publisher(agent, server.port, states)
    try:
        await pub.start()  # 20 targets published at once, before any connection exists
        await _until(lambda: len(server.requests) >= 20, 30, "not every target was published")
        for n in (201, 202, 203):
            states[str(n)] = f"<presence>{n} busy</presence>".encode()
            pub.changed([str(n)])
            await _until(lambda n=n: server.published(f"{n} busy"), 30, "a change was lost")
        await _until(lambda: pub.healthy and all(p.etag for p in pub.pubs.values()), 30,
                     "the server's answers did not reach the publications")
        assert server.connections == 1, "each PUBLISH opened a connection of its own"
        assert len(server.requests) == 23
    finally:
        await pub.stop()
        await agent.close()
        await server.close()


async def test_a_connection_lost_without_an_answer_is_published_again_on_a_new_one() -> None:
    server = PresenceServer(hang_up_first=True)
    await server.start()
    agent = await _agent()
    states = {"201": b"<presence>201 ringing</presence>"}
    pub = _publisher(agent, server.port, states)
    started = time.monotonic()
    try:
        await pub.start()
        # The server hangs up on the first PUBLISH: the publisher learns it at once (not
        # after timer F, 32 s) and sends the state again on a new connection.
        await _until(lambda: len(server.requests) >= 2, 28,
                     "the state was not published again after the connection was lost")
        assert time.monotonic() - started < 28  # timer F would take 32 s, then 5 more
        assert server.connections == 2
        assert server.requests[1].count(b"201 ringing") == 1
        assert b"SIP-If-Match" not in server.requests[1]  # the whole state, as new
        await _until(lambda: pub.healthy and pub.pubs[("201", "presence")].etag, 30,
                     "the second PUBLISH was not taken as answered")
    finally:
        await pub.stop()
        await agent.close()
        await server.close()


async def test_a_peer_that_cannot_be_reached_fails_the_request_instead_of_waiting() -> None:
    server = PresenceServer()
    await server.start()
    port = server.port
    await server.close()  # nobody listens there any more
    agent = await _agent()
    states = {"201": b"<presence>201 idle</presence>"}
    pub = _publisher(agent, port, states)
    try:
        await pub.start()
        await _until(lambda: not pub.healthy, 30, "the failure was not noticed")
        assert pub.pubs[("201", "presence")].failed == "no answer"
    finally:
        await pub.stop()
        await agent.close()
