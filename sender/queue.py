"""SQS plumbing of the sender: batched finishing, the DLQ, and visibility changes.

Finishing a job (recording "sent" and deleting its message) is batched: jobs that end
within a short linger share one BatchWriteItem (<= 25 items) and one DeleteMessageBatch
(<= 10 entries), so SQS deletes cost a tenth of a call per job instead of one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sesguard.backoff import backoff_delay
from sesguard.logging import get_logger

log = get_logger(__name__)

SQS_BATCH = 10
_WRITE_RETRIES = 5


async def change_visibility(sqs: Any, queue_url: str, receipts: Sequence[str], seconds: int) -> int:
    """ChangeMessageVisibilityBatch in chunks of 10; returns how many failed (logged)."""
    failed = 0
    for start in range(0, len(receipts), SQS_BATCH):
        chunk = receipts[start : start + SQS_BATCH]
        try:
            resp = await sqs.change_message_visibility_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": rh, "VisibilityTimeout": seconds}
                    for i, rh in enumerate(chunk)
                ],
            )
            bad = resp.get("Failed", [])
        except Exception as exc:
            log.warning("visibility_change_failed", count=len(chunk), error=str(exc))
            failed += len(chunk)
            continue
        if bad:
            # Usually an expired receipt handle: SQS has already made the message visible.
            log.warning(
                "visibility_change_failed",
                count=len(bad),
                codes=sorted({str(b.get("Code")) for b in bad}),
            )
            failed += len(bad)
    return failed


@dataclass
class _Done:
    receipt: str
    record: dict[str, Any] | None


class Finisher:
    """Collects finished jobs and flushes them in batches (records first, then deletes).

    A failed record write or delete is logged, never raised: the message then comes back
    and the once-per-job record (or the held-job key) turns it into a no-op.
    """

    def __init__(
        self,
        sqs: Any,
        dynamodb: Any,
        table: str,
        queue_url: str,
        linger: float = 0.05,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.sqs = sqs
        self.dynamodb = dynamodb
        self.table = table
        self.queue_url = queue_url
        self.linger = linger
        self.sleep = sleep
        self._pending: list[_Done] = []
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False
        self._flushes: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="sender-finisher")

    def done(self, receipt: str, record: dict[str, Any] | None = None) -> None:
        """Delete this message soon (after writing `record`, if given)."""
        self._pending.append(_Done(receipt, record))
        self._wake.set()
        if len(self._pending) >= SQS_BATCH:
            self._full.set()

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._flushes)

    async def close(self) -> None:
        """Flush everything still pending and stop."""
        self._closing = True
        self._wake.set()
        self._full.set()
        if self._runner is None:
            self.start()
        assert self._runner is not None
        await self._runner

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if len(self._pending) < SQS_BATCH and not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.linger)
            self._full.clear()
            batch, self._pending = self._pending[:SQS_BATCH], self._pending[SQS_BATCH:]
            if len(self._pending) >= SQS_BATCH:
                self._full.set()
            if not self._pending:
                self._wake.clear()
            if batch:
                task = asyncio.create_task(self._flush(batch))
                self._flushes.add(task)
                task.add_done_callback(self._flushes.discard)
            if self._closing and not self._pending:
                break
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)

    async def _flush(self, batch: list[_Done]) -> None:
        records = [d.record for d in batch if d.record is not None]
        if records:
            await self._write_records(records)
        try:
            resp = await self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": d.receipt} for i, d in enumerate(batch)],
            )
            failed = resp.get("Failed", [])
            if failed:
                log.warning(
                    "delete_failed",
                    count=len(failed),
                    codes=sorted({str(f.get("Code")) for f in failed}),
                )
        except Exception as exc:
            log.error("delete_failed", count=len(batch), error=str(exc))

    async def _write_records(self, records: list[dict[str, Any]]) -> None:
        request: dict[str, Any] = {self.table: [{"PutRequest": {"Item": r}} for r in records]}
        for attempt in range(_WRITE_RETRIES):
            try:
                resp = await self.dynamodb.batch_write_item(RequestItems=request)
            except Exception as exc:
                log.error("job_record_write_failed", count=len(records), error=str(exc))
                return
            request = resp.get("UnprocessedItems") or {}
            if not request:
                return
            await self.sleep(backoff_delay(attempt, base=0.05, cap=1.0))
        log.error("job_record_write_failed", count=len(request.get(self.table, [])))
