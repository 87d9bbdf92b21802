"""Rate limits, pure: token buckets with `now` passed in.

:class:`KeyedBuckets` holds one bucket per key (a client name, an address) and never more
than `max_keys` of them: a full bucket is the same as no bucket, so the least recently used
ones are forgotten first and a flood of new keys cannot grow memory without bound.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["TokenBucket", "KeyedBuckets"]


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; `now` passed in."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, now

    def take(self, now: float, cost: float = 1.0) -> bool:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until one token is there again."""
        return max(0.0, (1.0 - self.tokens) / self.rate)


class KeyedBuckets:
    """One token bucket per key, shared by everything done under that key (every
    connection of one client, say), bounded in number."""

    __slots__ = ("rate", "burst", "max_keys", "_buckets")

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, now: float, cost: float = 1.0) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now, cost)

    def configure(self, rate: float, burst: float) -> None:
        """New limits (a configuration reload), for the buckets there are too."""
        if (rate, burst) == (self.rate, self.burst):
            return
        self.rate, self.burst = rate, burst
        for bucket in self._buckets.values():
            bucket.rate, bucket.burst = rate, burst
            bucket.tokens = min(bucket.tokens, burst)

    def retry_after(self, key: str) -> float:
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.retry_after()

    def __len__(self) -> int:
        return len(self._buckets)
