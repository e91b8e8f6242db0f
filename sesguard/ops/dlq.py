"""`sesguard dlq`: read the dead-letter queues, and redrive the send DLQ without ever
sending a job twice; and the one rule that settles a "possibly sent" job (`settle`,
`events_pending`), which the sender applies by itself (sender/settle.py) and the redrive
applies to what is left in the DLQ.

**Reading is non-destructive.** Messages are received with a short visibility timeout
(LIST_VISIBILITY), read, and made visible again at once (ChangeMessageVisibility 0): nothing
is deleted, and if the command dies midway they come back by themselves when the timeout
ends. Nobody consumes a DLQ, so a message out of sight for that long harms nothing. A
message seen twice in one run (its timeout ended while the run went on) is shown once.

**A stale claim is settled from SES's word** (`settle`, pure). The job's record is read
consistently, and for a stale claim SES's word on it: whether a counted Send event of the
claim's partner names the job, in the minutes around the claim (sesguard.aws.seen
`ses_word`):
- SES's word for the claim's partner: SES accepted the job's message. It is sent.
- none yet, less than SESGUARD_DLQ_SETTLE_SECONDS after the claim: SES's word may come.
- none after that, and no S3 notification still waiting to be counted (the events queue
  has no backlog and its DLQ holds nothing countable: `events_pending`): SES never took
  it. The claim is taken over or removed, conditionally (still "sending", same token, so
  only one reader acts on it), and the job sent again.

**Redrive decides each job from its record and SES's word, not from the reason text**
(`decide`, pure):
- "sent" (the sender's record, or a claim turned "sent" on SES's word): the job was sent.
  Its DLQ message is deleted and it is never re-sent ("already sent", counted). So is a
  "sending" claim with SES's word.
- "sending" without it: `settle` says wait (it stays), or re-send: the claim is removed
  and the job re-enqueued.
- no record: never claimed, or the claim was released because SES certainly did not
  take it (an outage past the tolerance, throttling): re-enqueued. Unless it was
  rejected by SES, is for a partner that still does not exist, or was dead-lettered so
  long ago that its record may have expired (then whether it was sent cannot be told):
  those stay, counted with why.
- a body that is not a valid job stays (malformed), with its reason.

**Order of operations, so a crash loses nothing and sends nothing twice**: remove the
stale claim -> put the job back on the send queue -> delete it from the DLQ. A crash after
the first step leaves a job with no record in the DLQ (the next redrive re-enqueues it);
after the second, the job is both queued and in the DLQ (the sender's claim lets only one
copy be sent, and the next redrive finds it "sent" and drops the DLQ copy). A job
re-enqueued keeps its job id: one that had none gets the id it was known by
(`sesguard_message_id`, sesguard.aws.deadletter) written into the body.

The one assumption: SES's events for a job reach the worker within the settle time
(Firehose buffers for 60 s as deployed; the worker's lag is `event_lag_seconds`). SES's
word counted after its job was re-sent comes too late, and the job goes out twice; keep
the settle time well above both.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import orjson
from botocore.exceptions import ClientError

from sesguard.aws import table as t
from sesguard.aws.batching import SQS_BATCH, batches, read_job_records, send_batch
from sesguard.aws.deadletter import (
    REASON_ATTRIBUTE,
    REJECTED,
    SOURCE_ATTRIBUTE,
    TRUNCATED_ATTRIBUTE,
    UNKNOWN_PARTNER,
)
from sesguard.aws.errors import error_code
from sesguard.aws.seen import ses_word
from sesguard.core.jobs import JOB_ID_RE, MAX_SQS_MESSAGE_BYTES, JobError, ids_for_log, parse_job
from sesguard.core.partners import utcnow
from sesguard.logging import get_logger
from sesguard.runtime.sqs import change_visibility, queue_depth
from sesguard.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

log = get_logger(__name__)

LIST_VISIBILITY = 60  # seconds a listed message is out of sight at most (released at once)
REDRIVE_VISIBILITY = 600  # seconds a message a redrive looks at is out of sight at most
RECEIVE_WAIT = 1  # long poll: SQS looks at all its servers, so "nothing" means nothing
RECORD_MARGIN = timedelta(days=1)  # a record may be gone this long before its TTL says
# Reasons of events-DLQ messages that name no object to count (they hold no Send event).
_UNCOUNTABLE = ("bad notification", "not the events bucket")


# ---- DLQ messages -----------------------------------------------------------------------


@dataclass(frozen=True)
class DlqMessage:
    """One DLQ message as read: its body and what sesguard attached to it."""

    message_id: str
    receipt: str
    body: str
    reason: str | None
    source_id: str | None  # the id of the message it copies (sesguard_message_id)
    truncated_from: int | None
    dead_lettered_at: datetime

    @classmethod
    def from_sqs(cls, msg: MessageTypeDef) -> DlqMessage:
        attrs = msg.get("MessageAttributes") or {}

        def attr(name: str) -> str | None:
            value = attrs[name].get("StringValue") if name in attrs else None
            return str(value) if value is not None else None

        truncated = attr(TRUNCATED_ATTRIBUTE)
        sent_ms = int((msg.get("Attributes") or {}).get("SentTimestamp", 0))
        return cls(
            message_id=str(msg["MessageId"]),
            receipt=str(msg["ReceiptHandle"]),
            body=str(msg.get("Body", "")),
            reason=attr(REASON_ATTRIBUTE),
            source_id=attr(SOURCE_ATTRIBUTE),
            truncated_from=int(truncated) if truncated and truncated.isdigit() else None,
            dead_lettered_at=datetime.fromtimestamp(sent_ms / 1000, UTC),
        )

    def age(self, now: datetime) -> float:
        return max(0.0, (now - self.dead_lettered_at).total_seconds())


async def read_pages(
    sqs: SQSClient, url: str, *, visibility: int, limit: int | None = None
) -> AsyncIterator[list[DlqMessage]]:
    """Receive a queue's messages page by page (up to 10), each message once per run:
    until a receive finds nothing new, or `limit` messages were seen. The caller settles
    or releases what it gets; nothing here deletes anything."""
    seen: set[str] = set()
    while limit is None or len(seen) < limit:
        want = SQS_BATCH if limit is None else min(SQS_BATCH, limit - len(seen))
        resp = await sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=want,
            WaitTimeSeconds=RECEIVE_WAIT,
            VisibilityTimeout=visibility,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["SentTimestamp"],
        )
        page = [DlqMessage.from_sqs(m) for m in resp.get("Messages", [])]
        new = [m for m in page if m.message_id not in seen]
        again = [m for m in page if m.message_id in seen]
        if again:  # seen earlier in this run: out of sight again until the caller is done
            await change_visibility(sqs, url, [(m.receipt, visibility) for m in again])
        if not new:
            return
        seen.update(m.message_id for m in new)
        yield new


async def release(sqs: SQSClient, url: str, messages: Sequence[DlqMessage]) -> None:
    """Make messages visible again at once (those that fail come back by themselves)."""
    await change_visibility(sqs, url, [(m.receipt, 0) for m in messages])


# ---- listing ------------------------------------------------------------------------------


def job_entry(m: DlqMessage, now: datetime) -> dict[str, Any]:
    """What `sesguard dlq` shows of a send-DLQ message."""
    ids = ids_for_log(m.body)
    entry: dict[str, Any] = {
        "message_id": m.message_id,
        "dead_lettered_at": m.dead_lettered_at.isoformat(),
        "age_seconds": round(m.age(now)),
        "job_id": ids.get("job_id") or m.source_id,
        "partner_id": ids.get("partner_id"),
        "reason": m.reason,
    }
    if m.truncated_from is not None:
        entry["truncated_from"] = m.truncated_from
    return entry


def event_entry(m: DlqMessage, now: datetime) -> dict[str, Any]:
    """What `sesguard dlq --events` shows of an events-DLQ message."""
    from sesguard.core.notifications import BadNotification, parse_notification  # pure; lazily

    try:
        objects = [ref.url for ref in parse_notification(m.body).objects]
    except BadNotification:
        objects = []
    return {
        "message_id": m.message_id,
        "dead_lettered_at": m.dead_lettered_at.isoformat(),
        "age_seconds": round(m.age(now)),
        "objects": objects,
        "reason": m.reason,
    }


async def list_dlq(
    sqs: SQSClient, url: str, *, events: bool, limit: int, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Up to `limit` messages of a DLQ, described, oldest first; all visible again after."""
    now = now or utcnow()
    entry = event_entry if events else job_entry
    out: list[dict[str, Any]] = []
    taken: list[DlqMessage] = []
    try:
        async for page in read_pages(sqs, url, visibility=LIST_VISIBILITY, limit=limit):
            taken += page
            out += [entry(m, now) for m in page]
    finally:
        await release(sqs, url, taken)
    return sorted(out, key=lambda e: str(e["dead_lettered_at"]))


