"""The send service: SQS send-jobs -> validate -> partner gate -> once-per-job -> SES.

One task per received message, at most `settings.concurrency` at a time. Receives ask
for 10 messages and long-poll 20 s (1 s with --drain, so a drain ends quickly). Finished
messages are deleted in batches (sesguard.finisher); messages that take long get
their visibility extended.

Per job: validate -> gate (cached partner state) -> rate token -> conditional claim
(sender.records) -> SendEmail (throttling: jittered backoff and retry) -> "sent" record
and delete, batched. Deliveries of one job_id inside this task run one after the other,
so the same job_id twice in a batch costs no extra wait.

Fates of a job (one log line each, event "job", with partner_id and job_id, never the body):
  sent           SES accepted it; the once-per-job record says "sent"; message deleted
  held           partner paused: stored in sesguard.held, message deleted
  dead_lettered  malformed, unknown partner, rejected by SES or possibly sent: original
                 body to <send_queue>-dlq with attribute sesguard_reason, message deleted
  duplicate      its job_id was already sent: deleted without sending
  deferred       another delivery of the same job_id holds a live claim: looked at again later
  retried        DynamoDB/SQS/network trouble or throttling that did not clear: the
                 message is made visible again at once
  returned       the task is stopping or SES paused the account: visible again at once

Stopping (SIGTERM, `stop()`): no new receives; in-flight jobs get `stop_grace_seconds` to
finish; after that, jobs waiting for a rate token or a backoff give up (claims released),
and whatever is still unfinished is made visible again with ChangeMessageVisibilityBatch 0.
A send already on the wire is allowed to complete; if it had to be abandoned its claim
stays, so the job can never be sent twice (see sender.records).

SES account paused or suspended: log an alert, stop receiving, return every job not
already sent, and probe `GetAccount` every ACCOUNT_PROBE_SECONDS until sending is enabled
again. With --drain the run ends instead, with exit code 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter, OrderedDict
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from sender.gate import Action, Gate
from sender.intake import Inflight, Outcome, Phase, Result, ids_for_log, job_from_message
from sender.queue import change_visibility
from sender.rate import resolve_send_rate
from sender.records import ClaimState, JobRecords
from sender.ses import Failure, classify, error_code, error_message, send_params
from sesguard.aws import Clients
from sesguard.backoff import backoff_delay
from sesguard.deadletter import send_to_dlq
from sesguard.finisher import Finisher
from sesguard.health import touch_heartbeat
from sesguard.held import HeldJobs
from sesguard.jobs import JobError, SendJob
from sesguard.logging import get_logger
from sesguard.metrics import ServiceMetrics
from sesguard.partners import Profile
from sesguard.ratelimit import Clock, SystemClock, TokenBucket, per_task_rate
from sesguard.settings import Settings
from sesguard.simulator import EventPublisher
from sesguard.store import PartnerStore, StoreError

log = get_logger(__name__)

T = TypeVar("T")

EXIT_OK, EXIT_ERROR, EXIT_ACCOUNT_PAUSED = 0, 1, 3
ACCOUNT_PROBE_SECONDS = 60.0
STATS_SECONDS = 60.0
SENT_MEMORY = 10_000  # job_ids this task sent lately: same-batch duplicates need no read
ABANDON_SECONDS = 10.0  # after the grace: how long sends already on the wire may take
# Errors of our own dependencies (DynamoDB, SQS, the network): the job goes back.
INFRA_ERRORS: tuple[type[BaseException], ...] = (
    BotoCoreError,
    ClientError,
    StoreError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
    OSError,
)


class Aborted(Exception):
    """The task is stopping (grace over) or SES paused the account: give the job back."""


class SenderService:
    def __init__(
        self,
        clients: Clients,
        settings: Settings,
        *,
        drain: bool = False,
        clock: Clock | None = None,
        bucket: TokenBucket | None = None,
        wait_seconds: int | None = None,
        throttle_attempts: int = 6,
        backoff_base: float = 0.1,
        linger: float = 0.05,
        account_probe_seconds: float = ACCOUNT_PROBE_SECONDS,
    ) -> None:
        self.clients = clients
        self.settings = settings
        self.drain = drain
        self.clock = clock or SystemClock()
        self.bucket = bucket
        self.wait_seconds = wait_seconds if wait_seconds is not None else (1 if drain else 20)
        self.throttle_attempts = throttle_attempts
        self.backoff_base = backoff_base
        self.linger = linger
        self.account_probe_seconds = account_probe_seconds
        self.store = PartnerStore(
            clients.dynamodb,
            settings.table,
            settings.window_hours,
            settings.bucket_retention_days,
        )
        self.gate = Gate(self.store, clients.sesv2, settings, clock=self.clock.monotonic)
        self.held = HeldJobs.from_clients(clients, settings)
        self.records = JobRecords(
            clients.dynamodb,
            settings.table,
            settings.job_record_days,
            float(settings.visibility_timeout),
        )
        self.stats: Counter[str] = Counter()
        self.metrics = ServiceMetrics("sender")
        self.queue_url = ""
        self.dlq_url = ""
        self.finisher: Finisher | None = None
        self._inflight: dict[asyncio.Task[None], Inflight] = {}
        self._room = asyncio.Event()
        self._stop = asyncio.Event()
        self._abort = asyncio.Event()
        self._stop_at: float | None = None
        self._account_paused = False
        self._to_return: list[str] = []
        self._deferred_until = 0.0
        self._failures = 0
        self._pauses_reported = 0
        self._claims: dict[str, asyncio.Future[None]] = {}  # job_id -> its delivery's end
        self._sent_here: OrderedDict[str, str] = OrderedDict()  # job_id -> SES MessageId
        self.started = asyncio.Event()
        self.publisher: EventPublisher | None = None

    # ---- control ---------------------------------------------------------------------

    def stop(self, why: str = "stop") -> None:
        """Begin a graceful stop (signal handlers call this)."""
        if not self._stop.is_set():
            log.info("sender_stopping", why=why, in_flight=len(self._inflight))
            self._stop_at = self.clock.monotonic()
            self._stop.set()

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    # ---- main loop -------------------------------------------------------------------

    async def run(self) -> int:
        try:
            await self._setup()
        except INFRA_ERRORS as exc:
            log.error(
                "sender_setup_failed",
                error=f"{error_code(exc)}: {error_message(exc)}",
                hint="run `sesguard bootstrap` and check AWS credentials/endpoint",
            )
            return EXIT_ERROR
        assert self.finisher is not None
        self.finisher.start()
        ticker = asyncio.create_task(self._ticker(), name="sender-ticker")
        self.started.set()
        code = EXIT_OK
        try:
            code = await self._receive_loop()
        finally:
            await self._shutdown()
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            self._log_stats(final=True)
        return code

    async def _setup(self) -> None:
        sqs = self.clients.sqs
        self.queue_url = (await sqs.get_queue_url(QueueName=self.settings.send_queue))["QueueUrl"]
        self.dlq_url = (await sqs.get_queue_url(QueueName=f"{self.settings.send_queue}-dlq"))[
            "QueueUrl"
        ]
        if self.bucket is None:
            account_rate, source = await resolve_send_rate(self.clients.sesv2, self.settings)
            rate = per_task_rate(account_rate, self.settings.sender_tasks)
            self.bucket = TokenBucket(rate, max(1.0, rate), self.clock)
            log.info(
                "send_rate",
                account_rate=account_rate,
                source=source,
                task_rate=rate,
                tasks=self.settings.sender_tasks,
            )
        if self.settings.simulate_events:
            self.publisher = await EventPublisher.create(self.clients, self.settings)
            log.warning("simulating_ses_events", stream=self.settings.firehose_stream)
        self.finisher = Finisher(
            sqs,
            self.queue_url,
            dynamodb=self.clients.dynamodb,
            table=self.settings.table,
            linger=self.linger,
        )
        log.info(
            "sender_started",
            queue=self.settings.send_queue,
            drain=self.drain,
            concurrency=self.settings.concurrency,
        )

    async def _receive_loop(self) -> int:
        batch = min(10, self.settings.concurrency)
        while not self._stop.is_set():
            touch_heartbeat(self.settings.heartbeat_file)
            if self._account_paused:
                if await self._account_pause_wait():
                    continue
                return EXIT_ACCOUNT_PAUSED if self.drain else EXIT_OK
            if self._failures:
                await self._pause(backoff_delay(self._failures, base=0.2, cap=10.0))
                if self._stop.is_set():
                    break
            if self.settings.concurrency - len(self._inflight) < batch:
                self._room.clear()
                await self._first(self._room.wait(), self._stop.wait())
                continue
            want = min(10, self.settings.concurrency - len(self._inflight))
            try:
                messages = await self._receive(want)
            except INFRA_ERRORS as exc:
                self._failures = min(self._failures + 1, 10)
                log.error("receive_failed", error=f"{error_code(exc)}: {error_message(exc)}")
                continue
            if self._stop.is_set() or self._account_paused:
                self._give_back_raw([m["ReceiptHandle"] for m in messages])
                continue
            for msg in messages:
                self._spawn(msg)
            if not messages and self.drain:
                if self._idle():
                    log.info("sender_drained")
                    break
                # Nothing visible yet, but jobs are in flight or deferred: wait for one to
                # finish (or a moment) instead of polling an empty queue in a tight loop.
                self._room.clear()
                await self._first(self._room.wait(), self._stop.wait(), asyncio.sleep(0.2))
        return EXIT_OK

    def _idle(self) -> bool:
        return (
            not self._inflight
            and not self._to_return
            and self.clock.monotonic() >= self._deferred_until
        )

    async def _receive(self, count: int) -> list[dict[str, Any]]:
        """One long poll; a stop during the poll waits for it (within the grace) so that
        messages it returns are given back at once instead of staying invisible."""
        recv = asyncio.ensure_future(
            self.clients.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=count,
                WaitTimeSeconds=self.wait_seconds,
                MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
            )
        )
        await self._first(recv, self._stop.wait())
        if not recv.done():
            try:
                await asyncio.wait_for(asyncio.shield(recv), timeout=self._grace_left())
            except TimeoutError:
                recv.cancel()  # rare: messages it may have taken reappear after the timeout
                return []
        resp = recv.result()
        messages: list[dict[str, Any]] = resp.get("Messages", [])
        self.stats["received"] += len(messages)
        return messages

    def _spawn(self, msg: dict[str, Any]) -> None:
        now = self.clock.monotonic()
        attrs = msg.get("Attributes", {})
        sent_at = None
        if attrs.get("SentTimestamp", "").isdigit():
            sent_at = datetime.fromtimestamp(int(attrs["SentTimestamp"]) / 1000, UTC)
        item = Inflight(
            message_id=msg["MessageId"],
            receipt=msg["ReceiptHandle"],
            body=msg.get("Body", ""),
            sent_at=sent_at,
            extended_at=now,
        )
        task = asyncio.create_task(self._handle(item))
        self._inflight[task] = item
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._room.set()

    # ---- one job ---------------------------------------------------------------------

    async def _handle(self, m: Inflight) -> None:
        try:
            result = await self._process(m)
        except asyncio.CancelledError:
            # Hard stop after the grace: release a claim SES certainly never saw; the
            # message itself is made visible by _shutdown.
            if m.phase is Phase.CLAIMED and m.job and m.token:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.records.release(m.job.job_id, m.token))
            raise
        except Exception as exc:  # a bug: never crash the service, never lose the job
            log.exception("job_failed", message_id=m.message_id, error=repr(exc))
            result = await self._retry(m, f"internal error: {exc!r}")
        self._record(m, result)

    def _record(self, m: Inflight, result: Result) -> None:
        self.stats[result.outcome.value] += 1
        metric = {
            Outcome.SENT: "jobs_sent",
            Outcome.HELD: "jobs_held",
            Outcome.DEAD_LETTERED: "jobs_dead_lettered",
            Outcome.RETRIED: "jobs_retried",
        }.get(result.outcome)
        if metric:
            self.metrics.add(metric)
        fields: dict[str, Any] = {"outcome": result.outcome.value, "message_id": m.message_id}
        if m.job is not None:
            fields.update(partner_id=m.job.partner_id, job_id=m.job.job_id)
        else:
            fields.update(ids_for_log(m.body))
        if result.reason:
            fields["reason"] = result.reason
        if result.ses_message_id:
            fields["ses_message_id"] = result.ses_message_id
        if result.outcome in (Outcome.DEAD_LETTERED, Outcome.RETRIED):
            log.warning("job", **fields)
        else:
            log.info("job", **fields)

    async def _process(self, m: Inflight) -> Result:
        try:
            job = job_from_message(m.body, m.message_id)
        except JobError as exc:
            return await self._dead_letter(m, str(exc))
        m.job = job

        try:
            decision = await self.gate.check(job.partner_id)
        except INFRA_ERRORS as exc:
            return await self._retry(m, f"gate: {error_code(exc)}")
        if decision.action is Action.UNKNOWN:
            return await self._dead_letter(m, "unknown partner")
        if decision.action is Action.HOLD:
            try:
                await self.held.hold(job, m.sent_at)
            except INFRA_ERRORS as exc:
                return await self._retry(m, f"hold: {error_code(exc)}")
            self._finish(m)
            return Result(Outcome.HELD, decision.reason)

        # One delivery per job_id at a time in this task: a second one (the same job_id
        # twice in a batch) waits for the first instead of finding its claim "sending".
        while (local := self._claims.get(job.job_id)) is not None:
            try:
                await self._abortable(asyncio.shield(local))
            except Aborted:
                return await self._give_back(m, release=False)
        if job.job_id in self._sent_here:  # its "sent" record may still be in the finisher
            self._finish(m)
            return Result(Outcome.DUPLICATE, ses_message_id=self._sent_here[job.job_id])
        done = asyncio.get_running_loop().create_future()
        self._claims[job.job_id] = done
        try:
            return await self._claim_and_send(m, job, decision.profile)
        finally:
            del self._claims[job.job_id]
            done.set_result(None)

    async def _claim_and_send(self, m: Inflight, job: SendJob, profile: Profile | None) -> Result:
        # The rate token comes before the claim, so a claim's age is the time of one send
        # (plus throttling backoff), not the time spent queueing for the account's rate.
        try:
            await self._token()
        except Aborted:
            return await self._give_back(m, release=False)
        token = uuid.uuid4().hex
        try:
            claim = await self.records.claim(job, token)
        except INFRA_ERRORS as exc:
            return await self._retry(m, f"claim: {error_code(exc)}")
        if claim.state is ClaimState.SENT:
            self._finish(m)
            return Result(Outcome.DUPLICATE, ses_message_id=claim.message_id)
        if claim.state is ClaimState.IN_PROGRESS:
            return await self._defer(m, claim.retry_after)
        if claim.state is ClaimState.POSSIBLY_SENT:
            return await self._dead_letter(
                m,
                "possibly sent: an earlier delivery claimed this job_id and never finished"
                f" (to send it anyway: delete item J#{job.job_id}/JOB, then redrive)",
            )
        m.token = token
        m.phase = Phase.CLAIMED
        return await self._send(m, job, send_params(job, self.settings, profile))

    async def _send(self, m: Inflight, job: SendJob, params: dict[str, Any]) -> Result:
        assert self.bucket is not None and m.token is not None
        attempt = 0
        while True:
            if self._abort.is_set():
                return await self._give_back(m, release=True)
            if attempt:  # the first attempt's token was taken before the claim
                try:
                    await self._token()
                except Aborted:
                    return await self._give_back(m, release=True)
            m.phase = Phase.SENDING
            try:
                resp = await self.clients.sesv2.send_email(**params)
            except Exception as exc:
                kind = classify(exc)
                why = f"{error_code(exc)}: {error_message(exc)}"
                if kind is Failure.AMBIGUOUS:
                    # SES may have it: keep the claim (never send twice), return the message
                    return await self._retry(m, f"ses: {why} (claim kept)")
                m.phase = Phase.CLAIMED
                if kind is Failure.THROTTLED:
                    attempt += 1
                    self.bucket.drain()
                    if attempt >= self.throttle_attempts:
                        await self._release(m)
                        return await self._retry(m, f"ses throttled {attempt} times")
                    log.info(
                        "job_throttled",
                        partner_id=job.partner_id,
                        job_id=job.job_id,
                        attempt=attempt,
                    )
                    try:
                        await self._abortable(
                            self.clock.sleep(backoff_delay(attempt - 1, base=self.backoff_base))
                        )
                    except Aborted:
                        return await self._give_back(m, release=True)
                    continue
                await self._release(m)
                if kind is Failure.REJECTED:
                    return await self._dead_letter(m, f"rejected by SES: {why}")
                if kind is Failure.ACCOUNT:
                    self._on_account_paused(why)
                    return await self._give_back(m, release=False)
                return await self._retry(m, f"ses: {why}")
            m.phase = Phase.SETTLED
            message_id = str(resp.get("MessageId", ""))
            self._failures = 0
            assert self.finisher is not None
            self.finisher.done(m.receipt, self.records.sent_item(job, m.token, message_id))
            self._sent_here[job.job_id] = message_id
            if len(self._sent_here) > SENT_MEMORY:
                self._sent_here.popitem(last=False)
            if self.publisher is not None:
                await self._simulate(job, params, message_id)
            return Result(Outcome.SENT, ses_message_id=message_id)

    async def _simulate(self, job: SendJob, params: dict[str, Any], message_id: str) -> None:
        """Local runs only: publish the events SES would, as SES would (via Firehose)."""
        assert self.publisher is not None
        try:
            await self.publisher.after_send(params, message_id)
        except Exception as exc:  # the mail is sent; a lost simulated event must not resend it
            log.error(
                "simulated_events_failed",
                partner_id=job.partner_id,
                job_id=job.job_id,
                error=repr(exc),
            )

    # ---- fates -----------------------------------------------------------------------

    def _finish(self, m: Inflight) -> None:
        assert self.finisher is not None
        m.phase = Phase.SETTLED
        self._failures = 0
        self.finisher.done(m.receipt)

    async def _dead_letter(self, m: Inflight, reason: str) -> Result:
        try:
            with_reason = await send_to_dlq(self.clients.sqs, self.dlq_url, m.body, reason)
        except INFRA_ERRORS as exc:
            return await self._retry(m, f"dlq: {error_code(exc)} (was: {reason})")
        if not with_reason:
            log.warning("dlq_reason_dropped", message_id=m.message_id, reason=reason)
        self._finish(m)
        return Result(Outcome.DEAD_LETTERED, reason)

    async def _retry(self, m: Inflight, reason: str) -> Result:
        """Back to the queue at once; the receive loop backs off while failures repeat."""
        m.phase = Phase.SETTLED
        self._failures = min(self._failures + 1, 10)
        await change_visibility(self.clients.sqs, self.queue_url, [m.receipt], 0)
        return Result(Outcome.RETRIED, reason)

    async def _defer(self, m: Inflight, seconds: float) -> Result:
        m.phase = Phase.SETTLED
        delay = int(min(43200, max(1, seconds + 0.999)))
        self._deferred_until = max(self._deferred_until, self.clock.monotonic() + delay)
        await change_visibility(self.clients.sqs, self.queue_url, [m.receipt], delay)
        return Result(Outcome.DEFERRED, f"job_id claimed by another delivery; again in {delay}s")

    async def _give_back(self, m: Inflight, release: bool) -> Result:
        if release:
            await self._release(m)
        m.phase = Phase.SETTLED
        self._to_return.append(m.receipt)
        return Result(Outcome.RETURNED, "stopping" if self._stop.is_set() else "account paused")

    def _give_back_raw(self, receipts: list[str]) -> None:
        self._to_return.extend(receipts)
        self.stats["returned"] += len(receipts)

    async def _release(self, m: Inflight) -> None:
        if m.job is None or m.token is None:
            return
        try:
            await asyncio.shield(self.records.release(m.job.job_id, m.token))
        except INFRA_ERRORS as exc:
            # The claim stays: a later delivery waits for the lease, then dead-letters it
            # as "possibly sent". Safe (never twice), just not automatic.
            log.error("claim_release_failed", job_id=m.job.job_id, error=error_code(exc))
        m.token = None

    def _on_account_paused(self, why: str) -> None:
        if not self._account_paused:
            self._account_paused = True
            self._abort.set()
            log.error(
                "ses_account_sending_paused",
                alert=True,
                error=why,
                action="stopped taking work; jobs returned to the queue",
            )

    async def _account_pause_wait(self) -> bool:
        """Wait out an account pause; False when the run should end (drain or stop)."""
        await self._settle_inflight()
        await self._flush_returns()
        if self.drain:
            return False
        while not self._stop.is_set():
            await self._pause(self.account_probe_seconds)
            if self._stop.is_set():
                return False
            touch_heartbeat(self.settings.heartbeat_file)
            try:
                account = await self.clients.sesv2.get_account()
                enabled = bool(account.get("SendingEnabled", True))
            except Exception as exc:
                log.info("ses_account_probe_failed", error=error_code(exc))
                enabled = True  # cannot tell: try sending again; a pause re-trips at once
            if enabled:
                log.warning("ses_account_sending_resumed")
                self._account_paused = False
                self._abort.clear()
                return True
        return False

    async def _settle_inflight(self) -> None:
        if self._inflight:
            await asyncio.wait(list(self._inflight))

    # ---- background ------------------------------------------------------------------

    async def _ticker(self) -> None:
        """Every second: extend slow jobs' visibility, return given-back messages, beat,
        and now and then log the counters."""
        vt = self.settings.visibility_timeout
        next_stats = self.clock.monotonic() + STATS_SECONDS
        while True:
            await asyncio.sleep(1.0)
            now = self.clock.monotonic()
            slow = [
                m
                for m in self._inflight.values()
                if m.phase is not Phase.SETTLED and now - m.extended_at >= vt / 2
            ]
            if slow:
                for m in slow:
                    m.extended_at = now
                await change_visibility(
                    self.clients.sqs, self.queue_url, [m.receipt for m in slow], vt
                )
                log.info("visibility_extended", count=len(slow), seconds=vt)
            await self._flush_returns()
            touch_heartbeat(self.settings.heartbeat_file)
            if now >= next_stats:
                next_stats = now + STATS_SECONDS
                self._log_stats()

    async def _flush_returns(self) -> None:
        receipts, self._to_return = self._to_return, []
        if receipts:
            await change_visibility(self.clients.sqs, self.queue_url, receipts, 0)

    def _log_stats(self, final: bool = False) -> None:
        log.info(
            "sender_counters",
            final=final,
            in_flight=len(self._inflight),
            gate_reads=self.gate.reads,
            partners_paused=self.gate.pauses,
            **{k: v for k, v in sorted(self.stats.items())},
        )
        if self.gate.pauses > self._pauses_reported:
            self.metrics.add("partners_paused", self.gate.pauses - self._pauses_reported)
            self._pauses_reported = self.gate.pauses
        self.metrics.flush()

    # ---- shutdown --------------------------------------------------------------------

    def _grace_left(self) -> float:
        if self._stop_at is None:
            return self.settings.stop_grace_seconds
        return max(0.0, self._stop_at + self.settings.stop_grace_seconds - self.clock.monotonic())

    async def _shutdown(self) -> None:
        if self._inflight:
            _, pending = await asyncio.wait(list(self._inflight), timeout=self._grace_left())
            if pending:
                # Grace over: jobs waiting for a token or a backoff give up; sends on the
                # wire get a little longer to complete.
                log.warning("stop_grace_over", unfinished=len(pending))
                self._abort.set()
                _, pending = await asyncio.wait(pending, timeout=ABANDON_SECONDS)
            if pending:
                items = [self._inflight[t] for t in pending if t in self._inflight]
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                unfinished = [m.receipt for m in items if m.phase is not Phase.SETTLED]
                log.warning("jobs_abandoned", count=len(unfinished))
                self._to_return.extend(unfinished)
        await self._flush_returns()
        if self.finisher is not None:
            await self.finisher.close()
        log.info("sender_stopped")

    # ---- helpers ---------------------------------------------------------------------

    async def _token(self) -> None:
        """One send's worth of the account rate; raises Aborted when the task aborts."""
        assert self.bucket is not None
        if self._abort.is_set():
            raise Aborted
        if not self.bucket.try_acquire():
            await self._abortable(self.bucket.acquire())

    async def _abortable(self, aw: Awaitable[T]) -> T:
        """Await a wait (rate token, backoff) that is abandoned when the task aborts."""
        task = asyncio.ensure_future(aw)
        if self._abort.is_set():
            task.cancel()
            raise Aborted
        aborted = asyncio.ensure_future(self._abort.wait())
        try:
            await asyncio.wait({task, aborted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborted.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise Aborted

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up for a stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

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
