"""When a message that failed comes back, and when it has failed for too long (pure).

`max_receive_count` is the one function bootstrap, CloudFormation (its mapping is checked
against it) and the services use. See docs/design.md,
"Transient failures and the outage tolerance".
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from sesguard.core.backoff import spaced_delay, spaced_floor
from sesguard.settings import Settings

RECEIVE_SLACK = 3  # receives without a backoff: SIGTERM give-backs, crashes, account pauses
# Receives the sender's fair share may spend deferring a job to its turn (sender.fairshare):
# counted apart, so deferring never uses up the slack nor reaches the redrive.
FAIR_DEFERS = 2
MAX_VISIBILITY = 43200  # SQS's limit, seconds
SQS_MAX_RECEIVE_COUNT = 1000  # SQS's limit for a redrive policy


@dataclass(frozen=True)
class RetryPolicy:
    tolerance: float
    base: float = 1.0
    cap: float = 300.0
    probe_first: float = 1.0
    probe_cap: float = 30.0

    @classmethod
    def for_tolerance(cls, tolerance: float) -> RetryPolicy:
        """Backoff capped at a quarter of the tolerance (1 s .. 5 min), probes at most
        a tenth of it apart (1 s .. 30 s)."""
        return cls(
            tolerance=tolerance,
            cap=min(300.0, max(1.0, tolerance / 4)),
            probe_cap=min(30.0, max(1.0, tolerance / 10)),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls.for_tolerance(settings.outage_tolerance_seconds)

    def delay(self, receive_count: int, rng: random.Random | None = None) -> int:
        """Seconds a message stays hidden after failing on its `receive_count`-th receive
        (SQS takes whole seconds)."""
        seconds = spaced_delay(max(1, receive_count) - 1, self.base, self.cap, rng)
        return min(MAX_VISIBILITY, max(1, math.ceil(seconds)))

    @property
    def receives_to_cover(self) -> int:
        """The least n such that n receives, each after a retry, span the tolerance."""
        total, receives = 0.0, 1
        while total < self.tolerance:
            total += spaced_floor(receives - 1, self.base, self.cap)
            receives += 1
        return receives

    def past_tolerance(
        self, first_received_at: float | None, receive_count: int, now: float
    ) -> bool:
        """Has this message been failing for longer than the tolerance? `first_received_at`
        and `now` are epoch seconds; without the first receive time, the receive count
        decides."""
        if first_received_at is not None:
            return now - first_received_at >= self.tolerance
        return receive_count >= self.receives_to_cover


def max_receive_count(settings: Settings) -> int:
    """The queues' redrive maxReceiveCount for these settings (see the module docstring)."""
    derived = RetryPolicy.from_settings(settings).receives_to_cover + RECEIVE_SLACK + FAIR_DEFERS
    return min(SQS_MAX_RECEIVE_COUNT, max(settings.dlq_max_receives, derived))