def format_age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def listing_text(entries: Sequence[dict[str, Any]], *, events: bool) -> str:
    """A count, then each distinct reason once with its messages under it: a reason is
    often hundreds of characters, and most messages share one. Reasons in the order of
    their oldest message; messages oldest first, as `entries` are."""
    if not entries:
        return "the dead-letter queue is empty"
    by_reason: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_reason.setdefault(e["reason"] or "(no reason)", []).append(e)
    queue = "events DLQ" if events else "send DLQ"
    lines = [
        f"{_count(len(entries), 'message')} in the {queue}, oldest first,"
        f" under {_count(len(by_reason), 'reason')}"
    ]
    for reason, group in by_reason.items():
        lines += ["", f"{reason}  [{_count(len(group), 'message')}]"]
        for e in group:
            age = format_age(float(e["age_seconds"]))
            if events:
                what = " ".join(e["objects"]) or "(no object)"
            else:
                what = f"{e['job_id'] or '?'}  {e['partner_id'] or '?'}"
            lines.append(f"  {age:>5}  {what}")
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


# ---- settling a stale claim (pure): the one rule -----------------------------------------


class Verdict(StrEnum):
    """What SES's word, the claim's age and the events queues say of a stale claim."""

    SENT = "sent"  # SES accepted the job's message: never send it again
    WAIT = "wait"  # younger than the settle time: SES's word may still come
    HOLD = "hold"  # SES's events are not all counted: its word may be among them
    RESEND = "resend"  # SES said nothing within the settle time, nothing uncounted: not sent
    MANUAL = "manual"  # a claim without a token cannot be taken over conditionally


