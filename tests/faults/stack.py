"""One fault scenario's world, run as an operator would run sesguard.

Each scenario gets its own AWS stand-in (`python -m sesguard.local.localaws PORT`, a child
process on a free port), one fault proxy per service process (so a fault can hit the
sender or the worker alone), and real `sesguard sender` / `sesguard worker` processes
whose only knowledge of the proxy is `AWS_ENDPOINT_URL`. Resources come from
`sesguard.ops.bootstrap` with the services' own settings, partners and jobs are written
straight to the stand-in, and every observation (queues, DLQs, counters, what SES
accepted, the event objects) is read from the stand-in directly, never through a proxy.

The knobs are scaled down so a fault of a few seconds is a real outage for the services:
the outage tolerance, the visibility timeout and the SDK's own retries (AWS_MAX_ATTEMPTS)
are short, so a fault window outlasts the SDK's retries and the services' own handling
decides what happens to each job.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from sesguard.aws.clients import Clients, open_clients
from sesguard.aws.enqueue import Enqueuer
from sesguard.aws.held import count_held
from sesguard.aws.store import PartnerStore
from sesguard.core.partners import Limits, Profile
from sesguard.local.localaws import FAKE_ENV, free_port
from sesguard.ops.bootstrap import bootstrap
from sesguard.runtime.sqs import queue_depth
from sesguard.settings import Settings
from tests.faults.proxy import FaultProxy

ROOT = Path(__file__).resolve().parents[2]
IDENTITY = "isv.example.com"
PARTNERS = ("alpha", "bravo", "charlie")
SUBJECT = "fault-test "  # + job_id: how a message in SES is traced back to its job
TABLE = "sesguard"
SEND_QUEUE = "sesguard-send-jobs"
EVENTS_QUEUE = "sesguard-ses-events"
POSSIBLY_SENT = "possibly sent"  # the sender's reason for a claim that never finished

# Scaled-down settings every service process of the suite runs with.
KNOBS = {
    "SESGUARD_OUTAGE_TOLERANCE_SECONDS": "120",
    "SESGUARD_VISIBILITY_TIMEOUT": "10",
    "SESGUARD_STOP_GRACE_SECONDS": "5",
    "SESGUARD_GATE_CACHE_SECONDS": "1",
    "SESGUARD_CONCURRENCY": "16",
    "SESGUARD_MAX_SEND_RATE": "40",
    "SESGUARD_SIMULATE_EVENTS": "true",
    "SESGUARD_NOTIFY_FROM": f"guard@{IDENTITY}",
    "SESGUARD_LOG_FORMAT": "json",
    "SESGUARD_LOG_LEVEL": "INFO",
    "AWS_MAX_ATTEMPTS": "2",
}


class ScenarioError(Exception):
    """The scenario could not be driven as planned (a wait ran out, a command failed)."""


def sent_messages(endpoint: str) -> list[dict[str, Any]]:
    """Every message the stand-in's SES accepted (moto's `ses.Message` entries: source,
    destinations, subject, body). One read of the whole state: call it once, at the end.
    Stands in for `sesguard.local.localaws.sent_messages` (issue 10) until that lands."""
    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=60) as resp:
        data = orjson.loads(resp.read())
    return list(data.get("ses", {}).get("Message", []))


def suite_settings() -> Settings:
    """The settings the suite's services read from KNOBS (for bootstrap, in this process:
    the visibility timeout and the redrive policy follow them)."""
    knobs = {k.removeprefix("SESGUARD_").lower(): v for k, v in KNOBS.items()}
    return Settings(**{k: v for k, v in knobs.items() if k in Settings.model_fields})


def sesguard_command() -> list[str]:
    """The `sesguard` console script of this environment, as an operator runs it."""
    script = Path(sys.executable).with_name("sesguard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sesguard.cli"]


def base_env(endpoint: str, **extra: str) -> dict[str, str]:
    """This machine's environment without any AWS or sesguard variable, plus fake
    credentials, the endpoint and the suite's knobs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SESGUARD_"))}
    env.update(FAKE_ENV)
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        PYTHONUNBUFFERED="1",
    )
    env.update(KNOBS)
    env.update(extra)
    return env


