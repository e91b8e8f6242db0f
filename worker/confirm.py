"""SES's Send events confirm the jobs they name: a stale "sending" claim becomes "sent".

Read first (100 keys per BatchGetItem), written only for a record still "sending",
conditionally. Why, and why it costs reads rather than writes: docs/design.md,
"A job id is sent at most once" (step 7, and the paragraph after the steps).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from sesguard.aws import table as t
from sesguard.aws.batching import read_job_records
from sesguard.aws.errors import error_code
from sesguard.core.partners import utcnow
from sesguard.logging import get_logger
from worker.classify import SentJob

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

log = get_logger(__name__)

PARALLEL_READS = 4  # BatchGetItem calls in flight per object
LOG_IDS = 25  # job ids named in one log line


class RecordCheck(StrEnum):
    """What a Send event means for the job's record."""

    ALREADY_SENT = "already_sent"  # the record says "sent": nothing to write (the common case)
    CONFIRM = "confirm"  # the record is a stale or live claim: turn it "sent"
    UNKNOWN = "unknown"  # no record: expired, or not a job of ours
    OTHER_PARTNER = "other_partner"  # the record is another partner's: never touched


def check_record(record: dict[str, Any] | None, send: SentJob) -> RecordCheck:
    """What to do with the record of the job a Send event names (pure)."""
    if record is None:
        return RecordCheck.UNKNOWN
    if record.get("partner_id") != send.partner_id:
        return RecordCheck.OTHER_PARTNER
    if record.get("state") == t.JOB_SENDING:
        return RecordCheck.CONFIRM
    return RecordCheck.ALREADY_SENT


@dataclass
class Confirmations:
    """What the Send events of one object did (logged with the object)."""

    jobs: int = 0  # distinct jobs named
    already_sent: int = 0
    confirmed: int = 0  # records turned "sent" by this object
    raced: int = 0  # claims that changed between read and write (the sender or a redrive won)
    unknown: int = 0
    other_partner: int = 0
    read_requests: int = 0
    write_requests: int = 0

    def count_read(self) -> None:
        self.read_requests += 1

    def as_log(self) -> dict[str, int]:
        return dict(self.__dict__)


def distinct_jobs(sends: Iterable[SentJob]) -> dict[str, SentJob]:
    """One Send event per job (the first); a job named with two different SES message
    ids was sent twice, which must never happen: logged as an error."""
    out: dict[str, SentJob] = {}
    for send in sends:
        first = out.setdefault(send.job_id, send)
        if first.message_id != send.message_id:
            log.error(
                "job_sent_twice",
                alert=True,
                job_id=send.job_id,
                partner_id=send.partner_id,
                ses_message_ids=[first.message_id, send.message_id],
            )
    return out


async def confirm_sends(
    dynamodb: DynamoDBClient, table: str, sends: Sequence[SentJob]
) -> Confirmations:
    """Confirm the jobs an object's Send events name (see the module docstring)."""
    result = Confirmations()
    by_job = distinct_jobs(sends)
    result.jobs = len(by_job)
    if not by_job:
        return result
    records = await read_job_records(
        dynamodb,
        table,
        list(by_job),
        attributes=("state", "partner_id"),
        parallel=PARALLEL_READS,
        on_call=result.count_read,
    )
    confirmed: list[str] = []
    for job_id, send in by_job.items():
        check = check_record(records.get(job_id), send)
        if check is RecordCheck.CONFIRM:
            result.write_requests += 1
            if await _confirm(dynamodb, table, send):
                result.confirmed += 1
                confirmed.append(job_id)
            else:
                result.raced += 1
        elif check is RecordCheck.ALREADY_SENT:
            result.already_sent += 1
        elif check is RecordCheck.UNKNOWN:
            result.unknown += 1
        else:
            result.other_partner += 1
    if confirmed:
        log.info("jobs_confirmed_by_ses", count=len(confirmed), job_ids=confirmed[:LOG_IDS])
    if result.other_partner:
        log.warning("send_event_partner_mismatch", count=result.other_partner)
    return result


async def _confirm(dynamodb: DynamoDBClient, table: str, send: SentJob) -> bool:
    """Turn the job's "sending" record "sent"; False if it is no longer "sending" for
    this partner (the sender's own record, or a redrive, came first)."""
    try:
        await dynamodb.update_item(
            TableName=table,
            Key=t.key(t.job_pk(send.job_id), t.JOB_SK),
            UpdateExpression=(
                "SET #s = :sent, message_id = :mid, sent_at = :at, confirmed_by = :by,"
                " confirmed_at = :now"
            ),
            ConditionExpression="#s = :sending AND partner_id = :pid",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={
                ":sent": {"S": t.JOB_SENT},
                ":sending": {"S": t.JOB_SENDING},
                ":mid": {"S": send.message_id},
                ":at": {"S": send.timestamp},
                ":by": {"S": t.CONFIRMED_BY_SES},
                ":now": {"S": utcnow().astimezone(UTC).isoformat()},
                ":pid": {"S": send.partner_id},
            },
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise
    return True