@dataclass(frozen=True)
class Settlement:
    verdict: Verdict
    why: str
    token: str | None = None  # the stale claim's: any write is conditional on it
    ready_at: datetime | None = None  # WAIT: when the settle time has passed


def claim_age(record: dict[str, Any], now: datetime) -> float | None:
    """Seconds since the record's claim (None: unreadable)."""
    claimed = t.claimed_at(record)
    return None if claimed is None else (now - claimed).total_seconds()


def settle(
    record: dict[str, Any],
    evidence: dict[str, Any] | None,
    now: datetime,
    settle_seconds: float,
    events_pending: str | None,
) -> Settlement:
    """The fate of a stale "sending" claim (see the module docstring): the one rule the
    sender and the redrive apply. `evidence`: `sesguard.aws.seen.ses_word` for the
    claim's partner. A claim whose time cannot be read counts as past the settle time
    (as the sender judges it stale)."""
    token = str(record["token"]) if record.get("token") else None
    if evidence is not None:
        return Settlement(
            Verdict.SENT,
            f"SES accepted its message: its Send event is counted (minute {evidence['minute']})",
            token,
        )
    claimed = t.claimed_at(record)
    if claimed is not None:
        ready = claimed + timedelta(seconds=settle_seconds)
        if now < ready:
            return Settlement(
                Verdict.WAIT,
                f"waiting for SES's word on it until {ready.isoformat()}"
                " (SESGUARD_DLQ_SETTLE_SECONDS after the claim)",
                token,
                ready,
            )
    if events_pending:
        return Settlement(Verdict.HOLD, events_pending, token)
    if token is None:
        return Settlement(Verdict.MANUAL, "its claim has no token; decide by hand")
    return Settlement(
        Verdict.RESEND, f"not sent: SES said nothing within {settle_seconds:g}s of the claim", token
    )


# ---- redrive decisions (pure) -------------------------------------------------------------


