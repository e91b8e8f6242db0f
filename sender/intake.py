"""One send job as the handler tracks it: plain data and pure helpers.

`Phase` tracks how far a delivery got, which decides what a stop must undo (release a
claim SES never saw, or keep one it may have).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import orjson

from sesguard.jobs import JOB_ID_RE, SendJob, parse_job
from sesguard.partners import PARTNER_ID_RE


class Outcome(StrEnum):
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


def job_from_message(body: str, message_id: str) -> SendJob:
    """Validate a message body; a job without job_id gets its SQS MessageId, which stays
    the same across redeliveries, so once-per-job holds for it too."""
    job = parse_job(body)
    if "job_id" not in job.model_fields_set:
        job = job.model_copy(update={"job_id": message_id})
    return job


def ids_for_log(body: str) -> dict[str, str]:
    """partner_id / job_id of a body that failed validation, if they look sane."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(data, dict):
        return {}
    out = {}
    for name, pattern in (("partner_id", PARTNER_ID_RE), ("job_id", JOB_ID_RE)):
        value = data.get(name)
        if isinstance(value, str) and pattern.fullmatch(value):
            out[name] = value
    return out
