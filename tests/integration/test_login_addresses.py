"""Failed logins per remote address are counted once for every gateway process on one Redis:
behind a load balancer, an address gets `login_attempts_per_minute` failures a minute in
all, whichever processes it reaches; good logins from one address (a NAT of switchboards
after a restart) never count and all get in; the admin view shows the same counts on every
process; every key of the count ends on its own.

The processes are real (`python -m gateway run`), on the test's real redis-server; client
addresses come through X-Forwarded-For from a trusted proxy (the test, 127.0.0.1), as a load
balancer sends them."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
import redis

from conftest import HASH, PW, free_port, gateway_config, toml_table, wait_port
from gateway.store import Store
from test_cli import BIN
from test_login_protection import attempt

LIMIT = 4  # login_attempts_per_minute of both processes
GUESSER = "198.51.100.7"
NEIGHBOUR = "198.51.100.8"
OFFICE = "192.0.2.50"  # the NAT of the staff
ADMIN = "192.0.2.99"  # where the admin sits
STAFF = 40


class Process:
    """One real gateway process on `redis_url`; alice is an admin, user0.. are staff."""

    def __init__(self, folder: Path, redis_url: str) -> None:
        self.ws_port = free_port()
        folder.mkdir()
        staff = "".join(toml_table("[[clients]]", name=f"user{i}", password_hash=HASH)
                        for i in range(STAFF))
        (folder / "gw.toml").write_text(gateway_config(
            redis_url, listen=f"127.0.0.1:{self.ws_port}", bridge=f"127.0.0.1:{free_port()}",
            server={"login_attempts_per_minute": LIMIT, "trusted_proxies": ["127.0.0.1"]},
            password_hash=HASH, client_keys={"alice": {"admin": True}}, more=staff))
        self.out = open(folder / "out.log", "w")
        self.proc = subprocess.Popen([*BIN, "run", "--config", str(folder / "gw.toml")],
                                     stdout=self.out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(30)
        finally:
            self.out.close()


@pytest.fixture
async def two(tmp_path, redis_url):
    procs = [Process(tmp_path / name, redis_url) for name in ("a", "b")]
    try:
        for p in procs:
            await asyncio.to_thread(wait_port, p.ws_port, proc=p.proc)
        yield procs
    finally:
        for p in procs:
            p.stop()


async def code(connect, gw, client: str, password: str, address: str) -> str:
    r = await attempt(connect, gw, client, password=password, address=address)
    return r.get("code", r["type"])


async def overview(connect, gw) -> dict:
    admin = await connect(gw, additional_headers={"X-Forwarded-For": ADMIN})
    assert (await admin.request({"type": "login", "client": "alice", "password": PW}))[
        "type"] == "welcome"
    ov = await admin.request({"type": "admin_overview"})
    await admin.close()
    return ov["rate_limits"]


async def test_failures_on_two_processes_add_up_to_one_limit(two, connect, redis_url):
    a, b = two
    # Two wrong passwords on each process: 4 in all, the limit.
    assert [await code(connect, gw, "alice", "wrong", GUESSER) for gw in (a, b, a, b)] == [
        "auth_failed"] * LIMIT
    # Refused on both, even with the right password (each process alone saw only 2) ...
    assert await code(connect, b, "alice", PW, GUESSER) == "rate_limited"
    assert await code(connect, a, "bob", "guess", GUESSER) == "rate_limited"
    # ... while another address behind the same load balancer is not held back.
    assert await code(connect, b, "alice", PW, NEIGHBOUR) == "welcome"

    # The admin view of either process shows the same shared count.
    views = [await overview(connect, gw) for gw in (a, b)]
    for rl in views:
        assert rl["login_attempts"] == [
            {"address": GUESSER, "last_minute": LIMIT, "limited": True}]
        assert {f["client"]: f["failures"] for f in rl["failed_logins"]} == {
            "alice": LIMIT, f"alice|{GUESSER}": LIMIT}

    # Every key the count made ends on its own: none without a TTL, the address's within
    # a minute of its last failure.
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = [k for k in r.scan_iter("{blf}:*") if "fail" in k or "addrtry" in k]
    assert f"{{blf}}:addrfail:{GUESSER}" in keys and "{blf}:addrfail" in keys
    assert all(r.pttl(k) > 0 for k in keys), {k: r.pttl(k) for k in keys}
    for k in (f"{{blf}}:addrfail:{GUESSER}", "{blf}:addrfail"):
        assert 0 < r.pttl(k) <= 60_000
    # No attempt is left in flight once every one was answered.
    assert not r.exists(f"{{blf}}:addrtry:{GUESSER}", f"{{blf}}:addrtry:{NEIGHBOUR}",
                        f"{{blf}}:addrtry:{ADMIN}")


async def test_a_burst_of_good_logins_across_processes_all_get_in_and_counts_nothing(
        two, connect, redis_url):
    a, b = two
    # 40 switchboards behind one NAT log in at once, half on each process, 10 times the
    # limit: they wait for a free slot ("busy") rather than being refused.
    replies = await asyncio.gather(*[
        code(connect, (a, b)[i % 2], f"user{i}", PW, OFFICE) for i in range(STAFF)])
    assert replies == ["welcome"] * STAFF
    # And again, as after a gateway restart.
    replies = await asyncio.gather(*[
        code(connect, (b, a)[i % 2], f"user{i}", PW, OFFICE) for i in range(STAFF)])
    assert replies == ["welcome"] * STAFF
    # None of the 80 counted: the office still has its whole budget of failures, no more.
    assert [await code(connect, gw, "user1", "typo", OFFICE) for gw in (a, b, b, a)] == [
        "auth_failed"] * LIMIT
    assert await code(connect, b, "user2", PW, OFFICE) == "rate_limited"
    assert (await overview(connect, a))["login_attempts"] == [
        {"address": OFFICE, "last_minute": LIMIT, "limited": True}]


async def test_concurrent_guesses_over_both_processes_get_no_more_checks_than_the_limit(
        two, connect):
    a, b = two
    # 12 wrong passwords at once from one address, 6 to each process: each attempt is
    # counted before it is checked, on both, so only the limit's 4 are checked at all.
    replies = await asyncio.gather(*[
        code(connect, (a, b)[i % 2], f"user{i}", f"guess-{i}", GUESSER) for i in range(12)])
    assert sorted(replies) == ["auth_failed"] * LIMIT + ["rate_limited"] * (12 - LIMIT)


# -- the shared count itself, on the real Redis (short windows: no minute-long waits) --------

async def reserve(store: Store, client: str = "alice", address: str = GUESSER, *,
                  limit: int = 2, window: float = 60.0, attempt: str = "a1",
                  failed: bool = False, pair_limit: int = 10) -> str:
    return await store.reserve_login(
        client, address, pair_limit=pair_limit, client_limit=100, window=300,
        address_limit=limit, address_window=window, attempt=attempt, failed=failed)


@pytest.fixture
async def store(redis_url):
    s = Store(redis_url)
    yield s
    await s.close()


async def test_the_window_ends_on_its_own(store, redis_url):
    r = redis.Redis.from_url(redis_url)
    assert await reserve(store, window=0.3, attempt="1", failed=True) == "ok"
    assert await reserve(store, window=0.3, attempt="2", failed=True) == "ok"
    assert await reserve(store, window=0.3, attempt="3") == "limited"
    assert await reserve(store, address=NEIGHBOUR, window=0.3, attempt="4") == "ok"
    await asyncio.sleep(0.4)  # the window (0.3 s) has passed: the keys are gone by their TTL
    assert not r.exists(f"{{blf}}:addrfail:{GUESSER}", "{blf}:addrfail")
    assert await reserve(store, window=0.3, attempt="5") == "ok"


async def test_an_attempt_never_answered_holds_its_slot_only_for_its_lease(store):
    # Two attempts in flight on a process that then died: the address is busy, not limited,
    assert await reserve(store, window=0.3, attempt="1") == "ok"
    assert await reserve(store, window=0.3, attempt="2") == "ok"
    assert await reserve(store, window=0.3, attempt="3") == "busy"
    await asyncio.sleep(0.4)
    assert await reserve(store, window=0.3, attempt="3") == "ok"  # and free after the lease.


async def test_answers_settle_the_slot(store, redis_url):
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    assert await reserve(store, attempt="good") == "ok"
    assert await reserve(store, attempt="bad") == "ok"
    assert await reserve(store, attempt="x") == "busy"  # both in flight fill the limit of 2
    await store.release_login("alice", GUESSER, remember=60, attempt="good")
    await store.fail_login(GUESSER, "bad", address_window=60)
    assert await store.failed_addresses(60) == {GUESSER: 1}  # the success did not count
    assert r.get("{blf}:fail:alice") == "1" and r.get(f"{{blf}}:fail:alice|{GUESSER}") == "1"
    assert await reserve(store, attempt="gone") == "ok"
    await store.drop_login(GUESSER, "gone")  # no answer (the connection went): not a failure
    assert not r.exists(f"{{blf}}:addrtry:{GUESSER}")
    assert await store.failed_addresses(60) == {GUESSER: 1}
    assert await reserve(store, attempt="last", failed=True) == "ok"
    assert await reserve(store, attempt="more") == "limited"


async def test_a_refusal_without_a_check_counts_nothing(store):
    """A client+address over its own limit is refused without a check; that refusal is not a
    failure of the address (a colleague's client retrying a locked account behind the same
    NAT cannot lock the whole office out)."""
    for i in range(3):
        assert await reserve(store, limit=10, pair_limit=3, attempt=f"g{i}", failed=True) == "ok"
    for i in range(20):
        assert await reserve(store, limit=10, pair_limit=3, attempt=f"r{i}") == "pair"
    assert await store.failed_addresses(60) == {GUESSER: 3}
    assert await reserve(store, "bob", limit=10, attempt="bob") == "ok"


async def test_the_admin_list_is_bounded_and_newest_first(store):
    for i in range(5):
        assert await reserve(store, address=f"203.0.113.{i}", attempt=f"a{i}",
                             failed=True) == "ok"
        await asyncio.sleep(0.002)  # distinct milliseconds
    assert await store.failed_addresses(60, limit=3) == {
        f"203.0.113.{i}": 1 for i in (2, 3, 4)}
