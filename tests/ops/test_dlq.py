"""`sesguard dlq` and `sesguard dlq redrive` end to end on moto: jobs in the DLQ as the
real sender puts them there, SES's word on a job as the worker writes it, the real CLI
lists and redrives; nothing is ever sent twice and nothing is lost."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError

from sesguard.aws import table as t
from sesguard.aws.deadletter import possibly_sent_reason, send_to_dlq
from sesguard.core.partners import Limits, Profile
from tests.conftest import cli
from tests.fault_hooks import Fault, inject
from tests.sender.conftest import env
from tests.sender.support import DOMAIN, PARTNER, Env, ses_word
from worker.service import WorkerService

__all__ = ["env"]

HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)


async def stale_claim(e: Env, job_id: str, at: datetime = HOUR_AGO) -> None:
    """What a sender killed between its claim and its "sent" record leaves behind."""
    await e.clients.dynamodb.put_item(
        TableName=e.settings.table,
        Item=t.to_item(
            {
                "pk": t.job_pk(job_id),
                "sk": t.JOB_SK,
                "state": "sending",
                "token": "dead-task",
                "partner_id": PARTNER,
                "claimed_at": at.isoformat(),
            }
        ),
    )


async def possibly_sent(e: Env, n: int, copies: int = 1, at: datetime = HOUR_AGO) -> None:
    """A stale claim, and its job in the DLQ as the sender puts one there when it cannot
    settle it within the queue's receives (sender/settle.py); `copies` > 1: as a kill
    between the runtime's DLQ copy and its delete leaves it."""
    await stale_claim(e, f"job-{n}", at)
    for _ in range(copies):
        body = orjson.dumps(e.job(n)).decode()
        await send_to_dlq(
            e.clients.sqs, e.dlq_url, body, possibly_sent_reason(at.isoformat()), f"sqs-{n}"
        )


async def job_record(e: Env, job_id: str) -> dict[str, Any] | None:
    resp = await e.clients.dynamodb.get_item(
        TableName=e.settings.table, Key=t.key(t.job_pk(job_id), t.JOB_SK), ConsistentRead=True
    )
    return t.from_item(resp["Item"]) if "Item" in resp else None


@pytest.fixture(autouse=True)
async def ready(env: Env) -> Env:
    """The sender's env, with the worker caught up: it has taken the s3:TestEvent S3 sent
    when bootstrap configured the notifications (a redrive holds possibly-sent jobs back
    while any S3 notification waits uncounted)."""
    assert await WorkerService(env.clients, env.settings).run(drain=True) == 0
    return env


def redrive(*args: str, **env: str) -> dict[str, Any]:
    r = cli("dlq", "redrive", "--json", *args, **env)
    assert r.code == 0, (r.code, r.out, r.err)
    out: dict[str, Any] = json.loads(r.out)
    return out


def listing(*args: str) -> list[dict[str, Any]]:
    r = cli("dlq", "--json", *args)
    assert r.code == 0, (r.code, r.out, r.err)
    out: list[dict[str, Any]] = json.loads(r.out)
    return out


def sent_subjects(e: Env) -> Counter[str]:
    return Counter(e.ses.subjects())


async def test_possibly_sent_then_confirmed_by_ses_is_dropped_never_resent(env: Env) -> None:
    """A sender died after SES took the mail, and its job reached the DLQ "possibly sent",
    with a reason that points to the redrive (not to deleting the record). SES's word
    then comes; the redrive drops the job, and a later delivery is a duplicate."""
    await possibly_sent(env, 1)
    (entry,) = listing()
    assert (entry["job_id"], entry["partner_id"]) == ("job-1", PARTNER)
    assert entry["reason"].startswith("possibly sent: a delivery claimed this job_id at")
    assert "sesguard dlq redrive" in entry["reason"] and "delete" not in entry["reason"]
    assert 0 <= entry["age_seconds"] < 600

    await ses_word(env.clients, env.settings, "job-1", PARTNER, "0100-job-1")
    assert (await job_record(env, "job-1") or {})["state"] == "sending"

    report = redrive()
    assert report["summary"]["dropped_sent"] == 1 and report["summary"]["requeued"] == 0
    (msg,) = report["messages"]
    assert msg["action"] == "dropped_sent" and "SES accepted its message" in msg["why"]
    assert listing() == [] and await env.queue_depth() == (0, 0)
    await env.enqueue(env.job(1))  # and a later delivery of it is a duplicate
    again = await env.drain()
    assert again.tally["duplicate"] == 1 and env.ses.sent == []


