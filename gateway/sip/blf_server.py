"""The BLF server for desk phones: answers SUBSCRIBE ``Event: presence`` with gateway lamps.

A desk phone's BLF key subscribes to ``sip:TARGET@gateway`` where TARGET is a device id or a
client name. The gateway's pjsua2 account takes the SUBSCRIBE (``Account.onIncomingSubscribe``)
and this module decides:

1. no ``Authorization`` header -> 401 with a digest challenge (realm ``blf-gateway``, MD5,
   qop=auth; :mod:`gateway.sip.digest`); a wrong one -> 403; an expired nonce -> 401 stale;
2. ``lookup(client, target)`` None -> 404; ``authorize(client, target)`` False -> 403;
3. otherwise 200, and NOTIFYs with a PIDF body built from the lamp
   (:func:`gateway.sip.presence.lamp_pidf`), again on every :meth:`BlfServer.lamp_changed`.

pjsua runs the subscription state machine (refresh, expiry, unsubscribe). One thing it does
behind our back: on a refresh it NOTIFYs the *account's* own presence, not ours; pjsua2 2.15
has no callback for refreshes, so the server reads them from pjsua's message log
(:meth:`SipEndpoint.add_rx_hook`) and sends the lamp again right after.

Threads: the three callables are called on the pjsua thread while a SUBSCRIBE waits for its
answer: they must be quick, must not block and should only read (a dict lookup on a snapshot
the engine keeps is ideal). :meth:`lamp_changed` may be called from any thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..auth import SIP_REALM
from .digest import DigestAuthenticator, header_values, request_uri, uri_user
from .endpoint import SipEndpoint
from .presence import lamp_pidf

__all__ = ["BlfServer", "BlfSubscriber"]

log = logging.getLogger("gateway.sip")

# How often expired subscriptions are forgotten, and how long after their expiry.
_SWEEP_SECONDS = 30.0
_EXPIRY_GRACE = 32.0
_DEFAULT_EXPIRES = 3600


@dataclass(frozen=True, slots=True)
class BlfSubscriber:
    """One desk phone subscription (for status pages and tests)."""

    client: str
    target: str
    remote: str  # the subscriber's From URI
    call_id: str
    lamp: str  # the last lamp sent
    expires_in: float


class _Sub:
    __slots__ = ("key", "srv_pres", "client", "target", "remote", "call_id", "lamp",
                 "expires_at", "notifies")

    def __init__(self, key: int, srv_pres: Any, client: str, target: str, remote: str,
                 call_id: str, lamp: str, expires: int) -> None:
        self.key, self.srv_pres = key, srv_pres
        self.client, self.target, self.remote, self.call_id = client, target, remote, call_id
        self.lamp = lamp
        self.expires_at = time.monotonic() + expires
        self.notifies = 0


def _expires(raw: str) -> int:
    for value in header_values(raw, "Expires"):
        try:
            return max(0, int(value.split(";")[0].strip()))
        except ValueError:
            pass
    return _DEFAULT_EXPIRES


def _has_to_tag(raw: str) -> bool:
    to = header_values(raw, "To", "t")
    return bool(to) and ";tag=" in to[0].replace(" ", "").lower()


class BlfServer:
    """Serves gateway lamps to SIP desk phones (see the module docstring)."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        lookup: Callable[[str, str], tuple[str, str] | None],
        authorize: Callable[[str, str], bool],
        credentials: Callable[[str], str | None],
        *,
        realm: str = SIP_REALM,
        nonce_lifetime: float = 300.0,
    ) -> None:
        self.endpoint = endpoint
        self.lookup = lookup
        self.authorize = authorize
        self.credentials = credentials
        self.auth = DigestAuthenticator(realm, lifetime=nonce_lifetime)
        self._subs: dict[int, _Sub] = {}  # pjsua thread only
        self._running = False
        self.answered: dict[int, int] = {}  # SIP status code -> count, for metrics

    # ------------------------------------------------------------------ any thread

    async def start(self) -> None:
        await self.endpoint.run(self._start)

    async def stop(self) -> None:
        """End every subscription (NOTIFY terminated) and stop answering SUBSCRIBEs."""
        if self._running and self.endpoint.running:
            try:
                await self.endpoint.run(self._stop)
            except Exception:  # noqa: BLE001 - the endpoint stopped meanwhile
                log.debug("BLF server stop: endpoint not running")
        self._running = False

    def lamp_changed(self, target: str, lamp_value: str) -> None:
        """A target's lamp changed: NOTIFY each of its subscribers (thread-safe, no wait)."""
        if self._running and self.endpoint.running:
            self.endpoint.call(self._lamp_changed, target, str(lamp_value))

    async def subscribers(self) -> list[BlfSubscriber]:
        if not self.endpoint.running:
            return []
        return await self.endpoint.run(self._snapshot)

    # ------------------------------------------------------------------ pjsua thread

    def _start(self) -> None:
        self.endpoint.subscribe_handler = self._on_subscribe
        self.endpoint.add_rx_hook(self._on_rx)
        self.endpoint.add_shutdown_hook(self._forget)
        self._running = True
        self.endpoint.call_later(_SWEEP_SECONDS, self._sweep)

    def _stop(self) -> None:
        for sub in list(self._subs.values()):
            self._notify(sub, terminate=True)
        self._forget()

    def _forget(self) -> None:
        self._subs.clear()
        if self.endpoint.subscribe_handler == self._on_subscribe:
            self.endpoint.subscribe_handler = None
        self.endpoint.remove_rx_hook(self._on_rx)
        self.endpoint.remove_shutdown_hook(self._forget)
        self._running = False

    def _snapshot(self) -> list[BlfSubscriber]:
        now = time.monotonic()
        return [BlfSubscriber(s.client, s.target, s.remote, s.call_id, s.lamp,
                              max(0.0, s.expires_at - now)) for s in self._subs.values()]

    def _sweep(self) -> None:
        if not self._running:
            return
        now = time.monotonic()
        for key in [k for k, s in self._subs.items() if s.expires_at + _EXPIRY_GRACE < now]:
            del self._subs[key]
        self.endpoint.call_later(_SWEEP_SECONDS, self._sweep)

    def _reject(self, prm: Any, code: int, reason: str, why: str, peer: str,
                header: tuple[str, str] | None = None) -> None:
        prm.code = code
        prm.reason = reason
        if header is not None:
            h = self.endpoint.pj.SipHeader()
            h.hName, h.hValue = header
            prm.txOption.headers.append(h)
        self.answered[code] = self.answered.get(code, 0) + 1
        log.log(logging.DEBUG if code == 401 else logging.INFO,
                "BLF SUBSCRIBE from %s: %d %s (%s)", peer, code, reason, why)

    def _on_subscribe(self, account: Any, prm: Any) -> None:
        raw = prm.rdata.wholeMsg
        peer = prm.fromUri or prm.rdata.srcAddress
        now = time.time()
        line = request_uri(raw)
        target = uri_user(line[1]) if line else None
        if target is None:
            self._reject(prm, 404, "Not Found", "no user part in the request URI", peer)
            return
        auths = header_values(raw, "Authorization")
        if not auths:
            self._reject(prm, 401, "Unauthorized", "challenge", peer,
                         ("WWW-Authenticate", self.auth.challenge(now)))
            return
        result = self.auth.verify(auths[0], "SUBSCRIBE", self._ha1, now,
                                  expected_uri=line[1] if line else None)
        if result.stale:
            self._reject(prm, 401, "Unauthorized", result.reason, peer,
                         ("WWW-Authenticate", self.auth.challenge(now, stale=True)))
            return
        client = result.client
        if client is None:
            self._reject(prm, 403, "Forbidden", f"authentication failed: {result.reason}", peer)
            return
        found = self.lookup(client, target)
        if found is None:
            self._reject(prm, 404, "Not Found", f"{client}: no target {target!r}", peer)
            return
        if not self.authorize(client, target):
            self._reject(prm, 403, "Forbidden", f"{client} may not see {target!r}", peer)
            return
        _kind, lamp = found
        expires = _expires(raw)
        call_id = (header_values(raw, "Call-ID", "i") or [""])[0]
        key = int(prm.srvPres)
        sub = _Sub(key, prm.srvPres, client, target, str(prm.fromUri), call_id, str(lamp),
                   expires)
        # pjsua may reuse the memory of an ended subscription: the key then means this one.
        self._subs[key] = sub
        prm.code = 200
        prm.reason = "OK"
        self.answered[200] = self.answered.get(200, 0) + 1
        log.info("BLF SUBSCRIBE from %s as %s for %s: 200 (%s, expires %d s)",
                 peer, client, target, lamp, expires)
        # pjsua answers and NOTIFYs the account's own state once this returns (a body set in
        # prm.txOption is ignored for that NOTIFY: pjsua only adds one where none is); ours
        # follows at once, on the next turn of the pjsua thread.
        self.endpoint.call_later(0, lambda: self._resend(key, sub))

    def _ha1(self, client: str) -> str | None:
        try:
            return self.credentials(client)
        except Exception:  # noqa: BLE001 - a failing store means: no credentials
            log.exception("BLF: credentials(%r) failed", client)
            return None

    def _resend(self, key: int, sub: _Sub) -> None:
        if self._subs.get(key) is sub:
            self._notify(sub)

    def _on_rx(self, method: str, raw: str) -> None:
        # Only in-dialog SUBSCRIBEs (refreshes, unsubscribes) matter here; initial ones reach
        # onIncomingSubscribe.
        if method != "SUBSCRIBE" or not self._subs or not _has_to_tag(raw):
            return
        call_id = (header_values(raw, "Call-ID", "i") or [""])[0]
        for key, sub in list(self._subs.items()):
            if sub.call_id and sub.call_id == call_id:
                expires = _expires(raw)
                if expires == 0:
                    del self._subs[key]  # unsubscribed: pjsua sends the final NOTIFY
                    log.info("BLF: %s unsubscribed from %s", sub.client, sub.target)
                else:
                    sub.expires_at = time.monotonic() + expires
                    self.endpoint.call_later(0, lambda k=key, s=sub: self._resend(k, s))

    def _lamp_changed(self, target: str, lamp: str) -> None:
        for sub in list(self._subs.values()):
            if sub.target == target and sub.lamp != lamp:
                sub.lamp = lamp
                self._notify(sub)

    def _entity(self, target: str) -> str:
        host = self.endpoint.host
        host = f"[{host}]" if ":" in host else host
        return f"sip:{target}@{host}:{self.endpoint.port}"

    def _notify(self, sub: _Sub, *, terminate: bool = False) -> None:
        pj = self.endpoint.pj
        prm = pj.PresNotifyParam()
        prm.srvPres = sub.srv_pres
        if terminate:
            prm.state = pj.PJSIP_EVSUB_STATE_TERMINATED
            prm.reason = "noresource"
        else:
            prm.state = pj.PJSIP_EVSUB_STATE_ACTIVE
        # pjsua builds the account's own PIDF; withBody=False drops it and the txOption body
        # (ours) goes in instead.
        prm.withBody = False
        prm.txOption.contentType = "application/pidf+xml"
        prm.txOption.msgBody = lamp_pidf(self._entity(sub.target), sub.lamp, sub.target)
        try:
            self.endpoint.account.presNotify(prm)
            sub.notifies += 1
        except Exception as exc:  # noqa: BLE001 - pj.Error: the subscription has ended
            log.info("BLF: subscription of %s to %s has ended (%s)", sub.client, sub.target,
                     getattr(exc, "reason", exc))
            self._subs.pop(sub.key, None)
        if terminate:
            self._subs.pop(sub.key, None)
