"""The store's batch scripts on a real redis-server: a whole batch of states published in one
call (each change its own seq, in order; an unchanged state a no-op) and every provenance
list appended and capped in one call."""

from __future__ import annotations

from gateway.model import Call, CallState, DeviceState, DeviceStatus, Direction
from gateway.store import Store, encode_device


def _ringing(device: str, call: str) -> DeviceState:
    return DeviceState(device, DeviceStatus.ONLINE, (
        Call(id=f"{device}/{call}", direction=Direction.IN, state=CallState.RINGING,
             since=1700000000.5, remote="0301", remote_name="Ä Customer"),))


async def test_a_batch_is_one_change_per_new_state_in_order_and_equal_states_are_no_ops(redis_url):
    store = Store(redis_url)
    try:
        idle = [DeviceState(str(d), DeviceStatus.ONLINE, ()) for d in range(1, 6)]
        first = await store.publish([("device", s.device, encode_device(s)) for s in idle])
        assert first == [(i, True) for i in range(1, 6)]
        # Two devices change, three are published again unchanged: only two new seqs, and
        # the unchanged ones answer with the seq they were stored under.
        again = [_ringing("2", "c1"), idle[0], _ringing("4", "c9"), idle[2], idle[4]]
        second = await store.publish([("device", s.device, encode_device(s)) for s in again])
        assert second == [(6, True), (1, False), (7, True), (3, False), (5, False)]
        log = await store.read_log(0, block_ms=0)
        assert [(c.seq, c.id) for c in log] == [(1, "1"), (2, "2"), (3, "3"), (4, "4"),
                                                (5, "5"), (6, "2"), (7, "4")]
        assert log[-1].state == _ringing("4", "c9")  # non-ASCII and all, as published
        last, devices, _ = await store.load_all()
        assert last == 7
        assert dict((s.device, seq) for s, seq in devices) == {"1": 1, "2": 6, "3": 3,
                                                                "4": 7, "5": 5}
        assert await store.stamp_config("abc") == 8
        assert await store.stamp_config("abc") == 8  # the same configuration: no new seq
    finally:
        await store.close()


async def test_provenance_lists_are_appended_in_order_and_capped_in_one_call(redis_url):
    store = Store(redis_url)
    try:
        await store.append_provenance({("dev", "201"): [f"r{i}" for i in range(4)],
                                       ("cli", "alice"): ["s0"], ("dev", "202"): []}, keep=5)
        await store.append_provenance({("dev", "201"): ["r4", "r5", "r6"],
                                       ("cli", "alice"): ["s1"]}, keep=5)
        got = await store.read_provenance([("dev", "201"), ("cli", "alice"), ("dev", "202")])
        assert got == {("dev", "201"): ["r2", "r3", "r4", "r5", "r6"],
                       ("cli", "alice"): ["s0", "s1"], ("dev", "202"): []}
        # A backlog far longer than `keep` (records held while Redis was away) is one call.
        await store.append_provenance({("dev", "203"): [f"b{i}" for i in range(20000)]}, keep=3)
        assert (await store.read_provenance([("dev", "203")]))[("dev", "203")] == [
            "b19997", "b19998", "b19999"]
    finally:
        await store.close()


async def test_the_batch_scripts_are_loaded_again_after_redis_forgot_them(redis_url):
    """Redis restarted or its scripts were flushed: the next batch still goes in (NOSCRIPT
    loads the script again), with the same results."""
    store = Store(redis_url)
    try:
        idle = DeviceState("301", DeviceStatus.ONLINE, ())
        [(seq, changed)] = await store.publish([("device", "301", encode_device(idle))])
        await store.redis.script_flush()
        ringing = _ringing("301", "c1")
        assert await store.publish([("device", "301", encode_device(ringing)),
                                    ("device", "302", encode_device(idle))]) == [
            (seq + 1, True), (seq + 2, True)]
        await store.redis.script_flush()
        await store.append_records([("dev", "301"), ("cli", "bob")], [2, 1],
                                   '["a"]\n["Ä],[b"]\n["c"]', keep=5)
        assert await store.read_provenance([("dev", "301"), ("cli", "bob")]) == {
            ("dev", "301"): ['["a"]', '["Ä],[b"]'], ("cli", "bob"): ['["c"]']}
    finally:
        await store.close()


async def test_a_provenance_record_with_a_newline_is_refused_and_nothing_written(redis_url):
    store = Store(redis_url)
    try:
        try:
            await store.append_provenance({("dev", "401"): ["ok", "two\nlines"]}, keep=5)
        except ValueError as exc:
            assert "newline" in str(exc)
        else:
            raise AssertionError("a record with a newline was accepted")
        assert await store.read_provenance([("dev", "401")]) == {("dev", "401"): []}
    finally:
        await store.close()
