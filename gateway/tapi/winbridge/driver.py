"""The live TAPI message loop, in its own thread.

It initializes TAPI (lineInitializeExW, event-handle notification), negotiates an API
version and opens every line it is told to watch (lineOpenW with monitor privilege, owner
where pickup needs it), then waits on TAPI's event and on its own wake-up event. Every
message is read with lineGetMessage; for call messages the LINECALLINFO is read at once
(grow-and-retry) and handed, with the message, to the :class:`~.link.Bridge` through its
thread-safe :meth:`~.link.Bridge.post` (the loop never waits for the network). Requests from
the asyncio side (re-read the full state, make a pickup, give back call handles) come
through a queue and are carried out in this thread, between messages.

LINEDEVSTATE_REINIT, or LINEERR_REINIT from any function, means the provider is being
re-initialized: the driver shuts down, tells the bridge (every handle is gone), and
initializes again with backoff until TAPI is back.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from . import constants as C
from .callinfo import (
    StructureError,
    TapiCallError,
    fetch,
    parse_addresscaps,
    parse_callinfo,
    parse_calllist,
    parse_callstatus,
    parse_devcaps,
    parse_devstatus,
)
from .structs import (
    LINEADDRESSCAPS,
    LINECALLINFO,
    LINECALLLIST,
    LINECALLSTATUS,
    LINEDEVCAPS,
    LINEDEVSTATUS,
)
from .tapi32 import TapiApi
from .translate import LineOpened, Reinitialized, TapiMessage, TapiRequest

__all__ = ["Driver", "LineChoice", "list_lines"]

log = logging.getLogger("blf_tapi_bridge.tapi")

M = C.MESSAGES
E = C.ERRORS
REINIT = E["LINEERR_REINIT"]
PRIV_MONITOR = C.CALLPRIVILEGE["LINECALLPRIVILEGE_MONITOR"]
PRIV_OWNER = C.CALLPRIVILEGE["LINECALLPRIVILEGE_OWNER"]
VOICE = C.MEDIAMODE["LINEMEDIAMODE_INTERACTIVEVOICE"]
APP_NAME = "BLF gateway TAPI bridge"
_CALL_MESSAGES = (M["LINE_CALLSTATE"], M["LINE_CALLINFO"])


class _Reinit(Exception):
    """TAPI said LINEERR_REINIT / LINEDEVSTATE_REINIT."""


@dataclass(frozen=True, slots=True)
class LineChoice:
    """Which lines to open: names or shell patterns (empty: every line), and which of them
    with owner privilege (for pickup and redirect)."""

    names: tuple[str, ...] = ()
    owner: tuple[str, ...] = ()

    def watch(self, name: str) -> bool:
        return not self.names or any(fnmatch.fnmatchcase(name, p) for p in self.names)

    def own(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.owner)


def _check(function: str, rc: int) -> int:
    if rc == REINIT:
        raise _Reinit()
    if rc >= 0x80000000:
        raise TapiCallError(function, rc)
    return rc


def _fetch(cls, fill, function: str) -> bytes:
    try:
        return fetch(cls, fill, function)
    except TapiCallError as exc:
        if exc.code == REINIT:
            raise _Reinit() from None
        raise


def list_lines(api: TapiApi) -> list[tuple[int, str | None, str | None, str | None]]:
    """(dwDeviceID, line name, address, provider) of every TAPI line (--list-lines)."""
    rc, happ, ndevs, _ = api.initialize(APP_NAME)
    _check("lineInitializeExW", rc)
    out = []
    try:
        for dev in range(ndevs):
            rc, version = api.negotiate_api_version(happ, dev, C.TAPI_VERSION_LOW,
                                                    C.TAPI_VERSION_HIGH)
            if rc != 0:
                out.append((dev, None, None, f"no common API version "
                                             f"({C.name_of(E, rc)})"))
                continue
            caps = parse_devcaps(_fetch(
                LINEDEVCAPS, lambda b: api.get_dev_caps(happ, dev, version, b),
                "lineGetDevCapsW"))
            try:
                addr = parse_addresscaps(_fetch(
                    LINEADDRESSCAPS,
                    lambda b: api.get_address_caps(happ, dev, 0, version, b),
                    "lineGetAddressCapsW"))
            except (TapiCallError, StructureError):
                addr = None
            out.append((dev, caps.name, addr, caps.provider))
    finally:
        api.shutdown(happ)
    return out


class Driver:
    """The TAPI side of a running bridge (the :class:`~.link.Provider` of the link)."""

    def __init__(self, api: TapiApi, bridge, choice: LineChoice = LineChoice(), *,
                 retry_min: float = 1.0, retry_max: float = 60.0,
                 reopen_after: float = 30.0) -> None:
        self.api = api
        self.bridge = bridge
        self.choice = choice
        self.retry_min, self.retry_max = retry_min, retry_max
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = 0
        self._happ = 0
        self._hlines: dict[int, int] = {}  # dwDeviceID -> hLine
        self._owner: set[int] = set()
        self._versions: dict[int, int] = {}
        self._calls: dict[int, int] = {}  # hCall -> dwDeviceID
        self.reopen_after = reopen_after
        self._reopen: dict[int, tuple[float, float]] = {}  # closed line -> (when, next wait)
        self.sessions = 0  # successful lineInitializeExW so far
        self.ready = threading.Event()  # lines open, messages flowing

    # -- the link's side (asyncio thread) ---------------------------------------------------

    def start(self) -> None:
        self._wake = self.api.create_event()
        self._thread = threading.Thread(target=self._run, name="tapi", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout)

    def _poke(self) -> None:
        if self._wake:
            self.api.set_event(self._wake)

    async def resync(self) -> None:
        """Read every line's and call's state afresh (lineGetLineDevStatus, lineGetNewCalls,
        lineGetCallStatus, lineGetCallInfo) and post it; returns when it has been posted."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._jobs.put(("resync", lambda: loop.call_soon_threadsafe(
            lambda: done.done() or done.set_result(None))))
        self._poke()
        try:
            await asyncio.wait_for(asyncio.shield(done), 10)
        except asyncio.TimeoutError:
            log.warning("the TAPI side did not re-read its state within 10 s; sending what "
                        "the bridge knows")

    def execute(self, request: TapiRequest) -> None:
        self._jobs.put(("request", request))
        self._poke()

    def deallocate(self, hcalls: Iterable[int]) -> None:
        self._jobs.put(("deallocate", list(hcalls)))
        self._poke()

    # -- the TAPI thread --------------------------------------------------------------------

    def _run(self) -> None:
        delay = self.retry_min
        while not self._stopping.is_set():
            try:
                self._session()
                delay = self.retry_min
            except _Reinit:
                log.warning("the telephony provider is re-initializing; starting again")
                self.bridge.post(Reinitialized())
                delay = self.retry_min
            except (TapiCallError, StructureError, OSError) as exc:
                log.error("TAPI: %s; trying again in %.0f s", exc, delay)
                self.bridge.post(Reinitialized())
            finally:
                self._shutdown()
            if self._stopping.wait(delay):
                break
            delay = min(self.retry_max, delay * 2)

    def _shutdown(self) -> None:
        self.ready.clear()
        for hline in self._hlines.values():
            self.api.close(hline)
        if self._happ:
            self.api.shutdown(self._happ)
        self._happ = 0
        self._hlines.clear()
        self._owner.clear()
        self._calls.clear()
        self._reopen.clear()

    def _session(self) -> None:
        rc, happ, ndevs, event = self.api.initialize(APP_NAME)
        _check("lineInitializeExW", rc)
        self._happ = happ
        self.sessions += 1
        log.info("TAPI initialized: %d line device(s)", ndevs)
        for dev in range(ndevs):
            self._open(dev)
        if not self._hlines:
            log.warning("no TAPI line opened (check --lines and the provider's settings)")
        self._resync_all()
        self.ready.set()
        while not self._stopping.is_set():
            self._drain_jobs()
            while True:
                rc, msg = self.api.get_message(happ, 0)
                if rc in (REINIT, E["LINEERR_INVALAPPHANDLE"], E["LINEERR_UNINITIALIZED"]):
                    raise _Reinit()  # the session is gone: start again
                if rc != 0 or msg is None:
                    break  # none waiting (LINEERR_OPERATIONFAILED on a zero timeout)
                self._message(msg)
            self._reopen_due()
            self.api.wait([event, self._wake], 1000)

    def _reopen_due(self) -> None:
        """Lines the provider closed (LINE_CLOSE) are opened again, with growing waits."""
        now = time.monotonic()
        for dev, (when, wait) in list(self._reopen.items()):
            if when > now:
                continue
            self._open(dev)
            if dev in self._hlines:
                del self._reopen[dev]
                self._resync_all()
            else:
                self._reopen[dev] = (now + wait, min(wait * 2, 300.0))

    def _open(self, dev: int) -> None:
        api, happ = self.api, self._happ
        rc, version = api.negotiate_api_version(happ, dev, C.TAPI_VERSION_LOW,
                                                C.TAPI_VERSION_HIGH)
        if rc == REINIT:
            raise _Reinit()
        if rc != 0:
            log.warning("line device %d: no common TAPI version (%s); skipped", dev,
                        C.name_of(E, rc))
            return
        caps = parse_devcaps(_fetch(LINEDEVCAPS,
                                    lambda b: api.get_dev_caps(happ, dev, version, b),
                                    "lineGetDevCapsW"))
        name = caps.name or f"TAPI line {dev}"
        if not self.choice.watch(name):
            return
        try:
            address = parse_addresscaps(_fetch(
                LINEADDRESSCAPS, lambda b: api.get_address_caps(happ, dev, 0, version, b),
                "lineGetAddressCapsW"))
        except (TapiCallError, StructureError) as exc:
            log.warning("line %r: no address (%s)", name, exc)
            address = None
        owner = self.choice.own(name)
        privileges = PRIV_MONITOR | (PRIV_OWNER if owner else 0)
        rc, hline = api.open(happ, dev, version, dev, privileges, VOICE if owner else 0)
        if rc == REINIT:
            raise _Reinit()
        if rc != 0:
            log.warning("line %r (device %d) could not be opened: %s", name, dev,
                        C.name_of(E, rc))
            return
        self._hlines[dev] = hline
        self._versions[dev] = version
        if owner:
            self._owner.add(dev)
        in_service = self._in_service(hline)
        log.info("opened %r (device %d, address %s)%s", name, dev, address or "?",
                 " with owner privilege" if owner else "")
        self.bridge.post(LineOpened(dev, name, address, in_service, owner))

    def _in_service(self, hline: int) -> bool:
        try:
            flags = parse_devstatus(_fetch(
                LINEDEVSTATUS, lambda b: self.api.get_line_dev_status(hline, b),
                "lineGetLineDevStatusW"))
        except (TapiCallError, StructureError):
            return True  # a provider without line status: its lines work until it says not
        return bool(flags & C.DEVSTATUSFLAGS["LINEDEVSTATUSFLAGS_INSERVICE"])

    def _callinfo(self, hcall: int):
        try:
            return parse_callinfo(_fetch(LINECALLINFO,
                                         lambda b: self.api.get_call_info(hcall, b),
                                         "lineGetCallInfoW"))
        except (TapiCallError, StructureError) as exc:
            log.debug("call %#x: no call info (%s)", hcall, exc)
            return None

    def _message(self, raw) -> None:
        hdev, mid, inst, p1, p2, p3 = raw
        if mid == M["LINE_LINEDEVSTATE"] and p1 & C.DEVSTATE["LINEDEVSTATE_REINIT"]:
            raise _Reinit()
        info = None
        if mid == M["LINE_APPNEWCALL"]:
            self._calls[p2] = inst
            info = self._callinfo(p2)
        elif mid in _CALL_MESSAGES:
            self._calls.setdefault(hdev, inst)
            info = self._callinfo(hdev)
        self.bridge.post(TapiMessage(mid, hdev, inst, p1, p2, p3, info))
        if mid == M["LINE_CREATE"]:
            self._open(p1)
        elif mid in (M["LINE_REMOVE"], M["LINE_CLOSE"]):
            dev = p1 if mid == M["LINE_REMOVE"] else inst
            self._hlines.pop(dev, None)
            for h in [h for h, d in self._calls.items() if d == dev]:
                del self._calls[h]
            if mid == M["LINE_CLOSE"]:
                # Closed by the provider (a reconfiguration, another application forcing
                # it): try again later; a removed line is gone for good.
                self._reopen[dev] = (time.monotonic() + self.reopen_after,
                                     self.reopen_after * 2)

    def _drain_jobs(self) -> None:
        while True:
            try:
                kind, arg = self._jobs.get_nowait()
            except queue.Empty:
                return
            if kind == "resync":
                self._resync_all()
                try:
                    arg()
                except RuntimeError:
                    pass  # the asking loop has closed
            elif kind == "deallocate":
                for h in arg:
                    self._calls.pop(h, None)
                    if self.api.deallocate_call(h) == REINIT:
                        raise _Reinit()
            elif kind == "request":
                self._request(arg)

    def _resync_all(self) -> None:
        """Post every line's service state and every call's state, read afresh."""
        select = C.CALLSELECT["LINECALLSELECT_LINE"]
        for dev, hline in list(self._hlines.items()):
            flag = "LINEDEVSTATE_INSERVICE" if self._in_service(hline) \
                else "LINEDEVSTATE_OUTOFSERVICE"
            self.bridge.post(TapiMessage(M["LINE_LINEDEVSTATE"], hline, dev,
                                         C.DEVSTATE[flag]))
            try:
                new = parse_calllist(_fetch(
                    LINECALLLIST, lambda b: self.api.get_new_calls(hline, 0, select, b),
                    "lineGetNewCalls"))
            except (TapiCallError, StructureError) as exc:
                log.warning("lineGetNewCalls on device %d: %s", dev, exc)
                new = []
            for h in new:
                self._calls.setdefault(h, dev)
        for hcall, dev in list(self._calls.items()):
            try:
                status = parse_callstatus(_fetch(
                    LINECALLSTATUS, lambda b: self.api.get_call_status(hcall, b),
                    "lineGetCallStatus"))
            except (TapiCallError, StructureError):
                continue  # gone meanwhile: its IDLE message is on the way
            self.bridge.post(TapiMessage(M["LINE_CALLSTATE"], hcall, dev, status.state,
                                         status.mode, 0, self._callinfo(hcall)))

    def _request(self, req: TapiRequest) -> None:
        hline = self._hlines.get(req.line)
        if req.function == "linePickupW":
            if hline is None:
                rc = E["LINEERR_INVALLINEHANDLE"]
            else:
                rc = self.api.pickup(hline, 0, req.dest, None)
        else:
            rc = self.api.redirect(req.hcall, req.dest)
        if rc == REINIT:
            self.bridge.post_request_result(req.op, rc)
            raise _Reinit()
        log.info("%s for op %s: %s", req.function, req.op,
                 f"request {rc}" if rc < 0x80000000 else C.name_of(E, rc))
        self.bridge.post_request_result(req.op, rc)
