"""The one SQS consumer loop both services run; it knows nothing of jobs, S3 or SES.

A service gives it a handler (one message in, one fate out: sesguard.runtime.fates) and,
optionally, the dependencies to guard and a commit function; the runtime receives,
settles, renews visibility, suspends intake, stops, drains and beats the heartbeat. See
docs/design.md, "3. The consumer runtime", and docs/operating.md, "Draining".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sesguard.aws.batching import SQS_BATCH
from sesguard.aws.deadletter import PAST_TOLERANCE, send_to_dlq
from sesguard.aws.errors import Health, describe, judge_exception
from sesguard.core.backoff import backoff_delay
from sesguard.logging import get_logger
from sesguard.runtime import delivery as current
from sesguard.runtime.delivery import Aborted, Delivery, Stage
from sesguard.runtime.dependencies import Dependency, Guard
from sesguard.runtime.fates import (
    DEFAULT_OUTCOME,
    DeadLetter,
    Defer,
    Done,
    Fate,
    GiveBack,
    Retry,
)
from sesguard.runtime.finisher import ON_WIRE_SECONDS, CommitBatch, Finisher
from sesguard.runtime.health import touch_heartbeat
from sesguard.runtime.lag import LoopLag
from sesguard.runtime.metrics import ServiceMetrics
from sesguard.runtime.ratelimit import Clock, SystemClock
from sesguard.runtime.retry import RetryPolicy
from sesguard.runtime.sqs import change_visibility, queue_depth
from sesguard.runtime.stacks import log_task_stacks
from sesguard.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

log = get_logger(__name__)

Handler = Callable[[Delivery], Awaitable[Fate]]
FINAL_FLUSH_SECONDS = 5.0  # after the stop: last deletes, returns and commit retries


class StopCause(StrEnum):
    STOPPED = "stopped"  # stop(): SIGTERM or the caller
    DRAINED = "drained"  # --drain: the queue is empty
    ENDED = "ended"  # end(): the service asked (e.g. SES paused the account, --drain)
    GAVE_UP = "gave_up"  # --drain: a dependency stayed down past the outage tolerance


@dataclass(frozen=True)
class ConsumerConfig:
    name: str  # the service: log event prefix, metrics dimension
    queue_url: str
    dlq_url: str
    concurrency: int
    visibility_timeout: int
    stop_grace: float
    heartbeat_file: str
    retry: RetryPolicy
    drain: bool = False
    wait_seconds: int = 20
    abandon_seconds: float = 0.0
    renew_every: float | None = None  # default: half the visibility timeout
    linger: float = 0.05
    tally_every: float = 60.0
    stall_seconds: float = 600.0
    # a receive takes at most wait_seconds plus the SDK's timeouts and retries
    receive_stall_seconds: float = 300.0
    breaker_threshold: int = 5
    log_event: str = "message"

    @classmethod
    def for_service(
        cls, name: str, settings: Settings, queue_url: str, dlq_url: str, **options: Any
    ) -> ConsumerConfig:
        """The settings every service shares (concurrency, visibility timeout, stop grace,
        heartbeat file, outage tolerance), plus the service's own `options`."""
        options.setdefault("retry", RetryPolicy.from_settings(settings))
        return cls(
            name=name,
            queue_url=queue_url,
            dlq_url=dlq_url,
            concurrency=settings.concurrency,
            visibility_timeout=settings.visibility_timeout,
            stop_grace=settings.stop_grace_seconds,
            heartbeat_file=settings.heartbeat_file,
            **options,
        )


@dataclass(frozen=True)
class _Suspension:
    reason: str
    delay: Callable[[Delivery], int]
    since: float  # when the first suspension of this key began (kept when a trial fails)
    dependency: bool
    trial: bool = False  # one message at a time instead of none


class Intake(StrEnum):
    OPEN = "open"  # receive up to `concurrency`
    TRIAL = "trial"  # only trial suspensions: one message in hand at a time
    SUSPENDED = "suspended"  # no receives


