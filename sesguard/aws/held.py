"""Held send jobs: what a paused partner's jobs become until an operator decides.

`HeldJobs` stores them under `H#<partner>` (the sender, conditionally); `replay_held` puts
them back on the send queue and `discard_held` drops them, each announced once as a
lifecycle event. See docs/design.md, "Held jobs and replay".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from sesguard.aws import table as t
from sesguard.aws.batching import (
    BATCH_WRITE_ITEMS,
    SQS_BATCH,
    BatchWrite,
    batches,
    send_batch,
)
from sesguard.aws.errors import error_code
from sesguard.aws.lifecycle import DetailType, Publisher, held_released
from sesguard.core.jobs import MAX_SQS_MESSAGE_BYTES, SendJob
from sesguard.core.partners import utcnow
from sesguard.errors import Failed
from sesguard.logging import get_logger

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import AttributeValueTypeDef
    from types_aiobotocore_sqs import SQSClient

    from sesguard.aws.clients import Clients
    from sesguard.settings import Settings

log = get_logger(__name__)

_WRITE_RETRIES = 8


class HeldError(Failed):
    """Some held jobs could not be moved; they are still held (nothing was lost)."""

    def __init__(self, message: str, moved: int = 0) -> None:
        super().__init__(message)
        self.moved = moved  # jobs that were moved before the failure


@dataclass(frozen=True)
class HeldJob:
    partner_id: str
    job_id: str
    held_at: str
    body: str  # the job as JSON, exactly what goes back on the queue
    key: dict[str, AttributeValueTypeDef]

    @property
    def size(self) -> int:
        return len(self.body.encode())


@dataclass(frozen=True)
class Release:
    """What resume did with a partner's held jobs."""

    replayed: int = 0
    discarded: int = 0


def held_sk(held_at: datetime, job_id: str) -> str:
    """Fixed-width UTC time with microseconds, so string order is time order."""
    ts = held_at.astimezone(UTC) if held_at.tzinfo else held_at.replace(tzinfo=UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ") + "#" + job_id


def replay_batches(
    jobs: Iterable[HeldJob], max_count: int = SQS_BATCH, max_bytes: int = MAX_SQS_MESSAGE_BYTES
) -> Iterator[list[HeldJob]]:
    """Group jobs in order into SendMessageBatch calls: <= 10 entries, <= 256 KiB in total.

    A job that alone exceeds the limit cannot be enqueued; it is left out (the caller
    keeps it held and reports it).
    """
    fitting = (job for job in jobs if job.size <= max_bytes)
    return batches(fitting, lambda job: job.size, max_count, max_bytes)


async def count_held(dynamodb: DynamoDBClient, table: str, partner_id: str) -> int:
    """How many jobs are held for a partner (a COUNT Query: reports need no SQS client)."""
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": t.held_pk(partner_id)}},
        "Select": "COUNT",
    }
    total = 0
    while True:
        resp = await dynamodb.query(**kwargs)
        total += int(resp.get("Count", 0))
        if "LastEvaluatedKey" not in resp:
            return total
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


