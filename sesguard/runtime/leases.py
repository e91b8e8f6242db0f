"""The account's SES send rate, shared among the sender tasks that are alive.

Each sender task keeps a lease in `L#sender` (docs/table.md) and takes R / (tasks that
count each other) of the account's rate R. Why the tasks together never exceed R, case by
case: docs/design.md, "Rate sharing across sender tasks".
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sesguard.aws import table as t
from sesguard.logging import get_logger
from sesguard.runtime.ratelimit import per_task_rate

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

log = get_logger(__name__)

PROBES_PER_RENEW = 5  # reads per renew interval while waiting to be counted


class WallClock(Protocol):
    """Seconds since the epoch: leases are compared across tasks, so not monotonic."""

    def time(self) -> float: ...


class SystemWallClock:
    def time(self) -> float:
        return time.time()


# ---- the pure part: leases + clock -> who shares, who waits, at what rate -------------


@dataclass(frozen=True)
class Lease:
    """One task's lease as read from the table."""

    lease_id: str
    alive_until: float
    sees: frozenset[str] = frozenset()
    fallback: bool = False

    def alive(self, now: float) -> bool:
        return self.alive_until > now


def view(me: str, leases: Iterable[Lease], now: float) -> frozenset[str]:
    """The tasks sharing the rate as `me` sees them: every live lease, and its own."""
    return frozenset(lease.lease_id for lease in leases if lease.alive(now)) | {me}


def waiting_on(me: str, leases: Iterable[Lease], now: float) -> frozenset[str]:
    """Live leases whose holders have not counted `me` yet (and are not in fallback).

    `me` may start sharing only when this is empty: until then one of them may still be
    taking a share computed without it.
    """
    return frozenset(
        lease.lease_id
        for lease in leases
        if lease.lease_id != me and lease.alive(now) and not lease.fallback and me not in lease.sees
    )


def dropped_by(me: str, leases: Iterable[Lease], now: float) -> frozenset[str]:
    """Live leases whose holders have read and count the tasks without `me`.

    For a task already sharing: an empty `sees` is a newcomer that has not read yet (it
    sends nothing before it has, and then it counts `me`), so it is no sign of trouble;
    a non-empty one without `me` means that holder judged `me`'s lease dead.
    """
    return frozenset(
        lease.lease_id
        for lease in leases
        if lease.lease_id != me
        and lease.alive(now)
        and not lease.fallback
        and lease.sees
        and me not in lease.sees
    )


def shared_rate(account_rate: float, tasks: int, fallback_tasks: int, counted: bool) -> float:
    """R / tasks for a task every other one counts; R / max(fallback, tasks) otherwise."""
    return per_task_rate(account_rate, tasks if counted else max(fallback_tasks, tasks))


def still_counted(written_at: float | None, now: float, ttl: float, renew: float) -> bool:
    """Whether this task's own lease is surely still alive in every reader's eyes.

    Readers drop it at written_at + ttl by their clocks; the task gives it up one renew
    interval earlier, which covers clock skew and a renewal that is late.
    """
    return written_at is not None and now - written_at < ttl - renew


# ---- the I/O part -------------------------------------------------------------------


def _default_task_id() -> str:
    return f"{socket.gethostname()}.{os.getpid()}"


def _parse(item: dict[str, Any]) -> Lease | None:
    data = t.from_item(item)
    try:
        return Lease(
            lease_id=str(data["sk"]),
            alive_until=float(data["alive_until"]),
            sees=frozenset(str(s) for s in data.get("sees", [])),
            fallback=bool(data.get("fallback", False)),
        )
    except (KeyError, TypeError, ValueError):
        log.warning("lease_unreadable", sk=data.get("sk"))
        return None


