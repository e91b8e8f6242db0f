"""The Python enqueue API against moto: SQS batch limits, partial failures, nothing lost."""

from __future__ import annotations

from typing import Any

import pytest

from sesguard.aws.enqueue import EnqueueError, Enqueuer
from sesguard.core.jobs import MAX_SQS_MESSAGE_BYTES, JobError
from tests.conftest import drain_queue


def job(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "job_id": f"job-{n}",
        "partner_id": "acme",
        "from": "news@isv.example.com",
        "to": [f"user{n}@example.org"],
        "subject": f"subject {n}",
        "text": "hello",
        **extra,
    }


@pytest.fixture
async def enqueuer(clients: Any) -> Enqueuer:
    await clients.sqs.create_queue(QueueName="jobs")
    return await Enqueuer.for_queue(clients.sqs, "jobs")


class BatchRecorder:
    """Records each SendMessageBatch; can make SQS report entries as failed."""

    def __init__(self, sqs: Any) -> None:
        self.sqs = sqs
        self.sizes: list[tuple[int, int]] = []  # (entries, bytes) per call
        self.fail_next: list[tuple[int, bool]] = []  # (entry index, sender fault), next call
        self._dropped: list[dict[str, Any]] = []

    def params(self, params: dict[str, Any], **_: Any) -> None:
        entries = params["Entries"]
        self.sizes.append((len(entries), sum(len(e["MessageBody"].encode()) for e in entries)))
        fail, self.fail_next = dict(self.fail_next), []
        self._dropped = [
            {"Id": e["Id"], "SenderFault": fail[i], "Code": "X", "Message": "injected"}
            for i, e in enumerate(entries)
            if i in fail
        ]
        params["Entries"] = [e for i, e in enumerate(entries) if i not in fail]

    def after(self, parsed: dict[str, Any], **_: Any) -> None:
        if self._dropped:  # as SQS reports them: not sent, listed under Failed
            parsed.setdefault("Failed", []).extend(self._dropped)

    def __enter__(self) -> BatchRecorder:
        events = self.sqs.meta.events
        events.register("provide-client-params.sqs.SendMessageBatch", self.params, "t-p")
        events.register("after-call.sqs.SendMessageBatch", self.after, "t-a")
        return self

    def __exit__(self, *exc: object) -> None:
        events = self.sqs.meta.events
        events.unregister("provide-client-params.sqs.SendMessageBatch", unique_id="t-p")
        events.unregister("after-call.sqs.SendMessageBatch", unique_id="t-a")


async def test_batches_respect_sqs_limits_and_keep_order(clients: Any, enqueuer: Enqueuer) -> None:
    big = "x" * 60_000  # four of these do not fit in one 256 KiB batch
    jobs = [job(n) for n in range(23)] + [job(100 + n, text=big) for n in range(5)]
    with BatchRecorder(clients.sqs) as rec:
        ids = await enqueuer.send(jobs)
    assert ids == [j["job_id"] for j in jobs]
    assert all(n <= 10 and size <= MAX_SQS_MESSAGE_BYTES for n, size in rec.sizes)
    assert sum(n for n, _ in rec.sizes) == 28
    assert [b["job_id"] for b in await drain_queue(clients, enqueuer.queue_url)] == ids


async def test_entries_sqs_failed_to_take_are_retried_not_lost(
    clients: Any, enqueuer: Enqueuer
) -> None:
    enqueuer.attempts = 3
    with BatchRecorder(clients.sqs) as rec:
        rec.fail_next = [(2, False), (7, False)]  # server-side failures: retry those two
        ids = await enqueuer.send([job(n) for n in range(10)])
    assert [n for n, _ in rec.sizes] == [10, 2]
    got = sorted(b["job_id"] for b in await drain_queue(clients, enqueuer.queue_url))
    assert got == sorted(ids) and len(got) == 10  # every job once


async def test_entries_sqs_refuses_raise_with_their_job_ids(
    clients: Any, enqueuer: Enqueuer
) -> None:
    with BatchRecorder(clients.sqs) as rec, pytest.raises(EnqueueError) as err:
        rec.fail_next = [(4, True)]  # the sender's fault: retrying cannot help
        await enqueuer.send([job(n) for n in range(6)])
    assert err.value.failed_job_ids == ["job-4"]
    assert "job-4" in str(err.value)


async def test_bad_and_oversized_jobs_send_nothing(clients: Any, enqueuer: Enqueuer) -> None:
    with pytest.raises(JobError, match="SQS allows"):
        await enqueuer.send([*(job(n) for n in range(12)), job(99, text="x" * 300_000)])
    with pytest.raises(JobError):
        await enqueuer.send([job(3), job(4, to=["not an address"])])
    assert await drain_queue(clients, enqueuer.queue_url) == []
