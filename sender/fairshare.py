"""A fair share of one sender task's account-rate tokens among the partners it holds jobs of.

Two decisions, both pure (`FairPlan`, over plain numbers; the clock and the waiting are
`FairTokens`'s, at the edge):

- **who gets the next token**: among the partners with a job waiting for one in this task,
  the one whose virtual finish tag is lowest (start-time fair queueing): each partner's tag
  moves on by 1 / weight per token, and a partner that starts waiting again begins at the
  current virtual time, so it is served next instead of after everyone's backlog. Equal
  weights give equal shares; a partner alone gets every token (work-conserving).
- **whether a job waits in hand or goes back** (`Defer`): a partner may have about
  HOLD_SECONDS of its share waiting in this task, and never so many that the task's hands
  (SESGUARD_CONCURRENCY) lack room for one more receive. A job beyond that goes back to
  the queue until about its turn (a per-partner ledger of slots at its share), so the
  task can read past one partner's backlog to the other partners' jobs. While the ledger
  has slots booked ahead, a partner's new jobs join its end: the ones deferred earlier
  come back into the hand first, at the share, and nothing piles up in hand. A job is deferred
  only on its first FAIR_DEFERS receives and only within a quarter of the outage tolerance
  of its first receive: deferring can neither reach the queue's maxReceiveCount nor eat
  much of the time a later outage may take.

See docs/design.md, "Fair share of the account rate".
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from sesguard.runtime.ratelimit import Clock, TokenBucket
from sesguard.runtime.retry import FAIR_DEFERS

HOLD_SECONDS = 1.0  # of its share a partner may have waiting in hand; the rest is deferred
MIN_DEFER_SECONDS = 1.0  # SQS visibility is whole seconds: a nearer turn is deferred by 1 s


@dataclass
class FairPlan:
    """The scheduling state of one task: jobs waiting per partner, virtual finish tags,
    the deferral ledger. `hands`: messages the task holds at most; `room`: hands a receive
    needs free (the SQS batch)."""

    hands: int
    room: int
    weights: Mapping[str, float] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)
    _finish: dict[str, float] = field(default_factory=dict)
    _vtime: float = 0.0
    _next_slot: dict[str, float] = field(default_factory=dict)

    def weight(self, partner: str) -> float:
        return max(1e-6, float(self.weights.get(partner, 1.0)))

    def share(self, partner: str, rate: float) -> float:
        """Tokens per second `partner` gets now: its weight's part of `rate` among the
        partners waiting (itself included)."""
        active = {p for p, n in self.waiting.items() if n > 0} | {partner}
        return rate * self.weight(partner) / sum(self.weight(p) for p in active)

    def limit(self, partner: str, rate: float) -> int:
        """Jobs of `partner` that may wait in hand: HOLD_SECONDS of its share, leaving
        room for a receive, at least one."""
        by_rate = math.floor(self.share(partner, rate) * HOLD_SECONDS)
        return max(1, min(by_rate, self.hands - self.room))

    def admit(
        self, partner: str, rate: float, now: float, receives: int, budget: float
    ) -> float | None:
        """None: the job waits in hand for a token. Else the seconds to defer it by.

        `receives`: its receive count; `budget`: seconds it may still spend deferred.

        A job waits in hand while its partner holds fewer than its limit, unless it is a
        first look and the partner's ledger has slots booked ahead (the jobs deferred
        before it come first: they return into the hand at its share). Otherwise it takes
        the ledger's next slot, after the jobs in hand."""
        held = self.waiting.get(partner, 0)
        booked = self._next_slot.get(partner, 0.0)
        share = self.share(partner, rate)
        in_hand_until = now + held / share
        room = held < self.limit(partner, rate)
        if receives > FAIR_DEFERS or budget < MIN_DEFER_SECONDS:
            return None
        if room and (receives > 1 or booked <= in_hand_until):
            return None
        turn = max(in_hand_until + 1 / share, booked)
        self._next_slot[partner] = turn + 1 / share
        return min(max(MIN_DEFER_SECONDS, turn - now), budget)

    def join(self, partner: str) -> None:
        """A job of `partner` starts waiting for a token."""
        n = self.waiting.get(partner, 0)
        if n == 0:  # back from idle: starts at the current virtual time, not its old tag
            self._finish[partner] = max(self._finish.get(partner, 0.0), self._vtime)
        self.waiting[partner] = n + 1

    def leave(self, partner: str) -> None:
        """A waiting job of `partner` stopped waiting (served, or aborted)."""
        n = self.waiting.get(partner, 0) - 1
        if n > 0:
            self.waiting[partner] = n
        else:
            self.waiting.pop(partner, None)

    def pick(self) -> str | None:
        """The partner the next token goes to (its job leaves the waiting), or None."""
        if not self.waiting:
            return None
        partner = min(self.waiting, key=lambda p: (self._finish.get(p, 0.0), p))
        self._vtime = self._finish.get(partner, 0.0)
        self._finish[partner] = self._vtime + 1 / self.weight(partner)
        self.leave(partner)
        return partner

    def forget_idle(self) -> None:
        """Drop the tags of partners with nothing waiting once they are all behind the
        virtual time (bounded memory; they would restart at it anyway)."""
        for p in [p for p, f in self._finish.items() if p not in self.waiting and f <= self._vtime]:
            del self._finish[p]


class FairTokens:
    """The task's token bucket, handed out by a `FairPlan` (the I/O edge: futures and the
    bucket's waiting). One dispatcher takes tokens from the bucket one at a time while
    anyone waits, and gives each to the partner the plan picks."""

    def __init__(self, bucket: TokenBucket, plan: FairPlan, clock: Clock) -> None:
        self.bucket = bucket
        self.plan = plan
        self.clock = clock
        self.deferred = 0  # jobs sent back for their turn (a counter for the log line)
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        self._dispatcher: asyncio.Task[None] | None = None

    def admit(self, partner: str, receives: int, budget: float) -> float | None:
        seconds = self.plan.admit(
            partner, self.bucket.effective_rate, self.clock.monotonic(), receives, budget
        )
        if seconds is not None:
            self.deferred += 1
        return seconds

    async def acquire(self, partner: str) -> None:
        """One token for a job of `partner`, in the plan's order."""
        if not self.plan.waiting and self.bucket.try_acquire():
            self.plan.join(partner)
            self.plan.pick()  # moves its tag on: a token it took counts against it
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(partner, deque()).append(fut)
        self.plan.join(partner)
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="fair-tokens")
        try:
            await fut
        except asyncio.CancelledError:
            if not fut.done() or fut.cancelled():
                queue = self._queues.get(partner)
                if queue is not None and fut in queue:
                    queue.remove(fut)
                    self.plan.leave(partner)
            raise

    async def _dispatch(self) -> None:
        token = False
        while self.plan.waiting:
            if not token:
                await self.bucket.acquire()
                token = True
            partner = self.plan.pick()
            if partner is None:  # every waiter gave up meanwhile: one token unused
                break
            queue = self._queues[partner]
            fut = queue.popleft()
            if not queue:
                del self._queues[partner]
            if fut.done():  # its waiter was cancelled; the pick counted as its leaving
                continue
            fut.set_result(None)
            token = False
        self.plan.forget_idle()

    async def close(self) -> None:
        if self._dispatcher is not None and not self._dispatcher.done():
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
