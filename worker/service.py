"""The event service: S3 notifications from SQS -> exactly-once counters -> policy.

- Long-polls the events queue and works on at most `settings.concurrency` messages at
  once; deletes are batched (at most 10 per call, the SQS limit).
- A message whose object takes long keeps its visibility extended until it is done.
- Bad input never blocks the queue: a body that is not an S3 notification, or one naming
  a missing object, goes to `<queue>-dlq` with a `sesguard_reason` attribute and is deleted; an
  `s3:TestEvent` is deleted. A transient failure leaves the message for redelivery after
  a short backoff (the queue's redrive policy dead-letters it after repeated failures).
- `--drain` mode exits once a receive comes back empty and nothing is in flight.
- stop() (SIGTERM) stops receiving, lets in-flight messages finish within
  `settings.stop_grace_seconds`, and returns the rest to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sesguard.aws import Clients
from sesguard.deadletter import send_to_dlq
from sesguard.finisher import Finisher
from sesguard.health import touch_heartbeat
from sesguard.logging import get_logger
from sesguard.metrics import ServiceMetrics
from sesguard.settings import Settings
from sesguard.store import PartnerStore
from worker.enforce import Enforcer, Outcome
from worker.notifications import BadNotification, parse_notification
from worker.pipeline import ObjectMissing, ObjectResult, Processor

log = get_logger(__name__)

SQS_BATCH = 10  # AWS limit for a receive
LONG_POLL_SECONDS = 20  # SQS's maximum; stop() cancels a poll in progress
DRAIN_POLL_SECONDS = 1
METRICS_EVERY_SECONDS = 60.0
SLOT_WAIT_SECONDS = 5.0  # the loop comes round (heartbeat) even when every slot is busy


@dataclass
class Metrics:
    """The worker's own counters, logged periodically and on stop."""

    messages: int = 0
    test_events: int = 0
    objects: int = 0
    events: int = 0
    recipients: int = 0
    malformed: int = 0
    ignored: Counter[str] = field(default_factory=Counter)
    untagged: int = 0
    chunks_applied: int = 0
    chunks_already_counted: int = 0
    partners_paused: int = 0
    dead_lettered: int = 0
    failures: int = 0
    returned: int = 0

    def add(self, r: ObjectResult) -> None:
        self.objects += 1
        self.partners_paused += sum(1 for o in r.outcomes.values() if o is Outcome.PAUSED)
        self.events += r.stats.events
        self.recipients += r.stats.recipients
        self.malformed += r.stats.malformed_count
        self.ignored.update(r.stats.ignored)
        self.untagged += r.stats.untagged
        self.chunks_applied += r.applied.applied
        self.chunks_already_counted += r.applied.already

    def as_log(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["ignored"] = dict(self.ignored)
        return data


class WorkerService:
    def __init__(
        self,
        clients: Clients,
        settings: Settings,
        processor: Processor | None = None,
        *,
        extend_every: float | None = None,
    ):
        self.settings = settings
        # Visibility of a message still being worked on is renewed this often (default:
        # half the timeout, so a renewal is never late by a whole timeout).
        self.extend_every = extend_every or settings.visibility_timeout / 2
        self.sqs = clients.sqs
        if processor is None:
            store = PartnerStore(
                clients.dynamodb,
                settings.table,
                settings.window_hours,
                settings.bucket_retention_days,
            )
            processor = Processor(clients.s3, store, Enforcer(store, clients.sesv2, settings))
        self.processor = processor
        self.metrics = Metrics()
        self.emf = ServiceMetrics("worker")  # CloudWatch metrics (EMF lines on stdout)
        self._stop = asyncio.Event()
        self._inflight: dict[asyncio.Task[None], dict[str, Any]] = {}
        self._queue_url = ""
        self._dlq_url: str | None = None
        self._finisher: Finisher | None = None
        self._last_metrics = time.monotonic()

    def stop(self) -> None:
        """Begin draining (SIGTERM): no new receives; in-flight work finishes."""
        if not self._stop.is_set():
            log.info("worker_stopping", in_flight=len(self._inflight))
        self._stop.set()

    # ---- main loop ---------------------------------------------------------------

    async def run(self, drain: bool = False) -> int:
        try:
            self._queue_url = (await self.sqs.get_queue_url(QueueName=self.settings.events_queue))[
                "QueueUrl"
            ]
        except ClientError as exc:
            log.error(
                "events_queue_missing",
                queue=self.settings.events_queue,
                error=str(exc),
                hint="run `sesguard bootstrap` first",
            )
            return 1
        self._finisher = Finisher(self.sqs, self._queue_url)
        self._finisher.start()
        log.info(
            "worker_started",
            queue=self.settings.events_queue,
            drain=drain,
            concurrency=self.settings.concurrency,
        )
        try:
            await self._loop(drain)
            await self._finish_inflight()
        finally:
            await self._finisher.close()
            self.emf.flush()
        log.info("worker_stopped", **self.metrics.as_log())
        if drain and self.metrics.failures:
            return 1  # something is left for redelivery: not a clean drain
        return 0

    async def _loop(self, drain: bool) -> None:
        wait = DRAIN_POLL_SECONDS if drain else LONG_POLL_SECONDS
        while not self._stop.is_set():
            self._housekeeping()
            free = self.settings.concurrency - len(self._inflight)
            if free <= 0:
                await self._wait_for_slot()
                continue
            messages = await self._receive(min(SQS_BATCH, free), wait)
            if messages is None:  # receive failed or was interrupted by stop()
                continue
            if not messages:
                if drain and not self._inflight:
                    return
                continue
            for msg in messages:
                task = asyncio.create_task(self._handle(msg))
                self._inflight[task] = msg
                task.add_done_callback(self._inflight.pop)

    async def _receive(self, count: int, wait: int) -> list[dict[str, Any]] | None:
        receive = asyncio.ensure_future(
            self.sqs.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=count,
                WaitTimeSeconds=wait,
                VisibilityTimeout=self.settings.visibility_timeout,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        )
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({receive, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not receive.done():
            receive.cancel()  # stop(): whatever it would have returned stays in the queue
            with contextlib.suppress(asyncio.CancelledError, ClientError, BotoCoreError):
                await receive
            return None
        try:
            resp = receive.result()
        except Exception as exc:  # the loop must survive anything a receive can raise
            log.warning("receive_failed", error=repr(exc))
            await self._sleep_unless_stopped(2.0)
            return None
        return list(resp.get("Messages", []))

    async def _wait_for_slot(self) -> None:
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait(
                {*self._inflight, stopping},
                timeout=SLOT_WAIT_SECONDS,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stopping.cancel()

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _finish_inflight(self) -> None:
        if not self._inflight:
            return
        tasks = set(self._inflight)
        _, pending = await asyncio.wait(tasks, timeout=self.settings.stop_grace_seconds)
        for task in pending:
            task.cancel()  # _handle returns its message to the queue
        if pending:
            await asyncio.wait(pending)

    def _housekeeping(self) -> None:
        touch_heartbeat(self.settings.heartbeat_file)
        now = time.monotonic()
        if now - self._last_metrics >= METRICS_EVERY_SECONDS:
            self._last_metrics = now
            log.info("worker_metrics", in_flight=len(self._inflight), **self.metrics.as_log())
            self.emf.flush()

    def _record(self, r: ObjectResult) -> None:
        self.metrics.add(r)
        emf = self.emf
        emf.add("objects_processed")
        emf.add("events_counted", r.stats.events)
        if r.stats.ignored_count:
            emf.add("events_ignored", r.stats.ignored_count)
        if r.stats.malformed_count:
            emf.add("malformed_records", r.stats.malformed_count)
        paused = sum(1 for o in r.outcomes.values() if o is Outcome.PAUSED)
        if paused:
            emf.add("partners_paused", paused)
        if r.lag_seconds is not None:
            emf.observe("event_lag_seconds", max(0.0, r.lag_seconds))

    # ---- one message -------------------------------------------------------------

    async def _handle(self, msg: dict[str, Any]) -> None:
        self.metrics.messages += 1
        keeper = asyncio.create_task(self._keep_invisible(msg))
        try:
            reason = await self._process(msg)
        except asyncio.CancelledError:
            keeper.cancel()
            self.metrics.returned += 1
            await asyncio.shield(self._set_visibility(msg, 0))
            raise
        except Exception as exc:
            keeper.cancel()
            self.metrics.failures += 1
            log.error("message_failed", message_id=msg.get("MessageId"), error=repr(exc))
            await self._set_visibility(msg, self._backoff(msg))
            return
        keeper.cancel()
        if reason is not None and not await self._dead_letter(msg, reason):
            self.metrics.failures += 1
            return  # not deleted: it comes back and is tried again
        assert self._finisher is not None
        self._finisher.done(msg["ReceiptHandle"])

    async def _process(self, msg: dict[str, Any]) -> str | None:
        """Count the message's objects; returns a dead-letter reason, or None when done."""
        try:
            note = parse_notification(msg.get("Body", ""))
        except BadNotification as exc:
            return f"bad notification: {exc}"
        if note.test_event:
            self.metrics.test_events += 1
            log.info("test_event_skipped", message_id=msg.get("MessageId"))
            return None
        missing: list[str] = []
        for ref in note.objects:
            if ref.key.startswith(self.settings.firehose_error_prefix):
                # Firehose's own failure output (with an empty events prefix it notifies
                # this queue too): not SES events. Visible, never counted.
                log.warning("firehose_error_object", bucket=ref.bucket, key=ref.key)
                continue
            try:
                result = await self.processor.process(ref.bucket, ref.key)
            except ObjectMissing:
                log.warning("object_missing", bucket=ref.bucket, key=ref.key)
                missing.append(ref.url)
                continue
            self._record(result)
        if missing:
            return "missing object: " + " ".join(missing)
        return None

    async def _keep_invisible(self, msg: dict[str, Any]) -> None:
        """Extend the visibility of a message whose objects take long."""
        timeout = self.settings.visibility_timeout
        while True:
            await asyncio.sleep(self.extend_every)
            if not await self._set_visibility(msg, timeout):
                return
            log.info("visibility_extended", message_id=msg.get("MessageId"), seconds=timeout)

    async def _set_visibility(self, msg: dict[str, Any], seconds: int) -> bool:
        try:
            await self.sqs.change_message_visibility(
                QueueUrl=self._queue_url,
                ReceiptHandle=msg["ReceiptHandle"],
                VisibilityTimeout=seconds,
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning("visibility_change_failed", message_id=msg.get("MessageId"), error=str(exc))
            return False
        return True

    def _backoff(self, msg: dict[str, Any]) -> int:
        try:
            receives = int(msg.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        except ValueError:
            receives = 1
        return int(min(self.settings.visibility_timeout, 2 ** min(receives, 12)))

    async def _dead_letter(self, msg: dict[str, Any], reason: str) -> bool:
        """Copy the message to the DLQ with its reason; True once it is there."""
        try:
            if self._dlq_url is None:
                self._dlq_url = (
                    await self.sqs.get_queue_url(QueueName=f"{self.settings.events_queue}-dlq")
                )["QueueUrl"]
            await send_to_dlq(self.sqs, self._dlq_url, str(msg.get("Body", "")), reason)
        except (ClientError, BotoCoreError) as exc:
            log.error("dead_letter_failed", message_id=msg.get("MessageId"), error=str(exc))
            return False
        self.metrics.dead_lettered += 1
        self.emf.add("jobs_dead_lettered")
        log.warning("dead_lettered", message_id=msg.get("MessageId"), reason=reason)
        return True
