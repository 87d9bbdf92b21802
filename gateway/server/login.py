"""Login: passwords (scrypt, constant time), session tokens, the next-login transfer.

A failed login says `auth_failed` and nothing more: an unknown client, a `nologin` client
and a wrong password cost the same time and get the same words. Failures are limited per
remote address, per client and address, and per client, each counted in Redis and so over
every gateway process (see :class:`Auth`). Every transfer and failure is written to the
audit log ("gateway.audit"), never the password.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import time
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
from ..config import ClientCfg, Config
from ..errors import WireError
from ..panels.rights import visible_panels
from ..store import RedisError, Store
from .guard import WINDOW_SECONDS, AddressFailures
from .wire import Login

__all__ = ["Auth", "LoginSession"]

audit = logging.getLogger("gateway.audit")
log = logging.getLogger("gateway")
FAILED = "wrong client name or password"
LIMITED = "too many failed logins: wait a few minutes"
PAIR_FAILURES = 10  # failed logins of one client from one address ...
CLIENT_FAILURES = 100  # ... or of one client from anywhere (then only from known addresses)
FAILURE_WINDOW = 300  # ... within this many seconds: further attempts rate_limited
SCRYPT_AT_ONCE = max(1, (os.cpu_count() or 2) // 2)  # password checks running at once
MAX_WAITING = 1000  # attempts of one address waiting for a check slot; more: rate_limited
SLOT_WAIT_SECONDS = 10.0  # a waiting attempt asks again at least this often ...
BUSY_POLL_SECONDS = 0.25  # ... and about this often when the attempts in flight that fill
# its address's limit are on other processes (no answer here will wake it)
KNOWN_ADDRESS_SECONDS = 30 * 86400  # an address a client logged in from stays "known"
PASSWORD_CHECK_SECONDS = 1.0  # how often sessions are checked against password changes
# Every session's client is checked at least this often even when no password changed (a
# process of an older version changes passwords without marking it for the others).
PASSWORD_RECHECK_SECONDS = 30.0
JOINED_MAX = 10_000  # sessions remembered for the next check; more: check every session
CLOSE_PASSWORD_CHANGED = 4001  # WebSocket close code: the password changed, log in again


class LoginSession(Protocol):
    """What a login needs of the connection: it sets who logged in, from where."""

    address: str
    closed: bool
    client: str | None
    computer: str | None
    batch: bool
    password_version: str | None

    def welcome_lists(self) -> dict: ...

    async def end(self, code: int, reason: str) -> None: ...


class Auth:
    """Checks logins (:meth:`login`) against the passwords in `store`; `config()` gives the
    current configuration; a session that logs in is announced to `clients`.

    Protection, each against one thing users reported:
    - failures count per address, over every process on one Redis, successes never do:
      clients behind one NAT reconnecting together are not refused, and N processes behind
      a load balancer do not give an address N times the guesses;
    - an attempt is reserved (counted) in Redis *before* its password is checked and given
      back if it succeeds: concurrent guesses cannot all be checked, on any process; attempts
      beyond an address's remaining budget wait ("busy") for those in flight to be answered;
    - this process also keeps its own count per address (:class:`AddressFailures`): a first,
      free gate that refuses an address this process alone saw fail enough, without asking
      Redis, and wakes the attempts waiting on this process as soon as one here settles;
    - failures count per client *and address*: a flood of wrong passwords slows its address,
      never the account's owner elsewhere; a valid token always works; only when a client
      gets more than CLIENT_FAILURES wrong from everywhere are addresses it never logged in
      from held back;
    - an unknown name takes the same path (a Redis round trip, an scrypt check, the same
      limits and words) as a known one: nothing tells which names exist;
    - :meth:`watch_passwords` ends the sessions opened before a password change.
    """

    def __init__(self, store: Store, clients: Clients, config: Callable[[], Config]) -> None:
        self.store = store
        self.clients = clients
        self._config = config
        self._addresses = AddressFailures(config().server.login_attempts_per_minute)
        self._settled: dict[str, asyncio.Event] = {}  # address -> set when an attempt settles
        self._waiting: dict[str, int] = {}  # address -> attempts waiting for a slot
        self._checking: dict[str, int] = {}  # address -> attempts being checked here
        self._background: set[asyncio.Task] = set()  # slots given back after no answer
        # scrypt is built to be costly (CPU and 16 MiB each): at most this many at once, so
        # that a burst of logins never takes the cores the lamps need; the rest queue.
        self._cpu = asyncio.Semaphore(SCRYPT_AT_ONCE)
        # Sessions that logged in since watch_passwords last looked (and whether more came
        # than it keeps): they are checked even in a round where no password changed.
        self._joined: list[LoginSession] = []
        self._joined_overflow = False

    async def login(self, session: LoginSession, req: Login) -> dict:
        cfg = self._config().client_by_name.get(req.client)
        if cfg is not None and cfg.type == "nologin":
            cfg = None  # never logs in: exactly like an unknown name
        name, address, store = req.client, session.address, self.store
        ttl = self._config().server.token_idle_seconds
        try:
            if req.token is not None:
                # A valid token always works (256 random bits: nobody guesses one); only a
                # wrong one counts as a failure.
                found = await store.check_token(req.token, ttl)
                record = await store.get_password(name)
                version = record.get("version", "0")
                if cfg is not None and found == (cfg.name, version):
                    return await self._welcome(session, req, cfg, version, None)
                await self._reserve(session, req, failed=True)
                audit.warning("login failed: client %r from %s (bad token)", name, address,
                              extra={"source": address})
                raise WireError("auth_failed", FAILED, req.id)
            attempt = await self._reserve(session, req)
            ok = False
            try:
                record = await store.get_password(name)
                version = record.get("version", "0")
                transferred: str | None = None
                if cfg is not None and record.get("at_next_login") == "1":
                    ok, transferred = await store.take_transfer(cfg.name)
                    if ok:
                        transferred = transferred or generate_password()
                        hashed = await self._scrypt(hash_password, transferred)
                        await store.set_password(cfg.name, hashed, at_next_login=False,
                                                 ha1=sip_ha1(cfg.name, transferred))
                        version = (await store.get_password(cfg.name)).get("version", "0")
                        audit.info("password transferred to client %r at login from %s",
                                   cfg.name, address)
                    else:  # another process took the mark first: check as usual
                        transferred = None
                        record = await store.get_password(cfg.name)
                        version = record.get("version", "0")
                if not ok:
                    stored = (record.get("hash") or cfg.password_hash) if cfg else None
                    # Always one scrypt check, against a dummy hash where there is no
                    # account or no password: the same time for every wrong answer.
                    ok = await self._scrypt(
                        verify_password, req.password or "", stored or DUMMY_HASH
                    ) and stored is not None
            except BaseException:
                self._answered(address, failed=False)  # no answer
                self._drop(address, attempt)
                raise
            self._answered(address, failed=not ok)
            if not ok:
                try:
                    await store.fail_login(address, attempt, address_window=WINDOW_SECONDS)
                except (RedisError, OSError) as e:
                    # The answer is still the truth; the attempt's slot ends with its lease.
                    log.warning("failed login from %s not recorded in Redis: %s", address, e)
                audit.warning("login failed: client %r from %s (%s)", name, address,
                              "unknown or nologin client" if cfg is None
                              else "bad password" if req.password is not None
                              else "no password", extra={"source": address})
                raise WireError("auth_failed", FAILED, req.id)
            await store.release_login(name, address, remember=KNOWN_ADDRESS_SECONDS,
                                      attempt=attempt)
            assert cfg is not None
            return await self._welcome(session, req, cfg, version, transferred)
        except RedisError:
            raise WireError("unavailable", "the gateway's state store is unreachable",
                            req.id) from None

    async def _reserve(self, session: LoginSession, req: Login, *,
                       failed: bool = False) -> str:
        """Count the attempt as a failure until it succeeds (with `failed`, a wrong token:
        as a failure, at once); refuse it (rate_limited, the same words for every name) when
        its address, its client+address or its client is over the limit; wait while the
        attempts in flight of its address fill the rest of the address's limit. Returns the
        attempt's id in Redis; the caller settles it once the attempt is answered."""
        address = session.address
        limit = self._config().server.login_attempts_per_minute
        self._addresses.limit = limit
        attempt = secrets.token_hex(8)
        while True:
            # First this process's own count (free), then the count every process shares
            # (one Redis round trip, which also takes the client+address and client slots).
            now = time.monotonic()
            verdict = self._addresses.reserve(address, now)
            if verdict == "ok":
                try:
                    verdict = await self.store.reserve_login(
                        req.client, address, pair_limit=PAIR_FAILURES,
                        client_limit=CLIENT_FAILURES, window=FAILURE_WINDOW,
                        address_limit=limit, address_window=WINDOW_SECONDS,
                        attempt=attempt, failed=failed)
                except BaseException as e:
                    self._settle(address, now, failed=False)
                    if not isinstance(e, (RedisError, OSError)):
                        # Cancelled (the connection went): it may have been taken.
                        self._drop(address, attempt)
                    raise
                if verdict == "ok":
                    if failed:
                        self._settle(address, time.monotonic(), failed=True)
                    else:
                        self._checking[address] = self._checking.get(address, 0) + 1
                    return attempt
                # Not taken: the local slot goes back quietly (waking the waiters here would
                # only send them to Redis again for the same answer).
                self._addresses.settle(address, time.monotonic(), failed=False)
                if verdict in ("pair", "client"):
                    audit.warning("login refused: client %r from %s (%s)", req.client,
                                  address, "too many failures from this address"
                                  if verdict == "pair" else
                                  "too many failures, unknown address",
                                  extra={"source": address})
                    raise WireError("rate_limited", LIMITED, req.id)
            waiting = self._waiting.get(address, 0)
            if verdict == "limited" or waiting >= MAX_WAITING:
                audit.warning("login rate limit hit from %s (client %r)", address, req.client,
                              extra={"source": address})
                raise WireError("rate_limited", "too many failed logins from this address: "
                                "wait a minute", req.id)
            # Attempts in flight fill the limit: wait for one to be answered. One answered
            # here wakes us; one answered on another process does not, so while none is
            # being checked here, ask again soon (spread out: the waiters do not all ask at
            # once; only those the local gate lets through ask Redis).
            wait = SLOT_WAIT_SECONDS if self._checking.get(address) else \
                BUSY_POLL_SECONDS * random.uniform(0.5, 1.5)
            self._waiting[address] = waiting + 1
            event = self._settled.setdefault(address, asyncio.Event())
            try:
                async with asyncio.timeout(wait):
                    await event.wait()
            except TimeoutError:
                pass
            finally:
                left = self._waiting[address] - 1
                if left:
                    self._waiting[address] = left
                else:
                    del self._waiting[address]

    def _drop(self, address: str, attempt: str) -> None:
        """Give the shared slot of an attempt that got no answer back, in the background
        (its caller may be being cancelled); if Redis is away, its lease ends on its own."""
        async def drop() -> None:
            try:
                await self.store.drop_login(address, attempt)
            except (RedisError, OSError):
                pass

        task = asyncio.get_running_loop().create_task(drop())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _scrypt(self, fn: Callable, *args: str):  # noqa: ANN202
        async with self._cpu:
            return await asyncio.to_thread(fn, *args)

    def _answered(self, address: str, failed: bool) -> None:
        """An attempt being checked here was answered (`failed`: a wrong password)."""
        left = self._checking.get(address, 0) - 1
        if left > 0:
            self._checking[address] = left
        else:
            self._checking.pop(address, None)
        self._settle(address, time.monotonic(), failed)

    def _settle(self, address: str, now: float, failed: bool) -> None:
        """An attempt of `address` was answered: count it, wake those waiting for a slot."""
        self._addresses.settle(address, now, failed)
        event = self._settled.pop(address, None)
        if event is not None:
            event.set()

    async def _welcome(self, session: LoginSession, req: Login, cfg: ClientCfg,
                       version: str, transferred: str | None) -> dict:
        store = self.store
        if session.closed:
            raise WireError("unavailable", "connection closed", req.id)
        token = new_token()
        await store.new_token(token, cfg.name, version, self._config().server.token_idle_seconds)
        session.password_version = version
        session.client = cfg.name
        if len(self._joined) < JOINED_MAX:
            self._joined.append(session)
        else:
            self._joined_overflow = True
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

    async def watch_passwords(self) -> None:
        """Until cancelled: end every session opened before its client's password changed
        (on any process: the version lives in Redis), as its token already is.

        Every client's version is read (a command per client) only when some password
        changed (`Store.passwords_version` moved), when more sessions logged in than are
        remembered, or every PASSWORD_RECHECK_SECONDS; otherwise one `GET` a second, plus
        the versions of the clients that logged in since the last round. Reading every
        client's version every second was a command per client per second, and a stall of
        the event loop that grew with the clients: 27-30 ms of CPU a second at 1,000 clients
        (redis-py's pipeline, measured), in every process.
        """
        last_version: str | None | object = object()  # nothing read yet
        last_full = float("-inf")
        while True:
            await asyncio.sleep(PASSWORD_CHECK_SECONDS)
            if not self._joined and not any(self.clients.sessions.values()):
                continue  # no session here: nothing to check, no Redis command
            try:
                # Read before the sessions are looked at: a change after this read moves it
                # again, and the next round reads every client.
                changed = await self.store.passwords_version()
            except (RedisError, OSError):
                continue
            joined, overflow = self._joined, self._joined_overflow
            self._joined, self._joined_overflow = [], False
            now = time.monotonic()
            full = (changed != last_version or overflow
                    or now - last_full >= PASSWORD_RECHECK_SECONDS)
            sessions: dict[str, list[LoginSession]] = (
                {name: list(subs) for name, subs in self.clients.sessions.items() if subs}
                if full else {})
            listed = {id(x) for subs in sessions.values() for x in subs} if full else set()
            for session in joined:
                if session.client is not None and not session.closed and id(session) not in listed:
                    sessions.setdefault(session.client, []).append(session)
            if not sessions:
                if full:
                    last_version, last_full = changed, now
                continue
            try:
                versions = await self.store.password_versions(list(sessions))
            except (RedisError, OSError):
                # Not checked: the sessions that joined wait for the next round.
                self._joined[:0] = joined
                if len(self._joined) > JOINED_MAX:
                    del self._joined[JOINED_MAX:]
                    self._joined_overflow = True
                continue
            if full:
                last_version, last_full = changed, now
            for name, subs in sessions.items():
                for session in subs:
                    seen = getattr(session, "password_version", None)
                    if seen is not None and seen != versions[name] and not session.closed:
                        audit.info("client %r at %s: password changed, session ended",
                                   name, session.address)
                        await session.end(CLOSE_PASSWORD_CHANGED,
                                          "password changed: log in again")
