"""Login: passwords (scrypt, constant time), session tokens, the next-login transfer.

A failed login says `auth_failed` and nothing more: an unknown client, a `nologin` client
and a wrong password cost the same time and get the same words. Attempts are limited per
remote address. Every transfer and failure is written to the audit log ("gateway.audit"),
never the password.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from ..auth import (
    DUMMY_HASH,
    generate_password,
    hash_password,
    new_token,
    sip_ha1,
    verify_password,
)
from ..clients import Clients
from ..config import Config
from ..errors import WireError
from ..panels.rights import visible_panels
from ..store import Store
from .wire import Login

__all__ = ["Auth", "LoginSession"]

audit = logging.getLogger("gateway.audit")
FAILED = "wrong client name or password"
CLIENT_FAILURES = 10  # failed logins of one client ...
CLIENT_FAILURE_WINDOW = 300  # ... within this many seconds: further attempts rate_limited


class LoginSession(Protocol):
    """What a login needs of the connection: it sets who logged in, from where."""

    address: str
    closed: bool
    client: str | None
    computer: str | None
    batch: bool

    def welcome_lists(self) -> dict: ...


class Auth:
    """Checks logins (:meth:`login`) against the passwords in `store`; `config()` gives the
    current configuration; a session that logs in is announced to `clients`."""

    def __init__(self, store: Store, clients: Clients, config: Callable[[], Config]) -> None:
        self.store = store
        self.clients = clients
        self._config = config
        self._attempts: dict[str, deque[float]] = {}

    def attempts(self, now: float) -> dict[str, int]:
        """Login attempts per remote address within the last minute (`now`: monotonic)."""
        return {a: n for a, w in list(self._attempts.items())
                if (n := sum(1 for t in w if t > now - 60.0))}

    def _limited(self, address: str, now: float) -> bool:
        window = self._attempts.setdefault(address, deque())
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= self._config().server.login_attempts_per_minute:
            return True
        window.append(now)
        if len(self._attempts) > 10000:  # forget idle addresses, bounded memory
            for addr in [a for a, w in self._attempts.items() if not w][:5000]:
                del self._attempts[addr]
        return False

    async def login(self, session: LoginSession, req: Login) -> dict:
        now = time.monotonic()
        if self._limited(session.address, now):
            audit.warning("login rate limit hit from %s (client %r)", session.address, req.client)
            raise WireError("rate_limited", "too many login attempts: wait a minute", req.id)
        cfg = self._config().client_by_name.get(req.client)
        store = self.store
        if cfg is None or cfg.type == "nologin":
            if req.password is not None:
                await asyncio.to_thread(verify_password, req.password, DUMMY_HASH)
            audit.warning("login failed: client %r from %s (%s)", req.client, session.address,
                          "unknown" if cfg is None else "nologin")
            raise WireError("auth_failed", FAILED, req.id)
        try:
            record = await store.get_password(cfg.name)
            failures = await store.failures(cfg.name)
        except Exception:
            raise WireError("unavailable", "the gateway's state store is unreachable", req.id)
        if failures >= CLIENT_FAILURES:
            # Someone is guessing this client's password: slow down, from any address, on
            # every gateway process (the count lives in Redis).
            audit.warning("login refused: client %r from %s after %d failures (rate limited)",
                          cfg.name, session.address, failures)
            raise WireError("rate_limited", "too many failed logins for this client: wait "
                            "a few minutes", req.id)
        version = record.get("version", "0")
        transferred: str | None = None
        if req.token is not None:
            found = await store.check_token(req.token, self._config().server.token_idle_seconds)
            ok = found is not None and found == (cfg.name, version)
        elif record.get("at_next_login") == "1":
            took, transfer = await store.take_transfer(cfg.name)
            ok = took
            if took:
                transferred = transfer or generate_password()
                hashed = await asyncio.to_thread(hash_password, transferred)
                await store.set_password(cfg.name, hashed, at_next_login=False,
                                         ha1=sip_ha1(cfg.name, transferred))
                version = (await store.get_password(cfg.name)).get("version", "0")
                audit.info("password transferred to client %r at login from %s",
                           cfg.name, session.address)
            else:  # another process took the mark first: check as usual
                record = await store.get_password(cfg.name)
                version = record.get("version", "0")
                stored = record.get("hash") or cfg.password_hash
                ok = await asyncio.to_thread(
                    verify_password, req.password or "", stored or DUMMY_HASH
                ) and stored is not None
        else:
            stored = record.get("hash") or cfg.password_hash
            ok = await asyncio.to_thread(
                verify_password, req.password or "", stored or DUMMY_HASH
            ) and stored is not None
        if not ok:
            audit.warning("login failed: client %r from %s (%s)", cfg.name, session.address,
                          "bad token" if req.token is not None
                          else "bad password" if req.password is not None else "no password")
            await store.count_failure(cfg.name, CLIENT_FAILURE_WINDOW)
            raise WireError("auth_failed", FAILED, req.id)
        if failures:
            await store.clear_failures(cfg.name)
        if session.closed:
            raise WireError("unavailable", "connection closed", req.id)
        token = new_token()
        await store.new_token(token, cfg.name, version, self._config().server.token_idle_seconds)
        session.client = cfg.name
        session.batch = req.batch
        # A computer client logs in with its computer name: that is its computer.
        session.computer = req.computer or (cfg.name if cfg.type == "computer" else None)
        await self.clients.session_started(session)
        audit.info("client %r logged in from %s", cfg.name, session.address)
        lists = session.welcome_lists()
        welcome: dict = {
            "type": "welcome",
            "client": {
                "name": cfg.name,
                "type": cfg.type,
                "display": cfg.display,
                "first_name": cfg.first_name,
                "last_name": cfg.last_name,
                "email": cfg.email,
                "number": cfg.number,
                "department": cfg.department,
                "sip_user": cfg.sip_user,
            },
            "devices": lists["devices"],
            "current_device": self.clients.current(cfg.name).current_device,
            "panels": visible_panels(self._config(), cfg.name),
            "monitors": lists["monitors"],
            "offline_calls": await store.offline_count(cfg.name),
            "token": token,
        }
        if req.id is not None:
            welcome["id"] = req.id
        if transferred is not None:
            welcome["password"] = transferred
        if cfg.admin:
            welcome["admin"] = True  # the client may use the admin requests (docs/admin.md)
        return welcome
