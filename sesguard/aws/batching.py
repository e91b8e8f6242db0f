"""AWS batch limits, grouping items under them, and retrying a batch's failed entries.

The limits are AWS's, whether or not an emulator enforces them. See docs/design.md,
"7. AWS limits the code respects".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sesguard.aws import table as t
from sesguard.core.backoff import backoff_delay
from sesguard.core.jobs import MAX_SQS_MESSAGE_BYTES

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

SQS_BATCH = 10  # entries per SQS *Batch call, and messages per ReceiveMessage
BATCH_WRITE_ITEMS = 25  # items per DynamoDB BatchWriteItem

T = TypeVar("T")


def batches(
    items: Iterable[T],
    size: Callable[[T], int],
    max_count: int = SQS_BATCH,
    max_bytes: int = MAX_SQS_MESSAGE_BYTES,
) -> Iterator[list[T]]:
    """Group items, in order, into calls of at most `max_count` items and `max_bytes` in
    total (by default SendMessageBatch's: 10 entries, 256 KiB). Callers deal with an item
    over the limit first (it would make a batch alone)."""
    batch: list[T] = []
    total = 0
    for item in items:
        n = size(item)
        if batch and (len(batch) >= max_count or total + n > max_bytes):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += n
    if batch:
        yield batch


@dataclass(frozen=True)
class EntryFailure:
    """Why SQS did not take one entry of a batch; `sender_fault`: the entry itself is wrong
    (retrying it cannot help), else SQS failed on its side."""

    code: str
    message: str
    sender_fault: bool

    def __str__(self) -> str:
        return f"{self.code}: {self.message}".strip() if self.code else self.message


NOT_SENT = EntryFailure("", "not sent", False)  # SQS answered neither way


async def send_batch(
    sqs: SQSClient,
    queue_url: str,
    bodies: Sequence[str],
    *,
    group_ids: Sequence[str | None] | None = None,
    attempts: int = 8,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[EntryFailure | None]:
    """One SendMessageBatch (<= 10 bodies, <= 256 KiB in total, as `batches` groups
    them), retrying the entries SQS failed on its side; for each body, None if SQS
    accepted it, else why not. An entry SQS refuses as the sender's fault is not retried,
    and the batch stops there (the caller reports it).

    `group_ids` (one per body, None for none) become each message's MessageGroupId: send
    jobs carry their partner id, so the send queue works as an SQS fair queue (one tenant's backlog
    does not hold up the others' messages; docs/operating.md, "Send jobs")."""
    if group_ids is not None and len(group_ids) != len(bodies):
        raise ValueError("send_batch: one group id per body")
    results: list[EntryFailure | None] = [NOT_SENT] * len(bodies)
    pending = {str(i): body for i, body in enumerate(bodies)}
    for attempt in range(attempts):
        entries: list[SendMessageBatchRequestEntryTypeDef] = []
        for i, body in pending.items():
            entry: SendMessageBatchRequestEntryTypeDef = {"Id": i, "MessageBody": body}
            group = group_ids[int(i)] if group_ids is not None else None
            if group is not None:
                entry["MessageGroupId"] = group
            entries.append(entry)
        resp = await sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        for ok in resp.get("Successful", []):
            pending.pop(ok["Id"], None)
            results[int(ok["Id"])] = None
        failed = resp.get("Failed", [])
        for f in failed:
            results[int(f["Id"])] = EntryFailure(
                str(f.get("Code")), str(f.get("Message", "")), bool(f.get("SenderFault"))
            )
        if not pending or any(f.get("SenderFault") for f in failed):
            break
        await sleep(backoff_delay(attempt, base=0.05, cap=2.0))
    return results


class BatchWrite:
    """One BatchWriteItem on one table (at most `BATCH_WRITE_ITEMS` requests), retrying
    what DynamoDB leaves unprocessed (throttling on its side: AWS asks for a backoff).

    `left` is what is not written yet; it stays true when the call itself fails (the
    exception propagates), so a caller that reports per item knows which ones were
    written before the failure."""

    def __init__(self, table: str, requests: Sequence[dict[str, Any]]) -> None:
        self.table = table
        self.left: list[dict[str, Any]] = list(requests)

    async def run(
        self,
        dynamodb: DynamoDBClient,
        *,
        attempts: int,
        cap: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> list[dict[str, Any]]:
        """Up to `attempts` calls, with backoff after each that left items unprocessed;
        returns what is still unwritten (empty: everything is durable)."""
        for attempt in range(attempts):
            request: dict[str, Any] = {self.table: self.left}
            resp = await dynamodb.batch_write_item(RequestItems=request)
            unprocessed: Any = (resp.get("UnprocessedItems") or {}).get(self.table, [])
            self.left = list(unprocessed)
            if not self.left:
                break
            await sleep(backoff_delay(attempt, base=0.05, cap=cap))
        return self.left


BATCH_GET_KEYS = 100  # keys per DynamoDB BatchGetItem
BATCH_GET_ATTEMPTS = 8  # per batch: UnprocessedKeys are asked again, with backoff


async def read_job_records(
    dynamodb: DynamoDBClient, table: str, job_ids: Sequence[str], *, consistent: bool = False
) -> dict[str, dict[str, Any]]:
    """The job records (sesguard.aws.table J# items) of `job_ids`, by job id, 100 keys per
    BatchGetItem, one call at a time; what DynamoDB leaves unprocessed is asked again
    with backoff."""
    unique = list(dict.fromkeys(job_ids))
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(unique), BATCH_GET_KEYS):
        chunk = unique[start : start + BATCH_GET_KEYS]
        pending: Any = {
            "ConsistentRead": consistent,
            "Keys": [t.key(t.job_pk(j), t.JOB_SK) for j in chunk],
        }
        for attempt in range(BATCH_GET_ATTEMPTS):
            resp = await dynamodb.batch_get_item(RequestItems={table: pending})
            for item in resp.get("Responses", {}).get(table, []):
                record = t.from_item(item)
                found[str(record["pk"]).removeprefix(t.JOB_PREFIX)] = record
            left = (resp.get("UnprocessedKeys") or {}).get(table)
            if not left or not left.get("Keys"):
                break
            pending = left  # only the keys not read yet
            await asyncio.sleep(backoff_delay(attempt, base=0.05, cap=2.0))
        else:
            raise RuntimeError(
                f"DynamoDB left {len(pending['Keys'])} job records unread"
                f" after {BATCH_GET_ATTEMPTS} calls"
            )
    return found
