"""Who is knocking (X-Forwarded-For through trusted proxies only) and failure counting
with reservations: the pure parts of login protection."""

from __future__ import annotations

from gateway.server.guard import WINDOW_SECONDS, AddressFailures, client_address, parse_networks

PROXIES = parse_networks(["10.0.0.5", "10.1.0.0/16", "::1"])


def test_the_peer_is_the_client_unless_it_is_a_trusted_proxy():
    assert client_address("203.0.113.9", ["198.51.100.1"], PROXIES) == "203.0.113.9"
    assert client_address("203.0.113.9", [], ()) == "203.0.113.9"
    assert client_address("10.0.0.5", ["198.51.100.1"], ()) == "10.0.0.5"  # none trusted


def test_behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client():
    assert client_address("10.0.0.5", ["198.51.100.1"], PROXIES) == "198.51.100.1"
    # The client may send its own header first: only what our proxies appended counts.
    assert client_address("10.0.0.5", ["1.2.3.4, 198.51.100.1"], PROXIES) == "198.51.100.1"
    assert client_address("10.0.0.5", ["1.2.3.4", "198.51.100.1, 10.1.2.3"],
                          PROXIES) == "198.51.100.1"
    assert client_address("::1", ["2001:db8::7"], PROXIES) == "2001:db8::7"


def test_garbage_or_only_proxies_in_the_header_leave_the_peer():
    assert client_address("10.0.0.5", ["not-an-address"], PROXIES) == "10.0.0.5"
    assert client_address("10.0.0.5", ["10.1.0.1"], PROXIES) == "10.0.0.5"
    assert client_address("10.0.0.5", [""], PROXIES) == "10.0.0.5"


def test_successes_never_count_failures_do_for_a_minute():
    f = AddressFailures(limit=3)
    for i in range(10):  # ten successful logins in a row
        assert f.reserve("a", i) == "ok"
        f.settle("a", i, failed=False)
    for i in range(3):
        assert f.reserve("a", 20 + i) == "ok"
        f.settle("a", 20 + i, failed=True)
    assert f.reserve("a", 23) == "limited"
    assert f.reserve("b", 23) == "ok"  # other addresses are not affected
    assert f.reserve("a", 20 + WINDOW_SECONDS + 0.1) == "ok"  # the window passed


def test_attempts_in_flight_fill_the_limit_so_concurrent_guesses_wait():
    f = AddressFailures(limit=3)
    assert [f.reserve("a", 0) for _ in range(3)] == ["ok"] * 3
    assert f.reserve("a", 0) == "busy"  # three unanswered: wait, not more checks
    f.settle("a", 1, failed=False)  # one was a good login
    assert f.reserve("a", 1) == "ok"
    for _ in range(3):
        f.settle("a", 2, failed=True)
    assert f.reserve("a", 2) == "limited"
    assert f.all_failures(2) == {"a": 3}

