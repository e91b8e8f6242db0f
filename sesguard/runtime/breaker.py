"""A circuit breaker per dependency: pure state, no I/O, no clock of its own.

CLOSED: calls flow; each DOWN answer (sesguard.aws.errors) adds to a count of
consecutive failures, any UP answer resets it, THROTTLED changes nothing. At `threshold`
consecutive failures the breaker OPENS: the service stops taking work, gives back what
it holds, and probes the dependency with one cheap call after `probe_delay()` seconds
(doubling up to `probe_cap` while probes keep failing). The first probe that gets an
answer CLOSES it again. While open, ordinary calls do not close it (a slow call
finishing late proves little); only a probe does, so recovery is one decision in one
place (sesguard.runtime.dependencies does the I/O).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sesguard.aws.errors import Health
from sesguard.core.backoff import backoff_ceiling


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"


@dataclass
class Breaker:
    name: str
    threshold: int = 5
    probe_first: float = 1.0
    probe_cap: float = 30.0
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0  # consecutive DOWN answers (while closed)
    opened_at: float | None = None
    probes_failed: int = 0
    last_error: str = ""

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError("threshold must be at least 1")

    @property
    def is_open(self) -> bool:
        return self.state is BreakerState.OPEN

    def observe(self, health: Health, now: float, error: str = "") -> bool:
        """One call's outcome; True when this one opened the breaker."""
        if health is Health.THROTTLED:
            return False
        if health is Health.UP:
            if not self.is_open:
                self.failures = 0
            return False
        self.last_error = error or self.last_error
        if self.is_open:
            return False
        self.failures += 1
        if self.failures < self.threshold:
            return False
        self.state = BreakerState.OPEN
        self.opened_at = now
        self.probes_failed = 0
        return True

    def probe_delay(self) -> float:
        """Seconds until the next probe: `probe_first`, doubling while probes fail."""
        return backoff_ceiling(self.probes_failed, self.probe_first, self.probe_cap)

    def probed(self, health: Health, now: float, error: str = "") -> bool:
        """A probe's outcome while open; True when it closed the breaker."""
        if not self.is_open:
            return False
        if health is Health.DOWN:
            self.probes_failed += 1
            self.last_error = error or self.last_error
            return False
        # UP, or THROTTLED (it answered): the dependency is there again.
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.probes_failed = 0
        return True

    def open_for(self, now: float) -> float:
        return now - self.opened_at if self.is_open and self.opened_at is not None else 0.0
