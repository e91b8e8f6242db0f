"""One send job: validate -> partner gate -> rate token -> once-per-job claim -> SendEmail.

The handler the sender plugs into the runtime: it returns a fate and never touches SQS.
Each job ends in one outcome (one log line, event "job", with partner_id and job_id,
never the body); this table is their reference:

  sent           SES accepted it: Done, its "sent" record the commit
  held           partner paused: stored in sesguard.aws.held, Done
  duplicate      its job_id was already sent (its record, or SES's word on a stale
                 claim: field `confirmed_by`): Done
  dead_lettered  malformed, unknown partner, rejected by SES, or possibly sent and not
                 settled within the queue's receives (sender.settle)
  deferred       another delivery of the job_id holds a live claim, a stale claim waits
                 for SES's word (sender.settle), the partner's throttle has no room for a
                 while (field `throttle`: rate or quota), or it has its fair share of the
                 rate waiting in this task already: Defer
  retried        DynamoDB/SES/network trouble, or throttling that did not clear: Retry
  returned       the service stopped taking work before the send: GiveBack

Why a job is sent at most once: docs/design.md, "A job id is sent at most once".
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError
from structlog.contextvars import bound_contextvars

from sender.fairshare import FairTokens
from sender.gate import Gate
from sender.intake import (
    Attempt,
    JobOutcome,
    Phase,
    claimed_elsewhere,
    duplicate,
    ids_for_log,
    job_from_message,
)
from sender.records import ClaimState, JobRecords
from sender.ses import Failure, classify_failure, send_params
from sender.settle import Settler
from sender.throttle import Throttles
from sesguard.aws import table as t
from sesguard.aws.clients import Clients
from sesguard.aws.deadletter import REJECTED, UNKNOWN_PARTNER
from sesguard.aws.errors import describe, error_code
from sesguard.aws.held import HeldJobs
from sesguard.aws.store import StoreError
from sesguard.core.backoff import backoff_delay
from sesguard.core.jobs import JobError, SendJob
from sesguard.core.partners import Profile
from sesguard.domain.judgement import Judgement
from sesguard.logging import get_logger
from sesguard.runtime import Aborted, DeadLetter, Defer, Delivery, Done, Fate, GiveBack, Retry
from sesguard.runtime.metrics import ServiceMetrics
from sesguard.runtime.ratelimit import Clock, TokenBucket
from sesguard.settings import Settings

log = get_logger(__name__)


class AfterSend(Protocol):
    """Called with every send SES accepted. Injected by local wiring only: the demo and
    SESGUARD_SIMULATE_EVENTS publish the events SES would (sesguard.local.simulator)."""

    def __call__(self, params: dict[str, Any], message_id: str, /) -> Awaitable[object]: ...


AfterSendFactory = Callable[[Clients, Settings], Awaitable[AfterSend]]

SENT_MEMORY = 10_000  # job_ids this task sent lately: same-batch duplicates need no read
# Errors of our own dependencies (DynamoDB, the network): the job goes back (Retry).
INFRA_ERRORS: tuple[type[BaseException], ...] = (
    BotoCoreError,
    ClientError,
    StoreError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
    OSError,
)


class SendHandler:
    def __init__(
        self,
        clients: Any,
        settings: Settings,
        *,
        gate: Gate,
        held: HeldJobs,
        records: JobRecords,
        settler: Settler,
        bucket: TokenBucket,
        metrics: ServiceMetrics,
        clock: Clock,
        after_send: AfterSend | None = None,
        throttles: Throttles | None = None,
        throttle_attempts: int = 6,
        backoff_base: float = 0.1,
        fair: FairTokens | None = None,
    ) -> None:
        self.clients = clients
        self.settings = settings
        self.gate = gate
        self.held = held
        self.records = records
        self.settler = settler  # a stale claim met: settled here (sender.settle)
        self.bucket = bucket
        self.metrics = metrics
        self.clock = clock
        # SES paused the whole account (sender.account.AccountWatch.trip, set by wiring)
        self.on_account_paused: Callable[[str], None] = lambda _why: None
        self.after_send = after_send
        self.throttles = throttles  # per-partner rate caps and daily quotas (sender.throttle)
        self.throttle_attempts = throttle_attempts
        self.backoff_base = backoff_base
        # The account-rate tokens shared fairly among partners (sender.fairshare); None:
        # first come, first served (the baseline of bench/fairness.py).
        self.fair = fair
        self._claims: dict[str, asyncio.Future[None]] = {}  # job_id -> its delivery's end
        self._sent_here: OrderedDict[str, str] = OrderedDict()  # job_id -> SES MessageId
        self._simulations: set[asyncio.Task[None]] = set()

    async def __call__(self, d: Delivery) -> Fate:
        try:
            job = job_from_message(d.body, d.message_id)
        except JobError as exc:
            d.fields.update(ids_for_log(d.body))
            return DeadLetter(str(exc))
        d.fields.update(partner_id=job.partner_id, job_id=job.job_id)  # the "job" line
        # The unit of work: every line logged while handling this job names it.
        with bound_contextvars(partner_id=job.partner_id, job_id=job.job_id):
            attempt = Attempt(job)
            try:
                return await self._process(d, attempt, job)
            except BaseException:
                # Cancelled (stop grace over), aborted, or a bug: release a claim SES
                # certainly never saw; a claim whose send may be on the wire stays.
                if attempt.phase is Phase.CLAIMED:
                    await self._release(attempt)
                elif attempt.phase is Phase.NEW:
                    await self._give_back(attempt)
                raise

    async def close(self) -> None:
        """Wait for after-send hooks still running (local runs only)."""
        if self._simulations:
            await asyncio.gather(*self._simulations, return_exceptions=True)

    # ---- one job ---------------------------------------------------------------------

    async def _process(self, d: Delivery, a: Attempt, job: SendJob) -> Fate:
        try:
            judgement = await self.gate.check(job.partner_id)
        except INFRA_ERRORS as exc:
            return Retry(f"gate: {describe(exc)}")
        if judgement.unknown:
            return DeadLetter(UNKNOWN_PARTNER)
        if not judgement.admits:
            return await self._hold(d, job, judgement)
        if self.throttles is not None:  # the partner's rate cap: wait here, or Defer
            deferred = await self.throttles.rate(d, job.partner_id, judgement.profile)
            if deferred is not None:
                return deferred

        # One delivery per job_id at a time in this task: a second one (the same job_id
        # twice in a batch) waits for the first instead of finding its claim "sending".
        while (local := self._claims.get(job.job_id)) is not None:
            await d.abortable(asyncio.shield(local))
        if job.job_id in self._sent_here:  # its "sent" record may still be in the finisher
            return duplicate(d, self._sent_here[job.job_id])
        done = asyncio.get_running_loop().create_future()
        self._claims[job.job_id] = done
        try:
            return await self._claim_and_send(d, a, job, judgement.profile)
        finally:
            del self._claims[job.job_id]
            done.set_result(None)

    async def _hold(self, d: Delivery, job: SendJob, judgement: Judgement) -> Fate:
        try:
            await self.held.hold(job, d.sent_at)
        except INFRA_ERRORS as exc:
            return Retry(f"hold: {describe(exc)}")
        self.metrics.add("jobs_held")
        d.outcome = JobOutcome.HELD
        d.fields["reason"] = judgement.reason
        return Done()

    async def _claim_and_send(
        self, d: Delivery, a: Attempt, job: SendJob, profile: Profile | None
    ) -> Fate:
        # The rate token comes before the claim, so a claim's age is the time of one send
        # (plus throttling backoff), not the time spent queueing for the account's rate.
        if (turn := await self._token(d, job, first=True)) is not None:
            return turn
        # Asked again after the wait for a token (a cache hit unless the status epoch
        # moved meanwhile): a partner paused while its jobs waited sends nothing more.
        try:
            judgement = await self.gate.check(job.partner_id)
        except INFRA_ERRORS as exc:
            return Retry(f"gate: {describe(exc)}")
        if not judgement.admits:
            return await self._hold(d, job, judgement)
        if self.throttles is not None:  # the partner's daily quota, right before the claim
            try:
                taken = await self.throttles.take_quota(d, job.partner_id, judgement.profile)
            except INFRA_ERRORS as exc:
                return Retry(f"quota: {describe(exc)}")
            if isinstance(taken, Defer):
                return taken
            a.quota_day = taken
        token = uuid.uuid4().hex
        try:
            # Not cut off at the stop: a claim written but not known here would stay
            # "sending" and make the job "possibly sent" on its next delivery.
            with d.uninterruptible():
                claim = await self.records.claim(job, token)
        except INFRA_ERRORS as exc:
            await self._give_back(a)  # no send was made
            return Retry(f"claim: {describe(exc)}")
        if claim.state is ClaimState.POSSIBLY_SENT:
            # Settled from SES's word; None: the stale claim is ours now (with `token`).
            try:
                with d.uninterruptible():  # a take-over written must be known here
                    settled = await self.settler(d, job, token)
            except INFRA_ERRORS as exc:
                settled = Retry(f"settle: {describe(exc)}")
            if settled is not None:
                await self._give_back(a)  # this delivery sends nothing
                return settled
        elif claim.state is not ClaimState.CLAIMED:
            await self._give_back(a)  # this delivery sends nothing
            if claim.state is ClaimState.SENT:
                if claim.confirmed_by_ses:
                    d.fields["confirmed_by"] = t.CONFIRMED_BY_SES
                return duplicate(d, claim.message_id)
            return claimed_elsewhere(claim.retry_after)
        a.token, a.phase = token, Phase.CLAIMED
        return await self._send(d, a, job, send_params(job, self.settings, profile))

    async def _send(self, d: Delivery, a: Attempt, job: SendJob, params: dict[str, Any]) -> Fate:
        assert a.token is not None
        attempt = 0
        while True:
            if d.aborting:  # stopping, or intake suspended: give back (the claim is released)
                raise Aborted
            if attempt:  # the first attempt's token was taken before the claim
                await self._token(d, job)
            a.phase = Phase.SENDING
            try:
                with d.uninterruptible():
                    resp = await self.clients.ses_send.send_email(**params)
            except Exception as exc:
                kind = classify_failure(exc)
                why = describe(exc)
                if kind is Failure.AMBIGUOUS:
                    # SES may have it: keep the claim (never send twice), return the message
                    return Retry(f"ses: {why} (claim kept)")
                a.phase = Phase.CLAIMED
                if kind is Failure.THROTTLED:
                    attempt += 1
                    rate = self.bucket.throttled()  # the whole task slows down, not this job
                    if attempt >= self.throttle_attempts:
                        await self._release(a)
                        return Retry(f"ses throttled {attempt} times")
                    log.info("job_throttled", attempt=attempt, send_rate=round(rate, 2))
                    pause = backoff_delay(attempt - 1, base=self.backoff_base)
                    await d.abortable(self.clock.sleep(pause))
                    continue
                await self._release(a)
                if kind is Failure.REJECTED:
                    return DeadLetter(f"{REJECTED}: {why}")
                if kind is Failure.ACCOUNT:
                    self.on_account_paused(why)
                    return GiveBack("ses account paused")
                return Retry(f"ses: {why}")
            a.phase = Phase.SENT
            message_id = str(resp.get("MessageId", ""))
            self.metrics.add("jobs_sent")
            self._sent_here[job.job_id] = message_id
            if len(self._sent_here) > SENT_MEMORY:
                self._sent_here.popitem(last=False)
            d.outcome = JobOutcome.SENT
            d.fields["ses_message_id"] = message_id
            if self.after_send is not None:
                self._after_send(params, message_id)
            return Done(commit=self.records.sent_item(job, a.token, message_id))

    def _after_send(self, params: dict[str, Any], message_id: str) -> None:
        """Run the after-send hook in the background: the job is done whatever happens
        to it (local runs publish simulated SES events with it)."""
        assert self.after_send is not None
        hook = self.after_send

        async def run() -> None:
            try:
                await hook(params, message_id)
            except Exception as exc:  # the mail is sent; a failed hook must not resend it
                log.error("simulated_events_failed", error=repr(exc))  # the task has the context

        task = asyncio.create_task(run())
        self._simulations.add(task)
        task.add_done_callback(self._simulations.discard)

    # ---- helpers ---------------------------------------------------------------------

    async def _token(self, d: Delivery, job: SendJob, *, first: bool = False) -> Defer | None:
        """One send's worth of the account rate; raises Aborted when the runtime aborts.

        With fair share, the tokens go round the partners waiting in this task, and a
        job's `first` token may instead be a Defer: its partner already has its share
        waiting here, so the job goes back until about its turn and leaves the hand free
        (docs/design.md, "Fair share of the account rate")."""
        if d.aborting:
            raise Aborted
        if self.fair is None:
            if not self.bucket.try_acquire():
                await d.abortable(self.bucket.acquire())
            return None
        if first:
            seconds = self.fair.admit(job.partner_id, d.receive_count, self._defer_budget(d))
            if seconds is not None:
                return Defer(seconds, f"fair share: partner's turn in {seconds:.0f}s")
        await d.abortable(self.fair.acquire(job.partner_id))
        return None

    def _defer_budget(self, d: Delivery) -> float:
        """Seconds this job may still spend deferred for its turn: a quarter of the outage
        tolerance from its first receive, so a later outage keeps most of its tolerance."""
        spent = 0.0
        if d.first_received_at is not None:
            spent = max(0.0, time.time() - d.first_received_at)
        return self.settings.outage_tolerance_seconds / 4 - spent

    async def _release(self, a: Attempt) -> None:
        """Delete our claim: SES certainly does not have this job."""
        if a.job is None or a.token is None:
            await self._give_back(a)
            return
        job_id, token = a.job.job_id, a.token
        a.token, a.phase = None, Phase.NEW
        try:
            # shielded: a cancelled handler still completes the release
            await asyncio.shield(self.records.release(job_id, token))
        except INFRA_ERRORS as exc:
            # The claim stays: a later delivery finds it stale and settles it from SES's
            # word (sender.settle): safe (never twice), only later.
            log.error("claim_release_failed", error=error_code(exc))
        await self._give_back(a)

    async def _give_back(self, a: Attempt) -> None:
        """Return the daily-quota send this attempt took: SES certainly never got it."""
        if self.throttles is None or a.job is None or a.quota_day is None:
            return
        day, a.quota_day = a.quota_day, None
        await self.throttles.give_back(a.job.partner_id, day)
