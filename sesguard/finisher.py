"""Finishing SQS messages in batches, for both services.

Messages that finish within a short linger share one DeleteMessageBatch (<= 10 entries),
so deletes cost a tenth of a call per message instead of one. The sender also writes a
DynamoDB record per job (its "sent" mark) before the delete: those go first, in one
BatchWriteItem (<= 25 items) per flush.

close() never cancels a flush on the wire: a cancelled delete would leave finished
messages in flight until their visibility timeout, and they would come back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sesguard.backoff import backoff_delay
from sesguard.logging import get_logger

log = get_logger(__name__)

SQS_BATCH = 10  # AWS limit for DeleteMessageBatch (and the records flushed with it)
_WRITE_RETRIES = 5


@dataclass
class _Done:
    receipt: str
    record: dict[str, Any] | None


class Finisher:
    """Collects finished messages and flushes them in batches (records first, then deletes).

    A failed record write or delete is logged, never raised: the message then comes back
    and the caller's idempotency (the sender's once-per-job record or held-job key, the
    worker's per-object markers) turns it into a no-op.
    """

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        *,
        dynamodb: Any = None,
        table: str = "",
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
            self._runner = asyncio.create_task(self._run(), name="sqs-finisher")

    def done(self, receipt: str, record: dict[str, Any] | None = None) -> None:
        """Delete this message soon (after writing `record`, if given)."""
        assert record is None or self.dynamodb is not None, "records need dynamodb"
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
