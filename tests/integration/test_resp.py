"""The lean Redis connection (gateway.resp) against a real redis-server: every caller gets its
own reply, errors are redis-py's, a lost or restarted Redis is reconnected, a cancelled
blocking read does not hold its connection, and a peer that does not speak RESP fails the
waiting commands instead of hanging them."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess

import pytest
import redis
from redis.exceptions import AuthenticationError, ConnectionError, NoScriptError, ResponseError

from conftest import RedisServer
from gateway.resp import LeanLink, supported
from gateway.store import Store, _resp, die_with_parent_preexec, redis_server_binary


def cmd(*args: str | bytes) -> bytes:
    return _resp([a.encode() if isinstance(a, str) else a for a in args])


async def test_concurrent_callers_each_get_their_own_reply(redis_url):
    link = LeanLink(redis_url)
    try:
        async def one(i: int):
            await link.call(cmd("SET", f"k{i}", f"v{i}"))
            return await link.call(cmd("GET", f"k{i}"))

        got = await asyncio.gather(*(one(i) for i in range(300)))
        assert got == [f"v{i}" for i in range(300)]
        assert redis.Redis.from_url(redis_url).get("k299") == b"v299"
    finally:
        link.close()


async def test_errors_are_redis_py_classes_and_the_connection_lives_on(redis_url):
    link = LeanLink(redis_url)
    try:
        with pytest.raises(NoScriptError):
            await link.call(cmd("EVALSHA", "0" * 40, "0"))
        await link.call(cmd("SET", "s", "x"))
        with pytest.raises(ResponseError, match="^WRONGTYPE"):
            await link.call(cmd("LPUSH", "s", "y"))
        assert await link.call(cmd("GET", "s")) == "x"
    finally:
        link.close()


async def test_a_cancelled_caller_does_not_shift_the_replies(redis_url):
    link = LeanLink(redis_url)
    try:
        await link.call(cmd("SET", "a", "1"))
        slow = asyncio.create_task(link.call(cmd("DEBUG", "SLEEP", "0.2")))
        await asyncio.sleep(0.05)
        slow.cancel()
        # Sent after the cancelled one: its reply must not be taken for this one's.
        assert await link.call(cmd("GET", "a")) == "1"
    finally:
        link.close()


async def test_a_killed_connection_is_opened_again_by_the_next_command(redis_url):
    link = LeanLink(redis_url)
    plain = redis.Redis.from_url(redis_url)
    try:
        await link.call(cmd("CLIENT", "SETNAME", "lean"))
        assert await link.call(cmd("PING")) == "PONG"
        killed = plain.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        await asyncio.sleep(0.05)
        assert await link.call(cmd("PING")) == "PONG"
    finally:
        link.close()


async def test_redis_restarted_then_back(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    link = LeanLink(server.url)
    try:
        assert await link.call(cmd("PING")) == "PONG"
        server.stop()
        with pytest.raises(ConnectionError):
            await link.call(cmd("PING"))
        server.start()
        assert await link.call(cmd("PING")) == "PONG"
    finally:
        link.close()
        server.stop()


async def test_a_cancelled_blocking_read_frees_the_connection(redis_url):
    link = LeanLink(redis_url, blocking=True)
    try:
        read = asyncio.create_task(link.call(cmd("XREAD", "BLOCK", "5000", "STREAMS", "x", "$")))
        await asyncio.sleep(0.05)
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
        # Not stuck behind the 5-second block: a new connection answers at once.
        assert await asyncio.wait_for(link.call(cmd("PING")), 1.0) == "PONG"
    finally:
        link.close()


async def test_password_and_database_from_the_url(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    try:
        admin = redis.Redis(port=server.port)
        admin.acl_setuser("gw", enabled=True, passwords=["+s3cret"], keys=["*"],
                          commands=["+@all"])
        bad = LeanLink(f"redis://gw:wrong@127.0.0.1:{server.port}/0")
        with pytest.raises(AuthenticationError):
            await bad.call(cmd("PING"))
        bad.close()
        link = LeanLink(f"redis://gw:s3cret@127.0.0.1:{server.port}/3")
        await link.call(cmd("SET", "in3", "yes"))
        link.close()
        assert redis.Redis(port=server.port, db=3).get("in3") == b"yes"
        assert redis.Redis(port=server.port, db=0).get("in3") is None
    finally:
        server.stop()


async def test_unix_socket(tmp_path):
    sock = tmp_path / "r.sock"
    proc = subprocess.Popen([redis_server_binary(), "--port", "0", "--unixsocket", str(sock),
                             "--dir", str(tmp_path), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=die_with_parent_preexec())
    link = LeanLink(f"unix://{sock}?db=2")
    try:
        for _ in range(250):
            if sock.exists():
                break
            await asyncio.sleep(0.02)
        await link.call(cmd("SET", "over", "unix"))
        assert redis.Redis(unix_socket_path=str(sock), db=2).get("over") == b"unix"
    finally:
        link.close()
        proc.terminate()
        proc.wait(10)


@contextlib.asynccontextmanager
async def peer_answering(reply: bytes):
    """A TCP peer that reads a command, answers `reply` and holds the connection a second:
    a LeanLink to it."""
    async def answer(reader, writer):
        await reader.read(100)
        writer.write(reply)
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    link = LeanLink(f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0")
    try:
        yield link
    finally:
        link.close()
        server.close()


async def test_a_peer_that_does_not_speak_resp_fails_the_command():
    async with peer_answering(b"HTTP/1.1 400 Bad Request\r\n\r\n") as link:
        with pytest.raises(ConnectionError, match="not RESP"):
            await asyncio.wait_for(link.call(cmd("PING")), 2.0)


def test_only_plain_urls_are_spoken_lean():
    assert supported("redis://h:1/0") and supported("unix:///run/r.sock")
    assert not supported("rediss://h:1/0")
    assert not supported("redis+sentinel://h:26379/mymaster")
    with pytest.raises(ValueError):
        LeanLink("rediss://h:1/0")


async def test_the_store_publishes_and_reads_the_log_on_lean_connections(redis_url):
    store = Store(redis_url)
    plain = redis.Redis.from_url(redis_url)
    try:
        assert store._lean is not None and store._lean_read is not None
        read = asyncio.create_task(store.read_log(0, block_ms=2000))
        await asyncio.sleep(0.05)
        (seq, changed), = await store.publish([("config", "config", '"abc"')])
        changes = await asyncio.wait_for(read, 2.0)
        assert changed and [c.seq for c in changes] == [seq] and changes[0].state == '"abc"'
        # Both lean connections are open on the server, beside redis-py's pool.
        names = [c["cmd"] for c in plain.client_list()]
        assert "xread" in names or "evalsha" in names
        # Scripts flushed (a Redis restarted without them): loaded again, published again.
        plain.script_flush()
        (seq2, changed2), = await store.publish([("config", "config", '"abd"')])
        assert changed2 and seq2 == seq + 1
    finally:
        await store.close()


async def test_a_reply_that_is_not_utf8_fails_the_command_and_closes_the_connection():
    async with peer_answering(b"$2\r\n\xe9\xe9\r\n") as link:  # a bulk string, not UTF-8
        with pytest.raises(ConnectionError, match="not RESP"):
            await asyncio.wait_for(link.call(cmd("GET", "x")), 2.0)
        assert link._proto is None or link._proto.closed
