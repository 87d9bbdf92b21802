"""The ctypes structures of the TAPI 2.x line API, laid out as tapi.h lays them out.

Fixed-width types only, so the layout is the same wherever Python runs: DWORD is c_uint32,
WORD c_uint16, HANDLE and DWORD_PTR pointer-sized (8 bytes on 64-bit Windows and on the
64-bit Linux the tests run on). tapi.h wraps every declaration in ``#pragma pack(1)``, so
every structure here has ``_pack_ = 1``; HLINEAPP, HLINE and HCALL are 32-bit opaque values
(``DECLARE_OPAQUE32``), not pointers. tests/tapi_bridge/test_layout.py compiles a C file
against mingw-w64's tapi.h and compares every size and field offset with these.

The variable-size structures (LINECALLINFO, LINEDEVCAPS, ...) start with dwTotalSize,
dwNeededSize, dwUsedSize; strings live after the fixed part, found by ...Size/...Offset
pairs counted from the start of the structure (see :mod:`.callinfo`).
"""

from __future__ import annotations

import ctypes
from ctypes import c_uint8, c_uint16, c_uint32, c_void_p, c_size_t

__all__ = [
    "DWORD",
    "WORD",
    "HANDLE",
    "DWORD_PTR",
    "GUID",
    "SYSTEMTIME",
    "LINEDIALPARAMS",
    "LINEEXTENSIONID",
    "LINEMESSAGE",
    "LINEINITIALIZEEXPARAMS",
    "LINEDEVCAPS",
    "LINEADDRESSCAPS",
    "LINEDEVSTATUS",
    "LINECALLINFO",
    "LINECALLSTATUS",
    "LINECALLLIST",
    "STRUCTURES",
]

DWORD = c_uint32
WORD = c_uint16
HANDLE = c_void_p  # pointer-sized
DWORD_PTR = c_size_t  # pointer-sized unsigned (ULONG_PTR)
HOPAQUE32 = c_uint32  # HLINEAPP, HLINE, HCALL: DECLARE_OPAQUE32 in tapi.h


def _dwords(names: str) -> list[tuple[str, type]]:
    return [(n, DWORD) for n in names.split()]


class _Packed(ctypes.Structure):
    """#pragma pack(1), as tapi.h declares everything; "ms" layout on every platform."""

    _pack_ = 1
    _layout_ = "ms"


class GUID(ctypes.Structure):  # guiddef.h: natural alignment, 16 bytes either way
    _fields_ = [("Data1", DWORD), ("Data2", WORD), ("Data3", WORD), ("Data4", c_uint8 * 8)]


class SYSTEMTIME(ctypes.Structure):  # minwinbase.h, 8 WORDs
    _fields_ = [(n, WORD) for n in (
        "wYear", "wMonth", "wDayOfWeek", "wDay", "wHour", "wMinute", "wSecond",
        "wMilliseconds")]


class LINEDIALPARAMS(_Packed):
    _fields_ = _dwords("dwDialPause dwDialSpeed dwDigitDuration dwWaitForDialtone")


class LINEEXTENSIONID(_Packed):
    _fields_ = _dwords("dwExtensionID0 dwExtensionID1 dwExtensionID2 dwExtensionID3")


class LINEMESSAGE(_Packed):
    """What lineGetMessage fills: the message, its device handle and three parameters."""

    _fields_ = [
        ("hDevice", DWORD),
        ("dwMessageID", DWORD),
        ("dwCallbackInstance", DWORD_PTR),
        ("dwParam1", DWORD_PTR),
        ("dwParam2", DWORD_PTR),
        ("dwParam3", DWORD_PTR),
    ]


class _InitHandles(ctypes.Union):
    _pack_ = 1
    _layout_ = "ms"
    _fields_ = [("hEvent", HANDLE), ("hCompletionPort", HANDLE)]


class LINEINITIALIZEEXPARAMS(_Packed):
    _fields_ = [
        *_dwords("dwTotalSize dwNeededSize dwUsedSize dwOptions"),
        ("Handles", _InitHandles),
        ("dwCompletionKey", DWORD),
    ]


