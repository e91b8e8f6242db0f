"""The fault proxy itself: it recognises every call sesguard makes, its errors parse in
botocore exactly as the real services' do (code, status, retry decision), windows and
operation filters hold, and what it forwards arrives byte for byte."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aioboto3
import pytest
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from sender.ses import Failure, classify_failure
from tests.faults.proxy import (
    ERRORS,
    Call,
    Error,
    FaultProxy,
    error,
    identify,
    latency,
    not_implemented,
    reset,
    rest_operation,
)

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def client(service: str, endpoint: str, attempts: int = 1) -> AsyncIterator[Any]:
    """A client of its own (standard retries, `attempts` in all) for `endpoint`."""
    session = aioboto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    config = AioConfig(retries={"mode": "standard", "total_max_attempts": attempts})
    async with session.client(service, endpoint_url=endpoint, config=config) as c:
        yield c


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(moto_endpoint) as p:
        yield p


# ---- which call is it ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "method", "path", "query", "operation"),
    [
        ("sesv2", "POST", "/v2/email/outbound-emails", "", "SendEmail"),
        ("sesv2", "GET", "/v2/email/account", "", "GetAccount"),
        ("sesv2", "PUT", "/v2/email/account/sending", "", "PutAccountSendingAttributes"),
        ("s3", "GET", "/bucket/2026/11/29/13/object-1", "", "GetObject"),
        ("s3", "GET", "/bucket/key", "tagging", "GetObjectTagging"),
        ("s3", "GET", "/bucket", "list-type", "ListObjectsV2"),
        ("s3", "GET", "/bucket", "", "ListObjects"),
        ("s3", "PUT", "/bucket/key", "", "PutObject"),
        ("s3", "PUT", "/bucket", "", "CreateBucket"),
        ("s3", "PUT", "/bucket", "notification", "PutBucketNotificationConfiguration"),
        ("s3", "HEAD", "/bucket/key", "", "HeadObject"),
        ("s3", "DELETE", "/bucket/key", "", "DeleteObject"),
    ],
)
def test_rest_operations_come_from_the_models_http_bindings(
    service: str, method: str, path: str, query: str, operation: str
) -> None:
    keys = frozenset(q for q in query.split("&") if q)
    assert rest_operation(service, method, path, keys) == operation


def test_identify_reads_the_credential_scope_and_the_target() -> None:
    auth = {
        "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/"
        "aws4_request, SignedHeaders=host;x-amz-date, Signature=abc",
        "X-Amz-Target": "DynamoDB_20120810.TransactWriteItems",
    }
    assert identify("POST", "/", {}, auth, b"{}") == Call("dynamodb", "TransactWriteItems")
    ses = {"Authorization": auth["Authorization"].replace("/dynamodb/", "/ses/")}
    assert identify("POST", "/v2/email/outbound-emails", {}, ses, b"") == Call("sesv2", "SendEmail")
    assert identify("POST", "/", {}, ses, b"Action=SendEmail&Version=2010-12-01") == Call(
        "ses", "SendEmail"
    )
    presigned = {"X-Amz-Credential": "testing/20260101/us-east-1/s3/aws4_request"}
    assert identify("GET", "/b/k", presigned, {}, b"") == Call("s3", "GetObject")
    assert identify("GET", "/moto-api/data.json", {}, {}, b"") == Call("", "")


async def test_every_call_sesguard_makes_is_recognised(proxy: FaultProxy) -> None:
    url = proxy.endpoint
    async with client("dynamodb", url) as ddb:
        await ddb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        await ddb.put_item(TableName="t", Item={"pk": {"S": "a"}})
        await ddb.query(
            TableName="t",
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "a"}},
        )
        await ddb.transact_write_items(
            TransactItems=[{"Put": {"TableName": "t", "Item": {"pk": {"S": "b"}}}}]
        )
    async with client("sqs", url) as sqs:
        q = (await sqs.create_queue(QueueName="q"))["QueueUrl"]
        await sqs.send_message_batch(QueueUrl=q, Entries=[{"Id": "1", "MessageBody": "x"}])
        msgs = (await sqs.receive_message(QueueUrl=q, WaitTimeSeconds=1))["Messages"]
        entries = [{"Id": "1", "ReceiptHandle": msgs[0]["ReceiptHandle"]}]
        await sqs.change_message_visibility_batch(
            QueueUrl=q, Entries=[{**entries[0], "VisibilityTimeout": 0}]
        )
        await sqs.delete_message_batch(QueueUrl=q, Entries=entries)
    async with client("s3", url) as s3:
        await s3.create_bucket(Bucket="fault-proxy")
        await s3.put_object(Bucket="fault-proxy", Key="2026/11/29/13/x", Body=b"{}")
        await (await s3.get_object(Bucket="fault-proxy", Key="2026/11/29/13/x"))["Body"].read()
        await s3.list_objects_v2(Bucket="fault-proxy")
    async with client("sesv2", url) as ses:
        await ses.create_email_identity(EmailIdentity="isv.example.com")
        await ses.send_email(
            FromEmailAddress="a@isv.example.com",
            Destination={"ToAddresses": ["b@example.org"]},
            Content={"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "t"}}}},
        )
    async with client("firehose", url) as firehose:
        await firehose.list_delivery_streams()
    async with client("sts", url) as sts:
        await sts.get_caller_identity()
    expected = {
        ("dynamodb", "CreateTable"),
        ("dynamodb", "PutItem"),
        ("dynamodb", "Query"),
        ("dynamodb", "TransactWriteItems"),
        ("sqs", "CreateQueue"),
        ("sqs", "SendMessageBatch"),
        ("sqs", "ReceiveMessage"),
        ("sqs", "ChangeMessageVisibilityBatch"),
        ("sqs", "DeleteMessageBatch"),
        ("s3", "CreateBucket"),
        ("s3", "PutObject"),
        ("s3", "GetObject"),
        ("s3", "ListObjectsV2"),
        ("sesv2", "CreateEmailIdentity"),
        ("sesv2", "SendEmail"),
        ("firehose", "ListDeliveryStreams"),
        ("sts", "GetCallerIdentity"),
    }
    assert {(c.service, c.operation) for c in proxy.seen} == expected
    assert all(n == 1 for n in proxy.ok.values()) and set(proxy.ok) == set(proxy.seen)


# ---- errors parse as the real ones ------------------------------------------------------


# One cheap call of each service (the proxy answers before the stand-in sees it).
CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "sesv2": (
        "send_email",
        {
            "FromEmailAddress": "a@isv.example.com",
            "Destination": {"ToAddresses": ["b@example.org"]},
            "Content": {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "t"}}}},
        },
    ),
    "ses": ("get_send_quota", {}),
    "dynamodb": ("get_item", {"TableName": "t", "Key": {"pk": {"S": "a"}}}),
    "sqs": ("receive_message", {"QueueUrl": "http://127.0.0.1/000000000000/q"}),
    "s3": ("get_object", {"Bucket": "fault-proxy", "Key": "k"}),
    "firehose": ("put_record_batch", {"DeliveryStreamName": "s", "Records": [{"Data": b"x"}]}),
    "sts": ("get_caller_identity", {}),
}


CASES = [(s, kind) for s in ERRORS for kind in Error] + [(s, None) for s in ERRORS]


async def test_injected_errors_parse_into_the_services_codes_and_retry_decisions(
    proxy: FaultProxy,
) -> None:
    """Every (service, error) through a real aioboto3 client with botocore's standard
    retries (2 attempts): the ClientError code and HTTP status are the service's, and
    botocore retries 5xx and throttling (both attempts reach the proxy) but not a 501."""

    async def one(service: str, kind: Error | None) -> str | None:
        fault = error(service, kind) if kind else not_implemented(service)
        own = FaultProxy(proxy.upstream)  # one proxy per case: their counts stay apart
        async with own, client(service, own.endpoint, attempts=2) as c:
            injection = own.inject(fault)
            try:
                method, kwargs = CALLS[service]
                await getattr(c, method)(**kwargs)
            except ClientError as exc:
                meta = exc.response["ResponseMetadata"]
                got = (exc.response["Error"]["Code"], meta["HTTPStatusCode"], injection.hits)
                want = (fault.code, fault.status, 1 if fault.status == 501 else 2)
                if got != want:
                    return f"{service} {kind}: got {got}, want {want} (code, status, attempts)"
                if service == "sesv2" and kind is Error.THROTTLING:
                    assert classify_failure(exc) is Failure.THROTTLED
                return None
            return f"{service} {kind}: no error"

    problems = [p for p in await asyncio.gather(*(one(s, k) for s, k in CASES)) if p]
    assert not problems, "\n".join(problems)


async def test_not_implemented_is_localstacks_answer(proxy: FaultProxy) -> None:
    proxy.inject(not_implemented("sesv2"))
    async with client("sesv2", proxy.endpoint) as ses:
        with pytest.raises(ClientError) as info:
            await ses.get_account()
    err = info.value.response["Error"]
    assert err["Code"] == "InternalFailure"
    assert "'sesv2' is either not included in your current license plan" in err["Message"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501


# ---- windows, filters, latency, resets ---------------------------------------------------


async def test_a_fault_hits_only_its_operations_for_its_window(proxy: FaultProxy) -> None:
    async with client("dynamodb", proxy.endpoint) as ddb:
        await ddb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        injection = proxy.inject(error("dynamodb", Error.INTERNAL, "GetItem"), seconds=60)
        await ddb.put_item(TableName="t", Item={"pk": {"S": "a"}})  # another operation
        with pytest.raises(ClientError, match="InternalServerError"):
            await ddb.get_item(TableName="t", Key={"pk": {"S": "a"}})
        assert injection.hits == 1 and injection.forwarded == 0
        proxy.clear()  # ends the window now
        assert injection.ended.is_set()
        assert (await ddb.get_item(TableName="t", Key={"pk": {"S": "a"}}))["Item"]

        short = proxy.inject(error("dynamodb", Error.INTERNAL), seconds=0.05)
        await short.ended.wait()  # a window that has run out lets everything through
        assert (await ddb.get_item(TableName="t", Key={"pk": {"S": "a"}}))["Item"]
        assert short.hits == 0

        limited = proxy.inject(error("dynamodb", Error.THROTTLING), limit=2)
        for _ in range(2):
            with pytest.raises(ClientError, match="ProvisionedThroughputExceeded"):
                await ddb.get_item(TableName="t", Key={"pk": {"S": "a"}})
        assert (await ddb.get_item(TableName="t", Key={"pk": {"S": "a"}}))["Item"]
        assert limited.hits == 2


@pytest.mark.parametrize("after_upstream", [False, True])
async def test_latency_delays_and_still_forwards(proxy: FaultProxy, after_upstream: bool) -> None:
    async with client("sqs", proxy.endpoint) as sqs:
        injection = proxy.inject(
            latency("sqs", "CreateQueue", seconds=0.2, after_upstream=after_upstream)
        )
        await sqs.create_queue(QueueName="slow")
        assert (await sqs.get_queue_url(QueueName="slow"))["QueueUrl"]
    assert injection.hits == 1 and injection.forwarded == 1


@pytest.mark.parametrize("after_upstream", [False, True])
async def test_reset_drops_the_connection_before_or_after_the_upstream(
    proxy: FaultProxy, moto_endpoint: str, after_upstream: bool
) -> None:
    async with client("dynamodb", moto_endpoint) as direct:
        await direct.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        proxy.inject(reset("dynamodb", "PutItem", after_upstream=after_upstream))
        async with client("dynamodb", proxy.endpoint) as ddb:
            with pytest.raises(BotoCoreError):  # a connection error, not an AWS answer
                await ddb.put_item(TableName="t", Item={"pk": {"S": "a"}})
        stored = await direct.get_item(TableName="t", Key={"pk": {"S": "a"}})
    assert ("Item" in stored) is after_upstream


async def test_bodies_and_heads_pass_through_unchanged(proxy: FaultProxy) -> None:
    blob = os.urandom(3 * 1024 * 1024)
    async with client("s3", proxy.endpoint) as s3:
        await s3.create_bucket(Bucket="fault-proxy")
        await s3.put_object(Bucket="fault-proxy", Key="blob", Body=blob)
        got = await (await s3.get_object(Bucket="fault-proxy", Key="blob"))["Body"].read()
        head = await s3.head_object(Bucket="fault-proxy", Key="blob")
    assert got == blob
    assert head["ContentLength"] == len(blob)
