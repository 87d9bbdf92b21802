"""A stand-in for tapi32.dll and a telephony service provider, for the live driver's tests.

No Windows here, so this implements the bridge's TapiApi interface the way TAPI behaves:
buffers filled byte for byte in tapi.h's layouts (fixed part, variable part, dwNeededSize
when too small), LINEERR_* codes, LINE_* messages queued for lineGetMessage with the line's
dwCallbackInstance, asynchronous requests answered by LINE_REPLY, lineGetNewCalls handing
out handles for calls the application has none for, and LINEDEVSTATE_REINIT after which
every handle dies and lineInitializeExW hands out new ones. A test drives the "PBX" with
offer(), state(), info(), reinit().
"""

from __future__ import annotations

import itertools
import struct
import threading
from dataclasses import dataclass, replace

from gateway.tapi.winbridge import constants as C
from gateway.tapi.winbridge.callinfo import CallInfo, pack_callinfo, pack_variable
from gateway.tapi.winbridge.structs import (
    LINEADDRESSCAPS,
    LINECALLLIST,
    LINECALLSTATUS,
    LINEDEVCAPS,
    LINEDEVSTATUS,
)

E, M, CS = C.ERRORS, C.MESSAGES, C.CALLSTATE


def _utf16(s: str) -> bytes:
    return s.encode("utf-16-le") + b"\0\0"


def _fill(buf: bytearray, raw: bytes) -> int:
    total = struct.unpack_from("<I", buf, 0)[0]
    if total < 12 or total > len(buf):
        return E["LINEERR_STRUCTURETOOSMALL"]
    buf[: min(len(raw), total)] = raw[:total]
    return 0


@dataclass
class PbxCall:
    line: int
    state: int
    mode: int
    info: CallInfo


