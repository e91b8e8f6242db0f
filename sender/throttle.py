"""Per-partner throttles set by operators (`Profile.throttle`), across all sender tasks.

A rate cap: each task takes `max_rate x (its share of the account rate)` of a partner's
cap, the share being what `sesguard.runtime.leases.RateShare` gives it (1 / live tasks, or
the fallback), so the tasks together stay under the cap the way they stay under the
account rate. A daily quota: one conditional ADD per send (`PartnerStore.take_quota`),
right before the claim. A job that would wait long is returned with `Defer`, never
dead-lettered. Why each holds, and what the waiting costs in SQS calls: docs/design.md,
"Throttles: per-partner rate caps and daily quotas".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sesguard.aws.lifecycle import next_utc_midnight
from sesguard.aws.store import PartnerStore
from sesguard.core.partners import Profile, utc_day, utcnow
from sesguard.logging import get_logger
from sesguard.runtime import Defer, Delivery
from sesguard.runtime.ratelimit import Clock, TokenBucket

if TYPE_CHECKING:  # the domain's transitions are handed in (only the domain writes them)
    from sesguard.domain.transitions import Transitions

log = get_logger(__name__)

RATE_WAIT_SECONDS = 1.0  # a first delivery waits in the task this long at most; longer: Defer
BURST_SECONDS = 0.5  # a task saves up half a second of its partner rate (at least one send)


class PartnerRate(TokenBucket):
    """One partner's cap in this task: a token bucket of `rate` sends/s that saves up at
    most half a second of it and starts empty, plus `horizon`, the last slot promised to
    a job deferred by this task.

    The bucket alone decides when a send may go (`acquire`); the horizon only spaces the
    deferred jobs' return times `1 / rate` apart, so they come back about when the bucket
    has room for them instead of all at once.
    """

    def __init__(self, rate: float, clock: Clock) -> None:
        super().__init__(rate, clock=clock, burst_seconds=BURST_SECONDS)
        self.drain()  # a newcomer never spends a burst saved before it was counted
        self._waiters = 0
        self.horizon = 0.0

    def wait(self) -> float:
        """Seconds until a new job's turn: after the jobs waiting here for a token, and
        after the slots promised to jobs deferred here."""
        in_task = max(0.0, (self._waiters + 1 - self.tokens) / self.rate)
        now = self.clock.monotonic()
        promised = self.horizon - now + 1 / self.rate if self.horizon > now else 0.0
        return max(in_task, promised)

    def reserve(self) -> float:
        """Promise the next free slot to a job deferred until then; seconds until it."""
        seconds = self.wait()
        self.horizon = self.clock.monotonic() + seconds
        return seconds

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Count a job waiting here for a token (`wait` sees it at once, before its wait
        is scheduled)."""
        self._waiters += 1
        try:
            yield
        finally:
            self._waiters -= 1


@dataclass
class Throttled:
    """How many jobs this task deferred, per reason (the counters line)."""

    rate: int = 0
    quota: int = 0


