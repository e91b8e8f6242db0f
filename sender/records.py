"""Once per job_id: a conditional claim written before sending, marked sent after.

Item `J#<job_id>` / `JOB` (docs/table.md). A delivery whose claim wins sends; one that finds
"sent" is a duplicate; one that finds a claim younger than `claim_seconds` waits for it; an
older claim is possibly sent, never sent blindly: sender/settle.py reads the record and SES's
word on it (`ses_word`) and turns the claim "sent" on that word (`confirm`), or takes it
over once the settle time has passed without it (`take_over`). Why: docs/design.md, "A job
id is sent at most once" and "Possibly sent".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError

from sesguard.aws import table as t
from sesguard.aws.batching import BatchWrite
from sesguard.aws.errors import describe, error_code
from sesguard.aws.seen import ses_word
from sesguard.core.jobs import SendJob
from sesguard.core.partners import utcnow
from sesguard.logging import get_logger

log = get_logger(__name__)

JOB_SK = t.JOB_SK
WRITE_ATTEMPTS = 5  # per flush; the runtime retries the flush itself after that
SENDING, SENT = t.JOB_SENDING, t.JOB_SENT


class ClaimState(StrEnum):
    CLAIMED = "claimed"  # this delivery owns the job: send it
    SENT = "sent"  # already sent: a duplicate
    IN_PROGRESS = "in_progress"  # another delivery holds a live claim: look again later
    POSSIBLY_SENT = "possibly_sent"  # a "sending" claim outlived claim_seconds


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    retry_after: float = 0.0  # seconds, for IN_PROGRESS
    message_id: str | None = None  # SES MessageId of the earlier send, for SENT
    confirmed_by_ses: bool = False  # SENT on SES's word (a stale claim turned "sent": `confirm`)
    claimed_at: str | None = None  # of the stale claim, for POSSIBLY_SENT


def judge_existing(record: dict[str, Any], now: datetime, claim_seconds: float) -> Claim:
    """What an existing record means for a new delivery of the same job_id (pure).

    "sent" (the sender's own record, or a stale claim turned "sent" on SES's word) is a
    duplicate; a stale "sending" claim is possibly sent."""
    if record.get("state") == SENT:
        return Claim(
            ClaimState.SENT,
            message_id=record.get("message_id"),
            confirmed_by_ses=record.get("confirmed_by") == t.CONFIRMED_BY_SES,
        )
    claimed_at = record.get("claimed_at")
    try:
        age = (now - datetime.fromisoformat(str(claimed_at))).total_seconds()
    except ValueError:
        age = math.inf  # unreadable claim: treat as stale
    if age < claim_seconds:
        return Claim(ClaimState.IN_PROGRESS, retry_after=max(1.0, claim_seconds - age))
    return Claim(ClaimState.POSSIBLY_SENT, claimed_at=str(claimed_at))


def is_our_claim(record: dict[str, Any], token: str) -> bool:
    """True when the record is the "sending" claim written with `token` (pure).

    Why: the claim's PutItem may be written while its answer is lost (the connection
    breaks after DynamoDB committed it); the SDK then retries the same request, whose
    condition fails against the claim it wrote itself. The token is fresh for every
    delivery's attempt, so a "sending" record carrying it can only be ours: the claim
    is won, not "in progress" (which would defer the job and dead-letter it later as
    "possibly sent" though it was never sent). The pattern is Powertools' idempotency
    utility's: a conditional put whose failure returns the existing item
    (ReturnValuesOnConditionCheckFailure=ALL_OLD), judged as it stands instead of read
    again; here the judgement first asks whether that item is our own write."""
    return record.get("state") == SENDING and record.get("token") == token


@dataclass
class JobRecords:
    dynamodb: Any
    table: str
    record_days: int = 14
    claim_seconds: float = 60.0

    def _expires(self, now: datetime) -> int:
        return int((now + timedelta(days=self.record_days)).timestamp())

    async def claim(self, job: SendJob, token: str, now: datetime | None = None) -> Claim:
        """Write the "sending" record if none exists; otherwise judge the existing one."""
        now = now or utcnow()
        item = t.to_item(
            {
                "pk": t.job_pk(job.job_id),
                "sk": JOB_SK,
                "state": SENDING,
                "token": token,
                "partner_id": job.partner_id,
                "claimed_at": now.astimezone(UTC).isoformat(),
                t.TTL_ATTRIBUTE: self._expires(now),
            }
        )
        try:
            await self.dynamodb.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            old: dict[str, Any] | None = exc.response.get("Item")  # type: ignore[assignment]
            existing = None if old is None else t.from_item(old)
            if existing is None:  # an endpoint that does not return the old item
                existing = await self.read(job.job_id)
                if existing is None:  # released in between: let the next delivery claim it
                    return Claim(ClaimState.IN_PROGRESS, retry_after=1.0)
            if is_our_claim(existing, token):
                return Claim(ClaimState.CLAIMED)
            return judge_existing(existing, now, self.claim_seconds)
        return Claim(ClaimState.CLAIMED)

    async def release(self, job_id: str, token: str) -> None:
        """Delete our own "sending" claim (SES certainly does not have the message)."""
        try:
            await self.dynamodb.delete_item(
                TableName=self.table,
                Key=t.key(t.job_pk(job_id), JOB_SK),
                ConditionExpression="#s = :sending AND #tok = :token",
                ExpressionAttributeNames={"#s": "state", "#tok": "token"},
                ExpressionAttributeValues={":sending": {"S": SENDING}, ":token": {"S": token}},
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise

    async def read(self, job_id: str) -> dict[str, Any] | None:
        """The job's record, consistently (a claim written a moment ago must be seen)."""
        resp = await self.dynamodb.get_item(
            TableName=self.table, Key=t.key(t.job_pk(job_id), JOB_SK), ConsistentRead=True
        )
        item = resp.get("Item")
        return None if item is None else t.from_item(item)

    async def ses_word(self, record: dict[str, Any], partner_id: str) -> dict[str, str] | None:
        """SES's word on the job of the stale claim `record` (sesguard.aws.seen)."""
        return await ses_word(self.dynamodb, self.table, record, partner_id, self.claim_seconds)

    async def confirm(self, job_id: str, token: str, evidence: dict[str, str]) -> bool:
        """Turn a stale claim "sent" on SES's word (`evidence`: `ses_word`'s answer), only
        if it is still "sending" with `token`: later deliveries then find a duplicate
        without asking again. False: the record changed meanwhile (nothing written)."""
        values = {
            ":sending": SENDING,
            ":token": token,
            ":sent": SENT,
            ":ses": t.CONFIRMED_BY_SES,
            ":at": evidence["minute"],
            ":now": utcnow().isoformat(),
        }
        update = "SET #s = :sent, confirmed_by = :ses, sent_minute = :at, confirmed_at = :now"
        return await self._update(job_id, update, values) is None

    async def take_over(
        self, job: SendJob, old_token: str, token: str, now: datetime | None = None
    ) -> Claim:
        """Make a stale claim ours (a fresh token, claimed now) if it still has `old_token`:
        of all deliveries that decided to re-send it, only one's write succeeds. The others
        judge the record they find (a live claim: in progress; then "sent")."""
        now = now or utcnow()
        values = {
            ":sending": SENDING,
            ":token": old_token,
            ":new": token,
            ":at": now.astimezone(UTC).isoformat(),
            ":exp": self._expires(now),
        }
        old = await self._update(
            job.job_id, f"SET #tok = :new, claimed_at = :at, {t.TTL_ATTRIBUTE} = :exp", values
        )
        if old is None:
            return Claim(ClaimState.CLAIMED)
        if not old:  # removed meanwhile (a redrive): the next delivery claims it afresh
            return Claim(ClaimState.IN_PROGRESS, retry_after=1.0)
        existing = t.from_item(old)
        if is_our_claim(existing, token):  # our write landed, its answer was lost
            return Claim(ClaimState.CLAIMED)
        return judge_existing(existing, now, self.claim_seconds)

    async def _update(
        self, job_id: str, update: str, values: dict[str, Any]
    ) -> dict[str, Any] | None:
        """A conditional UpdateItem of a "sending" record with token `:token`; None when
        written, else the record found (ALL_OLD; {} when there is none)."""
        try:
            await self.dynamodb.update_item(
                TableName=self.table,
                Key=t.key(t.job_pk(job_id), JOB_SK),
                UpdateExpression=update,
                ConditionExpression="#s = :sending AND #tok = :token",
                ExpressionAttributeNames={"#s": "state", "#tok": "token"},
                ExpressionAttributeValues={k: t.to_attr(v) for k, v in values.items()},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            item: dict[str, Any] = exc.response.get("Item") or {}  # type: ignore[assignment]
            return item
        return None

    def sent_item(
        self, job: SendJob, token: str, message_id: str, now: datetime | None = None
    ) -> dict[str, Any]:
        """The "sent" record, written unconditionally in a batch after SES accepted."""
        now = now or utcnow()
        return t.to_item(
            {
                "pk": t.job_pk(job.job_id),
                "sk": JOB_SK,
                "state": SENT,
                "token": token,
                "partner_id": job.partner_id,
                "message_id": message_id,
                "sent_at": now.astimezone(UTC).isoformat(),
                t.TTL_ATTRIBUTE: self._expires(now),
            }
        )

    async def write_sent(self, items: Sequence[dict[str, Any]]) -> list[bool]:
        """Write "sent" records (`sent_item`s, at most 25) in one BatchWriteItem; for each,
        whether it is now durable. Unprocessed items are retried a few times; what is
        still unwritten is reported, never raised: the runtime keeps those messages and
        tries again (sesguard.runtime.finisher), because a job deleted while its record
        still says "sending" would later be judged "possibly sent"."""
        write = BatchWrite(self.table, [{"PutRequest": {"Item": i}} for i in items])
        try:
            await write.run(self.dynamodb, attempts=WRITE_ATTEMPTS, cap=1.0)
        except Exception as exc:
            log.error(
                "job_record_write_failed",
                job_ids=sorted(self._key_of(r["PutRequest"]["Item"]) for r in write.left)[:25],
                error=describe(exc),
            )
        unwritten = {self._key_of(r["PutRequest"]["Item"]) for r in write.left}
        return [self._key_of(i) not in unwritten for i in items]

    @staticmethod
    def _key_of(item: dict[str, Any]) -> str:
        return str(item["pk"]["S"]).removeprefix(t.job_pk(""))
