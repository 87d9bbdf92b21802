"""The BLF notifier for desk phones, pure: SUBSCRIBEs and lamp changes in, SIP messages out.

A desk phone's BLF key subscribes to ``sip:TARGET@gateway`` (TARGET: a device id or a client
name) with ``Event: dialog`` (RFC 4235, the factory setting of Yealink, Snom, Polycom,
Grandstream, Cisco, Fanvil) or ``Event: presence`` (RFC 3856). This core decides everything
and returns the messages; :mod:`gateway.sip.blf_server` puts them on the wire. No clock, no
socket: `now` comes in, :meth:`BlfNotifier.next_deadline` goes out.

What a SUBSCRIBE gets, in order (each step's reason beside it):

===================================== =======================================================
request                               answer
===================================== =======================================================
Event neither dialog nor presence     489 Bad Event (with Allow-Events)
in-dialog, no such subscription       481 (the phone starts a new one: e.g. after a restart)
in-dialog, CSeq not newer             500 (RFC 3261 12.2.2)
no Authorization                      401 challenge (digest, realm blf-gateway)
nonce too old (a refresh too)         401 ``stale=true``: the phone retries without asking
wrong credentials                     403
in-dialog from another client         403 (a refresh is the subscriber's own)
unknown target                        404
target the client may not see         403 (a refresh: also NOTIFY terminated;reason=rejected)
Expires below MIN_EXPIRES (not 0)     423 with Min-Expires
more than 200 requests/s from one
address (burst 2,000)                 503 with Retry-After: 10 (digest guessing, floods)
too many subscriptions                503 with Retry-After (per client and in total)
the gateway is shutting down          503 with Retry-After: 5 (the phone comes back later)
Expires: 0 with no dialog (a fetch)   200, one NOTIFY terminated;reason=timeout, the lamp
Expires: 0 in a dialog (unsubscribe)  200, final NOTIFY terminated;reason=timeout
a panel's name, Supported: eventlist  a resource list (RFC 4662, Yealink "BLF List"): 200 with
                                      Require: eventlist, NOTIFYs multipart/related (RLMI +
                                      each member's state, rights of that panel)
a panel's name without eventlist      421 with Require: eventlist
otherwise                             200, Expires = min(asked, MAX_EXPIRES), NOTIFY at once
===================================== =======================================================

Every NOTIFY is the full state rendered for the subscriber (rights applied by `view`); a
change that renders the same for a phone sends nothing to it; ``Event: dialog`` bodies carry
a version counting up per subscription. At most one NOTIFY per subscription is in flight: a
change meanwhile is sent, newest only, when the phone has answered (memory per phone is one
body). A NOTIFY answered 481 or timed out ends the subscription. An unknown lamp sends a
NOTIFY without a body (no state yet), never a passing "offline".

The granted expiry is MAX_EXPIRES = 120 s, so that after a crash of the gateway every phone
learns within two minutes (its refresh gets 481 and it subscribes again); a clean shutdown
ends every subscription with ``probation;retry-after=SHUTDOWN_RETRY_AFTER`` so phones come back
by themselves. A password change ends the client's subscriptions (``deactivated``: the phone
re-subscribes and must authenticate with the new password); a right removed ends them with
``rejected``; a right changed re-renders them at once (:meth:`BlfNotifier.recheck`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from xml.sax.saxutils import escape, quoteattr


from ..model import Lamp
from .dialoginfo import render_dialog_info
from .digest import DigestAuthenticator, uri_user
from .presence import lamp_pidf
from .proto.message import Request, Response, SipParseError, parse_name_addr
from .proto.subscription import Local, ServerSubscription, make_response, parse_expires

__all__ = [
    "BlfView",
    "ListView",
    "Directory",
    "Reply",
    "Notify",
    "BlfNotifier",
    "BlfSubscription",
    "MAX_EXPIRES",
    "MIN_EXPIRES",
    "SHUTDOWN_RETRY_AFTER",
    "PACKAGES",
]

MAX_EXPIRES = 120  # a crashed gateway is forgotten by every phone within this
MIN_EXPIRES = 30
SHUTDOWN_RETRY_AFTER = 10
MAX_SUBSCRIPTIONS = 20000
MAX_PER_CLIENT = 500  # a BLF-list phone with a sidecar has ~100 keys
# Requests per source address. One address may be a whole office behind NAT or an SBC:
# 1,000 keys re-subscribing after a restart send ~2,000 requests (challenge + answer) at
# once. A digest guesser is still held to 200 tries a second against 14-character passwords.
RATE_PER_SECOND = 200.0
RATE_BURST = 2000.0
MAX_ADDRESSES = 10000  # remembered for rate limiting (least recently seen forgotten)
PACKAGES = {"dialog": "application/dialog-info+xml", "presence": "application/pidf+xml"}
MAX_LIST = 200  # members of one resource list rendered (a panel larger than a sidecar)
_BOUNDARY = "blf-gateway-rlmi-boundary"
LIST_CTYPE = (f'multipart/related;type="application/rlmi+xml";start="<rlmi@blf-gateway>";'
              f'boundary="{_BOUNDARY}"')


@dataclass(frozen=True, slots=True)
class BlfView:
    """A target as one client may see it: its lamp and the calls rendered with the client's
    rights (dicts as :func:`gateway.panels.rights.render_call` makes them)."""

    lamp: Lamp
    calls: tuple[dict, ...] = ()


@dataclass(frozen=True, slots=True)
class ListView:
    """A resource list (RFC 4662, a panel) as one client may see it: each member's view."""

    members: tuple[tuple[str, BlfView | None], ...]


class Directory(Protocol):
    """What the notifier asks the gateway (synchronous reads of in-memory state)."""

    def list_members(self, client: str, target: str) -> list[str] | None:
        """The members of a resource list `target` (a panel) `client` may see, else None."""

    def ha1(self, client: str) -> str | None:
        """The client's SIP HA1, None for an unknown client or one without a password."""

    def exists(self, target: str) -> bool:
        """Whether a device id or client name is known at all."""

    def view(self, client: str, target: str) -> BlfView | None:
        """The target as `client` may see it; None where it may not see it."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A response to a request (the transport's server transaction sends it)."""

    response: Response


@dataclass(frozen=True, slots=True)
class Notify:
    """A NOTIFY to send (a client transaction); report its answer to :meth:`notify_done`."""

    request: Request
    dest: Any
    key: tuple[str, str, str]


@dataclass(slots=True)
class BlfSubscription:
    """One phone's subscription: who, to what, in which package, and what it was last sent."""

    client: str
    target: str
    package: str
    ha1: str
    sub: ServerSubscription
    last_body: bytes | None = b"\x00"  # nothing sent yet
    in_flight: bool = False
    dirty: bool = False
    notifies: int = 0
    remote: str = ""
    is_list: bool = False  # an RFC 4662 resource list (a panel)
    indexed: tuple[str, ...] = ()  # the targets whose changes reach this subscription


