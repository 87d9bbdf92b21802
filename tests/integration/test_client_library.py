"""blf_gateway.client against the real gateway: login, subscribe, lamp changes, reconnect with
the session token and resume by `since`, pickup with `op`."""

from __future__ import annotations

import asyncio

import pytest

from blf_gateway.client import GatewayClient, GatewayError, backoff_delay
from conftest import HASH, PATIENCE, PW, Bridge, free_port, gateway_config, toml_table
from gateway.server.messages import Action, PanelSnapshot


@pytest.fixture
def config(redis_url):
    return gateway_config(
        redis_url, listen=f"127.0.0.1:{free_port()}", bridge=f"127.0.0.1:{free_port()}",
        password_hash=HASH,
        more=toml_table("[[groups]]", name="team", members=["alice", "bob"],
                        rights={"numbers": "all", "pickup": True}))


def ring(device: str, call: str, caller: str = "+4930555") -> dict:
    return {"device": device, "call": call, "state": "offering", "caller": caller}


async def next_change(it, pred, timeout: float = PATIENCE):
    async def find():
        async for ch in it:
            if pred(ch):
                return ch
    return await asyncio.wait_for(find(), timeout)


async def test_subscribe_and_iterate_lamp_changes(start_gateway, config):
    gw = await start_gateway(config)
    bridge = await Bridge.connect(gw.bridge.port)
    url = f"ws://127.0.0.1:{gw.ws_port}/ws"
    async with GatewayClient(url, "alice", PW) as client:
        assert client.welcome.panels == ["team"]
        changes = client.changes()
        snap = await client.subscribe(panel="team")
        assert isinstance(snap, PanelSnapshot)
        assert {m.client for m in snap.members} == {"alice", "bob"}
        await bridge.send(ring("202", "c1"))
        ch = await next_change(changes, lambda c: c.member == "bob" and c.lamp == "ringing")
        assert ch.panel == "team" and ch.calls[0].remote == "+4930555"
        assert ch.seq > snap.seq
    await bridge.close()


async def test_wrong_password_raises_at_connect(start_gateway, config):
    gw = await start_gateway(config)
    client = GatewayClient(f"ws://127.0.0.1:{gw.ws_port}/ws", "alice", "wrong password")
    with pytest.raises(GatewayError) as err:
        await asyncio.wait_for(client.connect(), 10)
    assert err.value.code == "auth_failed"
    await client.close()


async def test_connect_waits_for_the_gateway_then_reconnects_with_token_and_resumes(
        start_gateway, config):
    """The client is started before the gateway; it connects when the gateway comes up. The
    gateway restarts; meanwhile bob's phone starts ringing; the client comes back by itself
    with its session token (the password is asked for once) and learns of the ringing."""
    port = int(config.split('listen = "127.0.0.1:')[1].split('"')[0])
    asked = []

    def password() -> str:
        asked.append(1)
        return PW

    seen = []
    client = GatewayClient(f"ws://127.0.0.1:{port}/ws", "alice", password,
                           on_change=seen.append)
    connecting = asyncio.create_task(client.connect())
    await asyncio.sleep(0.3)
    assert not connecting.done()  # nobody listens yet: it keeps trying
    gw = await start_gateway(config)
    await asyncio.wait_for(connecting, 15)
    await client.subscribe(panel="team")
    bridge = await Bridge.connect(gw.bridge.port)
    await bridge.send({"device": "202", "devstate": "inservice"})
    await _until(lambda: any(c.member == "bob" and c.lamp == "idle" for c in seen))

    await start_gateway.stop(gw)
    await _until(lambda: not client.connected)
    gw2 = await start_gateway(config)
    bridge2 = await Bridge.connect(gw2.bridge.port)
    await bridge2.send(ring("202", "c2", "+4930777"))
    await client.wait_connected(15)
    await _until(lambda: any(c.member == "bob" and c.lamp == "ringing" for c in seen), 10)
    ringing = next(c for c in seen if c.member == "bob" and c.lamp == "ringing")
    assert ringing.calls[0].remote == "+4930777"
    assert client.reconnects == 1
    assert asked == [1]  # the reconnect logged in with the session token
    await client.close()
    await bridge.close()
    await bridge2.close()


async def test_pickup_with_op_is_answered_once_and_repeated_alike(start_gateway, config):
    gw = await start_gateway(config)
    bridge = await Bridge.connect(gw.bridge.port)
    url = f"ws://127.0.0.1:{gw.ws_port}/ws"
    async with GatewayClient(url, "alice", PW) as alice:
        changes = alice.changes()
        await alice.subscribe(panel="team")
        await bridge.send(ring("202", "c9"))
        await next_change(changes, lambda c: c.member == "bob" and c.lamp == "ringing")
        first = await alice.pickup(panel="team", member="bob", op="op-1")
        assert isinstance(first, Action)
        assert first.op == "op-1" and first.device == "202" and first.dial == "**202"
        again = await alice.pickup(panel="team", member="bob", op="op-1")
        assert again == first  # the same answer; nothing carried out twice
        with pytest.raises(GatewayError) as err:
            await alice.pickup(panel="team", member="alice")
        assert err.value.code == "forbidden"
    await bridge.close()


def test_backoff_doubles_to_ten_seconds_with_jitter():
    assert [backoff_delay(a, lambda: 0.5) for a in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]
    assert backoff_delay(0, lambda: 0.0) == 0.375 and backoff_delay(3, lambda: 1.0) == 5.0


async def _until(pred, timeout: float = PATIENCE):
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


class CuttingProxy:
    """A TCP proxy between the client and the gateway that can lose the gateway's answer:
    once armed, the next bytes from the gateway are dropped and the connection is cut, as a
    network failure right after a request was sent would."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.armed = False
        self.cuts = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _conn(self, cr, cw) -> None:
        gr, gw = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(r, w, from_gateway: bool) -> None:
            try:
                while data := await r.read(65536):
                    if from_gateway and self.armed:
                        self.armed = False
                        self.cuts += 1
                        break  # the answer is lost with the connection
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            for writer in (cw, gw):
                writer.close()

        await asyncio.gather(pipe(cr, gw, False), pipe(gr, cw, True))

    async def close(self) -> None:
        self.server.close()


async def test_pickup_answer_lost_with_the_connection_is_asked_again_with_its_op(
        start_gateway, config):
    gw = await start_gateway(config)
    bridge = await Bridge.connect(gw.bridge.port)
    proxy = CuttingProxy(gw.ws_port)
    port = await proxy.start()
    async with GatewayClient(f"ws://127.0.0.1:{port}/ws", "alice", PW) as alice:
        changes = alice.changes()
        await alice.subscribe(panel="team")
        await bridge.send(ring("202", "c7"))
        await next_change(changes, lambda c: c.member == "bob" and c.lamp == "ringing")
        proxy.armed = True  # the gateway's answer to the pickup never arrives
        outcome = await alice.pickup(panel="team", member="bob", op="op-lost", timeout=20)
        assert proxy.cuts == 1 and alice.reconnects == 1
        # After the reconnect the same op was asked again and answered like the first
        # (recorded by the gateway), not refused or carried out anew.
        assert isinstance(outcome, Action)
        assert outcome.op == "op-lost" and outcome.device == "202"
        again = await alice.pickup(panel="team", member="bob", op="op-lost")
        assert again == outcome
    await proxy.close()
    await bridge.close()
