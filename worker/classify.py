"""One SES event record -> which partner, which hour, which counter, how much (pure).

Applies the counting rules of docs/semantics.md (the single statement of them) to one
record, and names the event (worker/eventkey.py) and, for a Send, the job its tag names
(docs/design.md, "The job tag").
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, NamedTuple, Required, TypedDict, cast

import msgspec

from sesguard.aws.seen import MINUTE_FORMAT
from sesguard.core.identities import NO_IDENTITIES, Identities, is_verified
from sesguard.core.jobs import JOB_TAG, PARTNER_TAG, job_id_from_tag
from sesguard.core.mailbox import SIMULATOR_DOMAIN, is_simulator_address
from sesguard.core.partners import PARTNER_ID_RE, RESERVED_PREFIX, UNATTRIBUTED, hour_floor
from sesguard.errors import Refused
from worker.eventkey import content_message_id, event_key


class NotAnEvent(Refused):
    """Valid JSON that cannot be counted as an SES event; the message says why."""


class Delta(NamedTuple):
    """What one event adds: `amount` to `counter` of (partner_id, hour), `simulator` of
    which are mailbox-simulator recipients and `verified` (hard bounces only) recipients
    at identities verified in the account."""

    partner_id: str
    hour: datetime
    counter: str
    amount: int
    tag_problem: str | None  # "missing" or "invalid" when counted under UNATTRIBUTED
    simulator: int = 0
    verified: int = 0  # hard bounces to verified identities (not simulator ones)
    minute: str = ""  # "YYYY-MM-DDTHH:MM" (UTC) of the event's own time: where its key lives
    key: bytes = b""  # the event's key (worker/eventkey.py): a repeat has the same one
    job: str | None = None  # Send events: the job the tag names (docs/design.md, "The job tag")


class Ignored(NamedTuple):
    """An event that is not counted (Subscription, unknown types): `kind` names it."""

    kind: str


class WrongPipeline(NamedTuple):
    """A record SES publishes to SNS for identity notifications, not an event-publishing
    record: `kind` is "notification" (bare) or "sns-envelope" (still wrapped by SNS)."""

    kind: str


# eventType -> (detail key holding the event's own timestamp, counter, recipients list key)
# A None list key means mail.destination; "" means one per event (the message, not a
# recipient: opens, clicks, rendering failures).
_SIMPLE: dict[str, tuple[str | None, str, str | None]] = {
    "Send": (None, "sent", None),
    "Reject": (None, "rejects", None),
    "Delivery": ("delivery", "delivered", "recipients"),
    "DeliveryDelay": ("deliveryDelay", "delivery_delays", "delayedRecipients"),
    "Open": ("open", "opens", ""),
    "Click": ("click", "clicks", ""),
    "Rendering Failure": ("failure", "rendering_failures", ""),
    "RenderingFailure": ("failure", "rendering_failures", ""),
}
_IGNORED = frozenset({"Subscription"})
# An eventType SES never writes but a known one in another case or spacing ("bounce",
# "BOUNCE", "Delivery_Delay"): ignored like any unknown type, and counted apart so the
# worker warns (a producer that rewrites records loses events it meant to publish).
MISSPELLED_PREFIX = "misspelled:"
_KNOWN_FOLDED = {
    k.replace(" ", "").casefold() for k in (*_SIMPLE, "Bounce", "Complaint", *_IGNORED)
}
_SUPPRESSED_SUBTYPE = "OnAccountSuppressionList"
_SOFT_BOUNCES = frozenset({"Transient", "Undetermined"})


# ---- the fields `classify` reads --------------------------------------------------------
# Decoding only these (with `read_fields`) skips the rest of a record, mostly `headers` and
# `commonHeaders`, at about half the cost of decoding it whole. Each is typed as SES writes
# it (null included, which SES writes for some): a record where one is not is refused, and
# decoded whole instead (same rules, slower). No number is read, so no number is decoded.
# A field classify starts to read must be added here (tests/worker/test_fast_path.py).


class _Recipient(TypedDict, total=False):
    emailAddress: str | None


class _Detail(TypedDict, total=False):
    timestamp: str | None
    feedbackId: str | None
    link: str | None
    ipAddress: str | None
    userAgent: str | None
    bounceType: str | None
    bounceSubType: str | None
    complaintSubType: str | None
    recipients: list[str | _Recipient]
    delayedRecipients: list[str | _Recipient]
    bouncedRecipients: list[str | _Recipient]
    complainedRecipients: list[str | _Recipient]


class _Tags(TypedDict, total=False):  # PARTNER_TAG and JOB_TAG
    partner_id: list[str]
    sesguard_job: list[str]


class _Mail(TypedDict, total=False):
    timestamp: str | None
    # Required: without one, the key is made of the whole record's content.
    messageId: Required[Annotated[str, msgspec.Meta(min_length=1)]]
    destination: list[str | _Recipient]
    tags: _Tags


class _Record(TypedDict, total=False):
    eventType: str | None
    mail: _Mail
    notificationType: str | None
    Type: str | None
    Message: str | None
    bounce: _Detail
    complaint: _Detail
    delivery: _Detail
    deliveryDelay: _Detail
    open: _Detail
    click: _Detail
    failure: _Detail


# The fields `classify` reads from one record's JSON text, for it to classify exactly as
# it would the whole record; ValueError (or RecursionError: nested too deep) if they cannot
# stand in for it (a field not as SES types it, no message id, not JSON). Only for valid
# UTF-8: see worker/reader.py.
read_fields = cast("Callable[[bytes], dict[str, Any]]", msgspec.json.Decoder(_Record).decode)


@lru_cache(maxsize=4096)
def _utc_hour(prefix: str) -> datetime:
    """'YYYY-MM-DDTHH' of a UTC timestamp -> that hour (cached: an object spans few hours)."""
    return datetime.strptime(prefix, "%Y-%m-%dT%H").replace(tzinfo=UTC)


_MINUTES: dict[str, tuple[datetime, str]] = {}  # an object spans a few minutes
_MINUTES_KEPT = 4096


def event_time(ts: Any) -> tuple[datetime, str]:
    """(hour bucket, "YYYY-MM-DDTHH:MM") of an SES timestamp ('2026-11-29T01:02:03.000Z'),
    both UTC; ValueError if unusable."""
    if type(ts) is not str:
        raise ValueError("timestamp is not a string")
    if len(ts) >= 20 and (ts[-1] == "Z" or ts.endswith("+00:00")):
        # SES always writes UTC: skip the full parse. Known minutes are looked up by
        # "YYYY-MM-DDTHH:MM:", which holds the three separators checked below.
        found = _MINUTES.get(ts[:17])
        if found is not None:
            return found
        if ts[10] == "T" and ts[13] == ":" and ts[16] == ":":
            found = (_utc_hour(ts[:13]), ts[:16])
            if len(_MINUTES) >= _MINUTES_KEPT:
                _MINUTES.clear()
            _MINUTES[ts[:17]] = found
            return found
    parsed = datetime.fromisoformat(ts)
    if parsed.tzinfo is None:
        raise ValueError("timestamp has no time zone")
    return hour_floor(parsed), parsed.astimezone(UTC).strftime(MINUTE_FORMAT)


def event_hour(ts: Any) -> datetime:
    """Hour bucket of an SES timestamp; ValueError if unusable."""
    return event_time(ts)[0]


def partner_of(mail: dict[str, Any]) -> tuple[str, str | None]:
    """(partner id, problem): the `partner_id` tag, or UNATTRIBUTED with why (a reserved
    id in a tag is invalid: no partner can have one)."""
    tags = mail.get("tags")
    value = tags.get(PARTNER_TAG) if type(tags) is dict else None
    if type(value) is list:
        value = value[0] if value else None
    if type(value) is str:
        found = _PARTNERS.get(value)
        if found is None:
            if len(_PARTNERS) >= _PARTNERS_KEPT:
                _PARTNERS.clear()
            found = _PARTNERS[value] = _partner_of_tag(value)
        return found
    if value is None:
        return UNATTRIBUTED, "missing"
    return UNATTRIBUTED, "invalid"


def _partner_of_tag(value: str) -> tuple[str, str | None]:
    if PARTNER_ID_RE.fullmatch(value) and not value.startswith(RESERVED_PREFIX):
        return value, None
    return UNATTRIBUTED, "invalid"


# Tag value -> partner_of's answer: an object names a few partners thousands of times.
_PARTNERS: dict[str, tuple[str, str | None]] = {}
_PARTNERS_KEPT = 4096


def _recipients(obj: Any, key: str, where: str) -> list[Any]:
    value = obj.get(key) if type(obj) is dict else None
    if type(value) is not list:
        raise NotAnEvent(f"{where}.{key} is not a list")
    return value


# Every simulator address (is_simulator_address), lowercased, holds this: a list of
# addresses whose lowercased text lacks it has none: one test in C for the whole list.
_SIMULATOR_MARK = "@" + SIMULATOR_DOMAIN


def _simulated(recipients: list[Any]) -> int:
    """How many entries (addresses, or objects with `emailAddress`) are simulator mail."""
    if not recipients:
        return 0
    if type(recipients[0]) is str:
        try:
            if _SIMULATOR_MARK not in "\n".join(recipients).lower():
                return 0
        except TypeError:  # not all of them are strings
            pass
    n = 0
    for r in recipients:
        if is_simulator_address(r.get("emailAddress") if type(r) is dict else r):
            n += 1
    return n


def _when(ts: Any, mail: dict[str, Any]) -> tuple[datetime, str]:
    """Where the event's time `ts` (or, if None, the message's) is unusable: the message's
    time if `ts` was the event's, else NotAnEvent."""
    if ts is not None:  # a bad event timestamp: fall back to the mail's time
        try:
            return event_time(mail.get("timestamp"))
        except ValueError:
            pass
    raise NotAnEvent("no usable timestamp") from None


