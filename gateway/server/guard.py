"""Who is knocking, and how often they got it wrong: the pure parts of login protection.

- :func:`client_address`: the address a connection speaks for. Behind a reverse proxy or
  load balancer every connection comes from the proxy; its ``X-Forwarded-For`` header is
  believed only when the connection comes from a configured trusted proxy
  (``[server] trusted_proxies``), and then the rightmost address that is not itself a
  trusted proxy is the client (the leftmost ones are whatever the client chose to send).
- :class:`AddressFailures`: failed logins per address in the last minute, in this process.
  An attempt is *reserved* before its password is checked and *released* when it succeeds,
  so concurrent attempts cannot all slip under the limit, and successful logins (100 clients
  behind one NAT reconnecting after a restart) never count. The same count, kept in Redis
  over every process, decides (``Store.reserve_login``); this one is the free first gate.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Iterable

__all__ = ["client_address", "parse_networks", "AddressFailures", "WINDOW_SECONDS"]

WINDOW_SECONDS = 60.0
MAX_ADDRESSES = 10_000  # addresses remembered; idle ones are forgotten beyond

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """"10.0.0.5", "10.1.0.0/16", "::1" -> networks (ValueError for a bad one)."""
    return tuple(ipaddress.ip_network(i.strip(), strict=False) for i in items)


def _in(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    return any(ip in n for n in networks)


def client_address(peer: str, forwarded: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The client's address: `peer`, unless `peer` is a trusted proxy and the
    X-Forwarded-For values (`forwarded`, one per header line) name another one."""
    if not trusted or not _in(peer, trusted):
        return peer
    hops = [h.strip() for line in forwarded for h in line.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop.strip("[]")))
            except ValueError:
                return peer  # garbage in the header: the proxy is all we know
    return peer


class AddressFailures:
    """Failed login attempts per address within the last minute, and attempts in flight.

    An address is held back when it has `limit` failures in the window. Attempts being
    checked count as failures until they are answered: when they fill the rest of the
    limit, the next attempt is told to wait ("busy") for one of them to settle rather than
    refused (a hundred clients behind one NAT logging in at once go through, `limit` at a
    time), and concurrent guesses can never get more than `limit` checks.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._failed: dict[str, deque[float]] = {}
        self._flying: dict[str, int] = {}

    def _window(self, address: str, now: float) -> deque[float]:
        window = self._failed.setdefault(address, deque())
        while window and window[0] <= now - WINDOW_SECONDS:
            window.popleft()
        return window

    def reserve(self, address: str, now: float) -> str:
        """Take a slot before checking an attempt: "ok" (taken), "limited" (the address
        has `limit` failures: refuse), "busy" (attempts in flight fill the rest of the
        limit: wait for one to settle, then ask again)."""
        failed = len(self._window(address, now))
        flying = self._flying.get(address, 0)
        if failed >= self.limit:
            return "limited"
        if failed + flying >= self.limit:
            return "busy"
        self._flying[address] = flying + 1
        if len(self._failed) > MAX_ADDRESSES:
            for addr in [a for a, w in self._failed.items()
                         if (not w or w[-1] <= now - WINDOW_SECONDS) and a not in self._flying]:
                del self._failed[addr]
        return "ok"

    def settle(self, address: str, now: float, failed: bool) -> None:
        """The reserved attempt was answered: a failure counts for a minute, a success (or
        an attempt that could not be checked) not at all."""
        flying = self._flying.get(address, 0) - 1
        if flying > 0:
            self._flying[address] = flying
        else:
            self._flying.pop(address, None)
        if failed:
            self._window(address, now).append(now)

    def failures(self, address: str, now: float) -> int:
        return len(self._window(address, now))

    def all_failures(self, now: float) -> dict[str, int]:
        """Addresses with failures in the window, and how many."""
        return {a: n for a in list(self._failed) if (n := len(self._window(a, now)))}
