"""Running the gateway as server software: JSON log lines, reload by SIGHUP."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

from conftest import PATIENCE, free_port, wait_port

BIN = [sys.executable, "-m", "gateway"]

CONFIG = """
[server]
listen = "127.0.0.1:{ws}"
{server_extra}

[redis]
url = "{redis}"

[sources.tapi_bridge]
listen = "127.0.0.1:{bridge}"

[[devices]]
id = "201"
{more}
"""


async def test_json_log_lines_one_object_each(tmp_path, redis_url):
    ws, bridge = free_port(), free_port()
    f = tmp_path / "gw.toml"
    f.write_text(CONFIG.format(ws=ws, bridge=bridge, redis=redis_url, more="",
                               server_extra='log_format = "json"'))
    proc = subprocess.Popen([*BIN, "run", "--config", str(f)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        await asyncio.to_thread(wait_port, bridge)
        _, w = await asyncio.open_connection("127.0.0.1", bridge)
        w.write(b'{"device": "201", "state": "offering"\n')  # broken line: a warning
        await w.drain()
        await asyncio.sleep(0.3)
        w.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(proc.communicate, timeout=20)
    assert proc.returncode == 0, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    records = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
    assert any(r["logger"] == "gateway.tapi" and r["level"] == "warning"
               and "line skipped" in r["message"] for r in records), records
    assert records[-1]["message"] == "gateway stopped"
    assert records[0]["ts"].endswith("Z")


async def test_sighup_rereads_the_configuration(tmp_path, redis_url):
    """`systemctl reload` sends SIGHUP: the file is applied even when its modification time
    did not change (here it is put back on purpose, so only the signal can have done it)."""
    import os

    from blf_gateway.client import GatewayClient
    from gateway.auth import hash_password

    ws, bridge = free_port(), free_port()
    hashed = hash_password("sighup password", n=2**10)
    text = CONFIG.format(ws=ws, bridge=bridge, redis=redis_url, server_extra="",
                         more=f'name = "Desk A"\n[[clients]]\nname = "alice"\n'
                              f'devices = ["201"]\npassword_hash = "{hashed}"\n')
    f = tmp_path / "gw.toml"
    f.write_text(text)
    proc = subprocess.Popen([*BIN, "run", "--config", str(f)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    url = f"ws://127.0.0.1:{ws}/ws"

    async def device_name() -> str:
        async with GatewayClient(url, "alice", "sighup password") as c:
            return c.welcome.devices[0].name

    try:
        await asyncio.to_thread(wait_port, ws)
        assert await device_name() == "Desk A"
        st = f.stat()
        with open(f, "r+") as fh:  # same size, same inode, then the old mtime back
            fh.write(text.replace("Desk A", "Desk B"))
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        await asyncio.sleep(1.2)
        assert await device_name() == "Desk A"  # the file watcher cannot have seen it
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + PATIENCE
        while await device_name() != "Desk B":
            assert time.monotonic() < deadline, "SIGHUP did not reload the configuration"
            await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=20)
    assert proc.returncode == 0, err
    assert "reload requested (SIGHUP)" in err
