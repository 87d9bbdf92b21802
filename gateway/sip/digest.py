"""SIP digest authentication for the BLF server, pure (RFC 2617 / RFC 3261 section 22).

MD5 with ``qop=auth`` (also accepted: no qop, RFC 2069 style, which old phones still send).
The gateway stores only HA1 = MD5(client:realm:password) (:func:`gateway.auth.sip_ha1`).

Nonces are stateless: ``{issued-at hex}.{HMAC-SHA256(secret, issued-at)}``, so any gateway
process with the same secret could check them and a restart merely makes old ones stale.
They expire after `lifetime` seconds (the client is told ``stale=true`` and retries without
asking the user). Each (nonce, nc) pair is accepted once (bounded memory), so a captured
request cannot be replayed. Comparisons are constant-time. `now` comes from the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = [
    "DigestResult",
    "DigestAuthenticator",
    "parse_digest",
    "digest_response",
    "header_values",
    "request_uri",
    "uri_user",
]

_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^\s,"]+)\s*(,|$)')


def parse_digest(value: str) -> dict[str, str] | None:
    """``Digest k=v, k="v"`` -> {k: v} (keys lower case); None if not a Digest header."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest" or len(value) > 4096:
        return None
    out: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if not m:
            return None
        key = m.group(1).lower()
        val = m.group(3) if m.group(3) is not None else m.group(2)
        if m.group(3) is not None:
            val = re.sub(r"\\(.)", r"\1", val)
        out.setdefault(key, val)
        pos = m.end()
    return out


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - SIP digest is MD5


def digest_response(ha1: str, method: str, uri: str, nonce: str, *, qop: str | None = None,
                    nc: str = "", cnonce: str = "") -> str:
    """The `response` a client computes (RFC 2617 3.2.2.1), from HA1."""
    ha2 = _md5(f"{method}:{uri}")
    if qop:
        return _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _md5(f"{ha1}:{nonce}:{ha2}")


def header_values(raw: str, name: str, compact: str | None = None) -> list[str]:
    """Values of header `name` (or its compact form) in a raw SIP message, folding undone."""
    head = raw.replace("\r\n", "\n").split("\n\n", 1)[0]
    lines: list[str] = []
    for line in head.split("\n")[1:]:
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    names = {name.lower()} | ({compact.lower()} if compact else set())
    out = []
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in names:
            out.append(value.strip())
    return out


def request_uri(raw: str) -> tuple[str, str] | None:
    """(method, request-URI) of a raw request's first line."""
    first = raw.lstrip().split("\n", 1)[0].strip()
    parts = first.split(" ")
    if len(parts) != 3 or not parts[2].upper().startswith("SIP/"):
        return None
    return parts[0].upper(), parts[1]


def uri_user(uri: str) -> str | None:
    """The user part of a sip:/sips: URI (percent-decoded), or None."""
    uri = uri.strip().strip("<>")
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips") or "@" not in rest:
        return None
    user = rest.split("@", 1)[0].split(";", 1)[0]
    return unquote(user) or None


def _same_target(digest_uri: str, request: str) -> bool:
    """Whether the digest `uri` names the request's target. Phones differ in how they print
    it (port, parameters, the To URI instead of the request-URI), so the user parts are
    compared, and a uri without a user part (``sip:host:port``, as sipp and some phones
    send it) is accepted; the response binds whatever uri the client used and replays are
    refused separately, so this only keeps an answer for one target from opening another."""
    if digest_uri.strip("<>").lower() == request.strip("<>").lower():
        return True
    user = uri_user(digest_uri)
    return user is None or user == uri_user(request)


@dataclass(frozen=True, slots=True)
class DigestResult:
    """Outcome of checking a request: `client` set when authenticated; otherwise `stale`
    (expired nonce: challenge again with stale=true) or `reason` for the log."""

    client: str | None
    stale: bool = False
    reason: str = ""


class DigestAuthenticator:
    """Issues challenges and verifies Authorization headers for one realm."""

    def __init__(self, realm: str, *, secret: bytes | None = None, lifetime: float = 300.0,
                 replay_window: int = 10000) -> None:
        self.realm = realm
        self._secret = secret or secrets.token_bytes(32)
        self.lifetime = lifetime
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._window = replay_window

    def _sign(self, issued: str) -> str:
        return hmac.new(self._secret, issued.encode(), hashlib.sha256).hexdigest()[:32]

    def nonce(self, now: float) -> str:
        issued = f"{int(now * 1000):x}"
        return f"{issued}.{self._sign(issued)}"

    def challenge(self, now: float, *, stale: bool = False) -> str:
        """A WWW-Authenticate header value."""
        value = (f'Digest realm="{self.realm}", nonce="{self.nonce(now)}", '
                 f'algorithm=MD5, qop="auth"')
        return value + (", stale=true" if stale else "")

    def _nonce_state(self, nonce: str, now: float) -> str:
        issued, sep, sig = nonce.partition(".")
        if not sep or not hmac.compare_digest(sig.encode(), self._sign(issued).encode()):
            return "bad"
        try:
            at = int(issued, 16) / 1000
        except ValueError:
            return "bad"
        if at > now + 5 or now - at > self.lifetime:
            return "stale"
        return "ok"

    def verify(self, authorization: str, method: str, ha1_of, now: float,
               expected_uri: str | None = None) -> DigestResult:
        """Check one Authorization header value. `ha1_of(client)` gives the stored HA1 (or
        None for an unknown client or one without a password)."""
        p = parse_digest(authorization)
        if p is None:
            return DigestResult(None, reason="not a Digest authorization")
        for key in ("username", "realm", "nonce", "uri", "response"):
            if not p.get(key):
                return DigestResult(None, reason=f"{key} missing")
        if p["realm"] != self.realm:
            return DigestResult(None, reason=f"realm {p['realm']!r} is not ours")
        if p.get("algorithm", "MD5").upper() != "MD5":
            return DigestResult(None, reason=f"algorithm {p['algorithm']!r} not supported")
        qop = p.get("qop")
        if qop is not None and qop.lower() != "auth":
            return DigestResult(None, reason=f"qop {qop!r} not supported")
        if qop and not (p.get("nc") and p.get("cnonce")):
            return DigestResult(None, reason="nc/cnonce missing")
        if expected_uri is not None and not _same_target(p["uri"], expected_uri):
            return DigestResult(None, reason=f"digest uri {p['uri']!r} is not the request's")
        state = self._nonce_state(p["nonce"], now)
        if state == "bad":
            return DigestResult(None, reason="nonce not issued by us")
        ha1 = ha1_of(p["username"])
        # An unknown client is checked against a random HA1, so that its answer takes the same
        # path (and time) as a wrong password and says nothing about which it was.
        candidate = ha1 if isinstance(ha1, str) and ha1 else secrets.token_hex(16)
        expected = digest_response(candidate.lower(), method, p["uri"], p["nonce"],
                                   qop=qop and "auth", nc=p.get("nc", ""),
                                   cnonce=p.get("cnonce", ""))
        if not hmac.compare_digest(expected.encode(), p["response"].lower().encode()):
            return DigestResult(None, reason="wrong credentials")
        if not ha1:
            return DigestResult(None, reason="wrong credentials")
        if state == "stale":
            return DigestResult(None, stale=True, reason="nonce expired")
        key = (p["nonce"], p.get("nc", "") + ":" + p.get("cnonce", ""))
        if key in self._seen:
            return DigestResult(None, stale=True, reason="nonce count replayed")
        self._seen[key] = None
        while len(self._seen) > self._window:
            self._seen.popitem(last=False)
        return DigestResult(p["username"])
