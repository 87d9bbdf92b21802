"""Fan-out without sockets: the per-client Outbox (coalescing, order, overflow, batches) and
the Hub (one rendering per audience, rights applied, deltas to the right subscribers)."""

from __future__ import annotations

import json

from gateway.config import parse_config
from gateway.model import Call, CallState, DeviceState, DeviceStatus, Direction
from gateway.panels.engine import Engine
from gateway.panels.rights import Rights
from gateway.server.hub import BATCH_LIMIT, Hub, Outbox


def lamp(key: str, n: int) -> tuple[str, tuple]:
    return json.dumps({"type": "lamp", "member": key, "n": n}), ("p", "team", key)


# -- Outbox ------------------------------------------------------------------------------------


def test_a_newer_lamp_frame_replaces_the_pending_one_and_moves_to_the_end():
    box = Outbox(limit=10)
    for frame, key in (lamp("alice", 1), lamp("bob", 1), lamp("alice", 2)):
        box.put(frame, key)
    frames = [json.loads(f) for f in box.take()]
    assert [(f["member"], f["n"]) for f in frames] == [("bob", 1), ("alice", 2)]
    assert box.take() == []  # taken


def test_replies_keep_their_order_between_lamps():
    box = Outbox(limit=10)
    box.put('{"type":"ok","id":1}')
    box.put(*lamp("alice", 1))
    box.put('{"type":"ok","id":2}')
    box.put('{"type":"ok","id":2}')  # unkeyed frames are never merged
    assert [json.loads(f).get("id") for f in box.take()] == [1, None, 2, 2]


def test_overflow_is_flagged_beyond_the_limit_only():
    box = Outbox(limit=3)
    for i in range(50):  # one lamp changing fast: coalesced, never overflows
        box.put(*lamp("alice", i))
    assert not box.overflowed and len(box.pending) == 1
    for name in ("bob", "carol"):
        box.put(*lamp(name, 0))
    assert not box.overflowed  # 3 pending: at the limit
    box.put(*lamp("dan", 0))
    assert box.overflowed


def test_the_owner_hears_only_when_the_outbox_stops_being_empty():
    calls = []
    box = Outbox(limit=10, on_first=lambda: calls.append(1))
    box.put(*lamp("alice", 1))
    box.put(*lamp("bob", 1))
    assert calls == [1]
    box.take()
    box.put(*lamp("alice", 2))
    assert calls == [1, 1]


def test_batched_take_joins_runs_of_lamps_into_lamps_frames():
    box = Outbox(limit=10_000)
    box.put(*lamp("a", 1))
    box.put(*lamp("b", 1))
    box.put('{"type":"ok","id":9}')
    box.put(*lamp("c", 1))
    frames = [json.loads(f) for f in box.take_batched()]
    assert frames[0] == {"type": "lamps", "changes": [
        {"type": "lamp", "member": "a", "n": 1}, {"type": "lamp", "member": "b", "n": 1}]}
    assert frames[1] == {"type": "ok", "id": 9}
    assert frames[2] == {"type": "lamp", "member": "c", "n": 1}  # alone: as it is
    assert box.pending == {}


def test_batches_hold_at_most_the_batch_limit():
    box = Outbox(limit=10_000)
    for i in range(BATCH_LIMIT + 1):
        box.put(*lamp(f"m{i}", 0))
    first, second = (json.loads(f) for f in box.take_batched())
    assert len(first["changes"]) == BATCH_LIMIT
    assert second["member"] == f"m{BATCH_LIMIT}"


# -- Hub ---------------------------------------------------------------------------------------

CONFIG = parse_config("""
[sources.tapi_bridge]
[[devices]]
id = "201"
number = "201"
[[clients]]
name = "alice"
devices = ["201"]
[[clients]]
name = "bob"
[[groups]]
name = "team"
members = ["alice", "bob"]
[[groups]]
name = "other"
members = ["bob"]
""")

FULL = Rights(numbers="all")
LAMP_ONLY = Rights(calls=False)


class Sub:
    """A subscriber whose socket is not writable now: everything goes to its outbox."""

    def __init__(self, batch: bool = False) -> None:
        self.outbox = Outbox(limit=1000)
        self.batch = batch
        self.ws = type("Ws", (), {"transport": None})()

    def writable(self) -> bool:
        return False

    def frames(self) -> list[dict]:
        return [json.loads(f) for f in self.outbox.take()]


def ringing(seq: int, remote: str = "0301") -> list:
    engine = Engine(CONFIG, config_seq=1)
    call = Call("201/c1", Direction.IN, CallState.RINGING, 10.0, remote, None, None)
    return engine.update_device(DeviceState("201", DeviceStatus.ONLINE, (call,)), seq)


def test_each_audience_gets_the_delta_rendered_with_its_rights():
    hub = Hub(CONFIG)
    full, full2, lamp_only, device_watcher, elsewhere = Sub(), Sub(), Sub(), Sub(), Sub()
    hub.add(full, ("panel", "team"), FULL)
    hub.add(full2, ("panel", "team"), FULL)
    hub.add(lamp_only, ("panel", "team"), LAMP_ONLY)
    hub.add(device_watcher, ("device", "201"), FULL)
    hub.add(elsewhere, ("panel", "other"), FULL)  # alice is not on it
    hub.deliver(ringing(seq=5))

    (f,) = full.frames()
    assert f["type"] == "lamp" and f["panel"] == "team" and f["member"] == "alice"
    assert f["lamp"] == "ringing" and f["seq"] == 5 and "client" not in f
    assert f["calls"][0]["remote"] == "0301"
    assert full2.frames() == [f]  # the same audience: the same frame
    (lo,) = lamp_only.frames()
    assert lo["lamp"] == "ringing" and lo["calls"] == []  # no calls right: the lamp only
    (d,) = device_watcher.frames()
    assert d["device"] == "201" and d["lamp"] == "ringing" and d["seq"] == 5
    assert elsewhere.frames() == []
    assert hub.deliveries == 4 and hub.subscriber_count() == 5


