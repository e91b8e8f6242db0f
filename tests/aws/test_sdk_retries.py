"""What the SDK's own retries may and may not do, through the fault proxy (a real
connection reset or 5xx on the wire, moto behind it), with the clients `open_clients`
builds as the services do:

- AWS_MAX_ATTEMPTS is the total number of attempts, as in every AWS SDK (it was passed
  as botocore's `max_attempts`, which counts retries: 2 meant 3 calls);
- SendEmail is never retried by the SDK: a connection reset after SES accepted the
  message leaves exactly one message in SES (a retry sent it twice), while the other
  SESv2 calls keep their retries;
- a claim whose PutItem was written but whose answer was lost is still ours when the
  SDK's retry fails its condition against it (it was judged "in progress", deferred,
  and later dead-lettered as "possibly sent" although never sent);
- no client uses adaptive mode, whose rate limiter deadlocked every DynamoDB call of a
  sender after throttling once calls waiting in it were cancelled (sesguard/aws/clients.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import fields
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from sender.records import JOB_SK, ClaimState, JobRecords
from sender.ses import Failure, classify_failure
from sesguard.aws import table as t
from sesguard.aws.clients import Clients, open_clients
from sesguard.core.jobs import parse_job
from tests.conftest import sent_emails
from tests.faults.proxy import Error, FaultProxy, error, reset

pytestmark = pytest.mark.timeout(60)
DOMAIN = "isv.example.com"


def job(n: int) -> Any:
    return parse_job(
        {
            "job_id": f"job-{n}",
            "partner_id": "acme",
            "from": f"news@{DOMAIN}",
            "to": [f"user{n}@example.org"],
            "subject": f"retry test {n}",
            "text": "hello",
        }
    )


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(moto_endpoint) as p:
        yield p


@pytest.fixture
async def proxied(proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Clients]:
    """The services' clients, pointed at the proxy, with AWS_MAX_ATTEMPTS=2."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    async with open_clients(concurrency=4) as c:
        yield c


async def test_aws_max_attempts_counts_every_attempt(
    proxied: Clients, proxy: FaultProxy, table: str
) -> None:
    proxy.inject(error("dynamodb", Error.INTERNAL))
    with pytest.raises(ClientError):
        await proxied.dynamodb.describe_table(TableName=table)
    assert proxy.count("dynamodb", "DescribeTable") == 2  # AWS_MAX_ATTEMPTS=2: 2 calls, not 3


async def test_send_email_is_never_retried_by_the_sdk(
    proxied: Clients, proxy: FaultProxy, clients: Any, moto_endpoint: str
) -> None:
    await clients.sesv2.create_email_identity(EmailIdentity=DOMAIN)
    params = {
        "FromEmailAddress": f"news@{DOMAIN}",
        "Destination": {"ToAddresses": ["someone@example.org"]},
        "Content": {"Simple": {"Subject": {"Data": "once"}, "Body": {"Text": {"Data": "x"}}}},
    }
    proxy.inject(reset("sesv2", "SendEmail", after_upstream=True), limit=1)
    with pytest.raises(BotoCoreError) as lost:
        await proxied.ses_send.send_email(**params)
    # aiobotocore calls it EndpointConnectionError; the sender must keep the claim
    assert classify_failure(lost.value) is Failure.AMBIGUOUS
    assert proxy.count("sesv2", "SendEmail") == 1
    assert [m["subject"] for m in sent_emails(moto_endpoint)] == ["once"]  # SES has it once

    proxy.inject(error("sesv2", Error.UNAVAILABLE, "SendEmail"), limit=1)
    with pytest.raises(ClientError):  # a 503 goes back to our code at once, too
        await proxied.ses_send.send_email(**params)
    assert proxy.count("sesv2", "SendEmail") == 2

    proxy.inject(error("sesv2", Error.UNAVAILABLE, "GetEmailIdentity"), limit=1)
    await proxied.sesv2.get_email_identity(EmailIdentity=DOMAIN)  # other calls: retried
    assert proxy.count("sesv2", "GetEmailIdentity") == 2


