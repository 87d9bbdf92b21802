"""RFC 6665 subscription dialogs, notifier and subscriber side, sans-I/O.

:class:`ServerSubscription` is one subscription a peer (a desk phone) holds with us: built
from its initial SUBSCRIBE, it answers refreshes (CSeq order checked, RFC 3261 12.2.2),
builds NOTIFYs (``Subscription-State`` active with the time left, or terminated with a
reason and ``retry-after``) and expires at its deadline. :class:`ClientSubscription` is one we
hold with a server: it builds SUBSCRIBEs (initial, refresh, ``Expires: 0``), answers digest
challenges (401/407, ``stale=true`` without asking anyone), follows 423 Min-Expires, notices a
lost dialog (481, a refresh timeout) and re-subscribes, and turns NOTIFYs into
:class:`Notified` / :class:`Terminated` events. Both take `now`; neither touches a socket.
What a termination reason asks of the subscriber is the table :data:`RESUBSCRIBE_AFTER`.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from ..digest import digest_response, parse_digest
from .message import (
    REASONS,
    Request,
    Response,
    SipParseError,
    new_branch,
    new_tag,
    parse_name_addr,
    parse_params,
)

__all__ = [
    "Local",
    "make_response",
    "ServerSubscription",
    "ClientSubscription",
    "Notified",
    "Terminated",
    "Failed",
    "Active",
    "RESUBSCRIBE_AFTER",
    "authorization",
    "answer_challenge",
    "request_head",
    "parse_expires",
    "ha1_of",
]

# Termination reason -> seconds to wait before subscribing again (None: do not come back,
# RFC 6665 4.2.2): deactivated/timeout at once, probation after retry-after (default 30 s),
# rejected/noresource/giveup/invariant never (our source still retries slowly: a PBX that
# comes back should be followed, see gateway.sip.source).
RESUBSCRIBE_AFTER: dict[str, float | None] = {
    "deactivated": 0.0,
    "timeout": 0.0,
    "probation": 30.0,
    "giveup": None,
    "rejected": None,
    "noresource": None,
    "invariant": None,
}


@dataclass(frozen=True, slots=True)
class Local:
    """How we appear on one transport: ``transport`` (UDP/TCP/TLS), Via sent-by
    ``host:port``, and our Contact URI."""

    transport: str
    sent_by: str
    contact: str


def make_response(req: Request, status: int, reason: str | None = None, *,
                  to_tag: str | None = None, headers: tuple[tuple[str, str], ...] = (),
                  body: bytes = b"") -> Response:
    """A response to `req` (RFC 3261 8.2.6): Via, From, Call-ID, CSeq copied; To with our tag
    (added where the request's To has none and `to_tag` is given)."""
    to = req.header("To") or ""
    if to_tag and ";tag=" not in to.replace(" ", "").lower():
        to = f"{to};tag={to_tag}"
    copied = [("Via", v) for v in req.header_all("Via")]
    copied += [("From", req.header("From") or ""), ("To", to),
               ("Call-ID", req.call_id), ("CSeq", req.header("CSeq") or "")]
    return Response(tuple(copied) + tuple(headers), body, status,
                    reason or REASONS.get(status, "Unknown"))


def request_head(local: Local, from_: str, to: str, call_id: str, cseq: int, method: str,
                 route_set: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """The headers every request we send starts with (RFC 3261 8.1.1): our Via with a new
    branch (rport: answers come back to where we sent from), Max-Forwards, the dialog's
    route set, From, To, Call-ID and CSeq."""
    headers = [
        ("Via", f"SIP/2.0/{local.transport} {local.sent_by};branch={new_branch()};rport"),
        ("Max-Forwards", "70"),
    ]
    headers += [("Route", r) for r in route_set]
    headers += [("From", from_), ("To", to), ("Call-ID", call_id), ("CSeq", f"{cseq} {method}")]
    return headers

def parse_expires(value: str | None, default: int) -> int:
    if value is None:
        return default
    try:
        return max(0, min(int(value.split(";")[0].strip()), 2**31 - 1))
    except ValueError:
        return default


def _event_of(value: str | None) -> tuple[str, str]:
    """(package, id) of an Event header value, package lower case."""
    package, _, params = (value or "").partition(";")
    return package.strip().lower(), parse_params(params).get("id", "")


# ---------------------------------------------------------------------------- notifier


class ServerSubscription:
    """One subscription a peer holds with us (see the module docstring)."""

    __slots__ = ("call_id", "local_tag", "remote_tag", "local_uri", "remote_uri",
                 "remote_target", "route_set", "event", "event_id", "remote_cseq",
                 "local_cseq", "expires_at", "dest", "local", "terminated", "version",
                 "data")

    def __init__(self, req: Request, *, local: Local, dest: object, expires: int,
                 now: float) -> None:
        from_ = parse_name_addr(req.header("From") or "")
        to = parse_name_addr(req.header("To") or "")
        contacts = req.header_all("Contact")
        if not from_.tag:
            raise SipParseError("SUBSCRIBE without a From tag")
        if not contacts:
            raise SipParseError("SUBSCRIBE without a Contact")
        self.call_id = req.call_id
        self.local_tag = new_tag()
        self.remote_tag = from_.tag
        self.local_uri = to.uri
        self.remote_uri = from_.uri
        self.remote_target = parse_name_addr(contacts[0]).uri
        # UAS: the route set is the Record-Route values in order (RFC 3261 12.1.1)
        self.route_set = tuple(req.header_all("Record-Route"))
        self.event, self.event_id = _event_of(req.header("Event"))
        self.remote_cseq = req.cseq[0]
        self.local_cseq = secrets.randbelow(10000) + 1
        self.expires_at = now + expires
        self.dest, self.local = dest, local
        self.terminated = False
        self.version = -1  # the event package's document counter (dialog-info version)
        self.data: object = None  # what the application keeps with it

    @property
    def key(self) -> tuple[str, str, str]:
        return self.call_id, self.local_tag, self.remote_tag

    def answer(self, req: Request, status: int = 200, *, expires: int | None = None,
               headers: tuple[tuple[str, str], ...] = ()) -> Response:
        extra: list[tuple[str, str]] = []
        if 200 <= status < 300:
            extra += [("Contact", f"<{self.local.contact}>")]
            if expires is not None:
                extra.append(("Expires", str(expires)))
        return make_response(req, status, to_tag=self.local_tag,
                             headers=tuple(extra) + headers)

    def in_order(self, req: Request) -> bool:
        """Whether an in-dialog request's CSeq is new (RFC 3261 12.2.2: lower is refused
        with 500); records it."""
        number = req.cseq[0]
        if number <= self.remote_cseq:
            return False
        self.remote_cseq = number
        return True

    def refresh(self, expires: int, now: float) -> None:
        self.expires_at = now + expires

    def expires_in(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))

    def notify(self, now: float, body: bytes | None, content_type: str | None, *,
               reason: str | None = None, retry_after: int | None = None) -> Request:
        """The next NOTIFY. `reason` set: it terminates the subscription."""
        self.local_cseq += 1
        if reason is not None:
            self.terminated = True
            state = f"terminated;reason={reason}"
            if retry_after is not None:
                state += f";retry-after={retry_after}"
        else:
            state = f"active;expires={self.expires_in(now)}"
        event = self.event + (f";id={self.event_id}" if self.event_id else "")
        headers = request_head(self.local, f"<{self.local_uri}>;tag={self.local_tag}",
                               f"<{self.remote_uri}>;tag={self.remote_tag}", self.call_id,
                               self.local_cseq, "NOTIFY", self.route_set)
        headers += [
            ("Contact", f"<{self.local.contact}>"),
            ("Event", event),
            ("Subscription-State", state),
            ("Allow-Events", "presence, dialog"),
        ]
        if body is not None and content_type:
            headers.append(("Content-Type", content_type))
        return Request(tuple(headers), body or b"", "NOTIFY", self.remote_target)


# ---------------------------------------------------------------------------- subscriber


@dataclass(frozen=True, slots=True)
class Active:
    """The server accepted (2xx): the subscription lasts `expires` seconds."""

    expires: int


@dataclass(frozen=True, slots=True)
class Notified:
    """A NOTIFY with state (`body` empty: the server has none to give)."""

    body: bytes
    content_type: str
    state: str  # active | pending | terminated


@dataclass(frozen=True, slots=True)
class Terminated:
    """The subscription ended. `retry_after`: when to subscribe again (None: do not)."""

    reason: str
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class Failed:
    """The SUBSCRIBE was refused or timed out (`status` 408 for a timeout)."""

    status: int
    reason: str
    retry_after: float | None = None


def authorization(challenge: str, method: str, uri: str, username: str, ha1: str, *,
                  nc: int = 1, cnonce: str | None = None) -> str | None:
    """An Authorization value answering a WWW-/Proxy-Authenticate `challenge` (MD5, qop=auth
    where offered); None if the challenge is not one we can answer."""
    p = parse_digest(challenge)
    if p is None or p.get("algorithm", "MD5").upper() != "MD5" or "nonce" not in p:
        return None
    qops = [q.strip().lower() for q in p.get("qop", "").split(",") if q.strip()]
    qop = "auth" if "auth" in qops else None
    if qops and qop is None:
        return None
    cnonce = cnonce or secrets.token_hex(8)
    ncs = f"{nc:08x}"
    resp = digest_response(ha1, method, uri, p["nonce"], qop=qop, nc=ncs, cnonce=cnonce)
    value = (f'Digest username="{username}", realm="{p.get("realm", "")}", '
             f'nonce="{p["nonce"]}", uri="{uri}", response="{resp}", algorithm=MD5')
    if "opaque" in p:
        value += f', opaque="{p["opaque"]}"'
    if qop:
        value += f", qop=auth, nc={ncs}, cnonce=\"{cnonce}\""
    return value


def answer_challenge(challenge: tuple[str, str], method: str, uri: str,
                     credentials: tuple[str, str], *, nc: int = 1) -> tuple[str, str] | None:
    """The header answering a 401's WWW-Authenticate or a 407's Proxy-Authenticate
    (`challenge`: its name and value) with `credentials` (user, password); None if the
    challenge is not one we can answer."""
    name, value = challenge
    user, password = credentials
    realm = (parse_digest(value) or {}).get("realm", "")
    answer = authorization(value, method, uri, user, ha1_of(user, realm, password), nc=nc)
    if answer is None:
        return None
    return ("Authorization" if name.lower() == "www-authenticate"
            else "Proxy-Authorization", answer)

def ha1_of(username: str, realm: str, password: str) -> str:
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()  # noqa: S324


@dataclass
class ClientSubscription:
    """One subscription we hold with a server (see the module docstring).

    `credentials`: (username, password) for digest challenges; the HA1 is computed per realm.
    Refresh: at 80 % of the granted time, at most `refresh_margin` seconds before the end
    (whichever comes first), so a server restart is noticed within one refresh.
    """

    target: str
    local_uri: str
    local: Local
    event: str
    accept: str
    dest: object
    expires: int = 120
    credentials: tuple[str, str] | None = None
    refresh_margin: float = 30.0
    call_id: str = field(default_factory=lambda: secrets.token_hex(12))
    local_tag: str = field(default_factory=new_tag)
    remote_tag: str = ""
    remote_target: str = ""
    route_set: tuple[str, ...] = ()
    cseq: int = 0
    refresh_at: float | None = None
    expires_at: float | None = None
    state: str = "init"  # init | sent | active | terminated
    _auth_tries: int = 0
    _nc: int = 0
    _last_auth: tuple[str, str] | None = None  # (header name, challenge) answered last

    @property
    def established(self) -> bool:
        return bool(self.remote_tag)

    def subscribe(self, now: float, expires: int | None = None) -> Request:
        """A SUBSCRIBE: initial (no dialog yet) or a refresh in the dialog."""
        self.state = "sent" if self.state in ("init", "terminated") else self.state
        return self._build(self.expires if expires is None else expires)

    def unsubscribe(self) -> Request:
        """``Expires: 0``: ends the subscription (a fetch where no dialog exists yet)."""
        self.state = "terminated"
        self.refresh_at = None
        return self._build(0)

    def _build(self, expires: int, auth: tuple[str, str] | None = None) -> Request:
        self.cseq += 1
        uri = self.remote_target or self.target
        to = f"<{self.target}>" + (f";tag={self.remote_tag}" if self.remote_tag else "")
        headers = request_head(self.local, f"<{self.local_uri}>;tag={self.local_tag}", to,
                               self.call_id, self.cseq, "SUBSCRIBE", self.route_set)
        headers += [
            ("Contact", f"<{self.local.contact}>"),
            ("Event", self.event),
            ("Accept", self.accept),
            ("Expires", str(expires)),
            ("Allow", "NOTIFY, SUBSCRIBE, OPTIONS"),
        ]
        if auth is None and self._last_auth is not None and self.credentials:
            auth = self._answer(self._last_auth, "SUBSCRIBE", uri)
        if auth is not None:
            headers.append(auth)
        return Request(tuple(headers), b"", "SUBSCRIBE", uri)

    def _answer(self, challenge: tuple[str, str], method: str, uri: str
                ) -> tuple[str, str] | None:
        if not self.credentials:
            return None
        self._nc += 1
        return answer_challenge(challenge, method, uri, self.credentials, nc=self._nc)

    def on_response(self, req: Request, resp: Response, now: float
                    ) -> tuple[list[Active | Failed], Request | None]:
        """(events, a request to send next or None) for the final response to `req`."""
        expires_asked = parse_expires(req.header("Expires"), self.expires)
        if 200 <= resp.status < 300:
            self._auth_tries = 0
            if not self.remote_tag:
                to = parse_name_addr(resp.header("To") or "")
                self.remote_tag = to.tag
                contacts = resp.header_all("Contact")
                if contacts:
                    self.remote_target = parse_name_addr(contacts[0]).uri
                self.route_set = tuple(reversed(resp.header_all("Record-Route")))
            granted = min(parse_expires(resp.header("Expires"), expires_asked), expires_asked)
            if expires_asked == 0 or granted == 0:
                self.refresh_at = None
                return [Active(0)], None
            self.state = "active"
            self._schedule(granted, now)
            return [Active(granted)], None
        if resp.status in (401, 407) and self.credentials:
            name = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
            challenge = resp.header(name)
            stale = challenge is not None and "stale=true" in challenge.replace(" ", "").lower()
            self._auth_tries = 0 if stale else self._auth_tries + 1
            if challenge is None or self._auth_tries > 1:
                return [Failed(resp.status, "authentication refused")], None
            self._last_auth = (name, challenge)
            self._nc = 0
            retry = self._build(expires_asked)
            return [], retry
        if resp.status == 423:
            minimum = parse_expires(resp.header("Min-Expires"), 0)
            if 0 < minimum <= 3600 and minimum > expires_asked:
                self.expires = minimum
                return [], self._build(minimum)
        if resp.status == 481 or (resp.status == 408 and self.established):
            # The server forgot the dialog (restart): start a new one at once.
            self._reset()
            return [Failed(resp.status, resp.reason, 0.0)], self.subscribe(now)
        retry_after = parse_expires(resp.header("Retry-After"), -1)
        self.state = "terminated"
        self.refresh_at = None
        return [Failed(resp.status, resp.reason,
                       float(retry_after) if retry_after >= 0 else None)], None

    def on_timeout(self, now: float) -> tuple[list[Failed], Request | None]:
        if self.established:
            self._reset()
        self.state = "terminated"
        self.refresh_at = None
        return [Failed(408, "no answer")], None

    def _reset(self) -> None:
        self.call_id = secrets.token_hex(12)
        self.local_tag = new_tag()
        self.remote_tag = self.remote_target = ""
        self.route_set = ()
        self.state = "init"
        self.refresh_at = None

    def _schedule(self, granted: int, now: float) -> None:
        self.expires_at = now + granted
        self.refresh_at = now + max(1.0, min(granted * 0.8, granted - self.refresh_margin)
                                    if granted > 2 else granted / 2)

    def matches(self, req: Request) -> bool:
        """Whether an in-dialog request (a NOTIFY) belongs to this subscription."""
        if req.call_id != self.call_id:
            return False
        try:
            to = parse_name_addr(req.header("To") or "")
            from_ = parse_name_addr(req.header("From") or "")
        except SipParseError:
            return False
        return to.tag == self.local_tag and (not self.remote_tag
                                            or from_.tag == self.remote_tag)

    def on_notify(self, req: Request, now: float) -> tuple[Response, list]:
        """Our answer to a NOTIFY of this subscription and what it says."""
        try:
            from_ = parse_name_addr(req.header("From") or "")
        except SipParseError:
            return make_response(req, 400), []
        if not self.remote_tag:
            # The NOTIFY overtook the 2xx (RFC 6665 4.1.2.4): it establishes the dialog.
            self.remote_tag = from_.tag
            contacts = req.header_all("Contact")
            if contacts:
                self.remote_target = parse_name_addr(contacts[0]).uri
        state_value = (req.header("Subscription-State") or "").strip()
        state, _, params_text = state_value.partition(";")
        state = state.strip().lower()
        params = parse_params(params_text)
        events: list = []
        body = req.body
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        if state in ("active", "pending"):
            events.append(Notified(body, ctype, state))
            granted = parse_expires(params.get("expires"), -1)
            if granted > 0 and (self.expires_at is None or now + granted < self.expires_at):
                self._schedule(granted, now)
            return make_response(req, 200), events
        if state == "terminated":
            if body:
                events.append(Notified(body, ctype, state))
            reason = params.get("reason", "")
            retry = parse_expires(params.get("retry-after"), -1)
            after = float(retry) if retry >= 0 else RESUBSCRIBE_AFTER.get(reason, 0.0)
            self._reset()
            self.state = "terminated"
            events.append(Terminated(reason, after))
            return make_response(req, 200), events
        return make_response(req, 400, "Bad Subscription-State"), []

    def next_deadline(self) -> float | None:
        return self.refresh_at

    def tick(self, now: float) -> Request | None:
        """The refresh SUBSCRIBE when it is due."""
        if self.refresh_at is not None and now >= self.refresh_at:
            self.refresh_at = None
            return self._build(self.expires)
        return None

