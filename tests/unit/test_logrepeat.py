"""Repeated warnings: the pure rule (first line at once, the rest counted per interval)."""

import logging

from gateway.logrepeat import RepeatFilter, Repeats

K = ("gateway.tapi", "line skipped: %s", "tapi#1")


def test_the_first_few_pass_the_rest_are_counted_then_summarised():
    r = Repeats(interval=60, burst=3)
    for i in range(3):
        assert r.admit(K, i * 0.01, "a") == (True, None)
    for i in range(3, 1000):
        assert r.admit(K, i * 0.01, f"x{i}") == (False, None)
    assert r.due(59.0) == []
    assert r.next_deadline() == 60.0
    [s] = r.due(60.0)
    assert s.count == 997 and s.last == "x999" and s.key == K
    assert len(r) == 0  # a kind that went quiet is forgotten
    assert r.admit(K, 61.0) == (True, None)


def test_a_late_event_brings_the_summary_of_the_interval_before():
    r = Repeats(interval=10, burst=1)
    r.admit(K, 0.0)
    r.admit(K, 1.0, "second")
    admit, summary = r.admit(K, 12.0, "third")
    assert admit and summary.count == 1 and summary.last == "second"


def test_sources_and_kinds_are_apart_and_bounded():
    r = Repeats(interval=60, max_kinds=3, burst=1)
    assert r.admit(K, 0.0)[0]
    assert r.admit((K[0], K[1], "tapi#2"), 0.0)[0]  # another source: its first line shows
    assert r.admit((K[0], "other %s", "tapi#1"), 0.0)[0]  # another kind too
    # Beyond the bound, new sources share one window per template.
    assert r.admit((K[0], K[1], "tapi#3"), 0.0)[0]
    assert not r.admit((K[0], K[1], "tapi#4"), 0.0)[0]
    assert len(r) == 4


def test_filter_holds_back_only_lines_that_name_a_source():
    now = [0.0]
    f = RepeatFilter(interval=60, clock=lambda: now[0], burst=1)

    def rec(msg, source=None):
        r = logging.LogRecord("gateway.tapi", logging.WARNING, __file__, 1, msg, ("x",), None)
        if source is not None:
            r.source = source
        return r

    assert all(f.filter(rec("config error %s")) for _ in range(5))  # never held back
    assert f.filter(rec("line skipped: %s", "tapi#1"))
    assert not f.filter(rec("line skipped: %s", "tapi#1"))
    assert f.suppressed == 1
