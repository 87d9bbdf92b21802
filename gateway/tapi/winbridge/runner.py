"""Running the bridge: its settings, its log, and the run itself (for the command line and
the Windows service alike)."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import signal
import ssl
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .link import Bridge, LinkOptions

__all__ = ["BridgeConfig", "ConfigError", "load_config", "setup_logging", "link_options",
           "run_bridge"]

log = logging.getLogger("blf_tapi_bridge")


class BridgeConfig(BaseModel):
    """The bridge's settings (TOML file keys; command-line options of the same name win)."""

    model_config = ConfigDict(extra="forbid")
    gateway: str | None = None
    lines: list[Annotated[str, Field(min_length=1)]] = []
    owner: list[Annotated[str, Field(min_length=1)]] = []
    pickup: Literal["pickup", "redirect"] = "pickup"
    secret_file: Path | None = None
    tls: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None
    log_file: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    record: Path | None = None  # write every TAPI event as a replay trace
    backoff_max: Annotated[float, Field(gt=0, le=3600)] = 30.0


class ConfigError(Exception):
    """A setting that cannot be used; the text says which and why."""


def load_config(path: Path | None) -> BridgeConfig:
    if path is None:
        return BridgeConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return BridgeConfig.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e["loc"]) or "file"
        raise ConfigError(f"{path}: {where}: {e['msg']}") from None


def parse_gateway(text: str | None) -> tuple[str, int]:
    if not text:
        raise ConfigError("no gateway: give --gateway HOST:PORT (or gateway = ... in the "
                          "config file)")
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"gateway {text!r}: expected HOST:PORT, e.g. blf.example.org:7001")
    return host, int(port)


def read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"secret file {path}: {exc.strerror or exc}") from None
    if not secret:
        raise ConfigError(f"secret file {path} is empty")
    if len(secret) > 1024:
        raise ConfigError(f"secret file {path}: longer than 1024 characters")
    return secret


def tls_context(cfg: BridgeConfig) -> ssl.SSLContext | None:
    if not (cfg.tls or cfg.ca or cfg.cert):
        return None
    if bool(cfg.cert) != bool(cfg.key):
        raise ConfigError("a client certificate needs both --cert and --key")
    try:
        ctx = ssl.create_default_context(cafile=str(cfg.ca) if cfg.ca else None)
        if cfg.cert:
            ctx.load_cert_chain(str(cfg.cert), str(cfg.key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS files: {exc}") from None
    return ctx


def setup_logging(cfg: BridgeConfig) -> None:
    root = logging.getLogger()
    root.setLevel(cfg.log_level.upper())
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not any(getattr(h, "_blf", False) for h in root.handlers):
        err = logging.StreamHandler(sys.stderr)
        err.setFormatter(fmt)
        err._blf = True  # type: ignore[attr-defined]
        root.addHandler(err)
    if cfg.log_file is not None:
        try:
            cfg.log_file.parent.mkdir(parents=True, exist_ok=True)
            fh = logging.handlers.RotatingFileHandler(
                cfg.log_file, maxBytes=5 << 20, backupCount=5, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"log file {cfg.log_file}: {exc.strerror or exc}") from None
        fh.setFormatter(fmt)
        fh._blf = True  # type: ignore[attr-defined]
        root.addHandler(fh)


def link_options(cfg: BridgeConfig) -> LinkOptions:
    host, port = parse_gateway(cfg.gateway)
    return LinkOptions(host, port, ssl=tls_context(cfg), server_hostname=cfg.server_name,
                       secret=read_secret(cfg.secret_file), backoff_max=cfg.backoff_max,
                       pickup_mode=cfg.pickup)


async def run_bridge(cfg: BridgeConfig, *, replay: str | None = None, speed: float = 1.0,
                     until: str | None = None, hold: bool = False,
                     stop: asyncio.Event | None = None) -> int:
    """Run the bridge until `stop` is set (or a replay ends); the service calls this too."""
    stop = stop or asyncio.Event()
    bridge = Bridge(link_options(cfg))
    records = None
    if replay is not None:
        from .trace import load_trace

        records = load_trace(replay)  # a bad trace is refused before anything connects
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # Windows: Ctrl+C arrives as KeyboardInterrupt; the service sets `stop`
    link = asyncio.create_task(bridge.run())
    driver = None
    try:
        if records is not None:
            from .trace import Replay

            player = Replay(records, bridge, speed)
            bridge.provider = player
            log.info("replaying %s (%d records) to %s:%d", replay, len(player.records),
                     bridge.options.host, bridge.options.port)
            waiter = asyncio.create_task(stop.wait())
            connected = asyncio.create_task(bridge.connected.wait())
            await asyncio.wait({waiter, connected}, return_when=asyncio.FIRST_COMPLETED)
            connected.cancel()
            if not stop.is_set():
                play = asyncio.create_task(player.play(until))
                await asyncio.wait({play, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if play.done():
                    play.result()
                    log.info("replay done: %d record(s), %d line(s) sent", player.played,
                             bridge.lines_sent)
                    if hold:
                        await waiter
                else:
                    play.cancel()
            waiter.cancel()
        else:
            from .driver import Driver, LineChoice
            from .tapi32 import load

            if cfg.record is not None:
                from .trace import Recorder

                try:
                    bridge.recorder = Recorder(cfg.record)
                except OSError as exc:
                    raise ConfigError(f"record file {cfg.record}: {exc.strerror or exc}") \
                        from None
                log.info("recording every TAPI event to %s", cfg.record)
            driver = Driver(load(), bridge, LineChoice(tuple(cfg.lines), tuple(cfg.owner)))
            bridge.provider = driver
            driver.start()
            await stop.wait()
    finally:
        if driver is not None:
            await asyncio.to_thread(driver.stop)
        if bridge.recorder is not None:
            bridge.recorder.close()  # type: ignore[attr-defined]
        await bridge.flush()
        bridge.stop()
        await asyncio.wait_for(link, 10)
    return 0