class Throttles:
    """This task's side of every partner's throttle.

    `fraction` is this task's share of the account's send rate (task rate / account rate:
    1 / live tasks, or 1 / max(fallback tasks, view) in fallback); `set_fraction` follows
    `RateShare`'s changes, in the same order (lower at once, raise after being counted).
    """

    def __init__(
        self,
        store: PartnerStore,
        transitions: Transitions,
        fraction: float,
        clock: Clock,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.transitions = transitions
        self.fraction = fraction
        self.clock = clock
        self.now = now
        self.deferred = Throttled()
        self._rates: dict[str, tuple[float, PartnerRate]] = {}  # partner -> (max_rate, bucket)
        self._full: dict[str, tuple[str, int]] = {}  # partner -> (day, quota) found full here
        self._opened: dict[str, str] = {}  # partner -> the last UTC day this task opened
        self._opening: dict[str, asyncio.Lock] = {}  # partner -> one opening at a time

    def set_fraction(self, fraction: float) -> None:
        self.fraction = fraction
        for max_rate, bucket in self._rates.values():
            bucket.set_rate(max_rate * fraction)

    # ---- the rate cap ------------------------------------------------------------------

    def _bucket(self, partner_id: str, max_rate: float) -> PartnerRate:
        known = self._rates.get(partner_id)
        if known is None:
            bucket = PartnerRate(max_rate * self.fraction, self.clock)
        else:
            bucket = known[1]
            if known[0] != max_rate:  # the operator changed the cap
                bucket.set_rate(max_rate * self.fraction)
        self._rates[partner_id] = (max_rate, bucket)
        return bucket

    async def rate(self, d: Delivery, partner_id: str, profile: Profile | None) -> Defer | None:
        """A partner rate token for this send, waited for here; or a Defer until this
        task's next free slot for the partner when that is more than about a second away
        and this is the job's first delivery (so a job is deferred for the rate at most
        once: a job that comes back waits here for its token)."""
        if profile is not None and (
            profile.throttle.max_rate is not None or profile.throttle.daily_quota is not None
        ):
            d.patient = True  # it may have been deferred before: no failure, no tolerance used
        max_rate = profile.throttle.max_rate if profile is not None else None
        if max_rate is None:
            self._rates.pop(partner_id, None)
            return None
        bucket = self._bucket(partner_id, max_rate)
        if d.receive_count <= 1 and bucket.wait() > RATE_WAIT_SECONDS:
            seconds = max(1, d.visible_after(bucket.reserve()))
            self.deferred.rate += 1
            d.fields["throttle"] = "rate"
            return Defer(seconds, f"partner rate cap {max_rate:g}/s; again in {seconds}s")
        with bucket.waiting():
            await d.abortable(bucket.acquire())
        return None

    # ---- the daily quota ---------------------------------------------------------------

    async def take_quota(
        self, d: Delivery, partner_id: str, profile: Profile | None
    ) -> Defer | str | None:
        """Count this send against the partner's daily quota: the UTC day taken (give it
        back if SES certainly never gets the job), None without a quota, or a Defer until
        00:00 UTC (at most 12 h at a time) when today is full. Store errors propagate."""
        quota = profile.throttle.daily_quota if profile is not None else None
        now = self.now()
        day = utc_day(now)
        full = self._full.get(partner_id)
        if quota is None:
            if full is not None and self._full.pop(partner_id, None) == full:  # quota removed
                await self._note(partner_id, day, None, False, now, raised_from=full[1])
            return None
        if full == (day, quota):  # known full here: no write needed to know it
            return self._defer_quota(d, partner_id, quota, now)
        if self._opened.get(partner_id) != day:
            await self._open_day(partner_id, day, quota, now)
        if not await self.store.take_quota(partner_id, quota, 1, now):
            self._full[partner_id] = (day, quota)
            await self._note(partner_id, day, quota, True, now)
            return self._defer_quota(d, partner_id, quota, now)
        # Jobs of this partner run concurrently here: forget the full mark once, as read.
        forgot = full is not None and self._full.pop(partner_id, None) == full
        if forgot and full is not None and full[0] == day and quota > full[1]:
            await self._note(partner_id, day, quota, False, now, raised_from=full[1])
        return day

    async def _open_day(self, partner_id: str, day: str, quota: int, now: datetime) -> None:
        """Before this task's first take of a UTC day: release a quota-reached mark of an
        earlier day (one conditional transaction per task, partner and day; it fails
        cheaply without a mark). Done before any take, so before this task can find the
        new day full: a Reached of today never overwrites a mark of yesterday unreleased.
        The partner's other jobs here wait for it."""
        lock = self._opening.setdefault(partner_id, asyncio.Lock())
        async with lock:
            if self._opened.get(partner_id) != day:
                await self._note(partner_id, day, quota, False, now)
                self._opened[partner_id] = day

    async def give_back(self, partner_id: str, day: str) -> None:
        """Return a send taken for `day` that SES certainly never got. Logged if it fails:
        the day then counts one send more than was made (never one more than allowed)."""
        try:
            await asyncio.shield(self.store.give_back_quota(partner_id, day))
        except Exception as exc:
            log.warning("quota_give_back_failed", partner_id=partner_id, day=day, error=repr(exc))

    def _defer_quota(self, d: Delivery, partner_id: str, quota: int, now: datetime) -> Defer:
        seconds = max(1, d.visible_after((next_utc_midnight(now) - now).total_seconds()))
        self.deferred.quota += 1
        d.fields["throttle"] = "quota"
        return Defer(seconds, f"partner daily quota {quota} reached; again in {seconds}s")

    async def _note(
        self,
        partner_id: str,
        day: str,
        quota: int | None,
        reached: bool,
        now: datetime,
        raised_from: int | None = None,
    ) -> None:
        """The quota transition; a failure is logged and never fails the job."""
        try:
            await self.transitions.note_quota(
                partner_id, day, quota, reached, now, raised_from=raised_from
            )
        except Exception as exc:
            log.error(
                "quota_transition_failed", partner_id=partner_id, reached=reached, error=repr(exc)
            )
