"""Event-loop lag: how late the loop runs what is due, the measure of a blocked loop.

A task sleeps `interval` seconds over and over; whatever it wakes up later than asked is
time the loop spent on something that did not yield (parsing a huge chunk, say). The
runtime reports the worst lag of each reporting interval as the `event_loop_lag_seconds`
metric and as `loop_lag_max_ms` in its counters line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class LoopLag:
    def __init__(self, interval: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._worst = 0.0

    def record(self, lag: float) -> None:
        self._worst = max(self._worst, lag)

    def take_worst(self) -> float:
        """The worst lag since the last call, in seconds (and start over)."""
        worst, self._worst = self._worst, 0.0
        return worst

    def lag_of(self, asked: float, started: float, woke: float) -> float:
        """How late a sleep of `asked` seconds that started at `started` woke up (pure)."""
        return max(0.0, woke - started - asked)

    async def run(self) -> None:
        while True:
            started = self.clock()
            await asyncio.sleep(self.interval)
            self.record(self.lag_of(self.interval, started, self.clock()))
