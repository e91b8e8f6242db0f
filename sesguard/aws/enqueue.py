"""Putting send jobs on the queue: the Python API for ISV applications and the CLI.

Jobs go out in SendMessageBatch calls of at most 10 entries and 256 KiB in total, and
every entry SQS reports as failed is retried, so a caller either gets all job ids back
or an exception naming the jobs that did not make it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sesguard.core.backoff import backoff_delay
from sesguard.core.jobs import MAX_SQS_MESSAGE_BYTES, JobError, SendJob, parse_job

SQS_BATCH_ENTRIES = 10
T = TypeVar("T")


class EnqueueError(Exception):
    def __init__(self, message: str, failed_job_ids: list[str]) -> None:
        super().__init__(message)
        self.failed_job_ids = failed_job_ids


def sqs_batches(
    items: Iterable[T],
    size: Callable[[T], int],
    max_count: int = SQS_BATCH_ENTRIES,
    max_bytes: int = MAX_SQS_MESSAGE_BYTES,
) -> Iterator[list[T]]:
    """Group items, in order, into SendMessageBatch calls: <= 10 entries, <= 256 KiB in
    total. Callers deal with an item over the limit first (it would make a batch alone)."""
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


def batches(bodies: Iterable[tuple[str, bytes]]) -> Iterator[list[tuple[str, bytes]]]:
    """(job_id, body) pairs in SQS batches; a body over 256 KiB is a JobError."""

    def checked() -> Iterator[tuple[str, bytes]]:
        for job_id, body in bodies:
            if len(body) > MAX_SQS_MESSAGE_BYTES:
                raise JobError(
                    f"job {job_id} is {len(body)} bytes; SQS allows {MAX_SQS_MESSAGE_BYTES}"
                )
            yield job_id, body

    return sqs_batches(checked(), lambda pair: len(pair[1]))


async def send_batch(
    sqs: Any,
    queue_url: str,
    bodies: Sequence[str],
    *,
    attempts: int = 8,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[str | None]:
    """One SendMessageBatch (<= 10 bodies, <= 256 KiB in total, as `sqs_batches` groups
    them), retrying the entries SQS failed on its side; for each body, None if SQS
    accepted it, else why not. An entry SQS refuses as the sender's fault is not retried."""
    errors: list[str | None] = ["not sent"] * len(bodies)
    pending = {str(i): body for i, body in enumerate(bodies)}
    for attempt in range(attempts):
        resp = await sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": i, "MessageBody": body} for i, body in pending.items()],
        )
        for ok in resp.get("Successful", []):
            pending.pop(ok["Id"], None)
            errors[int(ok["Id"])] = None
        failed = resp.get("Failed", [])
        for f in failed:
            errors[int(f["Id"])] = f"{f.get('Code')}: {f.get('Message', '')}".strip()
        if not pending or any(f.get("SenderFault") for f in failed):
            break
        await sleep(backoff_delay(attempt, base=0.05, cap=2.0))
    return errors


@dataclass
class Enqueuer:
    """Send jobs to the send queue: `await Enqueuer(sqs, url).send(jobs)`."""

    sqs: Any
    queue_url: str
    attempts: int = 5

    @classmethod
    async def for_queue(cls, sqs: Any, queue_name: str) -> Enqueuer:
        url = (await sqs.get_queue_url(QueueName=queue_name))["QueueUrl"]
        return cls(sqs, url)

    async def send(self, jobs: Iterable[SendJob | dict[str, Any]]) -> list[str]:
        parsed = [j if isinstance(j, SendJob) else parse_job(j) for j in jobs]
        ids: list[str] = []
        for batch in batches((j.job_id, j.to_json()) for j in parsed):
            await self._send_batch(batch)
            ids.extend(job_id for job_id, _ in batch)
        return ids

    async def _send_batch(self, batch: list[tuple[str, bytes]]) -> None:
        pending = {str(i): (job_id, body) for i, (job_id, body) in enumerate(batch)}
        for attempt in range(self.attempts):
            resp = await self.sqs.send_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": i, "MessageBody": body.decode()} for i, (_, body) in pending.items()
                ],
            )
            failed = resp.get("Failed", [])
            hard = [f for f in failed if f.get("SenderFault")]
            if hard:
                ids = [pending[f["Id"]][0] for f in hard]
                raise EnqueueError(f"SQS refused jobs {ids}: {hard[0].get('Message')}", ids)
            pending = {f["Id"]: pending[f["Id"]] for f in failed}
            if not pending:
                return
            await asyncio.sleep(0.2 * 2**attempt)
        ids = [job_id for job_id, _ in pending.values()]
        raise EnqueueError(f"SQS did not accept jobs {ids}", ids)


def read_jobs_file(lines: Iterable[str]) -> list[SendJob]:
    """Parse a JSONL file completely; any bad line rejects the whole file, naming the line."""
    jobs: list[SendJob] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            jobs.append(parse_job(line))
        except JobError as exc:
            raise JobError(f"line {number}: {exc}", exc.field) from None
    return jobs
