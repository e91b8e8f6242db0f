"""A circuit breaker per dependency: pure state, no I/O, no clock of its own.

CLOSED -> OPEN on `threshold` consecutive DOWN answers; a probe's answer -> HALF_OPEN; the
first real call that succeeds -> CLOSED (sesguard.runtime.dependencies does the I/O). Why
a probe alone never closes it: docs/design.md, "Circuit breakers".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sesguard.aws.errors import Health
from sesguard.core.backoff import backoff_ceiling


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"  # a probe answered; trial calls decide


class Change(StrEnum):
    """What one observed call did to the breaker (None from `observe`: nothing)."""

    OPENED = "opened"  # closed -> open: the outage begins
    REOPENED = "reopened"  # half-open -> open: the trial failed, the outage goes on
    CLOSED = "closed"  # half-open -> closed: a real call succeeded, the outage is over


@dataclass
class Breaker:
    name: str
    threshold: int = 5
    probe_first: float = 1.0
    probe_cap: float = 30.0
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0  # consecutive DOWN answers (while closed)
    opened_at: float | None = None  # when the outage began (kept through re-openings)
    probes_failed: int = 0  # probes that failed, plus trials that failed, this outage
    last_error: str = ""

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError("threshold must be at least 1")

    @property
    def is_open(self) -> bool:
        return self.state is BreakerState.OPEN

    @property
    def is_closed(self) -> bool:
        return self.state is BreakerState.CLOSED

    def observe(self, health: Health, now: float, error: str = "") -> Change | None:
        """One call's outcome; what it changed, if anything."""
        if health is Health.THROTTLED:
            return None
        if health is Health.UP:
            if self.state is BreakerState.HALF_OPEN:
                self.state = BreakerState.CLOSED
                self.failures = 0
                self.probes_failed = 0
                return Change.CLOSED
            if self.is_closed:
                self.failures = 0
            return None
        self.last_error = error or self.last_error
        if self.state is BreakerState.HALF_OPEN:
            self.state = BreakerState.OPEN
            self.probes_failed += 1  # the probe's answer was not enough: wait longer
            return Change.REOPENED
        if self.is_open:
            return None
        self.failures += 1
        if self.failures < self.threshold:
            return None
        self.state = BreakerState.OPEN
        self.opened_at = now
        self.probes_failed = 0
        return Change.OPENED

    def probe_delay(self) -> float:
        """Seconds until the next probe: `probe_first`, doubling while probes fail."""
        return backoff_ceiling(self.probes_failed, self.probe_first, self.probe_cap)

    def probed(self, health: Health, now: float, error: str = "") -> bool:
        """A probe's outcome while open; True when it made the breaker half-open."""
        if not self.is_open:
            return False
        if health is Health.DOWN:
            self.probes_failed += 1
            self.last_error = error or self.last_error
            return False
        # UP, or THROTTLED (it answered): the dependency is there; a real call decides.
        self.state = BreakerState.HALF_OPEN
        return True

    def open_for(self, now: float) -> float:
        return 0.0 if self.is_closed or self.opened_at is None else now - self.opened_at
