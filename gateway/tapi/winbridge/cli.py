"""blf-tapi-bridge: the command line of the TAPI bridge program (docs/tapi-bridge.md).

    blf-tapi-bridge --list-lines
    blf-tapi-bridge run --gateway HOST:PORT [--lines NAME ...] [--owner NAME ...]
    blf-tapi-bridge --replay TRACE --gateway HOST:PORT [--speed X] [--until MARK] [--hold]
    blf-tapi-bridge service install|remove|start|stop|restart [--config FILE]   (Windows)

Every option may also stand in a TOML file given with --config; the command line wins.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from pydantic import ValidationError

from .runner import (
    BridgeConfig,
    ConfigError,
    link_options,
    load_config,
    run_bridge,
    setup_logging,
)

__all__ = ["main", "build_parser"]

COMMANDS = ("run", "list-lines", "service")
EXAMPLES = """\
examples:
  blf-tapi-bridge --list-lines
  blf-tapi-bridge run --gateway blf.example.org:7001 --lines "Line 2*" --owner "Line 2*"
  blf-tapi-bridge run --config C:\\ProgramData\\blf-tapi-bridge\\bridge.toml
  blf-tapi-bridge --replay call.jsonl --gateway 127.0.0.1:7001 --speed 2
  blf-tapi-bridge service install --config C:\\ProgramData\\blf-tapi-bridge\\bridge.toml
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="TOML file with any of the options below (the command line wins)")
    p.add_argument("--log-file", type=Path, metavar="FILE",
                   help="also log to this file, rotated at 5 MB, 5 kept")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gateway", metavar="HOST:PORT",
                   help="the gateway's [sources.tapi_bridge] listen address")
    p.add_argument("--secret-file", type=Path, metavar="FILE",
                   help='file holding the shared secret; sent first as {"auth": ...}')
    p.add_argument("--tls", action="store_true", default=None,
                   help="connect with TLS (the system's CAs unless --ca)")
    p.add_argument("--ca", type=Path, metavar="FILE", help="CA certificate(s) to trust")
    p.add_argument("--cert", type=Path, metavar="FILE", help="client certificate (PEM)")
    p.add_argument("--key", type=Path, metavar="FILE", help="client certificate's key (PEM)")
    p.add_argument("--server-name", metavar="NAME",
                   help="the name in the gateway's certificate, if not HOST")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blf-tapi-bridge",
        description="Report the TAPI lines of this Windows machine's telephony provider to "
                    "a BLF gateway ([sources.tapi_bridge]), live or from a replay trace.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list-lines", action="store_true",
                        help="same as the list-lines command")
    parser.add_argument("--replay", metavar="TRACE",
                        help="same as run --replay TRACE")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run", help="watch the TAPI lines (or replay a trace) and report them",
        description="Open the TAPI lines with monitor privilege and report their state to "
                    "the gateway; reconnects with backoff, re-sends the full state on every "
                    "connect, re-initializes when the provider restarts.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(run)
    _connection(run)
    run.add_argument("--lines", nargs="+", metavar="NAME",
                     help='line names or patterns to watch ("Line 2*"); default: all')
    run.add_argument("--owner", nargs="+", metavar="NAME",
                     help="lines to open with owner privilege too (needed for pickup by the "
                          "gateway: the picking line with --pickup pickup, the ringing one "
                          "with --pickup redirect)")
    run.add_argument("--pickup", choices=("pickup", "redirect"),
                     help="how a pickup from the gateway is done: linePickupW on the picking "
                          "line (default) or lineRedirectW of the ringing call")
    run.add_argument("--record", type=Path, metavar="FILE",
                     help="also write every TAPI message the bridge sees to FILE as a replay "
                          "trace (it holds callers' numbers: handle it like call records)")
    run.add_argument("--replay", metavar="TRACE",
                     help="play a trace of TAPI messages instead of watching TAPI "
                          "(docs/tapi-bridge.md, Replay traces)")
    run.add_argument("--speed", type=float, default=1.0,
                     help='replay speed factor for the records\' "t" times; 0: no waiting')
    run.add_argument("--until", metavar="MARK", help="stop the replay at this mark")
    run.add_argument("--hold", action="store_true",
                     help="after the replay, keep the connection (and its lamps) until "
                          "interrupted")

    ll = sub.add_parser("list-lines", help="print every TAPI line and exit")
    _common(ll)

    svc = sub.add_parser(
        "service", help="the Windows service (needs pywin32: the tapi-bridge extra)",
        description="install, remove, start, stop or restart the BlfTapiBridge Windows "
                    "service; it runs `run` with the --config file given at install.")
    _common(svc)
    svc.add_argument("action", choices=("install", "remove", "start", "stop", "restart"))
    return parser


def _normalise(argv: list[str]) -> list[str]:
    """`--list-lines` and `--replay TRACE` without a command mean list-lines and run."""
    if any(a in COMMANDS for a in argv):
        return argv
    if "--list-lines" in argv:
        return ["list-lines", *[a for a in argv if a != "--list-lines"]]
    if "--replay" in argv or any(a.startswith("--replay=") for a in argv):
        return ["run", *argv]
    return argv


def _merge(args: argparse.Namespace) -> BridgeConfig:
    cfg = load_config(getattr(args, "config", None))
    overrides = {}
    for key in BridgeConfig.model_fields:
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    try:
        return BridgeConfig.model_validate({**cfg.model_dump(), **overrides})
    except ValidationError as exc:
        e = exc.errors()[0]
        raise ConfigError(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}") from None


def list_lines_command() -> int:
    from .driver import list_lines
    from .tapi32 import load

    rows = list_lines(load())
    if not rows:
        print("no TAPI lines: is a telephony provider (TSP) installed and configured?")
        return 1
    print(f"{'device':>6}  {'line name':<32} {'address':<16} provider")
    for dev, name, address, provider in rows:
        print(f"{dev:>6}  {name or '-':<32} {address or '-':<16} {provider or '-'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_normalise(list(sys.argv[1:] if argv is None else argv)))
    if args.command is None:
        parser.print_help()
        return 2
    try:
        cfg = _merge(args)
        setup_logging(cfg)
        if args.command == "list-lines":
            return list_lines_command()
        if args.command == "service":
            from .service import service_command

            return service_command(args.action, args.config)
        if args.replay is None and sys.platform != "win32":
            raise ConfigError("watching TAPI lines needs Windows (tapi32.dll); here only "
                              "--replay TRACE works")
        if args.speed < 0:
            raise ConfigError("--speed must be 0 or more")
        link_options(cfg)  # every setting checked before anything starts
        return asyncio.run(run_bridge(cfg, replay=args.replay, speed=args.speed,
                                      until=args.until, hold=args.hold))
    except ConfigError as exc:
        print(f"blf-tapi-bridge: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # tapi32.dll missing, ...
        print(f"blf-tapi-bridge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # TraceError and the like: one clear line, no traceback
        from .trace import TraceError

        if isinstance(exc, TraceError):
            print(f"blf-tapi-bridge: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
