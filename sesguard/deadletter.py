"""Dead-lettering, the same for both services: the original body, untouched, plus the
reason in the `sesguard_reason` message attribute, so an operator can read why and redrive.
"""

from __future__ import annotations

from typing import Any

from sesguard.jobs import MAX_SQS_MESSAGE_BYTES

REASON_ATTRIBUTE = "sesguard_reason"


def reason_attributes(body: str, reason: str) -> dict[str, Any]:
    """The reason attribute, shortened so body + attribute fit one SQS message.

    SQS counts attribute name, type and value against the 256 KiB limit; a body that
    leaves no room goes to the DLQ without the attribute (the caller still logs it): the
    body is what must never be lost.
    """
    room = MAX_SQS_MESSAGE_BYTES - len(body.encode()) - len(REASON_ATTRIBUTE) - len("String")
    value = reason.encode()[: max(0, min(room, 4096))].decode(errors="ignore")
    if not value:
        return {}
    return {REASON_ATTRIBUTE: {"DataType": "String", "StringValue": value}}


async def send_to_dlq(sqs: Any, dlq_url: str, body: str, reason: str) -> bool:
    """Send the original body to the DLQ with its reason; False if the reason was dropped."""
    body = body or "(empty body)"  # SQS refuses empty messages
    attrs = reason_attributes(body, reason)
    kwargs: dict[str, Any] = {"QueueUrl": dlq_url, "MessageBody": body}
    if attrs:
        kwargs["MessageAttributes"] = attrs
    await sqs.send_message(**kwargs)
    return bool(attrs)