class Remedy(StrEnum):
    """What a redrive does with one message; `--json` keeps the key "action" (sender.gate's
    Action is another thing: what the gate does with a job)."""

    REQUEUE = "requeued"  # never sent: back on the send queue
    UNCLAIM = "requeued_unclaimed"  # possibly sent, SES said nothing: claim removed, back
    DROP = "dropped_sent"  # already sent: deleted from the DLQ, never re-sent
    KEEP = "kept"  # stays in the DLQ


@dataclass(frozen=True)
class RedrivePlan:
    """`decide`'s answer for one message: the remedy, and why."""

    remedy: Remedy
    why: str
    token: str | None = None  # UNCLAIM: the claim removed only if it still has this token


@dataclass(frozen=True)
class Facts:
    """What is known of one send-DLQ message when its fate is decided."""

    reason: str | None  # sesguard_reason
    job_error: str | None  # why the body is not a job (None: it is one)
    record: dict[str, Any] | None  # the job's record (consistent read), None if none
    partner_known: bool  # the job's partner exists now
    age_seconds: float  # since it was dead-lettered
    evidence: dict[str, Any] | None = None  # SES's word for the record's partner, if any


@dataclass(frozen=True)
class Context:
    now: datetime
    settle_seconds: float
    record_days: int
    events_pending: str | None  # why SES's events may not all be counted yet


def decide(f: Facts, c: Context) -> RedrivePlan:
    """The fate of one send-DLQ message (see the module docstring for why each holds)."""
    if f.job_error is not None:
        return RedrivePlan(Remedy.KEEP, f"malformed: {f.job_error}")
    record = f.record
    if record is not None:
        state = record.get("state")
        if state == t.JOB_SENT:
            by = " (confirmed by SES)" if record.get("confirmed_by") == t.CONFIRMED_BY_SES else ""
            return RedrivePlan(
                Remedy.DROP, f"already sent{by}: SES message {record.get('message_id')}"
            )
        if state != t.JOB_SENDING:
            return RedrivePlan(Remedy.KEEP, f"job record in an unknown state {state!r}")
        s = settle(record, f.evidence, c.now, c.settle_seconds, c.events_pending)
        if s.verdict is Verdict.SENT:
            return RedrivePlan(Remedy.DROP, f"already sent (confirmed by SES): {s.why}")
        if s.verdict is Verdict.RESEND:
            return RedrivePlan(Remedy.UNCLAIM, s.why, token=s.token)
        if s.verdict is Verdict.WAIT:
            return RedrivePlan(Remedy.KEEP, f"possibly sent: {s.why}; run the redrive again then")
        if s.verdict is Verdict.HOLD:
            return RedrivePlan(
                Remedy.KEEP, f"possibly sent: {s.why}; run the redrive again once they are counted"
            )
        return RedrivePlan(Remedy.KEEP, f"possibly sent: {s.why}")
    if f.age_seconds > c.record_days * 86400 - RECORD_MARGIN.total_seconds():
        return RedrivePlan(
            Remedy.KEEP,
            f"dead-lettered {f.age_seconds / 86400:.0f} days ago: its job record may have"
            f" expired (SESGUARD_JOB_RECORD_DAYS={c.record_days}), so whether it was sent"
            " cannot be told; decide by hand",
        )
    reason = f.reason or ""
    if reason.startswith(REJECTED):
        return RedrivePlan(Remedy.KEEP, f"{reason} (stays: SES would refuse it again)")
    if reason.startswith(UNKNOWN_PARTNER) and not f.partner_known:
        return RedrivePlan(
            Remedy.KEEP, f"{UNKNOWN_PARTNER}: add it (`sesguard partners add`), then redrive"
        )
    return RedrivePlan(Remedy.REQUEUE, "never sent")


def body_with_job_id(body: str, job_id: str) -> str:
    """The body to re-enqueue: the original, with the job's id written in if it had none
    (a new SQS message would otherwise give it a new id, and a second copy a second)."""
    data = orjson.loads(body)
    if isinstance(data, dict) and "job_id" in data:
        return body
    data["job_id"] = job_id
    return orjson.dumps(data).decode()


def job_id_of(m: DlqMessage) -> str | None:
    """The id the sender knew the job by: its own, or the id of the message it came in."""
    value = ids_for_log(m.body).get("job_id")
    if value:
        return value
    if m.source_id and JOB_ID_RE.fullmatch(m.source_id):
        return m.source_id
    return None


