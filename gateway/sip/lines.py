"""The SIP line source on the project's own SIP layer: :class:`~gateway.sip.watcher.WatchCore`
on the wire.

It shares the BLF server's :class:`~gateway.sip.proto.transport.SipAgent` (one SIP port per
gateway): NOTIFYs go to the watcher, everything else to the desk phones' notifier. What the
PBX says leaves as core reports through `on_reports`; a device whose state is no longer known
through `on_connection_lost(conn)` (``"sip:" + device``), on the asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..calls import CallReport, ServiceReport
from .proto.message import Request, Response
from .proto.subscription import make_response
from .proto.transaction import ServerTransaction
from .proto.transport import Peer, SipAgent
from .watcher import Lost, Out, WatchCore, WatchLine

__all__ = ["SipLineSource", "SipRegistration", "SipPublisher", "LineState", "peer_of_uri"]

log = logging.getLogger("gateway.sip")


@dataclass(frozen=True, slots=True)
class LineState:
    """One watched line as the source sees it (status pages and tests)."""

    uri: str
    device: str
    event: str
    up: bool
    attempts: int


def peer_of_uri(uri: str) -> Peer:
    """Where a SIP URI's requests go: its host and port (5060/5061), its transport
    parameter (UDP by default, TLS for sips:)."""
    text = uri.strip().strip("<>")
    scheme, _, rest = text.partition(":")
    rest = rest.split("@", 1)[-1]
    hostport, _, params = rest.partition(";")
    transport = "TLS" if scheme.lower() == "sips" else "UDP"
    for p in params.split(";"):
        k, _, v = p.partition("=")
        if k.strip().lower() == "transport" and v.strip().lower() in ("udp", "tcp", "tls"):
            transport = v.strip().upper()
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port = int(tail[1:]) if tail.startswith(":") else 0
    elif ":" in hostport:
        host, p = hostport.rsplit(":", 1)
        port = int(p)
    else:
        host, port = hostport, 0
    return Peer(transport, host, port or (5061 if transport == "TLS" else 5060))


class SipLineSource:
    """Watches SIP lines (see the module docstring)."""

    name = "sip"

    def __init__(self, agent: SipAgent, lines: Mapping[str, WatchLine],
                 on_reports: Callable[[Sequence[CallReport | ServiceReport]], None],
                 on_connection_lost: Callable[[str | None], None], *,
                 identity: str = "blf-gateway", credentials: tuple[str, str] | None = None,
                 outbound: str | None = None, **options: float) -> None:
        self.agent = agent
        self.on_reports, self.on_lost = on_reports, on_connection_lost
        self._lines = dict(lines)
        proxy = peer_of_uri(outbound) if outbound else None
        host = next(iter(agent.addresses.values()))[0] if agent.addresses else "127.0.0.1"
        self.core = WatchCore(agent.local, (lambda uri: proxy) if proxy else peer_of_uri,
                              local_uri=f"sip:{identity}@{host}", credentials=credentials,
                              call_ids_from=int(time.time() * 1000),
                              **options)  # type: ignore[arg-type]
        self._running = False

    async def start(self) -> None:
        self._running = True
        self.agent.handlers["NOTIFY"] = self._on_notify
        self.agent.timers.append((self.core.next_deadline, self._tick))
        self._apply(self.core.update_lines(self._lines, self.agent.loop.time()))

    async def update_lines(self, lines: Mapping[str, WatchLine]) -> None:
        self._lines = dict(lines)
        if self._running:
            self._apply(self.core.update_lines(self._lines, self.agent.loop.time()))

    async def stop(self) -> None:
        """Unsubscribe every line (not waiting for answers); the devices become unknown."""
        if not self._running:
            return
        outs, _ = self.core.stop()
        for out in outs:
            self.agent.request(out.request, out.dest)
        self._running = False
        self.agent.handlers.pop("NOTIFY", None)
        self.agent.timers = [t for t in self.agent.timers if t[1] != self._tick]
        self.on_lost(None)

    def lines(self) -> list[LineState]:
        return [LineState(ln.line.uri, ln.line.device, ln.line.event, ln.up, ln.attempts)
                for ln in self.core.lines.values()]

    @property
    def healthy(self) -> bool:
        """True when there is nothing to watch or at least one line delivers state."""
        return not self.core.lines or any(ln.up for ln in self.core.lines.values())


    # ------------------------------------------------------------------ wire

    def _apply(self, result: tuple[list[Out], list]) -> None:
        if not self._running:
            return
        outs, events = result
        for out in outs:
            self.agent.request(out.request, out.dest,
                               lambda resp, key=out.key: self._answered(key, resp))
        for ev in events:
            if isinstance(ev, Lost):
                self.on_lost(ev.conn)
            elif ev:
                self.on_reports(list(ev))
        for line in self.core.log:
            log.info("SIP lines: %s", line)
        self.core.log.clear()
        self.agent.reschedule()

    def suspend(self, why: str) -> None:
        """The registration carrying the subscriptions is lost: every line unknown."""
        self._apply(([], self.core.suspend(why)))

    def resume(self) -> None:
        self._apply((self.core.resume(self.agent.loop.time()), []))

    def _answered(self, key: str, resp: Response | None) -> None:
        self._apply(self.core.on_response(key, resp, self.agent.loop.time()))

    def _on_notify(self, req: Request, peer: Peer, tx: ServerTransaction, now: float) -> None:
        resp, events = self.core.on_notify(req, now)
        self.agent.respond(tx, resp if resp is not None else make_response(req, 481))
        self._apply(([], events))

    def _tick(self, now: float) -> None:
        self._apply(self.core.tick(now))


class SipRegistration:
    """:class:`~gateway.sip.proto.registration.Registration` on the wire (the shared agent);
    tells `lines` when the binding is lost and when it stands again."""

    def __init__(self, agent: SipAgent, registrar: str, aor: str, *,
                 credentials: tuple[str, str] | None = None, expires: int = 600,
                 lines: SipLineSource | None = None) -> None:
        from .proto.registration import Registration

        self.agent, self.lines = agent, lines
        dest = peer_of_uri(registrar)
        self.dest = dest
        self.reg = Registration(registrar, aor, agent.local(dest), credentials=credentials,
                                expires=expires)
        self._was_up = False
        self._running = False

    @property
    def up(self) -> bool:
        return self.reg.up

    async def start(self) -> None:
        self._running = True
        if self.lines is not None and not self.lines.core.suspended:
            self.lines.suspend("not registered yet")
        self.agent.timers.append((self.reg.next_deadline, self._tick))
        self._tick(self.agent.loop.time())

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        self.agent.timers = [t for t in self.agent.timers if t[1] != self._tick]
        if self.reg.up:
            # Take the binding back, so that the PBX stops sending here at once; a registrar
            # that does not answer within 2 s does not hold up the shutdown.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self.agent.request_async(self.reg.request(expires=0), self.dest), 2.0)

    def _tick(self, now: float) -> None:
        req = self.reg.tick(now)
        if req is not None:
            self._send(req)
        self._changed()

    def _send(self, req: Request) -> None:
        self.agent.request(req, self.dest, self._answered)
        self.agent.reschedule()

    def _answered(self, resp: Response | None) -> None:
        if not self._running:
            return
        nxt = self.reg.on_response(resp, self.agent.loop.time())
        if nxt is not None:
            self._send(nxt)
        self._changed()
        self.agent.reschedule()

    def _changed(self) -> None:
        if self.reg.up == self._was_up:
            return
        self._was_up = self.reg.up
        log.log(logging.INFO if self.reg.up else logging.WARNING, "SIP registration at %s: %s",
                self.reg.registrar, self.reg.reason)
        if self.lines is not None:
            if self.reg.up:
                self.lines.resume()
            else:
                self.lines.suspend(f"registration lost: {self.reg.reason}")


class SipPublisher:
    """Every target's lamp PUBLISHed to a presence server (Kamailio) on the shared agent, so
    that thousands of phones can subscribe there instead of here.

    Each device and client is published as ``sip:TARGET@DOMAIN`` in ``dialog`` and/or
    ``presence`` bodies rendered as for a watcher with the lamp and calls but **no numbers**
    (the server shows them to anyone who subscribes: rights cannot be applied there).
    `render(target, event)` gives the body (bytes) or None for an unknown target.
    """

    def __init__(self, agent: SipAgent, server: str, domain: str, targets: Callable[[], list],
                 render: Callable[[str, str], bytes | None], *, events: Sequence[str],
                 credentials: tuple[str, str] | None = None, expires: int = 120) -> None:
        from .proto.publication import Publication

        self.agent, self.domain = agent, domain
        self.dest = peer_of_uri(server)
        self.targets, self.render = targets, render
        self.events = tuple(events)
        self._new = lambda target, event: Publication(
            f"sip:{target}@{domain}", agent.local(self.dest), event,
            {"dialog": "application/dialog-info+xml",
             "presence": "application/pidf+xml"}[event],
            expires=expires, credentials=credentials, dest=self.dest)
        self.pubs: dict[tuple[str, str], object] = {}
        self._running = False

    @property
    def healthy(self) -> bool:
        return all(getattr(p, "failed", None) is None for p in self.pubs.values())

    async def start(self) -> None:
        self._running = True
        self.agent.timers.append((self._deadline, self._tick))
        self.changed(self.targets())

    async def stop(self) -> None:
        self._running = False
        self.agent.timers = [t for t in self.agent.timers if t[1] != self._tick]

    def changed(self, targets) -> None:  # noqa: ANN001
        if not self._running:
            return
        now = self.agent.loop.time()
        for target in targets:
            for event in self.events:
                body = self.render(target, event)
                if body is None:
                    continue
                key = (target, event)
                pub = self.pubs.get(key)
                if pub is None:
                    pub = self.pubs[key] = self._new(target, event)
                self._send(pub, pub.set_state(body, now))  # type: ignore[attr-defined]
        self.agent.reschedule()

    def _send(self, pub, req: Request | None) -> None:  # noqa: ANN001
        if req is None:
            return

        def answered(resp: Response | None, pub=pub) -> None:  # noqa: ANN001
            was = pub.failed
            self._send(pub, pub.on_response(resp, self.agent.loop.time()))
            if pub.failed and pub.failed != was:
                log.warning("SIP PUBLISH of %s (%s) to %s:%d: %s", pub.target, pub.event,
                            self.dest.host, self.dest.port, pub.failed)
            self.agent.reschedule()

        self.agent.request(req, self.dest, answered)

    def _deadline(self) -> float | None:
        times = [t for p in self.pubs.values() if (t := p.next_deadline()) is not None]
        return min(times) if times else None

    def _tick(self, now: float) -> None:
        for pub in self.pubs.values():
            self._send(pub, pub.tick(now))
