"""S3 event notifications (SQS message bodies) -> the objects to read (pure).

S3 sends `{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name"},
"object": {"key", "size"}}}]}` with URL-encoded keys (`unquote_plus` them), one
`s3:TestEvent` when the notification is configured (skipped), and the same body wrapped
in an SNS envelope when the notification goes through a topic (unwrapped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import orjson

from sesguard.errors import Refused


class BadNotification(Refused):
    """The message is not an S3 event notification; the message says why."""


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str
    size: int | None = None
    event_time: str | None = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class Notification:
    objects: tuple[ObjectRef, ...]
    test_event: bool = False
    skipped: int = 0  # records that are not ObjectCreated (ObjectRemoved, ...)


def parse_notification(body: str | bytes) -> Notification:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadNotification(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadNotification("body is not a JSON object")
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        return parse_notification(doc["Message"])  # SNS envelope
    if doc.get("Event") == "s3:TestEvent":
        return Notification((), test_event=True)
    records = doc.get("Records")
    if not isinstance(records, list) or not records:
        raise BadNotification("no Records: not an S3 event notification")
    objects: list[ObjectRef] = []
    skipped = 0
    for i, record in enumerate(records):
        ref = _object_ref(record, i)
        if ref is None:
            skipped += 1
        else:
            objects.append(ref)
    return Notification(tuple(objects), skipped=skipped)


def _object_ref(record: Any, i: int) -> ObjectRef | None:
    if not isinstance(record, dict):
        raise BadNotification(f"Records[{i}] is not an object")
    name = record.get("eventName")
    s3 = record.get("s3")
    if not isinstance(name, str) or not isinstance(s3, dict):
        raise BadNotification(f"Records[{i}] is not an S3 event record")
    if not name.startswith("ObjectCreated:"):
        return None
    bucket_doc = s3.get("bucket")
    bucket = bucket_doc.get("name") if isinstance(bucket_doc, dict) else None
    obj = s3.get("object")
    key = obj.get("key") if isinstance(obj, dict) else None
    if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
        raise BadNotification(f"Records[{i}] has no bucket name or object key")
    size = obj.get("size") if isinstance(obj, dict) else None
    event_time = record.get("eventTime")
    return ObjectRef(
        bucket=bucket,
        key=unquote_plus(key),
        size=size if isinstance(size, int) else None,
        event_time=event_time if isinstance(event_time, str) else None,
    )
