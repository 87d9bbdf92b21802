"""Logins under attack (issue list "Logins"): failures count, not successes; a guess is
counted before it is checked; a flood slows its address, never the account's owner; no
account enumeration; a password change ends older sessions on every process.

Client addresses are made with X-Forwarded-For through a trusted proxy (the test itself,
127.0.0.1), exactly as a load balancer in front of the gateway sends them."""

from __future__ import annotations

import asyncio
import logging

import redis

from conftest import HASH, PW, eventually
from gateway.auth import hash_password
from test_gateway_e2e import config


def cfg(redis_url: str, extra: str = 'trusted_proxies = ["127.0.0.1"]') -> str:
    return config(redis_url, server_extra=extra)


async def attempt(connect, gw, client: str, *, password: str | None = None,
                  token: str | None = None, address: str | None = None) -> dict:
    headers = {"X-Forwarded-For": address} if address else None
    c = await connect(gw, additional_headers=headers)
    msg: dict = {"type": "login", "client": client}
    if password is not None:
        msg["password"] = password
    if token is not None:
        msg["token"] = token
    reply = await c.request(msg)
    await c.close()
    return reply


async def test_a_hundred_clients_behind_one_address_all_log_in(redis_url, start_gateway,
                                                               connect):
    """100 valid clients behind one NAT reconnecting at once: successes never count
    against the address (login_attempts_per_minute is 20)."""
    staff = "".join(f'[[clients]]\nname = "user{i}"\npassword_hash = "{HASH}"\n'
                    for i in range(100))
    gw = await start_gateway(cfg(redis_url, "") + staff)
    replies = await asyncio.gather(*[attempt(connect, gw, f"user{i}", password=PW)
                                     for i in range(100)])
    assert [r.get("message", r["type"]) for r in replies] == ["welcome"] * 100
    # And again, as after a gateway restart: still no refusal.
    replies = await asyncio.gather(*[attempt(connect, gw, f"user{i}", password=PW)
                                     for i in range(100)])
    assert [r.get("message", r["type"]) for r in replies] == ["welcome"] * 100


async def test_forwarded_for_is_believed_only_from_trusted_proxies(redis_url, start_gateway,
                                                                   connect, caplog):
    caplog.set_level(logging.INFO, logger="gateway.audit")
    gw = await start_gateway(cfg(redis_url, 'login_attempts_per_minute = 5\n'
                                            'trusted_proxies = ["127.0.0.1"]'))
    codes = [(await attempt(connect, gw, "dan", password="x", address="198.51.100.1"))["code"]
             for _ in range(6)]
    assert codes == ["auth_failed"] * 5 + ["rate_limited"]
    # Another client address behind the same proxy is not held back ...
    r = await attempt(connect, gw, "dan", password="x", address="198.51.100.2")
    assert r["code"] == "auth_failed"
    # ... and a client cannot pose as another by prepending its own X-Forwarded-For.
    r = await attempt(connect, gw, "dan", password="x", address="10.9.9.9, 198.51.100.1")
    assert r["code"] == "rate_limited"
    assert any("from 198.51.100.1" in m.getMessage() for m in caplog.records)


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(redis_url, start_gateway,
                                                              connect):
    gw = await start_gateway(cfg(redis_url, "login_attempts_per_minute = 5"))
    codes = [(await attempt(connect, gw, "dan", password="x",
                            address=f"203.0.113.{i}"))["code"] for i in range(6)]
    assert codes == ["auth_failed"] * 5 + ["rate_limited"]  # all from 127.0.0.1


async def test_concurrent_guesses_are_counted_before_they_are_checked(redis_url,
                                                                     start_gateway, connect):
    """40 wrong passwords at once for one client: at most 10 get a password check."""
    gw = await start_gateway(cfg(redis_url, "login_attempts_per_minute = 1000"))
    replies = await asyncio.gather(*[attempt(connect, gw, "alice", password=f"guess-{i}")
                                     for i in range(40)])
    codes = [r["code"] for r in replies]
    assert codes.count("auth_failed") == 10
    assert codes.count("rate_limited") == 30


