"""The rule that keeps full garbage collections rare and the heap bounded (gateway.heap)."""

from __future__ import annotations

import asyncio
import time
import types

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


class _Gc:
    """The keeper's view of the collector, scripted: what each freeze moves (young) and what
    is really frozen (frozen); counts the exact walks and the full collections."""

    def __init__(self, young: list[int], frozen: int) -> None:
        self.young, self.frozen = young, frozen
        self.walks = self.fulls = self.rounds = 0

    def young_count(self) -> int:
        self.rounds += 1
        if not self.young:
            raise asyncio.CancelledError
        return self.young.pop(0)

    def frozen_count(self) -> int:
        self.walks += 1
        return self.frozen

    def full(self) -> int:
        self.fulls += 1
        return self.frozen


def _keep(monkeypatch, fake: _Gc, seconds_per_round: float) -> None:  # noqa: ANN001
    import gateway.heap as heap

    clock = [0.0]

    async def no_sleep(_s: float) -> None:
        clock[0] += seconds_per_round

    monkeypatch.setattr(heap, "_young_count", fake.young_count)
    monkeypatch.setattr(heap, "_frozen_count", fake.frozen_count)
    monkeypatch.setattr(heap, "_full_collection", fake.full)
    monkeypatch.setattr(heap.asyncio, "sleep", no_sleep)
    monkeypatch.setattr(heap, "time", types.SimpleNamespace(monotonic=lambda: clock[0],
                                                          perf_counter=time.perf_counter))
    try:
        asyncio.run(heap.keep_heap())
    except asyncio.CancelledError:
        pass


def test_a_routine_round_does_not_walk_the_frozen_heap(monkeypatch):  # noqa: ANN001
    # An hour of rounds in a steady gateway: each freeze moves a few hundred objects. Walking
    # the frozen heap (10 ms at 500,000 objects) every round stalled every lamp; now it is
    # walked once the estimate (which never drops) passes the threshold: once in the hour.
    rounds = int(3600 / 5)
    fake = _Gc([300] * rounds, frozen=500_000)
    _keep(monkeypatch, fake, 5.0)
    assert fake.rounds == rounds + 1
    assert fake.fulls == 1  # the one at startup
    assert fake.walks <= 1


def test_the_estimate_is_checked_exactly_before_a_full_collection(monkeypatch):  # noqa: ANN001
    # The estimate passes the threshold (objects that died since were counted too), but the
    # frozen heap did not really grow: one walk, no full collection, and the estimate starts
    # again from the true count, so the next walk is a whole margin away.
    fake = _Gc([20_000] * 10, frozen=100_000)
    _keep(monkeypatch, fake, FULL_MIN_SECONDS)
    assert fake.fulls == 1
    assert 1 <= fake.walks <= 5


def test_real_growth_still_gets_its_full_collection(monkeypatch):  # noqa: ANN001
    fake = _Gc([20_000] * 3, frozen=100_000)

    def grown() -> int:
        fake.walks += 1
        return 140_000  # a wave of reconnects left cyclic garbage in the frozen heap

    fake.frozen_count = grown  # type: ignore[method-assign]
    _keep(monkeypatch, fake, FULL_MIN_SECONDS)
    assert fake.walks >= 1
    assert fake.fulls >= 2
