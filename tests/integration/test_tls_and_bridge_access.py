"""TLS on the gateway's own ports and who may feed lamps through the bridge port.

Certificates are made in the test with `trustme` (a CA, server and client certificates).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import trustme

from blf_gateway.client import GatewayClient
from conftest import PATIENCE, eventually, free_port
from gateway.auth import hash_password
from gateway.tls import TlsError

PW = "tls test password"
HASH = hash_password(PW, n=2**10)
SECRET = "bridge-secret-0123456789abcdef"

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
{server_extra}

[redis]
url = "{redis}"

[sources.tapi_bridge]
listen = "127.0.0.1:0"
{bridge_extra}

[[devices]]
id = "201"
number = "201"

[[clients]]
name = "alice"
devices = ["201"]
password_hash = "{hash}"
"""

NOW = dt.datetime.now(dt.timezone.utc)


def config(redis_url: str, server_extra: str = "", bridge_extra: str = "", port: int = 0) -> str:
    return CONFIG.format(port=port, redis=redis_url, hash=HASH, server_extra=server_extra,
                         bridge_extra=bridge_extra)


@pytest.fixture
def ca():
    return trustme.CA()


def write_cert(ca, tmp_path, name="server", **kw):
    cert = ca.issue_cert("localhost", "127.0.0.1", **kw)
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / f"{name}.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / f"{name}.key"))
    return cert


