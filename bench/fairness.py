"""How long a quiet partner's jobs wait behind another partner's backlog.

    python bench/fairness.py [--rate 20] [--jobs 3000] [--seconds 60] [--runs 1] [--quick]

Standalone: starts its own moto server (sesguard.local.localaws, a child process), creates
the resources, and per run registers three fresh partners. It enqueues --jobs jobs of
partner "big" first; then the real sender (sender.service.SenderService, in this process,
one task, account rate --rate through settings max_send_rate, SES accepting at once)
starts, and two quiet partners each enqueue one job every 2 s (1 s apart) for --seconds.
The stand-in's SQS does not reorder, so without fair share the quiet jobs come after the
whole backlog. Two variants run interleaved on the same data (ours, baseline, ours, ...):

  ours      the sender as shipped: the account rate shared fairly among the partners a
            task holds, a backlog beyond its share deferred to its turn
  baseline  the same sender with fair share off (SenderService(fair_share=False)): tokens
            first come, first served

Measured per run: for the quiet partners, the *dwell* from enqueue (just before the
SendMessage call) to SES accepting the job: p50, p95, max. After --seconds the run waits
up to --settle seconds for the quiet jobs still queued; one still unsent then counts with
the time it waited so far (so a baseline figure is a lower bound). The *rate used* is the
sends SES accepted during the --seconds divided by rate x seconds. SQS calls per job are
the sender's SQS calls (receives, deletes, visibility changes) over the jobs it
sent; `deferred` counts the jobs sent back for their turn.

Prints one line per run and, last, one JSON object: per variant the medians over runs,
the ratio baseline / ours of the quiet p95 dwell, and the targets (issue 19: quiet p95
dwell <= 5 s, rate used >= 0.85) with whether ours meets them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.update(SESGUARD_NOTIFY_FROM="guard@isv.example.com", SESGUARD_LOG_LEVEL="WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from sender.service import SenderService
from sesguard.aws.clients import Clients, open_clients
from sesguard.aws.store import PartnerStore
from sesguard.core.partners import Limits, Profile
from sesguard.local.localaws import local_aws_process
from sesguard.logging import configure_logging
from sesguard.ops.bootstrap import bootstrap
from sesguard.runtime.retry import max_receive_count
from sesguard.settings import Settings, load_settings

DOMAIN = "isv.example.com"
VARIANTS = ("ours", "baseline")
QUIET_EVERY = 2.0  # seconds between two jobs of one quiet partner
TARGET_P95 = 5.0
TARGET_RATE_USED = 0.85


@dataclass
class Sends:
    """When SES accepted each job (by subject = job id), and the sender's SQS calls."""

    accepted: dict[str, float] = field(default_factory=dict)
    sqs: Counter[str] = field(default_factory=Counter)

    def attach(self, clients: Clients) -> None:
        ses = clients.ses_send.meta.events

        def asked(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            context["bench_job"] = params["Content"]["Simple"]["Subject"]["Data"]

        def answered(http_response: Any, context: dict[str, Any], **_: Any) -> None:
            if http_response.status_code < 300 and "bench_job" in context:
                self.accepted.setdefault(context["bench_job"], time.monotonic())

        def counted(model: Any, **_: Any) -> None:
            self.sqs[model.name] += 1

        ses.register("provide-client-params.sesv2.SendEmail", asked, unique_id="bench-asked")
        ses.register("after-call.sesv2.SendEmail", answered, unique_id="bench-answered")
        clients.sqs.meta.events.register("before-call.sqs.*", counted, unique_id="bench-sqs")

    def reset(self) -> None:
        self.accepted.clear()
        self.sqs.clear()


def job(partner: str, n: int) -> str:
    return orjson.dumps(
        {
            "job_id": f"{partner}-{n:05d}",
            "partner_id": partner,
            "from": f"news@{DOMAIN}",
            "to": [f"success+{n}@simulator.amazonses.com"],
            "subject": f"{partner}-{n:05d}",
            "text": "fairness bench",
        }
    ).decode()


async def enqueue(clients: Clients, url: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        await clients.sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(chunk)]
        )


def settings_for(rate: float, queue: str | None = None) -> Settings:
    extra = {"send_queue": queue} if queue else {}
    return load_settings(max_send_rate=rate, sender_tasks=1, visibility_timeout=30, **extra)