async def test_a_job_dead_lettered_twice_is_sent_once(env: Env) -> None:
    """A kill between the runtime's DLQ copy and its delete leaves two copies: the
    redrive re-enqueues one and drops the other; a third copy found later is dropped as
    sent. With SES's word, every copy is dropped."""
    await possibly_sent(env, 1, copies=2)
    first = redrive()
    assert sorted(m["action"] for m in first["messages"]) == ["dropped_sent", "requeued_unclaimed"]
    await env.drain()
    assert sent_subjects(env) == {"subject job-1": 1}
    body = orjson.dumps(env.job(1)).decode()
    await send_to_dlq(env.clients.sqs, env.dlq_url, body, possibly_sent_reason(None), "sqs-1")
    (late,) = redrive()["messages"]
    assert late["action"] == "dropped_sent" and late["why"].startswith("already sent")

    await possibly_sent(env, 2, copies=2)
    await ses_word(env.clients, env.settings, "job-2", PARTNER, "0100-job-2")
    both = redrive()
    assert [m["action"] for m in both["messages"]] == ["dropped_sent", "dropped_sent"]
    await env.drain()
    assert sent_subjects(env) == {"subject job-1": 1} and listing() == []


async def test_possibly_sent_without_a_send_event_is_resent_once_after_the_settle_time(
    env: Env,
) -> None:
    await possibly_sent(env, 2)
    # Within the settle time (from the claim): it waits, nothing changes.
    early = redrive(SESGUARD_DLQ_SETTLE_SECONDS="7200")
    (msg,) = early["messages"]
    assert msg["action"] == "kept" and "waiting for SES's word on it until" in msg["why"]
    assert (await job_record(env, "job-2") or {})["state"] == "sending"
    # After it, SES said nothing: it never took it. Claim removed, job re-enqueued.
    late = redrive(SESGUARD_DLQ_SETTLE_SECONDS="1800")
    assert late["summary"]["requeued_unclaimed"] == 1
    assert await job_record(env, "job-2") is None
    await env.drain()
    assert sent_subjects(env) == {"subject job-2": 1}
    assert listing() == [] and redrive()["messages"] == []


async def test_a_backlog_of_ses_events_holds_possibly_sent_jobs_back(env: Env) -> None:
    """SES's events may wait, uncounted, in the events queue or its DLQ: re-sending then
    could send twice, so the job stays until they are counted."""
    await possibly_sent(env, 3)
    events_url = (await env.clients.sqs.get_queue_url(QueueName=env.settings.events_queue))[
        "QueueUrl"
    ]
    events_dlq = (
        await env.clients.sqs.get_queue_url(QueueName=f"{env.settings.events_queue}-dlq")
    )["QueueUrl"]
    note = '{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"},'
    note += ' "object": {"key": "k"}}}]}'
    await env.clients.sqs.send_message(QueueUrl=events_url, MessageBody=note)
    (msg,) = redrive()["messages"]
    assert (
        msg["action"] == "kept" and "1 S3 notifications wait in sesguard-ses-events" in msg["why"]
    )
    await env.clients.sqs.purge_queue(QueueUrl=events_url)
    await env.clients.sqs.send_message(
        QueueUrl=events_dlq,
        MessageBody=note,
        MessageAttributes={
            "sesguard_reason": {"DataType": "String", "StringValue": "s3: SlowDown (past...)"}
        },
    )
    await env.clients.sqs.send_message(  # names nothing countable: does not hold anything
        QueueUrl=events_dlq,
        MessageBody="junk",
        MessageAttributes={
            "sesguard_reason": {"DataType": "String", "StringValue": "bad notification: junk"}
        },
    )
    (msg,) = redrive()["messages"]
    assert (
        msg["action"] == "kept"
        and "1 S3 notifications are in sesguard-ses-events-dlq" in msg["why"]
    )
    assert len(listing("--events")) == 2  # still there, visible again
    await env.clients.sqs.purge_queue(QueueUrl=events_dlq)
    assert redrive()["summary"]["requeued_unclaimed"] == 1
    await env.drain()
    assert sent_subjects(env) == {"subject job-3": 1}


