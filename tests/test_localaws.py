"""The stand-in's speed-ups to moto change no answer (sesguard.localaws._speed_up_moto)."""

from __future__ import annotations

import os
from typing import Any

import moto
from moto.sqs.models import sqs_backends

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