class BlfNotifier:
    """The desk phones' subscriptions of one gateway process (see the module docstring)."""

    def __init__(self, directory: Directory, local: Callable[[Any], Local], *,
                 realm: str = "blf-gateway", nonce_lifetime: float = 300.0,
                 max_expires: int = MAX_EXPIRES, min_expires: int = MIN_EXPIRES,
                 max_subscriptions: int = MAX_SUBSCRIPTIONS,
                 max_per_client: int = MAX_PER_CLIENT, secret: bytes | None = None) -> None:
        self.directory = directory
        self.local = local  # dest -> how we appear on the transport it came from
        self.auth = DigestAuthenticator(realm, lifetime=nonce_lifetime, secret=secret)
        self.max_expires, self.min_expires = max_expires, min_expires
        self.max_subscriptions, self.max_per_client = max_subscriptions, max_per_client
        self.subs: dict[tuple[str, str, str], BlfSubscription] = {}
        self._by_target: dict[str, set[tuple[str, str, str]]] = {}
        self._per_client: dict[str, int] = {}
        self.answered: dict[int, int] = {}  # status -> count (metrics)
        self.closing = False  # shutting down: new subscriptions are refused (503)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # host -> tokens
        # (debug?, text): why each refusal or ending happened, drained by the edge. Challenges
        # are routine (every SUBSCRIBE gets one first): debug level.
        self.log: list[tuple[bool, str]] = []

    # ------------------------------------------------------------------ requests

    def _allowed(self, dest: Any, now: float) -> bool:
        """Token bucket per source address (RATE_PER_SECOND, RATE_BURST)."""
        host = str(getattr(dest, "host", dest))
        tokens, last = self._buckets.pop(host, (RATE_BURST, now))
        tokens = min(RATE_BURST, tokens + (now - last) * RATE_PER_SECOND)
        ok = tokens >= 1.0
        self._buckets[host] = (tokens - 1.0 if ok else tokens, now)
        while len(self._buckets) > MAX_ADDRESSES:
            self._buckets.popitem(last=False)
        return ok

    def on_request(self, req: Request, dest: Any, now: float) -> list[Reply | Notify]:
        if not self._allowed(dest, now):
            return self._refuse(req, 503, "too many requests from this address",
                                headers=(("Retry-After", "10"),))
        if req.method == "NOTIFY":
            # No subscription of ours is served here (the line source takes its NOTIFYs).
            return [self._reply(make_response(req, 481))]
        if req.method == "SUBSCRIBE":
            return self._subscribe(req, dest, now)
        if req.method == "OPTIONS":
            return [self._reply(make_response(req, 200, headers=(
                ("Allow", "SUBSCRIBE, NOTIFY, OPTIONS"),
                ("Allow-Events", "dialog, presence"),
                ("Accept", "application/dialog-info+xml, application/pidf+xml"))))]
        return [self._reply(make_response(req, 405, headers=(
            ("Allow", "SUBSCRIBE, NOTIFY, OPTIONS"),)))]

    def _reply(self, resp: Response) -> Reply:
        self.answered[resp.status] = self.answered.get(resp.status, 0) + 1
        return Reply(resp)

    def _refuse(self, req: Request, status: int, why: str, *,
                headers: tuple[tuple[str, str], ...] = ()) -> list[Reply | Notify]:
        self.log.append((status == 401, f"SUBSCRIBE {req.uri} from {req.header('From')}: "
                                        f"{status} ({why})"))
        return [self._reply(make_response(req, status, to_tag=_to_tag_or_new(req),
                                          headers=headers))]

    def _subscribe(self, req: Request, dest: Any, now: float) -> list[Reply | Notify]:
        if self.closing:
            # A phone told to come back must not land on the process that is going away.
            return self._refuse(req, 503, "shutting down", headers=(("Retry-After", "5"),))
        package = (req.header("Event") or "").split(";")[0].strip().lower()
        if package not in PACKAGES:
            return self._refuse(req, 489, f"event {package!r}",
                                headers=(("Allow-Events", "dialog, presence"),))
        try:
            to = parse_name_addr(req.header("To") or "")
            from_ = parse_name_addr(req.header("From") or "")
        except SipParseError as exc:
            return self._refuse(req, 400, str(exc))
        expires = parse_expires(req.header("Expires"), self.max_expires)
        existing = None
        if to.tag:
            existing = self.subs.get((req.call_id, to.tag, from_.tag))
            if existing is None:
                return self._refuse(req, 481, "no such subscription (restarted or expired)")
            if not existing.sub.in_order(req):
                return self._refuse(req, 500, "CSeq out of order")
        # Authenticate every SUBSCRIBE, refreshes included.
        auths = req.header_all("Authorization")
        if not auths:
            return self._refuse(req, 401, "challenge", headers=(
                ("WWW-Authenticate", self.auth.challenge(now)),))
        result = self.auth.verify(auths[0], "SUBSCRIBE", self._ha1, now,
                                  expected_uri=req.uri)
        if result.stale:
            return self._refuse(req, 401, result.reason, headers=(
                ("WWW-Authenticate", self.auth.challenge(now, stale=True)),))
        client = result.client
        if client is None:
            return self._refuse(req, 403, f"authentication failed: {result.reason}")
        if existing is not None:
            return self._refresh(req, existing, client, expires, now)
        target = uri_user(req.uri)
        is_list = False
        if target is not None and not self.directory.exists(target) \
                and self._list_members(client, target) is not None:
            # A resource list (RFC 4662): the client's panel of that name.
            supported = {v.strip().lower() for v in req.header_all("Supported")}
            if "eventlist" not in supported:
                return self._refuse(req, 421, f"{target!r} is a list: eventlist needed",
                                    headers=(("Require", "eventlist"),))
            is_list = True
        elif target is None or not self.directory.exists(target):
            return self._refuse(req, 404, f"{client}: no target {target!r}")
        probe = BlfSubscription(client, target, package, "", None, is_list=is_list)  # type: ignore[arg-type]
        view = self._view(probe)
        if view is None:
            return self._refuse(req, 403, f"{client} may not see {target!r}")
        if expires and expires < self.min_expires:
            return self._refuse(req, 423, f"expires {expires} s too brief",
                                headers=(("Min-Expires", str(self.min_expires)),))
        if expires and (len(self.subs) >= self.max_subscriptions
                        or self._per_client.get(client, 0) >= self.max_per_client):
            return self._refuse(req, 503, "too many subscriptions",
                                headers=(("Retry-After", "60"),))
        granted = min(expires, self.max_expires)
        try:
            sub = ServerSubscription(req, local=self.local(dest), dest=dest, expires=granted,
                                     now=now)
        except SipParseError as exc:
            return self._refuse(req, 400, str(exc))
        blf = BlfSubscription(client, target, package, self._ha1(client) or "", sub,
                              remote=from_.uri, is_list=is_list)
        require = (("Require", "eventlist"),) if is_list else ()
        out: list[Reply | Notify] = [self._reply(sub.answer(req, 200, expires=granted,
                                                            headers=require))]
        if granted == 0:
            # A fetch: the state now, and the subscription ends with this NOTIFY.
            out.append(self._notify(blf, view, now, reason="timeout"))
            return out
        self.subs[sub.key] = blf
        self._index(blf, view)
        self._per_client[client] = self._per_client.get(client, 0) + 1
        self.log.append((False, f"{client} subscribed to {target} ({package}, {granted} s) "
                                f"from {from_.uri}"))
        out.append(self._notify(blf, view, now))
        return out

    def _refresh(self, req: Request, blf: BlfSubscription, client: str, expires: int,
                 now: float) -> list[Reply | Notify]:
        sub = blf.sub
        if client != blf.client:
            return self._refuse(req, 403, f"{client} refreshing {blf.client}'s subscription")
        view = self._view(blf)
        if view is None:
            # The right went away: refuse, and end the subscription for good.
            out = self._refuse(req, 403, f"{client} may no longer see {blf.target!r}")
            self._drop(sub.key)
            out.append(self._notify(blf, None, now, reason="rejected"))
            return out
        if expires == 0:
            out: list[Reply | Notify] = [self._reply(sub.answer(req, 200, expires=0))]
            self._drop(sub.key)
            out.append(self._notify(blf, view, now, reason="timeout"))
            self.log.append((False, f"{client} unsubscribed from {blf.target}"))
            return out
        if expires < self.min_expires:
            return self._refuse(req, 423, f"expires {expires} s too brief",
                                headers=(("Min-Expires", str(self.min_expires)),))
        granted = min(expires, self.max_expires)
        sub.refresh(granted, now)
        require = (("Require", "eventlist"),) if blf.is_list else ()
        # RFC 6665 4.2.1.2: a refresh is answered with a NOTIFY of the full state.
        blf.last_body = b"\x00"
        return [self._reply(sub.answer(req, 200, expires=granted, headers=require)),
                *self._maybe_notify(blf, view, now)]

    def _list_members(self, client: str, target: str) -> list[str] | None:
        fn = getattr(self.directory, "list_members", None)
        return fn(client, target) if fn is not None else None

    def _view(self, blf: BlfSubscription) -> BlfView | ListView | None:
        """What `blf`'s client may see of its target now (None: nothing any more)."""
        if blf.is_list:
            members = self._list_members(blf.client, blf.target)
            if members is None:
                return None
            return ListView(tuple((m, self.directory.view(blf.client, m))
                                  for m in members[:MAX_LIST]))
        if not self.directory.exists(blf.target):
            return None
        return self.directory.view(blf.client, blf.target)

    def _index(self, blf: BlfSubscription, view: BlfView | ListView | None) -> None:
        """Register the targets whose changes reach `blf` (a list: its members)."""
        self._unindex(blf)
        targets = (blf.target,)
        if isinstance(view, ListView):
            targets += tuple(m for m, _ in view.members)
        blf.indexed = targets
        for t in targets:
            self._by_target.setdefault(t, set()).add(blf.sub.key)

    def _unindex(self, blf: BlfSubscription) -> None:
        for t in blf.indexed:
            keys = self._by_target.get(t)
            if keys is not None:
                keys.discard(blf.sub.key)
                if not keys:
                    del self._by_target[t]
        blf.indexed = ()

    def _ha1(self, client: str) -> str | None:
        try:
            return self.directory.ha1(client)
        except Exception:  # noqa: BLE001 - a failing store means: no credentials
            return None

    # ------------------------------------------------------------------ NOTIFYs

    def _render(self, blf: BlfSubscription, view: BlfView | ListView | None
                ) -> tuple[bytes | None, str]:
        ctype = PACKAGES[blf.package]
        entity = blf.sub.local_uri if blf.sub.local_uri.startswith(("sip:", "sips:")) \
            else f"sip:{blf.target}@invalid"
        if isinstance(view, ListView):
            return render_list(entity, view, blf.package), LIST_CTYPE
        if view is None or view.lamp is Lamp.UNKNOWN:
            return None, ctype
        if blf.package == "presence":
            return lamp_pidf(entity, view.lamp, blf.target, contact=blf.remote).encode(), ctype
        # The version is filled in by _notify (it counts NOTIFYs actually sent).
        return render_dialog_info(entity, 0, view.lamp, view.calls).encode(), ctype

    def _notify(self, blf: BlfSubscription, view: BlfView | None, now: float, *,
                reason: str | None = None, retry_after: int | None = None) -> Notify:
        body, ctype = self._render(blf, view)
        blf.last_body = body
        if body is not None and (blf.package == "dialog" or blf.is_list):
            blf.sub.version += 1
            # The documents' version counts the NOTIFYs of this subscription (RFC 4235
            # 4.1, RFC 4662 5.2): every version="0" of the rendering gets it.
            body = body.replace(b' version="0"', f' version="{blf.sub.version}"'.encode())
        req = blf.sub.notify(now, body, ctype if body is not None else None, reason=reason,
                             retry_after=retry_after)
        blf.in_flight = True
        blf.notifies += 1
        return Notify(req, blf.sub.dest, blf.sub.key)

    def _maybe_notify(self, blf: BlfSubscription, view: BlfView | None, now: float
                      ) -> list[Notify]:
        body, _ = self._render(blf, view)
        if body == blf.last_body:
            return []
        if blf.in_flight:
            blf.dirty = True
            return []
        return [self._notify(blf, view, now)]

    def notify_done(self, key: tuple[str, str, str], status: int, now: float
                    ) -> list[Notify]:
        """The phone answered a NOTIFY (`status` 408 for a timeout): a 481, 408 or other
        failure ends the subscription; a change that waited is sent now."""
        blf = self.subs.get(key)
        if blf is None:
            return []
        blf.in_flight = False
        if status >= 300:
            self.log.append((False, f"{blf.client}'s subscription to {blf.target} ended: "
                                    f"NOTIFY got {status}"))
            self._drop(key)
            return []
        if blf.dirty:
            blf.dirty = False
            return self._maybe_notify(blf, self._view(blf), now)
        return []

    def changed(self, targets: set[str] | list[str], now: float) -> list[Notify]:
        """Targets whose lamp or calls changed: a NOTIFY to each phone that sees a difference."""
        out: list[Notify] = []
        for target in targets:
            for key in list(self._by_target.get(target, ())):
                blf = self.subs[key]
                view = self._view(blf)
                if view is None:
                    self._drop(key)
                    out.append(self._notify(blf, None, now, reason="rejected"))
                    continue
                out += self._maybe_notify(blf, view, now)
        return out

    def recheck(self, now: float) -> list[Notify]:
        """After a configuration reload or a password change: every live subscription is
        checked again at once (password -> deactivated, right gone -> rejected, rights
        changed -> re-rendered)."""
        out: list[Notify] = []
        for key, blf in list(self.subs.items()):
            if (self._ha1(blf.client) or "") != blf.ha1:
                self._drop(key)
                out.append(self._notify(blf, self._view(blf),
                                        now, reason="deactivated"))
                self.log.append((False, f"{blf.client}'s password changed: subscription "
                                        f"to {blf.target} ended"))
                continue
            view = self._view(blf)
            if blf.is_list and view is not None:
                self._index(blf, view)  # the panel's members may have changed
            if view is None:
                self._drop(key)
                out.append(self._notify(blf, None, now, reason="rejected"))
                self.log.append((False, f"{blf.client} may no longer see {blf.target}: "
                                        "subscription ended"))
                continue
            out += self._maybe_notify(blf, view, now)
        return out

    def shutdown(self, now: float) -> list[Notify]:
        """End every subscription so that phones come back after the restart; from now on
        SUBSCRIBEs are answered 503 (Retry-After 5)."""
        self.closing = True
        out = []
        for key, blf in list(self.subs.items()):
            self._drop(key)
            out.append(self._notify(blf, self._view(blf), now,
                                    reason="probation", retry_after=SHUTDOWN_RETRY_AFTER))
        return out

    # ------------------------------------------------------------------ time

    def next_deadline(self) -> float | None:
        if not self.subs:
            return None
        return min(b.sub.expires_at for b in self.subs.values())

    def tick(self, now: float) -> list[Notify]:
        """Subscriptions past their expiry end (RFC 6665: a final NOTIFY, reason timeout)."""
        out = []
        for key, blf in list(self.subs.items()):
            if blf.sub.expires_at <= now:
                self._drop(key)
                out.append(self._notify(blf, self._view(blf),
                                        now, reason="timeout"))
        return out

    def _drop(self, key: tuple[str, str, str]) -> None:
        blf = self.subs.pop(key, None)
        if blf is None:
            return
        self._unindex(blf)
        left = self._per_client.get(blf.client, 1) - 1
        if left > 0:
            self._per_client[blf.client] = left
        else:
            self._per_client.pop(blf.client, None)


