"""One S3 object end to end: stream it, count each event once, judge the partners.

`Processor` is shared by the queue consumer and backfill, and runs one bounded step per
event-loop turn across all its objects. See docs/design.md,
"Every event is counted exactly once" and
"The event loop stays responsive, and objects are bounded".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError
from structlog.contextvars import bound_contextvars

from sesguard.aws import table as t
from sesguard.aws.errors import error_code
from sesguard.aws.store import PartnerStore
from sesguard.core.identities import NO_IDENTITIES
from sesguard.core.partners import utcnow
from sesguard.domain.judgement import Enforcement
from sesguard.errors import Refused
from sesguard.logging import get_logger
from sesguard.settings import DEFAULT_MAX_OBJECT_BYTES
from worker.aggregate import Aggregator, ObjectStats
from worker.apply import Applier, ApplyResult, Known
from worker.enforce import Enforcer
from worker.identities import IdentityCache

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = get_logger(__name__)

READ_CHUNK = 1 << 20
# Events held before they are written: what an object holds in memory is bounded by this,
# not by the object's size (docs/design.md, "Every event is counted exactly once").
FLUSH_EVENTS = 20_000
OBJECT_SK = "OBJECT"  # the object's "counted" marker, under O#<bucket>/<key>
# Markers must outlive every redelivery (SQS keeps messages 14 days, DLQ redrives later).
MARKER_TTL_DAYS = 400
MALFORMED_LOG_LIMIT = 20  # per object; the count is always logged in full
WRONG_PIPELINE = "not event-publishing records: the bucket is fed by the wrong pipeline"
_MISSING = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})
_DONE = object()


class ObjectMissing(Refused):
    """The notification names an object that is not (or no longer) there."""


class ObjectTooLarge(Refused):
    """The object decompresses to more than SESGUARD_MAX_OBJECT_BYTES."""


@dataclass
class ObjectResult:
    bucket: str
    key: str
    stats: ObjectStats
    applied: ApplyResult
    outcomes: dict[str, Enforcement] = field(default_factory=dict)
    lag_seconds: float | None = None
    bytes_read: int = 0
    counted_before: bool = False  # its marker said so: not read again

    @property
    def partners(self) -> list[str]:
        return sorted(self.outcomes)


@dataclass
class Processor:
    """`process(bucket, key)`: one object, exactly once. `max_object_bytes` is the cap on
    its decompressed bytes; `on_step`, if set, is called after every parsing step with the
    object's Aggregator (its bytes_decoded and stats show the progress)."""

    s3: S3Client
    store: PartnerStore
    enforcer: Enforcer
    read_chunk: int = READ_CHUNK
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
    on_step: Callable[[Aggregator], None] | None = None
    # Mailbox-simulator mail counted like real mail (Settings.counts_simulator_mail).
    count_simulator: bool = False
    # The account's verified identities: hard bounces to them count apart (worker/identities.py).
    identities: IdentityCache | None = None
    flush_events: int = FLUSH_EVENTS
    # What this worker knows the partner-minutes hold, across its objects (worker/apply.py).
    known: Known = field(default_factory=Known, repr=False, compare=False)
    _turn: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False, compare=False)

    async def process(self, bucket: str, key: str, now: datetime | None = None) -> ObjectResult:
        """Read, count and judge one S3 object. Its bucket and key are bound into the log
        context for the whole unit of work: every line logged on its behalf names it."""
        with bound_contextvars(bucket=bucket, key=key):
            return await self._process(bucket, key, now)

    async def _process(self, bucket: str, key: str, now: datetime | None) -> ObjectResult:
        identities = NO_IDENTITIES if self.identities is None else await self.identities.current()
        agg = Aggregator(self.count_simulator, identities)
        try:
            resp = await self.s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                raise ObjectMissing(f"s3://{bucket}/{key} does not exist") from None
            raise
        etag = str(resp.get("ETag", "")).strip('"') or None
        modified: datetime | None = resp.get("LastModified")
        where = f"s3://{bucket}/{key}"
        size: int | None = resp.get("ContentLength")
        body = resp["Body"]
        applier = Applier(self.store, where, self.known)
        async with body:  # releases the connection even if parsing fails
            if await self._counted_before(bucket, key, etag):
                return _log_result(
                    ObjectResult(bucket, key, agg.stats, applier.result, counted_before=True)
                )
            while chunk := await body.read(self.read_chunk):
                await self._parse(agg.feed_steps(chunk), agg, where, size, applier)
        await self._parse(agg.finish_steps(), agg, where, size, applier)
        await applier.apply(agg.take())
        await self._mark_counted(bucket, key, etag)
        outcomes = await self.enforcer.check_all(agg.partners(), now)
        done = utcnow()
        return _log_result(
            ObjectResult(
                bucket=bucket,
                key=key,
                stats=agg.stats,
                applied=applier.result,
                outcomes=outcomes,
                lag_seconds=round((done - modified).total_seconds(), 3) if modified else None,
                bytes_read=agg.bytes_in,
            )
        )

    async def _counted_before(self, bucket: str, key: str, etag: str | None) -> bool:
        """Whether this object's marker says it was counted (a redelivered notification:
        one read instead of the object). An older sesguard marked each chunk
        ("00000", ...): any marker counts. A marker with another ETag means the key was
        overwritten after counting: the new content is read, and only events not counted
        before are counted."""
        resp = await self.store.call(
            "query",
            TableName=self.store.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": t.object_pk(bucket, key)}},
            ConsistentRead=True,
            Limit=1,
        )
        items = resp.get("Items", [])
        if not items:
            return False
        counted_etag = items[0].get("etag", {}).get("S")
        if etag and counted_etag and counted_etag != etag:
            log.error("object_overwritten_after_counting", counted_etag=counted_etag, etag=etag)
            return False
        return True

    async def _mark_counted(self, bucket: str, key: str, etag: str | None) -> None:
        """After every event is written: a redelivery that finds this reads nothing."""
        now = utcnow()
        await self.store.call(
            "put_item",
            TableName=self.store.table,
            Item=t.to_item(
                {
                    "pk": t.object_pk(bucket, key),
                    "sk": OBJECT_SK,
                    "etag": etag,
                    "processed_at": now.isoformat(),
                    t.TTL_ATTRIBUTE: int((now + timedelta(days=MARKER_TTL_DAYS)).timestamp()),
                }
            ),
        )

    async def _parse(
        self,
        steps: Iterator[None],
        agg: Aggregator,
        where: str,
        size: int | None,
        applier: Applier,
    ) -> None:
        """Run parsing steps, one per event-loop turn for all of this Processor's objects.

        The turn is held across one `sleep(0)` after every step: everything else the loop
        has to do runs before any object's next step, however many objects are being
        parsed at once.
        The cap is checked after every step, so an object over it is given up within the
        step that passes it (a step decodes at most 2 * INFLATE_STEP bytes), without
        reading further.
        """
        while True:
            async with self._turn:
                more = next(steps, _DONE) is not _DONE
                if self.on_step is not None:
                    self.on_step(agg)
                if agg.bytes_decoded > self.max_object_bytes:
                    raise ObjectTooLarge(
                        f"{where} decompresses to more than {self.max_object_bytes} bytes"
                        f" (SESGUARD_MAX_OBJECT_BYTES); gave up after reading"
                        f" {agg.bytes_in} of its {size} bytes"
                    )
                await asyncio.sleep(0)  # after the last step too: the next chunk's is next
            await self._flush_when_full(agg, applier)
            if not more:
                return

    async def _flush_when_full(self, agg: Aggregator, applier: Applier) -> None:
        """Write the events held once there are `flush_events` of them: what an object
        holds in memory is bounded by that, not by its size."""
        if agg.pending >= self.flush_events:
            await applier.apply(agg.take())


