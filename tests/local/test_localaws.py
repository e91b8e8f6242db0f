"""The stand-in's changes to moto: speed-ups that change no answer
(sesguard.local.localaws._speed_up_moto), SQS one operation at a time (_serialise_sqs), and
`sent_messages`, which reads what its SES accepted, in process and from a child process."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

import moto
import pytest
from moto.sqs.models import Queue, SQSBackend, sqs_backends

from sesguard.local import localaws
from sesguard.local.localaws import MESSAGES_PATH, _in_process, local_aws_process, sent_messages

ACCOUNT, REGION = "123456789012", "us-east-1"


async def test_expired_messages_are_still_not_delivered(clients: Any) -> None:
    sqs = clients.sqs
    url = (
        await sqs.create_queue(QueueName="retention", Attributes={"MessageRetentionPeriod": "60"})
    )["QueueUrl"]
    await sqs.send_message(QueueUrl=url, MessageBody="kept")
    resp = await sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)
    assert [m["Body"] for m in resp["Messages"]] == ["kept"]

    (message,) = sqs_backends[ACCOUNT][REGION].get_queue("retention")._messages
    message.sent_timestamp -= 61_000  # as if sent 61 s ago: past the 60 s retention
    resp = await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    assert resp.get("Messages", []) == []


def test_service_lookup_sees_the_same_modules_as_moto() -> None:
    from moto import backends

    path = os.path.dirname(moto.__file__)
    on_disk = [
        d
        for d in sorted(os.listdir(path))
        if os.path.isdir(os.path.join(path, d)) and not d.startswith("__")
    ]
    assert list(backends.list_of_moto_modules()) == on_disk


# ---- SQS one operation at a time (sesguard.local.localaws._serialise_sqs) ---------------------


async def _race(
    clients: Any, monkeypatch: pytest.MonkeyPatch, locked: bool, other: str
) -> list[str]:
    """Over HTTP to the served stand-in: delete message "one" while `other` runs, a
    delete of "two" or a send of "three". Returns the bodies left in the queue.

    moto's Queue.delete_message copies the message list without the deleted message and
    writes the copy back. The server thread deleting "one" is held just before that write
    until the other request has been answered (or half a second), which makes the race
    happen every time unless the stand-in runs the two requests one at a time."""
    if not locked:  # moto's own methods, as the stand-in was before the lock
        for op in localaws._SQS_OPS:
            monkeypatch.setattr(SQSBackend, op, getattr(SQSBackend, op).__wrapped__)
    sqs = clients.sqs
    url = (await sqs.create_queue(QueueName="race"))["QueueUrl"]
    for body in ("one", "two"):
        await sqs.send_message(QueueUrl=url, MessageBody=body)
    resp = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300)
    handles = {m["Body"]: m["ReceiptHandle"] for m in resp["Messages"]}
    queue = sqs_backends[ACCOUNT][REGION].get_queue("race")

    about_to_write, other_done = threading.Event(), threading.Event()
    setattr_ = Queue.__setattr__

    def hold_the_write(self: Any, name: str, value: Any) -> None:
        if self is queue and name == "_messages" and not about_to_write.is_set():
            about_to_write.set()  # only delete_message assigns the list; the first is "one"
            other_done.wait(0.5)  # with the lock, the other request cannot be answered
        setattr_(self, name, value)

    monkeypatch.setattr(Queue, "__setattr__", hold_the_write)
    first = asyncio.create_task(sqs.delete_message(QueueUrl=url, ReceiptHandle=handles["one"]))
    assert await asyncio.to_thread(about_to_write.wait, 5)
    if other == "delete":
        await sqs.delete_message(QueueUrl=url, ReceiptHandle=handles["two"])
    else:
        await sqs.send_message(QueueUrl=url, MessageBody="three")
    other_done.set()
    await first
    return sorted(m.body for m in queue._messages)


# What each race leaves in moto alone, and what SQS (and the stand-in) leaves.
RACES = {"delete": (["two"], []), "send": (["two"], ["three", "two"])}


@pytest.mark.parametrize("other", sorted(RACES))
async def test_moto_sqs_alone_brings_back_deletes_and_loses_sends(
    clients: Any, monkeypatch: pytest.MonkeyPatch, other: str
) -> None:
    """The race the lock exists for: "two", deleted by the other request, comes back;
    "three", just sent, is lost. Both without any error."""
    assert await _race(clients, monkeypatch, locked=False, other=other) == RACES[other][0]


@pytest.mark.parametrize("other", sorted(RACES))
async def test_the_stand_in_runs_sqs_requests_one_at_a_time(
    clients: Any, monkeypatch: pytest.MonkeyPatch, other: str
) -> None:
    assert await _race(clients, monkeypatch, locked=True, other=other) == RACES[other][1]


async def test_a_long_poll_does_not_hold_the_lock(clients: Any) -> None:
    """A receive waiting for messages lets other requests through, and wakes for a send."""
    sqs = clients.sqs
    url = (await sqs.create_queue(QueueName="long-poll"))["QueueUrl"]
    waiting = asyncio.create_task(
        sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20, MaxNumberOfMessages=1)
    )
    await asyncio.sleep(0.2)  # the receive is waiting inside moto by now
    await sqs.send_message(QueueUrl=url, MessageBody="hello")  # not blocked behind it
    resp = await asyncio.wait_for(waiting, 10)
    assert [m["Body"] for m in resp["Messages"]] == ["hello"]


# ---- sent_messages: what the stand-in's SES accepted, without moto's whole-state dump ----


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


async def _send(sesv2: Any, to: list[str], subject: str, cc: list[str] | None = None) -> None:
    await sesv2.send_email(
        FromEmailAddress="guard@isv.example.com",
        Destination={"ToAddresses": to, "CcAddresses": cc or []},
        Content={"Simple": {"Subject": {"Data": subject}, "Body": {"Text": {"Data": "b"}}}},
    )


async def test_sent_messages_in_process_and_over_http_agree(clients: Any, moto_endpoint) -> None:
    await clients.sesv2.create_email_identity(EmailIdentity="isv.example.com")
    await _send(clients.sesv2, ["ana@example.org"], "first", cc=["cc@example.org"])
    await _send(clients.sesv2, ["bob@example.org"], "second")

    direct = sent_messages(moto_endpoint)  # in this process: read from moto's backend
    assert [(m["source"], m["subject"], m["body"]) for m in direct] == [
        ("guard@isv.example.com", "first", "b"),
        ("guard@isv.example.com", "second", "b"),
    ]
    assert direct[0]["destinations"] == {  # as the caller gave them
        "ToAddresses": ["ana@example.org"],
        "CcAddresses": ["cc@example.org"],
    }
    assert all(isinstance(m["id"], str) and m["id"] for m in direct)
    over_http = await asyncio.to_thread(_get_json, moto_endpoint + MESSAGES_PATH)
    assert over_http == direct  # the route a child stand-in serves

    direct[0]["destinations"]["ToAddresses"].append("mallory@example.org")
    assert sent_messages(moto_endpoint)[0]["destinations"]["ToAddresses"] == ["ana@example.org"]


async def test_sent_messages_is_empty_after_a_reset(moto_endpoint) -> None:
    assert sent_messages(moto_endpoint) == []


def test_child_stand_in_serves_sent_messages() -> None:
    """`local_aws_process` (and `python -m sesguard.local.localaws`): ready once our route
    answers, and `sent_messages` reads the child's SES over HTTP; the SDK environment it
    set for the block is restored after it."""
    import boto3

    before = os.environ.get("AWS_ENDPOINT_URL")
    with local_aws_process() as endpoint:
        assert os.environ["AWS_ENDPOINT_URL"] == endpoint != before
        assert endpoint not in _in_process
        assert sent_messages(endpoint) == []
        ses = boto3.client("sesv2", endpoint_url=endpoint)
        ses.create_email_identity(EmailIdentity="isv.example.com")
        ses.send_email(
            FromEmailAddress="guard@isv.example.com",
            Destination={"ToAddresses": ["ana@example.org"]},
            Content={"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}}},
        )
        (msg,) = sent_messages(endpoint)
        assert msg["destinations"]["ToAddresses"] == ["ana@example.org"]
        assert msg["subject"] == "s"
    assert os.environ.get("AWS_ENDPOINT_URL") == before


# ---- one clock reading per queue scan (sesguard.local.localaws._one_clock_sqs) ------------


def test_queue_scans_read_the_clock_once_and_agree_with_moto(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Queue.messages and the Approximate* counts give what moto's own per-message
    `visible` and `delayed` give, with one clock reading per call instead of two per
    message (the cost that grew with the queue's depth)."""
    localaws._speed_up_moto()
    backend = sqs_backends[ACCOUNT][REGION]
    backend.create_queue("one-clock")
    try:
        for i in range(12):
            backend.send_message("one-clock", f"m{i}", delay_seconds=30 if i % 4 == 0 else None)
        received = backend.receive_message("one-clock", 2, 0, 30)  # two in flight
        queue = backend.get_queue("one-clock")
        visible = [m for m in queue._messages if m.visible and not m.delayed]  # moto's own
        assert queue.messages == visible
        assert [m.body for m in visible] == [f"m{i}" for i in range(12) if i % 4 and i > 2]
        assert received and all(m.body in ("m1", "m2") for m in received)
        counts = queue.attributes
        assert counts["ApproximateNumberOfMessages"] == len(visible) == 7
        assert counts["ApproximateNumberOfMessagesDelayed"] == 3
        assert counts["ApproximateNumberOfMessagesNotVisible"] == 2

        from moto.core import utils

        reads = 0
        clock = utils.unix_time_millis

        def counted() -> float:
            nonlocal reads
            reads += 1
            return clock()

        monkeypatch.setattr(utils, "unix_time_millis", counted)
        assert len(queue.messages) == 7
        assert reads == 1  # not two per message

        # found by receipt handle, current or old, as moto's list of all of them would
        (original,) = [m for m in queue._messages if m.body == "m1"]
        first = original.receipt_handle
        original.mark_received(visibility_timeout=30)  # what a second receive does
        assert original.receipt_handle != first
        for handle in (first, original.receipt_handle):
            assert original.had_receipt_handle(handle)
            assert handle in original.all_receipt_handles
        assert not original.had_receipt_handle("not-a-handle")
    finally:
        backend.delete_queue("one-clock")


