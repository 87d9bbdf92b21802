"""The engine's member views against the lamp rules written out plainly (the engine's own
code before its fast paths, kept here as the oracle): for any order of device and client
states, under every BLF mode, with and without the softphone feed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import parse_config
from gateway.model import (Call, CallState, ClientState, DeviceState, DeviceStatus, Direction,
                           Lamp, Presence)
from gateway.panels.engine import Engine, MemberView, shown_once
from gateway.panels.lamps import call_lamp, device_lamp, merge_lamps

CONFIG = """
[sources.tapi_bridge]
[[devices]]
id = "201"
number = "201"
[[devices]]
id = "202"
number = "202"
[[devices]]
id = "203"
number = ""
[[clients]]
name = "alice"
devices = ["201", "202"]
blf = { devices = "%s", softphone = %s }
[[clients]]
name = "bob"
devices = ["203", "202"]
blf = { devices = "%s", softphone = %s }
[[clients]]
name = "nodev"
[[groups]]
name = "team"
members = ["alice", "bob", "nodev"]
"""

DEVICES = ["201", "202", "203"]
CLIENTS = ["alice", "bob", "nodev"]


def reference(engine: Engine, name: str) -> MemberView:
    cfg = engine.config.client_by_name[name]
    state = engine.client_state(name)
    feeding = engine.feeding_devices(cfg, state)
    number = cfg.number or next(
        (n for d in feeding or engine.devices_of(cfg, state)
         if (n := engine.config.device_by_id[d].number)), "")
    if not engine.trusted:
        return MemberView(name, cfg.display, number, Lamp.UNKNOWN, (), state.presence,
                          state.logged_in, engine.untrusted_reason)
    lamps, line_calls = [], []
    for d in feeding:
        dstate = engine.device_state(d)
        lamps.append(device_lamp(DeviceState(d, dstate.status)))
        line_calls.extend(dstate.calls)
    shown_sp = []
    if cfg.blf.softphone:
        line_calls, shown_sp, _ = shown_once(state.softphone, line_calls)
    lamps.extend(call_lamp(c) for c in line_calls)
    lamps.extend(call_lamp(c) for c in shown_sp)
    if not feeding:
        lamps.append(Lamp.IDLE if state.logged_in else Lamp.OFFLINE)
    calls = tuple(sorted(line_calls + shown_sp, key=lambda c: (c.since, c.id)))
    return MemberView(name, cfg.display, number, merge_lamps(lamps), calls, state.presence,
                      state.logged_in)


calls = st.builds(
    Call,
    id=st.sampled_from(["a", "b", "c", "d"]),
    direction=st.sampled_from(list(Direction)),
    state=st.sampled_from(list(CallState)),
    since=st.sampled_from([100.0, 101.0, 120.0]),
    remote=st.sampled_from([None, "+4930123456", "030123456", "201"]),
    link=st.sampled_from([None, "L1", "L2"]),
)
device_states = st.builds(
    DeviceState, device=st.sampled_from(DEVICES), status=st.sampled_from(list(DeviceStatus)),
    calls=st.lists(calls, max_size=3, unique_by=lambda c: c.id).map(tuple))
client_states = st.builds(
    ClientState, client=st.sampled_from(CLIENTS),
    logged_in=st.sampled_from([True, False, "sip"]),
    current_device=st.sampled_from([None, *DEVICES]),
    presence=st.just(Presence()),
    softphone=st.lists(calls, max_size=3, unique_by=lambda c: c.id).map(tuple),
    temp_devices=st.lists(st.sampled_from(DEVICES), max_size=2, unique=True).map(tuple))


@settings(max_examples=300, deadline=None)
@given(mode=st.sampled_from(["all", "current", "first"]), softphone=st.booleans(),
       steps=st.lists(st.one_of(device_states, client_states, st.booleans()), max_size=12))
def test_member_views_follow_the_lamp_rules(mode, softphone, steps):
    sp = "true" if softphone else "false"
    engine = Engine(parse_config(CONFIG % (mode, sp, mode, sp)), 1)
    for seq, step in enumerate(steps, start=2):
        if isinstance(step, bool):
            engine.set_trusted(step, seq)
        elif isinstance(step, DeviceState):
            engine.update_device(step, seq)
        else:
            engine.update_client(step, seq)
        for name in CLIENTS:
            assert engine.member(name) == reference(engine, name)
