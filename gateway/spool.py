"""A durable local spool for journal entries that could not reach Redis.

Calls that end while Redis is away must not exist only in memory: a gateway stopped (or
killed) before Redis is back would lose them. They are appended to ``journal.spool`` under
the ``[state] dir``, one JSON object a line, fsync'd before we count them as kept. When
Redis answers again the spool is delivered and removed; every entry carries an id that Redis
remembers (see :meth:`gateway.store.Store.append_journal`), so an entry delivered twice (a
crash between delivering and removing the file, two processes on one state dir) is written
once.

Delivery never reads a file that is still being appended to: under a lock file the spool is
renamed to ``journal.spool.<random>.draining`` and appenders start a new one. Draining files
left by a crash are delivered at the next start.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Spool", "SpoolItem", "SpoolFull"]

log = logging.getLogger("gateway.journal")

MAX_SPOOL_BYTES = 64 * 1024 * 1024  # ~200,000 entries; beyond that new ones are refused


class SpoolFull(OSError):
    """The spool reached its size bound."""


@dataclass(frozen=True, slots=True)
class SpoolItem:
    """One journal entry: `client` None for the server journal, else an offline journal."""

    uid: str
    client: str | None
    entry: str  # the entry, JSON


def _encode(item: SpoolItem) -> bytes:
    return (json.dumps({"u": item.uid, "c": item.client, "e": item.entry},
                       separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def _decode(line: bytes) -> SpoolItem | None:
    try:
        raw = json.loads(line)
        return SpoolItem(str(raw["u"]), raw["c"], str(raw["e"]))
    except (ValueError, KeyError, TypeError):
        return None  # a line torn by a crash mid-write: nothing was promised for it


class Spool:
    """Blocking file operations (call them in a worker thread)."""

    def __init__(self, state_dir: Path, max_bytes: int = MAX_SPOOL_BYTES) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / "journal.spool"
        self.lockfile = self.dir / "journal.spool.lock"
        self.max_bytes = max_bytes

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _sync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, items: list[SpoolItem]) -> None:
        """Append and fsync; raises OSError (SpoolFull, ENOSPC...) when they are not kept."""
        if not items:
            return
        data = b"".join(_encode(i) for i in items)
        with self._locked():
            size = self.path.stat().st_size if self.path.exists() else 0
            if size + len(data) > self.max_bytes:
                raise SpoolFull(f"journal spool {self.path} is full ({size} bytes)")
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size)  # no half-kept batch
                raise
            finally:
                os.close(fd)
            if size == 0:
                self._sync_dir()

    def pending(self) -> bool:
        """Whether anything waits for delivery (a spool or a draining file)."""
        return self.path.exists() or any(self.dir.glob("journal.spool.*.draining"))

    def take(self) -> list[Path]:
        """Files to deliver, oldest first: left-over draining files, then the spool
        (renamed, so that new entries go to a new spool)."""
        with self._locked():
            if self.path.exists():
                target = self.dir / f"journal.spool.{uuid.uuid4().hex[:12]}.draining"
                os.rename(self.path, target)
                self._sync_dir()
        return sorted(self.dir.glob("journal.spool.*.draining"), key=_mtime)

    @staticmethod
    def read(path: Path) -> list[SpoolItem]:
        try:
            lines = path.read_bytes().splitlines()
        except FileNotFoundError:
            return []  # another process delivered it
        return [i for i in map(_decode, lines) if i is not None]

    def done(self, path: Path) -> None:
        """Every entry of `path` is in Redis: forget the file."""
        path.unlink(missing_ok=True)
        self._sync_dir()


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0