# ---- TransactWriteItems without moto's whole-table copy (_cheap_transaction_rollback) -------


async def ranged_table(ddb: Any, name: str) -> None:
    """A table keyed as sesguard's: string `pk` and sort key `sk`, on demand."""
    await ddb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )


async def _transactions(clients: Any, suffix: str, look: Callable[[], None]) -> list[Any]:
    """Over HTTP: a cancelled transaction, then the same one committed, over a table with a
    sort key and one without; returns what each table reads back after each step (a scan,
    which keeps moto's item order, and a partition's query)."""
    from botocore.exceptions import ClientError

    ddb = clients.dynamodb
    ranged, flat = f"ranged-{suffix}", f"flat-{suffix}"
    await ranged_table(ddb, ranged)
    await ddb.create_table(
        TableName=flat,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for pk, sk in (("p", "1"), ("p", "2"), ("p", "3"), ("q", "1")):
        item = {"pk": {"S": pk}, "sk": {"S": sk}, "n": {"N": "1"}}
        await ddb.put_item(TableName=ranged, Item=item)
    for pk in ("a", "b", "c"):
        await ddb.put_item(TableName=flat, Item={"pk": {"S": pk}, "n": {"N": "1"}})

    async def state() -> Any:
        scans = [(await ddb.scan(TableName=t))["Items"] for t in (ranged, flat)]
        query = await ddb.query(
            TableName=ranged,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "p"}},
        )
        return [*scans, query["Items"]]

    def ops(guard: str) -> list[dict[str, Any]]:
        add = {"UpdateExpression": "ADD n :n", "ExpressionAttributeValues": {":n": {"N": "5"}}}
        return [
            {"Update": {"TableName": ranged, "Key": {"pk": {"S": "p"}, "sk": {"S": "1"}}, **add}},
            {"Delete": {"TableName": ranged, "Key": {"pk": {"S": "p"}, "sk": {"S": "2"}}}},
            {"Put": {"TableName": ranged, "Item": {"pk": {"S": "p"}, "sk": {"S": "0"}}}},
            {"Put": {"TableName": ranged, "Item": {"pk": {"S": "new"}, "sk": {"S": "1"}}}},
            {"Update": {"TableName": flat, "Key": {"pk": {"S": "a"}}, **add}},
            {"Delete": {"TableName": flat, "Key": {"pk": {"S": "b"}}}},
            {"Put": {"TableName": flat, "Item": {"pk": {"S": "d"}}}},
            {
                "ConditionCheck": {
                    "TableName": ranged,
                    "Key": {"pk": {"S": "q"}, "sk": {"S": "1"}},
                    "ConditionExpression": guard,
                }
            },
        ]

    look()
    states = [await state()]
    with pytest.raises(ClientError) as cancelled:
        await ddb.transact_write_items(TransactItems=ops("attribute_not_exists(pk)"))
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    look()
    states.append(await state())
    await ddb.transact_write_items(TransactItems=ops("attribute_exists(pk)"))
    look()
    states.append(await state())
    return states