def _fold(kind: str) -> str:
    return kind.replace(" ", "").replace("_", "").replace("-", "").casefold()


def _wrong_pipeline(record: dict[str, Any]) -> WrongPipeline | None:
    if type(record.get("notificationType")) is str:
        return WrongPipeline("notification")
    if record.get("Type") == "Notification" and type(record.get("Message")) is str:
        return WrongPipeline("sns-envelope")
    return None


def _verified(recipients: list[Any], identities: Identities) -> int:
    """How many bounced recipients (not simulator ones) are verified identities."""
    n = 0
    for r in recipients:
        addr = r.get("emailAddress") if type(r) is dict else r
        if is_verified(addr, identities) and not is_simulator_address(addr):
            n += 1
    return n


def classify(
    record: dict[str, Any], identities: Identities = NO_IDENTITIES
) -> Delta | Ignored | WrongPipeline:
    """Classify one record (see module docstring); raises NotAnEvent for non-events.
    `identities`: the account's verified identities (hard bounces to them count apart)."""
    result = classify_tuple(record, identities)
    if type(result) is tuple:
        return _new_tuple(Delta, result)
    return cast("Ignored | WrongPipeline", result)


# A counted event's Delta fields, in order, as a plain tuple.
DeltaFields = tuple[str, datetime, str, int, str | None, int, int, str, bytes, str | None]


