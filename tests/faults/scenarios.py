"""The fault scenarios, their runner and the results table.

Each scenario starts real `sesguard worker` and `sesguard sender` processes on its own
stack (tests/faults/stack.py). A fault scenario lets the first jobs through, starts its
fault through a proxy and only then enqueues the jobs that are to meet it (so that they
meet it on any machine, however fast or loaded); a kill scenario kills a process at set
points of the run. Then it waits until the services have recovered by themselves (both
work queues empty, nothing on its way), stops them with SIGTERM, and reads what every job
became from the stand-in.

Invariants, for every scenario (tests/faults/test_scenarios.py):
- nothing sent twice: at most one SES message per job id;
- nothing lost: every job was sent, or held, or dead-lettered for a permanent reason;
- nothing dead-lettered for a transient fault: the only reason allowed is "possibly
  sent", and only where a process was killed or a response lost mid-send;
- nothing counted twice or missed: each partner's counters equal the Send and Delivery
  recipients in the event objects in S3;
- the services recover by themselves, and stop with exit code 0 on SIGTERM;
- a fault met at least one request (a run that tested nothing fails), and where a
  scenario says so, the faulted calls stay under a bound (no churning through the queue).
"""

from __future__ import annotations

import asyncio
import signal
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.proxy import Error, Fault, Injection, error, latency, not_implemented, reset
from tests.faults.stack import Outcome, ScenarioError, Stack, wait_until

SETTLE_SECONDS = 240.0  # after the fault: generous; a run that needs it has a bug
WAIT_SECONDS = 180.0  # for a scenario's own milestones (first sends, a kill point)
SCENARIO_SECONDS = 600.0  # the whole scenario, setup and reading included


@dataclass
class Run:
    """What a scenario's driver records while it runs."""

    jobs: int
    ids: list[str] = field(default_factory=list)  # the job ids, in enqueue order
    fault_start: float | None = None
    fault_end: float | None = None
    injections: list[Injection] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # scenario-specific failures


Drive = Callable[[Stack, Run], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    key: str  # the test id
    fault: str  # the table's first column
    jobs: int
    drive: Drive
    possibly_sent_ok: bool = False  # a kill or a lost answer mid-send may leave these
    env: tuple[tuple[str, str], ...] = ()  # settings of this scenario's services
    ses_publishes: bool = False  # SES publishes its own events (stack.Stack), not the sender


@dataclass
class Result:
    scenario: Scenario
    outcome: Outcome | None = None
    recovery: float | None = None  # seconds from the end of the fault to all done
    exits: dict[str, list[int]] = field(default_factory=dict)
    fault_hits: int | None = None  # requests the proxy faulted (None: no proxy fault)
    problems: list[str] = field(default_factory=list)
    error: str | None = None
    timeline: dict[str, float] = field(default_factory=dict)  # phase -> seconds from start
    workdir: Path | None = None
    logs: dict[str, str] = field(default_factory=dict)

    def failures(self) -> list[str]:
        """Every invariant this run broke (empty: it passed)."""
        if self.error:
            return [self.error]
        o = self.outcome
        assert o is not None
        out = list(self.problems)
        if o.duplicates:
            dup = [j for j in o.jobs if o.ses_count[j] > 1]
            out.append(f"{o.duplicates} jobs sent more than once: {dup[:10]}")
        if o.lost:
            out.append(f"{len(o.lost)} jobs lost (not sent, held or dead-lettered): {o.lost[:10]}")
        if o.dead_lettered:
            sample = dict(list(o.dead_lettered.items())[:5])
            out.append(f"{len(o.dead_lettered)} jobs dead-lettered for a transient fault: {sample}")
        if o.possibly_sent and not self.scenario.possibly_sent_ok:
            out.append(f"{len(o.possibly_sent)} jobs dead-lettered as possibly sent")
        if o.events_dlq:
            out.append(f"{o.events_dlq} event notifications dead-lettered")
        if not o.counts_exact:
            out.append(f"counters {o.counted} != events published {o.published}")
        if o.held:
            out.append(f"{o.held} jobs held (no partner was paused)")
        if self.recovery is None:
            out.append("did not recover: work left in the queues after the settle time")
        for name, codes in self.exits.items():
            if not codes or codes[-1] != 0:
                out.append(f"{name} exit codes {codes}: the last stop (SIGTERM) must exit 0")
        return out

    def row(self) -> list[str]:
        o = self.outcome
        verdict = "FAIL" if self.failures() else "pass"
        if o is None:
            return [self.scenario.fault, str(self.scenario.jobs), *["-"] * 8, verdict]
        sent_possibly = sum(1 for j in o.possibly_sent if o.ses_count[j] == 1)
        return [
            self.scenario.fault,
            str(len(o.jobs)),
            str(o.sent_once),
            str(o.duplicates),
            str(len(o.dead_lettered)),
            f"{len(o.possibly_sent)} ({sent_possibly} sent)" if o.possibly_sent else "0",
            str(len(o.lost)),
            "exact" if o.counts_exact else "WRONG",
            "-" if self.fault_hits is None else str(self.fault_hits),
            "no" if self.recovery is None else f"{self.recovery:.1f} s",
            verdict,
        ]


HEADERS = [
    "fault",
    "jobs",
    "sent once",
    "duplicates",
    "dead-lettered",
    "possibly sent",
    "lost",
    "counts",
    "faulted calls",
    "recovered after",
    "",
]


def table(results: list[Result]) -> str:
    """The results as a Markdown table (docs/testing.md carries it)."""
    rows = [HEADERS, ["---"] * len(HEADERS), *[r.row() for r in results]]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in rows)


