"""Logs under a flood, end to end: one line per kind and source per interval, with a count."""

from __future__ import annotations

import logging
import re

from conftest import PW, eventually
from test_privacy import config, in_service


def counted(records, pattern: str) -> tuple[int, int]:
    """(lines logged, events they stand for) for messages matching `pattern`."""
    lines, events = 0, 0
    for r in records:
        text = r.getMessage()
        if not re.search(pattern, text):
            continue
        lines += 1
        m = re.match(r"(\d+) more like this", text)
        events += int(m.group(1)) if m else 1
    return lines, events


async def test_a_flood_of_bad_bridge_lines_logs_a_few_lines_with_the_count(
        redis_url, start_gateway, bridge, caplog):
    caplog.set_level(logging.INFO, logger="gateway")
    gw = await start_gateway(config(redis_url))
    b1 = await bridge(gw)
    await in_service(b1)
    await b1.send(*["garbage %d" % i for i in range(2000)])
    await eventually(lambda: gw.bridge.lines_bad >= 2000)
    b2 = await bridge(gw)  # another bridge: its first bad line is not hidden by the flood
    await b2.send("more garbage")
    await eventually(lambda: gw.bridge.lines_bad >= 2001)
    lines, _ = counted(caplog.records, "line skipped")
    assert lines == 3 + 1  # the first three of the flood, the first of the other bridge
    await start_gateway.stop(gw)  # the counts held are logged at the end
    lines, events = counted(caplog.records, "line skipped")
    assert events == 2001 and lines <= 6


async def test_a_login_brute_force_writes_a_few_audit_lines_with_the_count(
        redis_url, start_gateway, connect, caplog):
    caplog.set_level(logging.INFO, logger="gateway.audit")
    gw = await start_gateway(config(redis_url))
    for i in range(60):
        c = await connect(gw)
        r = await c.request({"type": "login", "client": "full", "password": f"guess{i}"})
        assert r["type"] == "error"
        await c.close()
    audit = [r for r in caplog.records if r.name == "gateway.audit"]
    assert len(audit) <= 3 * 3  # a few lines per kind (failed, refused, ...) and address
    assert not any("guess" in r.getMessage() for r in audit)
    await start_gateway.stop(gw)
    _, failed = counted(caplog.records, r"login (failed|refused)")
    assert failed == 60  # every attempt accounted for in the audit log
    assert PW not in caplog.text