def test_removed_subscribers_get_nothing_and_empty_audiences_go():
    hub = Hub(CONFIG)
    s = Sub()
    hub.add(s, ("panel", "team"), FULL)
    hub.remove(s, ("panel", "team"), FULL)
    hub.remove(s, ("panel", "team"), FULL)  # twice: harmless
    hub.deliver(ringing(seq=5))
    assert s.frames() == [] and hub.audiences(("panel", "team")) == {}


def test_a_slow_subscriber_keeps_only_the_newest_state_of_a_lamp():
    hub = Hub(CONFIG)
    s, batched = Sub(), Sub(batch=True)
    hub.add(s, ("panel", "team"), FULL)
    hub.add(batched, ("panel", "team"), FULL)
    hub.deliver(ringing(seq=5, remote="0301"))
    hub.deliver(ringing(seq=6, remote="0302"))
    (f,) = s.frames()
    assert f["seq"] == 6 and f["calls"][0]["remote"] == "0302"
    assert hub.unbatched_count() == 1


def test_reconfigure_follows_the_panels_members():
    hub = Hub(CONFIG)
    s = Sub()
    hub.add(s, ("panel", "other"), FULL)
    hub.reconfigure(parse_config("""
[sources.tapi_bridge]
[[devices]]
id = "201"
[[clients]]
name = "alice"
devices = ["201"]
[[groups]]
name = "other"
members = ["alice"]
"""))
    hub.deliver(ringing(seq=7))
    (f,) = s.frames()
    assert f["panel"] == "other" and f["member"] == "alice"


def test_subscription_counts_follow_adds_and_removes_however_repeated():
    """The follower sizes its delivery chunks by the subscribers that take one frame per
    change; the counts are kept as subscriptions come and go."""
    hub = Hub(CONFIG)
    a, b = Sub(), Sub(batch=True)
    full, none = Rights(numbers="all"), Rights(numbers="none")
    hub.add(a, ("panel", "team"), full)
    hub.add(a, ("panel", "team"), full)  # the same registration twice counts once
    hub.add(a, ("device", "201"), none)
    hub.add(b, ("panel", "team"), full)
    assert (hub.subscriber_count(), hub.unbatched_count()) == (3, 2)
    hub.remove(a, ("panel", "team"), full)
    hub.remove(a, ("panel", "team"), full)  # already gone: nothing changes
    hub.remove(b, ("panel", "team"), none)  # not registered with these rights
    assert (hub.subscriber_count(), hub.unbatched_count()) == (2, 1)
    hub.remove(b, ("panel", "team"), full)
    hub.remove(a, ("device", "201"), none)
    assert (hub.subscriber_count(), hub.unbatched_count()) == (0, 0)


class _Transport:
    def __init__(self, buffered: int = 0) -> None:
        self.buffered, self.written = buffered, []

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes) -> None:
        self.written.append(data)


class _Ws:
    """What the hub reads of a websockets ServerConnection: its transport and protocol."""

    def __init__(self, buffered: int = 0) -> None:
        from websockets.protocol import OPEN

        self.transport = _Transport(buffered)
        self.protocol = type("P", (), {"state": OPEN, "extensions": []})()
        self.send_in_progress = None


class LiveSub(Sub):
    def __init__(self, batch: bool = False, buffered: int = 0) -> None:
        super().__init__(batch)
        self.ws = _Ws(buffered)

    def written(self) -> list[dict]:
        """The text frames written to the socket (unmasked, as a server sends them)."""
        from websockets.frames import Frame
        from websockets.streams import StreamReader

        reader = StreamReader()
        for chunk in self.ws.transport.written:
            reader.feed_data(chunk)
        reader.feed_eof()
        out = []
        parser = Frame.parse(reader.read_exact, mask=False)
        while True:
            try:
                next(parser)
            except StopIteration as done:
                out.append(json.loads(done.value.data))
                parser = Frame.parse(reader.read_exact, mask=False)
            except EOFError:
                return out


def test_writable_clients_get_the_frame_in_their_socket_the_others_in_their_outbox():
    from gateway.server.hub import WRITE_HIGH_WATER

    hub = Hub(CONFIG)
    live, live2 = LiveSub(), LiveSub()
    congested = LiveSub(buffered=WRITE_HIGH_WATER)  # its socket buffer is full
    queued = LiveSub()
    queued.outbox.put(json.dumps({"type": "ok", "id": 1}))  # a reply still waiting
    batched = LiveSub(batch=True)
    for s in (live, live2, congested, queued, batched):
        hub.add(s, ("panel", "team"), FULL)
    hub.deliver(ringing(seq=7))

    (f,) = live.written()
    assert f["type"] == "lamp" and f["member"] == "alice" and f["seq"] == 7
    assert live2.written() == [f] and live.frames() == []
    # Behind: nothing written past what waits, the lamp joins the outbox (in order).
    assert congested.ws.transport.written == [] and congested.frames() == [f]
    assert queued.ws.transport.written == []
    assert [m["type"] for m in queued.frames()] == ["ok", "lamp"]
    (b,) = batched.written()  # a client that asked for batches: one `lamps` frame
    assert b["type"] == "lamp" and b["seq"] == 7  # (a batch of one is the frame itself)
    assert hub.deliveries == 5
