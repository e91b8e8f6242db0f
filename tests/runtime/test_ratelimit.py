"""Token bucket, driven by a fake clock: no wall time anywhere."""

from __future__ import annotations

import asyncio

import pytest

from sesguard.runtime.ratelimit import TokenBucket, per_task_rate


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_burst_then_steady_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    for _ in range(5):
        await bucket.acquire()
    assert clock.slept == []  # the burst is free
    start = clock.now
    for _ in range(20):
        await bucket.acquire()
    # 20 more tokens at 10/s take 2 s of (fake) time, give or take float rounding
    assert clock.now - start == pytest.approx(2.0)
    assert all(s == pytest.approx(0.1) for s in clock.slept)


async def test_refills_while_idle_but_never_above_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    for _ in range(3):
        assert bucket.try_acquire()
    assert not bucket.try_acquire()
    clock.now += 0.5  # one token back
    assert bucket.try_acquire()
    assert not bucket.try_acquire()
    clock.now += 3600  # a long idle time refills only up to the burst
    assert bucket.tokens == pytest.approx(3)


async def test_concurrent_waiters_are_served_at_the_rate_in_order() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=4, burst=1, clock=clock)
    order: list[int] = []

    async def take(i: int) -> None:
        await bucket.acquire()
        order.append(i)

    await asyncio.gather(*(take(i) for i in range(9)))
    assert order == list(range(9))
    assert clock.now - 1000.0 == pytest.approx(2.0)  # 1 free + 8 at 4/s


async def test_drain_forgets_saved_tokens() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=100, burst=50, clock=clock)
    bucket.drain()
    assert not bucket.try_acquire()
    await bucket.acquire()
    assert clock.now - 1000.0 == pytest.approx(0.01)


async def test_try_acquire_does_not_jump_the_queue() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1, burst=1, clock=clock)
    await bucket.acquire()
    gate = asyncio.Event()

    async def slow_sleep(seconds: float) -> None:
        await gate.wait()
        clock.now += seconds

    clock.sleep = slow_sleep  # type: ignore[method-assign]
    waiter = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0)
    clock.now += 5  # tokens are there, but a waiter came first
    assert not bucket.try_acquire()
    gate.set()
    await waiter


def test_rate_split_across_tasks_and_bad_values() -> None:
    assert per_task_rate(14, 4) == pytest.approx(3.5)
    with pytest.raises(ValueError):
        per_task_rate(0, 1)
    with pytest.raises(ValueError):
        per_task_rate(10, 0)
    with pytest.raises(ValueError):
        TokenBucket(rate=0)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0.5)
    assert TokenBucket(rate=0.5).burst == 1.0


async def test_set_rate_counts_earned_tokens_at_the_old_rate_then_caps_them() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, clock=clock)  # default burst: one second's worth
    assert bucket.burst == 10
    bucket.drain()
    clock.now += 0.5  # 5 tokens earned at 10/s
    bucket.set_rate(2)
    assert bucket.burst == 2 and bucket.tokens == pytest.approx(2)  # no burst above the new size
    clock.now += 0.5
    assert bucket.tokens == pytest.approx(2)  # full at 2
    bucket.set_rate(20)
    assert bucket.burst == 20 and bucket.tokens == pytest.approx(2)  # raising grants nothing
    clock.now += 0.25
    assert bucket.tokens == pytest.approx(7)  # 2 + 0.25 s at the new rate


async def test_set_rate_keeps_an_explicit_burst_and_never_goes_negative() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=4, burst=3, clock=clock)
    bucket.set_rate(100)
    assert bucket.burst == 3 and bucket.tokens == pytest.approx(3)
    for _ in range(3):
        assert bucket.try_acquire()
    bucket.set_rate(1)
    assert bucket.burst == 3 and bucket.tokens >= 0.0
    with pytest.raises(ValueError):
        bucket.set_rate(0)


async def test_a_waiter_sleeping_at_the_old_rate_waits_longer_after_a_lowering() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=1, clock=clock)
    await bucket.acquire()  # the saved token
    gate = asyncio.Event()
    real_sleep = clock.sleep

    async def held_sleep(seconds: float) -> None:
        await gate.wait()
        await real_sleep(seconds)

    clock.sleep = held_sleep  # type: ignore[method-assign]
    waiter = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0)  # it sleeps 0.1 s, for one token at 10/s
    bucket.set_rate(1)  # now a token takes 1 s
    gate.set()
    await waiter
    # 0.1 s slept at the old rate earned 0.1 token at the new one; 0.9 s more for the rest
    assert clock.now - 1000.0 == pytest.approx(1.0)


async def test_a_throttle_halves_the_rate_in_use_and_it_climbs_back() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=40, clock=clock)
    assert bucket.throttled() == pytest.approx(20)
    assert not bucket.try_acquire()  # saved tokens are gone
    for _ in range(15):  # the other handlers sending at that moment: the same event
        assert bucket.throttled() == pytest.approx(20)
    clock.now += 1.0
    assert bucket.throttled() == pytest.approx(11)  # a later throttle halves again (22 / 2)
    start = clock.now
    for _ in range(5):
        await bucket.acquire()
    # ~11/s (a little more as it climbs back), not the share's 40/s
    assert 0.3 < clock.now - start <= 0.5
    clock.now += 20  # 1/20 of the rate regained per second: whole again
    assert bucket.effective_rate == pytest.approx(40)


async def test_repeated_throttles_stop_at_a_floor_and_a_new_share_keeps_the_slowdown() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=32, clock=clock)
    for _ in range(10):  # one throttle a second: each halves what climbed back since
        clock.now += 1.0
        bucket.throttled()
    assert bucket.effective_rate == pytest.approx(2)  # 1/16 of 32, never nothing
    bucket.set_rate(16)  # another sender task started: the share halves
    assert bucket.effective_rate == pytest.approx(1)  # still slowed down
    clock.now += 5
    assert bucket.effective_rate == pytest.approx(16 * (1 / 16 + 5 / 20))