async def test_a_claim_written_but_whose_answer_was_lost_is_ours(
    proxied: Clients, proxy: FaultProxy, table: str, clients: Any
) -> None:
    records = JobRecords(proxied.dynamodb, table, claim_seconds=60)
    injection = proxy.inject(reset("dynamodb", "PutItem", after_upstream=True), limit=1)
    claim = await records.claim(job(1), "token-1")  # the SDK retried the written PutItem
    assert injection.forwarded == 1 and proxy.count("dynamodb", "PutItem") == 2
    assert claim.state is ClaimState.CLAIMED
    resp = await clients.dynamodb.get_item(
        TableName=table, Key=t.key(t.job_pk("job-1"), JOB_SK), ConsistentRead=True
    )
    stored = t.from_item(resp["Item"]) if "Item" in resp else None
    assert stored is not None and (stored["state"], stored["token"]) == ("sending", "token-1")


async def test_only_the_same_token_makes_an_existing_claim_ours(clients: Any, table: str) -> None:
    records = JobRecords(clients.dynamodb, table, claim_seconds=60)
    assert (await records.claim(job(2), "mine")).state is ClaimState.CLAIMED
    assert (await records.claim(job(2), "mine")).state is ClaimState.CLAIMED  # our own write
    assert (await records.claim(job(2), "other")).state is ClaimState.IN_PROGRESS
    await records.release("job-2", "mine")
    assert (await records.claim(job(2), "other")).state is ClaimState.CLAIMED
    # once "sent", the same token is a duplicate, never a second claim
    await records.write_sent([records.sent_item(job(2), "other", "m-1")])
    again = await records.claim(job(2), "other")
    assert again.state is ClaimState.SENT and again.message_id == "m-1"


async def test_no_client_uses_adaptive_retries_whatever_the_environment(
    monkeypatch: pytest.MonkeyPatch, moto_endpoint: str
) -> None:
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    async with open_clients(concurrency=4, endpoint_url=moto_endpoint) as c:
        clients = [getattr(c, f.name) for f in fields(c) if f.name != "calls"]
        clients = [client for client in clients if client is not None]
        modes = {c.meta.service_model.service_name: c.meta.config.retries["mode"] for c in clients}
    assert set(modes) >= {"dynamodb", "sqs", "s3", "sesv2", "firehose", "sts", "events"}
    assert set(modes.values()) == {"standard"}


async def test_calls_cancelled_during_throttling_do_not_block_later_calls(
    proxy: FaultProxy, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the sender's handlers do when a breaker or a stop aborts them: DynamoDB calls
    cancelled mid-flight while DynamoDB throttles, by 16 callers on one client (the SDK's
    default attempts). Every later call still completes; with adaptive mode, calls of
    such a client waited for ever."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    rng = random.Random(3)
    key = {"pk": {"S": "nobody"}, "sk": {"S": "nothing"}}
    async with open_clients(concurrency=16) as c:
        loop = asyncio.get_running_loop()
        until = loop.time() + 8.0

        async def caller() -> None:
            while loop.time() < until:
                call = asyncio.ensure_future(c.dynamodb.get_item(TableName=table, Key=key))
                if rng.random() < 0.3:
                    done, _ = await asyncio.wait({call}, timeout=rng.random() * 1.5)
                    if not done:
                        call.cancel()
                with contextlib.suppress(asyncio.CancelledError, ClientError):
                    await asyncio.wait_for(asyncio.shield(call), timeout=30)

        proxy.inject(error("dynamodb", Error.THROTTLING), seconds=3.0)
        await asyncio.wait_for(asyncio.gather(*(caller() for _ in range(16))), timeout=60)
        after = [c.dynamodb.get_item(TableName=table, Key=key) for _ in range(16)]
        answers = await asyncio.wait_for(asyncio.gather(*after), timeout=20)
    assert len(answers) == 16
