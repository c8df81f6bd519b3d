"""The collector's token buckets (serving/rate_limit.py), on a clock the tests move by hand."""

from __future__ import annotations

import pytest

from serving.rate_limit import RateLimiter, TokenBucket


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_new_bucket_allows_a_burst_then_refuses_with_the_wait():
    bucket = TokenBucket(rate=10.0, burst=50, now=0.0)
    assert bucket.take(50, now=0.0) == 0.0
    # empty: one event needs 1/10 s of refill
    assert bucket.take(1, now=0.0) == pytest.approx(0.1)
    # 25 events need 2.5 s
    assert bucket.take(25, now=0.0) == pytest.approx(2.5)


def test_a_refused_take_takes_nothing():
    bucket = TokenBucket(rate=10.0, burst=50, now=0.0)
    assert bucket.take(40, now=0.0) == 0.0
    assert bucket.take(20, now=0.0) == pytest.approx(1.0)  # 10 left, 20 asked: 10 more = 1 s
    assert bucket.take(10, now=0.0) == 0.0  # the refused 20 did not touch the 10 left


def test_tokens_refill_at_the_rate_up_to_the_burst():
    bucket = TokenBucket(rate=10.0, burst=50, now=0.0)
    assert bucket.take(50, now=0.0) == 0.0
    assert bucket.take(20, now=2.0) == 0.0  # 2 s refilled 20
    assert bucket.take(1, now=2.0) > 0
    # an hour idle refills to the burst, not beyond
    assert bucket.take(50, now=3600.0) == 0.0
    assert bucket.take(1, now=3600.0) == pytest.approx(0.1)


def test_a_clock_stepping_back_adds_nothing():
    bucket = TokenBucket(rate=10.0, burst=50, now=100.0)
    assert bucket.take(50, now=100.0) == 0.0
    assert bucket.take(1, now=50.0) == pytest.approx(0.1)
    assert bucket.take(10, now=101.0) == 0.0  # a second after the latest time seen refills 10


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 10), (-1.0, 10), (10.0, 0), (float("nan"), 10)])
def test_a_rate_and_burst_must_be_positive(rate: float, burst: float):
    with pytest.raises(ValueError, match="above 0"):
        RateLimiter(rate, burst)


def test_each_client_has_its_own_bucket():
    clock = Clock()
    limiter = RateLimiter(rate=5.0, burst=20, clock=clock)
    assert limiter.take("10.0.0.1", 20) == 0.0
    assert limiter.take("10.0.0.1", 5) == pytest.approx(1.0)
    assert limiter.take("10.0.0.2", 20) == 0.0  # another address is not held back by the first
    clock.now += 1.0
    assert limiter.take("10.0.0.1", 5) == 0.0
    assert limiter.take("10.0.0.1", 1) == pytest.approx(0.2)


def test_a_steady_client_gets_the_rate_and_no_more():
    clock = Clock()
    limiter = RateLimiter(rate=100.0, burst=100, clock=clock)
    admitted = 0
    for _ in range(1000):  # 10 events every 10 ms for 10 s: twice the rate
        if limiter.take("c", 10) == 0.0:
            admitted += 10
        clock.now += 0.01
    # the burst, then 100/s for the remaining 9.99 s
    assert admitted == pytest.approx(100 + 100 * 9.99, abs=10)


def test_buckets_that_refilled_are_forgotten():
    clock = Clock()
    limiter = RateLimiter(rate=10.0, burst=10, clock=clock)  # refills from empty in 1 s
    for i in range(100):
        limiter.take(f"10.0.0.{i}", 10)
    assert len(limiter) == 100
    clock.now += 0.5
    limiter.take("busy", 10)  # before a refill period has passed: no sweep yet
    assert len(limiter) == 101
    clock.now += 0.6
    limiter.take("busy", 5)  # the 100 refilled by now and are dropped; "busy" (empty at 0.5) is not
    assert len(limiter) == 1
    # a forgotten client starts over with a full bucket, as it would have had anyway
    assert limiter.take("10.0.0.1", 10) == 0.0
