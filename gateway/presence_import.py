"""Admin-set presence from a CSV file, pure: rows in, the status in force at `now` out.

Columns: id, client, status, start, end, info, set by (a header row naming them is optional).
`start` and `end` are ISO 8601 times (`2026-11-26 08:00`, `2026-11-26T08:00:00+01:00`; a time
without a zone is local time) or empty (since ever / until further notice). A row is in force
from its start until its end; where several are in force for one client, the one that started
last wins. When a row ends the client's status goes back to `available` (unless another row
is in force). A bad row is reported with its line number and the others apply.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime

from .model import PRESENCE_STATUSES

__all__ = ["PresenceRow", "parse_presence_csv", "in_force", "next_change"]

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
