"""A stale claim ("possibly sent") settles in the send queue, without an operator: sent on
SES's word, waited for within the settle time, held back while SES's events are not all
counted, taken over by one delivery only and sent once after it (sender/settle.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from sender.records import ClaimState, JobRecords
from sender.settle import Settler, hold_seconds
from sesguard.aws import table as t
from sesguard.core.jobs import parse_job
from sesguard.ops.dlq import EventsWatch, events_pending
from sesguard.runtime import DeadLetter, Defer, Delivery, max_receive_count
from tests.conftest import json_logs, wait_until
from tests.sender.conftest import env
from tests.sender.support import PARTNER, Env, sender_settings, ses_word
from worker.service import WorkerService

__all__ = ["env"]

LONG_AGO = datetime.now(UTC) - timedelta(hours=2)  # past the claim's lease and the settle time


async def stale_claim(e: Env, job_id: str, at: datetime = LONG_AGO, token: str = "dead") -> None:
    """What a sender killed between its claim and its "sent" record leaves behind."""
    await e.clients.dynamodb.put_item(
        TableName=e.settings.table,
        Item=t.to_item(
            {
                "pk": t.job_pk(job_id),
                "sk": t.JOB_SK,
                "state": "sending",
                "token": token,
                "partner_id": PARTNER,
                "claimed_at": at.isoformat(),
            }
        ),
    )


async def job_record(e: Env, job_id: str) -> dict[str, Any] | None:
    resp = await e.clients.dynamodb.get_item(
        TableName=e.settings.table, Key=t.key(t.job_pk(job_id), t.JOB_SK), ConsistentRead=True
    )
    return t.from_item(resp["Item"]) if "Item" in resp else None


async def events_counted(e: Env) -> None:
    """The worker takes what waits in the events queue (bootstrap's s3:TestEvent): no SES
    event is left uncounted, so a stale claim past the settle time may be re-sent."""
    assert await WorkerService(e.clients, e.settings).run(drain=True) == 0


def settler(e: Env) -> Settler:
    records = JobRecords(e.clients.dynamodb, e.settings.table, 14, e.settings.visibility_timeout)
    return Settler(records, EventsWatch(e.clients.sqs, e.settings), e.settings)


def delivery(e: Env, n: int, receive_count: int = 2) -> Delivery:
    return Delivery(
        message_id=f"m-{n}",
        receipt=f"r-{n}",
        body=orjson.dumps(e.job(n)).decode(),
        receive_count=receive_count,
        sent_at=None,
        first_received_at=None,
        received_at=time.monotonic(),
        abort=asyncio.Event(),
        clock=time.monotonic,
    )


@pytest.fixture
def depth_asked(env: Env) -> Iterator[list[str]]:
    """The queue URL of every GetQueueAttributes the test's clients make."""
    seen: list[str] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append(str(params.get("QueueUrl")))

    hooks = env.clients.sqs.meta.events
    hooks.register("provide-client-params.sqs.GetQueueAttributes", record, unique_id="t-depth")
    yield seen
    hooks.unregister("provide-client-params.sqs.GetQueueAttributes", unique_id="t-depth")


async def test_a_stale_claim_ses_accepted_is_a_duplicate_and_turns_sent(env: Env) -> None:
    """The sender died after SES took the mail: its next delivery finds SES's word, sends
    nothing, and turns the record "sent" so later deliveries need no Query."""
    await stale_claim(env, "job-1")
    await ses_word(env.clients, env.settings, "job-1", PARTNER, "0100-abc")
    await env.enqueue(env.job(1))
    svc = await env.drain()
    assert svc.tally["duplicate"] == 1 and env.ses.sent == [] and await env.dead_letters() == []
    rec = await job_record(env, "job-1")
    assert rec is not None
    assert (rec["state"], rec["confirmed_by"]) == ("sent", "ses") and rec["sent_minute"]
    await env.enqueue(env.job(1))
    assert (await env.drain()).tally["duplicate"] == 1 and env.ses.sent == []


async def test_word_from_ses_for_another_partner_is_not_the_jobs(env: Env) -> None:
    await stale_claim(env, "job-1")
    await ses_word(env.clients, env.settings, "job-1", "someone-else", "0100-x")
    await events_counted(env)
    await env.enqueue(env.job(1))
    await env.drain()
    assert env.ses.subjects() == ["subject job-1"]


async def test_a_stale_claim_younger_than_the_settle_time_waits_in_the_queue(
    env: Env, depth_asked: list[str]
) -> None:
    """Stale for its lease (30 s), not yet for the settle time (900 s): looked at again
    when the settle time has passed; the events queues are not even asked."""
    claimed = datetime.now(UTC) - timedelta(seconds=60)
    await stale_claim(env, "job-1", at=claimed)
    d = delivery(env, 1)
    fate = await settler(env)(d, parse_job(d.body), "new-token")
    assert isinstance(fate, Defer) and "waiting for SES's word on it until" in fate.reason
    ready = claimed + timedelta(seconds=env.settings.dlq_settle_seconds)
    assert ready.isoformat() in fate.reason
    assert 0 < fate.seconds <= env.settings.dlq_settle_seconds
    assert depth_asked == [] and (await job_record(env, "job-1") or {})["token"] == "dead"


async def test_uncounted_ses_events_hold_a_stale_claim_back(env: Env) -> None:
    """Past the settle time, but an S3 notification waits uncounted (bootstrap's test
    event): SES's word may be in it. Held, looked at again later, never sent now."""
    await stale_claim(env, "job-1")
    d = delivery(env, 1)
    fate = await settler(env)(d, parse_job(d.body), "new-token")
    assert isinstance(fate, Defer)
    assert "S3 notifications wait in sesguard-ses-events" in fate.reason
    assert fate.seconds == hold_seconds(env.settings.dlq_settle_seconds) == 225
    assert (await job_record(env, "job-1") or {})["token"] == "dead"


async def test_on_its_last_receive_a_held_claim_is_dead_lettered_with_why(env: Env) -> None:
    """Deferring again would let SQS move it to the DLQ without a reason: it goes there
    itself, "possibly sent", for `dlq redrive` to settle by the same rule."""
    await stale_claim(env, "job-1")
    d = delivery(env, 1, receive_count=max_receive_count(env.settings))
    fate = await settler(env)(d, parse_job(d.body), "new-token")
    assert isinstance(fate, DeadLetter) and fate.reason.startswith("possibly sent")
    assert "S3 notifications wait" in fate.reason and "sesguard dlq redrive" in fate.reason


async def test_past_the_settle_time_without_word_it_is_taken_over_and_sent_once(
    env: Env,
) -> None:
    await stale_claim(env, "job-1")
    await events_counted(env)
    await env.enqueue(env.job(1), env.job(2))
    with json_logs() as logs:
        svc = await env.drain()
    assert sorted(env.ses.subjects()) == ["subject job-1", "subject job-2"]
    assert svc.tally["sent"] == 2 and await env.dead_letters() == []
    (line,) = [e for e in logs if e["event"] == "possibly_sent_resent"]
    assert (line["job_id"], line["partner_id"]) == ("job-1", PARTNER)
    assert line["claimed_at"] == LONG_AGO.isoformat() and line["age_seconds"] >= 7200
    assert "SES said nothing within 900s" in line["why"]
    rec = await job_record(env, "job-1")
    assert rec is not None and rec["state"] == "sent" and rec["token"] != "dead"


async def test_a_burst_of_stale_claims_asks_the_events_queues_once(
    env: Env, depth_asked: list[str]
) -> None:
    jobs = range(1, 13)
    for n in jobs:
        await stale_claim(env, f"job-{n}")
    await events_counted(env)
    events_url = (await env.clients.sqs.get_queue_url(QueueName=env.settings.events_queue))[
        "QueueUrl"
    ]
    del depth_asked[:]  # the worker's drain asked too
    await env.enqueue(*(env.job(n) for n in jobs))
    svc = env.service()
    svc.settler.events.ttl = 3600  # one answer for the whole run, however long it takes
    assert await asyncio.wait_for(svc.run(), 60) == 0
    assert sorted(env.ses.subjects()) == sorted(f"subject job-{n}" for n in jobs)
    assert depth_asked.count(events_url) == 1


async def test_only_one_of_two_take_overs_wins(env: Env) -> None:
    """Two deliveries that both decided to re-send: the take-over is conditional on the
    stale claim's token, so one wins; the other finds a live claim."""
    await stale_claim(env, "job-1")
    records = settler(env).records
    job = parse_job(orjson.dumps(env.job(1)).decode())
    a, b = await asyncio.gather(
        records.take_over(job, "dead", "token-a"), records.take_over(job, "dead", "token-b")
    )
    assert sorted([a.state, b.state]) == sorted([ClaimState.CLAIMED, ClaimState.IN_PROGRESS])
    rec = await job_record(env, "job-1")
    assert rec is not None and rec["token"] == (
        "token-a" if a.state is ClaimState.CLAIMED else "token-b"
    )


async def test_two_copies_of_a_stale_job_race_the_take_over_and_it_is_sent_once(
    env: Env,
) -> None:
    """A kill between the runtime's DLQ copy and its delete, or a redrive that crashed,
    leaves two copies of a job. Here both reach the take-over at the same moment, in two
    sender tasks: one wins and sends; the other finds a live claim, waits, then "sent"."""
    await stale_claim(env, "job-1")
    await events_counted(env)
    settings = sender_settings(concurrency=1, visibility_timeout=10)
    both = asyncio.Barrier(2)

    async def meet(params: dict[str, Any], **_: Any) -> None:
        if ":new" in params.get("ExpressionAttributeValues", {}):  # a take-over
            await asyncio.wait_for(both.wait(), 20)

    hooks = env.clients.dynamodb.meta.events
    hooks.register("provide-client-params.dynamodb.UpdateItem", meet, unique_id="t-meet")
    try:
        await env.enqueue(env.job(1))
        first = asyncio.create_task(env.service(settings).run())
        await wait_until(lambda: both.n_waiting == 1)  # the first holds its copy there
        await env.enqueue(env.job(1))
        second = asyncio.create_task(env.service(settings).run())
        assert await asyncio.wait_for(asyncio.gather(first, second), 60) == [0, 0]
    finally:
        hooks.unregister("provide-client-params.dynamodb.UpdateItem", unique_id="t-meet")
    assert env.ses.subjects() == ["subject job-1"]
    tallies = [s.tally for s in env.services[-2:]]
    assert sum(t["sent"] for t in tallies) == 1 and sum(t["duplicate"] for t in tallies) == 1
    assert sum(t["deferred"] for t in tallies) >= 1  # the loser saw the winner's live claim
    assert await env.dead_letters() == []


async def test_an_events_dlq_someone_is_reading_cannot_be_called_empty(env: Env) -> None:
    """Another reader (a listing, another sender task) holds its messages out of sight:
    "nothing received" would not mean "nothing there"."""
    await events_counted(env)
    dlq = (await env.clients.sqs.get_queue_url(QueueName=f"{env.settings.events_queue}-dlq"))[
        "QueueUrl"
    ]
    await env.clients.sqs.send_message(QueueUrl=dlq, MessageBody="{}")
    got = await env.clients.sqs.receive_message(QueueUrl=dlq, VisibilityTimeout=60)
    assert len(got["Messages"]) == 1
    why = await events_pending(env.clients.sqs, env.settings)
    assert why is not None and "being read by someone else" in why


@pytest.mark.parametrize(("settle", "hold"), [(0, 10), (20, 10), (900, 225), (86400, 300)])
def test_a_held_claim_is_looked_at_again_at_most_every_10s_and_at_least_every_5min(
    settle: float, hold: int
) -> None:
    assert hold_seconds(settle) == hold
