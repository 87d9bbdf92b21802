"""Steps of the wall clock, told apart from time passing (pure: readings are passed in).

Call times shown to users (`since`) and kept in journals are wall-clock times; the memory of
ended calls is a wall-clock deadline too. When the wall clock is stepped (an NTP step after a
long suspend, an admin's `date -s`), the difference between the wall clock and the
monotonic clock moves by the step; slewing moves it by well under a second over minutes.
:class:`ClockSteps` reports a step once, and follows slow drift silently.
"""

from __future__ import annotations

__all__ = ["ClockSteps"]


class ClockSteps:
    """Feed it (wall, monotonic) readings; :meth:`step` says by how much the wall clock was
    stepped since the last reading (0.0 for none)."""

    TOLERANCE = 1.0  # seconds: below, drift or scheduling noise; at or above, a step

    def __init__(self) -> None:
        self._offset: float | None = None

    def step(self, wall: float, mono: float) -> float:
        offset = wall - mono
        last, self._offset = self._offset, offset
        if last is None or abs(offset - last) < self.TOLERANCE:
            return 0.0
        return offset - last
