"""Item layout of the single DynamoDB table (keys, prefixes) and the number rules for writing it.

The layout, and why it has this shape, is docs/table.md; a new kind of item needs its
prefix here and in sesguard.ops.permissions. Number limits: docs/design.md, "6. The table".
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, DecimalException
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from sesguard.core.partners import hour_floor

PROFILE = "PROFILE"
TOTALS = "TOTALS"
TTL_ATTRIBUTE = "expires_at"
PARTNERS_INDEX = "partners"
KIND_ATTRIBUTE = "kind"
PARTNER_KIND = "partner"

_ser = TypeSerializer()
_de = TypeDeserializer()


# Partition-key prefixes, one per kind of item.
PARTNER_PREFIX = "P#"
HELD_PREFIX = "H#"
JOB_PREFIX = "J#"
OBJECT_PREFIX = "O#"
LEASE_PREFIX = "L#"
EVENT_PREFIX = "E#"
SEEN_PREFIX = "D#"  # the events counted per partner and minute (sesguard/aws/seen.py)
PREFIXES = (
    PARTNER_PREFIX,
    HELD_PREFIX,
    JOB_PREFIX,
    OBJECT_PREFIX,
    LEASE_PREFIX,
    EVENT_PREFIX,
    SEEN_PREFIX,
)

# Profile attributes `warned:<metric>:<window hours>` = when that warn level was crossed
# (sesguard.domain.transitions.Transitions.note_warnings): one per crossing, removed when it clears.
WARNED_PREFIX = "warned:"
# Profile attribute `quota_reached` = "<UTC day>/<daily quota>" while a reached daily quota
# was not released yet (sender/throttle.py): set and removed with their lifecycle events.
QUOTA_REACHED = "quota_reached"


def pk_prefix(pk: str) -> str:
    """The kind of item a partition key belongs to ("P#", ...); "" if none."""
    kind, sep, _ = pk.partition("#")
    return kind + sep if sep else ""


def partner_pk(partner_id: str) -> str:
    return f"{PARTNER_PREFIX}{partner_id}"


def quota_sk(day: str) -> str:
    """The partner's count of sends against its daily quota on one UTC day (`utc_day`).
    Under the partner's own key, after PROFILE: the gate's one Query reads it too."""
    return f"Q#{day}"


def bucket_sk(hour: datetime) -> str:
    return "B#" + hour_floor(hour).strftime("%Y-%m-%dT%H")


def parse_bucket_sk(sk: str) -> datetime:
    return hour_floor(datetime.strptime(sk[2:], "%Y-%m-%dT%H"))


def held_pk(partner_id: str) -> str:
    return f"{HELD_PREFIX}{partner_id}"


def job_pk(job_id: str) -> str:
    return f"{JOB_PREFIX}{job_id}"


def object_pk(bucket: str, key: str) -> str:
    return f"{OBJECT_PREFIX}{bucket}/{key}"


SENDER_LEASES_PK = f"{LEASE_PREFIX}sender"

# The status epoch: bumped after every pause, resume and limits change, polled by every
# sender task (a reserved partner id, so it is never a partner; it has no `kind`).
STATUS_PK, STATUS_SK = f"{PARTNER_PREFIX}_status", "EPOCH"

# The once-per-job record (sender/records.py writes it, and turns a stale claim "sent" on
# SES's word; sesguard/ops/dlq.py reads it to decide what a redrive may send).
JOB_SK = "JOB"
JOB_SENDING, JOB_SENT = "sending", "sent"
CONFIRMED_BY_SES = "ses"  # `confirmed_by` of a record SES's Send event marked sent


def claimed_at(record: dict[str, Any]) -> datetime | None:
    """When a job record's claim was written (`claimed_at`, UTC if it names no zone);
    None if unreadable."""
    try:
        at = datetime.fromisoformat(str(record.get("claimed_at")))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def event_pk(partner_id: str) -> str:
    return f"{EVENT_PREFIX}{partner_id}"


OUTBOX_PK = f"{EVENT_PREFIX}_outbox"  # lifecycle events not yet taken by EventBridge


def key(pk: str, sk: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


# What a DynamoDB number can be: 38 significant digits, magnitude 1e-130 .. < 1e126.
DYNAMODB_DIGITS = 38
_SMALLEST = Decimal("1e-130")
_TOO_BIG = Decimal("1e126")


def significant_digits(number: Decimal) -> int:
    """Digits DynamoDB has to keep: leading and trailing zeros do not count."""
    return len("".join(map(str, number.as_tuple().digits)).strip("0"))


def _number(value: int | float | Decimal) -> Decimal:
    """One number as DynamoDB will hold it, or ValueError. Floats become the shortest
    decimal that reads back as the same float (repr's digits): exact, never rounded."""
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not exact.is_finite():
        raise ValueError(f"{value!r} cannot be stored in DynamoDB: not a finite number")
    if exact and (
        significant_digits(exact) > DYNAMODB_DIGITS or not _SMALLEST <= abs(exact) < _TOO_BIG
    ):
        raise ValueError(
            f"{value!r} cannot be stored in DynamoDB exactly: numbers have at most"
            f" {DYNAMODB_DIGITS} significant digits and a magnitude from 1e-130 to below 1e126"
        )
    return exact


def _numbers(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        return _number(value)
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_numbers(v) for v in value]
    return value


def to_attr(value: Any) -> dict[str, Any]:
    """Serialize one Python value (numbers also inside maps and lists) for DynamoDB.

    A number DynamoDB cannot hold exactly (more than 38 significant digits, a magnitude
    outside 1e-130 .. 1e126, NaN, infinity) raises ValueError naming it: never a bare
    decimal signal (Inexact, Underflow, ...) from boto3's strict context, and never a
    silently rounded value. Callers validate input first (sesguard.ops.operations.check_rate);
    this is the backstop."""
    try:
        return _ser.serialize(_numbers(value))  # type: ignore[no-any-return]
    except DecimalException:  # boto3's context refused what the checks above let by
        raise ValueError(f"{value!r} cannot be stored in DynamoDB exactly") from None


def to_item(data: dict[str, Any]) -> dict[str, Any]:
    return {k: to_attr(v) for k, v in data.items() if v is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in item.items():
        value = _de.deserialize(v)
        if isinstance(value, Decimal):
            value = int(value) if value == value.to_integral_value() else float(value)
        out[k] = value
    return out
