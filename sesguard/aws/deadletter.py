"""Dead-lettering, the same for both services: the original body plus its reason.

See docs/design.md, "Nothing is lost". The reasons `sesguard dlq redrive` tells apart start
with the phrases defined here, so the services and the redrive share one spelling of each.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sesguard.core.jobs import MAX_SQS_MESSAGE_BYTES
from sesguard.logging import get_logger

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

log = get_logger(__name__)

REASON_ATTRIBUTE = "sesguard_reason"
SOURCE_ATTRIBUTE = "sesguard_message_id"
TRUNCATED_ATTRIBUTE = "sesguard_truncated_from"
SHA256_ATTRIBUTE = "sesguard_body_sha256"
MAX_REASON_BYTES = 4096
EMPTY_BODY = "(empty body)"  # SQS refuses empty messages

# How the reasons that decide a redrive begin (sesguard.ops.dlq).
POSSIBLY_SENT = "possibly sent"
REJECTED = "rejected by SES"
UNKNOWN_PARTNER = "unknown partner"
PAST_TOLERANCE = "failing for longer than the outage tolerance"


def possibly_sent_reason(claimed_at: str | None, detail: str | None = None) -> str:
    """The reason of a possibly sent job the sender could not settle itself
    (docs/design.md, "Possibly sent"): what it means and the one safe way on (never
    "delete the record")."""
    return (
        f"{POSSIBLY_SENT}: a delivery claimed this job_id at {claimed_at or 'an unknown time'}"
        " and never finished, and SES has not said it took the message (yet)"
        + (f" ({detail})" if detail else "")
        + ". Run `sesguard dlq redrive`: it drops the job once SES's events show it was"
        " sent, and re-sends it only if none came within SESGUARD_DLQ_SETTLE_SECONDS of the"
        " claim"
    )


@dataclass(frozen=True)
class DeadLetterMessage:
    """What goes to the DLQ: the body (whole, or cut to fit) and its attributes. (Named
    apart from `sesguard.runtime.fates.DeadLetter`, the fate a handler returns.)"""

    body: str
    attributes: dict[str, Any]
    truncated_from: int | None = None  # the original body's size when it was cut

    @property
    def size(self) -> int:
        """Bytes SQS counts: the body plus each attribute's name, type and value."""
        return len(self.body.encode()) + sum(
            len(name) + len(a["DataType"]) + len(a["StringValue"].encode())
            for name, a in self.attributes.items()
        )


def _string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def _cut(text: str, limit: int) -> str:
    """At most `limit` UTF-8 bytes of `text`, never half a character."""
    return text.encode()[: max(0, limit)].decode(errors="ignore")


def dead_letter(
    body: str,
    reason: str,
    limit: int = MAX_SQS_MESSAGE_BYTES,
    message_id: str | None = None,
) -> DeadLetterMessage:
    """The DLQ message for `body` (from message `message_id`) refused for `reason`,
    within `limit` bytes (pure)."""
    body = body or EMPTY_BODY
    reason = _cut(reason, MAX_REASON_BYTES) or "(no reason given)"
    base = {REASON_ATTRIBUTE: _string(reason)}
    if message_id:
        base[SOURCE_ATTRIBUTE] = _string(message_id[:128])
    whole = DeadLetterMessage(body, base)
    if whole.size <= limit:
        return whole
    size = len(body.encode())
    attributes = {
        **base,
        TRUNCATED_ATTRIBUTE: {"DataType": "Number", "StringValue": str(size)},
        SHA256_ATTRIBUTE: _string(hashlib.sha256(body.encode()).hexdigest()),
    }
    room = limit - DeadLetterMessage("", attributes).size
    return DeadLetterMessage(_cut(body, room) or EMPTY_BODY, attributes, truncated_from=size)


async def send_to_dlq(
    sqs: SQSClient, dlq_url: str, body: str, reason: str, message_id: str | None = None
) -> DeadLetterMessage:
    """Send the body to the DLQ with its reason (always attached) and the id of the
    message it copies; returns what was sent. A body cut to make room for the reason is
    logged here."""
    letter = dead_letter(body, reason, message_id=message_id)
    await sqs.send_message(
        QueueUrl=dlq_url, MessageBody=letter.body, MessageAttributes=letter.attributes
    )
    if letter.truncated_from is not None:
        log.warning(
            "dlq_body_truncated",
            original_bytes=letter.truncated_from,
            kept_bytes=len(letter.body.encode()),
            sha256=letter.attributes[SHA256_ATTRIBUTE]["StringValue"],
            reason=reason[:200],
        )
    return letter
