"""The bridge program against a gateway that guards its bridge port ([sources.tapi_bridge]
secret_file, and TLS with client certificates): the honest bridge lights the lamps, one with
a wrong secret or without a certificate changes nothing."""

from __future__ import annotations

import asyncio
import ssl

import trustme

from conftest import eventually, free_port, login
from gateway.tapi.winbridge.link import Bridge, LinkOptions
from gateway.tapi.winbridge.translate import LineOpened
from tapikit import office_config


def secured(config: str, extra: str) -> str:
    return config.replace('[sources.tapi_bridge]\n', f'[sources.tapi_bridge]\n{extra}\n', 1)


def lamp_of(dan, name):
    seen = [m for f in dan.received for m in (
        f.get("members", []) if f.get("type") == "snapshot" else [f])
        if m.get("member", m.get("client")) == name and "lamp" in m]
    return seen[-1]["lamp"] if seen else None


async def run_bridge(options: LinkOptions, line: str = "Line 201"):
    bridge = Bridge(options)
    bridge.feed(LineOpened(0, line, "201"))
    return bridge, asyncio.create_task(bridge.run())


async def test_secret_first_line(redis_url, start_gateway, connect, tmp_path):
    secret = tmp_path / "bridge.secret"
    secret.write_text("a-long-shared-secret-for-the-bridge-0123456789\n")
    port = free_port()
    gw = await start_gateway(secured(
        office_config(redis_url, port),
        f'secret_file = "{secret}"'))
    dan = await login(connect, gw, "dan", panel="office")

    intruder, t1 = await run_bridge(LinkOptions("127.0.0.1", port, secret="wrong",
                                                backoff_min=0.05, backoff_max=0.1))
    try:
        await eventually(lambda: intruder.connections >= 2)  # refused, and it keeps trying
        await asyncio.sleep(0.2)
        assert lamp_of(dan, "alice") == "unknown"  # nothing it said was taken
    finally:
        intruder.stop()
        await asyncio.wait_for(t1, 5)

    honest, t2 = await run_bridge(LinkOptions(
        "127.0.0.1", port, secret=secret.read_text().strip(), backoff_min=0.05))
    try:
        await eventually(lambda: lamp_of(dan, "alice") == "idle")
    finally:
        honest.stop()
        await asyncio.wait_for(t2, 5)


async def test_tls_with_client_certificate(redis_url, start_gateway, connect, tmp_path):
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("bridge.example")
    paths = {}
    for name, blob in (("ca", ca.cert_pem), ("cert", server.cert_chain_pems[0]),
                       ("key", server.private_key_pem), ("ccert", client.cert_chain_pems[0]),
                       ("ckey", client.private_key_pem)):
        paths[name] = tmp_path / f"{name}.pem"
        blob.write_to_path(str(paths[name]))
    port = free_port()
    gw = await start_gateway(secured(
        office_config(redis_url, port),
        f'tls_cert = "{paths["cert"]}"\ntls_key = "{paths["key"]}"\n'
        f'tls_client_ca = "{paths["ca"]}"'))
    dan = await login(connect, gw, "dan", panel="office")

    no_cert = ssl.create_default_context(cafile=str(paths["ca"]))
    anonymous, t1 = await run_bridge(LinkOptions("127.0.0.1", port, ssl=no_cert,
                                                 backoff_min=0.05, backoff_max=0.1))
    try:
        await eventually(lambda: anonymous.connections >= 1)
        await asyncio.sleep(0.3)
        assert lamp_of(dan, "alice") == "unknown"
    finally:
        anonymous.stop()
        await asyncio.wait_for(t1, 5)

    with_cert = ssl.create_default_context(cafile=str(paths["ca"]))
    with_cert.load_cert_chain(str(paths["ccert"]), str(paths["ckey"]))
    honest, t2 = await run_bridge(LinkOptions("127.0.0.1", port, ssl=with_cert,
                                              backoff_min=0.05))
    try:
        await eventually(lambda: lamp_of(dan, "alice") == "idle")
    finally:
        honest.stop()
        await asyncio.wait_for(t2, 5)
