"""The account rate shared among live sender tasks (sesguard.runtime.leases).

Pure rules first, then `RateShare` against moto, driven by a virtual clock: time moves only
when the test moves it, and only once every task's renewal loop is asleep again, so what the
tasks grant per time slice is counted exactly, whatever the machine's load.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from structlog.testing import capture_logs

from sesguard.aws import table as t
from sesguard.runtime import leases
from sesguard.runtime.leases import (
    Lease,
    RateShare,
    dropped_by,
    shared_rate,
    still_counted,
    view,
    waiting_on,
)
from sesguard.runtime.ratelimit import TokenBucket

NOW = 1_700_000_000.0

# ---- pure rules ---------------------------------------------------------------------------


def test_view_counts_live_leases_and_itself() -> None:
    ls = [Lease("a", NOW + 5), Lease("b", NOW), Lease("c", NOW - 1), Lease("d", NOW + 0.1)]
    assert view("me", ls, NOW) == {"me", "a", "d"}  # alive_until is exclusive
    assert view("a", [Lease("a", NOW - 9)], NOW) == {"a"}  # its own, even if it looks stale


def test_a_newcomer_waits_for_every_live_lease_to_count_it() -> None:
    assert waiting_on("me", [Lease("me", NOW + 30)], NOW) == frozenset()  # alone: start now
    ls = [
        Lease("me", NOW + 30),
        Lease("read-before-me", NOW + 30, frozenset({"read-before-me"})),
        Lease("not-read-yet", NOW + 30),  # an empty `sees` acknowledges nobody
        Lease("counts-me", NOW + 30, frozenset({"counts-me", "me"})),
        Lease("fallback", NOW + 30, frozenset({"fallback"}), fallback=True),
        Lease("crashed", NOW - 0.5, frozenset({"crashed"})),
    ]
    assert waiting_on("me", ls, NOW) == {"read-before-me", "not-read-yet"}
    # Once they have read and written, and the crashed lease has lapsed: counted.
    ls2 = [Lease(x.lease_id, x.alive_until, x.sees | {"me"}, x.fallback) for x in ls]
    assert waiting_on("me", ls2, NOW) == frozenset()


def test_a_sharing_task_is_dropped_only_by_a_lease_that_read_without_it() -> None:
    ls = [
        Lease("me", NOW + 30, frozenset({"me", "a"})),
        Lease("a", NOW + 30, frozenset({"me", "a"})),
        Lease("newcomer", NOW + 30),  # has not read yet: sends nothing before it has
        Lease("fallback", NOW + 30, frozenset({"fallback"}), fallback=True),
        Lease("dead", NOW - 1, frozenset({"dead"})),
    ]
    assert dropped_by("me", ls, NOW) == frozenset()
    ls.append(Lease("skewed", NOW + 30, frozenset({"skewed", "a"})))  # judged `me` dead
    assert dropped_by("me", ls, NOW) == {"skewed"}


def test_rate_counted_or_fallback() -> None:
    assert shared_rate(12, 3, fallback_tasks=10, counted=True) == pytest.approx(4)
    assert shared_rate(12, 3, fallback_tasks=4, counted=False) == pytest.approx(3)
    # More tasks seen than the fallback count: the larger divisor is the safe one.
    assert shared_rate(12, 6, fallback_tasks=4, counted=False) == pytest.approx(2)


def test_own_lease_is_given_up_one_renew_interval_before_readers_drop_it() -> None:
    assert still_counted(NOW, NOW + 19.9, ttl=30, renew=10)
    assert not still_counted(NOW, NOW + 20, ttl=30, renew=10)
    assert not still_counted(None, NOW, ttl=30, renew=10)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        RateShare(None, "t", 0, 1)
    with pytest.raises(ValueError):
        RateShare(None, "t", 10, 0)
    with pytest.raises(ValueError):
        RateShare(None, "t", 10, 1, renew_seconds=10, ttl_seconds=15)


# ---- virtual time ----------------------------------------------------------------------


class VirtualTime:
    """Wall and monotonic seconds that move only in `advance`; `sleep` waits for them.

    `advance` wakes sleepers one at a time, in deadline order, and lets each finish its
    real I/O (against moto) and fall asleep again before the next: `actors` says how
    many sleepers there are when everything is quiet.
    """

    def __init__(self) -> None:
        self.now = NOW
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.actors = 0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (self.now + seconds, next(self._seq), fut))
        await fut

    def share(
        self, dynamodb: Any, table: str, task_id: str, rate: float = 30, fallback: int = 10
    ) -> RateShare:
        """A RateShare on this virtual time (default renew 10 s, ttl 30 s)."""
        return RateShare(
            dynamodb, table, rate, fallback, task_id=task_id, clock=self, sleep=self.sleep
        )

    def _sleeping(self) -> int:
        return sum(1 for _, _, f in self._heap if not f.done())

    async def settle(self) -> None:
        limit = time.monotonic() + 30
        while self._sleeping() != self.actors:
            assert time.monotonic() < limit, f"{self._sleeping()} asleep, {self.actors} actors"
            await asyncio.sleep(0.001)

    async def advance(self, to: float) -> None:
        await self.settle()
        while self._heap and self._heap[0][0] <= to:
            deadline, _, fut = heapq.heappop(self._heap)
            if fut.done():  # cancelled (a stopped or crashed task)
                continue
            self.now = max(self.now, deadline)
            fut.set_result(None)
            await asyncio.sleep(0)
            await self.settle()
        self.now = to


# ---- one RateShare against moto ----------------------------------------------------------


async def _lease_items(clients: Any, table: str) -> list[dict[str, Any]]:
    resp = await clients.dynamodb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": t.SENDER_LEASES_PK}},
        ConsistentRead=True,
    )
    return [t.from_item(i) for i in resp["Items"]]


async def test_a_lone_task_takes_the_whole_rate_and_its_lease_says_so(
    clients: Any, table: str
) -> None:
    vt = VirtualTime()
    share = vt.share(clients.dynamodb, table, "t1", 40, 10)
    vt.actors = 1
    assert await share.start() == pytest.approx(40)
    (item,) = await _lease_items(clients, table)
    assert item["sk"] == share.lease_id and share.lease_id.startswith("t1/")
    assert item["alive_until"] == pytest.approx(NOW + 30)
    assert item[t.TTL_ATTRIBUTE] == int(NOW + 30)
    assert item["sees"] == [share.lease_id] and item["fallback"] is False
    await vt.advance(NOW + 25)  # renewed at +10 and +20
    (item,) = await _lease_items(clients, table)
    assert item["alive_until"] == pytest.approx(NOW + 50)
    vt.actors = 0
    await share.stop()
    assert await _lease_items(clients, table) == []


async def test_a_newcomer_starts_only_after_the_running_task_has_lowered_its_rate(
    clients: Any, table: str
) -> None:
    vt = VirtualTime()
    a = vt.share(clients.dynamodb, table, "a")
    b = vt.share(clients.dynamodb, table, "b")
    a_rates: list[float] = []
    a.subscribe(a_rates.append)
    vt.actors = 1
    assert await a.start() == pytest.approx(30)
    await vt.advance(NOW + 3)
    vt.actors = 2
    starting = asyncio.create_task(b.start())
    await vt.advance(NOW + 9.9)  # `a` reads next at +10: `b` must wait for it
    assert not starting.done() and a.task_rate == pytest.approx(30)
    await vt.advance(NOW + 10)
    assert a_rates == [pytest.approx(15)]
    await vt.advance(NOW + 11)  # `b` re-reads every 2 s while it waits
    assert starting.done() and starting.result() == pytest.approx(15)
    vt.actors = 0
    await asyncio.gather(a.stop(), b.stop())


async def test_the_share_of_a_crashed_task_comes_back_after_its_ttl(
    clients: Any, table: str
) -> None:
    vt = VirtualTime()
    a = vt.share(clients.dynamodb, table, "a")
    b = vt.share(clients.dynamodb, table, "b")
    vt.actors = 2
    await a.start()
    starting = asyncio.create_task(b.start())
    await vt.advance(NOW + 10)
    assert await starting == pytest.approx(15)
    # `b` dies at +12 without deleting its lease; it last wrote at +10 (alive until +40).
    await vt.advance(NOW + 12)
    assert b._renewer is not None
    b._renewer.cancel()
    vt.actors = 1
    await vt.advance(NOW + 39)
    assert a.task_rate == pytest.approx(15)  # +20, +30: the lease is still alive
    await vt.advance(NOW + 40)  # +40: it is not
    assert a.task_rate == pytest.approx(30)
    vt.actors = 0
    await a.stop()


class Intercepted:
    """The real (moto) DynamoDB client, each call preceded by `before(operation)`: where a
    test injects an outage, holds a call, or adds latency."""

    def __init__(self, inner: Any, before: Callable[[str], Awaitable[None]]) -> None:
        self.inner = inner
        self.before = before

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def call(**kwargs: Any) -> Any:
            await self.before(name)
            return await method(**kwargs)

        return call


@dataclass
class Outage:
    """Every call fails while `down`; calls named in `failing` fail too."""

    down: bool = False
    failing: set[str] = field(default_factory=set)

    async def __call__(self, operation: str) -> None:
        if self.down or operation in self.failing:
            raise EndpointConnectionError(endpoint_url="http://dynamodb.invalid")


def jitter(rng: random.Random) -> Callable[[str], Awaitable[None]]:
    """A few milliseconds more per call (real time): tasks starting together interleave
    their reads and writes differently in each run."""

    async def before(_operation: str) -> None:
        await asyncio.sleep(rng.uniform(0, 0.004))

    return before


class HoldNthPut:
    """Holds the n-th put_item until `release` is set."""

    def __init__(self, nth: int) -> None:
        self.nth = nth
        self.puts = 0
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, operation: str) -> None:
        if operation == "put_item":
            self.puts += 1
            if self.puts == self.nth:
                self.holding.set()
                await self.release.wait()


async def test_a_lease_written_before_its_holder_read_acknowledges_nobody(
    clients: Any, table: str
) -> None:
    """`a` has read (nobody else) and is about to take the whole rate; `b` reads `a`'s
    first lease, whose `sees` is empty, in between: `b` must wait for `a` to count it."""
    vt = VirtualTime()
    held = HoldNthPut(2)  # `a`'s second write: the one after its read
    a = vt.share(Intercepted(clients.dynamodb, held), table, "a")
    b = vt.share(clients.dynamodb, table, "b")
    a_starting = asyncio.create_task(a.start())
    await held.holding.wait()
    vt.actors = 1
    b_starting = asyncio.create_task(b.start())
    await vt.settle()  # `b` wrote, read `a`'s lease with an empty `sees`, and waits
    assert not b_starting.done()
    held.release.set()
    vt.actors = 2
    assert await a_starting == pytest.approx(30)  # `a` saw nobody: the whole rate
    await vt.advance(NOW + 9.9)
    assert not b_starting.done()
    await vt.advance(NOW + 10)  # `a` reads, counts `b`, lowers; `b` sees that
    assert a.task_rate == pytest.approx(15)
    assert await b_starting == pytest.approx(15)
    vt.actors = 0
    await asyncio.gather(a.stop(), b.stop())


async def test_a_task_that_cannot_renew_gives_up_its_share_before_its_lease_lapses(
    clients: Any, table: str
) -> None:
    vt = VirtualTime()
    outage = Outage()
    a = vt.share(clients.dynamodb, table, "a")
    b = vt.share(Intercepted(clients.dynamodb, outage), table, "b")
    vt.actors = 2
    await a.start()
    starting = asyncio.create_task(b.start())
    await vt.advance(NOW + 10)
    assert await starting == pytest.approx(15)  # `b` last wrote its lease at +10
    outage.failing = {"put_item"}  # reads work, writes do not
    with capture_logs() as logs:
        await vt.advance(NOW + 29.9)
        assert b.task_rate == pytest.approx(15)
        await vt.advance(NOW + 30)  # its lease counts until +40 for the others
        assert b.task_rate == pytest.approx(3)  # 30 / 10: the fallback, 10 s ahead
        assert a.task_rate == pytest.approx(15)
        await vt.advance(NOW + 40)
        assert a.task_rate == pytest.approx(30)  # `b`'s lease has lapsed
        outage.failing = set()
        await vt.advance(NOW + 52)  # `b` writes again; `a` counts it at +50, `b` sees that
    assert a.task_rate == pytest.approx(15) and b.task_rate == pytest.approx(15)
    fallbacks = [e for e in logs if e["event"] == "send_rate_fallback"]
    assert [e["reason"] for e in fallbacks] == ["lease_not_renewed"]
    vt.actors = 0
    await asyncio.gather(a.stop(), b.stop())


async def test_unreadable_leases_fall_back_to_the_configured_count_logged_once(
    clients: Any, table: str
) -> None:
    vt = VirtualTime()
    outage = Outage(down=True)
    share = vt.share(Intercepted(clients.dynamodb, outage), table, "t", 40, 8)
    rates: list[float] = []
    share.subscribe(rates.append)
    vt.actors = 1
    with capture_logs() as logs:
        assert await share.start() == pytest.approx(5)  # 40 / 8
        await vt.advance(NOW + 60)  # 30 more rounds, all failing
        events = [e["event"] for e in logs]
        assert events.count("send_rate_fallback") == 1
        assert events.count("lease_write_failed") == 1
        assert rates == []
        outage.down = False  # back: the newcomer's path, alone, so the whole rate
        await vt.advance(NOW + 65)
        assert share.task_rate == pytest.approx(40) and rates == [pytest.approx(40)]
        assert [e["event"] for e in logs].count("send_rate_leases_readable") == 1
    vt.actors = 0
    await share.stop()


async def test_a_missing_table_is_a_fallback_too(clients: Any) -> None:
    vt = VirtualTime()
    share = vt.share(clients.dynamodb, "no-such-table", "t", 40, 4)
    vt.actors = 1
    with capture_logs() as logs:
        assert await share.start() == pytest.approx(10)
    assert [e["event"] for e in logs].count("send_rate_fallback") == 1
    vt.actors = 0
    await share.stop()


# ---- a fleet: tasks start, stop and crash; together they stay under the account rate --------

RATE = 40.0  # the account's sends per second
TICK = 0.05  # consumers take every token they may, every TICK seconds (a backlog)


@dataclass
class Task:
    share: RateShare
    bucket: TokenBucket | None = None
    granted: int = 0


@dataclass
class Fleet:
    dynamodb: Any
    table: str
    vt: VirtualTime = field(default_factory=VirtualTime)
    tasks: dict[str, Task] = field(default_factory=dict)
    starting: dict[str, asyncio.Task[float]] = field(default_factory=dict)
    per_tick: list[int] = field(default_factory=list)
    rate_sums: list[float] = field(default_factory=list)

    def sending(self) -> list[Task]:
        return [task for task in self.tasks.values() if task.bucket is not None]

    def check_sum(self, _rate: float = 0.0) -> None:
        self.rate_sums.append(sum(task.share.task_rate for task in self.sending()))

    def start(self, name: str) -> None:
        share = self.vt.share(self.dynamodb, self.table, name, RATE)
        self.tasks[name] = Task(share)
        self.starting[name] = asyncio.create_task(share.start())
        self.vt.actors += 1

    async def stop(self, name: str) -> None:
        task = self.tasks.pop(name)
        self.vt.actors -= 1
        await task.share.stop()  # after its last send, as the sender does

    def crash(self, name: str) -> None:
        task = self.tasks.pop(name)
        self.vt.actors -= 1
        assert task.share._renewer is not None  # the process dies: no stop(), lease stays
        task.share._renewer.cancel()

    def _started(self) -> None:
        for name, fut in list(self.starting.items()):
            if fut.done():
                del self.starting[name]
                task = self.tasks[name]
                task.bucket = TokenBucket(fut.result(), clock=self.vt)
                task.bucket.drain()  # a new task starts with nothing saved up
                task.share.subscribe(task.bucket.set_rate)
                task.share.subscribe(self.check_sum)
                self.check_sum()

    async def run(self, script: dict[float, Callable[[], Any]], until: float) -> None:
        for step in range(round(until / TICK) + 1):
            at = step * TICK
            await self.vt.advance(NOW + at)
            for when in [w for w in script if w <= at + 1e-9]:
                result = script.pop(when)()
                if asyncio.iscoroutine(result):
                    await result
                await self.vt.settle()
            self._started()
            granted = 0
            for task in self.sending():
                assert task.bucket is not None
                while task.bucket.try_acquire():
                    task.granted += 1
                    granted += 1
            self.per_tick.append(granted)
        for name in list(self.tasks):
            await self.stop(name)

    def worst_excess(self) -> float:
        """max over every window [a, b] of ticks: tokens granted - RATE * (b - a + 1) ticks."""
        worst = best = float("-inf")
        for n in self.per_tick:
            x = n - RATE * TICK
            best = x if best < 0 else best + x
            worst = max(worst, best)
        return worst


def _script(fleet: Fleet) -> dict[float, Callable[[], Any]]:
    return {
        0.0: lambda: fleet.start("a"),  # alone: the whole rate at once
        30.0: lambda: fleet.start("b"),
        33.0: lambda: fleet.start("c"),  # while `b` still waits to be counted
        90.0: lambda: fleet.start("d"),
        150.0: lambda: fleet.stop("b"),
        200.0: lambda: fleet.crash("c"),  # its share comes back after the ttl
        260.0: lambda: (fleet.start("e"), fleet.start("f")),  # together, racing
        330.0: lambda: fleet.stop("a"),
    }


async def test_tasks_together_never_exceed_the_account_rate_and_use_most_of_it(
    clients: Any, table: str
) -> None:
    fleet = Fleet(clients.dynamodb, table)
    duration = 400.0
    await fleet.run(_script(fleet), until=duration)
    assert max(fleet.rate_sums) <= RATE * (1 + 1e-9)
    # Each task may carry less than one token from one tick to the next: 6 tasks ran.
    assert fleet.worst_excess() <= 6
    used = sum(fleet.per_tick) / (RATE * duration)
    assert used >= 0.85, used
    assert await _lease_items(clients, table) != []  # the crashed task's lease, until TTL
    assert {i["task_id"] for i in await _lease_items(clients, table)} == {"c"}


async def test_without_the_newcomer_rule_the_fleet_would_exceed_the_rate(
    clients: Any, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fleet test has teeth: newcomers that take their share at once overshoot."""
    monkeypatch.setattr(leases, "waiting_on", lambda *_: frozenset())
    fleet = Fleet(clients.dynamodb, table)
    await fleet.run(_script(fleet), until=120.0)
    assert max(fleet.rate_sums) > RATE * 1.2
    assert fleet.worst_excess() > 100


@pytest.mark.parametrize("seed", range(4))
async def test_tasks_starting_together_in_any_order_stay_under_the_rate(
    clients: Any, table: str, seed: int
) -> None:
    fleet = Fleet(Intercepted(clients.dynamodb, jitter(random.Random(seed))), table)
    names = "abcdefg"

    def start(group: str) -> None:
        for name in group:
            fleet.start(name)

    async def stop(group: str) -> None:
        for name in group:
            await fleet.stop(name)

    script: dict[float, Callable[[], Any]] = {
        0.0: lambda: start(names[:5]),
        45.0: lambda: stop("bd"),
        45.5: lambda: start(names[5:]),
    }
    await fleet.run(script, until=90.0)
    assert max(fleet.rate_sums) <= RATE * (1 + 1e-9)
    assert fleet.worst_excess() <= len(names)
    # Everyone ended up counted: five shares of the whole rate, before the stops.
    assert sum(fleet.per_tick[round(30 / TICK) : round(40 / TICK)]) >= 0.97 * RATE * 10
