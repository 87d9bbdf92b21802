"""A configuration file emptied mid-save (as an editor leaves it for a moment) or left with
no devices or no clients is refused: subscriptions survive and lamps go on."""

from __future__ import annotations

import asyncio

from conftest import PATIENCE, login, within
from faultkit import all_in_service, config, wait_lamps


async def test_an_emptied_config_file_is_refused_and_subscriptions_survive(
        redis_url, start_gateway, connect, bridge):
    text = config(redis_url)
    gw = await start_gateway(text)
    path = start_gateway.dir / "gateway.toml"
    b = await bridge(gw)
    await all_in_service(b)
    carol = await login(connect, gw, "carol")
    await carol.request({"type": "subscribe", "panel": "office"})
    await wait_lamps(carol, {"alice": "idle"}, PATIENCE)

    no_devices = '[[clients]]\nname = "alice"\n'
    no_clients = '[[devices]]\nid = "201"\n'
    for bad in ("", no_devices, no_clients):
        before = gw.metrics["config_rejected"]
        path.write_text(bad)
        for _ in within():
            if gw.metrics["config_rejected"] > before:
                break
            await asyncio.sleep(0.05)
        assert gw.metrics["config_rejected"] == before + 1, bad[:40]
        assert len(gw.config.devices) == 4
        # The watcher's subscription still works: a call on alice's line reaches it.
        await b.send({"device": "Line 201", "call": f"x{len(bad)}", "state": "offering",
                      "caller": "0301"})
        await wait_lamps(carol, {"alice": "ringing"}, PATIENCE)
        await b.send({"device": "Line 201", "call": f"x{len(bad)}", "state": "disconnected"})
        await wait_lamps(carol, {"alice": "idle"}, PATIENCE)
    mark = len(carol.received)
    path.write_text(text)  # the file comes back
    await asyncio.sleep(1.5)
    assert not [m for m in carol.received[mark:] if m.get("type") == "snapshot"]
    await b.send({"device": "Line 202", "call": "y", "state": "offering", "caller": "0302"})
    await wait_lamps(carol, {"bob": "ringing"}, PATIENCE)
