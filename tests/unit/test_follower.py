"""The follower's fan-out and the reload rules, without Redis: what leaves for the hub and
the other listeners when a read batch changes views, and which config changes need a
restart."""

from __future__ import annotations

from collections import Counter

from gateway.config import parse_config
from gateway.config_watch import restart_needed
from gateway.follower import CHUNK_MAX, LogFollower
from gateway.model import Lamp, Presence
from gateway.panels.engine import Delta, MemberView
from gateway.server.hub import Hub

CONFIG = parse_config("""
[sources.tapi_bridge]
[[clients]]
name = "alice"
[[clients]]
name = "bob"
""")


def delta(key: str, lamp: Lamp, seq: int) -> Delta:
    view = MemberView(key, key, "", lamp, (), Presence(), False)
    return Delta("member", key, view, seq)


def follower() -> tuple[LogFollower, list[list[Delta]]]:
    f = LogFollower(None, lambda: CONFIG, Hub(CONFIG), Counter())  # type: ignore[arg-type]
    seen: list[list[Delta]] = []
    f.listeners.append(seen.append)
    return f, seen


async def test_a_batch_sends_only_the_newest_state_of_each_view_in_seq_order():
    f, seen = follower()
    await f.fan_out([delta("alice", Lamp.RINGING, 10), delta("bob", Lamp.BUSY, 11),
                     delta("alice", Lamp.BUSY, 12), delta("alice", Lamp.IDLE, 13)])
    (batch,) = seen
    assert [(d.key, d.view.lamp, d.seq) for d in batch] == [("bob", Lamp.BUSY, 11),
                                                           ("alice", Lamp.IDLE, 13)]


async def test_a_big_batch_goes_out_in_chunks_in_order():
    f, seen = follower()
    deltas = [delta(f"m{i}", Lamp.BUSY, i) for i in range(CHUNK_MAX * 2 + 1)]
    await f.fan_out(deltas)
    assert [len(b) for b in seen] == [CHUNK_MAX, CHUNK_MAX, 1]
    assert [d.seq for b in seen for d in b] == list(range(CHUNK_MAX * 2 + 1))


def test_nothing_to_deliver_bothers_nobody():
    f, seen = follower()
    f.deliver([])
    assert seen == []


def test_what_takes_a_restart():
    base = """
[server]
listen = "127.0.0.1:%d"
[sources.tapi_bridge]
listen = "127.0.0.1:%d"
[[clients]]
name = "%s"
"""
    old = parse_config(base % (8765, 7001, "alice"))
    assert restart_needed(old, parse_config(base % (8765, 7001, "bob"))) == []
    assert restart_needed(old, parse_config(base % (8766, 7002, "alice"))) == [
        "[sources]", "server.listen"]


def test_a_file_that_loses_every_device_or_client_is_refused():
    from gateway.config_watch import reload_refusal

    src = '[sources.tapi_bridge]\nlisten = "127.0.0.1:7001"\n'
    full = parse_config(src + '[[devices]]\nid = "201"\n[[clients]]\nname = "alice"\n'
                        'devices = ["201"]\n')
    assert reload_refusal(full, parse_config("")) is not None  # emptied mid-save
    assert "no devices" in reload_refusal(full, parse_config('[[clients]]\nname = "a"\n'))
    assert "no clients" in reload_refusal(full, parse_config(src + '[[devices]]\nid = "2"\n'))
    assert reload_refusal(full, parse_config(src + '[[devices]]\nid = "202"\n[[clients]]\n'
                                             'name = "bob"\n')) is None
    assert reload_refusal(parse_config(""), full) is None  # a first real file is fine


def test_which_redis_answers_are_refused_writes():
    from redis.exceptions import ConnectionError, ReadOnlyError, ResponseError

    from gateway.store import write_refusal

    assert write_refusal(ResponseError(
        "MISCONF Errors writing to the AOF file: No space left on device")) == "store_disk_full"
    assert write_refusal(ResponseError("MISCONF Redis is configured to save RDB snapshots, "
                                       "but it's currently unable to persist to disk.")) \
        == "store_cannot_persist"
    assert write_refusal(ReadOnlyError("You can't write against a read only replica.",
                                       status_code="READONLY")) == "store_read_only"
    assert write_refusal(ResponseError("ERR Error running script: @user_script:4: MISCONF "
                                       "Errors writing to the AOF file: No space left")) \
        == "store_disk_full"
    assert write_refusal(ConnectionError("Connection refused")) is None
    assert write_refusal(ResponseError("WRONGTYPE Operation against a key")) is None