def client_ctx(ca, client_cert=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if client_cert is not None:
        client_cert.configure_cert(ctx)
    return ctx


TLS_SERVER = 'tls_cert = "server.pem"\ntls_key = "server.key"'


def ring(call: str, caller: str) -> bytes:
    return json.dumps({"device": "201", "call": call, "state": "offering",
                       "caller": caller}).encode() + b"\n"


# -- wss:// and https:// ----------------------------------------------------------------------


async def test_wss_and_https_with_a_renewal_while_clients_stay(start_gateway, redis_url, ca,
                                                               tmp_path):
    write_cert(ca, tmp_path)
    gw = await start_gateway(config(redis_url, TLS_SERVER))
    ctx = client_ctx(ca)
    url = f"wss://localhost:{gw.ws_port}/ws"
    seen = []
    client = GatewayClient(url, "alice", PW, ssl=ctx, on_change=seen.append)
    await client.connect()
    await client.subscribe(device="201")

    def get(path: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(f"https://localhost:{gw.ws_port}{path}", context=ctx,
                                    timeout=5) as r:
            return r.status, r.read()

    status, body = await asyncio.to_thread(get, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, body = await asyncio.to_thread(get, "/")
    assert status == 200 and b"<html" in body.lower()  # the switchboard over https
    with pytest.raises(Exception):  # plain http on the TLS port gets nothing
        await asyncio.to_thread(urllib.request.urlopen,
                                f"http://127.0.0.1:{gw.ws_port}/healthz", timeout=3)

    # The container HEALTHCHECK's command works over https too.
    r = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway", "health", "--url",
                         f"https://127.0.0.1:{gw.ws_port}/healthz"],
        capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "200 ok" in r.stdout, r.stdout + r.stderr

    old_der = await _served_cert(gw.ws_port, ctx)
    renewed = write_cert(ca, tmp_path)  # renewal: a new certificate and key in place
    await eventually(lambda: gw.tls.reloads == 1, timeout=10)
    new_der = await _served_cert(gw.ws_port, ctx)
    assert new_der != old_der
    assert new_der == ssl.PEM_cert_to_DER_cert(renewed.cert_chain_pems[0].bytes().decode())

    # The client connected before the renewal is still in its session and still served.
    _, w = await asyncio.open_connection("127.0.0.1", gw.bridge.port)
    w.write(ring("c1", "+4930111"))
    await w.drain()
    await eventually(lambda: any(c.lamp == "ringing" for c in seen))
    assert client.reconnects == 0
    w.close()
    await client.close()


async def _served_cert(port: int, ctx: ssl.SSLContext) -> bytes:
    _, w = await asyncio.open_connection("localhost", port, ssl=ctx)
    der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
    w.close()
    return der


async def test_a_bad_renewal_keeps_the_good_certificate(start_gateway, redis_url, ca, tmp_path,
                                                        caplog):
    write_cert(ca, tmp_path)
    gw = await start_gateway(config(redis_url, TLS_SERVER))
    before = await _served_cert(gw.ws_port, client_ctx(ca))
    expired = ca.issue_cert("localhost", not_after=NOW - dt.timedelta(days=1))
    expired.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    expired.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    with caplog.at_level(logging.ERROR, logger="gateway.tls"):
        await eventually(lambda: "NOT renewed" in caplog.text, timeout=10)
    assert "expired on" in caplog.text
    assert await _served_cert(gw.ws_port, client_ctx(ca)) == before  # still the good one


async def test_expired_or_mismatched_certificate_is_a_clear_error(start_gateway, redis_url, ca,
                                                                 tmp_path):
    write_cert(ca, tmp_path, not_after=NOW - dt.timedelta(days=2))
    with pytest.raises(TlsError, match="expired on"):
        await start_gateway(config(redis_url, TLS_SERVER))
    write_cert(ca, tmp_path)
    other = ca.issue_cert("localhost")
    other.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    with pytest.raises(TlsError, match="does not belong to the certificate"):
        await start_gateway(config(redis_url, TLS_SERVER))


def test_run_with_an_expired_certificate_says_so_in_one_line(redis_url, ca, tmp_path):
    write_cert(ca, tmp_path, not_after=NOW - dt.timedelta(days=2))
    f = tmp_path / "gw.toml"
    f.write_text(config(redis_url, TLS_SERVER, port=free_port()))
    r = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "server.pem: the certificate expired on" in r.stderr
    assert "Traceback" not in r.stderr


async def test_metrics_need_an_admin_client_certificate(start_gateway, redis_url, ca, tmp_path):
    write_cert(ca, tmp_path)
    admin_ca = trustme.CA()
    admin_ca.cert_pem.write_to_path(str(tmp_path / "admin-ca.pem"))
    gw = await start_gateway(config(
        redis_url, TLS_SERVER + '\nadmin_client_ca = "admin-ca.pem"'))
    base = f"https://localhost:{gw.ws_port}"

    def get(path: str, ctx: ssl.SSLContext) -> int:
        try:
            with urllib.request.urlopen(base + path, context=ctx, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    plain = client_ctx(ca)
    admin = client_ctx(ca, admin_ca.issue_cert("admin@example.org"))
    assert await asyncio.to_thread(get, "/metrics", plain) == 403
    assert await asyncio.to_thread(get, "/metrics", admin) == 200
    assert await asyncio.to_thread(get, "/healthz", plain) == 200  # health stays open
    # A board user needs no certificate for the session either.
    async with GatewayClient(f"wss://localhost:{gw.ws_port}/ws", "alice", PW, ssl=plain) as c:
        assert c.welcome.client.name == "alice"


# -- the bridge port ---------------------------------------------------------------------------


async def _watch(connect, gw):
    watcher = await connect(gw)
    await watcher.request({"type": "login", "client": "alice", "password": PW})
    await watcher.request({"type": "subscribe", "device": "201"})
    return watcher


async def _closed_by_gateway(reader, timeout: float = PATIENCE) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except (ConnectionError, OSError):
        return True


async def test_bridge_secret_only_an_honest_bridge_changes_lamps(start_gateway, redis_url,
                                                               connect, tmp_path, caplog):
    (tmp_path / "bridge.secret").write_text(SECRET + "\n")
    gw = await start_gateway(config(redis_url, bridge_extra='secret_file = "bridge.secret"'))
    watcher = await _watch(connect, gw)
    caplog.set_level(logging.WARNING, logger="gateway.tapi")

    attempts = [
        b"",  # no auth line: straight to a call
        b'{"auth": "wrong-secret-0123456789abcdef"}\n',
        b'{"auth": "' + SECRET[:-1].encode() + b'"}\n',  # all but the last character
        b'{"auth": 12345}\n',
    ]
    for auth in attempts:
        r, w = await asyncio.open_connection("127.0.0.1", gw.bridge.port)
        w.write(auth + ring("evil", "+666000"))
        await w.drain()
        assert await _closed_by_gateway(r)
        w.close()
    for _ in range(20):  # a flood of wrong secrets from one address
        r, w = await asyncio.open_connection("127.0.0.1", gw.bridge.port)
        w.write(b'{"auth": "guess-guess-guess-guess"}\n')
        await w.drain()
        await _closed_by_gateway(r)
        w.close()
    assert gw.engine.device_view("201").lamp.value == "unknown"
    assert gw.bridge.refused == 24  # every one counted (blf_source_refused_total)
    refusals = [rec for rec in caplog.records if "refused" in rec.getMessage()]
    assert 1 <= len(refusals) <= 4, [r.getMessage() for r in refusals]  # aggregated
    assert SECRET not in caplog.text and "guess-guess" not in caplog.text

    r, w = await asyncio.open_connection("127.0.0.1", gw.bridge.port)
    w.write(json.dumps({"auth": SECRET}).encode() + b"\n" + ring("c1", "+4930123"))
    await w.drain()
    lamp = await watcher.wait(lambda m: m.get("type") == "lamp" and m["lamp"] == "ringing")
    assert lamp["calls"][0]["remote"] == "+4930123"
    assert "+666000" not in "".join(watcher.raw)  # nothing of the refused ones, anywhere
    w.close()


async def test_bridge_allow_list(start_gateway, redis_url, connect, tmp_path):
    gw = await start_gateway(config(redis_url, bridge_extra='allow = ["10.99.0.0/16"]'),
                             name="a.toml")
    r, w = await asyncio.open_connection("127.0.0.1", gw.bridge.port)
    w.write(ring("evil", "+666000"))
    await w.drain()
    assert await _closed_by_gateway(r)
    w.close()
    assert gw.engine.device_view("201").lamp.value == "unknown"
    await start_gateway.stop(gw)

    gw = await start_gateway(config(redis_url,
                                    bridge_extra='allow = ["10.99.0.0/16", "127.0.0.1"]'),
                             name="b.toml")
    watcher = await _watch(connect, gw)
    r, w = await asyncio.open_connection("127.0.0.1", gw.bridge.port)
    w.write(ring("c1", "+4930123"))
    await w.drain()
    await watcher.wait(lambda m: m.get("type") == "lamp" and m["lamp"] == "ringing")
    w.close()


async def test_bridge_over_tls_with_client_certificates(start_gateway, redis_url, connect, ca,
                                                        tmp_path, caplog):
    write_cert(ca, tmp_path, name="bridge")
    bridge_ca = trustme.CA()
    bridge_ca.cert_pem.write_to_path(str(tmp_path / "bridge-ca.pem"))
    gw = await start_gateway(config(redis_url, bridge_extra=(
        'tls_cert = "bridge.pem"\ntls_key = "bridge.key"\ntls_client_ca = "bridge-ca.pem"')))
    watcher = await _watch(connect, gw)
    port = gw.bridge.port
    caplog.set_level(logging.WARNING, logger="gateway.tapi")

    # Plain TCP on the TLS port: the bytes are no TLS handshake, nothing is applied.
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(ring("evil", "+666000"))
    await w.drain()
    assert await _closed_by_gateway(r)
    w.close()
    # TLS without a client certificate: refused, with a log line.
    r, w = await asyncio.open_connection("localhost", port, ssl=client_ctx(ca))
    w.write(ring("evil", "+666001"))
    await w.drain()
    assert await _closed_by_gateway(r)
    w.close()
    assert "no client certificate" in caplog.text
    # A certificate from another CA: the handshake fails.
    stranger = client_ctx(ca, trustme.CA().issue_cert("bridge.example.org"))
    try:
        r, w = await asyncio.open_connection("localhost", port, ssl=stranger)
        w.write(ring("evil", "+666002"))
        await w.drain()
        assert await _closed_by_gateway(r)
        w.close()
    except (ssl.SSLError, ConnectionError):
        pass
    assert gw.engine.device_view("201").lamp.value == "unknown"

    honest = client_ctx(ca, bridge_ca.issue_cert("bridge.example.org"))
    r, w = await asyncio.open_connection("localhost", port, ssl=honest)
    w.write(ring("c1", "+4930123"))
    await w.drain()
    await watcher.wait(lambda m: m.get("type") == "lamp" and m["lamp"] == "ringing")
    assert "+666" not in "".join(watcher.raw)
    w.close()


async def test_missing_or_short_bridge_secret_stops_the_start(start_gateway, redis_url,
                                                              tmp_path):
    with pytest.raises(RuntimeError, match="cannot read the bridge secret"):
        await start_gateway(config(redis_url, bridge_extra='secret_file = "nope.secret"'))
    (tmp_path / "short.secret").write_text("abc\n")
    with pytest.raises(RuntimeError, match="at least 16 characters"):
        await start_gateway(config(redis_url, bridge_extra='secret_file = "short.secret"'))
