"""`sesguard worker backfill`: count objects already in the bucket, exactly once.

Runs every listed object through the same Processor as the queue consumer, so objects
counted before are skipped by their markers; objects older than the markers' lifetime are
left out. See docs/design.md, "Every event is counted exactly once".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sesguard.core.partners import utcnow
from sesguard.logging import get_logger
from worker.pipeline import MARKER_TTL_DAYS, ObjectMissing, Processor

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = get_logger(__name__)

# Safety margin below the marker TTL (DynamoDB deletes expired items within days).
MAX_AGE = timedelta(days=MARKER_TTL_DAYS - 5)


@dataclass
class BackfillReport:
    listed: int = 0
    processed: int = 0
    too_old: int = 0
    before_since: int = 0
    missing: int = 0
    failed: int = 0
    events: int = 0
    malformed: int = 0
    counted: int = 0  # events added to the counters
    duplicates: int = 0  # events found counted before
    counted_before: int = 0  # objects whose marker said they were counted

    def line(self) -> str:
        return (
            f"backfill: {self.processed} objects processed ({self.listed} listed,"
            f" {self.before_since} before --since, {self.too_old} too old, {self.missing} gone,"
            f" {self.failed} failed); {self.events} events, {self.malformed} malformed;"
            f" {self.counted} counted, {self.duplicates} counted before;"
            f" {self.counted_before} objects counted before"
        )


async def list_objects(
    s3: S3Client, bucket: str, prefix: str
) -> AsyncIterator[tuple[str, datetime]]:
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            yield obj["Key"], obj["LastModified"]


async def backfill(
    processor: Processor,
    s3: S3Client,
    bucket: str,
    prefix: str,
    since: datetime | None = None,
    concurrency: int = 8,
    now: datetime | None = None,
) -> BackfillReport:
    now = now or utcnow()
    report = BackfillReport()
    queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=concurrency * 2)

    async def work() -> None:
        while (key := await queue.get()) is not None:
            try:
                result = await processor.process(bucket, key)
            except ObjectMissing:
                report.missing += 1
                continue
            except Exception as exc:
                report.failed += 1
                log.error("backfill_object_failed", bucket=bucket, key=key, error=repr(exc))
                continue
            report.processed += 1
            report.events += result.stats.events
            report.malformed += result.stats.malformed_count
            report.counted += result.applied.counted
            report.duplicates += result.stats.duplicates + result.applied.duplicates
            report.counted_before += result.counted_before

    workers = [asyncio.create_task(work()) for _ in range(max(1, concurrency))]
    try:
        async for key, modified in list_objects(s3, bucket, prefix):
            report.listed += 1
            if since is not None and modified < since:
                report.before_since += 1
                continue
            if now - modified > MAX_AGE:
                report.too_old += 1
                log.warning("backfill_object_too_old", key=key, last_modified=modified.isoformat())
                continue
            await queue.put(key)
    finally:
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    log.info("backfill_done", bucket=bucket, prefix=prefix, **report.__dict__)
    return report
