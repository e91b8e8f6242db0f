"""Item layout of the single DynamoDB table (see docs/table.md).

One partition per partner keeps the gate's read to a single Query:

  pk = P#<partner>  sk = B#<YYYY-MM-DDTHH>   hourly counters (ADD), expire after retention
  pk = P#<partner>  sk = PROFILE             contact, limits, status, pause/resume facts
  pk = P#<partner>  sk = TOTALS              all-time counters (ADD)

"PROFILE" and "TOTALS" sort after every "B#..." key, so `sk >= B#<oldest hour>` returns
the window's buckets plus the profile plus the totals in one request.

PROFILE and TOTALS items also carry `kind = partner`, the hash key of the sparse index
"partners" (range key pk, keys only): `partners list` queries it instead of scanning the
table, whose job records and object markers can number millions.

Other partitions:
  pk = H#<partner>  sk = <held-at ISO>#<job_id>   a held send job (full payload)
  pk = J#<job_id>   sk = JOB                      once-per-job record of the sender (TTL)
  pk = O#<object>   sk = <chunk>                  "processed" marker of an S3 object chunk (TTL)
  pk = L#sender     sk = <task id>/<run>          a sender task's lease (TTL): alive_until,
                                                  sees (the lease ids it counts), fallback,
                                                  rate (sesguard.runtime.leases)

All sender leases share one partition, so a task reads every lease with one Query.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from sesguard.partners import hour_floor

PROFILE = "PROFILE"
TOTALS = "TOTALS"
TTL_ATTRIBUTE = "expires_at"
PARTNERS_INDEX = "partners"
KIND_ATTRIBUTE = "kind"
PARTNER_KIND = "partner"

_ser = TypeSerializer()
_de = TypeDeserializer()


def partner_pk(partner_id: str) -> str:
    return f"P#{partner_id}"


def bucket_sk(hour: datetime) -> str:
    return "B#" + hour_floor(hour).strftime("%Y-%m-%dT%H")


def parse_bucket_sk(sk: str) -> datetime:
    return hour_floor(datetime.strptime(sk[2:], "%Y-%m-%dT%H"))


def held_pk(partner_id: str) -> str:
    return f"H#{partner_id}"


def job_pk(job_id: str) -> str:
    return f"J#{job_id}"


def object_pk(bucket: str, key: str) -> str:
    return f"O#{bucket}/{key}"


SENDER_LEASES_PK = "L#sender"


def key(pk: str, sk: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def to_attr(value: Any) -> dict[str, Any]:
    """Serialize one Python value (floats become exact decimals, as DynamoDB requires)."""
    if isinstance(value, float):
        value = Decimal(repr(value))
    return _ser.serialize(value)  # type: ignore[no-any-return]


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