async def test_each_kind_of_dead_letter_gets_its_safe_fate(env: Env) -> None:
    """Malformed stays; rejected stays; unknown partner stays until it exists; a job
    never claimed (an outage past the tolerance) goes back; a job without its own job_id
    goes back under the id the sender knew it by."""
    no_id = env.job("x", partner="ghost")
    del no_id["job_id"]
    await env.enqueue(
        "not json at all",
        env.job(4, **{"from": "x@unverified.example.net"}),  # SES rejects it
        env.job(5, partner="ghost"),
        no_id,
    )
    await env.drain()
    dlq_url = env.dlq_url
    await env.clients.sqs.send_message(  # as the runtime dead-letters one past the tolerance
        QueueUrl=dlq_url,
        MessageBody=orjson.dumps(env.job(6)).decode(),
        MessageAttributes={
            "sesguard_reason": {
                "DataType": "String",
                "StringValue": "failing for longer than the outage tolerance (900s, received"
                " 19 times): ses: ServiceUnavailable",
            }
        },
    )
    entries = listing()
    by_reason = {e["reason"].split(":")[0]: e for e in entries}
    assert set(by_reason) == {
        "not JSON",
        "rejected by SES",
        "unknown partner",
        "failing for longer than the outage tolerance (900s, received 19 times)",
    }
    ghosts = [e for e in entries if e["partner_id"] == "ghost"]
    assert len(ghosts) == 2 and len(entries) == 5
    text = cli("dlq")  # a count, and each reason once with its messages under it
    assert text.code == 0 and text.out.startswith("5 messages in the send DLQ"), text
    assert "under 4 reasons" in text.out.splitlines()[0]
    for reason in {e["reason"] for e in entries}:
        assert text.out.count(reason) == 1, reason
    assert f"{ghosts[0]['reason']}  [2 messages]" in text.out
    message_id_of_no_id = next(e["job_id"] for e in ghosts if e["job_id"] != "job-5")

    first = redrive()
    fates = {m["job_id"]: (m["action"], m["why"]) for m in first["messages"]}
    assert fates["job-4"][0] == "kept" and fates["job-4"][1].startswith("rejected by SES")
    assert fates["job-5"][0] == "kept" and "sesguard partners add" in fates["job-5"][1]
    assert fates["job-6"] == ("requeued", "never sent")
    assert first["kept"] and first["summary"]["kept"] == 4
    (malformed,) = [m for m in first["messages"] if m["why"].startswith("malformed")]
    assert malformed["why"].startswith("malformed: not JSON") and malformed["action"] == "kept"

    await env.store.create(Profile("ghost", "ops@ghost.example.org", Limits()))
    second = redrive("--reason", "unknown partner")
    assert second["summary"]["requeued"] == 2 and second["summary"]["not_selected"] == 2
    await env.drain()
    assert sent_subjects(env) == {"subject job-6": 1, "subject job-5": 1, "subject job-x": 1}
    rec = await job_record(env, message_id_of_no_id)  # sent under its original id
    assert rec is not None and rec["state"] == "sent"
    left = {e["reason"].split(":")[0] for e in listing()}
    assert left == {"not JSON", "rejected by SES"}  # nothing lost: they stay


