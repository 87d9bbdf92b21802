"""The password watcher (gateway.server.login.Auth.watch_passwords): sessions opened before
their client's password changed are ended, and a quiet second costs one read, not one per
client (it was a command per logged-in client every second, a stall that grew with them)."""

from __future__ import annotations

import asyncio

import pytest

import gateway.server.login as login
from gateway.config import parse_config
from gateway.server.login import Auth

CONFIG = parse_config("""
[sources.tapi_bridge]
[[devices]]
id = "201"
number = "201"
""")


class Store:
    """Password versions as Redis holds them; counts what the watcher asks."""

    def __init__(self) -> None:
        self.versions: dict[str, str] = {}
        self.changed: str | None = None  # {blf}:pwver
        self.asked: list[list[str]] = []  # the clients of each password_versions call
        self.reads = 0

    async def passwords_version(self) -> str | None:
        self.reads += 1
        return self.changed

    async def password_versions(self, clients: list[str]) -> dict[str, str]:
        self.asked.append(sorted(clients))
        return {c: self.versions.get(c, "0") for c in clients}

    def change(self, client: str) -> None:
        self.versions[client] = str(int(self.versions.get(client, "0")) + 1)
        self.changed = f"v{len(self.asked)}-{client}"


class Session:
    def __init__(self, client: str, version: str) -> None:
        self.client, self.password_version, self.address = client, version, "10.0.0.1"
        self.closed = False
        self.ended: int | None = None

    async def end(self, code: int, reason: str) -> None:
        self.closed, self.ended = True, code


class Clients:
    def __init__(self) -> None:
        self.sessions: dict[str, set[Session]] = {}

    def add(self, s: Session) -> Session:
        self.sessions.setdefault(s.client, set()).add(s)
        return s


def run_rounds(monkeypatch, auth: Auth, rounds: list) -> None:  # noqa: ANN001
    """Run the watcher; before each round, call the next function of `rounds` (the clock
    moves 1 s a round)."""
    clock = [1000.0]
    todo = list(rounds)

    async def tick(_s: float) -> None:
        if not todo:
            raise asyncio.CancelledError
        clock[0] += 1.0
        todo.pop(0)()

    monkeypatch.setattr(login.asyncio, "sleep", tick)
    monkeypatch.setattr(login.time, "monotonic", lambda: clock[0])
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(auth.watch_passwords())


def setup(n: int = 100) -> tuple[Store, Clients, Auth, list[Session]]:
    store, clients = Store(), Clients()
    auth = Auth(store, clients, lambda: CONFIG)  # type: ignore[arg-type]
    sessions = [clients.add(Session(f"user{i}", "0")) for i in range(n)]
    return store, clients, auth, sessions


def nothing() -> None:
    pass


def test_quiet_seconds_read_one_value_not_every_client(monkeypatch):  # noqa: ANN001
    store, _, auth, sessions = setup(100)
    run_rounds(monkeypatch, auth, [nothing] * 10)
    assert store.reads == 10
    assert len(store.asked) == 1 and len(store.asked[0]) == 100  # the first round only
    assert all(s.ended is None for s in sessions)


def test_a_password_change_ends_that_clients_older_sessions(monkeypatch):  # noqa: ANN001
    store, _, auth, sessions = setup(100)
    run_rounds(monkeypatch, auth, [nothing, nothing, lambda: store.change("user7")])
    assert sessions[7].ended == login.CLOSE_PASSWORD_CHANGED
    assert all(s.ended is None for i, s in enumerate(sessions) if i != 7)
    assert len(store.asked) == 2 and len(store.asked[1]) == 100  # all read again, once


def test_a_session_that_logged_in_meanwhile_is_checked_in_the_next_quiet_round(monkeypatch):  # noqa: ANN001
    # Its login read the old version just before the password changed, and the change was
    # seen in a round before the session was listed: the next round checks it alone.
    store, clients, auth, _ = setup(50)
    late = Session("user3", "0")

    def change() -> None:
        store.change("user3")

    def joins() -> None:
        auth._joined.append(clients.add(late))

    run_rounds(monkeypatch, auth, [nothing, change, joins, nothing])
    assert late.ended == login.CLOSE_PASSWORD_CHANGED
    assert store.asked[-1] == ["user3"]


def test_every_client_is_read_again_now_and_then_whatever_the_marker_says(monkeypatch):  # noqa: ANN001
    # A process of an older version changes a password without moving the marker.
    store, _, auth, sessions = setup(20)

    def silent_change() -> None:
        store.versions["user1"] = "9"

    rounds = [nothing, silent_change] + [nothing] * int(login.PASSWORD_RECHECK_SECONDS)
    run_rounds(monkeypatch, auth, rounds)
    assert sessions[1].ended == login.CLOSE_PASSWORD_CHANGED
    assert len(store.asked) == 2


def test_too_many_logins_to_remember_mean_a_full_check(monkeypatch):  # noqa: ANN001
    # More logins came than the watcher remembers (the login path stops listing them at
    # JOINED_MAX and sets the flag): it reads every client instead.
    store, clients, auth, _ = setup(5)

    def many() -> None:
        for i in range(5):
            clients.add(Session(f"new{i}", "0"))
        auth._joined_overflow = True

    run_rounds(monkeypatch, auth, [nothing, many])
    assert len(store.asked) == 2 and len(store.asked[1]) == 10
