"""Benchmark of recovery from an SES outage: ours against a naive consumer, in one run.

    python bench/recovery.py [--jobs 200] [--outage 30] [--partners 3]

Standalone: starts its own stand-in (sesguard.local.localaws, a child process on a free port),
fake credentials, bootstrap and partners, and the fault proxy of the test suite
(tests/faults/proxy.py) between the consumers and the stand-in. Then, for each consumer,
the same N jobs (new job ids): a tenth is enqueued and the consumer starts; once those are
sent, SES answers every SendEmail with 503 for --outage seconds and the other nine tenths
are enqueued, so that every one of them meets the outage. Measured:

- recovery: the time from the end of the outage to an empty send queue (nothing visible,
  in flight or delayed), by polling the queue's counts every 0.1 s;
- dead-lettered: jobs in the DLQ afterwards (goal for ours: 0);
- sent: SendEmail calls SES accepted (the proxy counts them).

The consumers:

  naive  written here: receive one message, SendEmail, delete it; on an error leave it
         for the queue's visibility timeout (the redrive policy dead-letters it after
         maxReceiveCount receives); one job at a time;
  ours   `sesguard sender`, a real process pointed at the proxy (AWS_ENDPOINT_URL).

Both use the queue bootstrap made (visibility timeout and redrive policy from the
settings) and the same SDK configuration (AWS_MAX_ATTEMPTS as in the environment, or
--sdk-max-attempts). Prints a table, then as the last line one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Settings before any import reads them; AWS endpoint and fake credentials come from
# sesguard.local.localaws when the stand-in starts.
os.environ.update(SESGUARD_NOTIFY_FROM="guard@isv.example.com", SESGUARD_LOG_LEVEL="WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from sesguard.aws.clients import Clients, open_clients
from sesguard.aws.enqueue import Enqueuer
from sesguard.aws.store import PartnerStore
from sesguard.core.jobs import parse_job
from sesguard.core.partners import Limits, Profile
from sesguard.local.localaws import local_aws_process
from sesguard.logging import configure_logging
from sesguard.ops.bootstrap import bootstrap
from sesguard.ops.report import render_table
from sesguard.runtime.sqs import queue_depth
from sesguard.settings import Settings, load_settings
from tests.faults.proxy import Error, FaultProxy, error

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "isv.example.com"
POLL = 0.1


@dataclass
class Measured:
    name: str
    jobs: int
    outage: float
    recovery: float | None  # seconds from the end of the outage to an empty queue
    dead_lettered: int  # filled in once the consumer stopped
    sent: int
    faulted_calls: int  # SendEmail calls answered 503 during the outage

    def row(self) -> list[str]:
        return [
            self.name,
            str(self.jobs),
            f"{self.outage:g}",
            "not empty" if self.recovery is None else f"{self.recovery:.1f}",
            str(self.dead_lettered),
            str(self.sent),
            str(self.faulted_calls),
        ]


def make_jobs(n: int, partners: list[str], run: str) -> list[dict[str, Any]]:
    return [
        {
            "job_id": f"{run}-{i:05d}",
            "partner_id": partners[i % len(partners)],
            "from": f"news@{DOMAIN}",
            "to": [f"customer{i}@example.org"],
            "subject": f"Your order {i} has shipped",
            "text": "Hello,\n\nyour order is on its way.\n",
        }
        for i in range(n)
    ]


async def depth(sqs: Any, url: str) -> int:
    """Messages in the queue: visible, in flight and delayed."""
    d = await queue_depth(sqs, url)
    return d.visible + d.in_flight + d.delayed


async def naive_consumer(clients: Clients, url: str, settings: Settings) -> None:
    """Receive one, send it, delete it; on an error leave it for the visibility timeout."""
    while True:
        messages = (
            await clients.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=1
            )
        ).get("Messages", [])
        if not messages:
            continue
        msg = messages[0]
        job = parse_job(msg["Body"])
        try:
            await clients.sesv2.send_email(
                FromEmailAddress=job.from_,
                Destination={"ToAddresses": list(job.to)},
                Content={
                    "Simple": {
                        "Subject": {"Data": job.subject},
                        "Body": {"Text": {"Data": job.text or ""}},
                    }
                },
                EmailTags=[{"Name": "partner_id", "Value": job.partner_id}],
                ConfigurationSetName=settings.configuration_set,
            )
        except Exception:  # what a naive consumer does: try again after the visibility timeout
            continue
        await clients.sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])


async def ours(
    proxy_endpoint: str, log: Path
) -> tuple[Callable[[], Awaitable[int]], Callable[[], bool]]:
    """Start `sesguard sender` against the proxy; returns its stop (SIGTERM, exit code)
    and whether it has exited."""
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy_endpoint, "SESGUARD_LOG_LEVEL": "INFO"}
    script = Path(sys.executable).with_name("sesguard")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "sesguard.cli"]
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *command, "sender", env=env, cwd=ROOT, stdout=out, stderr=out
        )

    async def stop() -> int:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        return await proc.wait()

    return stop, lambda: proc.returncode is not None


async def measure(
    name: str,
    clients: Clients,
    proxy: FaultProxy,
    settings: Settings,
    partners: list[str],
    args: argparse.Namespace,
    log: Path,
) -> Measured:
    sqs = clients.sqs
    url = (await sqs.get_queue_url(QueueName=settings.send_queue))["QueueUrl"]
    dlq = (await sqs.get_queue_url(QueueName=f"{settings.send_queue}-dlq"))["QueueUrl"]
    dlq_before = await depth(sqs, dlq)
    sent_before = proxy.count("sesv2", "SendEmail", ok=True)
    jobs = make_jobs(args.jobs, partners, name.split(maxsplit=1)[0])
    lead = max(1, args.jobs // 10)  # sent before the outage; the rest meet it
    enqueuer = await Enqueuer.for_queue(sqs, settings.send_queue)
    await enqueuer.send(jobs[:lead])

    def sent() -> int:
        return proxy.count("sesv2", "SendEmail", ok=True) - sent_before

    async def rest() -> None:
        await enqueuer.send(jobs[lead:])

    if name == "naive":
        async with open_clients(4) as own:  # the naive consumer's own clients
            task = asyncio.create_task(naive_consumer(own, url, settings))
            result = await run_outage(name, sqs, url, proxy, args, lead, sent, rest, task.done)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    else:
        stop, exited = await ours(proxy.endpoint, log)
        try:
            result = await run_outage(name, sqs, url, proxy, args, lead, sent, rest, exited)
        finally:
            code = await stop()
        if code != 0:
            raise SystemExit(f"sesguard sender exited {code} (log: {log})")
    result.dead_lettered = await depth(sqs, dlq) - dlq_before
    if result.recovery is not None and result.sent + result.dead_lettered != args.jobs:
        raise SystemExit(f"{name}: {result.sent} sent + {result.dead_lettered} dead-lettered")
    return result


async def run_outage(
    name: str,
    sqs: Any,
    url: str,
    proxy: FaultProxy,
    args: argparse.Namespace,
    lead: int,
    sent: Callable[[], int],
    rest: Callable[[], Awaitable[None]],
    died: Callable[[], bool],
) -> Measured:
    """Once the `lead` jobs are sent, SES fails for the outage and the `rest` of the jobs
    are enqueued (so every one of them meets it); then time until the queue is empty."""
    while sent() < lead:
        if died():
            raise SystemExit(f"{name} stopped before the outage")
        await asyncio.sleep(POLL)
    injection = proxy.inject(error("sesv2", Error.UNAVAILABLE, "SendEmail"), args.outage)
    await rest()
    await injection.ended.wait()
    end = time.monotonic()
    recovery = None
    while time.monotonic() - end < args.max_wait:
        if await depth(sqs, url) == 0:
            recovery = time.monotonic() - end
            break
        await asyncio.sleep(POLL)
    return Measured(name, args.jobs, args.outage, recovery, 0, sent(), injection.hits)


async def max_receives(sqs: Any, queue: str) -> int | None:
    """maxReceiveCount of the queue's redrive policy (what bootstrap derived)."""
    url = (await sqs.get_queue_url(QueueName=queue))["QueueUrl"]
    attrs = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"]))[
        "Attributes"
    ]
    policy = orjson.loads(attrs.get("RedrivePolicy", "{}"))
    return int(policy["maxReceiveCount"]) if "maxReceiveCount" in policy else None


