"""One WebSocket session: login, requests, subscriptions, and its writer.

A session reads frames, answers each request (or an error that changes nothing) and holds
its subscriptions in the hub. Its :class:`~gateway.server.hub.Outbox` is drained by its own
writer task, so a slow socket only ever delays itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

from ..calls import CallReport, Phase
from ..clients import Clients
from ..config import Config
from ..journal import Journal as CallJournal
from ..model import Direction
from ..panels.engine import Engine
from ..panels.rights import (
    Rights,
    device_rights,
    panel_rights,
    render_device,
    render_member,
    rights_json,
    visible_panels,
    watchable_devices,
)
from ..pickup import Pickups
from ..ratelimit import KeyedBuckets, TokenBucket
from ..store import Store
from .guard import client_address, parse_networks
from .hub import WRITE_HIGH_WATER, Hub, Outbox, Topic, dumps
from .admin import Admin
from .login import Auth
from .wire import (
    AdminOverview,
    AdminReload,
    Explain,
    Journal,
    JournalAck,
    Login,
    PresenceSet,
    Pickup,
    SelectDevice,
    Softphone,
    Subscribe,
    Unsubscribe,
    WireError,
    error,
    parse_request,
)

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

__all__ = ["Session", "SessionFactory", "TokenBucket"]

log = logging.getLogger("gateway.session")


class SessionFactory:
    """What every session works with, given once by the wiring; :meth:`serve` is the
    WebSocket server's connection handler.

    `config()` and `engine()` give the current configuration and engine (a reload replaces
    them); `metrics` counts connections and rate-limited messages.
    """

    def __init__(self, *, config: Callable[[], Config], engine: Callable[[], Engine],
                 hub: Hub, clients: Clients, auth: Auth, pickups: Pickups,
                 journal: CallJournal, store: Store, metrics: Counter[str],
                 admin: Admin | None = None) -> None:
        self.config = config
        self.admin = admin  # the admin requests (None: not offered by this gateway)
        self.engine = engine
        self.hub = hub
        self.clients = clients
        self.auth = auth
        self.pickups = pickups
        self.journal = journal
        self.store = store
        self.metrics = metrics
        self._proxies: tuple[tuple[str, ...], tuple] = ((), ())
        self._per_address: dict[str, int] = {}  # open connections per remote address
        cfg = config().server
        # Shared by every connection of one client (see ServerCfg).
        self.client_messages = KeyedBuckets(cfg.client_messages_per_second,
                                            cfg.client_message_burst)
        self.client_changes = KeyedBuckets(cfg.client_changes_per_second,
                                           cfg.client_change_burst)

    def trusted_proxies(self) -> tuple:
        """`[server] trusted_proxies` as networks (parsed once per configuration)."""
        raw = tuple(self.config().server.trusted_proxies)
        if raw != self._proxies[0]:
            self._proxies = (raw, parse_networks(raw))
        return self._proxies[1]

    def __call__(self, ws: ServerConnection) -> Session:
        return Session(self, ws)

    async def serve(self, ws: ServerConnection) -> None:
        self.metrics["connections"] += 1
        session = self(ws)
        address = session.address  # the client's address, as the session resolved it
        held = self._per_address.get(address, 0)
        limit = self.config().server.max_connections_per_address
        if held >= limit:
            self.metrics["connections_refused"] += 1
            log.warning("connection from %s refused: it holds %d connections already "
                        "(server.max_connections_per_address)", address, held,
                        extra={"source": address})
            await ws.close(1013, "too many connections from your address: try again later")
            return
        self._per_address[address] = held + 1
        try:
            await session.run()
        finally:
            left = self._per_address.pop(address, 1) - 1
            if left > 0:
                self._per_address[address] = left

    def revalidate(self, reshaped: set[str]) -> None:
        """After a configuration reload: every logged-in session re-checks its subscriptions
        (`reshaped`: panels whose members changed). Changed per-client limits apply at
        once."""
        cfg = self.config().server
        self.client_messages.configure(cfg.client_messages_per_second, cfg.client_message_burst)
        self.client_changes.configure(cfg.client_changes_per_second, cfg.client_change_burst)
        for subs in list(self.clients.sessions.values()):
            for session in list(subs):
                if isinstance(session, Session):
                    session.revalidate(reshaped)


# A connection that sends this many times its rate (beyond its burst) within one second,
# all refused, is closed: answering each with an error would cost more than it is worth.
FLOOD_FACTOR = 10

# Requests that change what every watcher of the client sees: their own budget per client.
_CHANGES = (Softphone, PresenceSet, SelectDevice)


def _release_handshake(ws: ServerConnection) -> None:
    """websockets keeps the opening handshake's request and response, headers and all
    (about 2 KiB), for the connection's life (the request also in its parser's frame). The
    session has read what it needs (the client's address), so an idle connection keeps
    only the request's path: at 20,000 connections that is about 40 MB. The request object
    stays (websockets takes a None request for "handshake not read yet"); its headers are
    emptied in place."""
    request = getattr(ws, "request", None)
    if request is not None:
        request.headers = Headers()
    ws.response = None


class Session:
    """One client connection; see the module docstring."""

    # Slots: thousands of idle sessions each pay for their attributes only, not a dict.
    __slots__ = ("svc", "ws", "outbox", "_writer", "client", "computer", "batch", "subs",
                 "bucket", "address", "closed", "password_version", "_closing",
                 "_dropped_since", "_dropped")

    def __init__(self, svc: SessionFactory, ws: ServerConnection) -> None:
        self.svc = svc
        self.ws = ws
        cfg = svc.config().server
        self.outbox = Outbox(cfg.queue_limit, self._start_writer)
        self._writer: asyncio.Task | None = None
        self.client: str | None = None
        self.computer: str | None = None
        self.batch = False  # the client accepts `lamps` frames (several changes in one)
        self.subs: dict[Topic, Rights] = {}
        self.bucket = TokenBucket(cfg.messages_per_second, cfg.message_burst, time.monotonic())
        peer = ws.remote_address[0] if ws.remote_address else "?"
        request = getattr(ws, "request", None)
        forwarded = request.headers.get_all("X-Forwarded-For") if request is not None else []
        self.address = client_address(peer, forwarded, svc.trusted_proxies())
        _release_handshake(ws)
        self.closed = False
        self.password_version: str | None = None  # of the password it logged in with
        self._closing: asyncio.Task | None = None  # the close after a timeout or a flood
        self._dropped_since, self._dropped = 0.0, 0  # messages over the limit, this second

    # -- plumbing -------------------------------------------------------------------------

    def send(self, msg: dict) -> None:
        self.outbox.put(dumps(msg))

    def writable(self) -> bool:
        if self.outbox.pending:
            return False
        transport = self.ws.transport
        return transport is not None and transport.get_write_buffer_size() < WRITE_HIGH_WATER

    def _start_writer(self) -> None:
        if not self.closed and (self._writer is None or self._writer.done()):
            self._writer = asyncio.create_task(self.writer())

    async def writer(self) -> None:
        """Drain the outbox, then end: a client that keeps up needs no task of its own."""
        try:
            while self.outbox.pending:
                if self.outbox.overflowed:
                    log.warning("client %s at %s is too slow (%d frames pending): closing",
                                self.client, self.address, len(self.outbox.pending),
                                extra={"source": self.address})
                    self.outbox.pending.clear()
                    await self.ws.close(1008, "too slow: reconnect and resume with since")
                    return
                frames = self.outbox.take_batched() if self.batch else self.outbox.take()
                for frame in frames:
                    await self.ws.send(frame)
        except ConnectionClosed:
            self.outbox.pending.clear()
        finally:
            # Let the finished task go: an idle session holds no task, running or done.
            if self._writer is asyncio.current_task():
                self._writer = None

    async def run(self) -> None:
        deadline = asyncio.get_running_loop().call_later(
            self.svc.config().server.login_timeout_seconds, self._login_timed_out)
        recv = self.ws.recv
        try:
            # recv() in a loop rather than `async for`: the async iterator is one more
            # object (a generator and its frame) per idle connection.
            while True:
                await self.handle(await recv())
        except ConnectionClosed:
            pass
        finally:
            deadline.cancel()
            self.closed = True
            if self._writer is not None:
                self._writer.cancel()
            for topic, rights in self.subs.items():
                self.svc.hub.remove(self, topic, rights)
            self.subs.clear()
            if self.client is not None:
                await self.svc.clients.session_ended(self)

    async def end(self, code: int, reason: str) -> None:
        """Close the connection with a WebSocket close code and reason."""
        await self.ws.close(code, reason)

    def _flood(self, now: float) -> None:
        """A message over the rate limit: an error for it; a connection that keeps sending
        far over its limit (FLOOD_FACTOR times its rate within one second, beyond its
        burst) is closed, so that its frames stop costing the gateway anything."""
        if now - self._dropped_since >= 1.0:
            self._dropped_since, self._dropped = now, 0
        self._dropped += 1
        cfg = self.svc.config().server
        if self._dropped > FLOOD_FACTOR * cfg.messages_per_second + cfg.message_burst:
            if self._closing is None:
                self.svc.metrics["flood_closed"] += 1
                log.warning("connection of %s from %s closed: %d messages over its rate "
                            "limit within a second", self.client or "(no login)",
                            self.address, self._dropped, extra={"source": self.address})
                self._closing = asyncio.create_task(
                    self.ws.close(1008, "flooding: far too many messages"))
            return
        self.send(error("rate_limited", "too many messages: slow down"))

    def _login_timed_out(self) -> None:
        """A connection that never logged in holds memory and a slot: close it."""
        if self.client is None and not self.closed:
            self.svc.metrics["login_timeouts"] += 1
            self._closing = asyncio.create_task(
                self.ws.close(1008, "no login in time: log in right after connecting"))

    async def handle(self, frame: str | bytes) -> None:
        now = time.monotonic()
        if not self.bucket.take(now) or (
                self.client is not None and not self.svc.client_messages.take(self.client, now)):
            self.svc.metrics["rate_limited"] += 1
            self._flood(now)
            return
        msg_id = None
        try:
            if len(frame) > self.svc.config().server.max_message_bytes:
                raise WireError("bad_request", "message too large (limit "
                                f"{self.svc.config().server.max_message_bytes} bytes)")
            req = parse_request(frame)
            msg_id = req.id
            if self.client is None and not isinstance(req, Login):
                raise WireError("unauthenticated", "log in first")
            if isinstance(req, _CHANGES) and not self.svc.client_changes.take(self.client, now):
                self.svc.metrics["rate_limited"] += 1
                raise WireError("rate_limited", "too many changes (softphone, presence, "
                                "device) from your client: slow down", req.id)
            handler = self._handlers[type(req)]
            await handler(self, req)
        except WireError as exc:
            self.send(error(exc.code, exc.message, exc.id if exc.id is not None else msg_id))
        except Exception:  # a bug must not end the session or touch the others
            log.exception("error handling a request from %s", self.address)
            self.send(error("unavailable", "internal error; the request changed nothing", msg_id))

    # -- requests -------------------------------------------------------------------------

    async def _login(self, req: Login) -> None:
        if self.client is not None:
            raise WireError("conflict", f"already logged in as {self.client}", req.id)
        welcome = await self.svc.auth.login(self, req)
        self.send(welcome)

    def _check_topic(self, req: Subscribe | Unsubscribe | Pickup) -> tuple[Topic, Rights]:
        cfg = self.svc.config()
        me = cfg.client_by_name.get(self.client or "")
        if me is None:
            raise WireError("forbidden", "your account is no longer configured", req.id)
        if req.panel is not None:
            group = cfg.group_by_name.get(req.panel)
            if group is None:
                raise WireError("not_found", f"no panel {req.panel!r}", req.id)
            if req.panel not in visible_panels(cfg, me.name):
                raise WireError("forbidden", f"panel {req.panel!r} is not yours to see", req.id)
            return ("panel", req.panel), panel_rights(group, me.name)
        assert req.device is not None
        if req.device not in cfg.device_by_id:
            raise WireError("not_found", f"no device {req.device!r}", req.id)
        rights = device_rights(me, req.device, self.temp_devices())
        if rights is None:
            raise WireError("forbidden", f"you have no right on device {req.device!r}", req.id)
        return ("device", req.device), rights

    def snapshot(self, topic: Topic, rights: Rights, since: int | None = None,
                 msg_id: Any = None) -> dict:
        """The reply to subscribe; with `since` only the members changed after it."""
        engine = self.svc.engine()
        kind, name = topic
        out: dict = {"type": "snapshot"}
        if msg_id is not None:
            out["id"] = msg_id
        if kind == "panel":
            changed = None if since is None else engine.panel_changes_since(name, since)
            members = engine.panel(name) if changed is None else changed
            out.update(panel=name, seq=engine.seq, rights=rights_json(rights))
            if changed is not None:
                out["since"] = since
            out["members"] = [render_member(v, rights) for v in members]
        else:
            view = engine.device_view(name)
            out.update(seq=engine.seq, rights=rights_json(rights), **render_device(view, rights))
        return out

    async def _subscribe(self, req: Subscribe) -> None:
        topic, rights = self._check_topic(req)
        if topic not in self.subs and len(self.subs) >= self.svc.config().server.max_subscriptions:
            raise WireError("forbidden", "subscription limit reached: unsubscribe first", req.id)
        old = self.subs.get(topic)
        if old is not None:
            self.svc.hub.remove(self, topic, old)
        # Snapshot and registration with no await in between: every later change is a delta.
        self.send(self.snapshot(topic, rights, req.since, req.id))
        self.svc.hub.add(self, topic, rights)
        self.subs[topic] = rights

    async def _unsubscribe(self, req: Unsubscribe) -> None:
        topic: Topic = ("panel", req.panel) if req.panel is not None else ("device", req.device)  # type: ignore[assignment]
        rights = self.subs.pop(topic, None)
        if rights is not None:
            self.svc.hub.remove(self, topic, rights)
        self.send({"type": "ok", "id": req.id})

    def temp_devices(self) -> tuple[str, ...]:
        if not self.client:
            return ()
        return self.svc.clients.current(self.client).temp_devices

    def my_devices(self) -> list[str]:
        me = self.svc.config().client_by_name[self.client]  # type: ignore[index]
        return self.svc.engine().devices_of(me, self.svc.clients.current(me.name))

    async def _select_device(self, req: SelectDevice) -> None:
        if req.device not in self.my_devices():
            raise WireError("forbidden", f"device {req.device!r} is not one of yours", req.id)
        await self.svc.clients.select_device(self.client, req.device)  # type: ignore[arg-type]
        self.send({"type": "ok", "id": req.id})

    async def _softphone(self, req: Softphone) -> None:
        report = CallReport(
            device=self.client,  # type: ignore[arg-type]
            call=req.call,
            phase=Phase(req.state),
            direction=Direction(req.direction),
            remote=req.remote,
            remote_name=req.remote_name,
            link=req.link,
        )
        await self.svc.clients.softphone(self.client, report)  # type: ignore[arg-type]
        self.send({"type": "ok", "id": req.id})

    async def _presence(self, req: PresenceSet) -> None:
        await self.svc.clients.presence(self.client, req.status, req.info,  # type: ignore[arg-type]
                                        req.locked)
        self.send({"type": "ok", "id": req.id})

    async def _pickup(self, req: Pickup) -> None:
        await self.svc.pickups.pickup(self, req)

    async def _journal(self, req: Journal) -> None:
        me = self.svc.config().client_by_name[self.client]  # type: ignore[index]
        if req.scope == "server" and "r" not in me.journal:
            raise WireError("forbidden", "you have no right to read the server journal", req.id)
        if req.scope == "server" and not self.svc.journal.may_read_server(me.name,
                                                                          time.monotonic()):
            raise WireError("rate_limited", "server journal: at most one read a second "
                            "(a few at once): try again in a moment", req.id)
        entries = await self.svc.journal.read(me.name, req.scope, req.since,
                                             self.temp_devices())
        self.send({"type": "journal", "id": req.id, "scope": req.scope, "entries": entries})

    async def _journal_ack(self, req: JournalAck) -> None:
        upto = str(req.upto)
        ms, dash, seq = upto.partition("-")
        if not (ms.isdigit() and (not dash or seq.isdigit())):
            raise WireError("bad_request", "journal_ack: upto must be an entry id", req.id)
        await self.svc.store.ack_offline(self.client, upto)  # type: ignore[arg-type]
        self.send({"type": "ok", "id": req.id})

    def _admin_service(self, req: AdminOverview | Explain | AdminReload) -> Admin:
        Admin.check(self.svc.config(), self.client, req.id)
        if self.svc.admin is None:
            raise WireError("unavailable", "the admin view is not available here", req.id)
        return self.svc.admin

    async def _admin_overview(self, req: AdminOverview) -> None:
        self.send(await self._admin_service(req).overview(req.id))

    async def _explain(self, req: Explain) -> None:
        admin = self._admin_service(req)
        self.send(await admin.explain(self.client, req.device, req.client, req.id))  # type: ignore[arg-type]

    async def _admin_reload(self, req: AdminReload) -> None:
        self.send(await self._admin_service(req).reload(req.id))

    _handlers = {
        AdminOverview: _admin_overview,
        Explain: _explain,
        AdminReload: _admin_reload,
        Login: _login,
        Subscribe: _subscribe,
        Unsubscribe: _unsubscribe,
        SelectDevice: _select_device,
        Softphone: _softphone,
        PresenceSet: _presence,
        Pickup: _pickup,
        Journal: _journal,
        JournalAck: _journal_ack,
    }

    # -- configuration changes ------------------------------------------------------------

    def revalidate(self, reshaped: set[str]) -> None:
        """After a config reload: re-check every subscription; send a fresh snapshot where
        the rights or the panel changed, drop (with an error) what is no longer allowed."""
        cfg = self.svc.config()
        me = cfg.client_by_name.get(self.client or "")
        for topic, old in list(self.subs.items()):
            kind, name = topic
            if me is None:
                new = None
            elif kind == "panel":
                allowed = name in visible_panels(cfg, me.name)
                new = panel_rights(cfg.group_by_name[name], me.name) if allowed else None
            else:
                new = (device_rights(me, name, self.temp_devices())
                       if name in cfg.device_by_id else None)
            if new is None:
                self.svc.hub.remove(self, topic, old)
                del self.subs[topic]
                self.send(error("forbidden", f"{kind} {name!r} is no longer yours to see"))
            elif new != old or (kind == "panel" and name in reshaped):
                self.svc.hub.remove(self, topic, old)
                self.send(self.snapshot(topic, new))
                self.svc.hub.add(self, topic, new)
                self.subs[topic] = new

    def welcome_lists(self) -> dict:
        cfg = self.svc.config()
        me = cfg.client_by_name[self.client]  # type: ignore[index]
        return {
            "panels": visible_panels(cfg, me.name),
            "monitors": [
                {"device": m.device, "clip": m.clip, "pickup": m.pickup} for m in me.monitor
            ],
            "devices": [
                {"id": d, "name": cfg.device_by_id[d].name, "number": cfg.device_by_id[d].number,
                 "temporary": d not in me.devices}
                for d in self.my_devices()
            ],
            "watchable": watchable_devices(me),
        }
