"""The desk phones' digest check keeps a copy of every client's HA1 (a SUBSCRIBE cannot wait
for Redis): gateway.sip.service.SipService._refresh_ha1 keeps it fresh. A password change
reaches it within a round; a quiet round reads one marker, not every client's password (it
was a round trip per client every 2 s)."""

from __future__ import annotations

import asyncio
import types

import pytest

import gateway.sip.service as service
from gateway.config import parse_config
from gateway.sip.service import SipService

CLIENTS = "".join(f'[[clients]]\nname = "user{i}"\n' for i in range(50))
CONFIG = parse_config("[sources.tapi_bridge]\n" + CLIENTS)


class Store:
    def __init__(self) -> None:
        self.ha1: dict[str, str] = {f"user{i}": f"h{i}" for i in range(50)}
        self.marker: str | None = "m0"
        self.loads = 0

    async def passwords_version(self) -> str | None:
        return self.marker

    async def ha1s(self, clients: list[str]) -> dict[str, str | None]:
        self.loads += 1
        return {c: self.ha1.get(c) for c in clients}


def run_rounds(monkeypatch, store: Store, config, rounds: list) -> types.SimpleNamespace:  # noqa: ANN001
    rechecks = []
    me = types.SimpleNamespace(store=store, _config=lambda: config[0], _ha1={},
                               blf_server=types.SimpleNamespace(recheck=lambda: rechecks.append(1)))
    me._load_ha1 = types.MethodType(SipService._load_ha1, me)
    me.rechecks = rechecks
    clock = [100.0]
    todo = list(rounds)

    async def tick(_s: float) -> None:
        if not todo:
            raise asyncio.CancelledError
        clock[0] += service.HA1_REFRESH_SECONDS
        todo.pop(0)()

    monkeypatch.setattr(service.asyncio, "sleep", tick)
    monkeypatch.setattr(service.time, "monotonic", lambda: clock[0])
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(SipService._refresh_ha1(me))  # type: ignore[arg-type]
    return me


def nothing() -> None:
    pass


def test_quiet_rounds_read_the_marker_only(monkeypatch):  # noqa: ANN001
    store = Store()
    me = run_rounds(monkeypatch, store, [CONFIG], [nothing] * 10)  # 20 s
    assert store.loads == 1 and me._ha1["user7"] == "h7"


def test_a_password_change_reaches_the_copy_in_the_next_round(monkeypatch):  # noqa: ANN001
    store = Store()

    def change() -> None:
        store.ha1["user3"] = "new"
        store.marker = "m1"

    me = run_rounds(monkeypatch, store, [CONFIG], [nothing, change, nothing])
    assert me._ha1["user3"] == "new" and store.loads == 2
    assert me.rechecks  # live subscriptions are checked against the new digests


def test_a_reload_and_the_periodic_round_read_again(monkeypatch):  # noqa: ANN001
    store = Store()
    config = [CONFIG]
    fewer = parse_config("[sources.tapi_bridge]\n" + "".join(
        f'[[clients]]\nname = "user{i}"\n' for i in range(10)))

    def reload() -> None:
        config[0] = fewer

    def unmarked() -> None:  # a process of an older version changed it without the marker
        store.ha1["user1"] = "changed"

    rounds = [nothing, reload, unmarked] + [nothing] * int(service.HA1_RECHECK_SECONDS // 2)
    me = run_rounds(monkeypatch, store, config, rounds)
    assert "user20" not in me._ha1  # gone from the configuration, gone from the copy
    assert me._ha1["user1"] == "changed"
    assert store.loads == 3
