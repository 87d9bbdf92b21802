"""Lamp rules of contract section 2, in one place.

- a call's lamp follows its state;
- a device's lamp: `unknown` when its state cannot be trusted, `offline` out of service,
  otherwise the highest-priority lamp of its calls, `idle` without calls;
- a member's lamp merges the lamps of the devices (and softphone calls) that feed it by the
  priority `ringing > busy > held > outgoing > idle > offline > unknown`.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..model import LAMP_PRIORITY, Call, CallState, DeviceState, DeviceStatus, Lamp

__all__ = ["call_lamp", "device_lamp", "merge_lamps"]

_CALL_LAMP = {
    CallState.RINGING: Lamp.RINGING,  # incoming and alerting: can be picked up
    CallState.DIALING: Lamp.OUTGOING,  # dial tone, dialing, ringback, proceeding, busy tone
    CallState.CONNECTED: Lamp.BUSY,  # connected or conferenced
    CallState.HELD: Lamp.HELD,  # shows only when no other call is busy: held < busy
}


def call_lamp(call: Call) -> Lamp:
    return _CALL_LAMP[call.state]


def merge_lamps(lamps: Iterable[Lamp], default: Lamp = Lamp.UNKNOWN) -> Lamp:
    """The highest-priority lamp, or `default` when there is none."""
    return max(lamps, key=LAMP_PRIORITY.__getitem__, default=default)


_UNKNOWN, _OFFLINE, _IDLE = DeviceStatus.UNKNOWN, DeviceStatus.OFFLINE, Lamp.IDLE


def device_lamp(state: DeviceState) -> Lamp:
    status = state.status
    if status is _UNKNOWN:
        return Lamp.UNKNOWN
    if status is _OFFLINE:
        return Lamp.OFFLINE
    calls = state.calls
    if not calls:  # the common cases first: no call, one call (this runs for every report)
        return _IDLE
    if len(calls) == 1:
        return _CALL_LAMP[calls[0].state]
    return merge_lamps((call_lamp(c) for c in calls), default=_IDLE)
