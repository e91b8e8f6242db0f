"""One real moto server (HTTP) per test session; every test starts from an empty account."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

# Never let a test reach real AWS, whatever the developer's environment holds.
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_var, None)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_REGION="us-east-1",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_MAX_ATTEMPTS="1",
    SESGUARD_NOTIFY_FROM="guard@isv.example.com",
    SESGUARD_LOG_FORMAT="json",
)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto over HTTP, with DynamoDB's atomic conditional writes (see sesguard.local.localaws)."""
    from sesguard.local.localaws import local_aws

    with local_aws() as endpoint:
        yield endpoint


@pytest.fixture(autouse=True)
def moto_reset(moto_endpoint: str) -> None:
    req = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(req, timeout=10).close()


@pytest.fixture(scope="session")
async def clients(moto_endpoint: str) -> AsyncIterator[object]:
    from sesguard.aws.clients import open_clients

    async with open_clients(concurrency=32, max_attempts=1) as c:
        yield c


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> object:
    from sesguard.settings import load_settings

    return load_settings()


@pytest.fixture
async def table(clients: object, settings: object) -> str:
    """The sesguard table, created by bootstrap's own table step."""
    from sesguard.ops.bootstrap import ensure_table

    await ensure_table(clients, settings)  # type: ignore[arg-type]
    return settings.table  # type: ignore[attr-defined,no-any-return]


@pytest.fixture
async def store(clients: object, table: str) -> object:
    from sesguard.aws.store import PartnerStore

    return PartnerStore(clients.dynamodb, table)  # type: ignore[attr-defined]


def sent_emails(endpoint: str) -> list[dict[str, Any]]:
    """Every message moto's SES accepted: source, destinations, subject, body."""
    from sesguard.local.localaws import sent_messages

    return sent_messages(endpoint)


async def drain_queue(clients: Any, url: str) -> list[dict[str, Any]]:
    """Receive and delete everything visible in a queue; the message bodies, parsed."""
    import orjson

    out: list[dict[str, Any]] = []
    while msgs := (
        await clients.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    ).get("Messages", []):
        out += [orjson.loads(m["Body"]) for m in msgs]
        await clients.sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)
            ],
        )
    return out


async def dead_letters_in(clients: Any, url: str) -> list[tuple[str, str | None]]:
    """Receive and delete everything visible in a DLQ: each message's raw body and its
    `sesguard_reason` attribute (None without one)."""
    out: list[tuple[str, str | None]] = []
    while msgs := (
        await clients.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
        )
    ).get("Messages", []):
        for m in msgs:
            reason = m.get("MessageAttributes", {}).get("sesguard_reason", {}).get("StringValue")
            out.append((m["Body"], reason))
        await clients.sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)
            ],
        )
    return out


async def queue_counts(clients: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue, as SQS counts them."""
    attrs = (
        await clients.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )
