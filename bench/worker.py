"""Benchmark of the event worker against a naive per-event processor, interleaved.

    python bench/worker.py [--events 100000] [--partners 50] [--objects 6] [--pairs 3]
    python bench/worker.py --scale      # the same at 50, 500 and 5,000 partners

Standalone: starts its own moto server (sesguard.local.localaws, HTTP, free port) with
fake credentials, builds a realistic data set (SES event records of partners with skewed
volumes, Firehose-style gzip objects of newline-delimited records, one object per buffer
interval) and measures, in interleaved pairs (bench/_pairs.py: ours, baseline, ours, ...,
the median ratio and its min..max):

1. parse+aggregate alone (our reader, classifier and aggregation) against bare orjson
   (gzip decompress, split lines, orjson.loads) on the same bytes: `parse_vs_orjson`;
2. end to end, (a) the worker service in --drain mode (S3 notifications on SQS, streamed
   reads, counter transactions, policy evaluation and pauses) and (b) a naive processor
   written here: the original Lambda design, one UpdateItem per event, on a sample of
   the first object, scaled (the JSON says so). Every run starts from an empty stand-in
   (moto reset), so no run inherits another's table.

DynamoDB requests are counted with botocore event hooks on the client: write requests
and the items they write, read requests and the items they read, per 1,000 events; and
their on-demand request units, sized from the items by DynamoDB's rules (the stand-in's
ConsumedCapacity is a constant, not a size), with the cost per million events at the
prices below. Every Send event carries its job's tag, as the sender writes it; for 1 job
in 1,000 (a "sending" record: its sender died mid-send) the run checks afterwards that
SES's word on it is recorded (what the sender asks of a stale claim).
`--partners` registers that many partners; with more than the data set's messages can
cover, many exist without sending (what `--scale` is for: cost per event must not grow
with the partners that exist). Prints a table, then as the last line one JSON object
with `targets` (issue 20) and `targets_met`. moto timings are not AWS timings: the
ratios are what this measures.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import logging
import math
import os
import random
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Settings before any import reads them; AWS endpoint and fake credentials come from
# sesguard.local.localaws when the stand-in starts.
os.environ.update(SESGUARD_NOTIFY_FROM="guard@isv.example.com", SESGUARD_LOG_LEVEL="WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from _pairs import DEFAULT_PAIRS, interleave, interleave_async, judge, show, spread

from sesguard.core.jobs import JOB_TAG, job_id_from_tag, job_tag_value
from sesguard.logging import configure_logging

WRITE_OPS = frozenset(
    {"TransactWriteItems", "UpdateItem", "PutItem", "BatchWriteItem", "DeleteItem"}
)
READ_OPS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"})
# DynamoDB on-demand, us-east-1, USD per million request units (Standard table class),
# as on https://aws.amazon.com/dynamodb/pricing/on-demand/ since the 50% cut of
# 2024-11-01 (figures as quoted, July 2025, by
# https://airbyte.com/data-engineering-resources/dynamodb-pricing).
WRU_USD_PER_MILLION = 0.625
RRU_USD_PER_MILLION = 0.125
# Issue 20's targets for the worker, with confirmations and deduplication on.
TARGETS = {
    "speedup": (">=", 40.0),
    "ddb_items_read_per_1k_events": ("<=", 20.0),
    "ddb_writes_per_1k_events": ("<=", 15.0),
    "parse_vs_orjson": (">=", 0.9),
}
SCALE_PARTNERS = (50, 500, 5000)


# ---- data set -------------------------------------------------------------------------


@dataclass
class DataSet:
    objects: list[tuple[str, bytes]]  # (key, gzip bytes)
    events: int
    raw_bytes: int
    per_partner_sent: dict[str, int] = field(default_factory=dict)
    jobs: list[tuple[str, str]] = field(default_factory=list)  # (job id, partner) of each Send
    partners: list[str] = field(default_factory=list)  # every partner, sending or not


def _ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _mail(pid: str, at: datetime, dest: list[str], msg_id: str, job_id: str) -> dict[str, Any]:
    src = f"{pid} <news@{pid}.mail.example.com>"
    subject = f"Your {pid} order {msg_id[:8]} has shipped"
    return {
        "timestamp": _ts(at),
        "source": src,
        "sourceArn": "arn:aws:ses:us-east-1:111122223333:identity/mail.example.com",
        "sendingAccountId": "111122223333",
        "messageId": msg_id,
        "destination": dest,
        "headersTruncated": False,
        "headers": [
            {"name": "From", "value": src},
            {"name": "To", "value": ", ".join(dest)},
            {"name": "Subject", "value": subject},
            {"name": "MIME-Version", "value": "1.0"},
            {"name": "Content-Type", "value": "multipart/alternative; boundary=b1"},
        ],
        "commonHeaders": {"from": [src], "to": dest, "messageId": msg_id, "subject": subject},
        "tags": {
            "ses:operation": ["SendEmail"],
            "ses:configuration-set": ["sesguard"],
            "ses:source-ip": ["203.0.113.10"],
            "ses:from-domain": ["mail.example.com"],
            "ses:caller-identity": ["sesguard-sender"],
            "partner_id": [pid],
            JOB_TAG: [job_tag_value(job_id)],
        },
    }


def _message_events(
    rng: random.Random, pid: str, at: datetime, bounce_rate: float
) -> list[dict[str, Any]]:
    """What SES publishes for one message: Send, then outcomes per recipient."""
    n = rng.choice((1, 1, 1, 1, 2, 3))
    dest = [f"u{rng.randrange(10**7)}@customer{rng.randrange(50)}.example.org" for _ in range(n)]
    job_id = f"order:{rng.getrandbits(48):012x}"
    mail = _mail(pid, at, dest, f"0100{uuid.UUID(int=rng.getrandbits(128)).hex}-000000", job_id)
    later = at + timedelta(seconds=rng.randrange(1, 30))
    out: list[dict[str, Any]] = [{"eventType": "Send", "mail": mail, "send": {}}]
    delivered, bounced = [], []
    for addr in dest:
        (bounced if rng.random() < bounce_rate else delivered).append(addr)
    if delivered:
        out.append(
            {
                "eventType": "Delivery",
                "mail": mail,
                "delivery": {
                    "timestamp": _ts(later),
                    "processingTimeMillis": 812,
                    "recipients": delivered,
                    "smtpResponse": "250 2.6.0 Message received",
                    "reportingMTA": "a8-70.smtp-out.amazonses.com",
                },
            }
        )
    if bounced:
        permanent = rng.random() < 0.8
        out.append(
            {
                "eventType": "Bounce",
                "mail": mail,
                "bounce": {
                    "feedbackId": f"0100-bounce-{rng.getrandbits(40):x}",
                    "bounceType": "Permanent" if permanent else "Transient",
                    "bounceSubType": "General" if permanent else "MailboxFull",
                    "bouncedRecipients": [
                        {"emailAddress": a, "action": "failed", "status": "5.1.1"} for a in bounced
                    ],
                    "timestamp": _ts(later),
                    "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
                },
            }
        )
    if delivered and rng.random() < 0.25:
        out.append(
            {
                "eventType": "Open",
                "mail": mail,
                "open": {
                    "timestamp": _ts(later),
                    "userAgent": "Mozilla/5.0",
                    "ipAddress": "192.0.2.1",
                },
            }
        )
    if delivered and rng.random() < 0.0002:  # ~0.02% complaints, a healthy sender
        out.append(
            {
                "eventType": "Complaint",
                "mail": mail,
                "complaint": {
                    "feedbackId": f"0100-complaint-{rng.getrandbits(40):x}",
                    "complainedRecipients": [{"emailAddress": delivered[0]}],
                    "timestamp": _ts(later),
                    "complaintFeedbackType": "abuse",
                },
            }
        )
    return out


def build_data(
    events: int, partners: int, objects: int, seed: int = 7, every_partner: bool = True
) -> DataSet:
    """`every_partner`: refuse a data set in which a partner sends nothing."""
    rng = random.Random(seed)
    pids = [f"partner-{i:03d}" for i in range(partners)]
    weights = [1 / (i + 1) ** 0.8 for i in range(partners)]  # a few big, many small senders
    # Most partners are clean; a few bounce too much and will be paused by the policy.
    bounce = {p: (0.09 if i % 17 == 5 else rng.uniform(0.002, 0.02)) for i, p in enumerate(pids)}
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=objects)
    records: list[dict[str, Any]] = []
    while len(records) < events:
        pid = rng.choices(pids, weights)[0]
        at = start + timedelta(seconds=len(records) * objects * 60 / events)
        records.extend(_message_events(rng, pid, at, bounce[pid]))
    records = records[:events]
    if every_partner and len({r["mail"]["tags"]["partner_id"][0] for r in records}) < partners:
        raise SystemExit("data set does not cover every partner: raise --events")
    per_object = -(-len(records) // objects)
    out: list[tuple[str, bytes]] = []
    raw = 0
    for n in range(objects):
        chunk = records[n * per_object : (n + 1) * per_object]
        at = start + timedelta(minutes=n)
        body = b"".join(orjson.dumps(r) + b"\n" for r in chunk)
        raw += len(body)
        key = f"{at:%Y/%m/%d/%H}/sesguard-ses-events-1-{at:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}.gz"
        out.append((key, gzip.compress(body, compresslevel=6)))
    sent: dict[str, int] = {}
    jobs: list[tuple[str, str]] = []
    for r in records:
        if r["eventType"] == "Send":
            pid = r["mail"]["tags"]["partner_id"][0]
            sent[pid] = sent.get(pid, 0) + len(r["mail"]["destination"])
            jobs.append((job_id_from_tag(r["mail"]["tags"][JOB_TAG][0]) or "", pid))
    return DataSet(out, len(records), raw, sent, jobs, pids)


# ---- parse benchmark ------------------------------------------------------------------


def bare_orjson(blobs: list[bytes]) -> int:
    n = 0
    loads = orjson.loads
    for blob in blobs:
        for line in gzip.decompress(blob).split(b"\n"):
            if line:
                loads(line)
                n += 1
    return n


def ours(blobs: list[bytes]) -> int:
    from worker.aggregate import aggregate_bytes

    n = 0
    for blob in blobs:
        agg = aggregate_bytes(blob)
        agg.counts()
        n += agg.stats.records
    return n


def timed(fn: Any, arg: Any) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = fn(arg)
    return time.perf_counter() - t0, n


# ---- DynamoDB requests and their request units ----------------------------------------


class Meter:
    """Counts DynamoDB write requests and the items they write, read requests and the
    items they read (botocore event hooks); while `recording`, also keeps what each write
    named and what each read returned, for `units`."""

    def __init__(self, client: Any) -> None:
        self.recording = False
        self.paused = False
        self.reset()
        client.meta.events.register("provide-client-params.dynamodb.*", self._on_call)
        client.meta.events.register("after-call.dynamodb.*", self._on_answer)

    def reset(self, recording: bool = False) -> None:
        self.requests = self.items = self.reads = self.read_items = 0
        self.recording = recording
        self.writes: list[tuple[str, dict[str, Any]]] = []  # (operation, params)
        self.answers: list[tuple[str, dict[str, Any], dict[str, Any]]] = []  # (op, params, answer)

    def _on_call(self, params: dict[str, Any], model: Any, context: Any, **_: Any) -> None:
        if self.paused:
            return
        if model.name in WRITE_OPS:
            self.requests += 1
            if model.name == "TransactWriteItems":
                self.items += len(params.get("TransactItems", []))
            elif model.name == "BatchWriteItem":
                self.items += sum(len(v) for v in params.get("RequestItems", {}).values())
            else:
                self.items += 1
            if self.recording:
                self.writes.append((model.name, params))
        elif model.name in READ_OPS:
            self.reads += 1
            if model.name == "BatchGetItem":
                self.read_items += sum(
                    len(v.get("Keys", [])) for v in params.get("RequestItems", {}).values()
                )
            elif model.name == "TransactGetItems":
                self.read_items += len(params.get("TransactItems", []))
            else:
                self.read_items += 1  # a Query is counted as one (it reads a few small items)
            if self.recording and isinstance(context, dict):
                context["bench_read"] = params

    def _on_answer(self, model: Any, parsed: Any, context: Any, **_: Any) -> None:
        params = context.get("bench_read") if isinstance(context, dict) else None
        if params is not None and self.recording:
            self.answers.append((model.name, params, parsed))


def _value_size(v: dict[str, Any]) -> int:
    """DynamoDB's size of one attribute value (developer guide, "Item sizes and formats")."""
    ((kind, x),) = v.items()
    if kind == "S":
        return len(x.encode())
    if kind == "N":
        digits = x.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1  # 1 byte per 2 significant digits, plus 1
    if kind == "B":
        return len(x)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(_value_size({kind[0]: e}) for e in x)
    if kind == "L":
        return 3 + sum(1 + _value_size(e) for e in x)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_size(e) for k, e in x.items())
    return 0


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + _value_size(v) for name, v in item.items())


