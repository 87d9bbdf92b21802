"""The Windows service (pywin32's service framework; the optional extra `tapi-bridge`).

``blf-tapi-bridge service install --config C:\\ProgramData\\blf-tapi-bridge\\bridge.toml``
registers the service "BlfTapiBridge" (automatic start) and stores the config file's path
in the service's registry parameters; the service runs what ``blf-tapi-bridge run --config
FILE`` runs and stops cleanly when Windows asks it to. Its log goes where the config file's
``log_file`` says (and start/stop to the Windows event log).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

__all__ = ["SERVICE_NAME", "service_command"]

SERVICE_NAME = "BlfTapiBridge"
DISPLAY_NAME = "BLF gateway TAPI bridge"
DESCRIPTION = ("Reports the TAPI lines of this machine's telephony provider to the BLF "
               "gateway (busy lamp field).")


def _pywin32():
    if sys.platform != "win32":
        raise OSError("the Windows service exists only on Windows")
    try:
        import servicemanager  # noqa: F401
        import win32event  # noqa: F401
        import win32service  # noqa: F401
        import win32serviceutil
    except ImportError:
        raise OSError("the Windows service needs pywin32: "
                      "pip install \"blf-gateway[tapi-bridge]\"") from None
    return win32serviceutil


def _service_class():
    import servicemanager
    import win32service
    import win32serviceutil

    class BridgeService(win32serviceutil.ServiceFramework):
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION

        def __init__(self, args):
            super().__init__(args)
            self._loop: asyncio.AbstractEventLoop | None = None
            self._stop: asyncio.Event | None = None
            self._started = threading.Event()

        def SvcStop(self):  # noqa: N802 - pywin32's name
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)
            self._started.wait(30)
            if self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)

        def SvcDoRun(self):  # noqa: N802 - pywin32's name
            from .runner import BridgeConfig, load_config, run_bridge, setup_logging

            servicemanager.LogInfoMsg(f"{SERVICE_NAME} starting")
            path = win32serviceutil.GetServiceCustomOption(SERVICE_NAME, "config", None)
            cfg = load_config(Path(path)) if path else BridgeConfig()
            setup_logging(cfg)

            async def main():
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                self._started.set()
                await run_bridge(cfg, stop=self._stop)

            asyncio.run(main())
            servicemanager.LogInfoMsg(f"{SERVICE_NAME} stopped")

    BridgeService.__module__ = __name__
    return BridgeService


def service_command(action: str, config: Path | None) -> int:
    """install | remove | start | stop | restart."""
    util = _pywin32()
    cls = _service_class()
    globals()["BridgeService"] = cls  # pythonservice.exe finds the class by this name
    argv = [sys.argv[0]]
    if action == "install":
        if config is None:
            raise OSError("service install needs --config FILE (the service has no "
                          "command line of its own)")
        argv += ["--startup", "auto", "install"]
        util.HandleCommandLine(cls, argv=argv,
                               serviceClassString=f"{__name__}.BridgeService")
        util.SetServiceCustomOption(SERVICE_NAME, "config", str(Path(config).resolve()))
        return 0
    util.HandleCommandLine(cls, argv=argv + [action],
                           serviceClassString=f"{__name__}.BridgeService")
    return 0


if sys.platform == "win32":  # pragma: no cover - importable by pythonservice.exe
    try:
        BridgeService = _service_class()
    except ImportError:
        pass
