"""`sesguard bootstrap`: create every resource sesguard uses, idempotently.

Each step looks first, then creates what is missing and corrects what drifted. An optional
API the endpoint lacks is a warning; a required one stops bootstrap (exit 1) with one line
naming its AWS_ENDPOINT_URL_<SERVICE> variable (`sesguard.aws.clients.not_implemented_message`).
See docs/operating.md, "Commands", and docs/local.md, "Run with docker compose".
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from sesguard.aws.clients import Clients, region
from sesguard.aws.errors import error_code
from sesguard.aws.table import KIND_ATTRIBUTE, PARTNERS_INDEX, TTL_ATTRIBUTE
from sesguard.logging import get_logger
from sesguard.runtime.retry import max_receive_count
from sesguard.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import GlobalSecondaryIndexTypeDef
    from types_aiobotocore_s3.type_defs import (
        NotificationConfigurationTypeDef,
        QueueConfigurationTypeDef,
    )
    from types_aiobotocore_sqs.literals import QueueAttributeNameType

    QueueAttributes = dict[QueueAttributeNameType, str]

log = get_logger(__name__)

CREATED, EXISTS, UPDATED, WARNING = "created", "exists", "updated", "warning"


@dataclass
class Report:
    steps: list[tuple[str, str, str]] = field(default_factory=list)  # (resource, outcome, detail)

    def add(self, resource: str, outcome: str, detail: str = "") -> None:
        self.steps.append((resource, outcome, detail))
        log.info("bootstrap_step", resource=resource, outcome=outcome, detail=detail)

    @property
    def changed(self) -> bool:
        return any(o in (CREATED, UPDATED) for _, o, _ in self.steps)


async def ensure_table(clients: Clients, settings: Settings, report: Report | None = None) -> None:
    report = report or Report()
    ddb = clients.dynamodb
    name = settings.table
    try:
        desc = (await ddb.describe_table(TableName=name))["Table"]
        report.add(f"dynamodb table {name}", EXISTS)
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        await ddb.create_table(
            TableName=name,
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
                {"AttributeName": KIND_ATTRIBUTE, "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            GlobalSecondaryIndexes=[PARTNERS_INDEX_SPEC],
            BillingMode="PAY_PER_REQUEST",
        )
        await _wait_table_active(ddb, name)
        report.add(f"dynamodb table {name}", CREATED)
        report.add(f"dynamodb index {PARTNERS_INDEX}", CREATED)
    else:
        indexes = {i["IndexName"] for i in desc.get("GlobalSecondaryIndexes", [])}
        if PARTNERS_INDEX in indexes:
            report.add(f"dynamodb index {PARTNERS_INDEX}", EXISTS)
        else:
            await ddb.update_table(
                TableName=name,
                AttributeDefinitions=[{"AttributeName": KIND_ATTRIBUTE, "AttributeType": "S"}],
                GlobalSecondaryIndexUpdates=[{"Create": PARTNERS_INDEX_SPEC}],
            )
            report.add(f"dynamodb index {PARTNERS_INDEX}", CREATED)
    ttl = await ddb.describe_time_to_live(TableName=name)
    ttl_desc = ttl.get("TimeToLiveDescription", {})
    if ttl_desc.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") and (
        ttl_desc.get("AttributeName") == TTL_ATTRIBUTE
    ):
        report.add(f"dynamodb ttl {TTL_ATTRIBUTE}", EXISTS)
    else:
        await ddb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
        report.add(f"dynamodb ttl {TTL_ATTRIBUTE}", CREATED)


# Sparse: only PROFILE and TOTALS items carry `kind`; keys only, so counter updates
# (which never change `kind`) do not write to the index.
PARTNERS_INDEX_SPEC: GlobalSecondaryIndexTypeDef = {
    "IndexName": PARTNERS_INDEX,
    "KeySchema": [
        {"AttributeName": KIND_ATTRIBUTE, "KeyType": "HASH"},
        {"AttributeName": "pk", "KeyType": "RANGE"},
    ],
    "Projection": {"ProjectionType": "KEYS_ONLY"},
}


async def _wait_table_active(ddb: DynamoDBClient, name: str) -> None:
    for _ in range(120):
        desc = await ddb.describe_table(TableName=name)
        if desc["Table"]["TableStatus"] == "ACTIVE":
            return
        await asyncio.sleep(1)
    raise TimeoutError(f"table {name} did not become ACTIVE")


async def ensure_queue(
    clients: Clients, name: str, attributes: QueueAttributes, report: Report
) -> tuple[str, str]:
    """Create or correct a queue; returns (url, arn)."""
    sqs = clients.sqs
    try:
        url = (await sqs.get_queue_url(QueueName=name))["QueueUrl"]
    except ClientError as exc:
        if error_code(exc) not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            raise
        url = (await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
        report.add(f"sqs queue {name}", CREATED)
    else:
        current = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))[
            "Attributes"
        ]
        drift = {k: v for k, v in attributes.items() if not _same_attr(current.get(k), v)}
        if drift:
            await sqs.set_queue_attributes(QueueUrl=url, Attributes=drift)
            report.add(f"sqs queue {name}", UPDATED, ", ".join(sorted(drift)))
        else:
            report.add(f"sqs queue {name}", EXISTS)
    arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"][
        "QueueArn"
    ]
    return url, arn


def _same_attr(current: str | None, wanted: str) -> bool:
    if current is None:
        return False
    if wanted.startswith("{"):
        try:
            return bool(json.loads(current) == json.loads(wanted))
        except ValueError:
            return False
    return current == wanted


async def ensure_queues(clients: Clients, settings: Settings, report: Report) -> dict[str, str]:
    """Both work queues with their DLQs; returns {queue name: arn}."""
    arns: dict[str, str] = {}
    for name in (settings.send_queue, settings.events_queue):
        dlq_name = f"{name}-dlq"
        _, dlq_arn = await ensure_queue(
            clients, dlq_name, {"MessageRetentionPeriod": "1209600"}, report
        )
        # Enough receives for a failing message's backoff to outlast the outage
        # tolerance: a transient outage never moves a job to the DLQ.
        redrive = json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count(settings)}
        )
        attrs: QueueAttributes = {
            "VisibilityTimeout": str(settings.visibility_timeout),
            "MessageRetentionPeriod": "1209600",
            "ReceiveMessageWaitTimeSeconds": "20",
            "RedrivePolicy": redrive,
        }
        _, arn = await ensure_queue(clients, name, attrs, report)
        arns[name] = arn
        arns[dlq_name] = dlq_arn
    return arns


async def ensure_bucket(
    clients: Clients, settings: Settings, events_queue_arn: str, report: Report
) -> str:
    s3, sqs = clients.s3, clients.sqs
    account = await clients.account_id()
    bucket = settings.bucket_name(account)
    try:
        await s3.head_bucket(Bucket=bucket)
        report.add(f"s3 bucket {bucket}", EXISTS)
    except ClientError as exc:
        if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region() != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region()}
        await s3.create_bucket(**kwargs)
        report.add(f"s3 bucket {bucket}", CREATED)

    # The events queue must allow S3 to send to it before S3 accepts the notification.
    queue_url = (await sqs.get_queue_url(QueueName=settings.events_queue))["QueueUrl"]
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "s3-object-created",
                    "Effect": "Allow",
                    "Principal": {"Service": "s3.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": events_queue_arn,
                    # Our bucket, in our account: bucket names are global, so a bucket of
                    # that name in another account must not be able to write here.
                    "Condition": {
                        "ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"},
                        "StringEquals": {"aws:SourceAccount": account},
                    },
                }
            ],
        }
    )
    current = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["Policy"])
    if _same_attr(current.get("Attributes", {}).get("Policy"), policy):
        report.add(f"sqs policy {settings.events_queue}", EXISTS)
    else:
        await sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": policy})
        report.add(f"sqs policy {settings.events_queue}", CREATED)

    events: QueueConfigurationTypeDef = {
        "Id": "sesguard-events",
        "QueueArn": events_queue_arn,
        "Events": ["s3:ObjectCreated:*"],
    }
    if settings.events_prefix:
        events["Filter"] = {
            "Key": {"FilterRules": [{"Name": "prefix", "Value": settings.events_prefix}]}
        }
    wanted: NotificationConfigurationTypeDef = {"QueueConfigurations": [events]}
    current_n = await s3.get_bucket_notification_configuration(Bucket=bucket)
    have = [
        q for q in current_n.get("QueueConfigurations", []) if q.get("QueueArn") == events_queue_arn
    ]
    if have:
        report.add(f"s3 notifications {bucket}", EXISTS)
    else:
        await s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration=wanted
        )
        report.add(f"s3 notifications {bucket}", CREATED)
    return bucket


async def ensure_firehose(clients: Clients, settings: Settings, bucket: str, report: Report) -> str:
    fh = clients.firehose
    name = settings.firehose_stream
    account = await clients.account_id()
    try:
        desc = await fh.describe_delivery_stream(DeliveryStreamName=name)
        report.add(f"firehose {name}", EXISTS)
        return str(desc["DeliveryStreamDescription"]["DeliveryStreamARN"])
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
    role_arn = settings.firehose_role_arn or f"arn:aws:iam::{account}:role/sesguard-firehose"
    # Required: without the stream no SES event reaches the worker, so an error stops here.
    resp = await fh.create_delivery_stream(
        DeliveryStreamName=name,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": role_arn,
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "Prefix": settings.events_prefix,
            "ErrorOutputPrefix": settings.firehose_error_prefix + "!{firehose:error-output-type}/",
            "BufferingHints": {
                "IntervalInSeconds": settings.firehose_buffer_seconds,
                "SizeInMBs": 5,
            },
            "CompressionFormat": "GZIP",
            "ProcessingConfiguration": {
                "Enabled": True,
                "Processors": [
                    {
                        "Type": "AppendDelimiterToRecord",
                        "Parameters": [{"ParameterName": "Delimiter", "ParameterValue": "\\n"}],
                    }
                ],
            },
        },
    )
    report.add(f"firehose {name}", CREATED)
    return str(resp["DeliveryStreamARN"])


async def ensure_ses(
    clients: Clients,
    settings: Settings,
    firehose_arn: str | None,
    identities: list[str],
    report: Report,
) -> None:
    ses = clients.sesv2
    cs = settings.configuration_set
    try:
        await ses.get_configuration_set(ConfigurationSetName=cs)
        report.add(f"ses configuration set {cs}", EXISTS)
    except ClientError as exc:
        if error_code(exc) != "NotFoundException":
            raise
        await ses.create_configuration_set(ConfigurationSetName=cs)
        report.add(f"ses configuration set {cs}", CREATED)

    if firehose_arn:
        await _ensure_event_destination(clients, settings, firehose_arn, report)

    for identity in identities:
        try:
            await ses.get_email_identity(EmailIdentity=identity)
            report.add(f"ses identity {identity}", EXISTS)
        except ClientError as exc:
            if error_code(exc) != "NotFoundException":
                raise
            await ses.create_email_identity(EmailIdentity=identity)
            report.add(f"ses identity {identity}", CREATED, "verify it before sending on AWS")


async def _ensure_event_destination(
    clients: Clients, settings: Settings, firehose_arn: str, report: Report
) -> None:
    ses = clients.sesv2
    cs = settings.configuration_set
    account = await clients.account_id()
    name = "sesguard-firehose"
    try:
        resp = await ses.get_configuration_set_event_destinations(ConfigurationSetName=cs)
        if any(d.get("Name") == name for d in resp.get("EventDestinations", [])):
            report.add(f"ses event destination {name}", EXISTS)
            return
        await ses.create_configuration_set_event_destination(
            ConfigurationSetName=cs,
            EventDestinationName=name,
            EventDestination={
                "Enabled": True,
                "MatchingEventTypes": [
                    "SEND",
                    "REJECT",
                    "BOUNCE",
                    "COMPLAINT",
                    "DELIVERY",
                    "OPEN",
                    "CLICK",
                    "RENDERING_FAILURE",
                    "DELIVERY_DELAY",
                ],
                "KinesisFirehoseDestination": {
                    "IamRoleArn": settings.ses_firehose_role_arn
                    or f"arn:aws:iam::{account}:role/sesguard-ses-firehose",
                    "DeliveryStreamArn": firehose_arn,
                },
            },
        )
        report.add(f"ses event destination {name}", CREATED)
    except ClientError as exc:
        report.add(
            f"ses event destination {name}",
            WARNING,
            f"endpoint does not support it ({error_code(exc)}); local runs use the simulator",
        )


async def ensure_event_bus(clients: Clients, settings: Settings, report: Report) -> None:
    """The EventBridge bus of lifecycle events (SESGUARD_EVENT_BUS): the default bus always
    exists (no call); a custom one by name is created if missing; one given by ARN (maybe
    another account's) is only checked, and a warning says if it is missing."""
    bus = settings.event_bus
    resource = f"eventbridge bus {bus}"
    if bus == "default":
        report.add(resource, EXISTS)
        return
    try:
        await clients.events.describe_event_bus(Name=bus)
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
    else:
        report.add(resource, EXISTS)
        return
    if bus.startswith("arn:"):
        report.add(resource, WARNING, "not found: create it (in its account) and allow PutEvents")
        return
    await clients.events.create_event_bus(Name=bus)
    report.add(resource, CREATED)


async def bootstrap(clients: Clients, settings: Settings, identities: list[str]) -> Report:
    report = Report()
    await ensure_table(clients, settings, report)
    arns = await ensure_queues(clients, settings, report)
    bucket = await ensure_bucket(clients, settings, arns[settings.events_queue], report)
    firehose_arn = await ensure_firehose(clients, settings, bucket, report)
    await ensure_ses(clients, settings, firehose_arn, identities, report)
    await ensure_event_bus(clients, settings, report)
    return report
