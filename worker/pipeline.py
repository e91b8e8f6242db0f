"""One S3 object end to end: stream it, count it, apply it exactly once, judge partners.

Shared by the queue consumer and backfill, so both give the same exactly-once guarantee.
The object is read in chunks and folded into per-partner-hour counters as it streams;
only those counters (not the events) are held until the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from sesguard.logging import get_logger
from sesguard.partners import utcnow
from sesguard.store import PartnerStore
from worker.aggregate import Aggregator, ObjectStats
from worker.apply import ApplyResult, apply_object
from worker.enforce import Enforcer, Outcome

log = get_logger(__name__)

READ_CHUNK = 1 << 20
MALFORMED_LOG_LIMIT = 20  # per object; the count is always logged in full
_MISSING = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})


class ObjectMissing(Exception):
    """The notification names an object that is not (or no longer) there."""


class ObjectTooLarge(Exception):
    """The object decompresses to more than SESGUARD_MAX_OBJECT_BYTES."""


@dataclass
class ObjectResult:
    bucket: str
    key: str
    stats: ObjectStats
    applied: ApplyResult
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    lag_seconds: float | None = None
    bytes_read: int = 0

    @property
    def partners(self) -> list[str]:
        return sorted(self.outcomes)


@dataclass
class Processor:
    s3: Any
    store: PartnerStore
    enforcer: Enforcer
    read_chunk: int = READ_CHUNK

    async def process(self, bucket: str, key: str, now: datetime | None = None) -> ObjectResult:
        agg = Aggregator()
        try:
            resp = await self.s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in _MISSING:
                raise ObjectMissing(f"s3://{bucket}/{key} does not exist") from None
            raise
        etag = str(resp.get("ETag", "")).strip('"') or None
        modified: datetime | None = resp.get("LastModified")
        body = resp["Body"]
        async with body:  # releases the connection even if parsing fails
            while chunk := await body.read(self.read_chunk):
                agg.feed_bytes(chunk)
        agg.finish_bytes()

        counts = agg.counts()
        applied = await apply_object(self.store, bucket, key, counts, etag=etag)
        outcomes = await self.enforcer.check_all(agg.partners(), now)
        done = utcnow()
        result = ObjectResult(
            bucket=bucket,
            key=key,
            stats=agg.stats,
            applied=applied,
            outcomes=outcomes,
            lag_seconds=round((done - modified).total_seconds(), 3) if modified else None,
            bytes_read=agg.bytes_in,
        )
        _log_result(result)
        return result


def _log_result(r: ObjectResult) -> None:
    stats = r.stats
    for m in stats.malformed[:MALFORMED_LOG_LIMIT]:
        log.warning(
            "malformed_record",
            bucket=r.bucket,
            key=r.key,
            offset=m.offset,
            length=m.length,
            reason=m.reason,
        )
    unregistered = sorted(p for p, o in r.outcomes.items() if o is Outcome.UNREGISTERED)
    if unregistered:
        log.info("unregistered_partners", key=r.key, partners=unregistered[:100])
    log.info(
        "object_processed",
        bucket=r.bucket,
        key=r.key,
        bytes=r.bytes_read,
        records=stats.records,
        events=stats.events,
        recipients=stats.recipients,
        malformed=stats.malformed_count,
        ignored=dict(stats.ignored),
        untagged=stats.untagged,
        invalid_tags=stats.invalid_tags,
        partners_touched=len(r.outcomes),
        partners=r.partners[:100],
        chunks=r.applied.chunks,
        chunks_applied=r.applied.applied,
        chunks_already_counted=r.applied.already,
        lag_seconds=r.lag_seconds,
    )
