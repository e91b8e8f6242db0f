"""Benchmark of the event worker against a naive per-event processor, in one run.

    python bench/worker.py [--events 100000] [--partners 50] [--objects 6]

Standalone: starts its own moto server (HTTP, free port) with fake credentials, builds a
realistic data set (SES event records of 50+ partners with skewed volumes, Firehose-style
gzip objects of newline-delimited records, one object per buffer interval) and measures:

1. parse+aggregate alone (our reader, classifier and aggregation) against bare orjson
   (gzip decompress, split lines, orjson.loads) on the same bytes: `parse_vs_orjson`;
2. end to end, (a) the worker service in --drain mode (S3 notifications on SQS, streamed
   reads, one transaction per <=100 partner-hour items, policy evaluation and pauses) and
   (b) a naive processor written here: the original Lambda design, one UpdateItem per
   event. The naive side runs on a sample of events and is scaled (the JSON says so).

DynamoDB write and read requests are counted with a botocore event hook on the client,
for both. Every Send event carries its job's tag, as the sender writes it, and every job
has its record: "sent", or for 1 job in 1,000 "sending" (its sender died
mid-send), which the worker confirms from the Send event (worker/confirm.py): the
figures include what that costs. (Only the "sending" records are written, to spare moto:
see STALE_EVERY; the worker's reads and writes are the same either way.)
Prints a table, then as the last line one JSON object. moto timings are not AWS timings:
the ratios are what this measures.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import logging
import os
import random
import sys
import time
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

from sesguard.core.jobs import JOB_TAG, job_id_from_tag, job_tag_value
from sesguard.logging import configure_logging

WRITE_OPS = frozenset(
    {"TransactWriteItems", "UpdateItem", "PutItem", "BatchWriteItem", "DeleteItem"}
)


# ---- data set -------------------------------------------------------------------------


@dataclass
class DataSet:
    objects: list[tuple[str, bytes]]  # (key, gzip bytes)
    events: int
    raw_bytes: int
    per_partner_sent: dict[str, int] = field(default_factory=dict)
    jobs: list[tuple[str, str]] = field(default_factory=list)  # (job id, partner) of each Send


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


def build_data(events: int, partners: int, objects: int, seed: int = 7) -> DataSet:
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
    if len(set(r["mail"]["tags"]["partner_id"][0] for r in records)) < partners:
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
    return DataSet(out, len(records), raw, sent, jobs)


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


def best_of(fn: Any, arg: Any, runs: int = 3) -> tuple[float, int]:
    best = float("inf")
    n = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        n = fn(arg)
        best = min(best, time.perf_counter() - t0)
    return best, n


# ---- end to end -----------------------------------------------------------------------


class WriteCounter:
    """Counts DynamoDB write requests and the items they write, and read requests and
    the items they ask for (botocore event hooks)."""

    def __init__(self, client: Any) -> None:
        self.requests = 0
        self.items = 0
        self.reads = 0
        self.read_items = 0
        client.meta.events.register("provide-client-params.dynamodb.*", self._on_call)

    def _on_call(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in WRITE_OPS:
            self.requests += 1
            if model.name == "TransactWriteItems":
                self.items += len(params.get("TransactItems", []))
            elif model.name == "BatchWriteItem":
                self.items += sum(len(v) for v in params.get("RequestItems", {}).values())
            else:
                self.items += 1
        else:
            self.reads += 1
            if model.name == "BatchGetItem":
                self.read_items += sum(
                    len(v.get("Keys", [])) for v in params.get("RequestItems", {}).values()
                )
            else:
                self.read_items += 1  # a Query is counted as one (it reads a few small items)

    def reset(self) -> None:
        self.requests = self.items = self.reads = self.read_items = 0


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
# Only those records are written. moto copies the whole table for every item of every
# transaction (the worker applies counters in transactions), so a record for each of the
# ~33,000 jobs would make moto, not the worker, the bottleneck. For the worker a job with
# no record costs the same as one recorded "sent": its key is in the same BatchGetItem,
# and nothing is written for it.


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
    gate = asyncio.Semaphore(8)

    async def put(chunk: list[dict[str, Any]]) -> None:
        request: dict[str, Any] = {table: [{"PutRequest": {"Item": i}} for i in chunk]}
        async with gate:
            while request:
                resp = await clients.dynamodb.batch_write_item(RequestItems=request)
                request = resp.get("UnprocessedItems") or {}

    await asyncio.gather(*(put(items[i : i + 25]) for i in range(0, len(items), 25)))
    return [job_id for job_id, _ in stale]


async def confirmed_jobs(clients: Any, table: str, jobs: list[tuple[str, str]], start: Any) -> int:
    """How many of `jobs` (job id, partner) SES's Send events are recorded for."""
    from sesguard.aws.seen import ses_accepted

    n = 0
    for job_id, pid in jobs:
        n += await ses_accepted(clients.dynamodb, table, pid, job_id, start, 600)
    return n


