"""Held jobs against moto: order, one item per held message, replay and discard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from sesguard.aws.held import (
    HeldError,
    HeldJob,
    HeldJobs,
    discard_held,
    held_sk,
    replay_batches,
    replay_held,
    send_queue_url,
)
from sesguard.core.jobs import MAX_SQS_MESSAGE_BYTES, SendJob, parse_job
from sesguard.ops.bootstrap import bootstrap
from tests.conftest import drain_queue

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def job(n: int, partner: str = "acme", text: str = "hello") -> SendJob:
    return parse_job(
        {
            "job_id": f"job-{n}",
            "partner_id": partner,
            "from": "news@isv.example.com",
            "to": [f"user{n}@example.org"],
            "subject": f"message {n}",
            "text": text,
        }
    )


@pytest.fixture
async def held(clients, settings) -> HeldJobs:
    await bootstrap(clients, settings, [])
    return HeldJobs.from_clients(clients, settings)


def test_sort_key_orders_by_time_even_at_whole_seconds() -> None:
    a = held_sk(T0, "b")
    b = held_sk(T0 + timedelta(microseconds=1), "a")
    c = held_sk(T0 + timedelta(seconds=1), "a")
    assert a < b < c
    assert a == "2026-03-01T12:00:00.000000Z#b"


def test_replay_batches_respect_count_and_bytes() -> None:
    def hj(n: int, size: int) -> HeldJob:
        return HeldJob("p", f"j{n}", "", "x" * size, {})

    small = [hj(i, 100) for i in range(23)]
    assert [len(b) for b in replay_batches(small)] == [10, 10, 3]
    big = [hj(i, 100_000) for i in range(5)]
    batches = list(replay_batches(big))
    assert [len(b) for b in batches] == [2, 2, 1]
    assert all(sum(j.size for j in b) <= MAX_SQS_MESSAGE_BYTES for b in batches)
    too_big = [hj(0, 100), hj(1, MAX_SQS_MESSAGE_BYTES + 1), hj(2, 100)]
    assert [[j.job_id for j in b] for b in replay_batches(too_big)] == [["j0", "j2"]]


async def test_hold_is_one_item_per_held_message_and_counted(held: HeldJobs, store) -> None:
    assert await held.hold(job(1), T0)
    assert not await held.hold(job(1), T0)  # the same message delivered again
    assert await held.hold(job(2), T0 + timedelta(seconds=1))
    assert await held.hold(job(3, partner="other"), T0)
    assert await held.count("acme") == 2
    assert await held.count("other") == 1
    assert await held.count("nobody") == 0


async def test_replay_enqueues_in_order_and_removes_only_those(
    held: HeldJobs, clients, settings
) -> None:
    # 27 jobs: three SQS batches and two BatchWriteItem chunks (25 + 2) of deletes
    for n in reversed(range(27)):
        await held.hold(job(n), T0 + timedelta(milliseconds=n))
    await held.hold(job(99, partner="other"), T0)
    url = await send_queue_url(clients, settings)

    sent_batches: list[list[str]] = []

    def record(params, **_):
        if params.get("QueueUrl") == url and "Entries" in params:
            sent_batches.append(
                [orjson.loads(e["MessageBody"])["job_id"] for e in params["Entries"]]
            )

    clients.sqs.meta.events.register(
        "provide-client-params.sqs.SendMessageBatch", record, unique_id="t-held"
    )
    try:
        assert await held.replay("acme", url) == 27
    finally:
        clients.sqs.meta.events.unregister(
            "provide-client-params.sqs.SendMessageBatch", unique_id="t-held"
        )

    assert [len(b) for b in sent_batches] == [10, 10, 7]
    assert [j for b in sent_batches for j in b] == [f"job-{n}" for n in range(27)]
    bodies = await drain_queue(clients, url)
    assert sorted(b["job_id"] for b in bodies) == sorted(f"job-{n}" for n in range(27))
    assert SendJob.model_validate(bodies[0]).partner_id == "acme"  # full payload kept
    assert await held.count("acme") == 0
    assert await held.count("other") == 1  # other partners untouched
    assert await held.replay("acme", url) == 0


async def test_replay_keeps_jobs_sqs_refused(held: HeldJobs, clients, settings) -> None:
    for n in range(3):
        await held.hold(job(n), T0 + timedelta(seconds=n))
    url = await send_queue_url(clients, settings)

    def refuse_one(params, **_):
        for entry in params["Entries"]:
            if orjson.loads(entry["MessageBody"])["job_id"] == "job-0":
                entry["DelaySeconds"] = 901  # SQS refuses this entry (SenderFault)

    clients.sqs.meta.events.register(
        "provide-client-params.sqs.SendMessageBatch", refuse_one, unique_id="t-refuse"
    )
    try:
        with pytest.raises(HeldError, match="1 could not be enqueued"):
            await held.replay("acme", url)
    finally:
        clients.sqs.meta.events.unregister(
            "provide-client-params.sqs.SendMessageBatch", unique_id="t-refuse"
        )
    assert await held.count("acme") == 1
    assert sorted(b["job_id"] for b in await drain_queue(clients, url)) == ["job-1", "job-2"]
    assert await held.replay("acme", url) == 1  # once SQS takes it, it moves
    assert await held.count("acme") == 0


async def test_discard_deletes_all_and_reports_count(held: HeldJobs) -> None:
    for n in range(30):
        await held.hold(job(n), T0 + timedelta(seconds=n))
    assert await held.discard("acme") == 30
    assert await held.count("acme") == 0
    assert await held.discard("acme") == 0


async def test_cli_helpers_sweep_jobs_held_after_the_resume(
    held: HeldJobs, clients, settings
) -> None:
    await held.hold(job(1), T0)
    naps: list[float] = []

    async def nap(seconds: float) -> None:
        naps.append(seconds)
        # a sender with a stale "paused" cache holds one more job meanwhile
        await held.hold(job(2), T0 + timedelta(seconds=5))

    result = await replay_held(clients, settings, "acme", sleep=nap)
    assert result.replayed == 2 and result.discarded == 0
    assert naps == [settings.gate_cache_seconds + 1]

    await held.hold(job(3), T0)
    naps.clear()

    async def nap2(seconds: float) -> None:
        naps.append(seconds)
        await held.hold(job(4), T0 + timedelta(seconds=9))

    result = await discard_held(clients, settings, "acme", sleep=nap2)
    assert (result.discarded, result.replayed) == (1, 1)
    url = await send_queue_url(clients, settings)
    assert sorted(b["job_id"] for b in await drain_queue(clients, url)) == [
        "job-1",
        "job-2",
        "job-4",
    ]
    assert await held.count("acme") == 0
