"""BatchWriteItem's unprocessed items (sesguard.aws.batching.BatchWrite) on moto: what
DynamoDB leaves unprocessed is sent again, and only that; when a call fails, what is
still unwritten is known, so the sender reports exactly those "sent" records as not
durable (sender/records.py `write_sent`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sender.records import JobRecords
from sesguard.aws.batching import BatchWrite
from sesguard.core.jobs import parse_job
from tests.fault_hooks import Fault, inject


@contextmanager
def first_call_leaves(dynamodb: Any, table: str, unprocessed: int) -> Iterator[list[Any]]:
    """The first BatchWriteItem answers with its last `unprocessed` requests unprocessed,
    as DynamoDB does when it throttles a batch internally; every call's requests are
    recorded (the list yielded)."""
    sent: list[Any] = []

    def params(params: dict[str, Any], **_: Any) -> None:
        sent.append(list(params["RequestItems"][table]))

    def after(parsed: dict[str, Any], **_: Any) -> None:
        if len(sent) == 1:
            parsed["UnprocessedItems"] = {table: sent[0][-unprocessed:]}

    events = dynamodb.meta.events
    events.register("provide-client-params.dynamodb.BatchWriteItem", params, unique_id="t-bw-p")
    events.register("after-call.dynamodb.BatchWriteItem", after, unique_id="t-bw-a")
    try:
        yield sent
    finally:
        events.unregister("provide-client-params.dynamodb.BatchWriteItem", unique_id="t-bw-p")
        events.unregister("after-call.dynamodb.BatchWriteItem", unique_id="t-bw-a")


def put(n: int) -> dict[str, Any]:
    return {"PutRequest": {"Item": {"pk": {"S": f"T#{n}"}, "sk": {"S": "x"}}}}


async def test_unprocessed_items_are_sent_again_and_only_they(clients: Any, table: str) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    write = BatchWrite(table, [put(n) for n in range(5)])
    with first_call_leaves(clients.dynamodb, table, unprocessed=2) as sent:
        left = await write.run(clients.dynamodb, attempts=3, cap=1.0, sleep=sleep)
    assert left == [] and write.left == []
    assert sent == [[put(n) for n in range(5)], [put(3), put(4)]]
    assert len(slept) == 1  # one backoff, between the two calls
    for n in range(5):
        got = await clients.dynamodb.get_item(
            TableName=table, Key={"pk": {"S": f"T#{n}"}, "sk": {"S": "x"}}
        )
        assert "Item" in got


async def test_a_failed_call_leaves_exactly_the_unwritten_records_not_durable(
    clients: Any, table: str
) -> None:
    records = JobRecords(clients.dynamodb, table, claim_seconds=60)
    jobs = [
        parse_job(
            {
                "job_id": f"job-{n}",
                "partner_id": "acme",
                "from": "news@isv.example.com",
                "to": ["user@example.org"],
                "subject": "s",
                "text": "hello",
            }
        )
        for n in range(3)
    ]
    items = [records.sent_item(job, "token", f"m-{i}") for i, job in enumerate(jobs)]
    fault = Fault(status=500, code="InternalServerError", active=False)
    with (
        first_call_leaves(clients.dynamodb, table, unprocessed=1),
        inject(clients.dynamodb, "BatchWriteItem", fault),
    ):
        # the first call goes through (job-2 left unprocessed); the retry fails
        fault.only = lambda _req: fault.passed >= 1
        fault.active = True
        durable = await records.write_sent(items)
    assert durable == [True, True, False]
    assert fault.calls == 1


async def test_a_failed_call_raises_with_what_is_left(clients: Any, table: str) -> None:
    write = BatchWrite(table, [put(1), put(2)])
    with (
        inject(clients.dynamodb, "BatchWriteItem", Fault(status=500, code="InternalServerError")),
        pytest.raises(ClientError),
    ):
        await write.run(clients.dynamodb, attempts=3, cap=1.0)
    assert write.left == [put(1), put(2)]
