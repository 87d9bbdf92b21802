"""Readers (and a writer) of TAPI's variable-size structures, over plain bytes. Pure.

TAPI returns LINECALLINFO, LINEDEVCAPS, LINEADDRESSCAPS, LINECALLLIST, ... in a buffer the
application allocates: the fixed part (the ctypes structure of :mod:`.structs`) first, then a
variable part holding strings and arrays, each found through a ``dw<Name>Size`` /
``dw<Name>Offset`` pair counted in bytes from the start of the structure. The application
sets ``dwTotalSize`` to its buffer's size; when that is too small, TAPI fills what fits, says
how much it needs in ``dwNeededSize`` and the application retries with a larger buffer
(:func:`fetch`). Strings of the ...W functions are UTF-16LE, usually with a NUL at the end.

Nothing from a TSP is trusted: an offset or size pointing outside ``dwUsedSize`` yields no
string (never an exception, never a read past the buffer), and strings are cut at
:data:`MAX_CHARS`.
"""

from __future__ import annotations

import ctypes
import struct as _struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .structs import (
    LINEADDRESSCAPS,
    LINECALLINFO,
    LINECALLLIST,
    LINECALLSTATUS,
    LINEDEVCAPS,
    LINEDEVSTATUS,
)

__all__ = [
    "MAX_CHARS",
    "MAX_BUFFER",
    "Party",
    "CallInfo",
    "CallStatus",
    "DevCaps",
    "StructureError",
    "NeedMore",
    "TapiCallError",
    "fetch",
    "var_string",
    "parse_callinfo",
    "parse_callstatus",
    "parse_devcaps",
    "parse_addresscaps",
    "parse_devstatus",
    "parse_calllist",
    "pack_variable",
    "pack_callinfo",
]

MAX_CHARS = 128  # longer numbers and names are cut (the gateway takes 64 / 128)
MAX_BUFFER = 1 << 20  # a TSP asking for more than 1 MiB for one structure is broken
FIRST_BUFFER = 2048  # enough for a LINECALLINFO with every ID and name on most TSPs


class StructureError(ValueError):
    """Bytes that are not the structure they should be (too short, sizes that lie)."""


class NeedMore(Exception):
    """The buffer was too small; ``needed`` is TAPI's dwNeededSize."""

    def __init__(self, needed: int) -> None:
        super().__init__(f"structure needs {needed} bytes")
        self.needed = needed


class TapiCallError(Exception):
    """A TAPI function returned an error (``code`` is the LINEERR_* value, unsigned)."""

    def __init__(self, function: str, code: int) -> None:
        from .constants import ERRORS, name_of

        self.function, self.code = function, code & 0xFFFFFFFF
        super().__init__(f"{function} failed: {name_of(ERRORS, self.code)}")


def fetch(cls: type[ctypes.Structure], fill: Callable[[bytearray], int], function: str,
          first: int = FIRST_BUFFER) -> bytes:
    """Call a TAPI "get" function with the grow-and-retry rule; return the filled bytes.

    `fill(buffer)` calls the function on a buffer whose dwTotalSize is already set and
    returns its result (0 or a LINEERR_* value). When dwNeededSize is larger than
    dwTotalSize the call is repeated once or twice with a buffer of dwNeededSize bytes
    (a TSP may need more on the second call: a caller ID arrived in between).
    """
    fixed = ctypes.sizeof(cls)
    size = max(first, fixed)
    for _ in range(4):
        buf = bytearray(size)
        _struct.pack_into("<I", buf, 0, size)
        rc = fill(buf) & 0xFFFFFFFF
        if rc != 0:
            raise TapiCallError(function, rc)
        needed = _struct.unpack_from("<I", buf, 4)[0]
        if needed <= size:
            used = _struct.unpack_from("<I", buf, 8)[0]
            return bytes(buf[: max(fixed, min(used, size))])
        if needed > MAX_BUFFER:
            raise StructureError(f"{function}: the provider asks for {needed} bytes")
        size = needed
    raise StructureError(f"{function}: the needed size kept growing")


def _fixed(cls, buf: bytes | bytearray):
    if len(buf) < ctypes.sizeof(cls):
        raise StructureError(
            f"{cls.__name__}: {len(buf)} bytes, the fixed part alone is {ctypes.sizeof(cls)}")
    s = cls.from_buffer_copy(bytes(buf[: ctypes.sizeof(cls)]))
    if s.dwNeededSize > s.dwTotalSize:
        raise NeedMore(s.dwNeededSize)
    return s


