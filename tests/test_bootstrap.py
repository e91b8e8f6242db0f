from __future__ import annotations

import json

from sesguard.bootstrap import CREATED, EXISTS, bootstrap


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
