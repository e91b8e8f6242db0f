"""The events already counted, per partner and minute: the worker's record of what it
counted, and SES's word that it accepted a job.

Items (docs/table.md): `D#<partner>#<minute>` / `V` holds `parts`, the number of part
items, and `D#<partner>#<minute>` / `K#<n>` (n = 1, 2, ...) holds `keys` (12-byte event
keys, concatenated) and `jobs` (12-byte keys of the jobs the part's Send events name). A
part is written once, in the transaction that adds its events to the counters and moves
`parts` from n-1 to n (conditionally), so reading the partition tells exactly which events
are counted. Why this shape: docs/design.md, "Every event is counted exactly once".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from typing import TYPE_CHECKING, Any

from sesguard.aws import table as t

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

KEY_BYTES = 12  # 96 bits: a collision among one partner-minute's keys is out of reach
VERSION_SK = "V"
PART_PREFIX = "K#"
MINUTE_FORMAT = "%Y-%m-%dT%H:%M"
_SEP = b"\x1f"


def seen_pk(partner_id: str, minute: str) -> str:
    """`minute` is "YYYY-MM-DDTHH:MM" (UTC) of the event's own timestamp."""
    return f"{t.SEEN_PREFIX}{partner_id}#{minute}"


def part_sk(n: int) -> str:
    return f"{PART_PREFIX}{n:06d}"


def job_key(job_id: str) -> bytes:
    """The key under which a Send event records the job it was sent for."""
    return blake2b(b"job" + _SEP + job_id.encode(), digest_size=KEY_BYTES).digest()


def split_keys(blob: bytes) -> set[bytes]:
    return {blob[i : i + KEY_BYTES] for i in range(0, len(blob), KEY_BYTES)}


@dataclass
class Seen:
    """What one partner-minute's partition says: `parts` written, the event keys counted
    and the jobs SES's Send events named."""

    parts: int = 0
    keys: set[bytes] = field(default_factory=set)
    jobs: set[bytes] = field(default_factory=set)


def _blob(item: dict[str, Any], name: str) -> bytes:
    value = item.get(name, {}).get("B")
    return bytes(value) if value else b""


async def read_seen(dynamodb: DynamoDBClient, table: str, pk: str) -> tuple[Seen, int]:
    """The partition `pk`, strongly consistent (a part written a moment ago must be seen),
    and the number of items read. Parts beyond `parts` (none can exist: the part and the
    version move together) are ignored."""
    seen = Seen()
    read = 0
    parts: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": pk}},
        "ConsistentRead": True,
    }
    while True:
        resp = await dynamodb.query(**kwargs)
        for item in resp.get("Items", []):
            read += 1
            sk = item["sk"]["S"]
            if sk == VERSION_SK:
                seen.parts = int(item.get("parts", {}).get("N", "0"))
            elif sk.startswith(PART_PREFIX):
                parts.append(item)
        last = resp.get("LastEvaluatedKey")
        if not last:
            break
        kwargs["ExclusiveStartKey"] = last
    for item in parts:
        if int(item["sk"]["S"][len(PART_PREFIX) :]) <= seen.parts:
            seen.keys |= split_keys(_blob(item, "keys"))
            seen.jobs |= split_keys(_blob(item, "jobs"))
    return seen, read


def claim_minutes(claimed_at: datetime, claim_seconds: float) -> list[str]:
    """The minutes in which SES can have accepted a job claimed at `claimed_at`: from a
    minute before the claim (clocks differ) to a minute after the claim's time ran out
    (a send never outlives its claim: docs/design.md, "A job id is sent at most once")."""
    start = claimed_at.astimezone(UTC) - timedelta(minutes=1)
    end = claimed_at.astimezone(UTC) + timedelta(seconds=claim_seconds, minutes=1)
    minute = start.replace(second=0, microsecond=0)
    out: list[str] = []
    while minute <= end:
        out.append(minute.strftime(MINUTE_FORMAT))
        minute += timedelta(minutes=1)
    return out


async def ses_accepted(
    dynamodb: DynamoDBClient,
    table: str,
    partner_id: str,
    job_id: str,
    claimed_at: datetime,
    claim_seconds: float,
) -> str | None:
    """The minute in which a counted Send event of this partner names the job (SES
    accepted its message then), or None. Reads the partner's partitions of the minutes the
    send can have happened in: a few Queries, asked only for a stale claim, never per
    event."""
    wanted = job_key(job_id)
    for minute in claim_minutes(claimed_at, claim_seconds):
        seen, _ = await read_seen(dynamodb, table, seen_pk(partner_id, minute))
        if wanted in seen.jobs:
            return minute
    return None


async def ses_word(
    dynamodb: DynamoDBClient,
    table: str,
    record: dict[str, Any],
    partner_id: str,
    claim_seconds: float,
) -> dict[str, str] | None:
    """SES's word on the job whose claim is `record` (a plain "sending" job record), for
    `partner_id`: {"job_id", "minute"} (when SES's Send event says it accepted the
    job's message), or None: SES has said nothing (yet), or the claim's time is unreadable
    (nothing to look around)."""
    job_id = str(record.get("pk", "")).removeprefix(t.JOB_PREFIX)
    claimed = t.claimed_at(record)
    if claimed is None:
        return None
    minute = await ses_accepted(dynamodb, table, partner_id, job_id, claimed, claim_seconds)
    return None if minute is None else {"job_id": job_id, "minute": minute}
