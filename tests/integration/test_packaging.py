"""packaging/: the systemd unit, the container recipe and the compose file.

No container engine runs on the test machine, so the image is not built here: what is checked
is that the recipe's commands are the gateway's real ones (they parse with its CLI, the
healthcheck answers 0 against a running gateway and 1 against none), that it copies what the
install needs and runs unprivileged. The systemd unit is verified by `systemd-analyze verify`
where systemd is installed.
"""

from __future__ import annotations

import asyncio
import configparser
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, free_port
from gateway.cli import build_parser
from gateway.config import load_config, parse_hostport

PKG = ROOT / "packaging"
BIN = [sys.executable, "-m", "gateway"]


def unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # keys are case-sensitive in systemd
    cp.read(PKG / "blf-gateway.service")
    return cp


def test_unit_runs_as_its_own_user_sandboxed_and_reloads_by_sighup():
    svc = unit()["Service"]
    assert svc["User"] == "blf-gateway" and svc["Group"] == "blf-gateway"
    assert svc["StateDirectory"] == "blf-gateway"
    assert svc["ProtectSystem"] == "strict"
    assert svc["NoNewPrivileges"] == "yes"
    assert svc["Restart"] == "on-failure"
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    argv = shlex.split(svc["ExecStart"])
    args = build_parser().parse_args(argv[1:])  # a command line the gateway understands
    assert args.command == "run" and args.config == "/etc/blf-gateway/gateway.toml"
    users = (PKG / "blf-gateway.sysusers").read_text()
    assert "u blf-gateway - " in users


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (no systemd on this machine)")
def test_systemd_analyze_verify_finds_nothing(tmp_path):
    # verify also checks that ExecStart's program exists: point it at the blf-gateway
    # script this installation made (what pip puts in /usr/local/bin on a server).
    script = Path(sys.executable).parent / "blf-gateway"
    assert script.exists()
    text = (PKG / "blf-gateway.service").read_text()
    (tmp_path / "blf-gateway.service").write_text(
        text.replace("/usr/local/bin/blf-gateway", str(script)))
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "blf-gateway.service")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # Unknown keys and bad values are only warnings for systemd: there must be none.
    assert r.stderr.strip() == "" and r.stdout.strip() == "", r.stderr + r.stdout


def instructions() -> list[tuple[str, str]]:
    out, cur = [], ""
    for line in (PKG / "Containerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        cur += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = cur.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            cur = ""
    return out


def json_args(text: str) -> list[str]:
    import json

    return json.loads(text)


def test_containerfile_runs_the_readmes_commands_unprivileged():
    ins = instructions()
    users = [v for k, v in ins if k == "USER"]
    assert users and users[-1] not in ("root", "0")
    entry = json_args(next(v for k, v in ins if k == "ENTRYPOINT"))
    cmd = json_args(next(v for k, v in ins if k == "CMD"))
    assert entry == ["blf-gateway"]
    assert build_parser().parse_args(cmd).command == "run"
    readme = (ROOT / "README.md").read_text()
    assert "blf-gateway run --config" in readme and "pip install ." in readme
    # It installs the copied source tree the way the README does, and copies every package
    # and data folder pyproject.toml ships (else the image would lack them).
    runs = [v for k, v in ins if k == "RUN"]
    assert any("pip install /src" in r for r in runs)
    copied = {Path(p).name for k, v in ins if k == "COPY" for p in v.split()[:-1]}
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in meta["tool"]["setuptools"]["packages"]["find"]["include"]}
    data = {Path(g).parts[0] for globs in meta["tool"]["setuptools"]["data-files"].values()
            for g in globs}
    assert packages | data | {"pyproject.toml", "README.md"} <= copied, copied
    health = next(v for k, v in ins if k == "HEALTHCHECK")
    hargs = json_args(health.split("CMD", 1)[1].strip())
    assert hargs[0] == "blf-gateway"
    assert build_parser().parse_args(hargs[1:]).command == "health"
    exposed = {int(p) for k, v in ins if k == "EXPOSE" for p in v.split()}
    cfg = load_config(PKG / "gateway.example.toml")
    assert exposed == {parse_hostport(cfg.server.listen)[1],
                       parse_hostport(cfg.sources.tapi_bridge.listen)[1]}


def test_compose_file_wires_gateway_redis_and_the_config_path():
    compose = yaml.safe_load((PKG / "compose.yaml").read_text())
    gw, redis = compose["services"]["gateway"], compose["services"]["redis"]
    assert (PKG / gw["build"]["context"] / gw["build"]["dockerfile"]).resolve() == \
        (PKG / "Containerfile").resolve()
    assert gw["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "healthcheck" in redis
    cmd = json_args(next(v for k, v in instructions() if k == "CMD"))
    config_path = cmd[cmd.index("--config") + 1]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in gw["volumes"]}
    assert config_path in mounts  # the file the container runs with is the mounted one
    cfg = load_config(PKG / "gateway.example.toml")
    assert cfg.redis is not None and cfg.redis.url.startswith("redis://redis:")
    assert cfg.sources.tapi_bridge.secret_file in mounts
    ports = {int(p.split(":")[1]) for p in gw["ports"]}
    assert parse_hostport(cfg.server.listen)[1] in ports


async def test_healthcheck_command_against_a_running_gateway(tmp_path, redis_url):
    """The HEALTHCHECK's command, run as written against the example configuration (made
    local: this Redis, free ports): 0 while the gateway is healthy, 1 when nothing answers."""
    from conftest import wait_port

    ws, bridge = free_port(), free_port()
    text = (PKG / "gateway.example.toml").read_text()
    text = (text.replace('"0.0.0.0:8765"', f'"127.0.0.1:{ws}"')
            .replace('"0.0.0.0:7001"', f'"127.0.0.1:{bridge}"')
            .replace('"redis://redis:6379/0"', f'"{redis_url}"')
            .replace('"/var/lib/blf-gateway"', f'"{tmp_path / "state"}"')
            .replace('"/etc/blf-gateway/bridge.secret"', '"bridge.secret"'))
    (tmp_path / "bridge.secret").write_text("an example bridge secret, long enough\n")
    f = tmp_path / "gateway.toml"
    f.write_text(text)
    health = [*BIN, "health", "--config", str(f)]
    proc = subprocess.Popen([*BIN, "run", "--config", str(f)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        await asyncio.to_thread(wait_port, ws)
        r = await asyncio.to_thread(subprocess.run, health, capture_output=True, text=True,
                                    timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"http://127.0.0.1:{ws}/healthz: 200 ok" in r.stdout
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.communicate, timeout=20)
    r = await asyncio.to_thread(subprocess.run, health, capture_output=True, text=True,
                                timeout=30)
    assert r.returncode == 1 and "unreachable" in r.stderr
