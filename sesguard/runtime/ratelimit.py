"""A token bucket for one sender task's share of the SES account send rate (injectable clock).

`set_rate` is how sesguard.runtime.leases changes the share; `throttled()` backs off when
SES says "slow down" (additive increase, multiplicative decrease). See docs/design.md,
"Rate sharing across sender tasks" and "A job id is sent at most once" (step 5).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds plus a way to wait; the real one is `SystemClock`."""

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# Float slack: after sleeping exactly (1 - tokens) / rate, the refill can land a hair
# below 1.0; without slack a fake clock (or a large monotonic value) would spin.
_EPSILON = 1e-9
SLOWEST = 1 / 16  # the lowest fraction of its rate a throttled bucket falls to
RECOVERY_PER_SECOND = 1 / 20  # fraction of the rate regained per second after a throttle
THROTTLE_EVENT_SECONDS = 1.0  # throttles this close to a halving are the same event


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; `acquire()` waits for one.

    Without an explicit `burst` the bucket saves up `burst_seconds` of its rate (one
    second by default, at least one token), and `set_rate` keeps it so; an explicit
    `burst` is a fixed number of tokens.
    Waiters are served in arrival order (one lock), so a steady stream of jobs cannot
    starve an early one. The bucket starts full: a task that was idle may send a burst.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Clock | None = None,
        burst_seconds: float = 1.0,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self._burst_seconds = burst_seconds
        self.burst = float(burst) if burst is not None else max(1.0, self.rate * burst_seconds)
        if self.burst < 1:
            raise ValueError("burst must allow at least one token")
        self._burst_follows_rate = burst is None
        self.clock: Clock = clock or SystemClock()
        self._tokens = self.burst
        self._stamp = self.clock.monotonic()
        self._lock = asyncio.Lock()
        self._share = 1.0  # the fraction of `rate` in use (below 1 after a throttle)
        self._halved_at: float | None = None

    @property
    def effective_rate(self) -> float:
        """Tokens per second now: `rate`, or less while recovering from a throttle."""
        self._refill()
        return self.rate * self._share

    def _refill(self) -> None:
        now = self.clock.monotonic()
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        # earned at the share in use when the interval began: never more than allowed
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate * self._share)
        self._share = min(1.0, self._share + elapsed * RECOVERY_PER_SECOND)

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def try_acquire(self) -> bool:
        """Take a token if one is there now and nobody is queued for one; never waits."""
        if self._lock.locked():
            return False
        self._refill()
        if self._tokens >= 1 - _EPSILON:
            self._tokens -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait until a token is available, then take it."""
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1 - _EPSILON:
                    self._tokens -= 1
                    return
                rate = self.rate * self._share
                await self.clock.sleep(max(_EPSILON, (1 - self._tokens) / rate))

    def set_rate(self, rate: float) -> None:
        """Change the rate from now on (a default burst follows it: one second's worth).

        Tokens earned so far are counted at the old rate first, so a change never grants
        the same time twice; then they are capped at the new burst (lowering the rate never
        leaves a burst saved at the old size) and never negative. A waiter sleeping at the
        old rate re-checks when it wakes: a lower rate makes it wait longer, never less.
        """
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._refill()
        self.rate = float(rate)
        if self._burst_follows_rate:
            self.burst = max(1.0, self.rate * self._burst_seconds)
        self._tokens = max(0.0, min(self.burst, self._tokens))

    def drain(self) -> None:
        """Forget saved-up tokens: no burst follows."""
        self._refill()
        self._tokens = min(self._tokens, 0.0)

    def throttled(self) -> float:
        """SES said "slow down": halve the rate in use (not below SLOWEST of it) and
        forget saved tokens; returns the rate now in use. It climbs back by itself."""
        self.drain()
        now = self.clock.monotonic()
        if self._halved_at is None or now - self._halved_at >= THROTTLE_EVENT_SECONDS:
            self._halved_at = now
            self._share = max(SLOWEST, self._share / 2)
        return self.rate * self._share


def per_task_rate(account_rate: float, tasks: int) -> float:
    """Each of `tasks` sender tasks gets an equal share of the account's rate."""
    if account_rate <= 0 or tasks < 1:
        raise ValueError("account rate must be positive and tasks at least 1")
    return account_rate / tasks
