"""Count an object's events once each: per partner-minute, the keys of the events not
counted before and the counters they add, in one DynamoDB transaction.

`plan_chunks` and `new_events` are pure; `Applier` writes what each partner-minute does
not hold yet (sesguard/aws/seen.py), judging from what this worker knows of it (`Known`)
and reading the table only when a write finds it changed. Why it is exact under
redelivery, repeats, concurrent workers and SIGKILL: docs/design.md, "Every event is
counted exactly once". Log lines name the object through structlog's context
(worker.pipeline binds its bucket and key).
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from sesguard.aws import table as t
from sesguard.aws.errors import error_code
from sesguard.aws.seen import VERSION_SK, Seen, job_key, part_sk, read_seen, seen_pk
from sesguard.aws.store import PartnerStore
from sesguard.core.backoff import spaced_delay
from sesguard.core.partners import Counters, utcnow
from sesguard.errors import Failed
from sesguard.logging import get_logger
from worker.aggregate import CellKey, Counted, Minute, fold

log = get_logger(__name__)

MAX_TRANSACT_ITEMS = 100  # AWS limit; moto does not enforce it, so we do
# Keys per part item: 12 bytes each, plus as many job keys at most: 480 KB would break the
# 400 KB item limit, 15,000 of each (360 KB) keeps under it with room for the attributes.
PART_KEYS = 15_000
PARALLEL_READS = 8  # partner-minute Queries in flight per object
KNOWN_KEYS = 500_000  # event keys a worker remembers (about 40 MB), least recently used out
_RETRY_REASONS = frozenset(
    {
        "TransactionConflict",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "RequestLimitExceeded",
    }
)
_RETRY_ERRORS = frozenset(
    {
        "TransactionConflictException",
        "TransactionInProgressException",
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
)
_REASONS_IN_MESSAGE = re.compile(r"\[([A-Za-z, ]+)\]\s*$")


class ApplyError(Failed):
    """The transaction failed for a reason retrying here will not fix."""


class Known:
    """What this worker knows the partner-minutes hold: what it read or wrote last.

    Why it may be stale and still be used: every write is conditional on the version it
    assumes (`parts`), so a partition another worker (or another copy of an object) wrote
    since fails the condition and is read again before anything is counted. A partition
    never seen is assumed empty (a new minute: the common case), with the same safety.
    So at steady state nothing is read; reads are what conflicts cost."""

    def __init__(self, max_keys: int = KNOWN_KEYS) -> None:
        self.max_keys = max_keys
        self._seen: OrderedDict[str, Seen] = OrderedDict()
        self._keys = 0
        # One transaction at a time per worker: its objects never race each other for a
        # partition (only other workers can), so a conflict is rare and costs one re-read.
        self.writing = asyncio.Lock()

    def get(self, pk: str) -> Seen:
        """What the partition holds, as last known (never changed in place: `put` a new
        one); empty if never seen."""
        seen = self._seen.get(pk)
        if seen is None:
            return Seen()
        self._seen.move_to_end(pk)
        return seen

    def put(self, pk: str, seen: Seen) -> None:
        old = self._seen.pop(pk, None)
        if old is not None:
            self._keys -= len(old.keys)
        self._seen[pk] = seen
        self._keys += len(seen.keys)
        while self._keys > self.max_keys and len(self._seen) > 1:
            _, dropped = self._seen.popitem(last=False)
            self._keys -= len(dropped.keys)


def minute_pk(minute: Minute) -> str:
    """The partition holding the keys of the partner-minute's counted events."""
    return seen_pk(minute.partner_id, minute.minute)