# ---- redrive ------------------------------------------------------------------------------


@dataclass
class RedriveOutcome:
    """What a redrive did (or, dry, would do) with one DLQ message, and why."""

    message_id: str
    job_id: str | None
    partner_id: str | None
    reason: str | None
    remedy: Remedy
    why: str
    failed: bool = False  # the remedy could not be completed (the message stays)


@dataclass
class RedriveReport:
    outcomes: list[RedriveOutcome] = field(default_factory=list)
    not_selected: int = 0  # their reason did not match --reason
    dry_run: bool = False

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes if o.failed)

    def counts(self) -> dict[str, int]:
        c = Counter(o.remedy.value for o in self.outcomes if not o.failed)
        return {a.value: c.get(a.value, 0) for a in Remedy}

    def kept_by_reason(self) -> dict[str, int]:
        return dict(Counter(o.why for o in self.outcomes if o.remedy is Remedy.KEEP or o.failed))

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "summary": {**self.counts(), "failed": self.failed, "not_selected": self.not_selected},
            "kept": self.kept_by_reason(),
            "messages": [
                {
                    "message_id": o.message_id,
                    "job_id": o.job_id,
                    "partner_id": o.partner_id,
                    "reason": o.reason,
                    "action": o.remedy.value,
                    "why": o.why,
                    **({"failed": True} if o.failed else {}),
                }
                for o in self.outcomes
            ],
        }

    def text(self) -> str:
        verb = "would be" if self.dry_run else "were"
        c = self.counts()
        lines = [
            f"{o.job_id or '?'}  {o.partner_id or '?'}  {o.remedy.value}: {o.why}"
            + ("  [FAILED]" if o.failed else "")
            for o in self.outcomes
        ]
        lines.append(
            f"{c[Remedy.REQUEUE] + c[Remedy.UNCLAIM]} jobs {verb} re-enqueued"
            f" ({c[Remedy.UNCLAIM]} of them possibly sent, after removing the stale claim);"
            f" {c[Remedy.DROP]} {verb} dropped as already sent; {c[Remedy.KEEP]} stay in the DLQ"
            + (f"; {self.failed} failed (they stay)" if self.failed else "")
            + (f"; {self.not_selected} not selected by --reason" if self.not_selected else "")
        )
        return "\n".join(lines)