class FakeTapi:
    def __init__(self, lines: list[tuple[str, str]]) -> None:
        self.lines = lines  # (name, address) per dwDeviceID
        self.in_service = [True] * len(lines)
        self.calls: dict[int, PbxCall] = {}  # the PBX's calls by a PBX-side key
        self._cond = threading.Condition()
        self._queue: list[tuple] = []
        self._events: dict[int, bool] = {}
        self._ids = itertools.count(0x100)
        self._keys = itertools.count(1)
        self.session = 0
        self.happ = 0
        self.opened: dict[int, tuple[int, int]] = {}  # hLine -> (device, instance)
        self.handles: dict[int, int] = {}  # hCall (this session) -> PBX call key
        self.requests: list[tuple[str, tuple]] = []
        self.reinit_pending = False
        self.deallocated: list[int] = []
        self.pickup_result = 0  # LINE_REPLY dwParam2 for the next pickup

    # -- the PBX (test side) ------------------------------------------------------------------

    def _post(self, *msg) -> None:
        with self._cond:
            self._queue.append(msg)
            self._events[1] = True
            self._cond.notify_all()

    def _instance(self, dev: int) -> tuple[int, int] | None:
        return next(((h, inst) for h, (d, inst) in self.opened.items() if d == dev), None)

    def offer(self, line: int, info: CallInfo, state: str = "OFFERING") -> int:
        """A new call on a line: LINE_APPNEWCALL and its first LINE_CALLSTATE."""
        key = next(self._keys)
        self.calls[key] = PbxCall(line, CS[f"LINECALLSTATE_{state}"], 1, info)
        opened = self._instance(line)
        if opened is not None:
            hline, inst = opened
            h = next(self._ids)
            self.handles[h] = key
            self._post(hline, M["LINE_APPNEWCALL"], inst, 0, h,
                       C.CALLPRIVILEGE["LINECALLPRIVILEGE_MONITOR"])
            self._post(h, M["LINE_CALLSTATE"], inst, self.calls[key].state, 1, 0)
        return key

    def _handle(self, key: int) -> int | None:
        return next((h for h, k in self.handles.items() if k == key), None)

    def state(self, key: int, state: str, mode: int = 0) -> None:
        call = self.calls[key]
        call.state, call.mode = CS[f"LINECALLSTATE_{state}"], mode
        h = self._handle(key)
        if h is not None:
            self._post(h, M["LINE_CALLSTATE"], self._instance(call.line)[1], call.state,
                       mode, 0)
        if state == "IDLE":
            del self.calls[key]

    def info(self, key: int, **changes) -> None:
        call = self.calls[key]
        call.info = replace(call.info, **changes)
        h = self._handle(key)
        if h is not None:
            self._post(h, M["LINE_CALLINFO"], self._instance(call.line)[1], 0x8000, 0, 0)

    def out_of_service(self, line: int, down: bool = True) -> None:
        self.in_service[line] = not down
        hline, inst = self._instance(line)
        flag = "LINEDEVSTATE_OUTOFSERVICE" if down else "LINEDEVSTATE_INSERVICE"
        self._post(hline, M["LINE_LINEDEVSTATE"], inst, C.DEVSTATE[flag], 0, 0)

    def close_line(self, line: int) -> None:
        """The provider closes a line under the application (LINE_CLOSE)."""
        hline, inst = self._instance(line)
        del self.opened[hline]
        for h in [h for h, k in self.handles.items()
                  if k in self.calls and self.calls[k].line == line]:
            del self.handles[h]  # the line's call handles die with it
        self._post(hline, M["LINE_CLOSE"], inst, 0, 0, 0)

    def reinit(self) -> None:
        """The provider re-initializes: LINEDEVSTATE_REINIT, and every function answers
        LINEERR_REINIT until the application has shut down."""
        self.reinit_pending = True
        self._post(0, M["LINE_LINEDEVSTATE"], 0, C.DEVSTATE["LINEDEVSTATE_REINIT"], 0, 0)

    # -- TapiApi --------------------------------------------------------------------------------

    def initialize(self, app_name):
        with self._cond:
            self.session += 1
            self.happ = 0x1000 + self.session
            self.opened.clear()
            self.handles.clear()
            self._queue.clear()
            self.reinit_pending = False
        return 0, self.happ, len(self.lines), 1

    def shutdown(self, happ):
        if happ == self.happ:
            self.happ = 0
            self.opened.clear()
            self.handles.clear()
        return 0

    def _dead(self) -> int | None:
        return E["LINEERR_REINIT"] if self.reinit_pending else None

    def negotiate_api_version(self, happ, device, low, high):
        if happ != self.happ:
            return E["LINEERR_INVALAPPHANDLE"], 0
        return 0, 0x00020002

    def get_dev_caps(self, happ, device, version, buf):
        if device >= len(self.lines):
            return E["LINEERR_BADDEVICEID"]
        return _fill(buf, pack_variable(
            LINEDEVCAPS, {"dwPermanentLineID": 500 + device, "dwNumAddresses": 1},
            {"ProviderInfo": _utf16("Fake TSP"), "LineName": _utf16(self.lines[device][0])},
            struct.unpack_from("<I", buf, 0)[0]))

    def get_address_caps(self, happ, device, address, version, buf):
        return _fill(buf, pack_variable(LINEADDRESSCAPS, {"dwLineDeviceID": device},
                                        {"Address": _utf16(self.lines[device][1])},
                                        struct.unpack_from("<I", buf, 0)[0]))

    def open(self, happ, device, version, instance, privileges, media_modes):
        if (dead := self._dead()) is not None:
            return dead, 0
        hline = 0x2000 + 16 * self.session + device
        self.opened[hline] = (device, instance)
        return 0, hline

    def close(self, hline):
        self.opened.pop(hline, None)
        return 0

    def get_line_dev_status(self, hline, buf):
        dev = self.opened[hline][0]
        flags = C.DEVSTATUSFLAGS["LINEDEVSTATUSFLAGS_INSERVICE"] if self.in_service[dev] else 0
        return _fill(buf, pack_variable(LINEDEVSTATUS, {"dwDevStatusFlags": flags}, {},
                                        struct.unpack_from("<I", buf, 0)[0]))

    def get_message(self, happ, timeout_ms):
        with self._cond:
            if not self._queue:
                return E["LINEERR_OPERATIONFAILED"], None
            return 0, self._queue.pop(0)

    def _call(self, hcall) -> PbxCall | None:
        key = self.handles.get(hcall)
        return None if key is None else self.calls.get(key)

    def get_call_info(self, hcall, buf):
        if (dead := self._dead()) is not None:
            return dead
        call = self._call(hcall)
        if call is None:
            return E["LINEERR_INVALCALLHANDLE"]
        total = struct.unpack_from("<I", buf, 0)[0]
        return _fill(buf, pack_callinfo(replace(call.info, line_device=call.line), total))

    def get_call_status(self, hcall, buf):
        call = self._call(hcall)
        if call is None:
            return E["LINEERR_INVALCALLHANDLE"]
        return _fill(buf, pack_variable(LINECALLSTATUS, {
            "dwCallState": call.state, "dwCallStateMode": call.mode,
            "dwCallPrivilege": C.CALLPRIVILEGE["LINECALLPRIVILEGE_MONITOR"]}, {},
            struct.unpack_from("<I", buf, 0)[0]))

    def get_new_calls(self, hline, address, select, buf):
        if hline not in self.opened:
            return E["LINEERR_INVALLINEHANDLE"]
        dev = self.opened[hline][0]
        new = []
        for key, call in self.calls.items():
            if call.line == dev and self._handle(key) is None:
                h = next(self._ids)
                self.handles[h] = key
                new.append(h)
        return _fill(buf, pack_variable(LINECALLLIST, {"dwCallsNumEntries": len(new)},
                                        {"Calls": struct.pack(f"<{len(new)}I", *new)},
                                        struct.unpack_from("<I", buf, 0)[0]))

    def deallocate_call(self, hcall):
        if self.handles.pop(hcall, None) is None:
            return E["LINEERR_INVALCALLHANDLE"]
        self.deallocated.append(hcall)
        return 0

    def set_call_privilege(self, hcall, privilege):
        return 0

    def pickup(self, hline, address, dest, group):
        self.requests.append(("linePickupW", (hline, address, dest, group)))
        rid = next(self._ids)
        self._post(0, M["LINE_REPLY"], 0, rid, self.pickup_result, 0)
        return rid

    def redirect(self, hcall, dest):
        self.requests.append(("lineRedirectW", (hcall, dest)))
        rid = next(self._ids)
        self._post(0, M["LINE_REPLY"], 0, rid, 0, 0)
        return rid

    def create_event(self):
        return 2

    def set_event(self, handle):
        with self._cond:
            self._events[handle] = True
            self._cond.notify_all()

    def wait(self, handles, timeout_ms):
        with self._cond:
            self._cond.wait_for(lambda: self._queue or any(self._events.get(h) for h in handles),
                                timeout_ms / 1000)
            for i, h in enumerate(handles):
                if self._events.get(h) or (i == 0 and self._queue):
                    self._events[h] = False
                    return i
            return None
