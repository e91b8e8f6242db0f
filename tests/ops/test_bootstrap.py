from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sesguard.ops.bootstrap import CREATED, EXISTS, bootstrap
from tests.conftest import cli


async def test_bootstrap_creates_everything_then_changes_nothing(clients, settings) -> None:
    first = await bootstrap(clients, settings, ["isv.example.com"])
    outcomes = {r: o for r, o, _ in first.steps}
    assert outcomes["dynamodb table sesguard"] == CREATED
    assert outcomes["sqs queue sesguard-send-jobs"] == CREATED
    assert outcomes["sqs queue sesguard-ses-events-dlq"] == CREATED
    assert outcomes["ses identity isv.example.com"] == CREATED

    second = await bootstrap(clients, settings, ["isv.example.com"])
    assert not second.changed, second.steps
    assert all(o in (EXISTS, "warning") for _, o, _ in second.steps)

    url = (await clients.sqs.get_queue_url(QueueName="sesguard-send-jobs"))["QueueUrl"]
    attrs = (await clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))[
        "Attributes"
    ]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(":sesguard-send-jobs-dlq")
    ttl = await clients.dynamodb.describe_time_to_live(TableName="sesguard")
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"
    account = await clients.account_id()
    notif = await clients.s3.get_bucket_notification_configuration(
        Bucket=f"sesguard-ses-events-{account}"
    )
    assert notif["QueueConfigurations"][0]["QueueArn"].endswith(":sesguard-ses-events")
    events_url = (await clients.sqs.get_queue_url(QueueName="sesguard-ses-events"))["QueueUrl"]
    policy = json.loads(
        (await clients.sqs.get_queue_attributes(QueueUrl=events_url, AttributeNames=["Policy"]))[
            "Attributes"
        ]["Policy"]
    )
    (stmt,) = policy["Statement"]
    assert stmt["Principal"] == {"Service": "s3.amazonaws.com"}
    assert stmt["Action"] == "sqs:SendMessage"
    assert stmt["Condition"] == {  # our bucket, and only in our account
        "ArnLike": {"aws:SourceArn": f"arn:aws:s3:::sesguard-ses-events-{account}"},
        "StringEquals": {"aws:SourceAccount": account},
    }
    fh = await clients.firehose.describe_delivery_stream(DeliveryStreamName="sesguard-ses-events")
    assert fh["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE"
    (dest,) = fh["DeliveryStreamDescription"]["Destinations"]
    hints = dest["ExtendedS3DestinationDescription"]["BufferingHints"]
    assert hints == {"IntervalInSeconds": 10, "SizeInMBs": 5}  # what a pause waits for on AWS


async def test_bootstrap_takes_the_firehose_buffering_interval_from_the_settings(
    clients, settings
) -> None:
    await bootstrap(clients, settings.model_copy(update={"firehose_buffer_seconds": 0}), [])
    fh = await clients.firehose.describe_delivery_stream(DeliveryStreamName="sesguard-ses-events")
    (dest,) = fh["DeliveryStreamDescription"]["Destinations"]
    assert dest["ExtendedS3DestinationDescription"]["BufferingHints"]["IntervalInSeconds"] == 0


async def test_bootstrap_corrects_drifted_queue(clients, settings) -> None:
    await bootstrap(clients, settings, [])
    url = (await clients.sqs.get_queue_url(QueueName="sesguard-send-jobs"))["QueueUrl"]
    await clients.sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "5"})
    report = await bootstrap(clients, settings, [])
    assert ("sqs queue sesguard-send-jobs", "updated", "VisibilityTimeout") in report.steps


async def test_bootstrap_adds_the_partners_index_to_an_older_table(clients, settings) -> None:
    await clients.dynamodb.create_table(
        TableName=settings.table,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    report = await bootstrap(clients, settings, [])
    assert ("dynamodb index partners", "created", "") in report.steps
    desc = await clients.dynamodb.describe_table(TableName=settings.table)
    assert [i["IndexName"] for i in desc["Table"]["GlobalSecondaryIndexes"]] == ["partners"]
    again = await bootstrap(clients, settings, [])
    assert ("dynamodb index partners", "exists", "") in again.steps


# ---- an endpoint that does not implement a required API: one line, exit 1 ---------------


class _NotImplementedHandler(BaseHTTPRequestHandler):
    """Answers every request as LocalStack's community edition answers SESv2."""

    requests = 0

    def do_POST(self) -> None:
        type(self).requests += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps(
            {
                "__type": "InternalFailure",
                "message": "The API for service sesv2 is either not included in your current"
                " license plan or has not yet been emulated by LocalStack.",
            }
        ).encode()
        self.send_response(501)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-amzn-errortype", "InternalFailure")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_POST

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_implemented_endpoint() -> Iterator[str]:
    _NotImplementedHandler.requests = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotImplementedHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


@pytest.mark.parametrize(
    ("service_id", "variable"),
    [
        ("SESv2", "AWS_ENDPOINT_URL_SESV2"),
        ("Firehose", "AWS_ENDPOINT_URL_FIREHOSE"),  # was a warning; the stream is required
        ("DynamoDB", "AWS_ENDPOINT_URL_DYNAMODB"),
    ],
)
def test_bootstrap_names_the_service_an_endpoint_does_not_implement(
    moto_endpoint, not_implemented_endpoint, service_id, variable
) -> None:
    """Everything on moto except one service, routed (as a user would route it by mistake)
    to an endpoint answering HTTP 501: bootstrap stops with one line that says which
    service, which endpoint, and which variable routes it elsewhere."""
    env = {variable: not_implemented_endpoint, "AWS_MAX_ATTEMPTS": "5"}  # the SDK default here
    r = cli("bootstrap", "--identity", "isv.example.com", **env)
    assert r.code == 1, (r.out, r.err)
    assert r.err == (
        f"sesguard: {service_id} is not implemented by {not_implemented_endpoint} — route it"
        f" to an endpoint that has it with {variable}\n"
    )
    assert _NotImplementedHandler.requests == 1  # not retried: it is not a passing failure


async def test_bootstrap_creates_a_custom_event_bus_once(clients) -> None:
    """The default bus needs nothing; a named one is created when missing, then left."""
    from sesguard.settings import load_settings

    default = await bootstrap(clients, load_settings(), [])
    assert ("eventbridge bus default", EXISTS, "") in default.steps
    custom = load_settings(event_bus="partner-events")
    first = await bootstrap(clients, custom, [])
    assert ("eventbridge bus partner-events", CREATED, "") in first.steps
    bus = await clients.events.describe_event_bus(Name="partner-events")
    assert bus["Name"] == "partner-events"
    second = await bootstrap(clients, custom, [])
    assert ("eventbridge bus partner-events", EXISTS, "") in second.steps
    assert not second.changed, second.steps
