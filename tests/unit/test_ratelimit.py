"""Token buckets, per key and bounded, with `now` passed in."""

from gateway.ratelimit import KeyedBuckets, TokenBucket


def test_bucket_gives_its_burst_then_its_rate():
    b = TokenBucket(rate=2, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take(0.5)  # one token back after half a second at 2/s
    assert not b.take(0.5)
    assert b.retry_after() == 0.5


def test_one_bucket_per_key_shared_by_everything_under_it():
    kb = KeyedBuckets(rate=1, burst=2)
    assert kb.take("alice", 0.0) and kb.take("alice", 0.0)
    assert not kb.take("alice", 0.0)  # her second and third connection share the budget
    assert kb.take("bob", 0.0)  # another client has its own


def test_keys_are_bounded_and_the_least_recently_used_forgotten():
    kb = KeyedBuckets(rate=1, burst=1, max_keys=100)
    for i in range(10_000):
        kb.take(f"addr{i}", 0.0)
    assert len(kb) == 100


def test_new_limits_apply_to_the_buckets_there_are():
    kb = KeyedBuckets(rate=1, burst=10)
    kb.take("alice", 0.0)
    kb.configure(rate=1, burst=2)
    assert kb.take("alice", 0.0) and kb.take("alice", 0.0)
    assert not kb.take("alice", 0.0)
