"""One send job as the handler tracks it: plain data and pure helpers.

`Phase` tracks how far a delivery got, which decides what a stop must undo (release a
claim SES never saw, or keep one it may have).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sesguard.core.jobs import SendJob, ids_for_log, parse_job
from sesguard.runtime import Defer, Delivery, Done

__all__ = [
    "Attempt",
    "JobOutcome",
    "Phase",
    "claimed_elsewhere",
    "duplicate",
    "ids_for_log",
    "job_from_message",
]


class JobOutcome(StrEnum):
    """What a finished (Done) job became, as logged and counted (event "job"). The other
    outcomes are the runtime's names for the other fates: dead_lettered, retried,
    returned, deferred (sesguard.runtime.fates)."""

    SENT = "sent"
    HELD = "held"
    DUPLICATE = "duplicate"


class Phase(StrEnum):
    NEW = "new"
    CLAIMED = "claimed"  # our claim exists, SES has not been asked
    SENDING = "sending"  # SendEmail is on the wire
    SENT = "sent"  # SES accepted it


@dataclass(eq=False)
class Attempt:
    """This delivery's job and claim, as far as it got."""

    job: SendJob | None = None
    token: str | None = None
    phase: Phase = Phase.NEW
    quota_day: str | None = None  # a send taken from the partner's daily quota for that day


def job_from_message(body: str, message_id: str) -> SendJob:
    """Validate a message body; a job without job_id gets its SQS MessageId, which stays
    the same across redeliveries, so once-per-job holds for it too."""
    job = parse_job(body)
    if "job_id" not in job.model_fields_set:
        job = job.model_copy(update={"job_id": message_id})
    return job


def duplicate(d: Delivery, message_id: str | None) -> Done:
    """The job was sent already: this delivery finishes with nothing sent."""
    d.outcome = JobOutcome.DUPLICATE
    if message_id:
        d.fields["ses_message_id"] = message_id
    return Done()


def claimed_elsewhere(retry_after: float) -> Defer:
    """Another delivery holds a live claim: look again once it may have finished."""
    seconds = max(1, int(retry_after + 0.999))
    return Defer(seconds, f"job_id claimed by another delivery; again in {seconds}s")
