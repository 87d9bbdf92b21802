"""The thin ctypes layer on tapi32.dll (and the two kernel32 calls the message loop needs).

:class:`TapiApi` is the interface the live driver (:mod:`.driver`) is written against: one
method per TAPI function, Python values in, result codes and byte buffers out, nothing
decided here. :class:`Tapi32` implements it with ctypes on Windows. :data:`SIGNATURES` is
the prototype of every function used, in ctypes types; tests/tapi_bridge/test_tapi_layout.py
compares it with the prototypes in tapi.h.

Result codes are returned as unsigned 32-bit values (LINEERR_* are negative LONGs in C:
0x8000xxxx here); an asynchronous function's positive request id stays positive.
"""

from __future__ import annotations

import ctypes
import sys
from ctypes import POINTER, c_int32, c_uint32, c_void_p, c_wchar_p
from typing import Protocol

from .structs import (
    HANDLE,
    LINEEXTENSIONID,
    LINEINITIALIZEEXPARAMS,
    LINEMESSAGE,
)

__all__ = ["TapiApi", "Tapi32", "SIGNATURES", "Message", "load"]

LONG = c_int32
DWORD = c_uint32
DWORD_PTR = ctypes.c_size_t
LPDWORD = POINTER(c_uint32)
LPVOID = c_void_p

# name -> (restype, argtypes), in tapi.h's parameter order.
SIGNATURES: dict[str, tuple[type, list[type]]] = {
    # hLineApp*, hInstance, lpfnCallback, lpszFriendlyAppName, lpdwNumDevs, lpdwAPIVersion,
    # lpLineInitializeExParams
    "lineInitializeExW": (LONG, [LPDWORD, HANDLE, c_void_p, c_wchar_p, LPDWORD, LPDWORD,
                                 POINTER(LINEINITIALIZEEXPARAMS)]),
    "lineShutdown": (LONG, [DWORD]),
    "lineNegotiateAPIVersion": (LONG, [DWORD, DWORD, DWORD, DWORD, LPDWORD,
                                       POINTER(LINEEXTENSIONID)]),
    "lineGetDevCapsW": (LONG, [DWORD, DWORD, DWORD, DWORD, LPVOID]),
    "lineGetAddressCapsW": (LONG, [DWORD, DWORD, DWORD, DWORD, DWORD, LPVOID]),
    # hLineApp, dwDeviceID, lphLine, dwAPIVersion, dwExtVersion, dwCallbackInstance,
    # dwPrivileges, dwMediaModes, lpCallParams
    "lineOpenW": (LONG, [DWORD, DWORD, LPDWORD, DWORD, DWORD, DWORD_PTR, DWORD, DWORD,
                         LPVOID]),
    "lineClose": (LONG, [DWORD]),
    "lineGetLineDevStatusW": (LONG, [DWORD, LPVOID]),
    "lineGetMessage": (LONG, [DWORD, POINTER(LINEMESSAGE), DWORD]),
    "lineGetCallInfoW": (LONG, [DWORD, LPVOID]),
    "lineGetCallStatus": (LONG, [DWORD, LPVOID]),
    "lineGetNewCalls": (LONG, [DWORD, DWORD, DWORD, LPVOID]),
    "lineDeallocateCall": (LONG, [DWORD]),
    "lineSetCallPrivilege": (LONG, [DWORD, DWORD]),
    # hLine, dwAddressID, lphCall, lpszDestAddress, lpszGroupID
    "linePickupW": (LONG, [DWORD, DWORD, LPDWORD, c_wchar_p, c_wchar_p]),
    "lineRedirectW": (LONG, [DWORD, c_wchar_p, DWORD]),
}

class Message(tuple):
    """A LINEMESSAGE as a tuple: (hDevice, dwMessageID, dwCallbackInstance, dwParam1,
    dwParam2, dwParam3)."""


class TapiApi(Protocol):
    """The TAPI functions the driver uses. Buffers are bytearrays whose first DWORD
    (dwTotalSize) the caller has set; results are unsigned (0 = success)."""

    def initialize(self, app_name: str) -> tuple[int, int, int, int]:
        """lineInitializeExW with LINEINITIALIZEEXOPTION_USEEVENT: (result, hLineApp,
        dwNumDevs, hEvent)."""

    def shutdown(self, happ: int) -> int: ...

    def negotiate_api_version(self, happ: int, device: int, low: int, high: int
                              ) -> tuple[int, int]:
        """(result, dwAPIVersion)."""

    def get_dev_caps(self, happ: int, device: int, version: int, buf: bytearray) -> int: ...

    def get_address_caps(self, happ: int, device: int, address: int, version: int,
                         buf: bytearray) -> int: ...

    def open(self, happ: int, device: int, version: int, instance: int, privileges: int,
             media_modes: int) -> tuple[int, int]:
        """lineOpenW: (result, hLine)."""

    def close(self, hline: int) -> int: ...

    def get_line_dev_status(self, hline: int, buf: bytearray) -> int: ...

    def get_message(self, happ: int, timeout_ms: int) -> tuple[int, Message | None]: ...

    def get_call_info(self, hcall: int, buf: bytearray) -> int: ...

    def get_call_status(self, hcall: int, buf: bytearray) -> int: ...

    def get_new_calls(self, hline: int, address: int, select: int, buf: bytearray) -> int: ...

    def deallocate_call(self, hcall: int) -> int: ...

    def set_call_privilege(self, hcall: int, privilege: int) -> int: ...

    def pickup(self, hline: int, address: int, dest: str | None, group: str | None) -> int:
        """linePickupW: a request id (> 0) or a LINEERR_* value. The new call's handle
        comes with the call's own messages."""

    def redirect(self, hcall: int, dest: str) -> int: ...

    def create_event(self) -> int:
        """A Win32 auto-reset event the driver sets to wake its own loop."""

    def set_event(self, handle: int) -> None: ...

    def wait(self, handles: list[int], timeout_ms: int) -> int | None:
        """WaitForMultipleObjects (any): the index of the signalled handle, None on
        timeout."""


