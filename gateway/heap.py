"""Keeps CPython's full garbage collections out of the lamps' way (the gateway process only).

A full (generation 2) collection walks every tracked object while the event loop waits. In a
gateway with thousands of sessions that is 50-200 ms on 2 cores, and the interpreter starts
one whenever the objects that survived into the old generation grew by a quarter: a wave of
logins or reconnects does that, so the pause lands right when lamps are busy (it was the
source of the p99 outliers of 100+ ms in bench/latency.py and bench/run.py).

So: once startup is done and then every FREEZE_SECONDS, everything alive is frozen
(``gc.freeze``: moved out of the collector's generations, which costs nothing); young garbage
is still collected as usual, by collections that now only walk what was allocated since the
last freeze. Cyclic garbage among frozen objects (sessions that closed) waits for a full
collection, which runs only when the frozen heap grew by FULL_GROWTH since the last one and
at most once per FULL_MIN_SECONDS: memory stays bounded, and full pauses are rarer than the
interpreter would make them. :func:`full_due` is the rule, pure; :func:`keep_heap` runs it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

__all__ = ["FREEZE_SECONDS", "FULL_GROWTH", "FULL_MIN_SECONDS", "full_due", "keep_heap"]

log = logging.getLogger("gateway")

FREEZE_SECONDS = 5.0  # objects older than about this are not walked by routine collections
FULL_GROWTH = 1.25  # a full collection once the frozen heap grew by a quarter (as CPython)...
FULL_MIN_SECONDS = 600.0  # ...but at most this often


def full_due(now: float, last_full: float, frozen: int, frozen_after_last: int) -> bool:
    """Whether to run a full collection now: the frozen heap grew by FULL_GROWTH since the
    last one (`frozen_after_last` objects right after it) and FULL_MIN_SECONDS have passed."""
    return (now - last_full >= FULL_MIN_SECONDS
            and frozen > max(frozen_after_last, 1000) * FULL_GROWTH)


def _young_count() -> int:
    """Objects in the collector's own generations: what the next freeze moves (they were
    all allocated since the last freeze, so this walk is short)."""
    return sum(len(gc.get_objects(generation=g)) for g in range(3))


def _frozen_count() -> int:
    """Objects frozen now. CPython counts them by walking the whole frozen list: about 6 ms
    per 500,000 objects warm, 10 ms in a busy gateway, so this is not for every round."""
    return gc.get_freeze_count()


def _full_collection() -> int:
    """Unfreeze, collect everything, freeze what is left; returns the frozen count."""
    t0 = time.perf_counter()
    gc.unfreeze()
    found = gc.collect()
    gc.freeze()
    frozen = _frozen_count()
    log.debug("full garbage collection: %d unreachable, %d objects kept, %.0f ms", found,
              frozen, (time.perf_counter() - t0) * 1000)
    return frozen


async def keep_heap() -> None:
    """Run until cancelled: a full collection and freeze now (startup is done), then the
    freeze and the rule of :func:`full_due`.

    The frozen heap's size is kept as an estimate that each freeze raises by what it moves
    (counted in the young generations, a short walk). Frozen objects that die are not taken
    off, so the estimate is never below the truth; only when it says a full collection is
    due is the frozen heap counted exactly (one walk of it, about 10 ms at 500,000 objects),
    and the estimate starts again from that count. Counting it every round was a 10 ms stall
    of every lamp every FREEZE_SECONDS (seen as the one slow event in 500 at 100 events/s).
    """
    frozen_after_last = estimate = _full_collection()
    last_full = time.monotonic()
    while True:
        await asyncio.sleep(FREEZE_SECONDS)
        estimate += _young_count()
        gc.freeze()
        now = time.monotonic()
        if full_due(now, last_full, estimate, frozen_after_last):
            estimate = _frozen_count()
            if full_due(now, last_full, estimate, frozen_after_last):
                frozen_after_last = estimate = _full_collection()
                last_full = now