async def fresh_queue(clients: Clients, settings: Settings) -> str:
    """A send queue of its own for one run, with its DLQ and bootstrap's redrive policy
    (moto, like SQS, allows one PurgeQueue a minute)."""
    dlq = (await clients.sqs.create_queue(QueueName=f"{settings.send_queue}-dlq"))["QueueUrl"]
    arn = (await clients.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    policy = {"deadLetterTargetArn": arn, "maxReceiveCount": max_receive_count(settings)}
    attributes = {
        "RedrivePolicy": orjson.dumps(policy).decode(),
        "VisibilityTimeout": str(settings.visibility_timeout),
    }
    created = await clients.sqs.create_queue(QueueName=settings.send_queue, Attributes=attributes)
    return created["QueueUrl"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def quiet_feeder(
    feed: Clients, url: str, partner: str, offset: float, seconds: float, at: dict[str, float]
) -> None:
    await asyncio.sleep(offset)
    start, n = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        body = job(partner, n)
        at[f"{partner}-{n:05d}"] = time.monotonic()
        await feed.sqs.send_message(QueueUrl=url, MessageBody=body)
        n += 1
        await asyncio.sleep(max(0.0, start + n * QUIET_EVERY - time.monotonic()))


async def one_run(
    clients: Clients,
    feed: Clients,
    sends: Sends,
    variant: str,
    run: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    settings = settings_for(args.rate, f"fairness-{variant}-{run}")
    url = await fresh_queue(feed, settings)
    store = PartnerStore.from_settings(clients.dynamodb, settings)
    big = f"big-{variant}-{run}"
    quiet = [f"quiet{i}-{variant}-{run}" for i in (1, 2)]
    for partner in [big, *quiet]:
        await store.create(Profile(partner, f"ops@{partner}.example.org", Limits()))
    await enqueue(feed, url, [job(big, i) for i in range(args.jobs)])
    sends.reset()
    sender = SenderService(clients, settings, wait_seconds=1, fair_share=variant == "ours")
    task = asyncio.create_task(sender.run())
    while not sends.accepted and not task.done():  # noqa: ASYNC110 - its first send
        await asyncio.sleep(0.05)
    begin = time.monotonic()
    enqueued: dict[str, float] = {}
    await asyncio.gather(
        *(
            quiet_feeder(feed, url, p, i * QUIET_EVERY / 2, args.seconds, enqueued)
            for i, p in enumerate(quiet)
        )
    )
    end = begin + args.seconds
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    in_run = sum(1 for t in sends.accepted.values() if begin <= t <= end)
    settle_until = time.monotonic() + args.settle
    unsent = [j for j in enqueued if j not in sends.accepted]
    while unsent and time.monotonic() < settle_until:
        await asyncio.sleep(0.1)
        unsent = [j for j in unsent if j not in sends.accepted]
    stopped = time.monotonic()
    sender.stop("bench over")
    await task
    dwell = [sends.accepted.get(j, stopped) - t for j, t in enqueued.items()]
    sent = len(sends.accepted)
    deferred = sender.fair.deferred if sender.fair is not None else 0
    return {
        "variant": variant,
        "run": run,
        "quiet_jobs": len(enqueued),
        "quiet_unsent": len(unsent),
        "quiet_dwell_p50_s": round(statistics.median(dwell), 2),
        "quiet_dwell_p95_s": round(percentile(dwell, 0.95), 2),
        "quiet_dwell_max_s": round(max(dwell), 2),
        "rate_used": round(in_run / (args.rate * args.seconds), 3),
        "sent": sent,
        "deferred": deferred,
        "sqs_calls_per_job": round(sum(sends.sqs.values()) / max(sent, 1), 3),
        # a deferral's own calls: its share of a receive and of a visibility batch
        "visibility_batches_per_deferral": round(
            sends.sqs["ChangeMessageVisibilityBatch"] / max(deferred, 1), 3
        ),
        "messages_per_receive": round((sent + deferred) / max(sends.sqs["ReceiveMessage"], 1), 2),
        "sqs_calls": dict(sorted(sends.sqs.items())),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    settings = settings_for(args.rate)
    rows: list[dict[str, Any]] = []
    async with open_clients(settings.concurrency) as clients, open_clients() as feed:
        await bootstrap(clients, settings, [DOMAIN])
        sends = Sends()
        sends.attach(clients)
        for run in range(args.runs):
            for variant in VARIANTS:  # interleaved: the machine's load hits both alike
                row = await one_run(clients, feed, sends, variant, run, args)
                print(orjson.dumps(row).decode(), file=sys.stderr)
                rows.append(row)
    summary: dict[str, Any] = {
        "benchmark": "fairness",
        "rate": args.rate,
        "big_jobs": args.jobs,
        "seconds": args.seconds,
        "runs": args.runs,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    keys = ("quiet_dwell_p50_s", "quiet_dwell_p95_s", "quiet_dwell_max_s", "rate_used")
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        for key in (*keys, "sqs_calls_per_job", "quiet_unsent", "deferred"):
            summary[f"{variant}_{key}"] = statistics.median(r[key] for r in mine)
    summary["baseline_over_ours_quiet_p95"] = round(
        summary["baseline_quiet_dwell_p95_s"] / max(summary["ours_quiet_dwell_p95_s"], 0.01), 1
    )
    summary["targets"] = {
        "quiet_p95_dwell_s": {
            "value": summary["ours_quiet_dwell_p95_s"],
            "target": f"<= {TARGET_P95:g}",
            "met": summary["ours_quiet_dwell_p95_s"] <= TARGET_P95,
        },
        "rate_used": {
            "value": summary["ours_rate_used"],
            "target": f">= {TARGET_RATE_USED:g}",
            "met": summary["ours_rate_used"] >= TARGET_RATE_USED,
        },
    }
    summary["targets_met"] = all(t["met"] for t in summary["targets"].values())
    summary["_rows"] = rows
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="account sends/s (one task)")
    parser.add_argument("--jobs", type=int, default=3000, help="the big partner's backlog")
    parser.add_argument("--seconds", type=float, default=60.0, help="quiet partners enqueue")
    parser.add_argument("--settle", type=float, default=10.0, help="then wait for quiet jobs")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="600 jobs, 15 s, settle 5 s")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.seconds, args.settle = min(args.jobs, 600), min(args.seconds, 15.0), 5.0
    configure_logging("json", "WARNING")
    with local_aws_process():
        summary = asyncio.run(main_async(args))
    print(orjson.dumps(summary).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