# ---- drivers --------------------------------------------------------------------------


async def start(st: Stack, run: Run, jobs: list[str] | None = None) -> None:
    """Enqueue `jobs` (default: all of them) and start the worker and the sender."""
    await st.enqueue(run.ids if jobs is None else jobs)
    await st.service("worker").start()
    await st.service("sender").start()


def window(
    *faults: tuple[str, Fault],
    seconds: float = 5.0,
    then: tuple[tuple[str, Fault], ...] = (),
    meets: int = 16,
    max_calls_per_job: float | None = None,
) -> Drive:
    """The jobs but the last `meets` go through first (sent, or counted when a fault is the
    worker's); then `faults` (proxy name, fault) start, the last `meets` jobs are enqueued,
    so every one of them meets the fault, which lasts `seconds`, followed by the `then`
    faults for as long again. 16 (one concurrency's worth) is a short queue, as an outage
    meets at a quiet hour, where each job is retried the most. With `max_calls_per_job`,
    the faulted calls may number at most that many per job met (no churning through the
    queue while the dependency is down)."""

    async def drive(st: Stack, run: Run) -> None:
        lead = run.ids[: run.jobs - meets]
        await start(st, run, lead)
        if any(proxy == "worker" for proxy, _ in faults):
            await wait_until(lambda: st.transactions() >= len(lead), WAIT_SECONDS, "counted")
        else:
            await wait_until(lambda: st.sends() >= len(lead), WAIT_SECONDS, "the first jobs")
        run.fault_start = time.monotonic()
        for n, phase in enumerate((faults, then)):
            if not phase:
                continue
            injections = [st.proxies[proxy].inject(f, seconds) for proxy, f in phase]
            run.injections += injections
            if n == 0:
                await st.enqueue(run.ids[len(lead) :])
            await injections[0].ended.wait()
        run.fault_end = time.monotonic()
        hits = sum(i.hits for i in run.injections)
        if max_calls_per_job is not None and hits > max_calls_per_job * meets:
            run.problems.append(
                f"{hits} faulted calls during the outage for {meets} jobs: the service"
                " churned through the queue instead of waiting for the dependency"
            )

    return drive


def limited(proxy: str, fault: Fault, count: int) -> Drive:
    """Apply `fault` to the next `count` matching requests, made by the last 16 jobs."""

    async def drive(st: Stack, run: Run) -> None:
        lead = run.ids[: run.jobs - 16]
        await start(st, run, lead)
        await wait_until(lambda: st.sends() >= len(lead), WAIT_SECONDS, "the first jobs")
        run.fault_start = time.monotonic()
        injection = st.proxies[proxy].inject(fault, limit=count)
        run.injections.append(injection)
        await st.enqueue(run.ids[len(lead) :])
        await wait_until(lambda: injection.hits >= count, WAIT_SECONDS, f"{count} faulted calls")
        run.fault_end = time.monotonic()

    return drive


def restart_sender(sig: signal.Signals, times: int) -> Drive:
    """Stop the sender with `sig` `times` over the run, restarting it each time."""

    async def drive(st: Stack, run: Run) -> None:
        await start(st, run)
        sender = st.service("sender")
        for k in range(1, times + 1):
            target = k * run.jobs // (times + 2)
            await wait_until(lambda t=target: st.sends() >= t, WAIT_SECONDS, f"stop {k}")
            code = await sender.signal(sig)
            if sig is signal.SIGTERM and code != 0:
                run.problems.append(f"sender exited {code} on SIGTERM mid-run")
            await sender.start()
        run.fault_end = time.monotonic()

    return drive


