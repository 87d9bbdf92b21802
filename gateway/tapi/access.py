"""Who may feed lamps through the TAPI bridge port: address allow-list and shared secret.

:class:`BridgeAccess` (pure) says whether a peer address may connect and whether a bridge's
first line is the right ``{"auth": "SECRET"}`` (compared in constant time). A flood of
refused connections is logged as a few lines with counts by the gateway's one aggregator of
peer-caused lines, :mod:`gateway.logrepeat` (the refusal names its address as the source).
The file I/O is at the edge: :func:`load_secret` and :class:`SecretFile`, which re-reads
the secret when its file changes (rotation without a restart).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from .. import strictjson

__all__ = ["BridgeAccess", "SecretFile", "load_secret", "AUTH_TIMEOUT",
           "MAX_UNAUTHENTICATED"]

AUTH_TIMEOUT = 10.0  # seconds a connection may take to send its auth line
MAX_UNAUTHENTICATED = 16  # connections waiting to authenticate at once; beyond, refused
SECRET_MIN = 16  # characters: a shorter shared secret is refused at start


def load_secret(path: Path) -> bytes:
    """The shared secret from its file (surrounding whitespace and the newline dropped).
    Raises ValueError with a reason an admin can act on."""
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the bridge secret: {exc.strerror or exc}") \
            from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: the bridge secret is not UTF-8 text") from None
    if len(secret) < SECRET_MIN:
        raise ValueError(f"{path}: the bridge secret must have at least {SECRET_MIN} "
                         "characters")
    return secret.encode()


class SecretFile:
    """The secret of `path`, read again when the file changes (size, mtime, inode). A file
    that turns unreadable or too short keeps the last good secret (and says so once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple | None = None
        self.secret = load_secret(path)  # at start: a clear error if it cannot be used
        self._stamp = self._stat()

    def _stat(self) -> tuple | None:
        try:
            st = self.path.stat()
            return (st.st_size, st.st_mtime_ns, st.st_ino)
        except OSError:
            return None

    def get(self) -> tuple[bytes, str | None]:
        """(the secret in force, a warning when a changed file could not be used)."""
        stamp = self._stat()
        if stamp == self._stamp:
            return self.secret, None
        self._stamp = stamp
        try:
            self.secret = load_secret(self.path)
        except ValueError as exc:
            return self.secret, f"{exc}; still using the previous secret"
        return self.secret, None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # ::ffff:10.0.0.5 on a dual-stack socket is 10.0.0.5
    return addr


@dataclass(frozen=True, slots=True)
class BridgeAccess:
    """`secret`: what the first line must carry (None: no auth line); `allow`: networks
    bridges may connect from (empty: any address)."""

    secret: bytes | None = None
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def build(cls, secret: bytes | None, allow: list[str]) -> BridgeAccess:
        return cls(secret, tuple(ipaddress.ip_network(a, strict=False) for a in allow))

    def address_allowed(self, host: str) -> bool:
        if not self.allow:
            return True
        addr = _address(host)
        return addr is not None and any(addr in net for net in self.allow)

    def check_auth(self, line: bytes) -> str | None:
        """None when `line` is ``{"auth": SECRET}`` with the right secret, else the reason
        (never the secret tried)."""
        if self.secret is None:
            return None
        try:
            msg = strictjson.loads(line)  # (a lone surrogate could not be compared)
        except strictjson.StrictJSONError:
            return "the first line is not {\"auth\": ...}"
        if not isinstance(msg, dict) or set(msg) != {"auth"} or not isinstance(msg["auth"], str):
            return "the first line is not {\"auth\": ...}"
        # Constant time: how much of a guess was right must not show in the timing.
        if not hmac.compare_digest(msg["auth"].encode(), self.secret):
            return "wrong secret"
        return None

