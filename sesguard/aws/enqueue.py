"""Putting send jobs on the queue: the Python API for ISV applications and the CLI.

Jobs go out in SendMessageBatch calls of at most 10 entries and 256 KiB in total, and
every entry SQS reports as failed on its side is retried (sesguard.aws.batching), so a
caller either gets all job ids back or an exception naming the jobs that did not make it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sesguard.aws.batching import batches, send_batch
from sesguard.core.jobs import MAX_SQS_MESSAGE_BYTES, JobError, SendJob, parse_job
from sesguard.errors import Failed

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient


class EnqueueError(Failed):
    """SQS did not take some jobs (they were not enqueued; the ids say which)."""

    def __init__(self, message: str, failed_job_ids: list[str]) -> None:
        super().__init__(message)
        self.failed_job_ids = failed_job_ids


def job_batches(jobs: Iterable[SendJob]) -> Iterator[list[tuple[SendJob, bytes]]]:
    """Jobs with their bodies in SQS batches; a body over 256 KiB is a JobError."""

    def checked() -> Iterator[tuple[SendJob, bytes]]:
        for job in jobs:
            body = job.to_json()
            if len(body) > MAX_SQS_MESSAGE_BYTES:
                raise JobError(
                    f"job {job.job_id} is {len(body)} bytes; SQS allows {MAX_SQS_MESSAGE_BYTES}"
                )
            yield job, body

    return batches(checked(), lambda pair: len(pair[1]))


@dataclass
class Enqueuer:
    """Send jobs to the send queue: `await Enqueuer(sqs, url).send(jobs)`.

    Every message carries `MessageGroupId` = the job's partner id, so the send queue
    works as an SQS fair queue: a partner with a backlog does not make the others' jobs
    wait (docs/operating.md, "Send jobs")."""

    sqs: SQSClient
    queue_url: str
    attempts: int = 5

    @classmethod
    async def for_queue(cls, sqs: SQSClient, queue_name: str) -> Enqueuer:
        url = (await sqs.get_queue_url(QueueName=queue_name))["QueueUrl"]
        return cls(sqs, url)

    async def send(self, jobs: Iterable[SendJob | dict[str, Any]]) -> list[str]:
        parsed = [j if isinstance(j, SendJob) else parse_job(j) for j in jobs]
        ids: list[str] = []
        for batch in job_batches(parsed):
            await self._send_batch(batch)
            ids.extend(job.job_id for job, _ in batch)
        return ids

    async def _send_batch(self, batch: list[tuple[SendJob, bytes]]) -> None:
        failures = await send_batch(
            self.sqs,
            self.queue_url,
            [body.decode() for _, body in batch],
            group_ids=[job.partner_id for job, _ in batch],
            attempts=self.attempts,
        )
        failed = [(job.job_id, f) for (job, _), f in zip(batch, failures, strict=True) if f]
        hard = [(job_id, f) for job_id, f in failed if f.sender_fault]
        if hard:
            ids = [job_id for job_id, _ in hard]
            raise EnqueueError(f"SQS refused jobs {ids}: {hard[0][1].message}", ids)
        if failed:
            ids = [job_id for job_id, _ in failed]
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