def _bounds(s, buf: bytes | bytearray, name: str) -> tuple[int, int] | None:
    size = getattr(s, f"dw{name}Size")
    offset = getattr(s, f"dw{name}Offset")
    if size == 0:
        return None
    end = min(len(buf), max(s.dwUsedSize, ctypes.sizeof(type(s))))
    if offset < ctypes.sizeof(type(s)) or offset + size > end:
        return None  # points into the fixed part or past what was filled: not a string
    return offset, size


def var_string(s, buf: bytes | bytearray, name: str) -> str | None:
    """The UTF-16LE string of the ``dw<name>Size/Offset`` pair, without the NUL; None when
    absent, empty or out of bounds."""
    where = _bounds(s, buf, name)
    if where is None:
        return None
    offset, size = where
    raw = bytes(buf[offset: offset + size - (size % 2)])
    text = raw.decode("utf-16-le", errors="replace").split("\x00", 1)[0]
    text = "".join(ch for ch in text if ch.isprintable())[:MAX_CHARS].strip()
    return text or None


@dataclass(frozen=True, slots=True)
class Party:
    """One party ID of LINECALLINFO: number, name and the LINECALLPARTYID_* flags."""

    number: str | None = None
    name: str | None = None
    flags: int = 0


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What the bridge reads from a LINECALLINFO."""

    line_device: int = 0  # dwLineDeviceID
    address_id: int = 0
    call_id: int = 0  # dwCallID: the provider's id of the call (0: it has none)
    related_call_id: int = 0  # dwRelatedCallID: consultation -> primary, party -> conference
    origin: int = 0  # LINECALLORIGIN_*
    reason: int = 0  # LINECALLREASON_*
    caller: Party = field(default_factory=Party)
    called: Party = field(default_factory=Party)
    connected: Party = field(default_factory=Party)
    redirection: Party = field(default_factory=Party)  # where the call was sent
    redirecting: Party = field(default_factory=Party)  # who sent it here


_PARTIES = ("CallerID", "CalledID", "ConnectedID", "RedirectionID", "RedirectingID")

# LINECALLINFO is 86 DWORDs: read the fixed part in one unpack, fields by index (the hot path
# of every call message).
_CI_SIZE = ctypes.sizeof(LINECALLINFO)
_CI_FORMAT = f"<{_CI_SIZE // 4}I"
_CI = {name: getattr(LINECALLINFO, name).offset // 4 for name, _ in LINECALLINFO._fields_
       if getattr(LINECALLINFO, name).size == 4}
_CI_PARTIES = [(_CI[f"dw{p}Flags"], _CI[f"dw{p}Size"], _CI[f"dw{p}Offset"],
                _CI[f"dw{p}NameSize"], _CI[f"dw{p}NameOffset"]) for p in _PARTIES]


def _string_at(buf: bytes | bytearray, size: int, offset: int, end: int) -> str | None:
    if size == 0 or offset < _CI_SIZE or offset + size > end:
        return None
    raw = bytes(buf[offset: offset + size - (size % 2)])
    text = raw.decode("utf-16-le", errors="replace").split("\x00", 1)[0]
    if not text.isprintable():
        text = "".join(ch for ch in text if ch.isprintable())
    return text[:MAX_CHARS].strip() or None


def parse_callinfo(buf: bytes | bytearray) -> CallInfo:
    """Read a LINECALLINFO as lineGetCallInfoW filled it. Raises NeedMore when TAPI said
    the buffer was too small, StructureError when it is not a LINECALLINFO at all."""
    if len(buf) < _CI_SIZE:
        raise StructureError(
            f"LINECALLINFO: {len(buf)} bytes, the fixed part alone is {_CI_SIZE}")
    v = _struct.unpack_from(_CI_FORMAT, buf)
    total, needed, used = v[0], v[1], v[2]
    if needed > total:
        raise NeedMore(needed)
    end = min(len(buf), max(used, _CI_SIZE))
    parties = [Party(_string_at(buf, v[si], v[so], end), _string_at(buf, v[ni], v[no], end),
                     v[fi])
               for fi, si, so, ni, no in _CI_PARTIES]
    return CallInfo(
        line_device=v[_CI["dwLineDeviceID"]],
        address_id=v[_CI["dwAddressID"]],
        call_id=v[_CI["dwCallID"]],
        related_call_id=v[_CI["dwRelatedCallID"]],
        origin=v[_CI["dwOrigin"]],
        reason=v[_CI["dwReason"]],
        caller=parties[0],
        called=parties[1],
        connected=parties[2],
        redirection=parties[3],
        redirecting=parties[4],
    )


@dataclass(frozen=True, slots=True)
class CallStatus:
    state: int  # LINECALLSTATE_*
    mode: int  # the state's mode bits (LINEOFFERINGMODE_*, LINEDISCONNECTMODE_*, ...)
    privilege: int  # LINECALLPRIVILEGE_*


def parse_callstatus(buf: bytes | bytearray) -> CallStatus:
    s = _fixed(LINECALLSTATUS, buf)
    return CallStatus(s.dwCallState, s.dwCallStateMode, s.dwCallPrivilege)


@dataclass(frozen=True, slots=True)
class DevCaps:
    name: str | None
    permanent_id: int
    num_addresses: int
    provider: str | None


def parse_devcaps(buf: bytes | bytearray) -> DevCaps:
    s = _fixed(LINEDEVCAPS, buf)
    return DevCaps(var_string(s, buf, "LineName"), s.dwPermanentLineID, s.dwNumAddresses,
                   var_string(s, buf, "ProviderInfo"))


def parse_addresscaps(buf: bytes | bytearray) -> str | None:
    """The address (the line's own number) of a LINEADDRESSCAPS."""
    return var_string(_fixed(LINEADDRESSCAPS, buf), buf, "Address")


def parse_devstatus(buf: bytes | bytearray) -> int:
    """LINEDEVSTATUS.dwDevStatusFlags (LINEDEVSTATUSFLAGS_*)."""
    return _fixed(LINEDEVSTATUS, buf).dwDevStatusFlags


def parse_calllist(buf: bytes | bytearray) -> list[int]:
    """The HCALLs of a LINECALLLIST (lineGetNewCalls)."""
    s = _fixed(LINECALLLIST, buf)
    where = _bounds(s, buf, "Calls")
    if where is None:
        return []
    offset, size = where
    n = min(s.dwCallsNumEntries, size // 4)
    return list(_struct.unpack_from(f"<{n}I", buf, offset))


def _utf16(text: str | None) -> bytes:
    return b"" if not text else text.encode("utf-16-le") + b"\x00\x00"


def pack_variable(cls: type[ctypes.Structure], fixed: Mapping[str, int],
                  var: Mapping[str, bytes], total_size: int | None = None) -> bytes:
    """Lay out a structure as TAPI fills it: the fixed part, then each variable field in
    turn, with its dw<name>Size/Offset set. With a `total_size` too small for the whole,
    only the fixed part is filled and dwNeededSize says what would be needed (what TAPI
    does). The writer of the replay and of the tests' stand-in for a TSP."""
    base = ctypes.sizeof(cls)
    s = cls()
    for k, v in fixed.items():
        setattr(s, k, v)
    tail = bytearray()
    for name, data in var.items():
        if data:
            setattr(s, f"dw{name}Offset", base + len(tail))
            setattr(s, f"dw{name}Size", len(data))
            tail += data
            tail += b"\x00" * (-len(tail) % 4)  # TSPs keep DWORD alignment between fields
    needed = base + len(tail)
    total = needed if total_size is None else total_size
    s.dwTotalSize = total
    s.dwNeededSize = needed
    if total < needed:
        for name in var:
            setattr(s, f"dw{name}Offset", 0)
            setattr(s, f"dw{name}Size", 0)
        s.dwUsedSize = base
        return bytes(s) + b"\x00" * max(0, total - base)
    s.dwUsedSize = needed
    return bytes(s) + bytes(tail) + b"\x00" * (total - needed)


def pack_callinfo(info: CallInfo, total_size: int | None = None) -> bytes:
    """A LINECALLINFO holding `info`, laid out as lineGetCallInfoW fills one."""
    fixed = {
        "dwLineDeviceID": info.line_device,
        "dwAddressID": info.address_id,
        "dwCallID": info.call_id,
        "dwRelatedCallID": info.related_call_id,
        "dwOrigin": info.origin,
        "dwReason": info.reason,
    }
    var: dict[str, bytes] = {}
    for p, party in zip(_PARTIES, (info.caller, info.called, info.connected,
                                   info.redirection, info.redirecting)):
        fixed[f"dw{p}Flags"] = party.flags
        var[p] = _utf16(party.number)
        var[p + "Name"] = _utf16(party.name)
    return pack_variable(LINECALLINFO, fixed, var, total_size)
