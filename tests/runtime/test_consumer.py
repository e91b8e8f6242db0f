"""The consumer runtime on its own, with small handlers, against moto's SQS over HTTP:
fates, concurrency, commits, the outage tolerance, breakers, stop, heartbeat, loop lag."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog

from sesguard.ops.bootstrap import Report, ensure_queues
from sesguard.runtime import (
    Consumer,
    ConsumerConfig,
    DeadLetter,
    Defer,
    Delivery,
    Dependency,
    Done,
    Fate,
    GiveBack,
    Retry,
    RetryPolicy,
    StopCause,
    max_receive_count,
    queue_urls,
)
from sesguard.runtime.finisher import Finisher
from sesguard.runtime.metrics import ServiceMetrics
from sesguard.settings import Settings, load_settings
from tests.conftest import ShiftClock, dead_letters_in, queue_counts, wait_until
from tests.fault_hooks import Fault, inject

Handler = Callable[[Delivery], Awaitable[Fate]]


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def events(captured: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in captured if e["event"] == name]


@dataclass
class Queue:
    clients: Any
    settings: Settings
    url: str
    dlq: str
    heartbeat: Path
    consumers: list[Consumer] = field(default_factory=list)

    async def put(self, *bodies: str) -> None:
        for start in range(0, len(bodies), 10):
            await self.clients.sqs.send_message_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(i), "MessageBody": b}
                    for i, b in enumerate(bodies[start : start + 10])
                ],
            )

    def consumer(self, handler: Handler, **overrides: Any) -> Consumer:
        kwargs: dict[str, Any] = {
            k: overrides.pop(k)
            for k in ("commit", "dependencies", "metrics", "clock", "stats")
            if k in overrides
        }
        config = ConsumerConfig(
            **{
                "name": "test",
                "queue_url": self.url,
                "dlq_url": self.dlq,
                "concurrency": 8,
                "visibility_timeout": 30,
                "stop_grace": 5.0,
                "heartbeat_file": str(self.heartbeat),
                "retry": RetryPolicy.for_tolerance(self.settings.outage_tolerance_seconds),
                "drain": True,
                "wait_seconds": 0,
                "linger": 0.01,
                **overrides,
            }
        )
        consumer = Consumer(self.clients.sqs, config, handler, **kwargs)
        self.consumers.append(consumer)
        return consumer

    async def depth(self, url: str | None = None) -> tuple[int, int]:
        return await queue_counts(self.clients, url or self.url)

    async def dead_letters(self) -> dict[str, str | None]:
        """body -> sesguard_reason of everything in the DLQ."""
        return dict(await dead_letters_in(self.clients, self.dlq))


async def make_queue(clients: Any, tmp_path: Path, **settings: Any) -> Queue:
    s = load_settings(**settings)
    await ensure_queues(clients, s, Report())
    url, dlq = await queue_urls(clients.sqs, s.send_queue)
    return Queue(clients, s, url, dlq, tmp_path / "heartbeat")


@pytest.fixture
async def queue(clients: Any, tmp_path: Path) -> AsyncIterator[Queue]:
    yield await make_queue(clients, tmp_path)


class SqsCalls:
    """Counts SQS operations and the entries of each batch call."""

    def __init__(self, sqs: Any) -> None:
        self.sqs = sqs
        self.calls: Counter[str] = Counter()
        self.entries: dict[str, list[dict[str, Any]]] = {}
        self.batch_sizes: dict[str, list[int]] = {}

    def record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls[model.name] += 1
        self.entries.setdefault(model.name, []).extend(params.get("Entries", []))
        self.batch_sizes.setdefault(model.name, []).append(len(params.get("Entries", [])))

    def __enter__(self) -> SqsCalls:
        self.sqs.meta.events.register("provide-client-params.sqs", self.record, unique_id="t-c")
        return self

    def __exit__(self, *exc: object) -> None:
        self.sqs.meta.events.unregister("provide-client-params.sqs", unique_id="t-c")


# ---- fates -----------------------------------------------------------------------------


async def test_every_fate_becomes_the_right_sqs_call_in_batches(
    queue: Queue, logs: list[dict[str, Any]]
) -> None:
    seen: Counter[str] = Counter()
    counts: dict[str, list[int]] = {}

    async def handler(d: Delivery) -> Fate:
        seen[d.body] += 1
        counts.setdefault(d.body, []).append(d.receive_count)
        kind = d.body.split("-")[0]
        again = seen[d.body] > 1
        d.fields["kind"] = kind
        if kind == "dead":
            return DeadLetter(f"bad body {d.body}")
        if kind == "retry" and not again:
            return Retry("flaky dependency")
        if kind == "defer" and not again:
            return Defer(1, "not yet")
        if kind == "giveback" and not again:
            return GiveBack("not now", after=0)
        if kind == "boom" and not again:
            raise RuntimeError("a bug")
        d.outcome = "handled"
        return Done()

    bodies = [f"done-{i}" for i in range(23)] + ["dead-1", "retry-1", "defer-1"]
    bodies += ["giveback-1", "boom-1"]
    await queue.put(*bodies)
    with SqsCalls(queue.clients.sqs) as sqs:
        # a linger long enough that a loaded machine still batches what finishes together
        consumer = queue.consumer(handler, linger=0.3)
        assert await asyncio.wait_for(consumer.run(), 60) is StopCause.DRAINED

    assert all(seen[b] == 1 for b in bodies if b.startswith(("done", "dead")))
    assert all(seen[b] == 2 for b in ("retry-1", "defer-1", "giveback-1", "boom-1"))
    assert counts["retry-1"] == [1, 2]  # the same message, returned, not a copy
    assert await queue.dead_letters() == {"dead-1": "bad body dead-1"}
    assert await queue.depth() == (0, 0)
    deleted = sqs.entries["DeleteMessageBatch"]
    assert len(deleted) == 23 + 1 + 4  # done, the dead letter, the four on their 2nd try
    assert sqs.calls["DeleteMessageBatch"] < len(deleted)  # batched ...
    assert max(sqs.batch_sizes["DeleteMessageBatch"]) <= 10  # ... within the AWS limit
    changes = {e["VisibilityTimeout"] for e in sqs.entries["ChangeMessageVisibilityBatch"]}
    assert 0 in changes and changes - {0}  # give-back at once; retry/defer/bug later
    assert consumer.tally["handled"] == 23 + 4 and consumer.tally["dead_lettered"] == 1
    assert consumer.tally["retried"] == 2  # the retry and the bug
    lines = events(logs, "message")
    assert {line["outcome"] for line in lines} == {
        "handled",
        "dead_lettered",
        "retried",
        "deferred",
        "returned",
    }
    assert all("kind" in line for line in lines)  # the handler's fields on every line
    assert events(logs, "test_handler_failed")  # the bug is logged with its traceback


async def test_concurrency_is_bounded(queue: Queue) -> None:
    running = most = 0

    async def handler(d: Delivery) -> Fate:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1
        return Done()

    await queue.put(*(f"m{i}" for i in range(30)))
    consumer = queue.consumer(handler, concurrency=4)
    assert await asyncio.wait_for(consumer.run(), 60) is StopCause.DRAINED
    assert consumer.tally["done"] == 30
    assert most <= 4


# ---- commits ---------------------------------------------------------------------------


async def test_a_message_is_deleted_only_after_its_commit_is_written(queue: Queue) -> None:
    written: list[str] = []
    refusals = {"left": 2}
    depth_while_failing: list[tuple[int, int]] = []

    async def commit(items: Any) -> list[bool]:
        if refusals["left"]:
            refusals["left"] -= 1
            depth_while_failing.append(await queue.depth())
            return [False] * len(items)
        written.extend(items)
        return [True] * len(items)

    async def handler(d: Delivery) -> Fate:
        return Done(commit=f"record of {d.body}")

    await queue.put("job-a")
    consumer = queue.consumer(handler, commit=commit)
    assert await asyncio.wait_for(consumer.run(), 60) is StopCause.DRAINED
    assert written == ["record of job-a"]
    assert depth_while_failing == [(0, 1), (0, 1)]  # kept in flight, not deleted
    assert await queue.depth() == (0, 0)


# ---- the outage tolerance ------------------------------------------------------------


async def test_past_the_outage_tolerance_a_failing_message_is_dead_lettered_with_the_reason(
    clients: Any, tmp_path: Path
) -> None:
    q = await make_queue(clients, tmp_path, outage_tolerance_seconds=2)
    receives: list[int] = []

    async def handler(d: Delivery) -> Fate:
        receives.append(d.receive_count)
        return Retry("ses: ServiceUnavailable: injected")

    await q.put("job-1")
    consumer = q.consumer(handler)
    assert await asyncio.wait_for(consumer.run(), 60) is StopCause.DRAINED
    dead = await q.dead_letters()
    reason = dead["job-1"]
    assert reason is not None and "outage tolerance (2s" in reason
    assert reason.endswith("ses: ServiceUnavailable: injected")
    assert len(receives) >= 2 and receives == sorted(receives)  # retried before giving up
    # SQS's own redrive (no reason attached) would only come after more receives
    assert len(receives) < max_receive_count(q.settings)


async def test_within_the_tolerance_nothing_is_dead_lettered(queue: Queue) -> None:
    tries: Counter[str] = Counter()

    async def handler(d: Delivery) -> Fate:
        tries[d.body] += 1
        if tries[d.body] < 3:
            return Retry("dynamodb: InternalServerError")
        return Done()

    await queue.put("a", "b")
    consumer = queue.consumer(handler)
    assert await asyncio.wait_for(consumer.run(), 60) is StopCause.DRAINED
    assert tries == {"a": 3, "b": 3}
    assert await queue.dead_letters() == {}


async def test_time_deferred_on_purpose_is_no_failure_for_a_patient_delivery(
    clients: Any, tmp_path: Path
) -> None:
    """A message deferred (a partner's throttle) past the tolerance, then failing once: a
    handler that marks its delivery `patient` gets it judged by receive count, so it is
    retried, not dead-lettered because its first receive is long ago."""
    q = await make_queue(clients, tmp_path, outage_tolerance_seconds=1)
    seen: Counter[str] = Counter()

    async def handler(d: Delivery) -> Fate:
        seen[d.body] += 1
        d.patient = d.body == "patient"
        if seen[d.body] == 1:
            return Defer(2, "throttled")
        if seen[d.body] == 2:
            return Retry("dynamodb: InternalServerError", after=0)
        return Done()

    await q.put("patient", "impatient")
    assert await asyncio.wait_for(q.consumer(handler).run(), 60) is StopCause.DRAINED
    dead = await q.dead_letters()
    assert list(dead) == ["impatient"]  # 2 s since its first receive: past the 1 s tolerance
    assert seen == {"patient": 3, "impatient": 2}


# ---- breakers --------------------------------------------------------------------------


async def test_a_dependency_down_holds_intake_probes_and_resumes(
    queue: Queue, logs: list[dict[str, Any]]
) -> None:
    """DynamoDB answers 500 to everything: after 3 failures the breaker opens (one alert),
    the consumer stops receiving and keeps the messages; the probe's first answer closes
    it (one line) and every message is handled, none dead-lettered."""
    dynamodb = queue.clients.dynamodb
    done: list[str] = []

    async def handler(d: Delivery) -> Fate:
        try:
            await dynamodb.list_tables(Limit=1)
        except Exception as exc:
            return Retry(f"dynamodb: {exc}")
        done.append(d.body)
        return Done()

    async def probe() -> object:
        return await dynamodb.describe_limits()

    await queue.put(*(f"job-{i}" for i in range(12)))
    outage = Fault(status=500, code="InternalServerError")
    with inject(dynamodb, "*", outage):
        consumer = queue.consumer(
            handler,
            concurrency=2,
            breaker_threshold=3,
            retry=RetryPolicy(tolerance=900, probe_first=0.2, probe_cap=0.2),
            dependencies=[Dependency("dynamodb", dynamodb, probe, "DescribeLimits")],
        )
        run = asyncio.create_task(consumer.run())
        await wait_until(lambda: consumer.held)
        assert consumer.open_breakers == ["dynamodb"]
        received = consumer.tally["received"]
        await wait_until(lambda: outage.calls >= received + 3)  # probes keep failing
        assert consumer.tally["received"] == received  # no receiving while it is down
        outage.active = False
        await wait_until(lambda: not consumer.held)
        assert await asyncio.wait_for(run, 60) is StopCause.DRAINED
    assert sorted(done) == sorted(f"job-{i}" for i in range(12))
    assert await queue.dead_letters() == {}
    opened, closed = events(logs, "dependency_unavailable"), events(logs, "dependency_available")
    assert len(opened) == 1 and len(closed) == 1
    assert opened[0]["alert"] is True and "InternalServerError" in opened[0]["error"]


async def test_a_probe_that_answers_lets_one_trial_through_not_the_queue(
    queue: Queue, logs: list[dict[str, Any]]
) -> None:
    """Only the work's call fails (as SES answers GetAccount while SendEmail fails): the
    probe answers every time. The consumer must not take a full batch per probe: after
    the first probe, one message at a time, each after a probe; only a real call that
    succeeds closes the breaker. (Before: the probe's answer closed it, `concurrency`
    messages were taken and failed, and it reopened, churning through the queue.)"""
    dynamodb = queue.clients.dynamodb
    timeline: list[str] = []  # "probe", or "call <handlers running>"
    running = 0
    done: list[str] = []

    async def handler(d: Delivery) -> Fate:
        nonlocal running
        running += 1
        try:
            await dynamodb.list_tables(Limit=1)
        except Exception as exc:
            return Retry(f"dynamodb: {exc}")
        finally:
            timeline.append(f"call {running}")
            running -= 1
        done.append(d.body)
        return Done()

    async def probe() -> object:
        timeline.append("probe")
        return await dynamodb.describe_limits()  # answers throughout

    await queue.put(*(f"job-{i}" for i in range(12)))
    outage = Fault(status=500, code="InternalServerError")
    with inject(dynamodb, "ListTables", outage):
        consumer = queue.consumer(
            handler,
            concurrency=4,
            breaker_threshold=3,
            retry=RetryPolicy(tolerance=900, probe_first=0.3, probe_cap=0.3),
            dependencies=[Dependency("dynamodb", dynamodb, probe, "DescribeLimits")],
        )
        run = asyncio.create_task(consumer.run())
        await wait_until(lambda: timeline.count("probe") >= 6)
        outage.active = False
        assert await asyncio.wait_for(run, 60) is StopCause.DRAINED
    first_probe = timeline.index("probe")
    during = timeline[first_probe : len(timeline) - timeline[::-1].index("probe")]
    calls = [e for e in during if e != "probe"]
    assert calls and set(calls) == {"call 1"}  # one trial at a time
    for earlier, later in itertools.pairwise(during):
        assert not (earlier.startswith("call") and later.startswith("call"))  # a probe between
    assert sorted(done) == sorted(f"job-{i}" for i in range(12))
    assert await queue.dead_letters() == {}
    opened, closed = events(logs, "dependency_unavailable"), events(logs, "dependency_available")
    assert len(opened) == 1 and len(closed) == 1  # one outage, however many trials failed
    assert len(events(logs, "dependency_trial_failed")) == len(calls)


async def test_a_drain_gives_up_when_a_dependency_stays_down_past_the_tolerance(
    clients: Any, tmp_path: Path
) -> None:
    q = await make_queue(clients, tmp_path, outage_tolerance_seconds=1)
    dynamodb = clients.dynamodb

    async def handler(d: Delivery) -> Fate:
        await dynamodb.list_tables(Limit=1)
        return Done()

    async def probe() -> object:
        return await dynamodb.list_tables(Limit=1)

    await q.put("job-1")
    with inject(dynamodb, "*", Fault(connection_error=True)):
        consumer = q.consumer(
            handler,
            breaker_threshold=1,
            dependencies=[Dependency("dynamodb", dynamodb, probe)],
        )
        assert await asyncio.wait_for(consumer.run(), 60) is StopCause.GAVE_UP
    assert await q.dead_letters() == {}  # the job stays in the queue
    visible, in_flight = await q.depth()
    assert visible + in_flight == 1


# ---- stop ------------------------------------------------------------------------------


async def test_stop_cancels_running_work_at_the_end_of_the_grace_and_returns_it_at_once(
    queue: Queue, logs: list[dict[str, Any]]
) -> None:
    started: set[str] = set()
    finished: list[str] = []

    async def handler(d: Delivery) -> Fate:
        started.add(d.body)
        if d.body == "on-the-wire":
            with d.uninterruptible():  # e.g. a send that must not be cut off halfway
                await asyncio.sleep(0.5)
            finished.append(d.body)
            return Done()
        await asyncio.Event().wait()  # a long object that will not finish in time
        return Done()

    await queue.put("long-1", "long-2", "on-the-wire")
    consumer = queue.consumer(handler, drain=False, stop_grace=0.1, abandon_seconds=30)
    run = asyncio.create_task(consumer.run())
    await wait_until(lambda: len(started) == 3)
    consumer.stop("SIGTERM")
    assert await asyncio.wait_for(run, 20) is StopCause.STOPPED
    assert finished == ["on-the-wire"]  # got its extra time, and was deleted
    assert await queue.depth() == (2, 0)  # the other two: visible again at once
    over = events(logs, "stop_grace_over")
    assert over and over[0]["cancelled"] == 2 and over[0]["finishing_calls_on_the_wire"] == 1
    returned = [e for e in events(logs, "message") if e["outcome"] == "returned"]
    assert len(returned) == 2


async def test_a_stop_during_a_long_poll_gives_back_what_it_returns(queue: Queue) -> None:
    handled: list[str] = []

    async def handler(d: Delivery) -> Fate:
        handled.append(d.body)
        return Done()

    consumer = queue.consumer(handler, drain=False, wait_seconds=2, stop_grace=5)
    run = asyncio.create_task(consumer.run())
    await asyncio.sleep(0.3)  # the consumer is in its long poll now
    consumer.stop()
    await queue.put("late")  # arrives while the poll is still open
    assert await asyncio.wait_for(run, 20) is StopCause.STOPPED
    assert handled == []
    assert await queue.depth() == (1, 0)  # given back at once, not hidden for 30 s


# ---- health ----------------------------------------------------------------------------


def beat_age_reset(path: Path) -> None:
    os.utime(path, (1000.0, 1000.0))


async def test_heartbeat_follows_the_loop_and_the_handlers_not_the_receives(
    queue: Queue, logs: list[dict[str, Any]]
) -> None:
    """A busy handler keeps the heartbeat fresh though nothing is received (every slot is
    taken); when every running handler has been stuck for stall_seconds it stops, and it
    resumes as soon as one moves again."""
    clock = ShiftClock()
    go = asyncio.Event()
    current: list[Delivery] = []

    async def handler(d: Delivery) -> Fate:
        current.append(d)
        await go.wait()
        return Done()

    await queue.put("long-object")
    consumer = queue.consumer(
        handler, drain=False, concurrency=1, stall_seconds=60, clock=clock, wait_seconds=1
    )
    run = asyncio.create_task(consumer.run())
    await wait_until(lambda: current != [])
    beat_age_reset(queue.heartbeat)
    await wait_until(lambda: queue.heartbeat.stat().st_mtime > 1000.0)  # beating while busy
    assert consumer.tally["received"] == 1

    clock.offset += 61  # the handler has not moved for longer than stall_seconds
    await wait_until(lambda: events(logs, "test_handlers_stalled") != [])
    beat_age_reset(queue.heartbeat)
    await asyncio.sleep(0.3)  # several ticks: no beat while every handler is stuck
    assert queue.heartbeat.stat().st_mtime == 1000.0

    current[0].progress()  # it moves again (report_progress() from below works the same)
    await wait_until(lambda: queue.heartbeat.stat().st_mtime > 1000.0)
    go.set()
    consumer.stop()
    assert await asyncio.wait_for(run, 20) is StopCause.STOPPED


async def test_a_handler_waiting_on_purpose_is_not_stalled(
    queue: Queue, logs: list[dict[str, Any]]
) -> None:
    """A sender waiting for a rate token (an `abortable` wait) for longer than
    stall_seconds is waiting, not stuck: the heartbeat goes on."""
    clock = ShiftClock()
    waiting: list[Delivery] = []

    async def handler(d: Delivery) -> Fate:
        waiting.append(d)
        await d.abortable(asyncio.Event().wait())  # e.g. a token of a very low send rate
        return Done()

    await queue.put("slow-rate")
    consumer = queue.consumer(
        handler, drain=False, concurrency=1, stall_seconds=60, clock=clock, wait_seconds=1
    )
    run = asyncio.create_task(consumer.run())
    await wait_until(lambda: waiting != [] and waiting[0].waiting)
    clock.offset += 61
    beat_age_reset(queue.heartbeat)
    await wait_until(lambda: queue.heartbeat.stat().st_mtime > 1000.0)
    assert events(logs, "test_handlers_stalled") == []
    consumer.stop()
    assert await asyncio.wait_for(run, 20) is StopCause.STOPPED
    assert await queue.depth() == (1, 0)  # its wait was given up at the stop: back at once


async def test_event_loop_lag_is_reported_in_the_counters_and_as_a_metric(
    queue: Queue, logs: list[dict[str, Any]]
) -> None:
    async def handler(d: Delivery) -> Fate:
        time.sleep(0.3)  # noqa: ASYNC251 - blocking the loop on purpose
        return Done()

    emf = io.StringIO()
    await queue.put("blocker")
    consumer = queue.consumer(handler, metrics=ServiceMetrics("test", stream=emf))
    assert await asyncio.wait_for(consumer.run(), 60) is StopCause.DRAINED
    (stopped,) = events(logs, "test_stopped")
    assert stopped["loop_lag_max_ms"] >= 200  # blocked 300 ms; the monitor ticks at 100 ms
    metrics = [json.loads(line) for line in emf.getvalue().splitlines()]
    assert max(m.get("event_loop_lag_seconds", 0) for m in metrics) >= 0.2


async def test_a_receive_that_does_not_come_back_stops_the_heartbeat_and_names_the_wait(
    queue: Queue, logs: list[dict[str, Any]]
) -> None:
    """A receive that never returns (a hung connection) leaves the task taking no work:
    after receive_stall_seconds without the loop coming round the heartbeat stops, and
    the log says where the loop waits; the loop coming round again resumes it."""
    clock = ShiftClock()
    consumer = queue.consumer(
        _never_called, drain=False, clock=clock, wait_seconds=3, receive_stall_seconds=60
    )
    run = asyncio.create_task(consumer.run())
    await asyncio.sleep(0.5)  # in a long poll on the empty queue: the loop waits on it
    clock.offset += 61
    await wait_until(lambda: events(logs, "test_receive_stalled") != [])
    beat_age_reset(queue.heartbeat)
    await asyncio.sleep(0.3)
    assert queue.heartbeat.stat().st_mtime == 1000.0
    stacks = [e for e in events(logs, "task_stack") if e["reason"] == "receive stalled"]
    assert any("consumer.py" in f and "_receive" in f for e in stacks for f in e["frames"])
    await wait_until(lambda: events(logs, "test_receive_moving") != [], limit=10)  # poll ended
    await wait_until(lambda: queue.heartbeat.stat().st_mtime > 1000.0)
    consumer.stop()
    assert await asyncio.wait_for(run, 20) is StopCause.STOPPED


async def _never_called(d: Delivery) -> Fate:
    raise AssertionError(f"no message was sent, got {d.body}")


async def test_a_handler_that_ignores_the_stop_does_not_hold_it(queue: Queue) -> None:
    """A handler that swallows its cancellation (a bug) cannot keep the service from
    stopping: its message is given back at once, and the stop ends within its budget."""
    release = asyncio.Event()
    started = asyncio.Event()

    async def stubborn(d: Delivery) -> Fate:
        started.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # the bug: it swallows the stop's cancellation
        return Done()

    await queue.put("stuck")
    consumer = queue.consumer(stubborn, drain=False, stop_grace=0.2)
    run = asyncio.create_task(consumer.run())
    await asyncio.wait_for(started.wait(), 20)
    consumer.stop()
    cause = await asyncio.wait_for(run, consumer.stop_budget())
    assert cause is StopCause.STOPPED
    assert await queue.depth() == (1, 0)  # given back, visible at once
    release.set()  # let the stray task end before the loop closes
    await asyncio.sleep(0.1)


async def test_a_flush_that_never_returns_is_abandoned_after_the_deadline(
    queue: Queue, logs: list[dict[str, Any]]
) -> None:
    """A commit (or SQS call) that hangs must not hold a stop forever: close() waits for
    it until its deadline plus `on_wire`, then cancels it and logs; the message is left
    in flight (it comes back, and the service's idempotency makes it a no-op)."""
    sqs = queue.clients.sqs
    await queue.put("job")
    msg = (await sqs.receive_message(QueueUrl=queue.url, WaitTimeSeconds=1))["Messages"][0]
    on_the_wire = asyncio.Event()

    async def hanging_commit(items: Any) -> list[bool]:
        on_the_wire.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    finisher = Finisher(sqs, queue.url, commit=hanging_commit, linger=0.0, on_wire=0.3)
    finisher.start()
    finisher.done(msg["ReceiptHandle"], commit="record")
    await asyncio.wait_for(on_the_wire.wait(), timeout=5)
    await asyncio.wait_for(finisher.close(deadline=time.monotonic() + 0.2), timeout=10)
    assert [e["count"] for e in events(logs, "flushes_abandoned")] == [1]
    assert await queue.depth() == (0, 1)  # still in flight