async def end_to_end(data: DataSet, naive_sample: int) -> dict[str, Any]:
    from sesguard.aws.clients import open_clients
    from sesguard.aws.store import PartnerStore
    from sesguard.core.partners import Limits, Profile
    from sesguard.local.localaws import local_aws
    from sesguard.ops.bootstrap import bootstrap, ensure_table
    from sesguard.settings import load_settings

    # moto with DynamoDB's isolation (see sesguard.local.localaws): both sides run on it alike.
    with local_aws():
        settings = load_settings()
        async with open_clients(settings.concurrency, max_attempts=2) as clients:
            await bootstrap(clients, settings, ["isv.example.com"])
            naive_settings = load_settings(table="sesguard-naive")
            await ensure_table(clients, naive_settings)
            bucket = settings.bucket_name(await clients.account_id())
            store = PartnerStore.from_settings(clients.dynamodb, settings)
            for pid in data.per_partner_sent:
                await store.create(Profile(pid, f"ops@{pid}.example.com", Limits()))
            counter = WriteCounter(clients.dynamodb)

            # (b) naive first, on a sample of the first object (its table is separate).
            key0, blob0 = data.objects[0]
            await clients.s3.put_object(Bucket=bucket, Key="naive/" + key0, Body=blob0)
            counter.reset()
            naive = await run_naive(
                clients, naive_settings.table, bucket, "naive/" + key0, naive_sample
            )
            naive["write_requests"] = counter.requests
            # Drop the notification of the naive copy so the worker sees only the data set.
            url = (await clients.sqs.get_queue_url(QueueName=settings.events_queue))["QueueUrl"]
            await clients.sqs.purge_queue(QueueUrl=url)

            # Job records as the sender leaves them: "sent", 1 in STALE_EVERY "sending".
            stale = await write_job_records(clients, settings.table, data.jobs)

            # (a) the worker: objects arrive like Firehose writes them, notifications on SQS.
            for key, blob in data.objects:
                await clients.s3.put_object(Bucket=bucket, Key=key, Body=blob)
            counter.reset()
            worker = await run_worker(clients, settings, data)
            worker["write_requests"] = counter.requests
            worker["write_items"] = counter.items
            worker["read_requests"] = counter.reads
            worker["read_items"] = counter.read_items
            worker["stale_claims"] = len(stale)

            # Exactness check: the table's sent totals equal the data set's.
            for pid in data.per_partner_sent:
                got = (await store.get_state(pid)).totals.sent
                if got != data.per_partner_sent[pid]:
                    raise SystemExit(f"{pid}: counted {got}, expected {data.per_partner_sent[pid]}")
            # Exactness check: every stale claim named by a Send event is confirmed.
            by_job = dict(data.jobs)
            start = datetime.now(UTC) - timedelta(minutes=len(data.objects) + 2)
            named = [(job_id, by_job[job_id]) for job_id in stale]
            confirmed = await confirmed_jobs(clients, settings.table, named, start)
            if confirmed != len(stale):
                raise SystemExit(f"{confirmed} of {len(stale)} stale claims confirmed")
            return {"naive": naive, "worker": worker}