def _log_result(r: ObjectResult) -> ObjectResult:
    """Called inside `process`: the object's bucket and key come from the log context."""
    if r.counted_before:
        log.info("object_counted_before")
        return r
    stats = r.stats
    for m in stats.malformed[:MALFORMED_LOG_LIMIT]:
        log.warning(
            "malformed_record",
            offset=m.offset,
            length=m.length,
            reason=m.reason,
        )
    if stats.wrong_pipeline:  # once per object, however many records
        log.error(
            "wrong_pipeline",
            records=stats.wrong_pipeline,
            problem=WRONG_PIPELINE,
            hint="SES identity notifications (SNS) reached the events bucket; publish"
            " events through the configuration set's Firehose destination instead",
        )
    misspelled = stats.misspelled
    if misspelled:  # once per object, with a count per spelling
        log.warning(
            "event_type_misspelled",
            records=sum(misspelled.values()),
            spellings=dict(sorted(misspelled.items())[:20]),
            problem="records whose eventType SES never writes (another case or spacing of"
            " a known type): not counted",
        )
    unregistered = sorted(p for p, o in r.outcomes.items() if o is Enforcement.UNREGISTERED)
    if unregistered:
        log.info("unregistered_partners", partners=unregistered[:100])
    log.info(
        "object_processed",
        bytes=r.bytes_read,
        records=stats.records,
        events=stats.events,
        recipients=stats.recipients,
        malformed=stats.malformed_count,
        ignored=dict(stats.ignored),
        untagged=stats.untagged,
        invalid_tags=stats.invalid_tags,
        wrong_pipeline=stats.wrong_pipeline,
        simulator_recipients=stats.simulator,
        partners_touched=len(r.outcomes),
        partners=r.partners[:100],
        duplicates=stats.duplicates + r.applied.duplicates,
        transactions=r.applied.transactions,
        seen_items_read=r.applied.reads,
        lag_seconds=r.lag_seconds,
    )
    return r
