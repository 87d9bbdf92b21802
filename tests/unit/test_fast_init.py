"""`fast_init`: the values built for every report, call and state keep the generated
dataclass constructor's behaviour (signature, defaults, errors, frozen) with a cheaper one."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from gateway.calls import CallReport, EndedCall, Phase, ServiceReport, Verdict
from gateway.model import Call, CallState, DeviceState, DeviceStatus, Direction, Presence, fast_init
from gateway.panels.engine import Delta, DeviceView, MemberView
from gateway.store import Change

FAST = [Call, DeviceState, Presence, CallReport, ServiceReport, EndedCall, Verdict, Change,
        MemberView, DeviceView, Delta]


@pytest.mark.parametrize("cls", FAST, ids=lambda c: c.__name__)
def test_the_constructor_takes_what_the_dataclass_declares(cls):
    params = list(inspect.signature(cls).parameters.values())
    declared = dataclasses.fields(cls)
    assert [p.name for p in params] == [f.name for f in declared]
    assert [p.default for p in params] == [
        inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        for f in declared]


def test_values_are_the_same_by_position_and_by_keyword_and_stay_frozen():
    by_pos = CallReport("201", "c1", Phase.RINGING, Direction.IN, "0301", "Ann", None, True,
                        None, "tapi#1")
    by_kw = CallReport(device="201", call="c1", phase=Phase.RINGING, direction=Direction.IN,
                       remote="0301", remote_name="Ann", withheld=True, conn="tapi#1")
    assert by_pos == by_kw and hash(by_pos) == hash(by_kw)
    assert CallReport("201", "c1", Phase.ENDED).link is None
    call = Call("201/c1", Direction.IN, CallState.RINGING, 5.0)
    assert dataclasses.replace(call, remote="0301").remote == "0301"
    assert DeviceState("201").status is DeviceStatus.UNKNOWN
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.state = CallState.HELD  # type: ignore[misc]
    with pytest.raises(TypeError, match="missing 3 required positional arguments"):
        Call("201/c1")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        Presence(colour="red")  # type: ignore[call-arg]


def test_a_class_it_cannot_speed_up_exactly_is_refused():
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        a: list = dataclasses.field(default_factory=list)

    for cls in (NoSlots, Factory):
        with pytest.raises(TypeError, match="not a plain frozen slotted dataclass"):
            fast_init(cls)
