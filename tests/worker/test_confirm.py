"""The worker confirms sends from SES's Send events (worker/confirm.py), on moto: a stale
claim becomes "sent", a "sent" record costs a read and no write, redelivery changes
nothing, and the sender then reads the job as a duplicate."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sender.records import ClaimState, JobRecords
from sesguard.aws import table as t
from sesguard.aws.batching import BATCH_GET_KEYS, read_job_records
from sesguard.aws.store import PartnerStore
from sesguard.core.jobs import JOB_TAG, job_tag_value, parse_job
from sesguard.ops.bootstrap import bootstrap
from tests.fixtures.ses_events import encode, event
from worker.classify import SentJob
from worker.confirm import Confirmations, confirm_sends
from worker.service import WorkerService

NOW = datetime.now(UTC)


def send_event(job_id: str, partner: str = "acme", message_id: str | None = None) -> Any:
    rec = event("Send", partner, NOW)
    rec["mail"]["tags"][JOB_TAG] = [job_tag_value(job_id)]
    rec["mail"]["messageId"] = message_id or f"0100-{uuid.uuid4()}"
    return rec


async def put_record(
    clients: Any, table: str, job_id: str, state: str, partner: str = "acme"
) -> None:
    await clients.dynamodb.put_item(
        TableName=table,
        Item=t.to_item(
            {
                "pk": t.job_pk(job_id),
                "sk": t.JOB_SK,
                "state": state,
                "token": "tok",
                "partner_id": partner,
                "claimed_at": (NOW - timedelta(hours=1)).isoformat(),
            }
        ),
    )


async def record(clients: Any, table: str, job_id: str) -> dict[str, Any] | None:
    resp = await clients.dynamodb.get_item(
        TableName=table, Key=t.key(t.job_pk(job_id), t.JOB_SK), ConsistentRead=True
    )
    return t.from_item(resp["Item"]) if "Item" in resp else None


class Calls:
    """DynamoDB operations made through a client (botocore hook)."""

    def __init__(self, client: Any) -> None:
        self.ops: list[str] = []
        self.client = client

    def __enter__(self) -> Calls:
        self.client.meta.events.register(
            "provide-client-params.dynamodb.*", self._on, unique_id="t-confirm-calls"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.meta.events.unregister(
            "provide-client-params.dynamodb.*", unique_id="t-confirm-calls"
        )

    def _on(self, model: Any, **_: Any) -> None:
        self.ops.append(model.name)


@pytest.fixture
async def worker_env(clients: Any, settings: Any) -> Any:
    await bootstrap(clients, settings, ["isv.example.com"])
    return settings.bucket_name(await clients.account_id())


async def test_an_object_confirms_the_stale_claims_its_send_events_name(
    clients: Any, settings: Any, worker_env: str
) -> None:
    table = settings.table
    await put_record(clients, table, "sent:1", "sent")
    await put_record(clients, table, "lost.1", "sending")  # its sender died mid-send
    await put_record(clients, table, "theirs", "sending", partner="other")
    records = [
        send_event("sent:1"),
        send_event("lost.1", message_id="0100-lost-1"),
        send_event("theirs"),  # the tag names a claim of another partner: untouched
        send_event("expired"),  # no record: nothing created
        event("Delivery", "acme", NOW),
    ]
    key = f"{NOW:%Y/%m/%d/%H}/confirm-{uuid.uuid4()}.gz"
    await clients.s3.put_object(Bucket=worker_env, Key=key, Body=encode(records, gz=True))
    with Calls(clients.dynamodb) as calls:
        service = WorkerService(clients, settings)
        assert await service.run(drain=True) == 0
    lost = await record(clients, table, "lost.1")
    assert lost is not None
    assert (lost["state"], lost["message_id"], lost["confirmed_by"]) == (
        "sent",
        "0100-lost-1",
        "ses",
    )
    assert lost["sent_at"] == records[1]["mail"]["timestamp"] and lost["token"] == "tok"
    assert (await record(clients, table, "theirs") or {})["state"] == "sending"
    assert await record(clients, table, "expired") is None
    sent = await record(clients, table, "sent:1")
    assert sent is not None and "confirmed_by" not in sent
    assert calls.ops.count("BatchGetItem") == 1  # four jobs, one read
    assert calls.ops.count("UpdateItem") == 1  # one write: the one stale claim
    assert service.tally.jobs_confirmed_by_ses == 1

    # The sender now reads the job as sent: a duplicate, never "possibly sent".
    jobs = JobRecords(clients.dynamodb, table, claim_seconds=60)
    job = parse_job(
        {
            "job_id": "lost.1",
            "partner_id": "acme",
            "from": "news@isv.example.com",
            "to": ["a@example.org"],
            "subject": "s",
            "text": "t",
        }
    )
    claim = await jobs.claim(job, "new-token")
    assert claim.state is ClaimState.SENT and claim.confirmed_by_ses
    assert claim.message_id == "0100-lost-1"

    # The same notification again (S3 and SQS deliver at least once): reads, no writes.
    with Calls(clients.dynamodb) as again:
        await service.processor.process(worker_env, key)
    assert "UpdateItem" not in again.ops and again.ops.count("BatchGetItem") == 1


async def test_many_sends_are_read_100_keys_per_call(clients: Any, settings: Any) -> None:
    """A large object: every key is read, 100 per BatchGetItem, and only "sending"
    records are written."""
    from sesguard.ops.bootstrap import ensure_table

    await ensure_table(clients, settings)
    n = 250
    for i in range(n):
        await put_record(clients, settings.table, f"j-{i}", "sending" if i % 100 == 7 else "sent")
    sends = [SentJob(f"j-{i}", "acme", f"m-{i}", "2026-11-29T12:00:00.000Z") for i in range(n)]
    result = await confirm_sends(clients.dynamodb, settings.table, sends + sends[:10])
    assert (result.jobs, result.read_requests, result.already_sent) == (n, 3, n - 3)
    assert (result.confirmed, result.write_requests, result.raced) == (3, 3, 0)
    again = await confirm_sends(clients.dynamodb, settings.table, sends)
    assert (again.confirmed, again.write_requests, again.already_sent) == (0, 0, n)
    assert BATCH_GET_KEYS == 100


class UnprocessedOnce:
    """A DynamoDB client stand-in that leaves some keys unprocessed on the first call, as
    DynamoDB may under load (moto never does); every other call goes to the real one."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = 0

    async def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        resp: dict[str, Any] = await self.real.batch_get_item(RequestItems=RequestItems)
        if self.calls == 1:
            ((table, request),) = RequestItems.items()
            keys = request["Keys"]
            kept = {str(k["pk"]["S"]) for k in keys[: len(keys) // 2]}
            resp["Responses"][table] = [i for i in resp["Responses"][table] if i["pk"]["S"] in kept]
            resp["UnprocessedKeys"] = {table: {**request, "Keys": keys[len(keys) // 2 :]}}
        return resp


async def test_unprocessed_keys_are_asked_again(clients: Any, settings: Any) -> None:
    from sesguard.ops.bootstrap import ensure_table

    await ensure_table(clients, settings)
    for i in range(10):
        await put_record(clients, settings.table, f"u-{i}", "sent")
    flaky = UnprocessedOnce(clients.dynamodb)
    result = Confirmations()
    found = await read_job_records(
        flaky, settings.table, [f"u-{i}" for i in range(10)], on_call=result.count_read
    )
    assert sorted(found) == sorted(f"u-{i}" for i in range(10))
    assert flaky.calls == 2 and result.read_requests == 2


async def test_counting_is_not_touched_by_confirmations(
    clients: Any, settings: Any, worker_env: str
) -> None:
    """Tagged Send events count exactly like untagged ones."""
    store = PartnerStore.from_settings(clients.dynamodb, settings)
    records = [send_event(f"c-{i}") for i in range(5)] + [event("Send", "acme", NOW)]
    key = f"{NOW:%Y/%m/%d/%H}/count-{uuid.uuid4()}.gz"
    await clients.s3.put_object(Bucket=worker_env, Key=key, Body=encode(records, gz=True))
    assert await WorkerService(clients, settings).run(drain=True) == 0
    assert (await store.get_state("acme")).totals.nonzero() == {"sent": 6}
