"""A token bucket for the SES account send rate, with an injectable clock.

SES enforces one maximum send rate for the whole account. Each sender task takes
`account rate / task count`, so N tasks together stay under it without talking to each
other. The clock is injectable so tests drive time by hand instead of sleeping.
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


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; `acquire()` waits for one.

    Waiters are served in arrival order (one lock), so a steady stream of jobs cannot
    starve an early one. The bucket starts full: a task that was idle may send a burst.
    """

    def __init__(self, rate: float, burst: float | None = None, clock: Clock | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(1.0, self.rate)
        if self.burst < 1:
            raise ValueError("burst must allow at least one token")
        self.clock: Clock = clock or SystemClock()
        self._tokens = self.burst
        self._stamp = self.clock.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self.clock.monotonic()
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)

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
                await self.clock.sleep(max(_EPSILON, (1 - self._tokens) / self.rate))

    def drain(self) -> None:
        """Forget saved-up tokens: after SES says "slow down", no burst follows."""
        self._refill()
        self._tokens = min(self._tokens, 0.0)


def per_task_rate(account_rate: float, tasks: int) -> float:
    """Each of `tasks` sender tasks gets an equal share of the account's rate."""
    if account_rate <= 0 or tasks < 1:
        raise ValueError("account rate must be positive and tasks at least 1")
    return account_rate / tasks