async def main_async(args: argparse.Namespace, endpoint: str) -> list[Measured]:
    settings = load_settings()
    partners = [f"partner-{p:02d}" for p in range(args.partners)]
    log = Path(args.log)
    async with FaultProxy(endpoint) as proxy:
        os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint  # every client of this run: via it
        async with open_clients(8) as clients:
            return await both(clients, proxy, settings, partners, args, log)


async def both(
    clients: Clients,
    proxy: FaultProxy,
    settings: Settings,
    partners: list[str],
    args: argparse.Namespace,
    log: Path,
) -> list[Measured]:
    """Bootstrap and partners, then each consumer through the same outage."""
    await bootstrap(clients, settings, [DOMAIN])
    args.max_receive_count = await max_receives(clients.sqs, settings.send_queue)
    store = PartnerStore.from_settings(clients.dynamodb, settings)
    for pid in partners:
        await store.create(Profile(pid, f"ops@{pid}.example.org", Limits()))
    return [
        await measure(name, clients, proxy, settings, partners, args, log)
        for name in ("naive", "sesguard sender")
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs per consumer (default 200)")
    parser.add_argument("--partners", type=int, default=3)
    parser.add_argument("--outage", type=float, default=30.0, help="seconds of SES 503")
    parser.add_argument(
        "--max-wait", type=float, default=600.0, help="most seconds to wait for an empty queue"
    )
    parser.add_argument(
        "--visibility", type=int, default=None, help="SESGUARD_VISIBILITY_TIMEOUT for bootstrap"
    )
    parser.add_argument(
        "--max-send-rate", type=float, default=200.0, help="SESGUARD_MAX_SEND_RATE (default 200)"
    )
    parser.add_argument(
        "--sdk-max-attempts", type=int, default=None, help="AWS_MAX_ATTEMPTS for both consumers"
    )
    parser.add_argument(
        "--log", default=".sesguard-bench-recovery.log", help="the sender's log file"
    )
    args = parser.parse_args()
    if args.jobs < 10 or args.outage <= 0:
        parser.error("--jobs must be >= 10 and --outage > 0")
    os.environ["SESGUARD_MAX_SEND_RATE"] = str(args.max_send_rate)
    if args.visibility is not None:
        os.environ["SESGUARD_VISIBILITY_TIMEOUT"] = str(args.visibility)
    if args.sdk_max_attempts is not None:
        os.environ["AWS_MAX_ATTEMPTS"] = str(args.sdk_max_attempts)
    configure_logging("json", "WARNING", stream=sys.stderr)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    Path(args.log).write_bytes(b"")
    with local_aws_process() as endpoint:
        results = asyncio.run(main_async(args, endpoint))
    naive, mine = results
    print(f"bench/recovery.py  ({args.jobs} jobs each, SES SendEmail 503 for {args.outage:g} s)")
    headers = ["consumer", "jobs", "outage s", "recovery s", "dead-lettered", "sent", "503s"]
    print(render_table(headers, [r.row() for r in results]))
    summary: dict[str, Any] = {
        "benchmark": "recovery",
        "jobs": args.jobs,
        "outage_seconds": args.outage,
        "visibility_timeout": load_settings().visibility_timeout,
        "max_receive_count": args.max_receive_count,
        "aws_max_attempts": os.environ.get("AWS_MAX_ATTEMPTS", "sdk default"),
        "naive_recovery_seconds": _round(naive.recovery),
        "ours_recovery_seconds": _round(mine.recovery),
        "naive_dead_lettered": naive.dead_lettered,
        "ours_dead_lettered": mine.dead_lettered,
        "naive_sent": naive.sent,
        "ours_sent": mine.sent,
        "naive_ses_calls_in_outage": naive.faulted_calls,
        "ours_ses_calls_in_outage": mine.faulted_calls,
        "recovery_speedup": (
            round(naive.recovery / mine.recovery, 2)
            if naive.recovery is not None and mine.recovery
            else None
        ),
        "goal_ours_dead_lettered": 0,
        "goal_met": mine.dead_lettered == 0 and mine.recovery is not None,
    }
    print(orjson.dumps(summary).decode())
    return 0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


if __name__ == "__main__":
    sys.exit(main())