class LINEDEVCAPS(_Packed):
    _fields_ = [
        *_dwords(
            "dwTotalSize dwNeededSize dwUsedSize dwProviderInfoSize dwProviderInfoOffset "
            "dwSwitchInfoSize dwSwitchInfoOffset dwPermanentLineID dwLineNameSize "
            "dwLineNameOffset dwStringFormat dwAddressModes dwNumAddresses dwBearerModes "
            "dwMaxRate dwMediaModes dwGenerateToneModes dwGenerateToneMaxNumFreq "
            "dwGenerateDigitModes dwMonitorToneMaxNumFreq dwMonitorToneMaxNumEntries "
            "dwMonitorDigitModes dwGatherDigitsMinTimeout dwGatherDigitsMaxTimeout "
            "dwMedCtlDigitMaxListSize dwMedCtlMediaMaxListSize dwMedCtlToneMaxListSize "
            "dwMedCtlCallStateMaxListSize dwDevCapFlags dwMaxNumActiveCalls dwAnswerMode "
            "dwRingModes dwLineStates dwUUIAcceptSize dwUUIAnswerSize dwUUIMakeCallSize "
            "dwUUIDropSize dwUUISendUserUserInfoSize dwUUICallInfoSize"),
        ("MinDialParams", LINEDIALPARAMS),
        ("MaxDialParams", LINEDIALPARAMS),
        ("DefaultDialParams", LINEDIALPARAMS),
        *_dwords(
            "dwNumTerminals dwTerminalCapsSize dwTerminalCapsOffset dwTerminalTextEntrySize "
            "dwTerminalTextSize dwTerminalTextOffset dwDevSpecificSize dwDevSpecificOffset "
            "dwLineFeatures dwSettableDevStatus dwDeviceClassesSize dwDeviceClassesOffset"),
        ("PermanentLineGuid", GUID),
        ("dwAddressTypes", DWORD),
        ("ProtocolGuid", GUID),
        ("dwAvailableTracking", DWORD),
    ]


class LINEADDRESSCAPS(_Packed):
    _fields_ = _dwords(
        "dwTotalSize dwNeededSize dwUsedSize dwLineDeviceID dwAddressSize dwAddressOffset "
        "dwDevSpecificSize dwDevSpecificOffset dwAddressSharing dwAddressStates "
        "dwCallInfoStates dwCallerIDFlags dwCalledIDFlags dwConnectedIDFlags "
        "dwRedirectionIDFlags dwRedirectingIDFlags dwCallStates dwDialToneModes dwBusyModes "
        "dwSpecialInfo dwDisconnectModes dwMaxNumActiveCalls dwMaxNumOnHoldCalls "
        "dwMaxNumOnHoldPendingCalls dwMaxNumConference dwMaxNumTransConf dwAddrCapFlags "
        "dwCallFeatures dwRemoveFromConfCaps dwRemoveFromConfState dwTransferModes "
        "dwParkModes dwForwardModes dwMaxForwardEntries dwMaxSpecificEntries "
        "dwMinFwdNumRings dwMaxFwdNumRings dwMaxCallCompletions dwCallCompletionConds "
        "dwCallCompletionModes dwNumCompletionMessages dwCompletionMsgTextEntrySize "
        "dwCompletionMsgTextSize dwCompletionMsgTextOffset dwAddressFeatures "
        "dwPredictiveAutoTransferStates dwNumCallTreatments dwCallTreatmentListSize "
        "dwCallTreatmentListOffset dwDeviceClassesSize dwDeviceClassesOffset "
        "dwMaxCallDataSize dwCallFeatures2 dwMaxNoAnswerTimeout dwConnectedModes "
        "dwOfferingModes dwAvailableMediaModes")


class LINEDEVSTATUS(_Packed):
    _fields_ = _dwords(
        "dwTotalSize dwNeededSize dwUsedSize dwNumOpens dwOpenMediaModes dwNumActiveCalls "
        "dwNumOnHoldCalls dwNumOnHoldPendCalls dwLineFeatures dwNumCallCompletions "
        "dwRingMode dwSignalLevel dwBatteryLevel dwRoamMode dwDevStatusFlags "
        "dwTerminalModesSize dwTerminalModesOffset dwDevSpecificSize dwDevSpecificOffset "
        "dwAvailableMediaModes dwAppInfoSize dwAppInfoOffset")


