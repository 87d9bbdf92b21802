"""Fan-out: engine deltas -> one rendered frame per audience -> per-client outboxes.

Rights are applied here, once per audience (topic + rights), never per socket. Each client
has an :class:`Outbox` that keeps, for every lamp, only the newest frame not yet written:
a client that reads slowly gets the latest state of each lamp, not a backlog, and a client
that falls too far behind is cut off; either way the others never wait for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN

from ..config import Config
from ..jsontext import dumps  # the text of every frame (re-exported: one encoder)
from ..panels.engine import Delta, DeviceView, MemberView
from ..panels.rights import Rights, render_device, render_member

__all__ = ["Outbox", "Hub", "Topic", "Subscriber", "BATCH_LIMIT", "WRITE_HIGH_WATER", "broadcast",
           "dumps"]

log = logging.getLogger("gateway.hub")

Topic = tuple[str, str]  # ("panel", name) or ("device", id)

BATCH_LIMIT = 500  # lamp changes in one `lamps` frame
# Above this many bytes waiting in a socket's buffer, frames wait in the client's outbox,
# where they coalesce (newest state per lamp) instead of piling up.
WRITE_HIGH_WATER = 64 * 1024


class Outbox:
    """Frames waiting to be written to one client, coalesced by key.

    A keyed frame (a lamp) replaces the pending frame with the same key and moves to the
    end, so frames leave in seq order and a client never sees an older state after a newer
    one. Unkeyed frames (replies) are kept in order. `overflowed` turns true when more than
    `limit` frames are pending: the connection is then closed as too slow.
    """

    __slots__ = ("pending", "limit", "on_first", "overflowed", "_n")

    def __init__(self, limit: int, on_first: Any = None) -> None:
        self.pending: dict[Any, str] = {}
        self.limit = limit
        # Called when the outbox stops being empty: its owner starts a writer then (an idle
        # client has no writer task at all, which keeps a connection small).
        self.on_first = on_first
        self.overflowed = False
        self._n = 0

    def put(self, frame: str, key: Any = None) -> None:
        was_empty = not self.pending
        if key is None:
            self._n += 1
            key = self._n
        else:
            self.pending.pop(key, None)
        self.pending[key] = frame
        if len(self.pending) > self.limit:
            self.overflowed = True
        if was_empty and self.on_first is not None:
            self.on_first()

    def take(self) -> list[str]:
        frames = list(self.pending.values())
        self.pending.clear()
        return frames

    def take_batched(self, limit: int = BATCH_LIMIT) -> list[str]:
        """Like take(), but runs of lamp frames become `lamps` frames of up to `limit`
        changes each (for clients that asked for it at login): a client that is behind
        catches up in a few frames. Each lamp frame is already a JSON object, so a batch is
        joined as text, not re-encoded."""
        out: list[str] = []
        run: list[str] = []
        for key, frame in self.pending.items():
            if isinstance(key, tuple):  # a lamp
                run.append(frame)
                if len(run) == limit:
                    out.append(_batch(run))
                    run = []
                continue
            if run:
                out.append(_batch(run))
                run = []
            out.append(frame)
        if run:
            out.append(_batch(run))
        self.pending.clear()
        return out


def _batch(frames: list[str]) -> str:
    if len(frames) == 1:
        return frames[0]
    return '{"type":"lamps","changes":[' + ",".join(frames) + "]}"


def broadcast(connections: Iterable[Any], texts: str | Sequence[str]) -> int:
    """Write text messages, in order, to many open WebSocket connections; returns how many
    connections got them.

    Like ``websockets.broadcast``, but each frame is built once and all of them go to a
    connection in one ``transport.write``: a server's frames are not masked and the gateway
    negotiates no extension, so the bytes are the same for every connection.
    (``websockets.broadcast`` builds, serializes and queues a frame per connection and per
    message: a third of the fan-out's CPU at 1,000 clients, measured in docs/performance.md;
    and one write per message is one system call per message.) As there, a connection that
    is not open or is in the middle of a fragmented message is skipped, and one whose socket
    fails to take the write is skipped too (its own close handling takes it down); a
    connection with an extension negotiated, where the bytes would differ, is sent to
    through the library's own ``send_text``.
    """
    datas, frames = _encode((texts,) if isinstance(texts, str) else texts)
    sent = 0
    for conn in connections:
        sent += _write(conn, datas, frames)
    return sent


def _encode(texts: Sequence[str]) -> tuple[list[bytes], bytes]:
    """The messages' UTF-8 payloads, and their unmasked frames as one string of bytes."""
    datas = [t.encode() for t in texts]
    return datas, b"".join(Frame(Opcode.TEXT, d).serialize(mask=False) for d in datas)


def _write(conn: Any, datas: list[bytes], frames: bytes) -> bool:
    """One connection's part of :func:`broadcast`; True if it took the messages."""
    protocol = conn.protocol
    # A fragmented message being sent (the attribute websockets' own broadcast checks;
    # the gateway never fragments, so this only keeps a frame whole if that changes).
    if protocol.state is not OPEN or getattr(conn, "send_in_progress", None) is not None:
        return False
    try:
        if protocol.extensions:
            for data in datas:
                protocol.send_text(data)
            conn.send_data()
        else:
            conn.transport.write(frames)
    except Exception as exc:  # noqa: BLE001 - one bad socket must not stop the others
        log.debug("skipped lamp frames for a connection that failed to take them: %s", exc)
        return False
    return True


