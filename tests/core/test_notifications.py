"""S3 event notification bodies -> objects to read (pure, no AWS)."""

from __future__ import annotations

import re

import orjson
import pytest

from sesguard.core.notifications import BadNotification, ObjectRef, parse_notification


def record(key: str, bucket: str = "events", name: str = "ObjectCreated:Put") -> dict[str, object]:
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventTime": "2026-11-29T01:02:03.000Z",
        "eventName": name,
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 42}},
    }


def test_several_records_with_url_encoded_keys() -> None:
    body = orjson.dumps(
        {"Records": [record("2026/11/29/01/a+b%2Bc.gz"), record("x%3Dy", bucket="other")]}
    )
    note = parse_notification(body)
    assert note.objects == (
        ObjectRef("events", "2026/11/29/01/a b+c.gz", 42, "2026-11-29T01:02:03.000Z"),
        ObjectRef("other", "x=y", 42, "2026-11-29T01:02:03.000Z"),
    )
    assert note.objects[0].url == "s3://events/2026/11/29/01/a b+c.gz"


def test_test_event_and_non_create_records_are_skipped() -> None:
    test = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "events"}
    assert parse_notification(orjson.dumps(test)).test_event
    note = parse_notification(
        orjson.dumps({"Records": [record("a", name="ObjectRemoved:Delete"), record("b")]})
    )
    assert [o.key for o in note.objects] == ["b"] and note.skipped == 1


def test_sns_envelope_is_unwrapped() -> None:
    inner = orjson.dumps({"Records": [record("k")]}).decode()
    envelope = {"Type": "Notification", "TopicArn": "arn:aws:sns:x", "Message": inner}
    assert parse_notification(orjson.dumps(envelope).decode()).objects[0].key == "k"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"hello": 1}', "no Records"),
        ('{"Records": []}', "no Records"),
        ('{"Records": [5]}', "Records[0] is not an object"),
        ('{"Records": [{"eventName": "ObjectCreated:Put"}]}', "not an S3 event record"),
        (
            '{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}}}]}',
            "no bucket name or object key",
        ),
        (
            '{"Records": [{"eventName": "ObjectCreated:Put",'
            ' "s3": {"bucket": "b", "object": {"key": "k"}}}]}',
            "no bucket name or object key",
        ),
    ],
)
def test_bad_bodies_say_why(body: str, reason: str) -> None:
    with pytest.raises(BadNotification, match=re.escape(reason)):
        parse_notification(body)
