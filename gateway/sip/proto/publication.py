"""SIP PUBLISH (RFC 3903), sans-I/O: one event state kept at a presence server.

:class:`Publication` sends the first state without ``SIP-If-Match``, then modifies and
refreshes with the entity tag the server gave (``SIP-ETag``); a 412 (the server lost it, e.g.
after a restart) publishes the whole state again at once. Digest challenges are answered
(401/407, one try per challenge), 423 Min-Expires followed. At most one PUBLISH is in flight:
a state given meanwhile is sent, newest only, when the answer arrives.

Dialog state: a presence server keeps one entity per dialog and refuses to bring a
terminated one back (Kamailio: "Trying to update an already terminated state"), so after a
document whose dialogs are all terminated the next state is published as a new entity (no
``SIP-If-Match``); the finished one expires on its own.
"""

from __future__ import annotations

import secrets

from .message import Request, Response, new_tag
from .subscription import Local, answer_challenge, parse_expires, request_head

__all__ = ["Publication"]


class Publication:
    """One published event state (see the module docstring)."""

    def __init__(self, target: str, local: Local, event: str, content_type: str, *,
                 expires: int = 120, credentials: tuple[str, str] | None = None,
                 dest: object = None) -> None:
        self.target, self.local, self.event = target, local, event
        self.content_type = content_type
        self.expires = expires
        self.credentials = credentials
        self.dest = dest
        self.etag: str | None = None
        self.body: bytes | None = None  # the state we want the server to have
        self.sent: bytes | None = None  # the state of the PUBLISH in flight (or last sent)
        self.in_flight: Request | None = None
        self.dirty = False
        self.refresh_at: float | None = None
        self.failed: str | None = None
        self._challenge: tuple[str, str] | None = None
        self._tries = 0
        self.call_id = secrets.token_hex(10)
        self.tag = new_tag()
        self.cseq = 0

    def set_state(self, body: bytes, now: float) -> Request | None:
        """The state to publish; a PUBLISH to send now, or None (one is in flight, or the
        server already has it)."""
        if body == self.body and self.etag is not None and not self.dirty:
            return None
        self.body = body
        if self.in_flight is not None:
            self.dirty = True
            return None
        return self._build(body)

    def _all_terminated(self, body: bytes | None) -> bool:
        return (self.event == "dialog" and body is not None
                and body.count(b"<state>") == body.count(b"<state>terminated</state>"))

    def _build(self, body: bytes | None) -> Request:
        if body is not None and body != self.sent and self._all_terminated(self.sent):
            self.etag = None  # a new dialog entity (the finished one expires by itself)
        self.cseq += 1
        headers = request_head(self.local, f"<{self.target}>;tag={self.tag}",
                               f"<{self.target}>", self.call_id, self.cseq, "PUBLISH")
        headers += [
            ("Event", self.event),
            ("Expires", str(self.expires)),
        ]
        if self.etag is not None:
            headers.append(("SIP-If-Match", self.etag))
        if body is not None:
            headers.append(("Content-Type", self.content_type))
        if self._challenge is not None and self.credentials:
            answer = answer_challenge(self._challenge, "PUBLISH", self.target,
                                      self.credentials)
            if answer is not None:
                headers.append(answer)
        req = Request(tuple(headers), body or b"", "PUBLISH", self.target)
        self.in_flight = req
        self.sent = body if body is not None else self.sent
        return req

    def on_response(self, resp: Response | None, now: float) -> Request | None:
        """The answer to the PUBLISH in flight (None: none came); the next one to send."""
        req, self.in_flight = self.in_flight, None
        if req is None:
            return None
        if resp is not None and 200 <= resp.status < 300:
            self._tries = 0
            self.failed = None
            self.etag = resp.header("SIP-ETag") or self.etag
            granted = parse_expires(resp.header("Expires"), self.expires) or self.expires
            self.refresh_at = now + max(1.0, min(granted * 0.8, granted - 10.0))
            if self.dirty or self.body != self.sent:
                self.dirty = False
                return self._build(self.body)
            return None
        if resp is not None and resp.status == 412:
            # The server forgot our entity (restart): the whole state again, without a tag.
            self.etag = None
            return self._build(self.body)
        if resp is not None and resp.status in (401, 407) and self.credentials:
            name = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
            value = resp.header(name)
            self._tries += 1
            if value is not None and self._tries <= 2:
                self._challenge = (name, value)
                return self._build(self.body if req.body else None)
        if resp is not None and resp.status == 423:
            minimum = parse_expires(resp.header("Min-Expires"), 0)
            if self.expires < minimum <= 7200:
                self.expires = minimum
                return self._build(self.body)
        self.failed = f"{resp.status} {resp.reason}" if resp is not None else "no answer"
        self.etag = None
        self.refresh_at = now + 5.0  # try again soon with the whole state
        self.dirty = True
        return None

    def next_deadline(self) -> float | None:
        return None if self.in_flight is not None else self.refresh_at

    def tick(self, now: float) -> Request | None:
        if self.in_flight is not None or self.refresh_at is None or now < self.refresh_at:
            return None
        self.refresh_at = None
        if self.etag is None or self.dirty:
            self.dirty = False
            return self._build(self.body)
        return self._build(None)  # a refresh: the tag alone keeps the state