@dataclass
class Redrive:
    """`sesguard dlq redrive`: one pass over the send DLQ (see the module docstring)."""

    sqs: SQSClient
    dynamodb: DynamoDBClient
    settings: Settings
    queue_url: str
    dlq_url: str
    partner_exists: Callable[[str], Any]  # async (partner_id) -> bool
    events_pending: str | None = None
    reason_filter: str | None = None
    dry_run: bool = False
    now: Callable[[], datetime] = utcnow
    _requeued: set[str] = field(default_factory=set)  # job ids put back in this run
    _partners: dict[str, bool] = field(default_factory=dict)

    async def run(self) -> RedriveReport:
        report = RedriveReport(dry_run=self.dry_run)
        keep: list[DlqMessage] = []  # released at the end (visible again)
        try:
            async for page in read_pages(self.sqs, self.dlq_url, visibility=REDRIVE_VISIBILITY):
                chosen = []
                for m in page:
                    if self.reason_filter and self.reason_filter not in (m.reason or ""):
                        report.not_selected += 1
                        keep.append(m)
                    else:
                        chosen.append(m)
                if chosen:
                    try:
                        keep += await self._page(chosen, report)
                    except BaseException:
                        keep += chosen  # visible again at once; the settled ones are gone
                        raise
        finally:
            await release(self.sqs, self.dlq_url, keep)
        return report

    async def _page(self, page: list[DlqMessage], report: RedriveReport) -> list[DlqMessage]:
        """Decide and settle one page; returns the messages that stay in the DLQ."""
        now = self.now()
        ctx = Context(
            now,
            self.settings.dlq_settle_seconds,
            self.settings.job_record_days,
            self.events_pending,
        )
        jobs = {m.message_id: _job_of(m) for m in page}  # message id -> (job id, error)
        # Consistent: a redrive must see SES's word or a claim written a moment ago.
        records = await read_job_records(
            self.dynamodb, self.settings.table, [j for j, _ in jobs.values() if j], consistent=True
        )
        outcomes: list[tuple[DlqMessage, RedriveOutcome]] = []
        for m in page:
            job_id, error = jobs[m.message_id]
            partner = ids_for_log(m.body).get("partner_id")
            if job_id is not None and job_id in self._requeued:
                plan = RedrivePlan(Remedy.DROP, "a copy of it was re-enqueued in this run")
            else:
                record = records.get(job_id) if job_id else None
                claimant = str((record or {}).get("partner_id") or partner)
                evidence = None
                if record is not None and record.get("state") == t.JOB_SENDING:
                    evidence = await ses_word(
                        self.dynamodb,
                        self.settings.table,
                        record,
                        claimant,
                        self.settings.visibility_timeout,
                    )
                facts = Facts(
                    reason=m.reason,
                    job_error=error,
                    record=record,
                    partner_known=await self._partner_known(partner, m.reason),
                    age_seconds=m.age(now),
                    evidence=evidence,
                )
                plan = decide(facts, ctx)
            outcome = RedriveOutcome(m.message_id, job_id, partner, m.reason, plan.remedy, plan.why)
            outcomes.append((m, outcome))
            report.outcomes.append(outcome)
            if plan.remedy is Remedy.UNCLAIM and not self.dry_run:
                assert job_id is not None and plan.token is not None
                if not await self._unclaim(job_id, plan.token):
                    outcome.failed = True
                    outcome.why = (
                        "its record changed during the redrive (sent or claimed meanwhile);"
                        " run the redrive again"
                    )
            if _moves(outcome) and job_id is not None:
                self._requeued.add(job_id)
        if self.dry_run:
            return page
        await self._requeue([(m, o) for m, o in outcomes if _moves(o)])
        settled = [m for m, o in outcomes if not o.failed and o.remedy is not Remedy.KEEP]
        deleted = {m.message_id for m in await self._delete(settled)}
        for m, o in outcomes:
            if not o.failed and o.remedy is not Remedy.KEEP and m.message_id not in deleted:
                o.failed = True
                o.why += " (its DLQ copy could not be deleted: the next redrive drops it)"
        return [m for m, o in outcomes if o.failed or o.remedy is Remedy.KEEP]

    async def _partner_known(self, partner_id: str | None, reason: str | None) -> bool:
        if not partner_id or not (reason or "").startswith(UNKNOWN_PARTNER):
            return True  # only asked where it decides something
        if partner_id not in self._partners:
            self._partners[partner_id] = bool(await self.partner_exists(partner_id))
        return self._partners[partner_id]

    async def _unclaim(self, job_id: str, token: str) -> bool:
        """Remove a stale claim SES said nothing of: only if still "sending" with the same
        token (a sender that took it over or turned it "sent" meanwhile wins)."""
        try:
            await self.dynamodb.delete_item(
                TableName=self.settings.table,
                Key=t.key(t.job_pk(job_id), t.JOB_SK),
                ConditionExpression="#s = :sending AND #tok = :token",
                ExpressionAttributeNames={"#s": "state", "#tok": "token"},
                ExpressionAttributeValues={
                    ":sending": {"S": t.JOB_SENDING},
                    ":token": {"S": token},
                },
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        log.warning("stale_claim_removed", job_id=job_id)
        return True

    async def _requeue(self, items: list[tuple[DlqMessage, RedriveOutcome]]) -> None:
        """Put jobs back on the send queue (<= 10 and <= 256 KiB per call), each with its
        partner id as MessageGroupId (the send queue is a fair queue); an entry SQS did
        not take is marked failed and stays in the DLQ."""
        bodies: list[tuple[RedriveOutcome, str]] = []
        for m, o in items:
            assert o.job_id is not None
            body = body_with_job_id(m.body, o.job_id)
            if len(body.encode()) > MAX_SQS_MESSAGE_BYTES:
                o.failed, o.why = True, "too large to re-enqueue with its job_id written in"
                continue
            bodies.append((o, body))
        for batch in batches(bodies, lambda ob: len(ob[1].encode())):
            errors = await send_batch(
                self.sqs,
                self.queue_url,
                [b for _, b in batch],
                group_ids=[o.partner_id for o, _ in batch],
            )
            for (o, _), error in zip(batch, errors, strict=True):
                if error:
                    o.failed, o.why = True, f"could not be re-enqueued: {error}"

    async def _delete(self, messages: list[DlqMessage]) -> list[DlqMessage]:
        """Delete settled messages from the DLQ; returns those deleted."""
        deleted: list[DlqMessage] = []
        for start in range(0, len(messages), SQS_BATCH):
            chunk = messages[start : start + SQS_BATCH]
            resp = await self.sqs.delete_message_batch(
                QueueUrl=self.dlq_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(chunk)],
            )
            ok = {int(s["Id"]) for s in resp.get("Successful", [])}
            deleted += [m for i, m in enumerate(chunk) if i in ok]
        return deleted


