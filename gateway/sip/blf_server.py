"""The BLF server for desk phones: :class:`~gateway.sip.notifier.BlfNotifier` on the wire.

Listens on UDP, TCP and TLS (any of them) with the project's own SIP layer
(:mod:`gateway.sip.proto`, no pjsua2), answers ``Event: dialog`` and ``Event: presence``
SUBSCRIBEs and sends the NOTIFYs the notifier decides. Everything runs on the asyncio loop;
the notifier reads the gateway's state through a :class:`~gateway.sip.notifier.Directory`
(in-memory, synchronous).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

from ..auth import SIP_REALM
from .endpoint import split_hostport
from .notifier import BlfNotifier, Directory, Notify, Reply
from .proto.message import Request
from .proto.transaction import ServerTransaction
from .proto.transport import Peer, SipAgent

__all__ = ["BlfServer", "BlfSubscriber"]

log = logging.getLogger("gateway.sip")


@dataclass(frozen=True, slots=True)
class BlfSubscriber:
    """One desk phone subscription (for status pages and tests)."""

    client: str
    target: str
    package: str  # dialog | presence
    remote: str  # the subscriber's From URI
    call_id: str
    transport: str
    expires_in: float
    notifies: int


class BlfServer:
    """Serves gateway lamps to SIP desk phones (see the module docstring).

    `udp`, `tcp`, `tls`: ``host:port`` to listen on (None: not on that transport); TLS needs
    `certfile`/`keyfile`. Ports may be 0 (tests): :attr:`addresses` says what was bound.
    """

    def __init__(self, directory: Directory, *, udp: str | None = None,
                 tcp: str | None = None, tls: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None,
                 verify_peers: bool = True, cafile: str | None = None,
                 realm: str = SIP_REALM, **notifier_options: object) -> None:
        self.directory = directory
        self.binds = {"UDP": udp, "TCP": tcp, "TLS": tls}
        self.certfile, self.keyfile = certfile, keyfile
        self.verify_peers, self.cafile = verify_peers, cafile
        self.agent: SipAgent | None = None
        self.notifier = BlfNotifier(directory, self._local, realm=realm,
                                    **notifier_options)  # type: ignore[arg-type]

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        return dict(self.agent.addresses) if self.agent else {}

    @property
    def answered(self) -> dict[int, int]:
        return self.notifier.answered

    def _local(self, peer: Peer):  # noqa: ANN202
        assert self.agent is not None
        return self.agent.local(peer)

    async def start(self) -> None:
        self.agent = SipAgent(self._on_request, deadline=self.notifier.next_deadline,
                              on_tick=self._on_tick)
        client = ssl.create_default_context(cafile=self.cafile)
        if not self.verify_peers:
            client.check_hostname = False
            client.verify_mode = ssl.CERT_NONE
        self.agent.client_tls = client
        for name, bind in self.binds.items():
            if not bind:
                continue
            host, port = split_hostport(bind)
            if name == "UDP":
                await self.agent.listen_udp(host, port)
            elif name == "TCP":
                await self.agent.listen_stream(host, port)
            else:
                ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                ctx.load_cert_chain(self.certfile or "", self.keyfile)
                await self.agent.listen_stream(host, port, tls=ctx)
        log.debug("BLF server for desk phones on %s",
                 ", ".join(f"{t} {h}:{p}" for t, (h, p) in self.agent.addresses.items()))

    async def stop(self, grace: float = 2.0) -> None:
        """End every subscription (probation;retry-after: phones come back after a restart),
        wait up to `grace` seconds for the phones' answers, close the sockets."""
        agent = self.agent
        if agent is None:
            return
        pending = []
        for n in self.notifier.shutdown(agent.loop.time()):
            pending.append(asyncio.ensure_future(agent.request_async(n.request, n.dest)))
        if pending:
            await asyncio.wait(pending, timeout=grace)
            for p in pending:
                p.cancel()
        await agent.close()
        self.agent = None

    # ------------------------------------------------------------------ events in

    def changed(self, targets: Iterable[str]) -> None:
        """Targets (devices, clients) whose lamp or calls changed."""
        if self.agent is not None:
            self._send(self.notifier.changed(set(targets), self.agent.loop.time()))

    def recheck(self) -> None:
        """Rights or passwords may have changed: check every live subscription now."""
        if self.agent is not None:
            self._send(self.notifier.recheck(self.agent.loop.time()))

    def subscribers(self) -> list[BlfSubscriber]:
        now = self.agent.loop.time() if self.agent else 0.0
        return [BlfSubscriber(b.client, b.target, b.package, b.remote, b.sub.call_id,
                              getattr(b.sub.dest, "transport", ""),
                              max(0.0, b.sub.expires_at - now), b.notifies)
                for b in self.notifier.subs.values()]

    # ------------------------------------------------------------------ wire

    def _on_request(self, req: Request, peer: Peer, tx: ServerTransaction, now: float) -> None:
        assert self.agent is not None
        actions = self.notifier.on_request(req, peer, now)
        for a in actions:
            if isinstance(a, Reply):
                self.agent.respond(tx, a.response)
        self._send([a for a in actions if isinstance(a, Notify)])
        self._drain_log()

    def _send(self, notifies: list[Notify]) -> None:
        agent = self.agent
        if agent is None:
            return
        for n in notifies:
            key = n.key

            def done(resp, key=key) -> None:  # noqa: ANN001
                status = resp.status if resp is not None else 408
                if self.agent is not None:
                    self._send(self.notifier.notify_done(key, status, self.agent.loop.time()))
                    self._drain_log()

            agent.request(n.request, n.dest, done)
        agent.reschedule()
        self._drain_log()

    def _on_tick(self, now: float) -> None:
        self._send(self.notifier.tick(now))

    def _drain_log(self) -> None:
        for debug, line in self.notifier.log:
            log.log(logging.DEBUG if debug else logging.INFO, "BLF: %s", line)
        self.notifier.log.clear()