def kill_worker(times: int) -> Drive:
    async def drive(st: Stack, run: Run) -> None:
        await start(st, run)
        worker = st.service("worker")
        for k in range(1, times + 1):
            target = k * run.jobs // (times + 2)
            await wait_until(lambda t=target: st.transactions() >= t, WAIT_SECONDS, f"kill {k}")
            await worker.signal(signal.SIGKILL)
            await worker.start()
        run.fault_end = time.monotonic()

    return drive


async def kill_worker_mid_transaction(st: Stack, run: Run) -> None:
    """SIGKILL the worker twice while an object's counting transaction is on its way:
    once after the stand-in committed it (the answer held back), once before (the
    proxy holds the request and commits it after the worker is dead)."""
    await start(st, run)
    worker, proxy = st.service("worker"), st.proxies["worker"]
    for k, after in enumerate((True, False), start=1):
        target = k * run.jobs // 4
        await wait_until(lambda t=target: st.transactions() >= t, WAIT_SECONDS, f"kill {k}")
        held = latency("dynamodb", "TransactWriteItems", seconds=3.0, after_upstream=after)
        injection = proxy.inject(held, limit=1)
        run.injections.append(injection)
        await wait_until(
            lambda i=injection, a=after: (i.forwarded if a else i.hits) >= 1,  # type: ignore[misc]
            WAIT_SECONDS,
            "a transaction in flight",
            every=0.01,
        )
        await worker.signal(signal.SIGKILL)
        await worker.start()
    run.fault_end = time.monotonic()


S, W = "sender", "worker"
# The bounds on faulted calls in the SES outages: SendEmail is one HTTP call (the SDK
# never retries it, sesguard.aws.clients), so a breaker that waits the outage out costs the jobs
# in hand one failed call each (at most 16, the concurrency) plus one trial per probe
# that answers (GetAccount does; the probes back off from 1 s: about 5 in 40 s, 4 in
# 20 s): about 21, against a bound of 32 in both. Trying every job of the queue again
# costs one call per job each time round: 16 or 64 more.
# Kills land mid-run on any machine: the jobs trickle out for several seconds.
SLOW_SENDS = (("SESGUARD_MAX_SEND_RATE", "15"),)
SCENARIOS = [  # longest first: they start first when run concurrently
    Scenario(
        "ses-outage-long",
        "SES SendEmail answers 503 for 40 s (the 2-minute outage, scaled), last 16 jobs",
        40,
        window(
            (S, error("sesv2", Error.UNAVAILABLE, "SendEmail")),
            seconds=40.0,
            max_calls_per_job=2.0,
        ),
    ),
    Scenario(
        "ses-outage-backlog",
        "SES SendEmail answers 503 for 20 s over a backlog of 64 jobs",
        80,
        window(
            (S, error("sesv2", Error.UNAVAILABLE, "SendEmail")),
            seconds=20.0,
            meets=64,
            max_calls_per_job=0.5,
        ),
    ),
    Scenario(
        "ddb-500-sender",
        "DynamoDB answers 500 to the sender for 30 s, last 16 jobs",
        40,
        window((S, error("dynamodb", Error.INTERNAL)), seconds=30.0),
    ),
    Scenario(
        "sender-sigkill",
        "sender SIGKILL mid-run, twice",
        80,
        restart_sender(signal.SIGKILL, 2),
        # The claims the kills leave settle in the send queue (sender/settle.py): from SES's
        # events (published by SES itself, as on AWS, whatever became of the sender), or
        # re-sent after the (scaled) settle time. None should reach the DLQ.
        env=(*SLOW_SENDS, ("SESGUARD_DLQ_SETTLE_SECONDS", "30")),
        ses_publishes=True,
    ),
    Scenario(
        "worker-sigkill-mid-transaction",
        "worker SIGKILL mid-transaction (after, then before the commit)",
        40,
        kill_worker_mid_transaction,
        env=SLOW_SENDS,
    ),
    Scenario(
        "worker-sigkill", "worker SIGKILL 4 times mid-run", 80, kill_worker(4), env=SLOW_SENDS
    ),
    Scenario(
        "sender-sigterm",
        "sender SIGTERM mid-run, twice",
        80,
        restart_sender(signal.SIGTERM, 2),
        env=SLOW_SENDS,
    ),
    Scenario(
        "ses-429",
        "SES SendEmail answers 429 throttling for 10 s",
        40,
        window((S, error("sesv2", Error.THROTTLING, "SendEmail")), seconds=10.0),
    ),
    Scenario(
        "ses-501",
        "SES answers 501 not implemented (as LocalStack) for 10 s",
        40,
        window((S, not_implemented("sesv2")), seconds=10.0),
    ),
    Scenario(
        "ddb-throttling-sender",
        "DynamoDB throttles the sender for 5 s",
        40,
        window((S, error("dynamodb", Error.THROTTLING))),
    ),
    Scenario(
        "ddb-worker",
        "DynamoDB answers 500, then throttles, the worker (4 s each)",
        40,
        window(
            (W, error("dynamodb", Error.INTERNAL)),
            then=((W, error("dynamodb", Error.THROTTLING)),),
            seconds=4.0,
            meets=32,
        ),
    ),
    Scenario(
        "s3-get-worker",
        "S3 GetObject answers 500, then 503 SlowDown, to the worker (4 s each)",
        40,
        window(
            (W, error("s3", Error.INTERNAL, "GetObject")),
            then=((W, error("s3", Error.THROTTLING, "GetObject")),),
            seconds=4.0,
            meets=32,
        ),
    ),
    Scenario(
        "sqs-500",
        "SQS answers 500 to both services for 5 s",
        40,
        window((S, error("sqs", Error.INTERNAL)), (W, error("sqs", Error.INTERNAL))),
    ),
    Scenario(
        "ses-slow",
        "SES SendEmail answers 7 s late for 4 s (visibility timeout 10 s)",
        30,
        window((S, latency("sesv2", "SendEmail", seconds=7.0)), seconds=4.0),
    ),
    Scenario(
        "ses-answer-lost",
        "SES SendEmail: connection reset after SES accepted, 3 times",
        30,
        limited(S, reset("sesv2", "SendEmail", after_upstream=True), 3),
        # SES has these 3 messages; the sender, which never heard so, keeps their claims
        # (never resent) and, as SES publishes a Send event for every message it accepts,
        # the worker confirms them and their next delivery is a duplicate: none possibly
        # sent, provided the confirmation comes within the lease (10 s here).
        ses_publishes=True,
    ),
    Scenario(
        "ddb-claim-answer-lost",
        "DynamoDB: connection reset after the sender's claim was written, 3 times",
        30,
        limited(S, reset("dynamodb", "PutItem", after_upstream=True), 3),
    ),
]
BY_KEY = {s.key: s for s in SCENARIOS}


