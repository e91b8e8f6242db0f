"""One S3 notification: count its objects exactly once, judge the partners they touch.

The handler the worker plugs into the runtime: a bad notification, an object outside the
events bucket and prefix, missing or too large is dead-lettered; any other failure is
retried. See docs/design.md, "Every event is counted exactly once".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from structlog.contextvars import bound_contextvars

from sesguard.aws.errors import describe
from sesguard.core.notifications import BadNotification, ObjectRef, parse_notification
from sesguard.domain.judgement import Enforcement
from sesguard.logging import get_logger
from sesguard.runtime import DeadLetter, Delivery, Done, Fate, GiveBack, Retry
from sesguard.runtime.metrics import ServiceMetrics
from sesguard.settings import Settings
from worker.pipeline import ObjectMissing, ObjectResult, ObjectTooLarge, Processor

log = get_logger(__name__)


@dataclass
class WorkerTally:
    """The worker's own counters, logged periodically and on stop."""

    messages: int = 0
    test_events: int = 0
    objects: int = 0
    events: int = 0
    recipients: int = 0
    malformed: int = 0
    ignored: Counter[str] = field(default_factory=Counter)
    untagged: int = 0
    wrong_pipeline: int = 0  # SNS identity notifications: never counted (see classify)
    events_counted: int = 0  # added to the counters (events less duplicates)
    duplicates: int = 0  # events seen before: in the same object, or counted from another
    objects_counted_before: int = 0  # redelivered: their marker said so, not read again
    transactions: int = 0
    partners_paused: int = 0
    dead_lettered: int = 0
    failures: int = 0
    returned: int = 0

    def add(self, r: ObjectResult) -> None:
        self.objects += 1
        self.partners_paused += sum(1 for o in r.outcomes.values() if o is Enforcement.PAUSED)
        self.events += r.stats.events
        self.recipients += r.stats.recipients
        self.malformed += r.stats.malformed_count
        self.ignored.update(r.stats.ignored)
        self.untagged += r.stats.untagged
        self.wrong_pipeline += r.stats.wrong_pipeline
        self.events_counted += r.applied.counted
        self.duplicates += r.stats.duplicates + r.applied.duplicates
        self.objects_counted_before += r.counted_before
        self.transactions += r.applied.transactions

    def settled(self, fate: Fate) -> None:
        """What the runtime did with a message."""
        if isinstance(fate, DeadLetter):
            self.dead_lettered += 1
        elif isinstance(fate, Retry):
            self.failures += 1
        elif isinstance(fate, GiveBack):
            self.returned += 1

    def as_log(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["ignored"] = dict(self.ignored)
        return data


class EventsHandler:
    def __init__(
        self, processor: Processor, settings: Settings, tally: WorkerTally, metrics: ServiceMetrics
    ) -> None:
        self.processor = processor
        self.settings = settings
        self.tally = tally
        self.metrics = metrics  # CloudWatch metrics (EMF lines on stdout)
        self.bucket: str | None = None  # the events bucket: set before the first message

    async def __call__(self, d: Delivery) -> Fate:
        self.tally.messages += 1
        try:
            note = parse_notification(d.body)
        except BadNotification as exc:
            return DeadLetter(f"bad notification: {exc}")
        if note.test_event:
            self.tally.test_events += 1
            log.info("test_event_skipped", message_id=d.message_id)
            d.outcome = "test_event"
            return Done()
        foreign = [ref.url for ref in note.objects if not self._ours(ref)]
        if foreign:
            where = f"s3://{self.bucket}/{self.settings.events_prefix}"
            return DeadLetter(
                f"not the events bucket: {' '.join(foreign)[:1000]} (this worker counts"
                f" only objects under {where})"
            )
        missing: list[str] = []
        for ref in note.objects:
            with bound_contextvars(bucket=ref.bucket, key=ref.key):  # the unit of work
                if ref.key.startswith(self.settings.firehose_error_prefix):
                    # Firehose's own failure output (with an empty events prefix it
                    # notifies this queue too): not SES events. Visible, never counted.
                    log.warning("firehose_error_object")
                    continue
                d.fields["key"] = ref.key
                try:
                    result = await self.processor.process(ref.bucket, ref.key)
                except ObjectMissing:
                    log.warning("object_missing")
                    missing.append(ref.url)
                    continue
                except ObjectTooLarge as exc:
                    return DeadLetter(str(exc))
                except Exception as exc:  # DynamoDB, S3, the network: try again later
                    return Retry(f"{ref.url}: {describe(exc)}")
                self._record(result)
        if missing:
            return DeadLetter("missing object: " + " ".join(missing))
        d.outcome = "counted"
        return Done()

    def _ours(self, ref: ObjectRef) -> bool:
        """In the events bucket, under the events prefix (or Firehose's error prefix,
        which is skipped below)."""
        if self.bucket is None:
            raise RuntimeError("EventsHandler.bucket is not set")
        s = self.settings
        return ref.bucket == self.bucket and (
            ref.key.startswith(s.events_prefix) or ref.key.startswith(s.firehose_error_prefix)
        )

    def _record(self, r: ObjectResult) -> None:
        self.tally.add(r)
        metrics = self.metrics
        metrics.add("objects_processed")
        metrics.add("events_counted", r.applied.counted)
        if duplicates := r.stats.duplicates + r.applied.duplicates:
            metrics.add("events_duplicate", duplicates)
        if r.stats.ignored_count:
            metrics.add("events_ignored", r.stats.ignored_count)
        if misspelled := r.stats.misspelled:
            metrics.add("events_misspelled", sum(misspelled.values()))
        if r.stats.malformed_count:
            metrics.add("malformed_records", r.stats.malformed_count)
        if r.stats.wrong_pipeline:
            metrics.add("wrong_pipeline_records", r.stats.wrong_pipeline)
        paused = sum(1 for o in r.outcomes.values() if o is Enforcement.PAUSED)
        if paused:
            metrics.add("partners_paused", paused)
        if r.lag_seconds is not None:
            metrics.observe("event_lag_seconds", max(0.0, r.lag_seconds))
