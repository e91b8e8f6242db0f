"""The runtime's SQS calls that are not finishing messages (sesguard.runtime.finisher):
queue URLs, batched visibility changes, and the queue depth a --drain checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sesguard.aws.batching import SQS_BATCH
from sesguard.logging import get_logger

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

log = get_logger(__name__)


async def queue_urls(sqs: SQSClient, queue: str) -> tuple[str, str]:
    """(queue URL, DLQ URL); the DLQ is always `<queue>-dlq`."""
    url = (await sqs.get_queue_url(QueueName=queue))["QueueUrl"]
    dlq = (await sqs.get_queue_url(QueueName=f"{queue}-dlq"))["QueueUrl"]
    return str(url), str(dlq)


async def change_visibility(
    sqs: SQSClient, queue_url: str, entries: Sequence[tuple[str, int]]
) -> list[bool]:
    """ChangeMessageVisibilityBatch for (receipt, seconds) pairs in chunks of 10; whether
    each one took (failures are logged, never raised)."""
    ok = [True] * len(entries)
    for start in range(0, len(entries), SQS_BATCH):
        chunk = entries[start : start + SQS_BATCH]
        try:
            resp = await sqs.change_message_visibility_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": rh, "VisibilityTimeout": seconds}
                    for i, (rh, seconds) in enumerate(chunk)
                ],
            )
        except Exception as exc:
            log.warning("visibility_change_failed", count=len(chunk), error=str(exc))
            ok[start : start + len(chunk)] = [False] * len(chunk)
            continue
        bad = resp.get("Failed", [])
        if bad:
            # Usually an expired receipt handle: SQS has already made the message visible.
            log.warning(
                "visibility_change_failed",
                count=len(bad),
                codes=sorted({str(b.get("Code")) for b in bad}),
            )
            for b in bad:
                if str(b.get("Id", "")).isdigit():
                    ok[start + int(b["Id"])] = False
    return ok


@dataclass(frozen=True)
class Depth:
    visible: int
    in_flight: int
    delayed: int

    @property
    def empty(self) -> bool:
        return self.visible == 0 and self.in_flight == 0 and self.delayed == 0


async def queue_depth(sqs: SQSClient, queue_url: str) -> Depth:
    """Approximate counts (SQS says they settle within about a minute)."""
    attrs = (
        await sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
    )["Attributes"]
    return Depth(
        int(attrs.get("ApproximateNumberOfMessages", 0)),
        int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
        int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
    )
