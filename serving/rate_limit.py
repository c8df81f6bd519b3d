"""Token buckets per client address: the collector's rate limit.

Each client may send `rate` events per second on average and up to `burst` at once. A request
costs as many tokens as it carries events; a request the bucket cannot pay for is refused
whole (nothing is taken) and told how long to wait. The clock is injectable so that tests
advance time instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """`burst` tokens at most, refilled at `rate` per second."""

    __slots__ = ("rate", "burst", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float):
        if not rate > 0 or not burst > 0:
            raise ValueError(f"a token bucket needs a rate and a burst above 0, got rate={rate}, burst={burst}")
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)  # a new client may send a burst at once
        self.updated = now

    def refill(self, now: float) -> None:
        # max(): a clock that steps back (it should not: the default is monotonic) adds nothing
        elapsed = max(now - self.updated, 0.0)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = max(now, self.updated)

    def take(self, cost: float, now: float) -> float:
        """Take `cost` tokens when there are as many; return 0.0 then, else the seconds until there
        would be (nothing is taken). A cost above the burst can never be paid: its wait is what
        the burst's refill from empty takes, plus the excess, so callers should refuse such a
        request outright (the collector's batch limit is far below the default burst)."""
        self.refill(now)
        if cost <= self.tokens:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate

    def is_full(self, now: float) -> bool:
        """Full again: indistinguishable from a new bucket, so it can be forgotten."""
        return self.tokens + max(now - self.updated, 0.0) * self.rate >= self.burst


class RateLimiter:
    """A TokenBucket per key (the client's address), thread-safe.

    Buckets that have refilled to the burst are dropped (a new one starts full, so nothing
    changes for the client) at most once per refill period, which keeps memory bounded by the
    clients seen in the last burst/rate seconds.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        TokenBucket(rate, burst, 0.0)  # refuse a bad rate or burst here, not on the first request
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()
        self._refill_seconds = burst / rate
        self._swept = clock()

    def take(self, key: str, cost: float) -> float:
        """0.0 when `key` may send `cost` events now (they are counted), else the seconds to wait."""
        with self._lock:
            now = self._clock()
            if now - self._swept >= self._refill_seconds:
                self._sweep(now)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            return bucket.take(cost, now)

    def _sweep(self, now: float) -> None:
        self._buckets = {key: b for key, b in self._buckets.items() if not b.is_full(now)}
        self._swept = now

    def __len__(self) -> int:
        return len(self._buckets)