@dataclass
class HeldJobs:
    """The held-jobs store: hold, count, replay, discard."""

    dynamodb: DynamoDBClient
    table: str
    sqs: SQSClient
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    @classmethod
    def from_clients(cls, clients: Clients, settings: Settings) -> HeldJobs:
        return cls(clients.dynamodb, settings.table, clients.sqs)

    async def hold(self, job: SendJob, held_at: datetime | None = None) -> bool:
        """Store a job for its paused partner; False if this very hold was already stored."""
        held_at = held_at or utcnow()
        item = t.to_item(
            {
                "pk": t.held_pk(job.partner_id),
                "sk": held_sk(held_at, job.job_id),
                "partner_id": job.partner_id,
                "job_id": job.job_id,
                "held_at": held_at.astimezone(UTC).isoformat(),
                "job": job.to_json().decode(),
            }
        )
        try:
            await self.dynamodb.put_item(
                TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    async def count(self, partner_id: str) -> int:
        return await count_held(self.dynamodb, self.table, partner_id)

    async def pages(self, partner_id: str, keys_only: bool = False) -> AsyncIterator[list[HeldJob]]:
        """Held jobs of a partner, oldest first, one Query page at a time."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": t.held_pk(partner_id)}},
            "ScanIndexForward": True,
            "ConsistentRead": True,
        }
        if keys_only:
            kwargs["ProjectionExpression"] = "pk, sk"
        while True:
            resp = await self.dynamodb.query(**kwargs)
            page = []
            for item in resp.get("Items", []):
                key = {"pk": item["pk"], "sk": item["sk"]}
                if keys_only:
                    page.append(HeldJob(partner_id, "", "", "", key))
                else:
                    d = t.from_item(item)
                    page.append(
                        HeldJob(partner_id, d["job_id"], d.get("held_at", ""), d["job"], key)
                    )
            yield page
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    async def replay(self, partner_id: str, queue_url: str) -> int:
        """Re-enqueue every held job of a partner, oldest first; returns how many.

        Items are deleted only after SQS accepted them. Jobs SQS refused stay held and
        are reported with HeldError after everything else was moved.
        """
        moved = 0
        stuck = 0
        async for page in self.pages(partner_id):
            stuck += sum(1 for job in page if job.size > MAX_SQS_MESSAGE_BYTES)
            for batch in replay_batches(page):
                accepted = await self._enqueue(batch, queue_url)
                await self._delete([job.key for job in accepted])
                moved += len(accepted)
                stuck += len(batch) - len(accepted)
        log.info("held_replayed", partner_id=partner_id, replayed=moved, stuck=stuck)
        if stuck:
            raise HeldError(
                f"{moved} held jobs of {partner_id} replayed; {stuck} could not be enqueued"
                " and are still held",
                moved,
            )
        return moved

    async def discard(self, partner_id: str) -> int:
        """Delete every held job of a partner (an operator's decision); returns how many."""
        dropped = 0
        async for page in self.pages(partner_id, keys_only=True):
            await self._delete([job.key for job in page])
            dropped += len(page)
        log.warning("held_discarded", partner_id=partner_id, discarded=dropped)
        return dropped

    async def _enqueue(self, batch: list[HeldJob], queue_url: str) -> list[HeldJob]:
        """SendMessageBatch with retries of failed entries; returns the accepted jobs."""
        errors = await send_batch(
            self.sqs,
            queue_url,
            [job.body for job in batch],
            group_ids=[job.partner_id for job in batch],  # the send queue is a fair queue
            attempts=_WRITE_RETRIES,
            sleep=self.sleep,
        )
        refused = [job.job_id for job, error in zip(batch, errors, strict=True) if error]
        if refused:
            log.error(
                "held_enqueue_refused",
                job_ids=refused,
                errors=sorted({str(e) for e in errors if e}),
            )
        return [job for job, error in zip(batch, errors, strict=True) if error is None]

    async def _delete(self, keys: list[dict[str, AttributeValueTypeDef]]) -> None:
        for start in range(0, len(keys), BATCH_WRITE_ITEMS):
            chunk = keys[start : start + BATCH_WRITE_ITEMS]
            write = BatchWrite(self.table, [{"DeleteRequest": {"Key": key}} for key in chunk])
            if await write.run(self.dynamodb, attempts=_WRITE_RETRIES, cap=2.0, sleep=self.sleep):
                raise HeldError("DynamoDB kept returning UnprocessedItems while deleting held jobs")


# ---- for the CLI ---------------------------------------------------------------------


async def send_queue_url(clients: Clients, settings: Settings) -> str:
    return str((await clients.sqs.get_queue_url(QueueName=settings.send_queue))["QueueUrl"])


async def replay_held(
    clients: Clients,
    settings: Settings,
    partner_id: str,
    *,
    settle: bool = True,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Release:
    """After `store.resume`: re-enqueue the partner's held jobs, then sweep once more
    after the senders' cache time (see the module docstring)."""
    held = HeldJobs.from_clients(clients, settings)
    url = await send_queue_url(clients, settings)
    replayed = 0
    try:
        replayed += await held.replay(partner_id, url)
        if settle and settings.gate_cache_seconds > 0:
            await sleep(settings.gate_cache_seconds + 1)
            replayed += await held.replay(partner_id, url)
    except HeldError as exc:
        replayed += exc.moved
        raise
    finally:  # what was moved is announced, also when the rest failed
        await _announce(clients, settings, DetailType.REPLAYED, partner_id, replayed)
    return Release(replayed=replayed)


async def discard_held(
    clients: Clients,
    settings: Settings,
    partner_id: str,
    *,
    settle: bool = True,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Release:
    """After `store.resume`: drop the jobs held while paused; jobs held after the resume
    (senders' stale cache) are replayed, not dropped."""
    held = HeldJobs.from_clients(clients, settings)
    discarded = await held.discard(partner_id)
    await _announce(clients, settings, DetailType.DISCARDED, partner_id, discarded)
    replayed = 0
    try:
        if settle and settings.gate_cache_seconds > 0:
            await sleep(settings.gate_cache_seconds + 1)
            replayed = await held.replay(partner_id, await send_queue_url(clients, settings))
    except HeldError as exc:
        replayed = exc.moved
        raise
    finally:
        await _announce(clients, settings, DetailType.REPLAYED, partner_id, replayed)
    return Release(replayed=replayed, discarded=discarded)


async def _announce(
    clients: Clients, settings: Settings, kind: DetailType, partner_id: str, count: int
) -> None:
    """One Held Jobs Replayed/Discarded event for what an operation moved (none if it
    moved nothing)."""
    if count:
        event = held_released(kind, partner_id, count, utcnow())
        await Publisher.from_clients(clients, settings).announce(event)
