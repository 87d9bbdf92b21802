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


def _full_collection() -> int:
    """Unfreeze, collect everything, freeze what is left; returns the frozen count."""
    t0 = time.perf_counter()
    gc.unfreeze()
    found = gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("full garbage collection: %d unreachable, %d objects kept, %.0f ms", found,
              frozen, (time.perf_counter() - t0) * 1000)
    return frozen


async def keep_heap() -> None:
    """Run until cancelled: a full collection and freeze now (startup is done), then the
    freeze and the rule of :func:`full_due`."""
    frozen_after_last = _full_collection()
    last_full = time.monotonic()
    while True:
        await asyncio.sleep(FREEZE_SECONDS)
        gc.freeze()
        now = time.monotonic()
        if full_due(now, last_full, gc.get_freeze_count(), frozen_after_last):
            frozen_after_last = _full_collection()
            last_full = now