async def wait_until(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    seconds: float,
    what: str,
    every: float = 0.1,
) -> None:
    """Poll a condition until it holds; ScenarioError naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise ScenarioError(f"timed out after {seconds:g}s waiting for {what}")
        await asyncio.sleep(every)


# ---- processes ------------------------------------------------------------------------


@dataclass
class Service:
    """One `sesguard <command>` process, restartable; output appended to `log`."""

    command: list[str]
    env: dict[str, str]
    log: Path
    proc: asyncio.subprocess.Process | None = None
    exits: list[int] = field(default_factory=list)  # every exit code, in order

    async def start(self) -> None:
        assert self.proc is None or self.proc.returncode is not None, "already running"
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command, env=self.env, cwd=ROOT, stdout=out, stderr=out
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def signal(self, sig: signal.Signals, grace: float = 60.0) -> int:
        """Send `sig` and wait for the exit; SIGKILL if it outlives `grace` seconds."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                self.proc.send_signal(signal.SIGUSR1)  # log where every task waits
                await asyncio.sleep(1.0)
                self.proc.kill()
                await self.proc.wait()
                self.exits.append(-999)  # did not stop in time: never a pass
                return -999
        code = int(self.proc.returncode or 0)
        self.exits.append(code)
        return code

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def digest(self, notable: int = 60, last: int = 8) -> str:
        """What a failure report needs from the log: its last `notable` lines that are
        not routine (warnings, errors, state changes, counters, task stacks), then its
        last `last` lines. Routine lines (one per message or object) are left out."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        picked = [line for line in lines[:-last] if not _routine(line)][-notable:]
        return "\n".join([*picked, "[...last lines]", *lines[-last:]])


ROUTINE_EVENTS = frozenset(
    {"job", "message", "visibility_extended", "object_processed", "object_counted_before"}
)


def _routine(line: str) -> bool:
    """An info line about one message, object or renewal (or a metrics line)."""
    try:
        rec = json.loads(line)
    except ValueError:
        return False  # not JSON: a traceback, a crash: never routine
    if not isinstance(rec, dict):
        return False
    if "_aws" in rec:
        return True  # an EMF metrics line
    return rec.get("level") == "info" and rec.get("event") in ROUTINE_EVENTS


async def start_stand_in(
    log: Path, attempts: int = 3, *, ses_events: str | None = None
) -> tuple[asyncio.subprocess.Process, str]:
    """`python -m sesguard.local.localaws PORT` on a free port; retried if the port was taken.
    With `ses_events` (a Firehose stream), its SES publishes its own events."""
    extra = ("--ses-events", ses_events) if ses_events else ()
    for _ in range(attempts):
        port = free_port()
        with log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "sesguard.local.localaws", str(port), *extra),
                cwd=ROOT,
                stdout=out,
                stderr=out,
            )
        endpoint = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 60
            while proc.returncode is None and time.monotonic() < deadline:
                try:
                    async with http.get(f"{endpoint}/moto-api/data.json") as r:
                        if r.status == 200:
                            return proc, endpoint
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    raise ScenarioError(f"the AWS stand-in did not start (log: {log})")


# ---- the stack ------------------------------------------------------------------------


@dataclass
class Outcome:
    """What happened to every job and event, read from the stand-in after the run."""

    jobs: list[str]
    ses_count: Counter[str]  # job_id -> messages SES accepted for it
    dlq: dict[str, str | None]  # job_id -> sesguard_reason (None: SQS redrive)
    events_dlq: int
    held: int
    counted: dict[str, tuple[int, int]]  # partner -> (sent, delivered) in its counters
    published: dict[str, tuple[int, int]]  # partner -> (sent, delivered) in event objects

    @property
    def sent_once(self) -> int:
        return sum(1 for j in self.jobs if self.ses_count[j] == 1)

    @property
    def duplicates(self) -> int:
        return sum(1 for j in self.jobs if self.ses_count[j] > 1)

    @property
    def possibly_sent(self) -> list[str]:
        return [j for j, r in self.dlq.items() if r and r.startswith(POSSIBLY_SENT)]

    @property
    def dead_lettered(self) -> dict[str, str | None]:
        """Dead-lettered for anything but "possibly sent" (no job here is malformed or
        rejected, so each of these is a transient fault that cost a job)."""
        return {j: r for j, r in self.dlq.items() if not (r and r.startswith(POSSIBLY_SENT))}

    @property
    def lost(self) -> list[str]:
        return [j for j in self.jobs if self.ses_count[j] == 0 and j not in self.dlq]

    @property
    def counts_exact(self) -> bool:
        return self.counted == self.published


class Stack:
    """A scenario's stand-in, proxies, processes and read-only view of the stand-in."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        overrides: dict[str, str] | None = None,
        *,
        ses_publishes: bool = False,
    ) -> None:
        """`ses_publishes`: the stand-in's SES publishes the events for every message it
        accepts, as SES does, instead of the sender's simulator (which publishes only
        for the sends it heard succeed)."""
        self.name = name
        self.dir = workdir
        self.ses_publishes = ses_publishes
        self.overrides = dict(overrides or {})
        if ses_publishes:
            self.overrides["SESGUARD_SIMULATE_EVENTS"] = "false"
            self.overrides["SESGUARD_COUNT_SIMULATOR_MAIL"] = "true"  # counted as before
        self.dir.mkdir(parents=True, exist_ok=True)
        self.endpoint = ""
        self.proxies: dict[str, FaultProxy] = {}
        self.services: dict[str, Service] = {}
        self._stand_in: asyncio.subprocess.Process | None = None
        self._stack = AsyncExitStack()
        self.clients: Clients
        self.sqs: Any = None
        self.ddb: Any = None
        self.s3: Any = None
        self.urls: dict[str, str] = {}

    async def __aenter__(self) -> Stack:
        self._stand_in, self.endpoint = await start_stand_in(
            self.dir / "stand-in.log",
            ses_events=suite_settings().firehose_stream if self.ses_publishes else None,
        )
        for name in ("sender", "worker"):
            proxy = FaultProxy(self.endpoint, name)
            await self._stack.enter_async_context(proxy)
            self.proxies[name] = proxy
        # The stack's own reads and setup go straight to the stand-in, never through a proxy.
        self.clients = await self._stack.enter_async_context(
            open_clients(max_attempts=3, endpoint_url=self.endpoint)
        )
        self.sqs, self.ddb, self.s3 = self.clients.sqs, self.clients.dynamodb, self.clients.s3
        return self

    async def __aexit__(self, *exc: object) -> None:
        for service in self.services.values():
            if service.running:
                assert service.proc is not None
                service.proc.kill()
                await service.proc.wait()
        await self._stack.aclose()
        if self._stand_in is not None and self._stand_in.returncode is None:
            self._stand_in.terminate()
            try:
                await asyncio.wait_for(self._stand_in.wait(), 10)
            except TimeoutError:
                self._stand_in.kill()
                await self._stand_in.wait()

    # ---- setting up, as an operator would ------------------------------------------------

    async def prepare(self, jobs: int) -> list[str]:
        """bootstrap (with the services' settings) and the partners; the ids of `jobs`
        send jobs to enqueue (`enqueue`)."""
        await bootstrap(self.clients, suite_settings(), [IDENTITY])
        for queue in (SEND_QUEUE, EVENTS_QUEUE):
            for name in (queue, f"{queue}-dlq"):
                self.urls[name] = (await self.sqs.get_queue_url(QueueName=name))["QueueUrl"]
        store = PartnerStore(self.ddb, TABLE)
        for partner in PARTNERS:
            await store.create(Profile(partner, f"ops@{partner}.example.org", Limits()))
        return [f"{PARTNERS[i % len(PARTNERS)]}-{i:04d}" for i in range(jobs)]

    async def enqueue(self, ids: list[str]) -> None:
        """Send jobs with these ids (partner: the id's prefix; the id in the subject)."""
        await Enqueuer(self.sqs, self.urls[SEND_QUEUE]).send(
            [
                {
                    "job_id": job_id,
                    "partner_id": job_id.split("-")[0],
                    "from": f"news@{IDENTITY}",
                    "to": [f"success+{job_id}@simulator.amazonses.com"],
                    "subject": SUBJECT + job_id,
                    "text": "Hello from the fault suite.",
                }
                for job_id in ids
            ]
        )

    def service(self, command: str) -> Service:
        """The `sesguard sender` or `sesguard worker` process, behind its own proxy."""
        if command not in self.services:
            env = base_env(
                self.proxies[command].endpoint,
                SESGUARD_HEARTBEAT_FILE=str(self.dir / f"{command}.heartbeat"),
                **self.overrides,
            )
            self.services[command] = Service(
                [*sesguard_command(), command], env, self.dir / f"{command}.log"
            )
        return self.services[command]

    # ---- watching ----------------------------------------------------------------------

    def sends(self) -> int:
        """SendEmail calls SES answered with success, as the sender's proxy saw them."""
        return self.proxies["sender"].count("sesv2", "SendEmail", ok=True)

    def transactions(self) -> int:
        """TransactWriteItems the worker got an answer to (one per counted object)."""
        return self.proxies["worker"].count("dynamodb", "TransactWriteItems", ok=True)

    async def quiet(self) -> bool:
        """Both work queues empty and no request on its way to the stand-in."""
        return (
            not any(p.busy() for p in self.proxies.values())
            and (await queue_depth(self.sqs, self.urls[SEND_QUEUE])).empty
            and (await queue_depth(self.sqs, self.urls[EVENTS_QUEUE])).empty
        )

    async def settle(self, seconds: float) -> float | None:
        """Wait until everything is done: quiet twice, a second apart (the sender deletes
        a job around the time it publishes its events). The time it was done, or None."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if await self.quiet():
                done_at = time.monotonic()
                await asyncio.sleep(1.0)
                if await self.quiet():
                    return done_at
            await asyncio.sleep(0.5)
        return None

    # ---- the outcome -------------------------------------------------------------------

    async def drain(self, queue: str) -> list[tuple[str, str | None]]:
        """Every message of a queue (body, sesguard_reason), deleted as read."""
        out: list[tuple[str, str | None]] = []
        url = self.urls[queue]
        while msgs := (
            await self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            )
        ).get("Messages", []):
            for m in msgs:
                reason = m.get("MessageAttributes", {}).get("sesguard_reason", {})
                out.append((m["Body"], reason.get("StringValue")))
            await self.sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)
                ],
            )
        return out

    async def published(self) -> dict[str, tuple[int, int]]:
        """Send and Delivery recipients per partner in the event objects in S3 (what the
        worker must have counted, exactly once), read without sesguard's parser."""
        bucket = (await self.s3.list_buckets())["Buckets"][0]["Name"]
        sent: Counter[str] = Counter()
        delivered: Counter[str] = Counter()
        paginator = self.s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                if obj["Key"].startswith("errors/"):
                    continue
                data = await (await self.s3.get_object(Bucket=bucket, Key=obj["Key"]))[
                    "Body"
                ].read()
                if data[:2] == b"\x1f\x8b":
                    data = gzip.decompress(data)
                for line in data.splitlines():
                    if not line.strip():
                        continue
                    record = orjson.loads(line)
                    tags = record["mail"].get("tags", {})
                    partner = (tags.get("partner_id") or ["_unattributed"])[0]
                    if record["eventType"] == "Send":
                        sent[partner] += len(record["mail"]["destination"])
                    elif record["eventType"] == "Delivery":
                        delivered[partner] += len(record["delivery"]["recipients"])
        return {p: (sent[p], delivered[p]) for p in sorted(set(sent) | set(delivered))}

    async def outcome(
        self, jobs: list[str], mark: Callable[[str], None] = lambda _: None
    ) -> Outcome:
        messages = await asyncio.to_thread(sent_messages, self.endpoint)
        mark("read SES")
        ses_count: Counter[str] = Counter(
            str(m.get("subject", "")).removeprefix(SUBJECT)
            for m in messages
            if str(m.get("subject", "")).startswith(SUBJECT)
        )
        dlq = {}
        for body, reason in await self.drain(f"{SEND_QUEUE}-dlq"):
            try:
                dlq[str(orjson.loads(body)["job_id"])] = reason
            except (orjson.JSONDecodeError, KeyError, TypeError):
                dlq[body[:60]] = reason
        events_dlq = len(await self.drain(f"{EVENTS_QUEUE}-dlq"))
        mark("read DLQs")
        store = PartnerStore(self.ddb, TABLE)
        counted: dict[str, tuple[int, int]] = {}
        held_jobs = 0
        for partner in PARTNERS:
            totals = (await store.get_state(partner)).totals
            if totals.sent or totals.delivered:
                counted[partner] = (totals.sent, totals.delivered)
            held_jobs += await count_held(self.ddb, TABLE, partner)
        mark("read counters")
        return Outcome(
            jobs=jobs,
            ses_count=ses_count,
            dlq=dlq,
            events_dlq=events_dlq,
            held=held_jobs,
            counted=counted,
            published=await self.published(),
        )
