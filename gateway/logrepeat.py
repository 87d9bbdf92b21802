"""Repeated warnings aggregated: one line per kind and source per interval, with a count.

A hostile or broken peer can make the same warning happen thousands of times a second (a
brute force against logins, a bridge sending garbage): each one a line would fill the disk
and bury everything else. :class:`Repeats` (pure: `now` passed in) decides: the first events
of a kind from a source are logged at once (`burst`, 3: a reconnect still shows in full);
the rest within `interval` seconds are counted;
when the interval is over, one summary line says how many there were and what the last one
said. :class:`RepeatFilter` applies it to the gateway's loggers; :func:`installed` puts it
in place for as long as a gateway runs.

It applies to the lines a peer can cause, and only those: the call site says so by passing
the peer as ``extra={"source": ...}`` (a bridge connection, a remote address). A *kind* is
the logger and the message template (not its arguments), so one noisy peer never hides
another's first line, and lines without a source (a configuration error, a start-up line)
are never held back. The number of kinds kept is bounded: beyond `max_kinds`, new ones are
counted together per template.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["Repeats", "Summary", "RepeatFilter", "installed", "should_log", "INTERVAL",
           "LOGGERS"]

INTERVAL = 60.0
BURST = 3
MAX_KINDS = 1000
LOGGERS = ("gateway", "gateway.audit", "gateway.tapi", "gateway.session", "gateway.hub",
           "gateway.ami", "gateway.sip", "gateway.journal", "gateway.store", "gateway.pickup")

Key = tuple[str, str, str | None]  # logger, template, source


@dataclass(frozen=True, slots=True)
class Summary:
    """`count` events of `key` were not logged in the interval that began at `since`."""

    key: Key
    count: int
    last: str
    level: int
    since: float
    until: float


class _Window:
    __slots__ = ("start", "end", "passed", "count", "last", "level")

    def __init__(self, start: float, end: float) -> None:
        self.start, self.end, self.passed, self.count = start, end, 1, 0
        self.last, self.level = "", 0


class Repeats:
    """Which repeated events pass (pure; see the module docstring)."""

    def __init__(self, interval: float = INTERVAL, max_kinds: int = MAX_KINDS,
                 burst: int = BURST) -> None:
        self.interval = interval
        self.max_kinds = max_kinds
        self.burst = burst
        self._windows: dict[Key, _Window] = {}

    def admit(self, key: Key, now: float, text: str = "",
              level: int = logging.WARNING) -> tuple[bool, Summary | None]:
        """Whether to log this event now, and a summary of the key's last interval that is
        over and still to be logged (log it first)."""
        if key not in self._windows and len(self._windows) >= self.max_kinds:
            key = (key[0], key[1], "*")  # too many sources: count them together
        win = self._windows.get(key)
        summary = None
        if win is not None and now >= win.end:
            summary = self._summary(key, win, now)
            win = None
        if win is None:
            self._windows[key] = _Window(now, now + self.interval)
            return True, summary
        if win.passed < self.burst:
            win.passed += 1
            return True, summary
        win.count += 1
        win.last, win.level = text, max(win.level, level)
        return False, summary

    def due(self, now: float, everything: bool = False) -> list[Summary]:
        """Summaries of intervals that are over (kinds that went quiet are forgotten);
        `everything`: of every interval, over or not (the end)."""
        out = []
        for key in [k for k, w in self._windows.items() if everything or now >= w.end]:
            s = self._summary(key, self._windows.pop(key), now)
            if s is not None:
                out.append(s)
        return out

    def next_deadline(self) -> float | None:
        return min((w.end for w in self._windows.values() if w.count), default=None)

    @staticmethod
    def _summary(key: Key, win: _Window, now: float) -> Summary | None:
        if not win.count:
            return None
        return Summary(key, win.count, win.last, win.level, win.start, min(now, win.end))

    def __len__(self) -> int:
        return len(self._windows)


class RepeatFilter(logging.Filter):
    """A logging filter that applies :class:`Repeats` (the clock read here)."""

    def __init__(self, interval: float = INTERVAL, max_kinds: int = MAX_KINDS,
                 clock=time.monotonic, burst: int = BURST) -> None:
        super().__init__()
        self.repeats = Repeats(interval, max_kinds, burst)
        self.clock = clock
        self._lock = threading.Lock()  # logging may be called from the SIP thread
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        source = _source(record)
        if source is None or getattr(record, "repeat_summary", False):
            return True
        key = (record.name, str(record.msg), source)
        with self._lock:
            admit, summary = self.repeats.admit(key, self.clock(), _text(record),
                                                record.levelno)
            if not admit:
                self.suppressed += 1
        if summary is not None:
            _emit(summary)
        return admit

    def gate(self, name: str, template: str, source: str) -> bool:
        """For a hot path, before it builds a log record at all: False (and the event
        counted) when a line of this kind from this source would be held back anyway."""
        key = (name, template, str(source)[:100])
        with self._lock:
            win = self.repeats._windows.get(key)
            if win is None or win.passed < self.repeats.burst or self.clock() >= win.end:
                return True  # the filter decides, with the record
            win.count += 1
            win.last = win.last or template  # what kind of line, if none was kept
            self.suppressed += 1
        return False

    def flush(self) -> int:
        """Log the summaries that are due; returns how many."""
        with self._lock:
            due = self.repeats.due(self.clock())
        for summary in due:
            _emit(summary)
        return len(due)

    def flush_all(self) -> None:
        """Log every count still held (the gateway stops)."""
        with self._lock:
            due = self.repeats.due(self.clock(), everything=True)
        for summary in due:
            _emit(summary)

    async def run(self, every: float = 5.0) -> None:
        """Flush now and then, so a flood that stopped still gets its count logged."""
        while True:
            await asyncio.sleep(every)
            self.flush()


def _source(record: logging.LogRecord) -> str | None:
    source = getattr(record, "source", None)
    return None if source is None else str(source)[:100]


def _text(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()[:300]
    except Exception:  # noqa: BLE001 - a bad format must not break logging
        return str(record.msg)[:300]


def _emit(summary: Summary) -> None:
    name, _, source = summary.key
    seconds = max(1, round(summary.until - summary.since))
    logging.getLogger(name).log(
        summary.level or logging.WARNING,
        "%d more like this%s in the last %d s; the last: %s", summary.count,
        f" from {source}" if source not in (None, "*") else
        (" from other sources" if source == "*" else ""), seconds, summary.last,
        extra={"repeat_summary": True})


def should_log(logger: logging.Logger, template: str, source: str) -> bool:
    """Whether a line (of `template`, from `source`) is worth building: a hot path asks
    first, so that a flood of held-back lines costs a dict lookup each, not a log record."""
    for f in logger.filters:
        if isinstance(f, RepeatFilter) and not f.gate(logger.name, template, source):
            return False
    return True


@contextmanager
def installed(interval: float = INTERVAL) -> Iterator[RepeatFilter]:
    """A filter on the gateway's loggers while the block runs (one per running gateway)."""
    filt = RepeatFilter(interval)
    loggers = [logging.getLogger(name) for name in LOGGERS]
    for logger in loggers:
        logger.addFilter(filt)
    try:
        yield filt
    finally:
        for logger in loggers:
            logger.removeFilter(filt)
        filt.flush_all()
