"""A delivery that meets a stale claim ("possibly sent") settles it, without an operator.

The rule is `sesguard dlq redrive`'s, from its one place (sesguard.ops.dlq `settle` and
`events_pending`); here it runs on the job's next delivery in the send queue, after one
consistent read of its record and, for a stale claim, SES's word on it
(sesguard.aws.seen `ses_word`):

  SES's word for the claim's partner   the record turns "sent" (confirmed_by ses): duplicate
  younger than the settle time         Defer until it has passed
  SES's events not all counted         Defer, look again in `hold_seconds`
  none of these                        take the claim over (conditional on its token: one
                                       delivery wins) and send; logged once
                                       (`possibly_sent_resent`)

Each Defer costs a receive. On the last receive the queue's maxReceiveCount allows
(`max_receive_count`) the job is dead-lettered "possibly sent" with why instead, so SQS
never moves it without a reason, and `dlq redrive` settles it by the same rule.
Why: docs/design.md, "Possibly sent".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sender.intake import claimed_elsewhere, duplicate
from sender.records import Claim, ClaimState, JobRecords, judge_existing
from sesguard.aws import table as t
from sesguard.aws.deadletter import possibly_sent_reason
from sesguard.core.jobs import SendJob
from sesguard.core.partners import utcnow
from sesguard.logging import get_logger
from sesguard.ops.dlq import EventsWatch, Verdict, claim_age, settle
from sesguard.runtime import DeadLetter, Defer, Delivery, Fate, max_receive_count
from sesguard.settings import Settings

log = get_logger(__name__)


def hold_seconds(settle_seconds: float) -> int:
    """How long a job held back by uncounted SES events waits before the next look: a
    quarter of the settle time, 10 s to 5 min (a backlog drains in minutes; each look
    is a receive)."""
    return int(min(300.0, max(10.0, settle_seconds / 4)))


@dataclass
class Settler:
    records: JobRecords
    events: EventsWatch
    settings: Settings
    now: Callable[[], datetime] = utcnow

    async def __call__(self, d: Delivery, job: SendJob, token: str) -> Fate | None:
        """The fate of a delivery whose claim met a stale one; None: the claim is now
        this delivery's, with `token`: send."""
        record = await self.records.read(job.job_id)
        now = self.now()
        if record is None:  # removed meanwhile (a redrive): the next delivery claims it
            return claimed_elsewhere(1.0)
        claim = judge_existing(record, now, self.records.claim_seconds)
        if claim.state is not ClaimState.POSSIBLY_SENT:  # changed since the claim's look
            return self._judged(d, claim)
        evidence = await self.records.ses_word(
            record, str(record.get("partner_id") or job.partner_id)
        )
        limit = self.settings.dlq_settle_seconds
        plan = settle(record, evidence, now, limit, None)
        if plan.verdict is Verdict.RESEND:  # only then are the events queues asked
            plan = settle(record, evidence, now, limit, await self.events.pending())
        claimed_at = record.get("claimed_at")
        if plan.verdict is Verdict.SENT:
            assert evidence is not None
            if plan.token is not None:
                await self.records.confirm(job.job_id, plan.token, evidence)
            d.fields["confirmed_by"] = t.CONFIRMED_BY_SES
            return duplicate(d, None)
        if plan.verdict is Verdict.RESEND:
            assert plan.token is not None
            won = await self.records.take_over(job, plan.token, token, now)
            if won.state is not ClaimState.CLAIMED:
                return self._judged(d, won)
            age = claim_age(record, now)
            log.warning(
                "possibly_sent_resent",
                claimed_at=claimed_at,
                age_seconds=None if age is None else round(age),
                why=plan.why,
            )
            d.patient = True  # deferred before: its first receive says nothing of failures
            d.fields["resent_after"] = "possibly sent"
            return None
        if plan.verdict is Verdict.MANUAL:
            return DeadLetter(possibly_sent_reason(claimed_at, plan.why))
        if plan.verdict is Verdict.WAIT:
            assert plan.ready_at is not None
            wait = (plan.ready_at - now).total_seconds() + 1
        else:
            wait = hold_seconds(limit)
        if d.receive_count >= max_receive_count(self.settings):
            return DeadLetter(possibly_sent_reason(claimed_at, f"{plan.why}; no receives left"))
        seconds = d.visible_after(wait)
        return Defer(seconds, f"possibly sent: {plan.why}; again in {seconds}s")

    @staticmethod
    def _judged(d: Delivery, claim: Claim) -> Fate:
        """A record another delivery changed meanwhile: "sent" is a duplicate, a live
        claim is waited for, a stale one is looked at again in a moment."""
        if claim.state is ClaimState.SENT:
            return duplicate(d, claim.message_id)
        return claimed_elsewhere(claim.retry_after)
