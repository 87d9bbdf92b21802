"""The hub's frames-built-once broadcast against real websockets servers and clients: every
client reads exactly the text sent (short, 16-bit and 64-bit lengths, non-ASCII), a client
that is closing is skipped without harm to the others, and a connection with an extension
(permessage-deflate) still gets a correct frame through the library's own send."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from gateway.server.hub import broadcast

TEXTS = [
    '{"type":"lamp","member":"Zoë","lamp":"ringing"}',  # < 126 bytes, non-ASCII
    json.dumps({"type": "lamp", "display": "x" * 300}),  # 16-bit length
    json.dumps({"type": "lamps", "changes": ["y" * 70_000]}),  # 64-bit length
]


async def _server_and_clients(n: int, compression: str | None):
    conns = []
    joined = asyncio.Event()

    async def handler(ws):  # noqa: ANN001
        conns.append(ws)
        if len(conns) == n:
            joined.set()
        await ws.wait_closed()

    server = await serve(handler, "127.0.0.1", 0, compression=compression)
    port = server.sockets[0].getsockname()[1]
    clients = [await connect(f"ws://127.0.0.1:{port}/", compression=compression,
                             max_size=2**20) for _ in range(n)]
    await asyncio.wait_for(joined.wait(), 10)
    return server, conns, clients


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_every_client_reads_exactly_the_text_broadcast(compression):
    server, conns, clients = await _server_and_clients(3, compression)
    try:
        assert all(bool(c.protocol.extensions) == (compression is not None) for c in conns)
        for text in TEXTS:
            assert broadcast(conns, text) == 3
        assert broadcast(conns, TEXTS) == 3  # several messages: in one write, in order
        for client in clients:
            got = [await asyncio.wait_for(client.recv(), 10) for _ in TEXTS * 2]
            assert got == TEXTS * 2
    finally:
        for client in clients:
            await client.close()
        server.close()
        await server.wait_closed()


async def test_a_closing_client_is_skipped_and_the_others_still_read():
    server, conns, clients = await _server_and_clients(3, None)
    try:
        await clients[0].close()
        await asyncio.wait_for(conns[0].wait_closed(), 10)
        assert broadcast(conns, TEXTS[0]) == 2
        for client in clients[1:]:
            assert await asyncio.wait_for(client.recv(), 10) == TEXTS[0]
        # The server side of a connection whose socket is gone: skipped, no exception.
        conns[1].transport.abort()
        assert broadcast(conns, TEXTS[1]) in (1, 2)  # the abort is seen at the next loop turn
        await asyncio.sleep(0.05)
        assert broadcast(conns, TEXTS[2]) == 1
        assert await asyncio.wait_for(clients[2].recv(), 10) == TEXTS[1]
        assert await asyncio.wait_for(clients[2].recv(), 10) == TEXTS[2]
    finally:
        for client in clients:
            await client.close()
        server.close()
        await server.wait_closed()
