"""The one handler of every line source (gateway/sources.py) against a real Redis: reports
become published device states and journal entries; a lost connection makes exactly its
devices unknown; sources never touch a tracker themselves."""

from __future__ import annotations

import asyncio

from gateway.calls import CallReport, Phase, ServiceReport
from gateway.config import parse_config
from gateway.journal import Journal
from gateway.model import DeviceStatus, Direction
from gateway.panels.engine import Engine
from gateway.publisher import Publisher
from gateway.sources import LineSources
from gateway.store import Store

from conftest import within

CONFIG = parse_config("""
[sources.tapi_bridge]
listen = "127.0.0.1:0"
[[devices]]
id = "201"
number = "201"
journal = true
[[devices]]
id = "202"
number = "202"
[[clients]]
name = "alice"
devices = ["201"]
""")


async def stored(store: Store) -> dict:
    _, devices, _ = await store.load_all()
    return {s.device: s for s, _ in devices}


async def test_reports_lost_connections_and_the_journal(redis_url):
    store = Store(redis_url)
    engine = Engine(CONFIG)
    journal = Journal(store, lambda: engine, lambda: CONFIG)
    publisher = Publisher(store, "p1")
    sources = LineSources(lambda: CONFIG, publisher, journal, store, lambda: engine)
    writer = asyncio.create_task(journal.run())
    try:
        sources.reports("tapi_bridge", [
            CallReport("201", "c1", Phase.RINGING, Direction.IN, "0301", conn="tapi#1"),
            ServiceReport("202", True, "tapi#2"),
        ])
        await publisher.flush()
        states = await stored(store)
        assert states["201"].calls[0].remote == "0301"
        assert states["202"].status is DeviceStatus.ONLINE

        sources.reports("tapi_bridge", [CallReport("201", "c1", Phase.CONNECTED, conn="tapi#1"),
                                        CallReport("201", "c1", Phase.ENDED, conn="tapi#1")])
        await publisher.flush()
        assert (await stored(store))["201"].calls == ()
        entries = await journal_entries(store)
        assert [(e["device"], e["remote"], e["answered"]) for _, e in entries] == [
            ("201", "0301", True)]

        # Only the devices the dropped connection reported turn unknown.
        sources.connection_lost("tapi_bridge", "tapi#2")
        await publisher.flush()
        states = await stored(store)
        assert states["202"].status is DeviceStatus.UNKNOWN
        assert states["201"].status is DeviceStatus.ONLINE

        # A source that is not configured here is not heard.
        sources.reports("ami", [ServiceReport("201", False, "ami")])
        sources.connection_lost("sip", None)
        await publisher.flush()
        assert (await stored(store))["201"].status is DeviceStatus.ONLINE
        assert publisher.published == 4
    finally:
        writer.cancel()
        await store.close()


async def journal_entries(store: Store) -> list:
    for _ in within():  # the journal writer runs in its own task
        entries = await store.read_journal(None)
        if entries:
            return entries
        await asyncio.sleep(0.02)
    raise AssertionError("no journal entry written")
