"""SQS visibility changes of the sender, in batches (finishing is sesguard.finisher)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sesguard.logging import get_logger

log = get_logger(__name__)

SQS_BATCH = 10


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