class Subscriber(Protocol):
    outbox: Outbox
    ws: Any
    batch: bool

    def writable(self) -> bool:
        """True when a frame may be written at once: nothing queued, socket not congested."""


class Hub:
    """Audiences and their subscribers; renders each delta once per audience."""

    def __init__(self, config: Config) -> None:
        # topic -> rights -> subscribers
        self._audiences: dict[Topic, dict[Rights, set[Subscriber]]] = {}
        self._subscriptions = 0  # (subscriber, topic, rights) registrations
        self._unbatched = 0  # of those, subscribers that take one frame per change
        self.deliveries = 0
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        self._panels_of: dict[str, list[str]] = {}
        for g in config.groups:
            for m in g.members:
                self._panels_of.setdefault(m, []).append(g.name)

    def add(self, sub: Subscriber, topic: Topic, rights: Rights) -> None:
        subs = self._audiences.setdefault(topic, {}).setdefault(rights, set())
        if sub not in subs:
            subs.add(sub)
            self._subscriptions += 1
            self._unbatched += not sub.batch

    def remove(self, sub: Subscriber, topic: Topic, rights: Rights) -> None:
        by_rights = self._audiences.get(topic)
        if not by_rights:
            return
        subs = by_rights.get(rights)
        if subs is not None:
            if sub in subs:
                subs.discard(sub)
                self._subscriptions -= 1
                self._unbatched -= not sub.batch
            if not subs:
                del by_rights[rights]
        if not by_rights:
            del self._audiences[topic]

    def audiences(self, topic: Topic) -> dict[Rights, set[Subscriber]]:
        return self._audiences.get(topic, {})

    def unbatched_count(self) -> int:
        """Subscriptions that take one frame per change (the ones a big chunk costs most).
        Counted as they come and go: the follower asks for every batch it reads."""
        return self._unbatched

    def subscriber_count(self) -> int:
        return self._subscriptions

    def deliver(self, deltas: Iterable[Delta]) -> None:
        """Render each delta once per audience, then hand every audience's frames to its
        subscribers: a client that asked for batches and keeps up gets all of them in one
        `lamps` frame (one socket write instead of one per change)."""
        frames: dict[tuple[Topic, Rights], list[tuple[str, Any]]] = {}
        for d in deltas:
            if d.kind == "member":
                view: MemberView = d.view  # type: ignore[assignment]
                for panel in self._panels_of.get(d.key, ()):
                    topic = ("panel", panel)
                    for rights in self._audiences.get(topic, ()):
                        msg = {"type": "lamp", "panel": panel, "member": d.key,
                               **render_member(view, rights), "seq": d.seq}
                        del msg["client"]
                        frames.setdefault((topic, rights), []).append(
                            (dumps(msg), ("p", panel, d.key)))
            else:
                dview: DeviceView = d.view  # type: ignore[assignment]
                topic = ("device", d.key)
                for rights in self._audiences.get(topic, ()):
                    msg = {"type": "lamp", **render_device(dview, rights), "seq": d.seq}
                    frames.setdefault((topic, rights), []).append((dumps(msg), ("d", d.key)))
        for (topic, rights), items in frames.items():
            subs = self._audiences.get(topic, {}).get(rights)
            if subs:
                self._send(subs, items)

    def _send(self, subs: set[Subscriber], items: list[tuple[str, Any]]) -> None:
        # The common case writes straight into the sockets, each frame encoded once and a
        # chunk's frames in one write per client (see broadcast), in the same pass that
        # looks at each client (a first pass that only sorted the clients put a loop over
        # all of them before the first write); a client with frames queued or a full write
        # buffer gets them through its outbox instead, where a newer frame for the same
        # lamp replaces it. The set is copied first: a write never changes it today (uvloop
        # and asyncio report a failed socket on a later turn), but nothing may depend on it.
        datas: list[bytes] | None = None
        frames = b""
        direct_batch = []
        for s in tuple(subs):
            # Inlined Session.writable and the common case of _write: this loop runs once
            # per subscriber per change (the rare cases go through _write itself).
            ws = s.ws
            transport = ws.transport
            if (not s.outbox.pending and transport is not None
                    and transport.get_write_buffer_size() < WRITE_HIGH_WATER):
                if s.batch:
                    direct_batch.append(ws)
                    continue
                if datas is None:
                    datas, frames = _encode([frame for frame, _ in items])
                protocol = ws.protocol
                if (protocol.state is OPEN and not protocol.extensions
                        and getattr(ws, "send_in_progress", None) is None):
                    try:
                        transport.write(frames)
                    except Exception as exc:  # noqa: BLE001 - see broadcast
                        log.debug("skipped lamp frames for a connection that failed to take "
                                  "them: %s", exc)
                else:
                    _write(ws, datas, frames)
            else:
                for frame, key in items:
                    s.outbox.put(frame, key)
        if direct_batch:
            for i in range(0, len(items), BATCH_LIMIT):
                broadcast(direct_batch, _batch([f for f, _ in items[i : i + BATCH_LIMIT]]))
        self.deliveries += len(subs) * len(items)
