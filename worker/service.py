"""The event service: S3 notifications from SQS -> worker.handler, on the consumer runtime.

Wiring only; its dependencies are S3 (probe: HeadBucket on the events bucket) and DynamoDB
(probe: one GetItem). See docs/design.md, "3. The consumer runtime"; exit codes:
docs/operating.md, "Exit codes".
"""

from __future__ import annotations

import asyncio

from sesguard.aws.clients import Clients
from sesguard.aws.errors import describe
from sesguard.aws.lifecycle import SWEEP_EVERY_SECONDS, Publisher
from sesguard.aws.store import PartnerStore
from sesguard.core.exitcodes import ExitCode
from sesguard.domain.judgement import PartnerJudge
from sesguard.logging import get_logger
from sesguard.runtime import (
    Consumer,
    ConsumerConfig,
    Delivery,
    Dependency,
    Fate,
    RetryPolicy,
    StopCause,
    queue_urls,
    report_progress,
)
from sesguard.runtime.metrics import ServiceMetrics
from sesguard.settings import Settings
from worker.enforce import Enforcer
from worker.handler import EventsHandler, WorkerTally
from worker.identities import IdentityCache
from worker.pipeline import Processor

log = get_logger(__name__)

LONG_POLL_SECONDS = 20  # SQS's maximum
DRAIN_POLL_SECONDS = 1


class WorkerService:
    def __init__(
        self,
        clients: Clients,
        settings: Settings,
        processor: Processor | None = None,
        *,
        renew_every: float | None = None,
        retry: RetryPolicy | None = None,
        stall_seconds: float = 600.0,
        breaker_threshold: int = 5,
        sweep_every: float = SWEEP_EVERY_SECONDS,
    ):
        self.clients = clients
        self.settings = settings
        # Visibility of a message still being worked on is renewed this often (default:
        # half the timeout, so a renewal is never late by a whole timeout).
        self.renew_every = renew_every or settings.visibility_timeout / 2
        self.retry = retry or RetryPolicy.from_settings(settings)
        self.stall_seconds = stall_seconds
        self.breaker_threshold = breaker_threshold
        self.store = PartnerStore.from_settings(clients.dynamodb, settings)
        # Lifecycle events: published by whoever wins a transition; the worker also sweeps
        # the outbox for events whose publisher failed or died (sesguard.aws.lifecycle).
        self.publisher = Publisher.from_clients(clients, settings)
        self.sweep_every = sweep_every
        if processor is None:
            processor = Processor(
                clients.s3,
                self.store,
                Enforcer(
                    PartnerJudge.standard(self.store, clients.sesv2, settings, self.publisher)
                ),
                max_object_bytes=settings.max_object_bytes,
                count_simulator=settings.counts_simulator_mail,
                identities=IdentityCache.for_sesv2(
                    clients.sesv2, settings.identities_refresh_seconds
                ),
                # every parsing step is progress: a long object keeps the heartbeat fresh
                on_step=lambda _agg: report_progress(),
            )
        self.tally = WorkerTally()
        self.metrics = ServiceMetrics("worker")  # CloudWatch metrics (EMF lines on stdout)
        self.handler = EventsHandler(processor, settings, self.tally, self.metrics)
        self.consumer: Consumer | None = None
        self._stopped = False

    @property
    def processor(self) -> Processor:
        return self.handler.processor

    @processor.setter
    def processor(self, processor: Processor) -> None:
        self.handler.processor = processor

    def stop(self, why: str = "stop") -> None:
        """Begin draining (SIGTERM): no new receives; in-flight work finishes."""
        self._stopped = True
        if self.consumer is not None:
            self.consumer.stop(why)

    async def run(self, drain: bool = False) -> int:
        try:
            queue_url, dlq_url = await queue_urls(self.clients.sqs, self.settings.events_queue)
        except Exception as exc:
            log.error(
                "events_queue_missing",
                queue=self.settings.events_queue,
                error=describe(exc),
                hint="run `sesguard bootstrap` first",
            )
            return ExitCode.FAILED
        try:  # the only bucket counted (worker.handler), known before the first message
            self.handler.bucket = self.settings.bucket_name(await self.clients.account_id())
        except Exception as exc:
            log.error(
                "events_bucket_unknown",
                error=describe(exc),
                hint="set SESGUARD_EVENTS_BUCKET, or allow sts:GetCallerIdentity",
            )
            return ExitCode.FAILED
        consumer = self.consumer = Consumer(
            self.clients.sqs,
            ConsumerConfig.for_service(
                "worker",
                self.settings,
                queue_url,
                dlq_url,
                retry=self.retry,
                drain=drain,
                wait_seconds=DRAIN_POLL_SECONDS if drain else LONG_POLL_SECONDS,
                renew_every=self.renew_every,
                stall_seconds=self.stall_seconds,
                breaker_threshold=self.breaker_threshold,
            ),
            self.handler,
            dependencies=self._dependencies(),
            metrics=self.metrics,
            counters=self.tally.as_log,
            on_settled=self._settled,
        )
        if self._stopped:
            consumer.stop("stop")
        log.info(
            "worker_started",
            queue=self.settings.events_queue,
            drain=drain,
            concurrency=self.settings.concurrency,
            outage_tolerance_seconds=self.retry.tolerance,
        )
        if drain:  # one sweep before and one after, none alongside: nothing twice
            await self.publisher.sweep_logged()
            cause = await consumer.run()
            await self.publisher.sweep_logged()
        else:
            sweeper = asyncio.create_task(self.publisher.sweep_forever(self.sweep_every))
            try:
                cause = await consumer.run()
            finally:
                sweeper.cancel()
                await asyncio.gather(sweeper, return_exceptions=True)
        return ExitCode.FAILED if cause is StopCause.GAVE_UP else ExitCode.OK

    def _settled(self, _d: Delivery, fate: Fate) -> None:
        self.tally.settled(fate)

    def _dependencies(self) -> list[Dependency]:
        """What the handler calls, each with one cheap probe the task role may make."""
        clients, settings = self.clients, self.settings

        async def s3_probe() -> object:
            bucket = settings.bucket_name(await clients.account_id())
            return await clients.s3.head_bucket(Bucket=bucket)

        return [
            Dependency("s3", clients.s3, s3_probe, "S3 HeadBucket"),
            Dependency("dynamodb", clients.dynamodb, self.store.probe, "DynamoDB GetItem"),
        ]
