"""The sender under failures injected at the HTTP edge (tests/fault_hooks.py): outages
keep every job and send each once; "sent" records before deletes; drains that wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from sender.records import JOB_SK
from sesguard.aws import table as t
from sesguard.runtime import RetryPolicy
from tests.conftest import wait_until
from tests.fault_hooks import LOCALSTACK_NOT_EMULATED, Fault, inject
from tests.sender.support import Env, sender_settings

QUICK_PROBES = RetryPolicy(tolerance=900, probe_first=0.2, probe_cap=0.5)


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


async def record(e: Env, job_id: str) -> dict[str, Any] | None:
    resp = await e.clients.dynamodb.get_item(
        TableName=e.settings.table, Key=t.key(t.job_pk(job_id), JOB_SK), ConsistentRead=True
    )
    return t.from_item(resp["Item"]) if "Item" in resp else None


async def test_sent_records_are_written_before_the_message_is_deleted(env: Env) -> None:
    """Issue 15, item 2: DynamoDB answers 500 to the "sent" records' BatchWriteItem. The
    messages must not be deleted while their records say "sending": a later delivery of
    the same job_id would be dead-lettered as "possibly sent" instead of being recognised
    as a duplicate. (Before: deleted anyway, records left "sending".)"""
    dynamodb = env.clients.dynamodb
    refused = Fault(status=500, code="InternalServerError")
    refused.only = lambda _request: refused.calls < 2  # the first two writes fail
    await env.enqueue(env.job(1), env.job(2))
    with inject(dynamodb, "BatchWriteItem", refused):
        svc = await env.drain()
    for job_id in ("job-1", "job-2"):
        rec = await record(env, job_id)
        assert rec is not None and rec["state"] == "sent", rec
    assert refused.calls == 2 and refused.passed >= 1  # refused twice, then written
    assert svc.tally["sent"] == 2
    assert await env.queue_depth() == (0, 0)

    await env.enqueue(env.job(1))  # the same job again: a duplicate, not "possibly sent"
    again = await env.drain()
    assert again.tally["duplicate"] == 1
    assert Counter(env.ses.subjects()) == {"subject job-1": 1, "subject job-2": 1}
    assert await env.dead_letters() == []


async def test_drain_waits_for_messages_in_flight_elsewhere(env: Env) -> None:
    """Issue 15, item 3: a killed task left a job in flight. `sender --drain` must not
    report the queue drained until that job is visible again and handled. (Before: it
    logged sender_drained and left the job for a second drain.)"""
    await env.enqueue(env.job(1), env.job(2))
    taken = await env.clients.sqs.receive_message(
        QueueUrl=env.queue_url, MaxNumberOfMessages=1, VisibilityTimeout=2
    )
    assert len(taken["Messages"]) == 1  # ... and that task died without deleting it
    svc = await env.drain()
    assert svc.tally["sent"] == 2
    assert sorted(env.ses.subjects()) == ["subject job-1", "subject job-2"]
    assert await env.queue_depth() == (0, 0)


@pytest.mark.parametrize(
    ("client", "fault", "error"),
    [
        ("sesv2", Fault(status=503, code="ServiceUnavailable"), "ServiceUnavailable"),
        (
            "sesv2",
            Fault(status=501, code="InternalFailure", message=LOCALSTACK_NOT_EMULATED),
            "has not yet been emulated",
        ),
        ("dynamodb", Fault(status=500, code="InternalServerError"), "InternalServerError"),
        ("sesv2", Fault(connection_error=True), "EndpointConnectionError"),
    ],
    ids=["ses-503", "ses-not-emulated-501", "dynamodb-500", "ses-unreachable"],
)
async def test_an_outage_keeps_every_job_and_sends_each_once_when_it_ends(
    env: Env, logs: list[dict[str, Any]], client: str, fault: Fault, error: str
) -> None:
    """SES or DynamoDB down: the breaker opens after a few failures (one alert line),
    the sender stops receiving and keeps the jobs, probes, and once the dependency
    answers sends every job exactly once. Nothing is dead-lettered: before, a job that
    failed this way went back at visibility 0 and SQS dead-lettered it within a second,
    without a reason."""
    n = 12
    await env.enqueue(*(env.job(i) for i in range(n)))
    # SES: SendEmail (on its own client) and the probe's GetAccount alike
    targets = ["ses_send", "sesv2"] if client == "sesv2" else [client]
    with contextlib.ExitStack() as faults:
        for target in targets:
            faults.enter_context(inject(getattr(env.clients, target), "*", fault))
        svc = env.service(
            sender_settings(concurrency=4), drain=False, wait_seconds=1, retry=QUICK_PROBES
        )
        run = asyncio.create_task(svc.run())
        await wait_until(lambda: svc.consumer is not None and svc.consumer.held)
        received = svc.tally["received"]
        await wait_until(lambda: fault.calls >= received + 3)  # probing, still down
        assert svc.tally["received"] == received  # not churning through the queue
        assert env.ses.sent == []
        fault.active = False
        await wait_until(lambda: len(env.ses.sent) == n)
        svc.stop("test done")
        assert await asyncio.wait_for(run, 30) == 0
    assert Counter(env.ses.subjects()) == {f"subject job-{i}": 1 for i in range(n)}
    assert await env.dead_letters() == []
    assert await env.queue_depth() == (0, 0)
    opened = [e for e in logs if e["event"] == "dependency_unavailable"]
    closed = [e for e in logs if e["event"] == "dependency_available"]
    assert len(opened) == 1 and len(closed) == 1
    assert opened[0]["alert"] is True and error in opened[0]["error"]
    assert opened[0]["dependency"] == {"sesv2": "ses", "dynamodb": "dynamodb"}[client]
