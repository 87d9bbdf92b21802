"""The command line (contract section 3): run, demo, check, password, status, explain."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from .config import Config, ConfigError, load_config, parse_hostport

__all__ = ["main"]

EPILOG = """\
examples:
  blf-gateway demo                                  try it: a demo office with simulated calls
  blf-gateway check --config gateway.toml           validate a configuration
  blf-gateway run --config gateway.toml             run the gateway
  blf-gateway health --config gateway.toml          is the running gateway healthy?
  blf-gateway password alice --config gateway.toml --generate
  echo 'S3cret!pass' | blf-gateway password alice --config gateway.toml --stdin
  blf-gateway password alice --config gateway.toml --at-next-login
  blf-gateway explain 201 --config gateway.toml     why is this lamp red?

Passwords never stand in the configuration file in clear text: this command stores a scrypt
hash in the gateway's state (Redis). A running gateway uses it at the next login.
"""


def _setup_logging(level: str, fmt: str = "text") -> None:
    from .logs import setup_logging

    setup_logging(level, fmt)


def _load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: the configuration is invalid ({len(exc.errors)} problem(s)):",
              file=sys.stderr)
        for e in exc.errors:
            print(f"  - {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _use_uvloop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


def _run_gateway(config: Config, config_path: str | Path | None, extra=None) -> int:
    from .app import Gateway, install_signal_handlers
    from .heap import keep_heap

    async def main() -> None:
        gw = Gateway(config, config_path)
        install_signal_handlers(gw)
        task = asyncio.create_task(gw.run())
        ready = asyncio.create_task(gw.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        # The process's heap, kept out of the lamps' way (gateway.heap); not done where a
        # Gateway runs inside another program (tests), whose heap is not ours to freeze.
        heap = asyncio.create_task(keep_heap()) if ready.done() else None
        if ready.done() and extra is not None:
            side = asyncio.create_task(extra(gw))
        else:
            side = None
        await task
        if side is not None:
            side.cancel()
        if heap is not None:
            heap.cancel()

    from .tls import TlsError
    from .store import RedisError, write_refusal

    _use_uvloop()
    try:
        asyncio.run(main())
    except (RuntimeError, OSError, TlsError) as exc:
        # One clear line (a full disk, a port in use, no redis-server), never a traceback.
        logging.getLogger("gateway").error("cannot start: %s", exc)
        return 1
    except RedisError as exc:
        what = write_refusal(exc)
        logging.getLogger("gateway").error(
            "cannot start: Redis %s: %s", f"refuses writes ({what})" if what else "failed", exc)
        return 1
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    _setup_logging(args.log_level, config.server.log_format)
    return _run_gateway(config, args.config)


def cmd_check(args: argparse.Namespace) -> int:
    from .checks import config_warnings, startup_problems

    try:
        cfg = load_config(args.config)
        problems = startup_problems(cfg)
        if problems:
            raise ConfigError(problems)
    except ConfigError as exc:
        print(f"{args.config}: {len(exc.errors)} problem(s):")
        for e in exc.errors:
            print(f"  - {e}")
        return 1
    sources = [s for s in ("tapi_bridge", "ami", "sip") if getattr(cfg.sources, s) is not None]
    print(f"{args.config}: OK: {len(cfg.devices)} devices, {len(cfg.clients)} clients, "
          f"{len(cfg.groups)} groups; sources: {', '.join(sources) or 'none'}; "
          f"state: {'Redis at ' + cfg.redis.url if cfg.redis else 'embedded Redis in ' + str(cfg.path(cfg.state.dir))}")
    warnings = config_warnings(cfg)
    state, note = asyncio.run(_state_warnings(cfg))
    warnings += state
    if warnings:
        print(f"{len(warnings)} warning(s):")
        for w in warnings:
            print(f"  - {w}")
    if note:
        print(note)
    return 1 if warnings and args.strict else 0


async def _state_warnings(cfg: Config) -> tuple[list[str], str | None]:
    """Warnings that need Redis, only where it is reachable now: check never starts one."""
    from .checks import state_warnings
    from .store import EmbeddedRedis, Store

    if cfg.redis is not None:
        url, where = cfg.redis.url, f"Redis at {cfg.redis.url}"
    else:
        embedded = EmbeddedRedis(cfg.path(cfg.state.dir))
        if not await asyncio.to_thread(embedded._alive):
            return [], ("note: passwords and source reports were not checked: the embedded "
                        "Redis is not running (run check again while the gateway runs)")
        url, where = embedded.url, "the embedded Redis"
    store = Store(url)
    try:
        await asyncio.wait_for(store.ping(), 3)
        return await asyncio.wait_for(state_warnings(cfg, store), 10), None
    except Exception as exc:  # unreachable, refused, timed out
        return [], (f"note: passwords and source reports were not checked: {where} is not "
                    f"reachable ({exc or type(exc).__name__})")
    finally:
        await store.close()


async def _with_store(cfg: Config, work):
    from .store import EmbeddedRedis, Store

    embedded = None
    url = cfg.redis.url if cfg.redis else None
    if url is None:
        embedded = EmbeddedRedis(cfg.path(cfg.state.dir))
        # On this thread (not a worker's): the server ends with the thread that started it.
        url = embedded.start()
    store = Store(url)
    try:
        return await work(store)
    finally:
        await store.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def cmd_password(args: argparse.Namespace) -> int:
    from .auth import generate_password, hash_password, sip_ha1

    _setup_logging("warning")
    cfg = _load(args.config)
    client = cfg.client_by_name.get(args.client)
    if client is None:
        print(f"no client {args.client!r} in {args.config}", file=sys.stderr)
        return 2
    if client.type == "nologin":
        print(f"client {args.client!r} is of type nologin: it never logs in", file=sys.stderr)
        return 2
    if not (args.stdin or args.generate or args.at_next_login):
        print("give --stdin, --generate or --at-next-login (see --help)", file=sys.stderr)
        return 2
    if args.stdin and args.generate:
        print("--stdin and --generate exclude each other", file=sys.stderr)
        return 2
    password = None
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if len(password) < 8:
            print("the password must have at least 8 characters", file=sys.stderr)
            return 2
    elif args.generate:
        password = generate_password()
    hashed = hash_password(password) if password is not None else None

    async def work(store) -> None:
        await store.set_password(args.client, hashed, at_next_login=args.at_next_login,
                                 transfer=password if args.at_next_login else None,
                                 ha1=sip_ha1(args.client, password) if password else None)

    try:
        asyncio.run(_with_store(cfg, work))
    except Exception as exc:  # Redis unreachable, no redis-server...
        print(f"could not store the password: {exc}", file=sys.stderr)
        return 1
    if args.generate:
        print(password)
    what = "password set" if hashed else "password unchanged"
    if args.at_next_login:
        what += "; it is sent to the client at its next login (that login is not checked)"
    print(f"{args.client}: {what}", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    _setup_logging("warning")
    cfg = _load(args.config)

    async def work(store):
        _, _, clients = await store.load_all()
        return {s.client: s for s, _ in clients}

    try:
        states = asyncio.run(_with_store(cfg, work))
    except Exception as exc:
        print(f"could not read the gateway's state: {exc}", file=sys.stderr)
        return 1
    print(f"{'client':<20} {'status':<16} {'address':<22} devices")
    for c in cfg.clients:
        st = states.get(c.name)
        if c.type == "nologin":
            status = "No login"
        elif st is not None and st.logged_in:
            status = "Active" if st.logged_in is True else "Active (locked)"
        elif c.offline_monitor:
            status = "Offline monitor"
        else:
            status = "Offline"
        devices = list(c.devices)
        if st is not None and st.logged_in:
            devices += [f"{d} (temporary)" for d in st.temp_devices if d not in c.devices]
        address = (st.address or "") if st is not None and st.logged_in else ""
        print(f"{c.name:<20} {status:<16} {address:<22} {', '.join(devices) or '-'}")
    return 0


def health_url(cfg: Config) -> str:
    """The /healthz URL of the gateway this configuration runs, as seen from its own host."""
    host, port = parse_hostport(cfg.server.listen)
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if cfg.server.tls_cert else "http"
    return f"{scheme}://{host}:{port}/healthz"


def cmd_health(args: argparse.Namespace) -> int:
    import json
    import ssl
    import urllib.error
    import urllib.request

    if args.url:
        url = args.url
    else:
        url = health_url(_load(args.config))
    # A liveness probe of the gateway on this host: it sends no secret, so the certificate
    # (issued for the public name, not 127.0.0.1) is not checked.
    ctx = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=args.timeout, context=ctx) as resp:
            body, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    except (OSError, ValueError) as exc:
        print(f"{url}: unreachable: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    try:
        state = json.loads(body).get("status", "?")
    except ValueError:
        state = "?"
    print(f"{url}: {status} {state}")
    return 0 if status == 200 else 1


DEFAULT_DEMO_LISTEN = "127.0.0.1:8765"
DEFAULT_DEMO_BRIDGE = "127.0.0.1:7001"


def _demo_ports(cfg_path: Path, args: argparse.Namespace) -> bool:
    """Make the demo's two ports usable: a port given with --listen/--bridge is used (and
    written to the demo configuration) or refused with a clear message when taken; a port
    from the file that is taken (another program, another demo) is replaced by a free one,
    said on the terminal."""
    import tomllib

    from .demo import free_port, port_in_use, set_listen

    text = cfg_path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return True  # _load reports it with the reason
    wanted = (
        ("server", "--listen", args.listen,
         raw.get("server", {}).get("listen", DEFAULT_DEMO_LISTEN), "web panel and WebSocket"),
        ("sources.tapi_bridge", "--bridge", args.bridge,
         raw.get("sources", {}).get("tapi_bridge", {}).get("listen", DEFAULT_DEMO_BRIDGE),
         "TAPI bridge listener"),
    )
    new = text
    taken: set[int] = set()
    for section, flag, given, current, what in wanted:
        value = given or current
        try:
            host, port = parse_hostport(value)
        except ValueError as exc:
            print(f"{flag}: {exc}", file=sys.stderr)
            return False
        if port_in_use(host, port) or port in taken:
            if given:
                print(f"{value} ({what}) is already in use: choose another port with "
                      f"{flag} HOST:PORT", file=sys.stderr)
                return False
            fresh = free_port(host)
            while fresh in taken:
                fresh = free_port(host)
            print(f"port {port} ({what}) is in use: the demo uses {fresh} instead "
                  f"(set it with {flag} HOST:PORT)", file=sys.stderr)
            port = fresh
            value = f"{'[' + host + ']' if ':' in host else host}:{port}"
        taken.add(port)
        if value != current:
            new = set_listen(new, section, value)
    if new != text:
        cfg_path.write_text(new, encoding="utf-8")
    return True


def cmd_explain(args: argparse.Namespace) -> int:
    """Why a lamp shows what it shows: the story of a device or a member, newest last."""
    from .panels.engine import Engine
    from .panels.rights import combined_rights, number_policy, visible_panels
    from .provenance import explanation_json, redact, story
    from .recorder import load_explanation

    _setup_logging("warning")
    cfg = _load(args.config)
    target = args.target
    if target not in cfg.device_by_id and target not in cfg.client_by_name:
        print(f"no device or client {target!r} in {args.config}", file=sys.stderr)
        return 2
    if args.as_client is not None:
        viewer = cfg.client_by_name.get(args.as_client)
        if viewer is None:
            print(f"no client {args.as_client!r} in {args.config}", file=sys.stderr)
            return 2
        if not viewer.admin:
            # What a watcher may look at anyway: its devices and monitored ones, members of
            # its visible panels, itself.
            if target in cfg.device_by_id:
                allowed = combined_rights(cfg, viewer.name, target) is not None
            else:
                allowed = target == viewer.name or any(
                    target in cfg.group_by_name[p].members
                    for p in visible_panels(cfg, viewer.name))
            if not allowed:
                print(f"{viewer.name} may not see {target!r}", file=sys.stderr)
                return 3
        policy = number_policy(cfg, viewer.name)
    else:
        policy = number_policy(cfg, None, "all" if args.numbers else "none")

    async def work(store):
        last, devices, clients = await store.load_all()
        engine = Engine(cfg, 0)
        engine.load([(s, q) for s, q in devices if s.device in cfg.device_by_id],
                    [(s, q) for s, q in clients if s.client in cfg.client_by_name])
        return await load_explanation(store, engine, cfg, target)

    try:
        expl = asyncio.run(_with_store(cfg, work))
    except Exception as exc:
        print(f"could not read the gateway's state: {exc}", file=sys.stderr)
        return 1
    expl = redact(expl, policy)
    if args.json:
        import json

        print(json.dumps(explanation_json(expl), indent=2, ensure_ascii=False))
    else:
        print("\n".join(story(expl)))
        if args.as_client is None and not args.numbers:
            print("(numbers hidden: --numbers shows them, --as CLIENT shows what that client "
                  "may see)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DEMO_LOGINS, SimulatedPbx, demo_config_text

    _setup_logging(args.log_level)
    state = Path(args.state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    cfg_path = state / "demo.toml"
    if not cfg_path.exists() or args.reset:
        cfg_path.write_text(demo_config_text(args.listen or DEFAULT_DEMO_LISTEN,
                                             args.bridge or DEFAULT_DEMO_BRIDGE))
    if not _demo_ports(cfg_path, args):
        return 2
    config = _load(str(cfg_path))

    async def side(gw) -> None:
        from .auth import hash_password, sip_ha1
        from .config import parse_hostport

        for name, pw in DEMO_LOGINS.items():
            record = await gw.store.get_password(name)
            if "hash" not in record:
                await gw.store.set_password(name, await asyncio.to_thread(hash_password, pw),
                                            at_next_login=False, ha1=sip_ha1(name, pw))
        host, _ = parse_hostport(gw.config.server.listen)
        url = f"http://{host}:{gw.ws_port}/"
        print("\n" + "=" * 64, file=sys.stderr)
        print(f"  BLF gateway demo is running. Switchboard: {url}", file=sys.stderr)
        print(f"  WebSocket: ws://{host}:{gw.ws_port}/ws", file=sys.stderr)
        print(f"  TAPI bridge listener: {gw.bridge.host}:{gw.bridge.port}", file=sys.stderr)
        print(f"  Configuration (edit it live): {cfg_path}", file=sys.stderr)
        print("  Demo logins (client / password):", file=sys.stderr)
        for name, pw in DEMO_LOGINS.items():
            print(f"    {name:<10} {pw}", file=sys.stderr)
        print("  Stop with Ctrl+C.", file=sys.stderr)
        print("=" * 64 + "\n", file=sys.stderr, flush=True)
        lines = [(d.line_name, d.number) for d in gw.config.devices]
        await SimulatedPbx(gw.bridge.host, gw.bridge.port, lines, pace=args.pace).run()

    return _run_gateway(config, cfg_path, side)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="blf-gateway",
        description="Real-time busy lamp field gateway: line state from TAPI bridges, "
        "Asterisk and SIP, kept in Redis, pushed to CTI clients and the browser switchboard "
        "over WebSockets.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", "-c", required=True, metavar="FILE",
                        help="the gateway's TOML configuration file")

    sp = sub.add_parser("run", help="run the gateway")
    with_config(sp)
    sp.add_argument("--log-level", default="info",
                    choices=["debug", "info", "warning", "error"])
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("demo", help="run with a built-in demo office and simulated calls",
                        description="Writes a demo configuration into --state (unless one "
                        "is there), starts an embedded Redis and the gateway, and plays "
                        "simulated PBX traffic into its TAPI bridge listener.")
    sp.add_argument("--state", default="./blf-demo", metavar="DIR",
                    help="where the demo keeps its configuration and data (default ./blf-demo)")
    sp.add_argument("--listen", default=None, metavar="HOST:PORT",
                    help="web panel and WebSocket address (default 127.0.0.1:8765, or a "
                    "free port when that one is taken)")
    sp.add_argument("--bridge", default=None, metavar="HOST:PORT",
                    help="TAPI bridge listener (default 127.0.0.1:7001, or a free port when "
                    "that one is taken)")
    sp.add_argument("--pace", type=float, default=1.0,
                    help="stretch (>1) or squeeze (<1) the simulated call timings")
    sp.add_argument("--reset", action="store_true", help="rewrite the demo configuration")
    sp.add_argument("--log-level", default="info",
                    choices=["debug", "info", "warning", "error"])
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser(
        "check", help="validate a configuration; exit 1 if anything is wrong",
        description="Validate a configuration file and print every problem (exit 1), then "
        "warnings worth a look before going live: panels nobody can see, devices on no "
        "panel, TLS files expiring within 30 days, a port open to the network without TLS "
        "or bridge authentication, and, where the gateway's Redis is reachable, clients "
        "without a password and monitored devices no source reports.")
    with_config(sp)
    sp.add_argument("--strict", action="store_true",
                    help="exit 1 on warnings too (for deployment pipelines)")
    sp.set_defaults(func=cmd_check)

    sp = sub.add_parser("password", help="set a client's password (stored hashed)",
                        description="Set or reset a client's password. Give at least one of "
                        "--stdin, --generate, --at-next-login.")
    sp.add_argument("client", help="the client's name (computer name for type=computer)")
    with_config(sp)
    sp.add_argument("--stdin", action="store_true",
                    help="read the new password from standard input (one line)")
    sp.add_argument("--generate", action="store_true",
                    help="generate a password and print it once")
    sp.add_argument("--at-next-login", action="store_true",
                    help="do not check the next login; send the client its password then "
                    "(a generated one if none was given here)")
    sp.set_defaults(func=cmd_password)

    sp = sub.add_parser("health", help="ask a running gateway's /healthz; exit 0 if healthy",
                        description="GET /healthz of the gateway (the address is taken from "
                        "[server] listen and tls_cert of --config, or given with --url) and "
                        "exit 0 on 200 (healthy), 1 otherwise. Made for container "
                        "HEALTHCHECKs and monitoring scripts.")
    grp = sp.add_mutually_exclusive_group(required=True)
    grp.add_argument("--config", "-c", metavar="FILE",
                     help="the gateway's TOML configuration file")
    grp.add_argument("--url", help="the /healthz URL, e.g. http://127.0.0.1:8765/healthz")
    sp.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    sp.set_defaults(func=cmd_health)

    sp = sub.add_parser("status", help="list clients: Active, Offline or Offline monitor")
    with_config(sp)
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser(
        "explain", help="why a lamp shows what it shows: a device's or member's story",
        description="Tell, newest last, what the sources reported about a device (or about\n"
        "the devices and softphone feeding a member's lamp), what the gateway did with each\n"
        "report (accepted; ignored as out of order, and why; a late word about an ended\n"
        "call), which report was dropped as the same call shown once, and why the lamp is\n"
        "what it is now. Reads the shared state (Redis) of a running or stopped gateway.\n"
        "Numbers are hidden unless --numbers is given; --as CLIENT shows exactly what that\n"
        "client's rights let it see. See docs/admin.md.",
        epilog="examples:\n  blf-gateway explain 201 --config gateway.toml\n"
        "  blf-gateway explain alice --config gateway.toml --as carol\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("target", metavar="DEVICE|CLIENT",
                    help="a device id, or a client name (its member lamp)")
    with_config(sp)
    who = sp.add_mutually_exclusive_group()
    who.add_argument("--as", dest="as_client", metavar="CLIENT",
                     help="tell it as CLIENT may see it (its rights on numbers; refused "
                     "where CLIENT may not see the target)")
    who.add_argument("--numbers", action="store_true",
                     help="show callers' and dialled numbers (they are hidden otherwise)")
    sp.add_argument("--json", action="store_true", help="the explanation as JSON")
    sp.set_defaults(func=cmd_explain)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