async def test_a_password_flood_never_locks_the_owner_out(redis_url, start_gateway, connect):
    gw = await start_gateway(cfg(redis_url, 'login_attempts_per_minute = 1000\n'
                                            'trusted_proxies = ["127.0.0.1"]'))
    # The owner logged in before, from the office, and holds a token.
    w = await attempt(connect, gw, "alice", password=PW, address="192.0.2.10")
    token = w["token"]
    # An attacker floods wrong passwords from one address ...
    for i in range(12):
        await attempt(connect, gw, "alice", password=f"guess-{i}", address="203.0.113.66")
    r = await attempt(connect, gw, "alice", password=PW, address="203.0.113.66")
    assert r["code"] == "rate_limited"  # ... and that address is slowed down,
    r = await attempt(connect, gw, "alice", password=PW, address="192.0.2.10")
    assert r["type"] == "welcome"  # not the owner at her desk,
    r = await attempt(connect, gw, "alice", token=token, address="203.0.113.66")
    assert r["type"] == "welcome"  # and a valid token works even from the flooded address.


async def test_a_distributed_flood_still_lets_the_owner_in_from_her_known_address(
        redis_url, start_gateway, connect):
    gw = await start_gateway(cfg(redis_url, 'login_attempts_per_minute = 1000\n'
                                            'trusted_proxies = ["127.0.0.1"]'))
    assert (await attempt(connect, gw, "bob", password=PW, address="192.0.2.20"))[
        "type"] == "welcome"
    # 100 wrong passwords from 20 addresses: 5 each, under every per-address limit.
    await asyncio.gather(*[attempt(connect, gw, "bob", password="x",
                                   address=f"198.51.100.{i % 20}") for i in range(100)])
    r = await attempt(connect, gw, "bob", password="x", address="198.51.100.200")
    assert r["code"] == "rate_limited"  # a new address: held back while the flood lasts
    r = await attempt(connect, gw, "bob", password=PW, address="192.0.2.20")
    assert r["type"] == "welcome"  # the owner's usual address is not


def _commands(url: str) -> dict[str, int]:
    stats = redis.Redis.from_url(url).info("commandstats")
    return {k: v["calls"] for k, v in stats.items()}


async def _work(redis_url, connect, gw, **kw) -> dict[str, int]:
    before = _commands(redis_url)
    await attempt(connect, gw, **kw)
    after = _commands(redis_url)
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


async def test_unknown_names_get_the_same_answers_and_the_same_work(redis_url,
                                                                    start_gateway, connect):
    gw = await start_gateway(cfg(redis_url, "login_attempts_per_minute = 1000"))
    known = [await attempt(connect, gw, "alice", password=f"g{i}") for i in range(12)]
    unknown = [await attempt(connect, gw, "mallory", password=f"g{i}") for i in range(12)]
    strip = [{k: v for k, v in r.items() if k != "id"} for r in known]
    assert strip == [{k: v for k, v in r.items() if k != "id"} for r in unknown]
    assert strip[0]["code"] == "auth_failed" and strip[-1]["code"] == "rate_limited"
    # The same Redis commands for a known and an unknown name (a wrong token, a wrong
    # password), so neither the answer nor the work tells which names exist.
    redis.Redis.from_url(redis_url).delete("{blf}:fail:bob", "{blf}:fail:bob|127.0.0.1",
                                           "{blf}:fail:eve", "{blf}:fail:eve|127.0.0.1")
    for kw in ({"token": "x" * 43}, {"password": "wrong"}):
        # The fewest of each command over three tries: the gateway's own background work
        # (heartbeat, change log) may fall into one window, not into all three.
        async def least(client: str) -> dict[str, int]:
            tries = [await _work(redis_url, connect, gw, client=client, **kw)
                     for _ in range(3)]
            return {k: n for k in tries[0] if (n := min(t.get(k, 0) for t in tries))}

        assert await least("bob") == await least("eve")


async def test_a_password_change_ends_older_sessions_on_every_process(redis_url,
                                                                       start_gateway, connect):
    gw1 = await start_gateway(cfg(redis_url), name="one.toml")
    gw2 = await start_gateway(cfg(redis_url), name="two.toml")
    sessions = []
    for gw in (gw1, gw2):
        c = await connect(gw)
        assert (await c.request({"type": "login", "client": "alice", "password": PW}))[
            "type"] == "welcome"
        sessions.append(c)
    other = await connect(gw1)
    await other.request({"type": "login", "client": "bob", "password": PW})
    await gw1.store.set_password("alice", hash_password("a new password", n=2**10),
                                 at_next_login=False)
    for c in sessions:
        await eventually(lambda c=c: c._reader.done())
        assert c.ws.close_code == 4001 and "password changed" in c.ws.close_reason
    assert not other._reader.done()  # other clients keep their sessions
    fresh = await connect(gw2)
    assert (await fresh.request({"type": "login", "client": "alice",
                                 "password": "a new password"}))["type"] == "welcome"
    await asyncio.sleep(1.5)
    assert not fresh._reader.done()  # a session opened after the change stays
