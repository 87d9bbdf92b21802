"""The journal spool on a real file system: kept entries survive, delivery takes whole files,
the bound holds, a line torn by a crash is skipped."""

from __future__ import annotations

import pytest

from gateway.spool import Spool, SpoolFull, SpoolItem


def items(n: int, start: int = 0) -> list[SpoolItem]:
    return [SpoolItem(f"1.{i}", None if i % 2 else "alice", '{"call": "%d"}' % i)
            for i in range(start, start + n)]


def test_appended_entries_are_delivered_in_order_and_then_gone(tmp_path):
    spool = Spool(tmp_path)
    assert not spool.pending()
    spool.append(items(3))
    spool.append(items(2, 3))
    assert spool.pending()
    files = spool.take()
    assert [i.uid for f in files for i in Spool.read(f)] == [f"1.{i}" for i in range(5)]
    spool.append(items(1, 5))  # written while the first file is delivered: a new spool
    for f in files:
        spool.done(f)
    assert spool.pending()
    assert [i.uid for f in spool.take() for i in Spool.read(f)] == ["1.5"]


def test_a_left_over_draining_file_is_delivered_first(tmp_path):
    spool = Spool(tmp_path)
    spool.append(items(2))
    first = spool.take()  # a crash after this: the draining file stays
    spool.append(items(1, 2))
    again = Spool(tmp_path).take()  # the next start
    assert again[0] == first[0] and len(again) == 2


def test_the_bound_refuses_a_batch_whole(tmp_path):
    spool = Spool(tmp_path, max_bytes=200)
    spool.append(items(2))
    size = spool.path.stat().st_size
    with pytest.raises(SpoolFull):
        spool.append(items(10, 2))
    assert spool.path.stat().st_size == size  # nothing half-kept


def test_a_line_torn_by_a_crash_is_skipped(tmp_path):
    spool = Spool(tmp_path)
    spool.append(items(2))
    with open(spool.path, "ab") as f:
        f.write(b'{"u": "1.9", "c": nu')  # the write a crash cut short
    read = [i.uid for f in spool.take() for i in Spool.read(f)]
    assert read == ["1.0", "1.1"]