async def test_a_crash_mid_redrive_loses_nothing_and_sends_nothing_twice(env: Env) -> None:
    """SQS refuses the re-enqueue after the stale claim was removed: the job stays in the
    DLQ (exit 1); the next redrive finds no claim and re-enqueues it; it is sent once."""
    await possibly_sent(env, 7)
    r = cli("dlq", "redrive", AWS_ENDPOINT_URL_SQS="http://127.0.0.1:9")  # SQS unreachable
    assert r.code == 1 and "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1
    assert (await job_record(env, "job-7") or {}).get("state") == "sending"  # nothing done
    # In process, to fail exactly the re-enqueue (after the claim removal).
    from sesguard.ops.dlq import Redrive

    async def exists(_pid: str) -> bool:
        return True

    fault = Fault(status=500, code="InternalError")
    with inject(env.clients.sqs, "SendMessageBatch", fault), pytest.raises(ClientError):
        await Redrive(
            env.clients.sqs, env.clients.dynamodb, env.settings, env.queue_url, env.dlq_url, exists
        ).run()
    assert fault.calls >= 1
    assert await job_record(env, "job-7") is None  # claim removed ...
    assert len(listing()) == 1  # ... and the job still in the DLQ
    assert redrive()["summary"]["requeued"] == 1
    await env.drain()
    assert sent_subjects(env) == {"subject job-7": 1}


async def test_listing_consumes_nothing_and_a_dry_run_changes_nothing(env: Env) -> None:
    await possibly_sent(env, 8)
    await env.enqueue(env.job(9, partner="ghost"))
    await env.drain()
    first, second = listing(), listing()
    assert [e["message_id"] for e in first] == [e["message_id"] for e in second]
    assert len(first) == 2
    text = cli("dlq")
    assert text.code == 0 and "2 messages in the send DLQ" in text.out
    lines = text.out.splitlines()
    under = lines[next(i for i, line in enumerate(lines) if line.startswith("possibly sent")) + 1]
    assert "job-8  acme" in under  # the job, under its reason
    dry = redrive("--dry-run")
    assert dry["dry_run"] is True
    assert {m["action"] for m in dry["messages"]} == {"requeued_unclaimed", "kept"}
    assert (await job_record(env, "job-8") or {}).get("state") == "sending"
    assert len(listing()) == 2 and await env.queue_depth() == (0, 0)
    assert "would be re-enqueued" in cli("dlq", "redrive", "--dry-run").out


def test_usage_errors_exit_2() -> None:
    for argv in (
        ("dlq", "redrive", "--events"),
        ("dlq", "--limit", "0"),
        ("dlq", "redrive", "--reason", " "),
        ("dlq", "purge"),
    ):
        r = cli(*argv)
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1, (argv, r.err)


@pytest.mark.parametrize("setting", ["-1", "nan", "99999999"])
def test_a_bad_settle_time_is_a_usage_error(setting: str) -> None:
    r = cli("dlq", "redrive", SESGUARD_DLQ_SETTLE_SECONDS=setting)
    assert r.code == 2 and "SESGUARD_DLQ_SETTLE_SECONDS" in r.err


def test_the_sender_fixture_domain_is_verified() -> None:
    assert DOMAIN == "isv.example.com"


def test_the_listing_text_counts_and_says_each_reason_once() -> None:
    from sesguard.ops.dlq import listing_text

    long = "possibly sent: " + "x" * 320  # reasons run to hundreds of characters
    entries = [
        {"age_seconds": 60, "job_id": "j1", "partner_id": "acme", "reason": long},
        {"age_seconds": 50, "job_id": "j2", "partner_id": None, "reason": "rejected by SES"},
        {"age_seconds": 40, "job_id": None, "partner_id": "acme", "reason": long},
        {"age_seconds": 30, "job_id": "j4", "partner_id": "beta", "reason": None},
    ]
    assert listing_text(entries, events=False).splitlines() == [
        "4 messages in the send DLQ, oldest first, under 3 reasons",
        "",
        f"{long}  [2 messages]",
        "    60s  j1  acme",
        "    40s  ?  acme",
        "",
        "rejected by SES  [1 message]",
        "    50s  j2  ?",
        "",
        "(no reason)  [1 message]",
        "    30s  j4  beta",
    ]
    one = [{"age_seconds": 7200, "objects": ["s3://b/k"], "reason": "missing object"}]
    assert listing_text(one, events=True).splitlines() == [
        "1 message in the events DLQ, oldest first, under 1 reason",
        "",
        "missing object  [1 message]",
        "     2h  s3://b/k",
    ]
    assert listing_text([], events=False) == "the dead-letter queue is empty"