def _moves(o: RedriveOutcome) -> bool:
    return not o.failed and o.remedy in (Remedy.REQUEUE, Remedy.UNCLAIM)


def _job_of(m: DlqMessage) -> tuple[str | None, str | None]:
    """(job id, None) for a valid job, (job id or None, why) otherwise."""
    if m.truncated_from is not None:
        return None, f"body cut to fit the DLQ (was {m.truncated_from} bytes)"
    try:
        parse_job(m.body)
    except JobError as exc:
        return job_id_of(m), str(exc)
    job_id = job_id_of(m)
    if job_id is None:
        return None, "no job_id and no sesguard_message_id: its record cannot be found"
    return job_id, None


# ---- are SES's events all counted? --------------------------------------------------------


async def events_pending(sqs: SQSClient, settings: Settings) -> str | None:
    """Why SES's word on a job could still be on its way to the worker (None: nothing
    waits): the other half of the rule `settle` applies.

    S3 notifications waiting in the events queue (the worker is behind), or countable
    ones in its DLQ (an outage dead-lettered them), may hold SES's events of a job that
    looks unsent; re-sending it then would send it twice. A DLQ message someone else has
    in hand (a listing, another sender task asking the same) cannot be read, so it holds
    the answer too: "nothing received" must mean nothing is there."""
    queue = settings.events_queue
    try:
        url = (await sqs.get_queue_url(QueueName=queue))["QueueUrl"]
        dlq = (await sqs.get_queue_url(QueueName=f"{queue}-dlq"))["QueueUrl"]
        depth = await queue_depth(sqs, url)
        if depth.visible or depth.delayed:
            return (
                f"{depth.visible + depth.delayed} S3 notifications wait in {queue}: SES's"
                " events may be among them"
            )
        in_dlq = await queue_depth(sqs, dlq)
        if in_dlq.empty:
            return None
        if in_dlq.in_flight:
            return (
                f"{queue}-dlq is being read by someone else: whether it holds SES's events"
                " cannot be told"
            )
        countable = 0
        seen = 0
        taken: list[DlqMessage] = []
        try:
            async for page in read_pages(sqs, dlq, visibility=LIST_VISIBILITY, limit=1000):
                taken += page
                seen += len(page)
                countable += sum(1 for m in page if not (m.reason or "").startswith(_UNCOUNTABLE))
        finally:
            await release(sqs, dlq, taken)
    except ClientError as exc:
        return f"cannot tell whether every SES event is counted ({exc})"
    if countable:
        return (
            f"{countable} S3 notifications are in {queue}-dlq: SES's events may be among"
            " them; fix their cause and move them back (each object is counted once however"
            " often)"
        )
    if seen < in_dlq.visible:
        return f"{queue}-dlq holds messages that could not all be read"
    return None


@dataclass
class EventsWatch:
    """`events_pending`'s answer, kept `ttl` seconds and asked by one caller at a time: a
    burst of stale claims in one sender task reads the events queues once, not once each."""

    sqs: SQSClient
    settings: Settings
    ttl: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _answer: tuple[float, str | None] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def pending(self) -> str | None:
        async with self._lock:
            if self._answer is None or self.clock() - self._answer[0] >= self.ttl:
                self._answer = (self.clock(), await events_pending(self.sqs, self.settings))
            return self._answer[1]