@dataclass
class Unit:
    """One partner-minute to write: what its partition was judged to hold (`seen`) and
    the events of this object it did not hold (`new`), with the jobs their Sends name."""

    minute: Minute
    seen: Seen
    new: dict[bytes, Counted]
    jobs: list[bytes]  # job keys (sesguard.aws.seen.job_key) of the new Send events

    @property
    def pk(self) -> str:
        return minute_pk(self.minute)

    @property
    def parts(self) -> int:
        """The parts the partition held: its version, which the write moves on."""
        return self.seen.parts

    @property
    def part_count(self) -> int:
        return -(-len(self.new) // PART_KEYS)

    def cell(self) -> CellKey | None:
        """Every event of a minute falls in that minute's hour: one counter bucket."""
        for hour, _ in self.new.values():
            return (self.minute.partner_id, hour)
        return None


def new_events(minute: Minute, seen: Seen) -> tuple[Unit, list[str]]:
    """What of `minute` the partition does not hold yet (pure), and the jobs whose Send
    event is new though the partition already names the job: sent twice, which the claim
    exists to prevent (logged as an error by the caller)."""
    new = {k: v for k, v in minute.events.items() if k not in seen.keys}
    jobs: list[bytes] = []
    twice: list[str] = []
    for job_id, send_key in minute.jobs.items():
        if send_key in new:
            jk = job_key(job_id)
            if jk in seen.jobs:
                twice.append(job_id)
            jobs.append(jk)
    return Unit(minute, seen, new, jobs), twice


def unit_items(unit: Unit) -> int:
    """Transaction items of a unit besides its counters: the version and its parts."""
    return 1 + unit.part_count


def plan_chunks(units: Sequence[Unit], max_items: int = MAX_TRANSACT_ITEMS) -> list[list[Unit]]:
    """Units packed into transactions of at most `max_items` items: per unit its version
    and part items, per (partner, hour) one bucket ADD and per partner one TOTALS ADD
    (DynamoDB forbids two operations on one item in a transaction). Sorted by partner and
    minute so a partner's units share those counters (pure)."""
    chunks: list[list[Unit]] = []
    chunk: list[Unit] = []
    cells: set[CellKey] = set()
    partners: set[str] = set()
    used = 0
    for unit in sorted(units, key=lambda u: (u.minute.partner_id, u.minute.minute)):
        if not unit.new:
            continue
        cell = unit.cell()
        pid = unit.minute.partner_id
        cost = unit_items(unit) + (cell not in cells) + (pid not in partners)
        if cost > max_items:
            raise ApplyError(f"one partner-minute needs {cost} transaction items")
        if used + cost > max_items:
            chunks.append(chunk)
            chunk, cells, partners, used = [], set(), set(), 0
            cost = unit_items(unit) + 2
        chunk.append(unit)
        if cell is not None:
            cells.add(cell)
        partners.add(pid)
        used += cost
    if chunk:
        chunks.append(chunk)
    return chunks


@dataclass
class ApplyResult:
    transactions: int = 0  # committed by this object
    handed: int = 0  # events handed over to be written
    counted: int = 0  # of them, added to the counters by this object
    reads: int = 0  # items read to learn what was counted
    retries: int = 0
    jobs_sent_twice: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        """Events found counted before: by another object, or by an earlier try of this one."""
        return self.handed - self.counted


def transaction_items(
    store: PartnerStore, chunk: Sequence[Unit], object_url: str, now: datetime
) -> list[dict[str, Any]]:
    """Per unit: its version moved from what was read to that plus its parts (the
    condition that makes the read still true at commit), its part items; then the
    counters its new events add."""
    expires = {"N": str(int((now + timedelta(days=store.retention_days)).timestamp()))}
    items: list[dict[str, Any]] = []
    for unit in chunk:
        pk = unit.pk
        parts = unit.part_count
        update: dict[str, Any] = {
            "TableName": store.table,
            "Key": t.key(pk, VERSION_SK),
            "UpdateExpression": "SET parts = :new, expires_at = :exp",
            "ExpressionAttributeValues": {":new": {"N": str(unit.parts + parts)}, ":exp": expires},
        }
        if unit.parts:
            update["ConditionExpression"] = "parts = :old"
            update["ExpressionAttributeValues"][":old"] = {"N": str(unit.parts)}
        else:
            update["ConditionExpression"] = "attribute_not_exists(pk)"
        items.append({"Update": update})
        keys = list(unit.new)
        for i in range(parts):
            part_keys = keys[i * PART_KEYS : (i + 1) * PART_KEYS]
            part_jobs = unit.jobs[i * PART_KEYS : (i + 1) * PART_KEYS]
            item: dict[str, Any] = {
                "pk": {"S": pk},
                "sk": {"S": part_sk(unit.parts + i + 1)},
                "keys": {"B": b"".join(part_keys)},
                "events": {"N": str(len(part_keys))},
                "object": {"S": object_url[:1024]},
                "written_at": {"S": now.isoformat()},
                t.TTL_ATTRIBUTE: expires,
            }
            if part_jobs:
                item["jobs"] = {"B": b"".join(part_jobs)}
            items.append(
                {
                    "Put": {
                        "TableName": store.table,
                        "Item": item,
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
    cells = fold(Minute(u.minute.partner_id, u.minute.minute, u.new) for u in chunk if u.new)
    totals: dict[str, Counters] = {}
    for (pid, hour), c in sorted(cells.items()):
        items.append(store.bucket_update(pid, hour, c))
        totals.setdefault(pid, Counters()).add(c)
    for pid, c in totals.items():
        items.append(store.totals_update(pid, c))
    if len(items) > MAX_TRANSACT_ITEMS:
        raise AssertionError(f"chunk of {len(items)} items")  # plan_chunks guarantees it
    return items


def cancellation_reasons(exc: ClientError) -> list[str]:
    """Reason codes, one per transaction item, from the error (or its message)."""
    reasons = exc.response.get("CancellationReasons")
    if isinstance(reasons, list):
        return [str(r.get("Code", "None")) for r in reasons]
    message = str(exc.response.get("Error", {}).get("Message", ""))
    m = _REASONS_IN_MESSAGE.search(message)
    return [r.strip() for r in m.group(1).split(",")] if m else []


@dataclass
class Applier:
    """Writes the partner-minutes of one object (`apply`), as often as it is handed some."""

    store: PartnerStore
    object_url: str
    known: Known = field(default_factory=Known)  # shared by all of a worker's objects
    max_attempts: int = 8
    max_items: int = MAX_TRANSACT_ITEMS
    result: ApplyResult = field(default_factory=ApplyResult)

    async def apply(self, minutes: Sequence[Minute], now: datetime | None = None) -> None:
        now = now or utcnow()
        self.result.handed += sum(len(m.events) for m in minutes)
        planned = [new_events(m, self.known.get(minute_pk(m)))[0] for m in minutes]
        for chunk in plan_chunks(planned, self.max_items):
            async with self.known.writing:
                # Judged again under the lock: another object may have counted some of
                # these events meanwhile (a chunk can only shrink, so it still fits).
                units = [self._judge(u.minute, self.known.get(u.pk)) for u in chunk]
                await self._write([u for u in units if u.new], now)

    def _judge(self, minute: Minute, seen: Seen) -> Unit:
        unit, twice = new_events(minute, seen)
        for job_id in twice:
            log.error("job_sent_twice", alert=True, job_id=job_id, partner_id=minute.partner_id)
        self.result.jobs_sent_twice += twice
        return unit

    def _committed(self, chunk: list[Unit]) -> None:
        """Remember what the partitions hold now that the chunk is written."""
        for unit in chunk:
            old = unit.seen
            keys, jobs = old.keys | unit.new.keys(), old.jobs | set(unit.jobs)
            self.known.put(unit.pk, Seen(old.parts + unit.part_count, keys, jobs))

    async def _read(self, minutes: Sequence[Minute]) -> list[Unit]:
        """What each partition holds now, from the table: every event it names is counted."""
        limit = asyncio.Semaphore(PARALLEL_READS)

        async def one(minute: Minute) -> Unit:
            async with limit:
                return await self._unit(minute)

        return list(await asyncio.gather(*(one(m) for m in minutes)))

    async def _unit(self, minute: Minute) -> Unit:
        pk = minute_pk(minute)
        seen, read = await read_seen(self.store.dynamodb, self.store.table, pk)
        self.result.reads += read
        self.known.put(pk, seen)
        return self._judge(minute, seen)

    async def _write(self, chunk: list[Unit], now: datetime) -> None:
        if not chunk:
            return
        for attempt in range(self.max_attempts):
            items = transaction_items(self.store, chunk, self.object_url, now)
            try:
                await self.store.call("transact_write_items", TransactItems=items)
            except ClientError as exc:
                code = error_code(exc)
                if code == "TransactionCanceledException":
                    reasons = cancellation_reasons(exc)
                    stale = self._stale(chunk, reasons)
                    if stale:
                        # Someone counted in these partitions since we knew them (another
                        # worker or object, or our own earlier try whose answer was lost):
                        # read them again; what they now hold is not counted twice.
                        chunk = await self._reread(chunk, stale)
                        if not chunk:
                            return
                        continue
                    if not any(r in _RETRY_REASONS for r in reasons):
                        raise ApplyError(f"transaction cancelled: {reasons or code}") from exc
                elif code not in _RETRY_ERRORS and not _server_error(exc):
                    raise
                if attempt + 1 == self.max_attempts:
                    raise ApplyError(
                        f"transaction still failing after {self.max_attempts} attempts: {code}"
                    ) from exc
                delay = spaced_delay(attempt, base=0.05, cap=2.0)
                log.info("transaction_retry", code=code, delay=delay)
                self.result.retries += 1
                await asyncio.sleep(delay)
                continue
            self.result.transactions += 1
            self.result.counted += sum(len(u.new) for u in chunk)
            self._committed(chunk)
            return
        raise ApplyError(f"transaction still conflicting after {self.max_attempts} attempts")

    @staticmethod
    def _stale(chunk: list[Unit], reasons: list[str]) -> list[int]:
        """Indexes (in `chunk`) of the units whose version or part condition failed; all
        of them when the endpoint gave no reasons (reading them again is always safe)."""
        if not reasons:
            return list(range(len(chunk)))
        stale: list[int] = []
        pos = 0
        for i, unit in enumerate(chunk):
            n = unit_items(unit)
            if "ConditionalCheckFailed" in reasons[pos : pos + n]:
                stale.append(i)
            pos += n
        return stale

    async def _reread(self, chunk: list[Unit], stale: list[int]) -> list[Unit]:
        fresh = await self._read([chunk[i].minute for i in stale])
        for i, unit in zip(stale, fresh, strict=True):
            chunk[i] = unit
        return [u for u in chunk if u.new]


def _server_error(exc: ClientError) -> bool:
    """A 5xx: the outcome is unknown, and retrying is safe: a committed try moved the
    versions, so the retry reads again and finds its own events counted."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return isinstance(status, int) and status >= 500
