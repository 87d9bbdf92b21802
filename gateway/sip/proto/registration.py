"""REGISTER (RFC 3261 section 10) with digest, sans-I/O: one binding kept alive.

:class:`Registration` builds REGISTER requests for an address of record, answers digest
challenges (401/407, ``stale=true`` silently; a second refusal in a row is a failure), follows
423 Min-Expires, re-registers at 80 % of the granted time (at least 30 s before it ends) and,
after a failure or no answer, tries again with backoff. :attr:`Registration.up` says whether
the binding stands; `now` comes in, :meth:`Registration.next_deadline` goes out.
"""

from __future__ import annotations

import secrets

from ...backoff import Backoff
from .message import Request, Response, new_tag, parse_name_addr
from .subscription import Local, answer_challenge, parse_expires, request_head

__all__ = ["Registration"]


class Registration:
    """One registration binding (see the module docstring)."""

    def __init__(self, registrar: str, aor: str, local: Local, *,
                 credentials: tuple[str, str] | None = None, expires: int = 600,
                 backoff: Backoff | None = None) -> None:
        self.registrar, self.aor, self.local = registrar, aor, local
        self.credentials = credentials
        self.expires = expires
        self.backoff = backoff or Backoff(1.0, 60.0)
        self.call_id = secrets.token_hex(12)
        self.tag = new_tag()
        self.cseq = 0
        self.up = False
        self.reason = "not registered yet"
        self.due: float | None = 0.0  # when the next REGISTER goes out
        self.expires_at: float | None = None
        self._challenge: tuple[str, str] | None = None
        self._nc = 0
        self._refused = 0
        self.in_flight = False

    def request(self, expires: int | None = None) -> Request:
        self.cseq += 1
        self.in_flight = True
        exp = self.expires if expires is None else expires
        headers = request_head(self.local, f"<{self.aor}>;tag={self.tag}", f"<{self.aor}>",
                               self.call_id, self.cseq, "REGISTER")
        headers += [
            ("Contact", f"<{self.local.contact}>"),
            ("Expires", str(exp)),
            ("Allow", "SUBSCRIBE, NOTIFY, OPTIONS"),
        ]
        if self._challenge is not None and self.credentials:
            self._nc += 1
            answer = answer_challenge(self._challenge, "REGISTER", self.registrar,
                                      self.credentials, nc=self._nc)
            if answer is not None:
                headers.append(answer)
        return Request(tuple(headers), b"", "REGISTER", self.registrar)

    def on_response(self, resp: Response | None, now: float) -> Request | None:
        """The final response to our last REGISTER (None: no answer). Returns a REGISTER to
        send at once (a digest answer, a longer expiry), or None."""
        self.in_flight = False
        if resp is None:
            return self._fail(now, "the registrar does not answer")
        if 200 <= resp.status < 300:
            self._refused = 0
            granted = self._granted(resp)
            self.up = True
            self.reason = f"registered for {granted} s"
            self.backoff.reset()
            self.expires_at = now + granted
            self.due = now + max(1.0, min(granted * 0.8, granted - 30.0)
                                 if granted > 2 else granted / 2)
            return None
        if resp.status in (401, 407) and self.credentials:
            name = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
            challenge = resp.header(name)
            stale = challenge is not None and "stale=true" in challenge.replace(" ", "").lower()
            self._refused = 0 if stale else self._refused + 1
            if challenge is not None and self._refused <= 1:
                self._challenge, self._nc = (name, challenge), 0
                return self.request()
            return self._fail(now, f"{resp.status}: credentials refused")
        if resp.status == 423:
            minimum = parse_expires(resp.header("Min-Expires"), 0)
            if self.expires < minimum <= 7200:
                self.expires = minimum
                return self.request()
        return self._fail(now, f"{resp.status} {resp.reason}")

    def _granted(self, resp: Response) -> int:
        # Our own binding's expires parameter (the registrar may list others), else Expires.
        for value in resp.header_all("Contact"):
            try:
                c = parse_name_addr(value)
            except ValueError:
                continue
            if c.uri.split(";")[0] == self.local.contact.split(";")[0] and "expires" in c.params:
                return parse_expires(c.params["expires"], self.expires)
        return min(parse_expires(resp.header("Expires"), self.expires), self.expires) or \
            self.expires

    def _fail(self, now: float, why: str) -> None:
        self.up = False
        self.reason = why
        self.expires_at = None
        self._challenge = None
        self._refused = 0
        self.due = now + self.backoff.next()
        return None

    def next_deadline(self) -> float | None:
        deadlines = [t for t in (None if self.in_flight else self.due, self.expires_at)
                     if t is not None]
        return min(deadlines) if deadlines else None

    def tick(self, now: float) -> Request | None:
        """A REGISTER when one is due; the binding lapses at its expiry if not renewed."""
        if self.expires_at is not None and now >= self.expires_at:
            self.up = False
            self.reason = "the registration expired"
            self.expires_at = None
        if not self.in_flight and self.due is not None and now >= self.due:
            self.due = None
            return self.request()
        return None

