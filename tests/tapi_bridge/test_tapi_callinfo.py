"""The readers of TAPI's variable-size structures, on byte buffers laid out as TAPI fills them."""

from __future__ import annotations

import ctypes
import struct

import pytest

from gateway.tapi.winbridge import constants as C
from gateway.tapi.winbridge.callinfo import (
    CallInfo,
    CallStatus,
    NeedMore,
    Party,
    StructureError,
    TapiCallError,
    fetch,
    pack_callinfo,
    pack_variable,
    parse_addresscaps,
    parse_callinfo,
    parse_calllist,
    parse_callstatus,
    parse_devcaps,
)
from gateway.tapi.winbridge.structs import (
    LINEADDRESSCAPS,
    LINECALLINFO,
    LINECALLLIST,
    LINECALLSTATUS,
    LINEDEVCAPS,
)

FIXED = ctypes.sizeof(LINECALLINFO)  # 344 with tapi.h's pack(1)


def hand_made_callinfo() -> bytes:
    """A LINECALLINFO built field by field from the documented layout, not with our writer:
    the fixed part, then the caller's number and name as NUL-terminated UTF-16LE strings in
    the variable part, their offsets counted from the start of the structure."""
    number = "+4930123456".encode("utf-16-le") + b"\0\0"
    name = "Müller & Söhne".encode("utf-16-le") + b"\0\0"
    total = FIXED + len(number) + len(name)
    buf = bytearray(total)
    struct.pack_into("<III", buf, 0, total, total, total)  # dwTotalSize, Needed, Used
    off = lambda field: getattr(LINECALLINFO, field).offset  # noqa: E731
    struct.pack_into("<I", buf, off("dwCallID"), 0x3F1)
    struct.pack_into("<I", buf, off("dwRelatedCallID"), 0x3F0)
    struct.pack_into("<I", buf, off("dwOrigin"), C.CALLORIGIN["LINECALLORIGIN_EXTERNAL"])
    struct.pack_into("<I", buf, off("dwCallerIDFlags"),
                     C.CALLPARTYID["LINECALLPARTYID_ADDRESS"]
                     | C.CALLPARTYID["LINECALLPARTYID_NAME"])
    struct.pack_into("<II", buf, off("dwCallerIDSize"), len(number), FIXED)
    struct.pack_into("<II", buf, off("dwCallerIDNameSize"), len(name), FIXED + len(number))
    buf[FIXED:] = number + name
    return bytes(buf)


def test_reads_fixed_part_and_strings_of_the_variable_part():
    info = parse_callinfo(hand_made_callinfo())
    assert info.call_id == 0x3F1 and info.related_call_id == 0x3F0
    assert info.origin == C.CALLORIGIN["LINECALLORIGIN_EXTERNAL"]
    assert info.caller == Party("+4930123456", "Müller & Söhne", 0xC)
    assert info.called == Party() and info.connected == Party()


def test_writer_lays_out_what_the_reader_reads_back():
    info = CallInfo(call_id=7, related_call_id=6, origin=1, reason=0x100,
                    caller=Party("201", "Alice", 0xC), called=Party("0401234567", None, 8),
                    connected=Party("0401234567", "Shop", 0xC),
                    redirecting=Party("203", None, 8))
    raw = pack_callinfo(info)
    assert struct.unpack_from("<I", raw, 0)[0] == len(raw)
    assert parse_callinfo(raw) == info


def test_buffer_too_small_says_how_much_is_needed():
    info = CallInfo(call_id=1, caller=Party("+4930123456", "Miller Ltd", 0xC))
    full = len(pack_callinfo(info))
    small = pack_callinfo(info, total_size=FIXED + 8)  # what TAPI fills in a small buffer
    with pytest.raises(NeedMore) as exc:
        parse_callinfo(small)
    assert exc.value.needed == full


