"""The bridge's side of the command protocol against a gateway that sends garbage: each bad
command line gets a clear answer or is skipped, the connection and the state live on.

The real gateway never sends such lines, so a minimal TCP listener stands in for a hostile
one here, speaking the documented command lines (docs/tapi-bridge.md, Commands)."""

from __future__ import annotations

import asyncio
import json

from gateway.tapi.winbridge import constants as C
from gateway.tapi.winbridge.callinfo import CallInfo
from gateway.tapi.winbridge.link import MAX_COMMAND_BYTES, Bridge, LinkOptions
from gateway.tapi.winbridge.translate import LineOpened, TapiMessage


async def test_bad_commands_get_clear_answers_and_change_nothing():
    conns: asyncio.Queue = asyncio.Queue()

    async def serve(reader, writer):
        await conns.put((reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    bridge = Bridge(LinkOptions("127.0.0.1", port, backoff_min=0.05, backoff_max=0.1))
    bridge.feed(LineOpened(0, "Line 201", "201"))
    bridge.feed(TapiMessage(C.MESSAGES["LINE_CALLSTATE"], 5, 0,
                            C.CALLSTATE["LINECALLSTATE_OFFERING"], 0, 0,
                            CallInfo(call_id=0x10, origin=4)))
    task = asyncio.create_task(bridge.run())
    try:
        reader, writer = await asyncio.wait_for(conns.get(), 5)

        async def line() -> dict:
            return json.loads(await asyncio.wait_for(reader.readline(), 5))

        hello = await line()
        assert hello["commands"] == ["pickup"] and len(hello["instance"]) == 16
        state = [await line(), await line()]
        assert state[0] == {"device": "Line 201", "devstate": "inservice"}
        assert state[1]["call"] == "0x10" and state[1]["state"] == "offering"

        writer.write(b"this is not json\n")
        writer.write(b'{"cmd": "dial", "op": "a1", "device": "x", "call": "1", "to": "y"}\n')
        writer.write(b'{"cmd": "pickup", "op": "a2", "device": "Line 201", "call": "0x10"}\n')
        writer.write(b'{"cmd": "pickup", "op": "a3", "device": "Line 201", "call": "0x10", '
                     b'"to": "Line 999"}\n')
        writer.write(b'{"cmd": "pickup", "op": "a4", "device": "Line 201", "call": "0x10", '
                     b'"to": "Line 201"}\n')
        await writer.drain()
        answers = {a["result"]: a for a in [await line() for _ in range(4)]}
        assert answers["a1"]["ok"] is False and "cmd" in answers["a1"]["error"]
        assert answers["a2"]["ok"] is False and "to" in answers["a2"]["error"]
        assert "no line 'Line 999'" in answers["a3"]["error"]
        assert "not opened with owner privilege" in answers["a4"]["error"]
        assert bridge.connected.is_set() and bridge.connections == 1

        # A command line longer than the limit: the bridge closes that connection and comes
        # back with its full state.
        writer.write(b'{"cmd": "' + b"x" * (MAX_COMMAND_BYTES + 10) + b'"}\n')
        await writer.drain()
        reader2, writer2 = await asyncio.wait_for(conns.get(), 5)
        again = [json.loads(await asyncio.wait_for(reader2.readline(), 5)) for _ in range(3)]
        assert again[1:] == state
        assert bridge.connections == 2
        writer2.close()
    finally:
        bridge.stop()
        await asyncio.wait_for(task, 5)
        server.close()