class RateShare:
    """Sender tasks' leases in DynamoDB: the account's send rate shared among the live tasks.

    `start()` returns the first rate this task may use and keeps the lease renewed in the
    background; `subscribe` hears every later change (wire it to `TokenBucket.set_rate`).
    Call `stop()` after the task's last send.
    """

    def __init__(
        self,
        dynamodb: DynamoDBClient,
        table: str,
        account_rate: float,
        fallback_tasks: int,
        *,
        task_id: str | None = None,
        renew_seconds: float = 10.0,
        ttl_seconds: float = 30.0,
        clock: WallClock | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if account_rate <= 0 or fallback_tasks < 1:
            raise ValueError("account rate must be positive and fallback tasks at least 1")
        if renew_seconds <= 0 or ttl_seconds < 2 * renew_seconds:
            raise ValueError("the lease ttl must be at least two renew intervals")
        self.dynamodb = dynamodb
        self.table = table
        self.account_rate = float(account_rate)
        self.fallback_tasks = fallback_tasks
        self.task_id = task_id or _default_task_id()
        self.renew_seconds = renew_seconds
        self.ttl_seconds = ttl_seconds
        self.clock: WallClock = clock or SystemWallClock()
        self._sleep = sleep
        self.lease_id = f"{self.task_id}/{secrets.token_hex(4)}"
        self._rate = shared_rate(self.account_rate, 1, fallback_tasks, counted=False)
        self._view: frozenset[str] = frozenset({self.lease_id})
        self._counted = False  # every other live lease counts this task: it shares
        self._reading = True  # the last read succeeded (False: in fallback, logged)
        self._written_at: float | None = None  # last successful write of the lease
        self._written: tuple[frozenset[str], bool] | None = None  # (sees, fallback) written
        self._write_failing = False
        self._waiting_on: frozenset[str] = frozenset()  # at the last read
        self._subscribers: list[Callable[[float], None]] = []
        self._renewer: asyncio.Task[None] | None = None
        self._stopped = False
        # Bounds one read and one write: a round lasts at most half a renew interval, so a
        # task whose lease is lapsing notices before the readers drop it (`still_counted`).
        self._io_timeout = renew_seconds / 4

    @property
    def task_rate(self) -> float:
        return self._rate

    @property
    def tasks(self) -> int:
        """How many tasks this task counts (its view, itself included)."""
        return len(self._view)

    def subscribe(self, callback: Callable[[float], None]) -> None:
        self._subscribers.append(callback)

    async def start(self) -> float:
        """Write the lease, wait until the others count this task, start renewing.

        Returns at once when no other task is alive, after at most about one renew
        interval when others are (a crashed task's lease is waited for until it lapses,
        ttl at most), and with the fallback rate when the leases cannot be read.
        """
        await self._write(sees=frozenset(), fallback=False)
        logged_wait = False
        deadline = self.clock.time() + 2 * self.ttl_seconds
        while True:
            await self._cycle()
            if self._counted or not self._reading or self.clock.time() >= deadline:
                break
            if self._waiting_on and not logged_wait:
                logged_wait = True
                log.info(
                    "send_rate_waiting",
                    waiting_on=sorted(self._waiting_on),
                    hint="the other tasks count this one at their next read",
                    lease=self.lease_id,
                )
            await self._sleep(self.renew_seconds / PROBES_PER_RENEW)
        if self._stopped:  # stop() came while starting: do not renew a released lease
            return self._rate
        log.info(
            "send_rate_share",
            reason="started",
            task_rate=self._rate,
            tasks=self.tasks,
            counted=self._counted,
            account_rate=self.account_rate,
            lease=self.lease_id,
        )
        self._renewer = asyncio.create_task(self._renew_forever(), name="sesguard-lease")
        return self._rate

    async def stop(self) -> None:
        """Stop renewing and delete the lease, so the others take its share at once."""
        if self._stopped:
            return
        self._stopped = True
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self._written_at is None:
            return
        try:
            await asyncio.wait_for(
                self.dynamodb.delete_item(
                    TableName=self.table, Key=t.key(t.SENDER_LEASES_PK, self.lease_id)
                ),
                self._io_timeout,
            )
        except Exception as exc:  # the lease lapses by itself within ttl
            log.warning("lease_delete_failed", lease=self.lease_id, error=repr(exc)[:300])
        else:
            log.info("lease_released", lease=self.lease_id)

    async def _renew_forever(self) -> None:
        while True:
            pause = self.renew_seconds
            if not self._counted:
                pause /= PROBES_PER_RENEW  # get counted (again) soon
            elif self._written_at is not None:  # wake in time to give up a lapsing lease
                lapse = self._written_at + self.ttl_seconds - self.renew_seconds
                pause = min(pause, max(0.0, lapse - self.clock.time()))
            await self._sleep(pause)
            try:
                await self._cycle()
            except Exception:  # never lose the renewer to a bug in one round
                log.exception("lease_renewal_failed", lease=self.lease_id)

    async def _cycle(self) -> None:
        """One round: read the leases, lower at once, write the lease, then raise."""
        now = self.clock.time()
        if self._counted and not still_counted(
            self._written_at, now, self.ttl_seconds, self.renew_seconds
        ):
            self._fall_back("lease_not_renewed")
        try:
            leases = await self._read()
        except Exception as exc:
            if self._reading:
                self._reading = False
                log.warning(
                    "send_rate_fallback",
                    reason="leases_unreadable",
                    error=repr(exc)[:300],
                    fallback_tasks=self.fallback_tasks,
                    lease=self.lease_id,
                )
            self._fall_back(None)
            await self._write(sees=self._view, fallback=True)
            return
        if not self._reading:
            self._reading = True
            log.info("send_rate_leases_readable", lease=self.lease_id)
        if self._counted and (dropped := dropped_by(self.lease_id, leases, now)):
            self._fall_back("not_counted_by_others", by=sorted(dropped))
        seen = view(self.lease_id, leases, now)
        written_plain = self._written is not None and not self._written[1]
        self._waiting_on = waiting_on(self.lease_id, leases, now)
        counted = self._counted or (written_plain and not self._waiting_on)
        rate = shared_rate(self.account_rate, len(seen), self.fallback_tasks, counted)
        self._apply(min(self._rate, rate), seen)
        if await self._write(sees=seen, fallback=False) and counted:
            self._counted = True
            self._apply(rate, seen)

    def _fall_back(self, reason: str | None, **fields: Any) -> None:
        """Stop sharing: the others may not count this task (reads fail, lease lapsed)."""
        if reason is not None and self._counted:
            log.warning("send_rate_fallback", reason=reason, lease=self.lease_id, **fields)
        self._counted = False
        rate = shared_rate(self.account_rate, len(self._view), self.fallback_tasks, False)
        self._apply(min(self._rate, rate), self._view)

    def _apply(self, rate: float, seen: frozenset[str]) -> None:
        self._view = seen
        if math.isclose(rate, self._rate, rel_tol=1e-12):
            return
        previous, self._rate = self._rate, rate
        if self._renewer is None:  # still starting: `start()` reports the first rate
            return
        log.info(
            "send_rate_share",
            reason="changed",
            task_rate=rate,
            previous=previous,
            tasks=len(seen),
            counted=self._counted,
            lease=self.lease_id,
        )
        for callback in self._subscribers:
            callback(rate)

    async def _read(self) -> list[Lease]:
        return await asyncio.wait_for(self._query(), self._io_timeout)

    async def _query(self) -> list[Lease]:
        leases: list[Lease] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": t.SENDER_LEASES_PK}},
            "ConsistentRead": True,
        }
        while True:
            page = await self.dynamodb.query(**kwargs)
            leases += [lease for item in page.get("Items", []) if (lease := _parse(item))]
            if "LastEvaluatedKey" not in page:
                return leases
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def _write(self, sees: frozenset[str], fallback: bool) -> bool:
        """Write the lease if it says something new or is due for renewal; False on error."""
        now = self.clock.time()
        due = self._written_at is None or now - self._written_at >= self.renew_seconds * (
            1 - 0.5 / PROBES_PER_RENEW
        )
        if not due and self._written == (sees, fallback):
            return True
        alive_until = now + self.ttl_seconds
        item = {
            "pk": t.SENDER_LEASES_PK,
            "sk": self.lease_id,
            "alive_until": round(alive_until, 3),
            t.TTL_ATTRIBUTE: math.ceil(alive_until),
            "sees": sorted(sees),
            "fallback": fallback,
            "rate": round(self._rate, 6),
            "task_id": self.task_id,
        }
        try:
            await asyncio.wait_for(
                self.dynamodb.put_item(TableName=self.table, Item=t.to_item(item)),
                self._io_timeout,
            )
        except Exception as exc:
            if not self._write_failing:  # once per outage, like the fallback itself
                log.warning("lease_write_failed", lease=self.lease_id, error=repr(exc)[:300])
            self._write_failing = True
            return False
        self._write_failing = False
        self._written_at = now
        self._written = (sees, fallback)
        return True
