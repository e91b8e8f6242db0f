"""Every send job sesguard writes carries MessageGroupId = its partner id, so the send
queue (a standard queue) works as an SQS fair queue: the Python API, `sesguard enqueue`,
the replay of held jobs and `dlq redrive`. moto's standard queue takes the group id and
the consumer runtime receives the messages as before (LocalStack's:
tests/test_compose_localstack.py)."""

from __future__ import annotations

import json
from typing import Any

from sesguard.aws.enqueue import Enqueuer
from sesguard.aws.held import HeldJobs
from sesguard.core.jobs import parse_job
from sesguard.runtime import (
    Consumer,
    ConsumerConfig,
    Delivery,
    Done,
    Fate,
    RetryPolicy,
    StopCause,
    queue_urls,
)
from sesguard.settings import Settings
from tests.conftest import cli

JOB = {
    "partner_id": "acme",
    "from": "news@isv.example.com",
    "to": ["ana@example.org"],
    "subject": "Hi",
    "text": "Hi",
}


async def received_groups(clients: Any, queue: str) -> dict[str, str | None]:
    """Receive and delete every visible message of `queue`: job id -> its MessageGroupId."""
    url = (await clients.sqs.get_queue_url(QueueName=queue))["QueueUrl"]
    out: dict[str, str | None] = {}
    while msgs := (
        await clients.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["MessageGroupId"],
        )
    ).get("Messages", []):
        for m in msgs:
            out[json.loads(m["Body"])["job_id"]] = m.get("Attributes", {}).get("MessageGroupId")
        await clients.sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)
            ],
        )
    return out


async def test_the_python_api_sets_the_group_and_the_consumer_still_receives(
    ready: None, clients: Any, settings: Settings, tmp_path: Any
) -> None:
    """moto's standard queue takes MessageGroupId (as SQS's fair queues do) and hands the
    messages to the consumer runtime like any others."""
    enqueuer = await Enqueuer.for_queue(clients.sqs, settings.send_queue)
    jobs = [
        {**JOB, "partner_id": p, "job_id": f"{p}-{i}"} for p in ("acme", "zeta") for i in range(12)
    ]
    await enqueuer.send(jobs)
    seen: list[str] = []

    async def handler(d: Delivery) -> Fate:
        seen.append(json.loads(d.body)["job_id"])
        return Done()

    url, dlq = await queue_urls(clients.sqs, settings.send_queue)
    config = ConsumerConfig(
        name="test",
        queue_url=url,
        dlq_url=dlq,
        concurrency=8,
        visibility_timeout=30,
        stop_grace=5.0,
        heartbeat_file=str(tmp_path / "heartbeat"),
        retry=RetryPolicy.for_tolerance(settings.outage_tolerance_seconds),
        drain=True,
        wait_seconds=0,
        linger=0.01,
    )
    assert await Consumer(clients.sqs, config, handler).run() is StopCause.DRAINED
    assert sorted(seen) == sorted(j["job_id"] for j in jobs)

    await enqueuer.send(jobs[:1] + jobs[-1:])
    assert await received_groups(clients, settings.send_queue) == {
        "acme-0": "acme",
        "zeta-11": "zeta",
    }


async def test_the_cli_replay_and_redrive_set_the_group(
    ready: None, clients: Any, settings: Settings, tmp_path: Any
) -> None:
    # sesguard enqueue, from flags and from a file
    r = cli(
        "enqueue", "--partner", "acme", "--from", "a@isv.example.com", "--to", "b@example.org",
        "--subject", "s", "--text", "t", "--job-id", "flag-1",
    )  # fmt: skip
    assert r.code == 0, r
    path = tmp_path / "jobs.jsonl"
    path.write_text(
        "\n".join(json.dumps({**JOB, "partner_id": p, "job_id": f"file-{p}"}) for p in "xyz")
    )
    assert cli("enqueue", "--file", str(path)).code == 0
    assert await received_groups(clients, settings.send_queue) == {
        "flag-1": "acme",
        "file-x": "x",
        "file-y": "y",
        "file-z": "z",
    }

    # held jobs replayed
    assert (
        cli("partners", "add", "acme", "--contact", "ops@acme.example.com").code == 0
        and cli("partners", "pause", "acme", "--no-notify").code == 0
    )
    held = HeldJobs.from_clients(clients, settings)
    for i in range(3):
        assert await held.hold(parse_job({**JOB, "job_id": f"held-{i}"}))
    r = cli("partners", "resume", "acme", "--replay", SESGUARD_GATE_CACHE_SECONDS="0")
    assert r.code == 0 and "replayed 3 held jobs" in r.out, r
    assert await received_groups(clients, settings.send_queue) == {
        f"held-{i}": "acme" for i in range(3)
    }

    # a DLQ redrive (a job that was never claimed goes back on the queue)
    dlq = (await clients.sqs.get_queue_url(QueueName=f"{settings.send_queue}-dlq"))["QueueUrl"]
    await clients.sqs.send_message(
        QueueUrl=dlq,
        MessageBody=json.dumps({**JOB, "job_id": "dead-1"}),
        MessageAttributes={
            "sesguard_reason": {"DataType": "String", "StringValue": "ses throttled 6 times"}
        },
    )
    r = cli("dlq", "redrive", "--json")
    assert r.code == 0 and json.loads(r.out)["summary"]["requeued"] == 1, r
    assert await received_groups(clients, settings.send_queue) == {"dead-1": "acme"}