class LINECALLINFO(_Packed):
    _fields_ = [
        *_dwords("dwTotalSize dwNeededSize dwUsedSize"),
        ("hLine", HOPAQUE32),
        *_dwords(
            "dwLineDeviceID dwAddressID dwBearerMode dwRate dwMediaMode dwAppSpecific "
            "dwCallID dwRelatedCallID dwCallParamFlags dwCallStates dwMonitorDigitModes "
            "dwMonitorMediaModes"),
        ("DialParams", LINEDIALPARAMS),
        *_dwords(
            "dwOrigin dwReason dwCompletionID dwNumOwners dwNumMonitors dwCountryCode "
            "dwTrunk "
            "dwCallerIDFlags dwCallerIDSize dwCallerIDOffset dwCallerIDNameSize "
            "dwCallerIDNameOffset "
            "dwCalledIDFlags dwCalledIDSize dwCalledIDOffset dwCalledIDNameSize "
            "dwCalledIDNameOffset "
            "dwConnectedIDFlags dwConnectedIDSize dwConnectedIDOffset dwConnectedIDNameSize "
            "dwConnectedIDNameOffset "
            "dwRedirectionIDFlags dwRedirectionIDSize dwRedirectionIDOffset "
            "dwRedirectionIDNameSize dwRedirectionIDNameOffset "
            "dwRedirectingIDFlags dwRedirectingIDSize dwRedirectingIDOffset "
            "dwRedirectingIDNameSize dwRedirectingIDNameOffset "
            "dwAppNameSize dwAppNameOffset dwDisplayableAddressSize "
            "dwDisplayableAddressOffset dwCalledPartySize dwCalledPartyOffset dwCommentSize "
            "dwCommentOffset dwDisplaySize dwDisplayOffset dwUserUserInfoSize "
            "dwUserUserInfoOffset dwHighLevelCompSize dwHighLevelCompOffset "
            "dwLowLevelCompSize dwLowLevelCompOffset dwChargingInfoSize dwChargingInfoOffset "
            "dwTerminalModesSize dwTerminalModesOffset dwDevSpecificSize dwDevSpecificOffset "
            "dwCallTreatment dwCallDataSize dwCallDataOffset dwSendingFlowspecSize "
            "dwSendingFlowspecOffset dwReceivingFlowspecSize dwReceivingFlowspecOffset "
            "dwCallerIDAddressType dwCalledIDAddressType dwConnectedIDAddressType "
            "dwRedirectionIDAddressType dwRedirectingIDAddressType"),
    ]


class LINECALLSTATUS(_Packed):
    _fields_ = [
        *_dwords(
            "dwTotalSize dwNeededSize dwUsedSize dwCallState dwCallStateMode "
            "dwCallPrivilege dwCallFeatures dwDevSpecificSize dwDevSpecificOffset "
            "dwCallFeatures2"),
        ("tStateEntryTime", SYSTEMTIME),
    ]


class LINECALLLIST(_Packed):
    """Followed in the buffer by dwCallsNumEntries HCALLs (32-bit each)."""

    _fields_ = _dwords(
        "dwTotalSize dwNeededSize dwUsedSize dwCallsNumEntries dwCallsSize dwCallsOffset")


# Every structure the bridge uses, by its tapi.h name (what the layout test checks).
STRUCTURES: dict[str, type[ctypes.Structure]] = {
    "LINEDIALPARAMS": LINEDIALPARAMS,
    "LINEEXTENSIONID": LINEEXTENSIONID,
    "LINEMESSAGE": LINEMESSAGE,
    "LINEINITIALIZEEXPARAMS": LINEINITIALIZEEXPARAMS,
    "LINEDEVCAPS": LINEDEVCAPS,
    "LINEADDRESSCAPS": LINEADDRESSCAPS,
    "LINEDEVSTATUS": LINEDEVSTATUS,
    "LINECALLINFO": LINECALLINFO,
    "LINECALLSTATUS": LINECALLSTATUS,
    "LINECALLLIST": LINECALLLIST,
}
