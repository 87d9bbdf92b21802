"""The store's codecs: a state <-> the text kept in Redis and in the change log.

The publish script compares the new text with the stored one to skip a change nobody could
see, so the same state must always give the same bytes: these tests pin them down.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.model import (
    Call,
    CallState,
    ClientState,
    DeviceState,
    DeviceStatus,
    Direction,
    Presence,
)
from gateway.store import decode_client, decode_device, encode_client, encode_device

CALL = Call("201/c1", Direction.IN, CallState.RINGING, 1700000000.25, "0301", "Müller GmbH",
            "link-1")
DEVICE = DeviceState("201", DeviceStatus.ONLINE, (CALL,))
CLIENT = ClientState("alice", logged_in="locked", current_device="201",
                     presence=Presence("away", "lunch"), softphone=(CALL,),
                     temp_devices=("hot1",), address="10.0.0.7")


def test_device_text_is_pinned():
    assert encode_device(DEVICE) == (
        '{"s":"online","c":[["201/c1","in","ringing",1700000000.25,"0301","Müller GmbH",'
        '"link-1"]]}')
    assert encode_device(DeviceState("202")) == '{"s":"unknown","c":[]}'


def test_client_text_is_pinned():
    assert encode_client(CLIENT) == (
        '{"l":"locked","d":"201","p":["away","lunch"],"c":[["201/c1","in","ringing",'
        '1700000000.25,"0301","Müller GmbH","link-1"]],"t":["hot1"],"a":"10.0.0.7"}')
    assert encode_client(ClientState("bob")) == (
        '{"l":false,"d":null,"p":["available",null],"c":[],"t":[],"a":null}')


def test_equal_states_give_equal_bytes_however_built():
    rebuilt = DeviceState("201", DeviceStatus("online"), (Call(
        id="201/c1", direction=Direction("in"), state=CallState("ringing"),
        since=1700000000.25, remote="0301", remote_name="Müller GmbH", link="link-1"),))
    assert encode_device(rebuilt).encode() == encode_device(DEVICE).encode()
    assert encode_client(replace(CLIENT)) == encode_client(CLIENT)


def test_round_trips():
    assert decode_device("201", encode_device(DEVICE)) == DEVICE
    assert decode_client("alice", encode_client(CLIENT)) == CLIENT
    again = encode_device(decode_device("201", encode_device(DEVICE)))
    assert again == encode_device(DEVICE)


def test_client_records_written_before_hot_desk_and_address_still_read():
    old = '{"l":true,"d":null,"p":["available",null],"c":[]}'
    assert decode_client("carol", old) == ClientState("carol", logged_in=True)


def test_a_call_with_a_sip_dialog_keeps_its_replaces_value():
    with_dialog = replace(CALL, replaces="abc@pbx;to-tag=lt;from-tag=rt;early-only")
    text = encode_device(DeviceState("201", DeviceStatus.ONLINE, (with_dialog,)))
    assert text.endswith('"link-1","abc@pbx;to-tag=lt;from-tag=rt;early-only"]]}')
    assert decode_device("201", text).calls == (with_dialog,)


def test_every_optional_call_item_round_trips_in_any_mix():
    """Seven items (the common call), eight (`replaces`), nine (`remote_out`), in one state."""
    calls = (CALL, replace(CALL, id="201/c2", replaces="x;to-tag=a;from-tag=b"),
             replace(CALL, id="201/c3", remote_out=True),
             replace(CALL, id="201/c4", replaces="y", remote_out=True))
    state = DeviceState("201", DeviceStatus.ONLINE, calls)
    assert decode_device("201", encode_device(state)) == state


def test_a_stored_device_text_reads_as_json_reads_it_or_fails_as_it_does():
    """The log follower reads states with json's scanner directly: text json.loads reads
    (spaces around it) reads the same, and what it refuses fails with json.loads' error or
    the enum's, never with something else."""
    import json

    import pytest

    text = encode_device(DEVICE)
    assert decode_device(DEVICE.device, f"  {text}\n") == DEVICE
    for bad in (text + "x", text[:-1], "", "[1]"):
        with pytest.raises((json.JSONDecodeError, TypeError)) as got:
            decode_device(DEVICE.device, bad)
        with pytest.raises(type(got.value)):
            json.loads(bad)["s"]
    with pytest.raises(ValueError, match="not a valid DeviceStatus"):
        decode_device(DEVICE.device, '{"s":"sideways","c":[]}')
    with pytest.raises(ValueError, match="not a valid Direction"):
        decode_device(DEVICE.device, '{"s":"online","c":[["d/1","both","ringing",1.0,null,'
                                     'null,null]]}')
    with pytest.raises(ValueError, match="not a valid CallState"):
        decode_device(DEVICE.device, '{"s":"online","c":[["d/1","in",["x"],1.0,null,'
                                     'null,null]]}')
