"""The rule that keeps full garbage collections rare and the heap bounded (gateway.heap)."""

from __future__ import annotations

from gateway.heap import FULL_MIN_SECONDS, full_due


def test_a_full_collection_waits_for_both_growth_and_time():
    # Grown by more than a quarter, but too soon after the last one: not yet.
    assert not full_due(100.0, 0.0, 200_000, 100_000)
    # Long enough, but the frozen heap barely grew (nobody reconnected): not needed.
    assert not full_due(FULL_MIN_SECONDS + 1, 0.0, 120_000, 100_000)
    # Both: now. The frozen heap includes the cyclic garbage of closed sessions, so it
    # cannot grow without bound between full collections.
    assert full_due(FULL_MIN_SECONDS, 0.0, 125_001, 100_000)


def test_a_tiny_heap_is_not_collected_over_and_over():
    assert not full_due(10 * FULL_MIN_SECONDS, 0.0, 1_100, 10)
    assert full_due(10 * FULL_MIN_SECONDS, 0.0, 1_300, 10)
