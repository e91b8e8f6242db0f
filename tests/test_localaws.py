"""The stand-in's speed-ups to moto change no answer (sesguard.localaws._speed_up_moto), and
`sent_messages` reads what its SES accepted, in process and from a child process."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from typing import Any

import moto
from moto.sqs.models import sqs_backends

from sesguard.localaws import MESSAGES_PATH, _in_process, local_aws_process, sent_messages

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
    """`local_aws_process` (and `python -m sesguard.localaws`): ready once our route
    answers, and `sent_messages` reads the child's SES over HTTP."""
    import boto3

    saved = dict(os.environ)
    try:
        with local_aws_process() as endpoint:
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
    finally:
        os.environ.clear()
        os.environ.update(saved)