def classify_tuple(
    record: dict[str, Any], identities: Identities = NO_IDENTITIES
) -> DeltaFields | Ignored | WrongPipeline:
    """`classify`, a counted event's Delta as a plain tuple (Ignored and WrongPipeline are
    tuples too, but not of type tuple): for the aggregator, once per record, where making
    a Delta costs about 0.1 µs more."""
    kind = record.get("eventType")
    if kind is None:
        wrong = _wrong_pipeline(record)
        if wrong is not None:
            return wrong
    mail = record.get("mail")
    if type(kind) is not str or type(mail) is not dict:
        raise NotAnEvent("not an SES event (no eventType and mail)")

    per_message = False  # opens, clicks, rendering failures: one per message
    spec = _SIMPLE.get(kind)
    if spec is not None:
        detail_key, counter, list_key = spec
        detail = record.get(detail_key) if detail_key else None
        if list_key is None:
            recipients = mail.get("destination")
            if type(recipients) is not list:
                raise NotAnEvent("mail.destination is not a list")
        elif list_key:
            recipients = detail.get(list_key) if type(detail) is dict else None
            if type(recipients) is not list:
                raise NotAnEvent(f"{detail_key}.{list_key} is not a list")
        else:
            per_message = True
            dest = mail.get("destination")
            recipients = dest if type(dest) is list else []
    elif kind == "Bounce":
        detail = record.get("bounce")
        if type(detail) is not dict:
            raise NotAnEvent("Bounce without bounce object")
        recipients = _recipients(detail, "bouncedRecipients", "bounce")
        bounce_type = detail.get("bounceType")
        if detail.get("bounceSubType") == _SUPPRESSED_SUBTYPE:
            counter = "suppressed"
        elif bounce_type == "Permanent":
            counter = "hard_bounces"
        elif bounce_type in _SOFT_BOUNCES:
            counter = "soft_bounces"
        else:
            return Ignored(f"Bounce/{bounce_type}")
    elif kind == "Complaint":
        detail = record.get("complaint")
        if type(detail) is not dict:
            raise NotAnEvent("Complaint without complaint object")
        recipients = _recipients(detail, "complainedRecipients", "complaint")
        # OnAccountSuppressionList: SES accepted the message but never sent it, to each
        # of these recipients (per recipient, as the sends it offsets). Otherwise one
        # feedback report is one complaint, however many recipients SES lists as the
        # ones who might have complained.
        if detail.get("complaintSubType") == _SUPPRESSED_SUBTYPE:
            counter = "suppressed"
        else:
            counter, per_message = "complaints", True
    elif kind in _IGNORED:
        return Ignored(kind)
    elif _fold(kind) in _KNOWN_FOLDED:
        return Ignored(f"{MISSPELLED_PREFIX}{kind[:40]}")
    else:
        return Ignored(f"unknown:{kind[:40]}")

    simulator = _simulated(recipients)
    if per_message:  # simulator mail when every recipient is one
        amount, simulator = 1, int(0 < simulator == len(recipients))
    else:
        amount = len(recipients)
    verified = _verified(recipients, identities) if counter == "hard_bounces" else 0
    # partner_of and event_time, their caches looked up here first: once per record, a
    # call each is a good part of the cost of classifying it.
    tags: Any = mail.get("tags")
    value = tags.get(PARTNER_TAG) if type(tags) is dict else None
    found = (
        _PARTNERS.get(value[0]) if type(value) is list and value and type(value[0]) is str else None
    )
    partner_id, problem = found if found is not None else partner_of(mail)
    ts = detail.get("timestamp") if type(detail) is dict else None
    at = ts if ts is not None else mail.get("timestamp")
    when = _MINUTES.get(at[:17]) if type(at) is str and len(at) >= 20 and at[-1] == "Z" else None
    if when is None:
        try:  # the event's own time, else the message's (Send, Reject)
            when = event_time(at)
        except ValueError:
            when = _when(ts, mail)
    hour, minute = when
    message_id = mail.get("messageId")
    if type(message_id) is not str or not message_id:
        message_id = content_message_id(record)
    key = event_key(kind, message_id, detail, recipients)
    # A valid partner tag is in `tags`, so it is a dict: sent_job_id(mail) without mail.
    job = _tagged_job(tags) if counter == "sent" and problem is None else None
    return (partner_id, hour, counter, amount, problem, simulator, verified, minute, key, job)


# Delta(...) by tuple.__new__: the same tuple without a Python-level __new__ call.
_new_tuple = tuple.__new__


def sent_job_id(mail: dict[str, Any]) -> str | None:
    """The job id the job tag names, if sesguard could have written it. SES publishes
    each tag as a list of values; the first one is the tag's value."""
    tags = mail.get("tags")
    return _tagged_job(tags) if type(tags) is dict else None


def _tagged_job(tags: dict[str, Any]) -> str | None:
    value = tags.get(JOB_TAG)
    if type(value) is list:
        value = value[0] if value else None
    return job_id_from_tag(value)