def _to_tag_or_new(req: Request) -> str | None:
    # A refusal of an initial request carries a To tag too (RFC 3261 8.2.6.2); a fixed one
    # is fine: no dialog is created by an error response.
    return None if ";tag=" in (req.header("To") or "").replace(" ", "") else "refused"


def render_list(entity: str, view: ListView, package: str) -> bytes:
    """A full-state RFC 4662 NOTIFY body: ``multipart/related`` with the RLMI document first,
    then one part per member whose state is known (``version="0"`` is replaced by the
    subscription's counter). A member without state is listed ``pending``, without a part."""
    host = entity.split("@", 1)[1] if "@" in entity else "invalid"
    resources, parts = [], []
    for i, (member, mview) in enumerate(view.members):
        uri = f"sip:{member}@{host}"
        if mview is None or mview.lamp is Lamp.UNKNOWN:
            resources.append(f'  <resource uri={quoteattr(uri)}>\n'
                             f'    <instance id="{i}" state="pending"/>\n  </resource>')
            continue
        cid = f"r{i}@blf-gateway"
        resources.append(f'  <resource uri={quoteattr(uri)}>\n    <name>{escape(member)}</name>\n'
                         f'    <instance id="{i}" state="active" cid="{cid}"/>\n  </resource>')
        if package == "presence":
            body, ctype = lamp_pidf(uri, mview.lamp, member), PACKAGES["presence"]
        else:
            body, ctype = render_dialog_info(uri, 0, mview.lamp, mview.calls), PACKAGES["dialog"]
        parts.append((cid, ctype, body))
    rlmi = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<list xmlns="urn:ietf:params:xml:ns:rlmi" uri={quoteattr(entity)} version="0" '
            'fullState="true">\n' + "\n".join(resources) + "\n</list>\n")
    out = [f"--{_BOUNDARY}\r\nContent-Transfer-Encoding: binary\r\n"
           "Content-ID: <rlmi@blf-gateway>\r\n"
           'Content-Type: application/rlmi+xml;charset="UTF-8"\r\n\r\n' + rlmi]
    for cid, ctype, body in parts:
        out.append(f"--{_BOUNDARY}\r\nContent-Transfer-Encoding: binary\r\n"
                   f"Content-ID: <{cid}>\r\nContent-Type: {ctype}\r\n\r\n" + body)
    return ("\r\n".join(out) + f"\r\n--{_BOUNDARY}--\r\n").encode()
