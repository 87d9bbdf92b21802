"""An asyncio client for the BLF gateway's WebSocket protocol (docs/protocol.md).

```python
from blf_gateway.client import GatewayClient

async with GatewayClient("ws://gateway:8765/ws", "alice", password="...") as gw:
    await gw.subscribe(panel="reception")
    async for change in gw.changes():
        print(change.member or change.device, change.lamp, [c.remote for c in change.calls])
```

What it does for you:

- **login** with the password once; the session token of `welcome` is kept and used for every
  reconnect (the password only again if the token was refused: expired or password changed);
- **reconnect with backoff** (0.5 s doubling to 10 s, with jitter) whenever the connection
  drops, then logs in and **resumes every subscription with `since`**: you get the members
  that changed while you were away, never a state older than one you had;
- **typed messages**: every frame is parsed into the models of
  :mod:`gateway.server.messages` (the same models the protocol's AsyncAPI document is made
  from);
- **pickup with `op`**: an idempotency key is made for you and the request is repeated with the
  same key after a reconnect, so a call is never picked up twice;
- lamp changes by **callback** (``on_change=``) or **async iterator** (:meth:`changes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import secrets
import ssl as ssl_module
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Union

import websockets
from pydantic import BaseModel, ValidationError
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from gateway.server.messages import (
    Action,
    CallInfo,
    DeviceLamp,
    DeviceSnapshot,
    Error,
    JournalReply,
    Lamps,
    PanelLamp,
    PanelSnapshot,
    PickupResult,
    PresenceInfo,
    Welcome,
    parse_server_message,
)

__all__ = [
    "GatewayClient",
    "GatewayError",
    "LampChange",
    "backoff_delay",
    "Welcome",
    "PanelSnapshot",
    "DeviceSnapshot",
    "Action",
    "PickupResult",
    "JournalReply",
]

log = logging.getLogger("blf_gateway.client")

BACKOFF_MIN = 0.5
BACKOFF_MAX = 10.0
CHANGES_PENDING_LIMIT = 10000  # lamps kept for a slow iterator (newest state per lamp)

Topic = tuple[str, str]  # ("panel", name) or ("device", id)
Snapshot = Union[PanelSnapshot, DeviceSnapshot]


def backoff_delay(attempt: int, rnd: Callable[[], float] = random.random) -> float:
    """Seconds before reconnect attempt `attempt` (0-based): 0.5 s doubling to 10 s, +-25 %
    jitter so that clients of a restarted gateway do not all come back at once (the same rule
    as the switchboard's connection.js)."""
    base = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(attempt, 16))
    return min(BACKOFF_MAX, max(BACKOFF_MIN / 2, base * (0.75 + 0.5 * rnd())))


