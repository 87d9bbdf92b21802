"""blf-tapi-bridge as a real process: replay into the real gateway, config errors, help."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from conftest import eventually, free_port, login
from tapikit import office_config

TRACES = Path(__file__).parent / "traces"
CMD = [sys.executable, "-m", "gateway.tapi.winbridge.cli"]


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=timeout)


async def test_replay_process_lights_the_lamps_and_leaves_them_unknown_when_it_stops(
        redis_url, start_gateway, connect, tmp_path):
    port = free_port()
    gw = await start_gateway(office_config(redis_url, port))
    dan = await login(connect, gw, "dan", panel="office")
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-bridge-key\n")
    log = tmp_path / "logs" / "bridge.log"
    conf = tmp_path / "bridge.toml"
    conf.write_text(f'gateway = "127.0.0.1:{port}"\nlog_level = "debug"\n'
                    f'secret_file = "{secret}"\n')
    proc = await asyncio.create_subprocess_exec(
        *CMD, "--replay", str(TRACES / "external_missed.jsonl"), "--config", str(conf),
        "--until", "ringing", "--hold", "--speed", "0", "--log-file", str(log),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def alice():
            f = [m for m in dan.received if m.get("member") == "alice"]
            return f[-1] if f else None

        await eventually(lambda: (alice() or {}).get("lamp") == "ringing", 15)
        assert alice()["calls"][0]["remote"] == "+4930123456"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        # The bridge is gone: the gateway no longer knows the line's state.
        await eventually(lambda: alice()["lamp"] == "unknown", 5)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = log.read_text()
    assert "replay done" in text and "connected to the gateway" in text
    assert "s3cr3t-bridge-key" not in text  # the secret never reaches a log


def test_bad_settings_are_refused_with_a_clear_line(tmp_path):
    conf = tmp_path / "bridge.toml"
    conf.write_text('gateway = "h:1"\npickup = "steal"\n')
    done = run("--replay", str(TRACES / "external_missed.jsonl"), "--config", str(conf))
    assert done.returncode == 2
    assert "pickup" in done.stderr and "Traceback" not in done.stderr
    done = run("--replay", str(TRACES / "external_missed.jsonl"), "--gateway", "nohostport")
    assert done.returncode == 2 and "expected HOST:PORT" in done.stderr
    empty = tmp_path / "empty"
    empty.write_text("\n")
    done = run("--replay", str(TRACES / "external_missed.jsonl"), "--gateway", "h:1",
               "--secret-file", str(empty))
    assert done.returncode == 2 and "is empty" in done.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"msg": "LINE_CALLSTATE", "hCall": 1, "dwParam1": "LINECALLSTATE_BOGUS"}\n')
    done = run("--replay", str(bad), "--gateway", f"127.0.0.1:{free_port()}")
    assert done.returncode == 2 and "bad.jsonl:1" in done.stderr and "BOGUS" in done.stderr


def test_live_mode_and_service_say_they_need_windows():
    done = run("--list-lines")
    assert done.returncode == 1 and "only on Windows" in done.stderr
    done = run("run", "--gateway", "127.0.0.1:7001")
    assert done.returncode == 2 and "needs Windows" in done.stderr
    done = run("service", "install")
    assert done.returncode == 1 and "only on Windows" in done.stderr


def test_help_explains_the_commands():
    done = run("--help")
    assert done.returncode == 0
    for word in ("--list-lines", "--replay", "run", "service", "examples"):
        assert word in done.stdout
    done = run("run", "--help")
    for word in ("--gateway", "--lines", "--owner", "--secret-file", "--tls", "--speed"):
        assert word in done.stdout