# ---- main -----------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--partners", type=int, default=50)
    ap.add_argument("--objects", type=int, default=6)
    ap.add_argument("--naive-sample", type=int, default=3000)
    args = ap.parse_args()
    configure_logging("json", "ERROR")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request lines

    t0 = time.perf_counter()
    data = build_data(args.events, args.partners, args.objects)
    gen_s = time.perf_counter() - t0
    blobs = [b for _, b in data.objects]

    bare_s, bare_n = best_of(bare_orjson, blobs)
    ours_s, ours_n = best_of(ours, blobs)
    assert bare_n == ours_n == data.events, (bare_n, ours_n, data.events)
    parse_rate = data.events / ours_s
    bare_rate = data.events / bare_s

    e2e = asyncio.run(end_to_end(data, args.naive_sample))
    w, nv = e2e["worker"], e2e["naive"]
    worker_rate = w["events"] / w["seconds"]
    naive_rate = nv["events"] / nv["seconds"]
    naive_full_s = data.events / naive_rate  # scaled from the sample
    writes_per_1k = w["write_requests"] * 1000 / w["events"]
    items_per_1k = w["write_items"] * 1000 / w["events"]
    reads_per_1k = w["read_requests"] * 1000 / w["events"]
    read_items_per_1k = w["read_items"] * 1000 / w["events"]

    rows = [
        ("data set", f"{data.events} events, {args.partners} partners, {args.objects} objects"),
        ("", f"{data.raw_bytes / 1e6:.1f} MB JSON, {sum(map(len, blobs)) / 1e6:.1f} MB gzip"),
        ("", f"generated in {gen_s:.1f} s"),
        ("parse: bare orjson (gunzip+split+loads)", f"{bare_rate:,.0f} events/s"),
        ("parse: ours (read+classify+aggregate)", f"{parse_rate:,.0f} events/s"),
        ("parse_vs_orjson", f"{parse_rate / bare_rate:.2f}"),
        ("worker end to end", f"{worker_rate:,.0f} events/s ({w['seconds']:.2f} s)"),
        ("", f"drain wall {w['wall_seconds']:.2f} s incl. final empty poll"),
        (
            "worker DynamoDB write requests",
            f"{w['write_requests']} ({writes_per_1k:.2f} per 1k events)",
        ),
        ("worker items written", f"{w['write_items']} ({items_per_1k:.2f} per 1k events)"),
        (
            "worker DynamoDB read requests",
            f"{w['read_requests']} ({reads_per_1k:.2f} per 1k events)",
        ),
        ("worker items read", f"{w['read_items']} ({read_items_per_1k:.2f} per 1k events)"),
        ("stale claims confirmed", f"{w['stale_claims']} (1 job in {STALE_EVERY})"),
        ("worker transactions (chunks)", f"{w['chunks']}; partners paused: {w['paused']}"),
        ("naive end to end (sample)", f"{naive_rate:,.0f} events/s ({nv['events']} events)"),
        ("naive scaled to the data set", f"{naive_full_s:,.1f} s, 1000 writes per 1k events"),
        ("speedup (ours / naive)", f"{worker_rate / naive_rate:.1f}x"),
    ]
    width = max(len(a) for a, _ in rows)
    print(f"{'bench/worker.py':<{width}}  (moto server; ratios, not AWS timings)")
    for a, b in rows:
        print(f"{a:<{width}}  {b}")
    result = {
        "speedup": round(worker_rate / naive_rate, 2),
        "ddb_writes_per_1k_events": round(writes_per_1k, 3),
        "ddb_items_written_per_1k_events": round(items_per_1k, 3),
        "ddb_reads_per_1k_events": round(reads_per_1k, 3),
        "ddb_items_read_per_1k_events": round(read_items_per_1k, 3),
        "stale_claims_confirmed": w["stale_claims"],
        "parse_events_per_s": round(parse_rate),
        "parse_vs_orjson": round(parse_rate / bare_rate, 3),
        "bare_orjson_events_per_s": round(bare_rate),
        "worker_events_per_s": round(worker_rate),
        "naive_events_per_s": round(naive_rate),
        "naive_sampled": True,
        "naive_sample_events": nv["events"],
        "naive_concurrency": NAIVE_CONCURRENCY,
        "naive_scaled_seconds": round(naive_full_s, 1),
        "worker_seconds": round(w["seconds"], 3),
        "worker_time_basis": "first receive to last object counted (drain's final poll excluded)",
        "events": data.events,
        "partners": args.partners,
        "objects": args.objects,
        "transactions": w["chunks"],
        "partners_paused": w["paused"],
        "backend": "moto server (HTTP), same process",
        "moto_dynamodb_serialized": True,  # both sides: see sesguard.local.localaws
    }
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