class GatewayError(Exception):
    """The gateway refused a request: `code` is one of the protocol's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _Lost(Exception):
    """The connection dropped while a request waited for its reply."""


@dataclass(frozen=True, slots=True)
class LampChange:
    """One lamp's new state: a panel member (`panel` + `member`) or a device (`device`).

    `resumed` is true for a change learned from a resume snapshot after a reconnect (the
    member changed while the connection was down: this is its newest state)."""

    panel: str | None
    member: str | None
    device: str | None
    lamp: str
    calls: tuple[CallInfo, ...]
    seq: int
    presence: PresenceInfo | None = None
    logged_in: bool | str | None = None
    resumed: bool = False

    @property
    def key(self) -> Topic:
        return ("panel", f"{self.panel}/{self.member}") if self.panel else ("device",
                                                                          self.device or "")


ChangeCallback = Callable[[LampChange], Union[None, Awaitable[None]]]
MessageCallback = Callable[[BaseModel], Union[None, Awaitable[None]]]


class _ChangeQueue:
    """Pending changes for one iterator, newest state per lamp (like the gateway's outbox):
    a consumer that falls behind gets the latest state of each lamp, not a backlog."""

    def __init__(self) -> None:
        self.pending: OrderedDict[Topic, LampChange] = OrderedDict()
        self.wake = asyncio.Event()

    def put(self, change: LampChange) -> None:
        self.pending.pop(change.key, None)
        self.pending[change.key] = change
        if len(self.pending) > CHANGES_PENDING_LIMIT:
            self.pending.popitem(last=False)
        self.wake.set()


class GatewayClient:
    """One logged-in session to a gateway, kept alive across reconnects.

    `password` may be a string or a callable returning one (read when a password login is
    needed: the first one, or when the session token was refused). `ssl` is an
    :class:`ssl.SSLContext` for `wss://` URLs (default: the system's trust store).
    """

    def __init__(
        self,
        url: str,
        client: str,
        password: str | Callable[[], str] | None = None,
        *,
        token: str | None = None,
        computer: str | None = None,
        batch: bool = False,
        ssl: ssl_module.SSLContext | None = None,
        on_change: ChangeCallback | None = None,
        on_message: MessageCallback | None = None,
        request_timeout: float = 10.0,
        origin: str | None = None,
    ) -> None:
        self.url = url
        self.client = client
        self._password = password
        self.token = token
        self.computer = computer
        self.batch = batch
        self._ssl = ssl
        self._origin = origin
        self.on_change = on_change
        self.on_message = on_message
        self.request_timeout = request_timeout
        self.welcome: Welcome | None = None
        # Subscriptions to restore after a reconnect, and the newest seq seen on each.
        self.subscriptions: dict[Topic, int | None] = {}
        self.reconnects = 0
        self._ws: Any = None
        self._ids = 0
        self._pending: dict[int, asyncio.Future] = {}
        self._ops: dict[str, asyncio.Future] = {}
        self._queues: set[_ChangeQueue] = set()
        self._connected = asyncio.Event()
        self._closing = False
        self._runner: asyncio.Task | None = None
        self._first: asyncio.Future | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> GatewayClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> Welcome:
        """Connect and log in, retrying with backoff while the gateway is unreachable.
        Raises :class:`GatewayError` when the login is refused (wrong password...)."""
        if self._runner is None:
            self._first = asyncio.get_running_loop().create_future()
            self._runner = asyncio.create_task(self._run(), name=f"blf-client-{self.client}")
        assert self._first is not None
        return await asyncio.shield(self._first)

    async def close(self) -> None:
        """Close the session for good (no reconnect)."""
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        for q in self._queues:
            q.wake.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                await self._session()
                attempt = 0  # it was up: start the backoff afresh
            except GatewayError as exc:
                if self._first is not None and not self._first.done():
                    self._first.set_exception(exc)
                    return
                if exc.code != "rate_limited" and exc.code != "unavailable":
                    log.error("gateway refused the login (%s): giving up", exc)
                    return
            except (OSError, ConnectionClosed, InvalidHandshake, asyncio.TimeoutError,
                    _Lost) as exc:
                log.info("gateway connection lost or refused: %s", exc)
            if self._closing:
                return
            delay = backoff_delay(attempt)
            attempt += 1
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        """One connection: open, log in, resume subscriptions, read until it closes."""
        kwargs: dict[str, Any] = {"compression": None, "open_timeout": self.request_timeout}
        if self.url.startswith("wss:"):
            kwargs["ssl"] = self._ssl or ssl_module.create_default_context()
        if self._origin is not None:
            kwargs["origin"] = self._origin
        ws = await websockets.connect(self.url, **kwargs)
        self._ws = ws
        reader = asyncio.create_task(self._read(ws))
        try:
            welcome = await self._login()
            self.welcome = welcome
            for topic, since in list(self.subscriptions.items()):
                await self._subscribe(topic, since)
            self._connected.set()
            if self._first is not None and not self._first.done():
                self._first.set_result(welcome)
            else:
                self.reconnects += 1
                log.info("reconnected to the gateway as %s", self.client)
            await reader
        finally:
            self._connected.clear()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(_Lost("connection closed"))
            self._pending.clear()
            with contextlib.suppress(Exception):
                await ws.close()

    async def _login(self) -> Welcome:
        base: dict[str, Any] = {"type": "login", "client": self.client}
        if self.computer:
            base["computer"] = self.computer
        if self.batch:
            base["batch"] = True
        if self.token is not None:
            try:
                reply = await self._request({**base, "token": self.token})
                return self._took_welcome(reply)
            except GatewayError as exc:
                if exc.code != "auth_failed" or self._password is None:
                    raise
                log.info("session token refused: logging in with the password")
                self.token = None
        password = self._password() if callable(self._password) else self._password
        if password is None:
            raise GatewayError("auth_failed", "no password and no valid token")
        reply = await self._request({**base, "password": password})
        return self._took_welcome(reply)

    def _took_welcome(self, reply: BaseModel) -> Welcome:
        assert isinstance(reply, Welcome)
        self.token = reply.token
        if reply.password is not None:
            # A password transferred at this login (--at-next-login): keep it for later.
            self._password = reply.password
        return reply

    # -- reading --------------------------------------------------------------------------

    async def _read(self, ws: Any) -> None:
        async for frame in ws:
            if isinstance(frame, bytes):
                continue
            try:
                raw = json.loads(frame)
                msg = parse_server_message(raw)
            except (ValueError, ValidationError) as exc:
                log.warning("frame not understood (%s): %.200s", exc, frame)
                continue
            await self._dispatch(raw, msg)

    async def _dispatch(self, raw: dict, msg: BaseModel) -> None:
        if isinstance(msg, (PanelLamp, DeviceLamp)):
            await self._lamp(msg)
        elif isinstance(msg, Lamps):
            for item in msg.changes:
                await self._lamp(item)
        elif isinstance(msg, (Action, PickupResult)):
            fut = self._ops.get(msg.op)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        req_id = raw.get("id")
        if isinstance(req_id, int) and req_id in self._pending:
            fut = self._pending.pop(req_id)
            if not fut.done():
                fut.set_result(msg)
        if self.on_message is not None:
            await _call(self.on_message, msg)

    async def _lamp(self, msg: PanelLamp | DeviceLamp) -> None:
        if isinstance(msg, PanelLamp):
            topic: Topic = ("panel", msg.panel)
            change = LampChange(msg.panel, msg.member, None, msg.lamp, tuple(msg.calls),
                                msg.seq, msg.presence, msg.logged_in)
        else:
            topic = ("device", msg.device)
            change = LampChange(None, None, msg.device, msg.lamp, tuple(msg.calls), msg.seq)
        self._saw(topic, msg.seq)
        await self._emit(change)

    def _saw(self, topic: Topic, seq: int) -> None:
        if topic in self.subscriptions:
            last = self.subscriptions[topic]
            self.subscriptions[topic] = seq if last is None else max(last, seq)

    async def _emit(self, change: LampChange) -> None:
        for q in self._queues:
            q.put(change)
        if self.on_change is not None:
            await _call(self.on_change, change)

    # -- requests -------------------------------------------------------------------------

    async def _request(self, msg: dict) -> BaseModel:
        ws = self._ws
        if ws is None:
            raise _Lost("not connected")
        self._ids += 1
        req_id = self._ids
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        try:
            await ws.send(json.dumps({**msg, "id": req_id}))
            reply = await asyncio.wait_for(fut, self.request_timeout)
        except ConnectionClosed as exc:
            raise _Lost(str(exc)) from None
        finally:
            self._pending.pop(req_id, None)
        if isinstance(reply, Error):
            raise GatewayError(reply.code, reply.message)
        return reply

    async def request(self, msg: dict) -> BaseModel:
        """Send any request (a dict with `type`) once connected; return the typed reply.
        Raises GatewayError for an `error` reply, ConnectionError if the connection drops
        before the reply."""
        await self._connected.wait()
        try:
            return await self._request(msg)
        except _Lost as exc:
            raise ConnectionError(f"connection lost before the reply: {exc}") from None

    async def _subscribe(self, topic: Topic, since: int | None) -> Snapshot:
        msg: dict[str, Any] = {"type": "subscribe", topic[0]: topic[1]}
        if since is not None:
            msg["since"] = since
        snap = await self._request(msg)
        assert isinstance(snap, (PanelSnapshot, DeviceSnapshot))
        self.subscriptions[topic] = snap.seq if since is None else max(since, snap.seq)
        if since is not None:
            # A resume: what changed while we were away, each member's newest state.
            if isinstance(snap, PanelSnapshot):
                for mem in snap.members:
                    await self._emit(LampChange(snap.panel, mem.client, None, mem.lamp,
                                                tuple(mem.calls), snap.seq, mem.presence,
                                                mem.logged_in, resumed=True))
            else:
                await self._emit(LampChange(None, None, snap.device, snap.lamp,
                                            tuple(snap.calls), snap.seq, resumed=True))
        return snap

    async def subscribe(self, *, panel: str | None = None,
                        device: str | None = None) -> Snapshot:
        """Watch a panel or a device; returns its snapshot. Kept across reconnects."""
        if (panel is None) == (device is None):
            raise ValueError("give exactly one of panel= or device=")
        topic: Topic = ("panel", panel) if panel is not None else ("device", device)  # type: ignore[assignment]
        await self._connected.wait()
        snap = await self._subscribe(topic, None)
        return snap

    async def unsubscribe(self, *, panel: str | None = None, device: str | None = None) -> None:
        topic: Topic = ("panel", panel) if panel is not None else ("device", device)  # type: ignore[assignment]
        self.subscriptions.pop(topic, None)
        await self.request({"type": "unsubscribe", topic[0]: topic[1]})

    async def select_device(self, device: str) -> None:
        await self.request({"type": "select_device", "device": device})

    async def softphone(self, call: str, state: str, direction: str, **extra: Any) -> None:
        """Report a call of this client's own softphone (`remote`, `remote_name`, `link`)."""
        await self.request({"type": "softphone", "call": call, "state": state,
                            "direction": direction, **extra})

    async def presence(self, status: str, info: str | None = None,
                       locked: bool | None = None) -> None:
        msg: dict[str, Any] = {"type": "presence", "status": status}
        if info is not None:
            msg["info"] = info
        if locked is not None:
            msg["locked"] = locked
        await self.request(msg)

    async def journal(self, scope: str = "offline", since: float | None = None) -> JournalReply:
        msg: dict[str, Any] = {"type": "journal", "scope": scope}
        if since is not None:
            msg["since"] = since
        reply = await self.request(msg)
        assert isinstance(reply, JournalReply)
        return reply

    async def journal_ack(self, upto: str) -> None:
        await self.request({"type": "journal_ack", "upto": upto})

    async def pickup(self, *, panel: str | None = None, member: str | None = None,
                     device: str | None = None, op: str | None = None,
                     timeout: float = 30.0) -> Action | PickupResult:
        """Take over a ringing call; returns what the gateway decided: an :class:`Action`
        for this client's phone, or the PBX's :class:`PickupResult`.

        `op` (made here when not given) makes the request idempotent: if the connection drops
        before the answer, the same request is sent again after the reconnect and the gateway
        answers it like the first, without picking up twice."""
        op = op or secrets.token_hex(8)
        msg: dict[str, Any] = {"type": "pickup", "op": op}
        if device is not None:
            msg["device"] = device
        else:
            msg.update(panel=panel, member=member)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._ops[op] = fut
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self._connected.wait()
                    try:
                        await self._request(msg)  # ok (or GatewayError)
                        return await fut
                    except _Lost:
                        continue  # reconnecting: ask again with the same op
        finally:
            self._ops.pop(op, None)

    # -- lamp changes ---------------------------------------------------------------------

    def changes(self) -> AsyncIterator[LampChange]:
        """Lamp changes of every subscription, in order, from the moment of this call until
        :meth:`close`. A consumer that falls behind gets the newest state of each lamp
        (never an older one after a newer one)."""
        return _Changes(self)


class _Changes:
    """The iterator of :meth:`GatewayClient.changes`: registered when made, so nothing
    between making it and the first ``async for`` step is missed."""

    def __init__(self, owner: GatewayClient) -> None:
        self._owner = owner
        self._q = _ChangeQueue()
        owner._queues.add(self._q)

    def __aiter__(self) -> _Changes:
        return self

    async def __anext__(self) -> LampChange:
        q = self._q
        while not q.pending:
            if self._owner._closing:
                self._owner._queues.discard(q)
                raise StopAsyncIteration
            q.wake.clear()
            await q.wake.wait()
        return q.pending.popitem(last=False)[1]

    async def aclose(self) -> None:
        self._owner._queues.discard(self._q)


async def _call(fn: Callable[..., Any], arg: Any) -> None:
    try:
        result = fn(arg)
        if inspect.isawaitable(result):
            await result
    except Exception:  # a user callback's bug must not end the session
        log.exception("callback %r failed", fn)
