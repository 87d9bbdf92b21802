"""`blf-gateway check` as an admin runs it before going live: errors, then warnings."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import trustme

from conftest import free_port

BIN = [sys.executable, "-m", "gateway"]

BASE = """
[server]
listen = "127.0.0.1:8765"
{server_extra}
{redis}
[sources.tapi_bridge]
listen = "127.0.0.1:7001"

[[devices]]
id = "201"
[[devices]]
id = "202"
[[devices]]
id = "203"

[[clients]]
name = "alice"
devices = ["201"]
monitor = [ {{ device = "203" }} ]
[[clients]]
name = "bob"
devices = ["202"]
[[clients]]
name = "lobby"
type = "nologin"

[[groups]]
name = "team"
members = ["alice", "bob"]
[[groups]]
name = "hidden"
members = ["alice"]
rights = {{ visible = false }}
"""


def check(path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*BIN, "check", "--config", str(path), *extra], capture_output=True,
                          text=True, timeout=60)


def write(tmp_path, redis: str = "", server_extra: str = ""):
    f = tmp_path / "gw.toml"
    f.write_text(BASE.format(redis=redis, server_extra=server_extra))
    return f


def test_panel_nobody_sees_and_device_on_no_panel(tmp_path):
    r = check(write(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "groups[1]: nobody can see panel 'hidden'" in r.stdout
    assert "devices[2]: device '203' is on no panel" in r.stdout
    assert "devices[0]" not in r.stdout and "devices[1]:" not in r.stdout
    # No Redis runs for this state dir: check says what it could not look at.
    assert "passwords and source reports were not checked" in r.stdout
    assert check(write(tmp_path), "--strict").returncode == 1


def test_certificate_expiring_soon_or_expired(tmp_path):
    ca = trustme.CA()
    now = dt.datetime.now(dt.timezone.utc)
    soon = ca.issue_cert("gw.example.org", not_after=now + dt.timedelta(days=10))
    soon.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    soon.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    f = write(tmp_path, server_extra='tls_cert = "cert.pem"\ntls_key = "key.pem"')
    r = check(f)
    assert r.returncode == 0
    assert "server.tls_cert: cert.pem expires in 9 day(s)" in r.stdout or \
        "server.tls_cert: cert.pem expires in 10 day(s)" in r.stdout, r.stdout
    old = ca.issue_cert("gw.example.org", not_after=now - dt.timedelta(days=1))
    old.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    old.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    r = check(f)
    assert r.returncode == 1  # the gateway would refuse to start with it: a problem
    assert "server.tls_cert: " in r.stdout and "the certificate expired on" in r.stdout
    fresh = ca.issue_cert("gw.example.org", not_after=now + dt.timedelta(days=90))
    fresh.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    fresh.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    assert "tls_cert" not in check(f).stdout


def test_clients_without_password_and_monitors_nobody_reports(tmp_path, redis_url):
    f = write(tmp_path, redis=f'[redis]\nurl = "{redis_url}"')
    r = check(f)
    assert r.returncode == 0, r.stderr
    assert "clients[0]: client 'alice' has no password" in r.stdout
    assert "clients[1]: client 'bob' has no password" in r.stdout
    assert "'lobby'" not in r.stdout  # nologin: never logs in
    assert "clients[0].monitor[0]: device '203' is reported by no source" in r.stdout
    assert "not checked" not in r.stdout
    pw = subprocess.run([*BIN, "password", "alice", "--config", str(f), "--generate"],
                        capture_output=True, text=True, timeout=60)
    assert pw.returncode == 0, pw.stderr
    r = check(f)
    assert "client 'alice' has no password" not in r.stdout
    assert "client 'bob' has no password" in r.stdout


def test_unreachable_redis_is_said_not_hidden(tmp_path):
    f = write(tmp_path, redis=f'[redis]\nurl = "redis://127.0.0.1:{free_port()}/0"')
    r = check(f)
    assert r.returncode == 0
    assert "passwords and source reports were not checked" in r.stdout
    assert "is not reachable" in r.stdout


def test_files_that_would_stop_the_start_are_problems(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("gw.example.org")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    ca.issue_cert("other").private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    f = write(tmp_path, server_extra='tls_cert = "cert.pem"\ntls_key = "key.pem"')
    f.write_text(f.read_text().replace('listen = "127.0.0.1:7001"',
                                       'listen = "127.0.0.1:7001"\nsecret_file = "none.secret"'))
    r = check(f)
    assert r.returncode == 1
    assert "server.tls_cert: " in r.stdout and "does not belong to the certificate" in r.stdout
    assert "sources.tapi_bridge.secret_file: " in r.stdout and "cannot read" in r.stdout
