"""What makes two SES records the same event (pure): a 12-byte key per event.

SES and Firehose deliver at least once, so one event can arrive twice, in one object or in
two. The key is built from what SES itself names the event by, so a repeat has the same
key and a distinct event another: docs/design.md, "Every event is counted exactly once"
(the fields per event type are listed there).
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

import orjson

from sesguard.aws.seen import KEY_BYTES

_SEP = "\x1f"
_ONE_PER_MESSAGE = frozenset({"Send", "Reject", "Rendering Failure", "RenderingFailure"})
# A fresh blake2b(digest_size=KEY_BYTES): copying one costs about a third less than
# making one with its keyword argument (once per event).
_new_key_hash = blake2b(digest_size=KEY_BYTES).copy


def _address(entry: Any) -> str:
    return str(entry.get("emailAddress") if type(entry) is dict else entry)


def event_key(kind: str, message_id: str, detail: Any, recipients: list[Any]) -> bytes:
    """The key of one event of message `message_id` (its `mail.messageId`).

    A bounce or complaint is named by SES's own `feedbackId`; a Send, Reject or Rendering
    Failure (one per message) by type and message; any other event also by its own
    timestamp and recipients (and link, address and user agent for opens and clicks)."""
    if kind in _ONE_PER_MESSAGE:
        text = f"{kind}{_SEP}{message_id}"
    elif type(detail) is not dict:
        text = _SEP.join([kind, message_id, *map(_address, recipients)])
    else:
        feedback = detail.get("feedbackId")
        if type(feedback) is str and feedback:
            text = f"{kind}{_SEP}{message_id}{_SEP}{feedback}"
        else:
            parts = [kind, message_id]
            # Detail fields that tell two events of one message and type apart (besides
            # recipients): an open or click at another time, on another link, from another
            # address is another. (Four calls of `get` cost half of a map over the names.)
            get = detail.get
            at, link, ip, agent = get("timestamp"), get("link"), get("ipAddress"), get("userAgent")
            if at is not None:
                parts.append(f"timestamp={at}")
            if link is not None:
                parts.append(f"link={link}")
            if ip is not None:
                parts.append(f"ipAddress={ip}")
            if agent is not None:
                parts.append(f"userAgent={agent}")
            if recipients:
                try:  # a list of addresses (SES's for deliveries): joined in C
                    parts.append(_SEP.join(recipients))
                except TypeError:  # objects with `emailAddress`, or anything else
                    parts.extend(map(_address, recipients))
            text = _SEP.join(parts)
    digest = _new_key_hash()
    digest.update(text.encode())
    return digest.digest()


def content_message_id(record: dict[str, Any]) -> str:
    """A stand-in message id for a record without `mail.messageId` (SES always writes
    one): its whole content, so only an identical record is the same event."""
    digest = blake2b(orjson.dumps(record, option=orjson.OPT_SORT_KEYS), digest_size=16)
    return "content:" + digest.hexdigest()