async def test_a_transaction_keeps_moto_answers_without_copying_tables(
    clients: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled transaction leaves both tables as they were (items, values and order)
    and a committed one applies, exactly as with moto's own whole-table copy; and ours
    copied no table (moto's rollback swaps its copy in for the table)."""
    from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends

    tables = dynamodb_backends[ACCOUNT][REGION].tables
    seen: list[object] = []
    ours = await _transactions(clients, "ours", lambda: seen.append(tables["ranged-ours"]))
    before, after_cancel, after_commit = ours
    assert after_cancel == before
    assert after_commit != before
    assert seen[0] is seen[1] is seen[2]

    locked = DynamoDBBackend.transact_write_items.__wrapped__  # the lock around moto's own
    monkeypatch.setattr(DynamoDBBackend, "transact_write_items", locked)
    seen.clear()
    theirs = await _transactions(clients, "moto", lambda: seen.append(tables["ranged-moto"]))
    assert theirs == ours
    assert seen[0] is not seen[1]  # moto's own did copy: the check above can tell


async def test_a_query_reads_one_partition_and_answers_as_moto_does(
    clients: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queries of a sorted table (conditions on the sort key, paging, both directions)
    answer the same with the stand-in's partition lookup and with moto's whole-table
    scan; and ours never lists the table."""
    from moto.dynamodb.models.table import Table

    db = clients.dynamodb
    await ranged_table(db, "q")
    for p in ("a", "b", "c"):
        for i in range(7):
            await db.put_item(
                TableName="q", Item={"pk": {"S": p}, "sk": {"S": f"k{i}"}, "n": {"N": str(i)}}
            )

    async def answers() -> list[Any]:
        out: list[Any] = []
        for cond, values in (
            ("pk = :p", {":p": {"S": "b"}}),
            ("pk = :p AND sk >= :s", {":p": {"S": "b"}, ":s": {"S": "k3"}}),
            ("pk = :p AND begins_with(sk, :s)", {":p": {"S": "c"}, ":s": {"S": "k1"}}),
            ("pk = :p", {":p": {"S": "none"}}),
        ):
            for forward in (True, False):
                kwargs: dict[str, Any] = {
                    "TableName": "q",
                    "KeyConditionExpression": cond,
                    "ExpressionAttributeValues": values,
                    "ScanIndexForward": forward,
                    "Limit": 3,
                }
                pages = []
                while True:
                    resp = await db.query(**kwargs)
                    pages.append((resp["Items"], resp.get("LastEvaluatedKey")))
                    if "LastEvaluatedKey" not in resp:
                        break
                    kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
                out.append(pages)
        return out

    listed: list[int] = []
    all_items = Table.all_items
    monkeypatch.setattr(Table, "all_items", lambda self: listed.append(1) or all_items(self))
    ours = await answers()
    assert listed == []  # the partition alone was read
    assert ours[0][0][0][0]["pk"] == {"S": "b"}  # and it found what is there
    monkeypatch.setattr(Table, "query", Table.query.__wrapped__)  # moto's own
    theirs = await answers()
    assert listed  # moto's own lists the table: the check above can tell
    assert theirs == ours