def test_grow_and_retry_on_dwNeededSize():
    """fetch() calls again with dwNeededSize bytes, as many times as the provider needs
    (a caller ID arriving between two calls makes the second need more)."""
    infos = [CallInfo(call_id=9, caller=Party("1" * 20, "x" * 40, 0xC)),
             CallInfo(call_id=9, caller=Party("1" * 20, "y" * 90, 0xC))]
    calls: list[int] = []

    def lineGetCallInfoW(buf: bytearray) -> int:
        total = struct.unpack_from("<I", buf, 0)[0]
        calls.append(total)
        raw = pack_callinfo(infos[min(len(calls) - 1, 1)], total_size=total)
        buf[:len(raw)] = raw
        return 0

    raw = fetch(LINECALLINFO, lineGetCallInfoW, "lineGetCallInfoW", first=FIXED)
    assert parse_callinfo(raw).caller.name == "y" * 90
    assert calls[0] == FIXED and len(calls) == 3 and calls[2] > calls[1] > FIXED


def test_fetch_reports_the_tapi_error_by_name():
    with pytest.raises(TapiCallError, match="LINEERR_INVALCALLHANDLE"):
        fetch(LINECALLINFO, lambda buf: C.ERRORS["LINEERR_INVALCALLHANDLE"],
              "lineGetCallInfoW")


def test_a_provider_that_asks_for_gigabytes_is_refused():
    def greedy(buf: bytearray) -> int:
        struct.pack_into("<I", buf, 4, 1 << 30)
        return 0

    with pytest.raises(StructureError, match="asks for"):
        fetch(LINECALLINFO, greedy, "lineGetCallInfoW")


@pytest.mark.parametrize("size,offset", [
    (40, 10),              # points into the fixed part
    (40, FIXED + 1000),    # past the end of the buffer
    (0x7FFFFFFF, FIXED),   # a size that runs past dwUsedSize
])
def test_lying_offsets_give_no_string_and_never_raise(size, offset):
    raw = bytearray(hand_made_callinfo())
    struct.pack_into("<II", raw, LINECALLINFO.dwCallerIDSize.offset, size, offset)
    info = parse_callinfo(bytes(raw))
    assert info.caller.number is None
    assert info.caller.name == "Müller & Söhne"  # the other string is still read


def test_truncated_fixed_part_is_an_error():
    with pytest.raises(StructureError, match="fixed part"):
        parse_callinfo(hand_made_callinfo()[:100])


def test_long_and_unprintable_strings_are_cut_and_cleaned():
    info = CallInfo(caller=Party("9" * 500, "A\x07B\x1b[31mC", 0xC))
    out = parse_callinfo(pack_callinfo(info))
    assert out.caller.number == "9" * 128
    assert out.caller.name == "AB[31mC"


def test_devcaps_addresscaps_status_and_call_list():
    name = "Line 201 (Büro)".encode("utf-16-le") + b"\0\0"
    caps = pack_variable(LINEDEVCAPS, {"dwPermanentLineID": 77, "dwNumAddresses": 1},
                         {"ProviderInfo": "ACME TSP".encode("utf-16-le"), "LineName": name})
    dc = parse_devcaps(caps)
    assert (dc.name, dc.permanent_id, dc.num_addresses, dc.provider) == (
        "Line 201 (Büro)", 77, 1, "ACME TSP")
    addr = pack_variable(LINEADDRESSCAPS, {}, {"Address": "201".encode("utf-16-le") + b"\0\0"})
    assert parse_addresscaps(addr) == "201"
    status = pack_variable(LINECALLSTATUS, {"dwCallState": 0x100, "dwCallStateMode": 1,
                                            "dwCallPrivilege": 2}, {})
    assert parse_callstatus(status) == CallStatus(0x100, 1, 2)
    calls = pack_variable(LINECALLLIST, {"dwCallsNumEntries": 3},
                          {"Calls": struct.pack("<3I", 0x10, 0x20, 0x30)})
    assert parse_calllist(calls) == [0x10, 0x20, 0x30]
    # A count larger than the array: only what is there.
    lying = bytearray(calls)
    struct.pack_into("<I", lying, LINECALLLIST.dwCallsNumEntries.offset, 1000)
    assert parse_calllist(bytes(lying)) == [0x10, 0x20, 0x30]
