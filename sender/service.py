"""The send service: SQS send-jobs -> sender.handler -> SES, on the consumer runtime.

Wiring only: the runtime (docs/design.md, "3. The consumer runtime"), sender.handler,
sender.account, the breakers on SES (`Clients.ses_send`; probe GetAccount) and DynamoDB
(probe GetItem), the "sent" record as commit, and the shared send rate (`_send_rate`:
docs/design.md, "Rate sharing across sender tasks"). Exit codes: docs/operating.md,
"Exit codes".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sender.account import PROBE_SECONDS, AccountWatch
from sender.fairshare import FairPlan, FairTokens
from sender.gate import Gate
from sender.handler import INFRA_ERRORS, AfterSendFactory, SendHandler
from sender.rate import resolve_send_rate
from sender.records import JobRecords
from sender.settle import Settler
from sender.throttle import Throttles
from sesguard.aws.batching import SQS_BATCH
from sesguard.aws.clients import Clients
from sesguard.aws.errors import describe
from sesguard.aws.held import HeldJobs
from sesguard.aws.lifecycle import Publisher
from sesguard.aws.store import PartnerStore
from sesguard.core.exitcodes import ExitCode
from sesguard.core.partners import utcnow
from sesguard.domain.judgement import PartnerJudge
from sesguard.logging import get_logger
from sesguard.ops.dlq import EventsWatch
from sesguard.runtime import (
    Consumer,
    ConsumerConfig,
    Dependency,
    RetryPolicy,
    StopCause,
    queue_urls,
)
from sesguard.runtime.leases import RateShare
from sesguard.runtime.metrics import ServiceMetrics
from sesguard.runtime.ratelimit import Clock, SystemClock, TokenBucket
from sesguard.settings import Settings

log = get_logger(__name__)

ABANDON_SECONDS = 10.0  # after the grace: how long sends already on the wire may take


class SenderService:
    def __init__(
        self,
        clients: Clients,
        settings: Settings,
        *,
        drain: bool = False,
        clock: Clock | None = None,
        bucket: TokenBucket | None = None,
        wait_seconds: int | None = None,
        throttle_attempts: int = 6,
        backoff_base: float = 0.1,
        linger: float = 0.05,
        account_probe_seconds: float = PROBE_SECONDS,
        retry: RetryPolicy | None = None,
        stall_seconds: float = 600.0,
        breaker_threshold: int = 5,
        after_send: AfterSendFactory | None = None,
        now: Callable[[], datetime] = utcnow,
        fair_share: bool = True,
    ) -> None:
        self.clients = clients
        self.settings = settings
        self.drain = drain
        self.clock = clock or SystemClock()
        self.bucket = bucket
        self.wait_seconds = wait_seconds if wait_seconds is not None else (1 if drain else 20)
        self.throttle_attempts = throttle_attempts
        self.backoff_base = backoff_base
        self.linger = linger
        self.account_probe_seconds = account_probe_seconds
        self.retry = retry or RetryPolicy.from_settings(settings)
        self.stall_seconds = stall_seconds
        self.breaker_threshold = breaker_threshold
        self.store = PartnerStore.from_settings(clients.dynamodb, settings)
        judge = PartnerJudge.standard(
            self.store, clients.sesv2, settings, Publisher.from_clients(clients, settings), now
        )
        # Per-partner rate caps and daily quotas; its share follows the account rate's.
        self.throttles = Throttles(
            self.store, judge.transitions, 1 / settings.sender_tasks, self.clock, now
        )
        self.gate = Gate(judge, settings.gate_cache_seconds, clock=self.clock.monotonic)
        # Local wiring only (the demo, SESGUARD_SIMULATE_EVENTS): builds the hook that runs
        # after every accepted send (sender.handler.AfterSend).
        self.after_send = after_send
        # Tokens shared fairly among partners (sender.fairshare); off: first come, first
        # served, the baseline bench/fairness.py compares with.
        self.fair_share = fair_share
        self.fair: FairTokens | None = None
        self.held = HeldJobs.from_clients(clients, settings)
        self.records = JobRecords(
            clients.dynamodb,
            settings.table,
            settings.job_record_days,
            float(settings.visibility_timeout),
        )
        # A delivery that meets a stale claim settles it (sender.settle); the events
        # queues' answer is shared by the task's deliveries for a few seconds.
        self.settler = Settler(
            self.records,
            EventsWatch(clients.sqs, settings, clock=self.clock.monotonic),
            settings,
            now,
        )
        self.tally: Counter[str] = Counter()
        self.metrics = ServiceMetrics("sender")
        self.consumer: Consumer | None = None
        self.share: RateShare | None = None  # None when a bucket was passed in
        self._stop_why: str | None = None
        self._pauses_reported = 0

    def stop(self, why: str = "stop") -> None:
        """Begin a graceful stop (signal handlers call this)."""
        if self.consumer is not None:
            self.consumer.stop(why)
        else:
            self._stop_why = why

    @property
    def in_flight(self) -> int:
        return self.consumer.in_flight if self.consumer is not None else 0

    async def run(self) -> int:
        try:
            queue_url, dlq_url = await queue_urls(self.clients.sqs, self.settings.send_queue)
            bucket = await self._send_rate()
            after_send = None
            if self.after_send is not None:
                after_send = await self.after_send(self.clients, self.settings)
        except INFRA_ERRORS as exc:
            log.error(
                "sender_setup_failed",
                error=describe(exc),
                hint="run `sesguard bootstrap` and check AWS credentials/endpoint",
            )
            return ExitCode.FAILED
        if self.fair_share:
            room = min(SQS_BATCH, self.settings.concurrency)
            plan = FairPlan(hands=self.settings.concurrency, room=room)
            self.fair = FairTokens(bucket, plan, self.clock)
        handler = SendHandler(
            self.clients,
            self.settings,
            gate=self.gate,
            held=self.held,
            records=self.records,
            settler=self.settler,
            bucket=bucket,
            metrics=self.metrics,
            clock=self.clock,
            after_send=after_send,
            throttles=self.throttles,
            throttle_attempts=self.throttle_attempts,
            backoff_base=self.backoff_base,
            fair=self.fair,
        )
        consumer = self.consumer = Consumer(
            self.clients.sqs,
            ConsumerConfig.for_service(
                "sender",
                self.settings,
                queue_url,
                dlq_url,
                retry=self.retry,
                drain=self.drain,
                wait_seconds=self.wait_seconds,
                abandon_seconds=ABANDON_SECONDS,
                linger=self.linger,
                stall_seconds=self.stall_seconds,
                breaker_threshold=self.breaker_threshold,
                log_event="job",
            ),
            handler,
            commit=self.records.write_sent,
            dependencies=self._dependencies(),
            metrics=self.metrics,
            tally=self.tally,
            clock=self.clock,
            counters=self._counters,
        )
        account = AccountWatch(
            self.clients.sesv2, consumer, drain=self.drain, probe_seconds=self.account_probe_seconds
        )
        handler.on_account_paused = account.trip
        if self._stop_why is not None:
            consumer.stop(self._stop_why)
        log.info(
            "sender_started",
            queue=self.settings.send_queue,
            drain=self.drain,
            concurrency=self.settings.concurrency,
            outage_tolerance_seconds=self.retry.tolerance,
        )
        follow = asyncio.create_task(
            self.gate.follow(self.store.status_epoch, self.settings.status_poll_seconds),
            name="status-epoch",
        )
        try:
            cause = await consumer.run()
        finally:
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow
            await account.close()
            await handler.close()
            if self.fair is not None:
                await self.fair.close()
            if self.share is not None:  # after the last send: the others take the share
                await self.share.stop()
        if cause is StopCause.ENDED and account.ended_run:
            return ExitCode.ACCOUNT_PAUSED
        return ExitCode.FAILED if cause is StopCause.GAVE_UP else ExitCode.OK

    async def _send_rate(self) -> TokenBucket:
        """This task's share of the account's SES send rate (a bucket passed in wins).

        The live sender tasks share the account's rate through their leases: a task starts
        sending only once the others have counted it, and follows every later change (a
        task started, stopped or crashed). The bucket starts empty, so a newcomer never
        spends a burst saved up before it was counted."""
        if self.bucket is None:
            account_rate, source = await resolve_send_rate(self.clients.sesv2, self.settings)
            ttl = self.settings.sender_lease_seconds
            share = self.share = RateShare(
                self.clients.dynamodb,
                self.settings.table,
                account_rate,
                self.settings.sender_tasks,
                renew_seconds=ttl / 3,
                ttl_seconds=ttl,
            )
            rate = await share.start()
            self.bucket = TokenBucket(rate, clock=self.clock)
            self.bucket.drain()
            share.subscribe(self.bucket.set_rate)
            # A partner's cap is split the way the account rate is: this task's fraction.
            self.throttles.set_fraction(rate / account_rate)
            share.subscribe(lambda r: self.throttles.set_fraction(r / account_rate))
            log.info(
                "send_rate",
                account_rate=account_rate,
                source=source,
                task_rate=rate,
                tasks=share.tasks,
                fallback_tasks=self.settings.sender_tasks,
            )
        return self.bucket

    def _dependencies(self) -> list[Dependency]:
        """What the handler calls, each with one cheap probe the task role may make. The
        SES breaker judges the jobs' SendEmail calls (`ses_send`), not GetAccount."""
        sesv2 = self.clients.sesv2

        async def ses_probe() -> object:
            return await sesv2.get_account()

        return [
            Dependency("ses", self.clients.ses_send, ses_probe, "SESv2 GetAccount"),
            Dependency("dynamodb", self.clients.dynamodb, self.store.probe, "DynamoDB GetItem"),
        ]

    def _counters(self) -> dict[str, Any]:
        if self.gate.pauses > self._pauses_reported:
            self.metrics.add("partners_paused", self.gate.pauses - self._pauses_reported)
            self._pauses_reported = self.gate.pauses
        counters: dict[str, Any] = {
            "gate_reads": self.gate.reads,
            "partners_paused": self.gate.pauses,
            "jobs_deferred_rate": self.throttles.deferred.rate,
            "jobs_deferred_quota": self.throttles.deferred.quota,
        }
        if self.fair is not None:
            counters["fair_deferred"] = self.fair.deferred
        return counters