class Consumer:
    def __init__(
        self,
        sqs: SQSClient,
        config: ConsumerConfig,
        handler: Handler,
        *,
        commit: CommitBatch | None = None,
        dependencies: Sequence[Dependency] = (),
        metrics: ServiceMetrics | None = None,
        tally: Counter[str] | None = None,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
        counters: Callable[[], dict[str, Any]] | None = None,
        on_settled: Callable[[Delivery, Fate], None] | None = None,
    ) -> None:
        self.sqs = sqs
        self.config = config
        self.handler = handler
        self.clock: Clock = clock or SystemClock()
        self.wall = wall
        self.metrics = metrics or ServiceMetrics(config.name)
        self.tally: Counter[str] = tally if tally is not None else Counter()
        self.counters = counters
        self.on_settled = on_settled
        self.renew_every = config.renew_every or config.visibility_timeout / 2
        self.finisher = Finisher(
            sqs,
            config.queue_url,
            commit=commit,
            linger=config.linger,
            clock=self.clock.monotonic,
        )
        self.guard = Guard(
            config.name,
            dependencies,
            on_open=self._dependency_down,
            on_trial=self._dependency_trial,
            on_close=self._dependency_up,
            threshold=config.breaker_threshold,
            probe_first=config.retry.probe_first,
            probe_cap=config.retry.probe_cap,
            clock=self.clock.monotonic,
        )
        self.lag = LoopLag()
        self._works: set[Delivery] = set()  # received, not yet settled with SQS
        self._room = asyncio.Event()
        self._stopping = asyncio.Event()
        self._abort = asyncio.Event()  # handlers' abortable waits give up
        self._unheld = asyncio.Event()
        self._unheld.set()
        self._suspensions: dict[str, _Suspension] = {}
        self._stop_at: float | None = None
        self._grace_over = False
        self._cause = StopCause.STOPPED
        self._end_reason = ""
        self._receive_failures = 0
        self._stalled = False
        self._depth_unknown_logged = False
        self._read_empty = False  # --drain: the last look at the queue found it empty
        self._undeleted: dict[str, float] = {}  # receipt -> when it becomes visible again
        self._loop_turned = self.clock.monotonic()  # the receive loop came round
        self._receive_stuck = False

    # ---- control ---------------------------------------------------------------------

    def stop(self, why: str = "stop") -> None:
        """Begin a graceful stop (signal handlers call this)."""
        if not self._stopping.is_set():
            log.info(f"{self.config.name}_stopping", why=why, in_flight=self.in_flight)
            self._stop_at = self.clock.monotonic()
            self._stopping.set()
            self._room.set()

    def end(self, reason: str) -> None:
        """Stop because the service says so; `run()` returns StopCause.ENDED."""
        if not self._stopping.is_set():
            self._cause, self._end_reason = StopCause.ENDED, reason
        self.stop(reason)

    def suspend(
        self,
        key: str,
        reason: str,
        delay: Callable[[Delivery], int] | None = None,
        *,
        dependency: bool = False,
        trial: bool = False,
    ) -> None:
        """Stop taking work until `lift(key)`: no receives, abortable waits give up,
        messages given back after `delay(delivery)` seconds (default: at once). With
        `trial`, one message at a time is still taken (a half-open breaker's trial), as
        long as no other suspension stops intake altogether. Suspending a key again switches it
        between the two and keeps when it began."""
        old = self._suspensions.get(key)
        if old is None or old.trial != trial:
            since = old.since if old is not None else self.clock.monotonic()
            self._suspensions[key] = _Suspension(
                reason, delay or (lambda _d: 0), since, dependency, trial
            )
        self._sync_intake()

    def lift(self, key: str) -> None:
        self._suspensions.pop(key, None)
        self._sync_intake()

    def _intake(self) -> Intake:
        if not self._suspensions:
            return Intake.OPEN
        return (
            Intake.TRIAL if all(h.trial for h in self._suspensions.values()) else Intake.SUSPENDED
        )

    def _sync_intake(self) -> None:
        """Held: no receives, abortable waits give up. Open or trial: both go on."""
        if self._intake() is Intake.SUSPENDED:
            self._abort.set()
            self._unheld.clear()
        else:
            self._unheld.set()
            if not self._grace_over:
                self._abort.clear()
        self._room.set()  # the receive loop looks again

    @property
    def held(self) -> bool:
        """Intake is held or limited to trials."""
        return bool(self._suspensions)

    @property
    def in_flight(self) -> int:
        """Messages whose handler is running."""
        return sum(1 for d in self._works if d.stage is Stage.HANDLING)

    @property
    def open_breakers(self) -> list[str]:
        return self.guard.open

    # ---- run -------------------------------------------------------------------------

    async def run(self) -> StopCause:
        self.finisher.start()
        self.guard.attach()
        tick = min(1.0, self.renew_every / 2)
        background = [
            asyncio.create_task(self._ticker(tick), name=f"{self.config.name}-ticker"),
            asyncio.create_task(self.lag.run(), name=f"{self.config.name}-loop-lag"),
        ]
        touch_heartbeat(self.config.heartbeat_file)
        try:
            await self._receive_loop()
        finally:
            try:
                await self._shutdown()
            finally:
                for task in background:
                    task.cancel()
                for task in background:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await self.guard.close()
                extra = {"reason": self._end_reason} if self._end_reason else {}
                self._log_counters(f"{self.config.name}_stopped", cause=self._cause.value, **extra)
        return self._cause

    async def _receive_loop(self) -> None:
        cfg = self.config
        batch = min(SQS_BATCH, cfg.concurrency)
        while not self._stopping.is_set():
            self._loop_turned = self.clock.monotonic()
            intake = self._intake()
            if intake is not Intake.OPEN and cfg.drain and self._gave_up():
                return
            if intake is Intake.SUSPENDED:
                await self._first(self._unheld.wait(), self._stopping.wait(), asyncio.sleep(1))
                continue
            if self._receive_failures:
                await self._pause(backoff_delay(self._receive_failures, base=0.2, cap=10.0))
                if self._stopping.is_set():
                    break
            if intake is Intake.TRIAL:  # one in hand at a time, until the trial decides
                free, wanted = (0 if self.in_flight else 1), 1
            else:
                free = cfg.concurrency - self.in_flight
                wanted = batch
            if free < wanted:
                self._room.clear()
                await self._first(self._room.wait(), self._stopping.wait(), asyncio.sleep(1))
                continue
            try:
                messages = await self._receive(min(SQS_BATCH, free))
            except Exception as exc:
                self._receive_failures = min(self._receive_failures + 1, 10)
                log.error("receive_failed", error=describe(exc))
                continue
            self._receive_failures = 0
            now = self._intake()
            take = 0 if self._stopping.is_set() or now is Intake.SUSPENDED else len(messages)
            if now is Intake.TRIAL:
                take = min(take, 0 if self.in_flight else 1)
            for msg in messages[take:]:  # taken, not handled: back to the queue
                self._give_back_unhandled(msg)
            for msg in messages[:take]:
                self._spawn(msg)
            if messages:
                self._read_empty = False
            elif cfg.drain:
                if await self._drained():
                    self._cause = StopCause.DRAINED
                    log.info(f"{cfg.name}_drained")
                    return
                # Nothing visible yet, but messages are in hand or in flight elsewhere:
                # wait for one to settle (or a moment) instead of polling in a tight loop.
                self._room.clear()
                await self._first(self._room.wait(), self._stopping.wait(), asyncio.sleep(0.2))

    async def _receive(self, count: int) -> list[MessageTypeDef]:
        """One long poll; a stop during the poll waits for it (within the grace) so the
        messages it returns are given back at once instead of staying invisible."""
        recv = asyncio.ensure_future(
            self.sqs.receive_message(
                QueueUrl=self.config.queue_url,
                MaxNumberOfMessages=count,
                WaitTimeSeconds=self.config.wait_seconds,
                VisibilityTimeout=self.config.visibility_timeout,
                MessageSystemAttributeNames=[
                    "SentTimestamp",
                    "ApproximateReceiveCount",
                    "ApproximateFirstReceiveTimestamp",
                ],
            )
        )
        await self._first(recv, self._stopping.wait())
        if not recv.done():
            try:
                await asyncio.wait_for(asyncio.shield(recv), timeout=self._grace_left())
            except TimeoutError:
                recv.cancel()  # rare: what it may have taken reappears after the timeout
                return []
        messages: list[MessageTypeDef] = recv.result().get("Messages", [])
        self.tally["received"] += len(messages)
        return messages

    def _spawn(self, msg: MessageTypeDef) -> None:
        d = Delivery.from_sqs(msg, self._abort, self.clock.monotonic)
        self._works.add(d)
        d.task = asyncio.create_task(self._handle(d), name=f"msg-{d.message_id}")

    def _give_back_unhandled(self, msg: MessageTypeDef) -> None:
        d = Delivery.from_sqs(msg, self._abort, self.clock.monotonic)
        self._works.add(d)
        self._apply(d, GiveBack("stopping" if self._stopping.is_set() else "intake held"))

    # ---- one message -----------------------------------------------------------------

    async def _handle(self, d: Delivery) -> None:
        token = current.enter(d)
        try:
            try:
                fate = await self.handler(d)
            except Aborted:
                fate = GiveBack("stopping" if self._stopping.is_set() else "intake held")
            except Exception as exc:  # a bug: never crash the service, never lose the job
                log.exception(
                    f"{self.config.name}_handler_failed",
                    message_id=d.message_id,
                    error=repr(exc),
                )
                d.outcome = None
                fate = Retry(f"internal error: {exc!r}")
            await self._settle(d, fate)
        except asyncio.CancelledError:
            # Cancelled at the end of the stop grace: visible again at once.
            if d.stage is Stage.HANDLING:
                d.outcome = None
                self._apply(d, GiveBack("cancelled: stop grace over", after=0))
            raise
        finally:
            current.leave(token)
            self._room.set()

    async def _settle(self, d: Delivery, fate: Fate) -> None:
        if isinstance(fate, Retry) and self._past_tolerance(d):
            fate = DeadLetter(
                f"{PAST_TOLERANCE}"
                f" ({self.config.retry.tolerance:g}s, received {d.receive_count} times):"
                f" {fate.reason}"
            )
            d.outcome = None
        if isinstance(fate, DeadLetter):
            try:  # the reason always goes along (sesguard.aws.deadletter cuts a body to fit it)
                await send_to_dlq(self.sqs, self.config.dlq_url, d.body, fate.reason, d.message_id)
            except Exception as exc:
                fate, d.outcome = Retry(f"dlq: {describe(exc)} (was: {fate.reason})"), None
        self._apply(d, fate)

    def _apply(self, d: Delivery, fate: Fate) -> None:
        """Queue the SQS side of a fate (no awaiting: also runs in a cancelled handler)."""
        seconds: int | None = None
        if isinstance(fate, Done):
            d.stage = Stage.COMMITTING
            self.finisher.done(d.receipt, fate.commit, self._settled_cb(d, delete=True))
        elif isinstance(fate, DeadLetter):
            d.stage = Stage.RETURNING
            self.finisher.done(d.receipt, None, self._settled_cb(d, delete=True))
        else:
            d.stage = Stage.RETURNING
            seconds = self._visibility(d, fate)
            self.finisher.change(d.receipt, seconds, self._settled_cb(d, delete=False))
        self._record(d, fate, seconds)

    def _visibility(self, d: Delivery, fate: Retry | GiveBack | Defer) -> int:
        if isinstance(fate, Defer):
            wanted: float = fate.seconds
        elif fate.after is not None:
            wanted = fate.after
        elif isinstance(fate, Retry):
            return self.config.retry.delay(d.receive_count)
        elif self._stopping.is_set() or not self._suspensions:
            return 0
        else:
            return max(h.delay(d) for h in self._suspensions.values())
        return d.visible_after(wanted)

    def _settled_cb(self, d: Delivery, *, delete: bool) -> Callable[[bool], None]:
        def settled(ok: bool) -> None:
            d.stage = Stage.SETTLED
            self._works.discard(d)
            self._room.set()
            if delete and not ok:
                # Finished, but SQS kept it: it comes back when its visibility ends and
                # the service's idempotency makes that a no-op. A drain need not wait.
                until = d.extended_at + self.config.visibility_timeout
                self._undeleted[d.receipt] = until

        return settled

    def _past_tolerance(self, d: Delivery) -> bool:
        first = None if d.patient else d.first_received_at  # deferred time is no failure
        return self.config.retry.past_tolerance(first, d.receive_count, self.wall())

    def _record(self, d: Delivery, fate: Fate, seconds: int | None) -> None:
        outcome = str(d.outcome or DEFAULT_OUTCOME[type(fate)])  # plain str: a log key
        self.tally[outcome] += 1
        if isinstance(fate, DeadLetter):
            self.metrics.add("jobs_dead_lettered")
        elif isinstance(fate, Retry):
            self.metrics.add("jobs_retried")
        fields: dict[str, Any] = {"outcome": outcome, "message_id": d.message_id, **d.fields}
        reason = getattr(fate, "reason", "")
        if reason:
            fields["reason"] = reason
        if seconds:
            fields["visible_in"] = seconds
        if isinstance(fate, Retry):
            fields["receive_count"] = d.receive_count
        if isinstance(fate, DeadLetter | Retry):
            log.warning(self.config.log_event, **fields)
        else:
            log.info(self.config.log_event, **fields)
        if self.on_settled is not None:
            self.on_settled(d, fate)

    # ---- dependencies ----------------------------------------------------------------

    def _dependency_down(self, name: str, reason: str) -> None:
        def backoff(d: Delivery) -> int:
            return self.config.retry.delay(d.receive_count)

        self.suspend(f"dependency:{name}", reason, backoff, dependency=True)

    def _dependency_trial(self, name: str) -> None:
        held = self._suspensions.get(f"dependency:{name}")
        if held is not None:
            self.suspend(f"dependency:{name}", held.reason, held.delay, dependency=True, trial=True)

    def _dependency_up(self, name: str) -> None:
        self.lift(f"dependency:{name}")

    def _gave_up(self) -> bool:
        """--drain: a dependency down for longer than the outage tolerance ends the run."""
        now = self.clock.monotonic()
        down = [h for h in self._suspensions.values() if h.dependency]
        if down and now - min(h.since for h in down) > self.config.retry.tolerance:
            log.error(
                f"{self.config.name}_drain_gave_up",
                reasons=sorted(h.reason for h in down),
                action="messages stay in the queue; run the drain again when it is back",
            )
            self._cause = StopCause.GAVE_UP
            return True
        return False

    # ---- drain -----------------------------------------------------------------------

    async def _drained(self) -> bool:
        """Nothing in hand here, and the queue reads empty (visible, in flight, delayed),
        apart from messages this task finished but SQS failed to delete."""
        if self._works or self.finisher.pending:
            return False
        now = self.clock.monotonic()
        self._undeleted = {r: until for r, until in self._undeleted.items() if until > now}
        try:
            depth = await queue_depth(self.sqs, self.config.queue_url)
        except Exception as exc:
            if judge_exception(exc) is not Health.UP:
                return False  # SQS trouble: look again on the next empty receive
            if not self._depth_unknown_logged:
                self._depth_unknown_logged = True
                log.warning(
                    "drain_queue_depth_unknown",
                    error=describe(exc),
                    hint="grant sqs:GetQueueAttributes; until then a drain cannot wait for"
                    " messages in flight elsewhere",
                )
            return True
        if depth.in_flight and depth.in_flight <= len(self._undeleted) and not depth.visible:
            log.warning(
                "drained_with_undeleted_messages",
                count=depth.in_flight,
                action="finished here; SQS failed to delete them: they come back and are"
                " recognised as done",
            )
            return self._confirm_empty(depth.delayed == 0)
        return self._confirm_empty(depth.empty)

    def _confirm_empty(self, empty: bool) -> bool:
        """Drained only when the queue read empty twice, with an empty receive between.
        The counts are approximate and not read at one instant: a message whose
        visibility ends between the two counts is in neither (moto shows it; SQS says
        its counts are approximate), so one empty read could end a drain with work due."""
        confirmed = empty and self._read_empty
        self._read_empty = empty
        return confirmed

    # ---- background ------------------------------------------------------------------

    async def _ticker(self, period: float) -> None:
        """Beat, renew the visibility of messages in hand, and now and then report. The
        beat never waits for AWS: renewals run beside the ticker, one batch at a time."""
        next_tally = self.clock.monotonic() + self.config.tally_every
        renewing: asyncio.Task[None] | None = None
        try:
            while True:
                await asyncio.sleep(period)
                now = self.clock.monotonic()
                if self._check_stall(now):
                    touch_heartbeat(self.config.heartbeat_file)
                if renewing is None or renewing.done():
                    renewing = self._renew(now)
                if self.guard.open:
                    self.metrics.observe("breakers_open", len(self.guard.open))
                if now >= next_tally:
                    next_tally = now + self.config.tally_every
                    self._log_counters(f"{self.config.name}_counters")
        finally:
            if renewing is not None and not renewing.done():
                # never cut a renewal off halfway, nor wait for one that hangs
                await asyncio.wait({renewing}, timeout=ON_WIRE_SECONDS)

    def _renew(self, now: float) -> asyncio.Task[None] | None:
        vt = self.config.visibility_timeout
        slow = [
            d
            for d in self._works
            if d.stage in (Stage.HANDLING, Stage.COMMITTING)
            and now - d.extended_at >= self.renew_every
        ]
        if not slow:
            return None
        for d in slow:
            d.extended_at = now

        async def renew() -> None:
            renewals = [(d.receipt, vt) for d in slow]
            await change_visibility(self.sqs, self.config.queue_url, renewals)
            log.info("visibility_extended", count=len(slow), seconds=vt)

        return asyncio.create_task(renew(), name=f"{self.config.name}-renew")

    def _check_stall(self, now: float) -> bool:
        """True when the heartbeat may beat: the receive loop came round within
        `receive_stall_seconds`, and some handler moved within `stall_seconds` (or none
        is running)."""
        stuck = (
            not self._stopping.is_set()
            and now - self._loop_turned > self.config.receive_stall_seconds
        )
        if stuck != self._receive_stuck:
            self._receive_stuck = stuck
            self._log_health("receive", stuck, self.config.receive_stall_seconds)
            if stuck:
                log_task_stacks("receive stalled")
        running = [d for d in self._works if d.stage is Stage.HANDLING]
        stalled = bool(running) and all(
            not d.waiting and now - d.last_progress > self.config.stall_seconds for d in running
        )
        if stalled != self._stalled:
            self._stalled = stalled
            self._log_health("handlers", stalled, self.config.stall_seconds, running=len(running))
        return not stalled and not stuck

    def _log_health(self, what: str, stalled: bool, seconds: float, **extra: Any) -> None:
        """One of the heartbeat's two conditions changed: `<service>_<what>_stalled` (an
        alert: the health check will fail) or `<service>_<what>_moving` (it beats again)."""
        if stalled:
            log.error(
                f"{self.config.name}_{what}_stalled",
                alert=True,
                seconds=seconds,
                action="heartbeat stopped: the health check will fail",
                **extra,
            )
        else:
            log.warning(f"{self.config.name}_{what}_moving", **extra)

    def _log_counters(self, event: str, **extra: Any) -> None:
        lag = self.lag.take_worst()
        self.metrics.observe("event_loop_lag_seconds", lag)
        fields: dict[str, Any] = {
            "in_flight": self.in_flight,
            "loop_lag_max_ms": round(lag * 1000, 1),
            "breakers_open": self.guard.open,
            **{k: v for k, v in sorted(self.tally.items())},
        }
        if self.counters is not None:
            fields.update(self.counters())
        log.info(event, **fields, **extra)
        self.metrics.flush()

    # ---- stopping --------------------------------------------------------------------

    def _grace_left(self) -> float:
        if self._stop_at is None:
            return self.config.stop_grace
        return max(0.0, self._stop_at + self.config.stop_grace - self.clock.monotonic())

    async def _shutdown(self) -> None:
        by_task = {d.task: d for d in self._works if d.task is not None and not d.task.done()}
        running = set(by_task)
        if running:
            _, running = await asyncio.wait(running, timeout=self._grace_left())
        if running:
            self._grace_over = True
            self._abort.set()
            critical = {t for t in running if not by_task[t].interruptible}
            log.warning(
                "stop_grace_over",
                unfinished=len(running),
                cancelled=len(running) - len(critical),
                finishing_calls_on_the_wire=len(critical),
            )
            for task in running - critical:
                task.cancel()
            if critical:
                _, late = await asyncio.wait(critical, timeout=self.config.abandon_seconds)
                for task in late:
                    task.cancel()
                if late:
                    log.warning("handlers_abandoned", count=len(late))
            _, stuck = await asyncio.wait(running, timeout=FINAL_FLUSH_SECONDS)
            for task in stuck:  # ignored its cancellation: give its message back ourselves
                d = by_task[task]
                if d.stage is Stage.HANDLING:
                    self._apply(d, GiveBack("handler did not stop", after=0))
        await self.finisher.close(deadline=self.clock.monotonic() + FINAL_FLUSH_SECONDS)

    def stop_budget(self) -> float:
        """Seconds a stop takes at most by design: the grace, the abandon time, the last
        flush, a call already on the wire, and the last renewal."""
        cfg = self.config
        return cfg.stop_grace + cfg.abandon_seconds + FINAL_FLUSH_SECONDS + 2 * ON_WIRE_SECONDS

    # ---- helpers ---------------------------------------------------------------------

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up for a stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    @staticmethod
    async def _first(*aws: Awaitable[Any]) -> None:
        """Wait until the first of several awaitables completes; cancel the others
        unless they are shared futures (only wrappers made here are cancelled)."""
        futures = [asyncio.ensure_future(a) for a in aws]
        try:
            await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f, a in zip(futures, aws, strict=True):
                if f is not a and not f.done():
                    f.cancel()
