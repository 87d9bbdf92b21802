"""The gateway's side of bridge commands (gateway/tapi/bridge.py): the hello line, commands to
the connection that reported a line, their results, timeouts, dropped connections, and a
bridge that reconnects replacing its older connection. Real TCP connections to the real
listener; the handler is a recorder of what the source reports."""

from __future__ import annotations

import asyncio
import json

from conftest import eventually
from gateway.tapi.bridge import TapiBridgeServer

LINES = {"Line 201": ("201", "201"), "Line 202": ("202", "202")}


class Recorder:
    def __init__(self) -> None:
        self.got: list = []
        self.lost: list = []

    def reports(self, source, reports):
        self.got.extend(reports)

    def connection_lost(self, source, conn):
        self.lost.append(conn)


async def open_bridge(port: int, hello: dict | None):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    if hello is not None:
        w.write(json.dumps(hello).encode() + b"\n")
    w.write(b'{"device": "Line 201", "devstate": "inservice"}\n'
            b'{"device": "Line 202", "devstate": "inservice"}\n')
    await w.drain()
    return r, w


async def test_commands_go_to_the_reporting_bridge_and_results_come_back():
    rec = Recorder()
    server = TapiBridgeServer("127.0.0.1", 0, rec, LINES)
    await server.start()
    try:
        r, w = await open_bridge(server.port, {"bridge": "test", "instance": "i1",
                                               "commands": ["pickup"]})
        await eventually(lambda: len(rec.got) == 2)
        assert server.lines_bad == 0  # the hello is no bad line
        assert server.can_pickup("201", "202") and not server.can_pickup("201", "999")

        async def answer(result: dict | bytes):
            cmd = json.loads(await asyncio.wait_for(r.readline(), 5))
            assert cmd["cmd"] == "pickup" and cmd["device"] == "Line 201"
            assert cmd["call"] == "0x1" and cmd["to"] == "Line 202"
            payload = result if isinstance(result, bytes) else json.dumps(
                {"result": cmd["op"], **result}).encode()
            w.write(payload + b"\n")
            await w.drain()

        job = asyncio.create_task(answer({"ok": True}))
        assert await server.pickup("201", "Line 201", "0x1", "Line 202") == (True, None)
        await job
        job = asyncio.create_task(answer({"ok": False, "error": "linePickupW: LINEERR_NOTOWNER"}))
        assert await server.pickup("201", "Line 201", "0x1", "Line 202") == (
            False, "linePickupW: LINEERR_NOTOWNER")
        await job
        # A result that is not one (ok missing) is skipped: the command times out.
        job = asyncio.create_task(answer(b'{"result": "nope", "ok": "yes"}'))
        ok, why = await server.pickup("201", "Line 201", "0x1", "Line 202", timeout=0.3)
        assert not ok and "did not answer within 0.3 s" in why
        await job
        # The connection drops while a command waits: answered at once.
        pending = asyncio.create_task(server.pickup("201", "Line 201", "0x1", "Line 202"))
        await asyncio.wait_for(r.readline(), 5)
        w.close()
        assert await asyncio.wait_for(pending, 5) == (False, "the TAPI bridge connection dropped")
        assert not server.can_pickup("201", "202")
    finally:
        await server.stop()


async def test_a_bridge_without_hello_is_never_sent_a_command():
    rec = Recorder()
    server = TapiBridgeServer("127.0.0.1", 0, rec, LINES)
    await server.start()
    try:
        r, w = await open_bridge(server.port, None)
        await eventually(lambda: len(rec.got) == 2)
        assert not server.can_pickup("201", "202")
        ok, why = await server.pickup("201", "Line 201", "0x1", "Line 202")
        assert not ok and "takes commands" in why
        # A line that is neither a report nor a control line is still a bad line.
        w.write(b'{"hello": 1}\n')
        await w.drain()
        await eventually(lambda: server.lines_bad == 1)
        w.close()
    finally:
        await server.stop()


async def test_a_reconnected_bridge_replaces_its_older_connection():
    rec = Recorder()
    server = TapiBridgeServer("127.0.0.1", 0, rec, LINES)
    await server.start()
    try:
        hello = {"bridge": "test", "instance": "same-run", "commands": ["pickup"]}
        r1, w1 = await open_bridge(server.port, hello)
        await eventually(lambda: len(rec.got) == 2)
        r2, w2 = await open_bridge(server.port, hello)
        await eventually(lambda: len(rec.lost) == 1)  # the older one closed
        assert (await asyncio.wait_for(r1.read(), 5)) == b""
        await eventually(lambda: len(rec.got) == 4)
        assert server.can_pickup("201", "202")  # through the new connection
        # Another run of the program (another instance) does not replace it.
        r3, w3 = await open_bridge(server.port, {**hello, "instance": "other"})
        await eventually(lambda: len(rec.got) == 6)
        assert len(rec.lost) == 1
        # One connection saying hello again and again holds one name, not one per hello.
        for i in range(50):
            w3.write(json.dumps({**hello, "instance": f"x{i}"}).encode() + b"\n")
        await w3.drain()
        await eventually(lambda: "x49" in server._instances)
        assert len(server._instances) == 2
        for w in (w2, w3):
            w.close()
    finally:
        await server.stop()
