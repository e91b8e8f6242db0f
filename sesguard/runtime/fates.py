"""What a handler says becomes of its message; the runtime carries it out.

A handler never touches SQS: it returns one of these, and the runtime deletes, returns or
dead-letters the message in batches (sesguard.runtime.consumer). Raising is allowed too:
an unexpected exception is logged and treated as Retry, so a bug never loses a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Done:
    """Finished: delete the message (after writing `commit`, if the service gave one)."""

    commit: Any = None


@dataclass(frozen=True)
class DeadLetter:
    """A permanent failure of the message itself (malformed, rejected, possibly sent, too
    large): to `<queue>-dlq` at once, original body plus `reason` in `sesguard_reason`."""

    reason: str


@dataclass(frozen=True)
class Retry:
    """A failure that is not the message's fault (a dependency down, throttling that did
    not clear, an internal error): back to the queue after `after` seconds, or after the
    backoff for its receive count (sesguard.runtime.retry). Never dead-lettered within the
    outage tolerance; past it, dead-lettered with `reason`."""

    reason: str
    after: float | None = None


@dataclass(frozen=True)
class GiveBack:
    """Not tried, not failed (the service is stopping or its intake is suspended): visible
    again after `after` seconds, or when the runtime decides (at once when stopping, after
    the message's backoff while a dependency is down)."""

    reason: str = ""
    after: float | None = None


@dataclass(frozen=True)
class Defer:
    """Look at it again in `seconds` (e.g. another delivery holds this job's claim)."""

    seconds: float
    reason: str = ""


Fate = Done | DeadLetter | Retry | GiveBack | Defer

# The outcome label (log line, counters) of each fate when the handler names none.
DEFAULT_OUTCOME: dict[type[Any], str] = {
    Done: "done",
    DeadLetter: "dead_lettered",
    Retry: "retried",
    GiveBack: "returned",
    Defer: "deferred",
}