# ---- running --------------------------------------------------------------------------


async def run_scenario(scenario: Scenario, workdir: Path) -> Result:
    result = Result(scenario, workdir=workdir)
    run = Run(scenario.jobs)
    t0 = time.monotonic()

    def mark(phase: str, at: float | None = None) -> None:
        result.timeline[phase] = round((at or time.monotonic()) - t0, 1)

    try:
        stack = Stack(
            scenario.key, workdir, dict(scenario.env), ses_publishes=scenario.ses_publishes
        )
        async with asyncio.timeout(SCENARIO_SECONDS), stack as st:
            mark("stand-in up")
            try:
                run.ids = await st.prepare(scenario.jobs)
                mark("prepared")
                await scenario.drive(st, run)
                end = run.fault_end or time.monotonic()
                if run.fault_start:
                    mark("fault start", run.fault_start)
                mark("fault end", end)
                done = await st.settle(SETTLE_SECONDS)
                mark("settled")
                result.recovery = None if done is None else max(0.0, done - end)
                running = [s for s in st.services.values() if s.running]
                await asyncio.gather(*(s.signal(signal.SIGTERM) for s in running))
                result.exits = {name: s.exits for name, s in st.services.items()}
                mark("stopped")
                result.outcome = await st.outcome(run.ids, mark)
                mark("read")
            finally:
                result.logs = {name: s.digest() for name, s in st.services.items()}
    except ScenarioError as exc:
        result.error = f"{exc}"
    except TimeoutError:
        result.error = f"the scenario did not finish within {SCENARIO_SECONDS:g}s"
    except Exception as exc:  # report any failure of the harness with its traceback
        result.error = "".join(traceback.format_exception(exc))[-3000:]
    if run.injections:
        result.fault_hits = sum(i.hits for i in run.injections)
    result.problems = run.problems
    if run.injections and not result.fault_hits and not result.error:
        result.problems.append("the fault never met a request: this run tested nothing")
    return result


async def run_all(scenarios: list[Scenario], base: Path, parallel: int) -> dict[str, Result]:
    """Run scenarios, `parallel` at a time (each on its own stand-in and proxies)."""
    slots = asyncio.Semaphore(parallel)

    async def one(s: Scenario) -> Result:
        async with slots:
            return await run_scenario(s, base / s.key)

    results = await asyncio.gather(*(one(s) for s in scenarios))
    return {r.scenario.key: r for r in results}