def _key(item: dict[str, Any]) -> tuple[str, str]:
    return item["pk"]["S"], item["sk"]["S"]  # sesguard's table layout (both tables)


def _write_targets(op: str, params: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, table, key-or-item) for each item a write request writes."""
    if op == "TransactWriteItems":
        out = []
        for entry in params.get("TransactItems", []):
            ((kind, body),) = entry.items()
            out.append((kind, body["TableName"], body.get("Item") or body["Key"]))
        return out
    if op == "BatchWriteItem":
        return [
            ("Put", t, r["PutRequest"]["Item"])
            if "PutRequest" in r
            else ("Delete", t, r["DeleteRequest"]["Key"])
            for t, reqs in params.get("RequestItems", {}).items()
            for r in reqs
        ]
    kind = {"PutItem": "Put", "UpdateItem": "Update", "DeleteItem": "Delete"}[op]
    return [(kind, params["TableName"], params.get("Item") or params["Key"])]


async def units(meter: Meter, ddb: Any) -> tuple[float, float]:
    """(write request units, read request units) of what `meter` recorded.

    Writes: 1 WRU per KB of item, 2 in a transaction (ConditionCheck included), at least
    1 per item. A Put is sized from its item; an Update or ConditionCheck from the item
    as it is after the run (read back here, unmetered): exact for an item written once,
    an upper bound for a counter that grows; a Delete counts 1 KB. Reads: per 4 KB of each
    item returned (a Query: of all it returned), at least one unit per key asked; 1 RRU
    strongly consistent, 0.5 eventually, 2 transactional. Index writes are not included.
    """
    writes = [(op, t) for op, params in meter.writes for t in _write_targets(op, params)]
    wanted = {
        (table, _key(k)) for _, (kind, table, k) in writes if kind in ("Update", "ConditionCheck")
    }
    final = await _read_back(ddb, wanted)
    wru = 0.0
    for op, (kind, table, k) in writes:
        size = 1024 if kind == "Delete" else 0
        if kind == "Put":
            size = item_size(k)
        elif kind != "Delete":
            size = final.get((table, _key(k)), 0)
        wru += max(1, math.ceil(size / 1024)) * (2 if op == "TransactWriteItems" else 1)
    rru = 0.0
    for op, params, answer in meter.answers:
        rru += _read_units(op, params, answer)
    return wru, rru


def _read_units(op: str, params: dict[str, Any], answer: dict[str, Any]) -> float:
    def per(items: list[dict[str, Any]], asked: int) -> int:
        found = [max(1, math.ceil(item_size(i) / 4096)) for i in items]
        return sum(found) + max(0, asked - len(found))

    if op == "GetItem":
        item = answer.get("Item")
        return per([item] if item else [], 1) * (1 if params.get("ConsistentRead") else 0.5)
    if op == "BatchGetItem":
        total = 0.0
        unprocessed = answer.get("UnprocessedKeys", {})
        for table, req in params.get("RequestItems", {}).items():
            asked = len(req.get("Keys", [])) - len(unprocessed.get(table, {}).get("Keys", []))
            got = answer.get("Responses", {}).get(table, [])
            total += per(got, asked) * (1 if req.get("ConsistentRead") else 0.5)
        return total
    if op == "TransactGetItems":
        got = [r.get("Item") for r in answer.get("Responses", [])]
        return 2 * per([i for i in got if i], len(params.get("TransactItems", [])))
    size = sum(item_size(i) for i in answer.get("Items", []))  # Query, Scan
    return max(1, math.ceil(size / 4096)) * (1 if params.get("ConsistentRead") else 0.5)


async def _read_back(ddb: Any, keys: set[tuple[str, tuple[str, str]]]) -> dict[Any, int]:
    """The size of each of `keys` as stored now (absent: not in the answer)."""
    sizes: dict[Any, int] = {}
    ordered = sorted(keys)
    for i in range(0, len(ordered), 100):
        request: dict[str, Any] = {}
        for table, (pk, sk) in ordered[i : i + 100]:
            request.setdefault(table, {"Keys": []})["Keys"].append(
                {"pk": {"S": pk}, "sk": {"S": sk}}
            )
        while request:
            resp = await ddb.batch_get_item(RequestItems=request)
            for table, items in resp.get("Responses", {}).items():
                for item in items:
                    sizes[(table, _key(item))] = item_size(item)
            request = resp.get("UnprocessedKeys") or {}
    return sizes


# ---- end to end -----------------------------------------------------------------------


async def run_worker(clients: Any, settings: Any, data: DataSet) -> dict[str, Any]:
    from worker.pipeline import ObjectResult, Processor
    from worker.service import WorkerService

    service = WorkerService(clients, settings)
    service.metrics.stream = io.StringIO()  # its EMF metric lines would interleave the table
    done: list[float] = []
    results: list[ObjectResult] = []
    inner = service.processor

    class Timed(Processor):  # records when each object is counted; the work is inner's
        async def process(self, bucket: str, key: str, now: Any = None) -> ObjectResult:
            r = await inner.process(bucket, key, now)
            results.append(r)
            done.append(time.perf_counter())
            return r

    service.processor = Timed(inner.s3, inner.store, inner.enforcer)
    t0 = time.perf_counter()
    code = await service.run(drain=True)
    wall = time.perf_counter() - t0
    if code != 0 or len(results) != len(data.objects):
        raise SystemExit(f"worker run failed: exit {code}, {len(results)} objects")
    return {
        "seconds": done[-1] - t0,
        "wall_seconds": wall,
        "events": sum(r.stats.events for r in results),
        "paused": sum(1 for r in results for o in r.outcomes.values() if o.value == "paused"),
        "chunks": sum(r.applied.transactions for r in results),
    }


async def run_naive(clients: Any, table: str, bucket: str, key: str, sample: int) -> dict[str, Any]:
    """The original Lambda design: read the object, one UpdateItem per event."""
    from sesguard.aws.table import bucket_sk, partner_pk
    from worker.classify import Delta, classify

    t0 = time.perf_counter()
    resp = await clients.s3.get_object(Bucket=bucket, Key=key)
    body = await resp["Body"].read()
    lines = [ln for ln in gzip.decompress(body).split(b"\n") if ln][:sample]
    gate = asyncio.Semaphore(NAIVE_CONCURRENCY)

    async def one(line: bytes) -> None:
        delta = classify(orjson.loads(line))
        if not isinstance(delta, Delta) or not delta.amount:
            return
        async with gate:
            await clients.dynamodb.update_item(
                TableName=table,
                Key={
                    "pk": {"S": partner_pk(delta.partner_id)},
                    "sk": {"S": bucket_sk(delta.hour)},
                },
                UpdateExpression="ADD #c :n",
                ExpressionAttributeNames={"#c": delta.counter},
                ExpressionAttributeValues={":n": {"N": str(delta.amount)}},
            )

    await asyncio.gather(*(one(line) for line in lines))
    return {"seconds": time.perf_counter() - t0, "events": len(lines)}


NAIVE_CONCURRENCY = 8
STALE_EVERY = 1000  # one job in this many was left "sending" by a sender that died
# Only those records are written (to keep setup short). For a worker that reads job
# records, a job with no record costs the same as one recorded "sent": its key is in the
# same BatchGetItem, and nothing is written for it.


async def write_job_records(clients: Any, table: str, jobs: list[tuple[str, str]]) -> list[str]:
    """The claims dead senders left "sending" (1 job in STALE_EVERY); returns their ids."""
    from sesguard.aws import table as t

    stale = [(j, pid) for n, (j, pid) in enumerate(jobs) if n % STALE_EVERY == STALE_EVERY // 2]
    items = [
        t.to_item(
            {
                "pk": t.job_pk(job_id),
                "sk": t.JOB_SK,
                "state": "sending",
                "token": "bench",
                "partner_id": pid,
                "claimed_at": "2026-11-29T00:00:00+00:00",
            }
        )
        for job_id, pid in stale
    ]
    await _put_all(clients, table, items)
    return [job_id for job_id, _ in stale]


async def _put_all(clients: Any, table: str, items: list[dict[str, Any]]) -> None:
    gate = asyncio.Semaphore(8)

    async def put(chunk: list[dict[str, Any]]) -> None:
        request: dict[str, Any] = {table: [{"PutRequest": {"Item": i}} for i in chunk]}
        async with gate:
            while request:
                resp = await clients.dynamodb.batch_write_item(RequestItems=request)
                request = resp.get("UnprocessedItems") or {}

    await asyncio.gather(*(put(items[i : i + 25]) for i in range(0, len(items), 25)))


async def confirmed_jobs(
    clients: Any, table: str, jobs: list[tuple[str, str]], start: datetime
) -> int:
    """How many of `jobs` (job id, partner) have SES's word recorded: the worker kept the
    job its Send event named (sesguard.aws.seen, what the sender asks of a stale claim)."""
    from sesguard.aws.seen import ses_accepted

    n = 0
    for job_id, pid in jobs:
        n += await ses_accepted(clients.dynamodb, table, pid, job_id, start, 600) is not None
    return n


def reset_stand_in(endpoint: str) -> None:
    """An empty stand-in (every service), as the test suite resets it before each test."""
    req = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(req, timeout=30).close()


async def end_to_end(data: DataSet, naive_sample: int, pairs: int) -> dict[str, Any]:
    """`pairs` interleaved runs of the worker and the naive processor, each on an empty
    stand-in; the first of each side also records what its requests cost in units."""
    from sesguard.aws.clients import open_clients
    from sesguard.aws.store import PartnerStore
    from sesguard.core.partners import Limits, Profile
    from sesguard.local.localaws import local_aws
    from sesguard.ops.bootstrap import bootstrap, ensure_table
    from sesguard.settings import load_settings

    # moto with DynamoDB's isolation (see sesguard.local.localaws): both sides run on it alike.
    with local_aws() as endpoint:
        settings = load_settings()
        naive_settings = load_settings(table="sesguard-naive")
        async with open_clients(settings.concurrency, max_attempts=2) as clients:
            meter = Meter(clients.dynamodb)
            bucket = settings.bucket_name(await clients.account_id())

            async def measured(side: dict[str, Any], first: bool) -> None:
                side.update(
                    write_requests=meter.requests,
                    write_items=meter.items,
                    read_requests=meter.reads,
                    read_items=meter.read_items,
                )
                if first:
                    meter.paused = True
                    side["wru"], side["rru"] = await units(meter, clients.dynamodb)
                    meter.paused = False

            async def ours_run() -> dict[str, Any]:
                first = not worker_runs
                meter.paused = True  # setup is not the worker's
                reset_stand_in(endpoint)
                await bootstrap(clients, settings, ["isv.example.com"])
                store = PartnerStore.from_settings(clients.dynamodb, settings)
                gate = asyncio.Semaphore(16)

                async def create(pid: str) -> None:
                    async with gate:
                        await store.create(Profile(pid, f"ops@{pid}.example.com", Limits()))

                await asyncio.gather(*(create(pid) for pid in data.partners))
                # Job records as the sender leaves them: 1 in STALE_EVERY "sending".
                stale = await write_job_records(clients, settings.table, data.jobs)
                # Objects arrive like Firehose writes them, notifications on SQS.
                for key, blob in data.objects:
                    await clients.s3.put_object(Bucket=bucket, Key=key, Body=blob)
                meter.paused = False
                meter.reset(recording=first)
                worker = await run_worker(clients, settings, data)
                meter.recording = False
                await measured(worker, first)
                worker["stale_claims"] = len(stale)
                meter.paused = True
                # Exactness check: the table's sent totals equal the data set's.
                for pid in data.per_partner_sent:
                    got = (await store.get_state(pid)).totals.sent
                    if got != data.per_partner_sent[pid]:
                        raise SystemExit(
                            f"{pid}: counted {got}, expected {data.per_partner_sent[pid]}"
                        )
                # Exactness check: every stale claim named by a Send event is confirmed.
                by_job = dict(data.jobs)
                start = datetime.now(UTC) - timedelta(minutes=len(data.objects) + 2)
                named = [(job_id, by_job[job_id]) for job_id in stale]
                confirmed = await confirmed_jobs(clients, settings.table, named, start)
                if confirmed != len(stale):
                    raise SystemExit(f"{confirmed} of {len(stale)} stale claims confirmed")
                meter.paused = False
                worker_runs.append(worker)
                return worker

            async def naive_run() -> dict[str, Any]:
                first = not naive_runs
                meter.paused = True
                reset_stand_in(endpoint)
                await ensure_table(clients, naive_settings)
                await clients.s3.create_bucket(Bucket=bucket)
                key0, blob0 = data.objects[0]
                await clients.s3.put_object(Bucket=bucket, Key=key0, Body=blob0)
                meter.paused = False
                meter.reset(recording=first)
                naive = await run_naive(clients, naive_settings.table, bucket, key0, naive_sample)
                meter.recording = False
                await measured(naive, first)
                naive_runs.append(naive)
                return naive

            worker_runs: list[dict[str, Any]] = []
            naive_runs: list[dict[str, Any]] = []
            runs = await interleave_async(ours_run, naive_run, pairs)
            return {"pairs": runs}


# ---- main -----------------------------------------------------------------------------


def per_1k(n: float, events: int) -> float:
    return n * 1000 / events


def measure(args: argparse.Namespace, partners: int, parse: bool) -> dict[str, Any]:
    """One data set, measured in `args.pairs` interleaved pairs; returns the figures."""
    t0 = time.perf_counter()
    data = build_data(args.events, partners, args.objects, every_partner=False)
    gen_s = time.perf_counter() - t0
    blobs = [b for _, b in data.objects]
    r: dict[str, Any] = {
        "events": data.events,
        "partners": partners,
        "partners_sending": len(data.per_partner_sent),
        "objects": args.objects,
        "pairs": args.pairs,
        "raw_mb": round(data.raw_bytes / 1e6, 1),
        "gzip_mb": round(sum(map(len, blobs)) / 1e6, 1),
        "generated_seconds": round(gen_s, 1),
    }
    if parse:
        runs = interleave(lambda: timed(ours, blobs), lambda: timed(bare_orjson, blobs), args.pairs)
        for (_, n_ours), (_, n_bare) in runs:
            assert n_ours == n_bare == data.events, (n_ours, n_bare, data.events)
        r["parse_vs_orjson"] = spread([bare_s / ours_s for (ours_s, _), (bare_s, _) in runs], 3)
        r["parse_events_per_s"] = round(data.events / min(s for (s, _), _ in runs))
        r["bare_orjson_events_per_s"] = round(data.events / min(s for _, (s, _) in runs))

    e2e = asyncio.run(end_to_end(data, args.naive_sample, args.pairs))
    pairs = e2e["pairs"]
    w, nv = pairs[0]  # the recorded runs: counts and units
    rates = [(a["events"] / a["seconds"], b["events"] / b["seconds"]) for a, b in pairs]
    r["speedup"] = spread([ours_rate / naive_rate for ours_rate, naive_rate in rates])
    r["worker_events_per_s"] = [round(a) for a, _ in rates]
    r["naive_events_per_s"] = [round(b) for _, b in rates]
    r["naive_sample_events"] = nv["events"]
    r["worker_seconds"] = [round(a["seconds"], 3) for a, _ in pairs]
    ev = w["events"]
    r["ddb_writes_per_1k_events"] = round(per_1k(w["write_requests"], ev), 3)
    r["ddb_items_written_per_1k_events"] = round(per_1k(w["write_items"], ev), 3)
    r["ddb_reads_per_1k_events"] = round(per_1k(w["read_requests"], ev), 3)
    r["ddb_items_read_per_1k_events"] = round(per_1k(w["read_items"], ev), 3)
    r["ddb_wru_per_1k_events"] = round(per_1k(w["wru"], ev), 2)
    r["ddb_rru_per_1k_events"] = round(per_1k(w["rru"], ev), 2)
    r["ddb_usd_per_million_events"] = round(cost(w["wru"], w["rru"], ev), 4)
    r["naive_ddb_wru_per_1k_events"] = round(per_1k(nv["wru"], nv["events"]), 2)
    r["naive_ddb_usd_per_million_events"] = round(cost(nv["wru"], nv["rru"], nv["events"]), 4)
    # The worker's timing decides some batching (the first run's are the figures above).
    r["ddb_write_requests_per_run"] = [a["write_requests"] for a, _ in pairs]
    r["ddb_items_read_per_run"] = [a["read_items"] for a, _ in pairs]
    r["stale_claims_confirmed"] = w["stale_claims"]
    r["transactions"] = w["chunks"]
    r["partners_paused"] = w["paused"]
    return r


def cost(wru: float, rru: float, events: int) -> float:
    """On-demand USD per million events."""
    return (wru * WRU_USD_PER_MILLION + rru * RRU_USD_PER_MILLION) / events


UNITS_BASIS = (
    "request units sized from the items (DynamoDB's rules; Updates from the item after the"
    " run), not the stand-in's ConsumedCapacity, which is a constant"
)


def print_run(r: dict[str, Any]) -> None:
    rows = [
        (
            "data set",
            f"{r['events']} events, {r['partners']} partners"
            f" ({r['partners_sending']} sending), {r['objects']} objects",
        ),
        (
            "",
            f"{r['raw_mb']} MB JSON, {r['gzip_mb']} MB gzip,"
            f" generated in {r['generated_seconds']} s",
        ),
    ]
    if "parse_vs_orjson" in r:
        rows += [
            (
                "parse: bare orjson (gunzip+split+loads)",
                f"{r['bare_orjson_events_per_s']:,} events/s (best)",
            ),
            (
                "parse: ours (read+classify+aggregate)",
                f"{r['parse_events_per_s']:,} events/s (best)",
            ),
            ("parse_vs_orjson", show(r["parse_vs_orjson"])),
        ]
    rows += [
        (
            "worker end to end, per run",
            ", ".join(f"{x:,}" for x in r["worker_events_per_s"]) + " events/s",
        ),
        (
            "naive (sample), per run",
            ", ".join(f"{x:,}" for x in r["naive_events_per_s"])
            + f" events/s ({r['naive_sample_events']} events each)",
        ),
        ("speedup (ours / naive, per pair)", show(r["speedup"])),
        ("per 1,000 events: DynamoDB write requests", f"{r['ddb_writes_per_1k_events']:.2f}"),
        ("                  items written", f"{r['ddb_items_written_per_1k_events']:.2f}"),
        ("                  read requests", f"{r['ddb_reads_per_1k_events']:.2f}"),
        ("                  items read", f"{r['ddb_items_read_per_1k_events']:.2f}"),
        (
            "                  write / read request units",
            f"{r['ddb_wru_per_1k_events']:.1f} / {r['ddb_rru_per_1k_events']:.1f}",
        ),
        (
            "on-demand cost per million events",
            f"${r['ddb_usd_per_million_events']:.3f}"
            f" (naive: ${r['naive_ddb_usd_per_million_events']:.3f})",
        ),
        ("stale claims confirmed", f"{r['stale_claims_confirmed']} (1 job in {STALE_EVERY})"),
        (
            "worker transactions (chunks)",
            f"{r['transactions']}; partners paused: {r['partners_paused']}",
        ),
    ]
    width = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"{a:<{width}}  {b}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--partners", type=int, default=50)
    ap.add_argument("--objects", type=int, default=6)
    ap.add_argument("--naive-sample", type=int, default=3000)
    ap.add_argument(
        "--pairs", type=int, default=DEFAULT_PAIRS, help="interleaved pairs (default 3)"
    )
    ap.add_argument(
        "--scale",
        nargs="?",
        const=",".join(map(str, SCALE_PARTNERS)),
        default=None,
        metavar="N,N,...",
        help="end to end at each partner count (default 50,500,5000) instead of --partners",
    )
    args = ap.parse_args()
    if args.pairs < 1:
        ap.error("--pairs must be >= 1")
    configure_logging("json", "ERROR")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request lines
    prices = {
        "wru_usd_per_million": WRU_USD_PER_MILLION,
        "rru_usd_per_million": RRU_USD_PER_MILLION,
    }

    if args.scale:
        sizes = [int(n) for n in args.scale.split(",")]
        runs = []
        for n in sizes:
            print(f"bench/worker.py --partners {n}  (moto server; ratios, not AWS timings)")
            r = measure(args, n, parse=False)
            print_run(r)
            print()
            runs.append(r)
        print_scale(runs)
        out: dict[str, Any] = {
            "benchmark": "worker-scale",
            "units_basis": UNITS_BASIS,
            "prices": prices,
            "sizes": runs,
        }
        print(orjson.dumps(out).decode())
        return 0

    print("bench/worker.py  (moto server; ratios, not AWS timings)")
    r = measure(args, args.partners, parse=True)
    print_run(r)
    values = {
        "speedup": r["speedup"]["median"],
        "ddb_items_read_per_1k_events": r["ddb_items_read_per_1k_events"],
        "ddb_writes_per_1k_events": r["ddb_writes_per_1k_events"],
        "parse_vs_orjson": r["parse_vs_orjson"]["median"],
    }
    r["targets"] = judge(TARGETS, values)
    r["targets_met"] = all(t["met"] for t in r["targets"].values())
    print()
    print_targets(r["targets"])
    r.update(
        benchmark="worker",
        units_basis=UNITS_BASIS,
        prices=prices,
        naive_concurrency=NAIVE_CONCURRENCY,
        worker_time_basis="first receive to last object counted (drain's final poll excluded)",
        backend="moto server (HTTP, sesguard.local.localaws), same process, reset per run",
    )
    print(orjson.dumps(r).decode())
    return 0


def print_targets(found: dict[str, dict[str, Any]]) -> None:
    from sesguard.ops.report import render_table

    labels = {
        "speedup": "speedup over the naive worker (median)",
        "ddb_items_read_per_1k_events": "DynamoDB items read per 1,000 events",
        "ddb_writes_per_1k_events": "DynamoDB write requests per 1,000 events",
        "parse_vs_orjson": "parse+aggregate / bare orjson (median)",
    }
    rows = [
        [labels[k], f"{t['value']:g}", t["target"], "yes" if t["met"] else "NO"]
        for k, t in found.items()
    ]
    print(render_table(["target", "measured", "goal", "met"], rows))


def print_scale(runs: list[dict[str, Any]]) -> None:
    from sesguard.ops.report import render_table

    rows = [
        [
            f"{r['partners']:,} ({r['partners_sending']:,})",
            f"{r['ddb_writes_per_1k_events']:.2f}",
            f"{r['ddb_items_written_per_1k_events']:.1f}",
            f"{r['ddb_reads_per_1k_events']:.2f}",
            f"{r['ddb_items_read_per_1k_events']:.1f}",
            f"${r['ddb_usd_per_million_events']:.3f}",
            f"{sorted(r['worker_events_per_s'])[len(r['worker_events_per_s']) // 2]:,}",
            show(r["speedup"]),
        ]
        for r in runs
    ]
    heads = [
        "partners (sending)",
        "write req/1k",
        "items written/1k",
        "read req/1k",
        "items read/1k",
        "$/M events",
        "events/s (median)",
        "speedup",
    ]
    print(render_table(heads, rows))


if __name__ == "__main__":
    sys.exit(main())
