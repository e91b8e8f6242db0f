"""Per-partner throttles (sender/throttle.py) against moto: a rate cap shared by two sender
tasks, a daily quota across two tasks and three UTC days, and what waiting costs in SQS
receives. Time is never asserted on the test's duration: the rate is checked by counting
the recorded sends in every window, and the UTC day is an injected clock."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sender.throttle import PartnerRate
from sesguard.aws import lifecycle
from sesguard.aws.lifecycle import DetailType, partner_history
from sesguard.core.partners import Limits, Profile, Throttle
from sesguard.runtime.ratelimit import SystemClock
from tests.conftest import wait_until
from tests.sender.support import Env, sender_settings


class Receives:
    """Counts the deliveries of each SQS message id (ReceiveMessage answers)."""

    def __init__(self, clients: Any) -> None:
        self.clients = clients
        self.per_message: Counter[str] = Counter()

    def _after(self, parsed: dict[str, Any], **_: Any) -> None:
        for message in parsed.get("Messages", []):
            self.per_message[message["MessageId"]] += 1

    def __enter__(self) -> Receives:
        self.clients.sqs.meta.events.register(
            "after-call.sqs.ReceiveMessage", self._after, unique_id="t-receives"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.clients.sqs.meta.events.unregister(
            "after-call.sqs.ReceiveMessage", unique_id="t-receives"
        )


class SendTimes:
    """When each SendEmail SES accepted came back (monotonic seconds)."""

    def __init__(self, clients: Any) -> None:
        self.clients = clients
        self.at: list[float] = []

    def _after(self, http_response: Any, **_: Any) -> None:
        if http_response.status_code < 300:
            self.at.append(time.monotonic())

    def __enter__(self) -> SendTimes:
        events = self.clients.ses_send.meta.events
        events.register("after-call.sesv2.SendEmail", self._after, unique_id="t-send-times")
        return self

    def __exit__(self, *exc: object) -> None:
        events = self.clients.ses_send.meta.events
        events.unregister("after-call.sesv2.SendEmail", unique_id="t-send-times")


def most_in_window(stamps: list[float], seconds: float) -> int:
    """The largest number of sends in any closed window of `seconds` (one starting at each
    send is enough: a window can be slid right until its start meets a send)."""
    stamps = sorted(stamps)
    best, j = 0, 0
    for i, start in enumerate(stamps):
        j = max(j, i)
        while j < len(stamps) and stamps[j] <= start + seconds:
            j += 1
        best = max(best, j - i)
    return best


async def still_queued(env: Env, count: int) -> None:
    """Wait until SQS counts `count` messages in the queue (visible or not): the deferred
    jobs are still there. SQS's counts are approximate and settle after the finisher's
    batch, so this polls (bounded)."""
    async with asyncio.timeout(10):
        while sum(await env.queue_depth()) != count:  # noqa: ASYNC110 - SQS's counts
            await asyncio.sleep(0.05)


async def test_two_tasks_keep_a_partners_rate_under_its_cap_and_defer_once(env: Env) -> None:
    rate, jobs = 20.0, 130
    await env.store.create(
        Profile("capped", "ops@capped.example.org", Limits(), throttle=Throttle(max_rate=rate))
    )
    # Leases renewed every second, so the second task is counted quickly; the account rate
    # (1000/s) is far above the partner's cap.
    settings = sender_settings(sender_lease_seconds=3)
    await env.enqueue(*[env.job(i, partner="capped") for i in range(jobs)])
    with Receives(env.clients) as receives, SendTimes(env.clients) as times:
        a = env.service(settings, bucket=None)
        b = env.service(settings, bucket=None)
        codes = await asyncio.wait_for(asyncio.gather(a.run(), b.run()), timeout=90)
    assert codes == [0, 0]
    assert sorted(env.ses.subjects()) == sorted(f"subject job-{i}" for i in range(jobs))
    assert len(times.at) == jobs
    # The tasks together save up at most half a second of the cap (each task's burst is
    # half a second of its share, at least one send): every 5 s window stays within +10%.
    bursts = 2 * PartnerRate(rate / 2, SystemClock()).burst
    assert most_in_window(times.at, 5.0) <= 1.1 * rate * 5 + 1
    assert most_in_window(times.at, 5.0) <= rate * 5 + bursts + 1
    assert most_in_window(times.at, 1.0) <= rate * 1 + bursts + 1
    # Waiting cost SQS little: most jobs were deferred, each at most once for the rate.
    deferred = a.throttles.deferred.rate + b.throttles.deferred.rate
    assert deferred > jobs // 2
    assert a.tally["deferred"] + b.tally["deferred"] == deferred
    assert max(receives.per_message.values()) <= 2
    assert sum(receives.per_message.values()) == jobs + deferred
    assert await env.dead_letters() == []


async def test_a_daily_quota_holds_across_two_tasks_and_three_utc_days(env: Env) -> None:
    quota = 5
    await env.store.create(
        Profile("daily", "ops@daily.example.org", Limits(), throttle=Throttle(daily_quota=quota))
    )
    # Three seconds before midnight: a job deferred for the quota comes back in 3 s, by
    # which time the test has moved the clock on by one day.
    clock = [datetime(2026, 12, 6, 23, 59, 57, tzinfo=UTC)]

    def ticking() -> datetime:
        """Each reading a millisecond later: events keep the order they happened in."""
        clock[0] += timedelta(milliseconds=1)
        return clock[0]

    await env.enqueue(*[env.job(i, partner="daily") for i in range(3 * quota)])
    with Receives(env.clients) as receives:
        a = env.service(now=ticking)
        b = env.service(now=ticking)
        run = asyncio.gather(a.run(), b.run())

        def deferred() -> int:
            return a.throttles.deferred.quota + b.throttles.deferred.quota

        # Day 1: exactly the quota is sent, the other 10 wait in the queue.
        await wait_until(lambda: len(env.ses.sent) == quota and deferred() >= 2 * quota)
        await still_queued(env, 2 * quota)
        assert await env.dead_letters() == []
        assert len(env.ses.sent) == quota
        clock[0] += timedelta(days=1)
        # Day 2: the quota again; the last 5 wait for day 3.
        await wait_until(lambda: len(env.ses.sent) == 2 * quota and deferred() >= 3 * quota)
        await still_queued(env, quota)
        assert len(env.ses.sent) == 2 * quota
        clock[0] += timedelta(days=1)
        codes = await asyncio.wait_for(run, timeout=60)
    assert codes == [0, 0]
    assert sorted(env.ses.subjects()) == sorted(f"subject job-{i}" for i in range(3 * quota))
    assert await env.dead_letters() == []
    # One receive per day waited: never near the queue's maxReceiveCount.
    assert len(receives.per_message) == 3 * quota
    assert max(receives.per_message.values()) <= 3

    history = await partner_history(
        env.clients.dynamodb, env.settings.table, "daily", datetime(2026, 12, 1, tzinfo=UTC)
    )
    seen = [(e.detail_type, e.detail["day"]) for e in history]
    assert seen == [
        (DetailType.QUOTA_REACHED, "2026-12-06"),
        (DetailType.QUOTA_RELEASED, "2026-12-07"),
        (DetailType.QUOTA_REACHED, "2026-12-07"),
        (DetailType.QUOTA_RELEASED, "2026-12-08"),
    ]
    reached = history[0].detail
    assert reached["daily_quota"] == quota
    assert reached["resumes_at"] == "2026-12-07T00:00:00.000Z"
    assert history[1].detail["reason"] == "new UTC day"
    profile_item = await env.clients.dynamodb.get_item(
        TableName=env.settings.table, Key={"pk": {"S": "P#daily"}, "sk": {"S": "PROFILE"}}
    )
    assert "quota_reached" not in profile_item["Item"]  # released: no mark left


async def test_a_raised_quota_releases_the_partner_the_same_day(env: Env) -> None:
    await env.store.create(
        Profile("raised", "ops@raised.example.org", Limits(), throttle=Throttle(daily_quota=2))
    )
    clock = [datetime(2026, 12, 6, 12, 0, tzinfo=UTC)]

    def ticking() -> datetime:
        clock[0] += timedelta(milliseconds=1)
        return clock[0]

    await env.enqueue(*[env.job(i, partner="raised") for i in range(4)])
    svc = env.service(now=ticking, drain=False, wait_seconds=1)
    with Receives(env.clients) as receives:
        run = asyncio.create_task(svc.run())
        await wait_until(lambda: svc.throttles.deferred.quota == 2)
        assert len(env.ses.sent) == 2
        # The two waiting jobs are deferred until midnight, at most 12 h (SQS's limit counts
        # from the receive: a minute is kept for the time the job was in hand).
        assert max(receives.per_message.values()) == 1
        history = await partner_history(
            env.clients.dynamodb, env.settings.table, "raised", datetime(2026, 12, 1, tzinfo=UTC)
        )
        (reached,) = history
        assert reached.detail_type == DetailType.QUOTA_REACHED
        # The operator raises the quota (the gate reads the new profile); the next job goes
        # and releases the partner, once.
        await env.store.change("raised", daily_quota=4)
        svc.gate.invalidate("raised")
        await env.enqueue(env.job(9, partner="raised"))
        await wait_until(lambda: len(env.ses.sent) == 3)
        svc.stop()
        assert await asyncio.wait_for(run, timeout=30) == 0
    history = await partner_history(
        env.clients.dynamodb, env.settings.table, "raised", datetime(2026, 12, 1, tzinfo=UTC)
    )
    # The raise itself is a Partner Limits Changed transition (stamped with the real clock).
    assert DetailType.LIMITS_CHANGED in {e.detail_type for e in history}
    quota = [e for e in history if e.detail_type is not DetailType.LIMITS_CHANGED]
    assert [e.detail_type for e in quota] == [DetailType.QUOTA_REACHED, DetailType.QUOTA_RELEASED]
    released = quota[1].detail
    assert (released["reason"], released["daily_quota"], released["day"]) == (
        "quota raised",
        4,
        "2026-12-06",
    )


async def test_a_send_ses_refused_gives_its_quota_back(env: Env) -> None:
    """A rejected job (dead-lettered) and a duplicate (already sent) never count against
    the day: after them and two sends, the day counts 2 of its 3."""
    await env.store.create(
        Profile("giving", "ops@giving.example.org", Limits(), throttle=Throttle(daily_quota=3))
    )
    day = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    # moto rejects a From identity that is not verified, like SES (MessageRejected)
    rejected = env.job(0, partner="giving", **{"from": "someone@unverified.example.net"})
    await env.enqueue(rejected)
    await env.drain(now=lambda: day)
    await env.enqueue(env.job(1, partner="giving"), env.job(2, partner="giving"))
    await env.drain(now=lambda: day)
    await env.enqueue(env.job(1, partner="giving"))  # the same job id again: a duplicate
    await env.drain(now=lambda: day)
    assert sorted(env.ses.subjects()) == ["subject job-1", "subject job-2"]
    dead = [body["job_id"] for body, _ in await env.dead_letters() if isinstance(body, dict)]
    assert dead == ["job-0"]
    item = await env.clients.dynamodb.get_item(
        TableName=env.settings.table, Key={"pk": {"S": "P#giving"}, "sk": {"S": "Q#2026-12-06"}}
    )
    assert item["Item"]["used"]["N"] == "2"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_a_partner_bucket_starts_empty_spaces_its_promises_and_never_bursts_more() -> None:
    clock = FakeClock()
    bucket = PartnerRate(4.0, clock)
    assert bucket.burst == 2.0
    assert bucket.wait() == 0.25  # empty at start: a newcomer spends no saved-up burst
    promised = [bucket.reserve() for _ in range(4)]
    assert promised == [0.25, 0.5, 0.75, 1.0]  # deferred jobs come back 1/rate apart
    clock.now += 10
    assert bucket.wait() == 0  # promises in the past are spent; tokens capped at the burst
    sent_at = []
    for _ in range(10):
        with bucket.waiting():
            await bucket.acquire()
        sent_at.append(clock.now)
    assert sent_at[:2] == [110.0, 110.0]  # the burst: two sends at once
    assert sent_at[2:] == [110.0 + 0.25 * i for i in range(1, 9)]
    bucket.set_rate(1.0)
    assert bucket.burst == 1.0
    assert lifecycle.next_utc_midnight(datetime(2026, 12, 31, 23, 0, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )
