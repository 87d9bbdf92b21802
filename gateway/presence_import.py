"""Admin-set presence from a CSV file, pure: rows in, the status in force at `now` out.

Columns: id, client, status, start, end, info, set by (a header row naming them is optional).
`start` and `end` are ISO 8601 times (`2026-11-26 08:00`, `2026-11-26T08:00:00+01:00`; a time
without a zone is local time) or empty (since ever / until further notice). A row is in force
from its start until its end; where several are in force for one client, the one that started
last wins. When a row ends the client's status goes back to `available` (unless another row
is in force). A bad row is reported with its line number and the others apply.

The functions above are pure. :class:`PresenceImporter` is the thin loop around them: it
re-reads the file when it changes, and sets each client's presence when a row starts or ends.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from .config import Config
from .model import PRESENCE_STATUSES
from .store import RedisError

__all__ = ["PresenceRow", "parse_presence_csv", "in_force", "next_change", "PresenceImporter"]

log = logging.getLogger("gateway")

_COLUMNS = ["id", "client", "status", "start", "end", "info", "set by"]


@dataclass(frozen=True, slots=True)
class PresenceRow:
    line: int
    id: str
    client: str
    status: str
    start: float | None
    end: float | None
    info: str | None
    set_by: str


def _time(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    return datetime.fromisoformat(text).timestamp()


def parse_presence_csv(text: str, clients: set[str]) -> tuple[list[PresenceRow], list[str]]:
    """Rows and the problems found (`line N: reason`), each bad row skipped."""
    rows: list[PresenceRow] = []
    errors: list[str] = []
    reader = csv.reader(io.StringIO(text))
    for number, cells in enumerate(reader, start=1):
        if not cells or all(not c.strip() for c in cells):
            continue
        if number == 1 and cells[0].strip().lower() == "id":
            continue  # the header
        if len(cells) < 3 or len(cells) > len(_COLUMNS):
            errors.append(f"line {number}: expected {len(_COLUMNS)} columns "
                          f"({', '.join(_COLUMNS)}), got {len(cells)}")
            continue
        cells = [c.strip() for c in cells] + [""] * (len(_COLUMNS) - len(cells))
        rid, client, status, start, end, info, set_by = cells
        if client not in clients:
            errors.append(f"line {number}: unknown client {client!r}")
            continue
        if status not in PRESENCE_STATUSES:
            errors.append(f"line {number}: unknown status {status!r} "
                          f"(one of {', '.join(PRESENCE_STATUSES)})")
            continue
        try:
            t0, t1 = _time(start), _time(end)
        except ValueError as exc:
            errors.append(f"line {number}: bad time: {exc}")
            continue
        if t0 is not None and t1 is not None and t1 <= t0:
            errors.append(f"line {number}: end is not after start")
            continue
        if len(info) > 512:
            errors.append(f"line {number}: info longer than 512 characters")
            continue
        rows.append(PresenceRow(number, rid, client, status, t0, t1, info or None, set_by))
    return rows, errors


def in_force(rows: list[PresenceRow], now: float) -> dict[str, PresenceRow]:
    """The row in force for each client at `now`."""
    out: dict[str, PresenceRow] = {}
    for r in rows:
        if (r.start is None or r.start <= now) and (r.end is None or now < r.end):
            best = out.get(r.client)
            if best is None or (r.start or 0.0) >= (best.start or 0.0):
                out[r.client] = r
    return out


def next_change(rows: list[PresenceRow], now: float) -> float | None:
    """When the statuses in force next change (a row starts or ends), or None."""
    times = [t for r in rows for t in (r.start, r.end) if t is not None and t > now]
    return min(times, default=None)


class PresenceImporter:
    """Applies the admin's presence CSV (``[presence] import_file``) through `set_presence`
    (client, status, info): re-read when the file changes; rows start and end by themselves
    (:func:`next_change` says when the next one is due)."""

    def __init__(self, config: Callable[[], Config],
                 set_presence: Callable[[str, str, str | None], Awaitable[None]],
                 metrics: Counter[str]) -> None:
        self._config = config
        self._set_presence = set_presence
        self.metrics = metrics

    def _read(self, path, clients: set[str]) -> list[PresenceRow]:  # noqa: ANN001
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.error("presence import %s: cannot read: %s", path, exc)
            text = ""
        rows, errors = parse_presence_csv(text, clients)
        for e in errors:
            log.error("presence import %s: %s (row skipped)", path, e)
        self.metrics["presence_rows_rejected"] += len(errors)
        log.info("presence import %s: %d row(s) applied, %d rejected",
                 path, len(rows), len(errors))
        return rows

    async def run(self) -> None:
        """Until cancelled."""
        seen: tuple | None = None
        rows: list[PresenceRow] = []
        applied: dict[str, tuple[str, str | None]] = {}
        while True:
            cfg = self._config()
            pcfg = cfg.presence
            path = cfg.path(pcfg.import_file) if pcfg.import_file else None
            try:
                st = path.stat() if path else None
                stamp = (str(path), st.st_mtime_ns, st.st_size) if st else None
            except OSError:
                stamp = None
            if stamp != seen:
                seen = stamp
                rows = [] if stamp is None else self._read(path, set(cfg.client_by_name))
            now = time.time()
            want = {c: (r.status, r.info) for c, r in in_force(rows, now).items()}
            try:
                for client in set(applied) | set(want):
                    status = want.get(client, ("available", None))
                    if applied.get(client) != status and client in cfg.client_by_name:
                        await self._set_presence(client, *status)
                applied = dict(want)
            except (RedisError, OSError):
                pass  # applied again on the next round
            nxt = next_change(rows, now)
            await asyncio.sleep(min(max((nxt or now + 1.0) - now, 0.05), 1.0))
