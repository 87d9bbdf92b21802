"""The ctypes structures and constants of the TAPI bridge against the real Windows header.

Debian's mingw-w64 ships tapi.h. This test writes a C file that stores, for every structure
the bridge uses, sizeof() and each field's offsetof() and size, and the value of every TAPI
constant, into an array in its own section; compiles it with x86_64-w64-mingw32-gcc; reads
the numbers back out of the object file with objcopy (nothing is run: there is no Windows
here) and compares them with ctypes, on this 64-bit machine, where HANDLE and DWORD_PTR are
8 bytes as on 64-bit Windows.
"""

from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from gateway.tapi.winbridge import constants
from gateway.tapi.winbridge.structs import STRUCTURES

CC = "x86_64-w64-mingw32-gcc"
OBJCOPY = "x86_64-w64-mingw32-objcopy"

pytestmark = pytest.mark.skipif(
    shutil.which(CC) is None or shutil.which(OBJCOPY) is None,
    reason=f"{CC} not installed (Debian: apt-get install gcc-mingw-w64-x86-64-win32; "
           "./scripts/test installs it when run as root)",
)


def _expected() -> list[tuple[str, str, int]]:
    """(label, C expression, the value ctypes gives) for everything checked."""
    rows: list[tuple[str, str, int]] = []
    assert ctypes.sizeof(ctypes.c_void_p) == 8, "the comparison is for a 64-bit Python"
    for name, cls in STRUCTURES.items():
        rows.append((f"sizeof({name})", f"sizeof({name})", ctypes.sizeof(cls)))
        for field, _type in cls._fields_:
            desc = getattr(cls, field)
            rows.append((f"offsetof({name}, {field})", f"offsetof({name}, {field})",
                         desc.offset))
            rows.append((f"sizeof({name}.{field})", f"sizeof((({name} *)0)->{field})",
                         desc.size))
    for group in constants.GROUPS.values():
        for cname, value in group.items():
            rows.append((cname, f"(unsigned int)({cname})", value))
    return rows


def _compile(tmp_path: Path, rows) -> list[int]:
    src = tmp_path / "layout.c"
    body = ",\n".join(f"  (unsigned long long)({expr})" for _, expr, _ in rows)
    src.write_text(
        "#include <windows.h>\n#include <tapi.h>\n#include <stddef.h>\n"
        '__attribute__((section(".layout"), used))\n'
        f"const unsigned long long layout[{len(rows)}] = {{\n{body}\n}};\n"
    )
    obj, data = tmp_path / "layout.o", tmp_path / "layout.bin"
    done = subprocess.run([CC, "-c", "-O0", str(src), "-o", str(obj)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    subprocess.run([OBJCOPY, "-O", "binary", "--only-section=.layout", str(obj), str(data)],
                   check=True)
    raw = data.read_bytes()
    assert len(raw) >= 8 * len(rows)
    return list(struct.unpack(f"<{len(rows)}Q", raw[: 8 * len(rows)]))


def test_structures_and_constants_match_tapi_h(tmp_path):
    rows = _expected()
    actual = _compile(tmp_path, rows)
    wrong = [f"{label}: tapi.h {got}, ours {want}"
             for (label, _, want), got in zip(rows, actual) if got != want]
    assert not wrong, "\n".join(wrong)
    # The check saw what matters: the packed fixed part of LINECALLINFO and the variable
    # part's first offset pair.
    assert ("sizeof(LINECALLINFO)", "sizeof(LINECALLINFO)", 344) in rows


def test_a_wrong_layout_would_be_caught(tmp_path):
    """The comparison is real: a structure declared with natural alignment (no pack(1))
    differs from tapi.h, and the compiled numbers show it."""

    class Natural(ctypes.Structure):  # LINEMESSAGE without #pragma pack(1)
        _fields_ = [("hDevice", ctypes.c_uint32), ("dwMessageID", ctypes.c_uint32),
                    ("dwCallbackInstance", ctypes.c_size_t), ("dwParam1", ctypes.c_size_t),
                    ("dwParam2", ctypes.c_size_t), ("dwParam3", ctypes.c_size_t)]

    class Natural2(ctypes.Structure):  # LINEINITIALIZEEXPARAMS without pack(1)
        _fields_ = [("dwTotalSize", ctypes.c_uint32), ("dwNeededSize", ctypes.c_uint32),
                    ("dwUsedSize", ctypes.c_uint32), ("dwOptions", ctypes.c_uint32),
                    ("Handles", ctypes.c_void_p), ("dwCompletionKey", ctypes.c_uint32)]

    rows = [("sizeof(LINEINITIALIZEEXPARAMS)", "sizeof(LINEINITIALIZEEXPARAMS)",
             ctypes.sizeof(Natural2)),
            ("LINEMESSAGE", "sizeof(LINEMESSAGE)", ctypes.sizeof(Natural))]
    actual = _compile(tmp_path, rows)
    assert actual[0] == 28 and ctypes.sizeof(Natural2) == 32
    assert actual[1] == 40 == ctypes.sizeof(Natural)  # same here: the pack test is the first


def _c_kind(ctype: str) -> tuple[str, int]:
    """A C parameter type of tapi.h -> (int|ptr, size) on 64-bit Windows."""
    ctype = ctype.replace("const", "").strip()
    if ctype.startswith("LP") or ctype.endswith("*") or ctype in (
            "HINSTANCE", "HANDLE", "LINECALLBACK", "HWND"):
        return ("ptr", 8)
    if ctype in ("DWORD_PTR", "ULONG_PTR"):
        return ("int", 8)
    if ctype in ("DWORD", "LONG", "HLINEAPP", "HLINE", "HCALL", "BOOL"):
        return ("int", 4)
    raise AssertionError(f"unexpected C type {ctype!r}")


def _py_kind(t) -> tuple[str, int]:
    if t in (ctypes.c_void_p, ctypes.c_wchar_p, ctypes.c_char_p) or hasattr(t, "_type_") \
            and isinstance(getattr(t, "_type_"), type):
        return ("ptr", 8)
    return ("int", ctypes.sizeof(t))


def test_ctypes_prototypes_match_tapi_h():
    """Every function of the ctypes layer: same parameter count, and each parameter the same
    kind (integer or pointer) and size as tapi.h's prototype (a DWORD passed where tapi.h
    has a pointer would corrupt the call on Windows)."""
    import re

    from gateway.tapi.winbridge.tapi32 import SIGNATURES

    header = Path(subprocess.run([CC, "-print-sysroot"], capture_output=True,
                                 text=True).stdout.strip() or "/usr")
    candidates = [Path("/usr/x86_64-w64-mingw32/include/tapi.h"),
                  header / "x86_64-w64-mingw32/include/tapi.h"]
    tapi_h = next((p for p in candidates if p.exists()), None)
    assert tapi_h is not None, "tapi.h not found next to the compiler"
    text = tapi_h.read_text(errors="replace")
    for name, (restype, argtypes) in SIGNATURES.items():
        m = re.search(rf"LONG WINAPI {name}\((.*?)\);", text)
        assert m, f"{name} not in tapi.h"
        params = [p.strip() for p in m.group(1).split(",")]
        c_types = [re.sub(r"\s*\b\w+$", "", p) for p in params]
        assert len(c_types) == len(argtypes), f"{name}: {len(c_types)} parameters in tapi.h"
        for i, (ct, pt) in enumerate(zip(c_types, argtypes)):
            assert _c_kind(ct) == _py_kind(pt), f"{name} parameter {i + 1}: {ct} vs {pt}"
        assert ctypes.sizeof(restype) == 4