def _u(rc: int) -> int:
    return rc & 0xFFFFFFFF


class Tapi32:
    """TapiApi on the real tapi32.dll (Windows only)."""

    def __init__(self) -> None:
        if sys.platform != "win32":
            raise OSError("tapi32.dll exists only on Windows; use --replay elsewhere")
        self.dll = ctypes.WinDLL("tapi32.dll")  # type: ignore[attr-defined]
        for name, (res, args) in SIGNATURES.items():
            fn = getattr(self.dll, name)
            fn.restype, fn.argtypes = res, args
        k32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        self._create_event = k32.CreateEventW
        self._create_event.restype = HANDLE
        self._create_event.argtypes = [c_void_p, ctypes.c_int, ctypes.c_int, c_wchar_p]
        self._set_event = k32.SetEvent
        self._set_event.argtypes = [HANDLE]
        self._wait = k32.WaitForMultipleObjects
        self._wait.restype = DWORD
        self._wait.argtypes = [DWORD, POINTER(HANDLE), ctypes.c_int, DWORD]
        self._pickups: dict[int, c_uint32] = {}  # request id -> lphCall kept alive

    def initialize(self, app_name: str) -> tuple[int, int, int, int]:
        happ, ndevs = c_uint32(0), c_uint32(0)
        version = c_uint32(0x00030001)
        params = LINEINITIALIZEEXPARAMS()
        params.dwTotalSize = ctypes.sizeof(params)
        params.dwOptions = 0x2  # LINEINITIALIZEEXOPTION_USEEVENT
        rc = self.dll.lineInitializeExW(ctypes.byref(happ), None, None, app_name,
                                        ctypes.byref(ndevs), ctypes.byref(version),
                                        ctypes.byref(params))
        return _u(rc), happ.value, ndevs.value, params.Handles.hEvent or 0

    def shutdown(self, happ: int) -> int:
        self._pickups.clear()
        return _u(self.dll.lineShutdown(happ))

    def negotiate_api_version(self, happ, device, low, high):
        version, ext = c_uint32(0), LINEEXTENSIONID()
        rc = self.dll.lineNegotiateAPIVersion(happ, device, low, high, ctypes.byref(version),
                                              ctypes.byref(ext))
        return _u(rc), version.value

    @staticmethod
    def _buf(buf: bytearray):
        return (ctypes.c_char * len(buf)).from_buffer(buf)

    def get_dev_caps(self, happ, device, version, buf):
        return _u(self.dll.lineGetDevCapsW(happ, device, version, 0, self._buf(buf)))

    def get_address_caps(self, happ, device, address, version, buf):
        return _u(self.dll.lineGetAddressCapsW(happ, device, address, version, 0,
                                               self._buf(buf)))

    def open(self, happ, device, version, instance, privileges, media_modes):
        hline = c_uint32(0)
        rc = self.dll.lineOpenW(happ, device, ctypes.byref(hline), version, 0, instance,
                                privileges, media_modes, None)
        return _u(rc), hline.value

    def close(self, hline):
        return _u(self.dll.lineClose(hline))

    def get_line_dev_status(self, hline, buf):
        return _u(self.dll.lineGetLineDevStatusW(hline, self._buf(buf)))

    def get_message(self, happ, timeout_ms):
        msg = LINEMESSAGE()
        rc = _u(self.dll.lineGetMessage(happ, ctypes.byref(msg), timeout_ms))
        if rc != 0:
            return rc, None
        if msg.dwMessageID == 12:  # LINE_REPLY: a pickup's lphCall may be let go now
            self._pickups.pop(msg.dwParam1, None)
        return 0, Message((msg.hDevice, msg.dwMessageID, msg.dwCallbackInstance,
                           msg.dwParam1, msg.dwParam2, msg.dwParam3))

    def get_call_info(self, hcall, buf):
        return _u(self.dll.lineGetCallInfoW(hcall, self._buf(buf)))

    def get_call_status(self, hcall, buf):
        return _u(self.dll.lineGetCallStatus(hcall, self._buf(buf)))

    def get_new_calls(self, hline, address, select, buf):
        return _u(self.dll.lineGetNewCalls(hline, address, select, self._buf(buf)))

    def deallocate_call(self, hcall):
        return _u(self.dll.lineDeallocateCall(hcall))

    def set_call_privilege(self, hcall, privilege):
        return _u(self.dll.lineSetCallPrivilege(hcall, privilege))

    def pickup(self, hline, address, dest, group):
        # TAPI writes the new call's handle into lphCall when the request completes: the
        # variable must live until LINE_REPLY.
        hcall = c_uint32(0)
        rc = _u(self.dll.linePickupW(hline, address, ctypes.byref(hcall), dest, group))
        if 0 < rc < 0x80000000:
            self._pickups[rc] = hcall
        return rc

    def redirect(self, hcall, dest):
        return _u(self.dll.lineRedirectW(hcall, dest, 0))

    def create_event(self):
        return self._create_event(None, 0, 0, None) or 0

    def set_event(self, handle):
        self._set_event(handle)

    def wait(self, handles, timeout_ms):
        arr = (HANDLE * len(handles))(*handles)
        rc = self._wait(len(handles), arr, 0, timeout_ms)
        if rc < len(handles):
            return rc
        return None  # WAIT_TIMEOUT (0x102) or WAIT_FAILED


def load() -> TapiApi:
    """The real TAPI (raises OSError off Windows)."""
    return Tapi32()
