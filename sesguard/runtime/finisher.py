"""Settling SQS messages in batches: deletes (after their commits), and visibility changes.

See docs/design.md, "Receiving and visibility" (the finisher) and "Stop".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sesguard.aws.batching import SQS_BATCH
from sesguard.core.backoff import backoff_delay
from sesguard.logging import get_logger
from sesguard.runtime.sqs import change_visibility

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

log = get_logger(__name__)

CommitBatch = Callable[[Sequence[Any]], Awaitable[Sequence[bool]]]
"""Write these commits (at most SQS_BATCH); for each, whether it is now durable."""

Settled = Callable[[bool], None]
"""Told once per message, after its SQS call: whether SQS accepted it."""

ON_WIRE_SECONDS = 10.0  # after close()'s deadline, for flushes already on the wire


@dataclass(eq=False)
class _Entry:
    receipt: str
    visibility: int | None  # None: delete; else ChangeMessageVisibility to this
    commit: Any = None
    on_settled: Settled | None = None
    attempt: int = 0
    not_before: float = 0.0

    def settled(self, ok: bool) -> None:
        if self.on_settled is not None:
            callback, self.on_settled = self.on_settled, None
            callback(ok)


class Finisher:
    """Collects settled messages and flushes them in batches (commits first, then deletes).

    A failed delete or visibility change is logged, never raised: the message then comes
    back and the service's idempotency (the sender's once-per-job record or held-job key,
    the worker's per-object markers) turns it into a no-op.
    """

    def __init__(
        self,
        sqs: SQSClient,
        queue_url: str,
        *,
        commit: CommitBatch | None = None,
        linger: float = 0.05,
        commit_retry_base: float = 0.1,
        commit_retry_cap: float = 5.0,
        on_wire: float = ON_WIRE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.commit = commit
        self.linger = linger
        self.commit_retry_base = commit_retry_base
        self.commit_retry_cap = commit_retry_cap
        self.on_wire = on_wire
        self.clock = clock
        self._deletes: list[_Entry] = []
        self._changes: list[_Entry] = []
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False
        self._deadline: float | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="sqs-finisher")

    def done(self, receipt: str, commit: Any = None, on_settled: Settled | None = None) -> None:
        """Delete this message soon (after writing `commit`, if given)."""
        assert commit is None or self.commit is not None, "commits need a CommitBatch"
        self._add(self._deletes, _Entry(receipt, None, commit, on_settled))

    def change(self, receipt: str, seconds: int, on_settled: Settled | None = None) -> None:
        """Make this message visible again in `seconds` (0: at once)."""
        self._add(self._changes, _Entry(receipt, seconds, None, on_settled))

    @property
    def pending(self) -> int:
        return len(self._deletes) + len(self._changes) + len(self._flushes)

    async def close(self, deadline: float | None = None) -> None:
        """Flush everything pending and stop; commits still failing at `deadline`
        (a `clock()` value) are given up and their messages left in flight."""
        self._closing = True
        self._deadline = deadline
        self._wake.set()
        self._full.set()
        if self._runner is None:
            self.start()
        assert self._runner is not None
        await self._runner

    # ---- internals -----------------------------------------------------------------

    def _add(self, queue: list[_Entry], entry: _Entry) -> None:
        queue.append(entry)
        self._wake.set()
        if len(queue) >= SQS_BATCH:
            self._full.set()

    def _ready(self, now: float) -> tuple[list[_Entry], list[_Entry]]:
        return [e for e in self._deletes if e.not_before <= now], list(self._changes)

    async def _run(self) -> None:
        while True:
            now = self.clock()
            deletes, changes = self._ready(now)
            if not deletes and not changes:
                idle = not self._deletes and not self._flushes
                if self._closing and (idle or self._past_deadline(now)):
                    break
                await self._sleep_until_work(now)
                continue
            if not self._closing and len(deletes) < SQS_BATCH and len(changes) < SQS_BATCH:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.linger)
                deletes, changes = self._ready(self.clock())
            if deletes:
                batch = deletes[:SQS_BATCH]
                self._deletes = [e for e in self._deletes if e not in batch]
                self._spawn(self._flush_deletes(batch))
            if changes:
                batch = changes[:SQS_BATCH]
                self._changes = [e for e in self._changes if e not in batch]
                self._spawn(self._flush_changes(batch))
        self._give_up(self._deletes)
        if self._flushes:
            await self._wait_for_flushes()
        # Commits that failed in the last flushes came back after the loop ended.
        self._give_up(self._deletes)

    async def _wait_for_flushes(self) -> None:
        """The flushes on the wire, until the deadline plus `on_wire`; then cancelled."""
        wait = None
        if self._deadline is not None:
            wait = max(0.0, self._deadline - self.clock()) + self.on_wire
        _, hanging = await asyncio.wait(set(self._flushes), timeout=wait)
        if hanging:
            log.error(
                "flushes_abandoned",
                count=len(hanging),
                action="their messages stay in flight and come back after the visibility"
                " timeout, as already done",
            )
            for task in hanging:
                task.cancel()
            await asyncio.wait(hanging, timeout=1.0)

    def _past_deadline(self, now: float) -> bool:
        return self._deadline is not None and now >= self._deadline

    async def _sleep_until_work(self, now: float) -> None:
        self._wake.clear()
        waits = [e.not_before - now for e in self._deletes]
        if self._closing and self._deadline is not None:
            waits.append(self._deadline - now)
        timeout = max(0.0, min(waits)) if waits else None  # a finished flush wakes us too
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _give_up(self, entries: list[_Entry]) -> None:
        if entries:
            log.error(
                "commits_unwritten",
                count=len(entries),
                action="messages left in flight: they come back after the visibility timeout",
            )
            for e in entries:
                e.settled(False)
            entries.clear()

    def _spawn(self, flush: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(flush)
        self._flushes.add(task)
        task.add_done_callback(self._flush_done)

    def _flush_done(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        self._wake.set()

    async def _flush_deletes(self, batch: list[_Entry]) -> None:
        batch = await self._commit(batch)
        if not batch:
            return
        try:
            resp = await self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": e.receipt} for i, e in enumerate(batch)],
            )
        except Exception as exc:
            log.error("delete_failed", count=len(batch), error=str(exc))
            for e in batch:
                e.settled(False)
            return
        failed = {str(f.get("Id")) for f in resp.get("Failed", [])}
        if failed:
            codes = sorted({str(f.get("Code")) for f in resp.get("Failed", [])})
            log.warning("delete_failed", count=len(failed), codes=codes)
        for i, e in enumerate(batch):
            e.settled(str(i) not in failed)

    async def _commit(self, batch: list[_Entry]) -> list[_Entry]:
        """Write the batch's commits; returns the entries that may now be deleted and
        puts the others back, to be tried again after a backoff."""
        with_commit = [e for e in batch if e.commit is not None]
        if not with_commit:
            return batch
        assert self.commit is not None
        try:
            written = list(await self.commit([e.commit for e in with_commit]))
        except Exception as exc:  # the commit function should not raise; never lose one
            log.error("commit_failed", count=len(with_commit), error=str(exc))
            written = [False] * len(with_commit)
        failed = [e for e, ok in zip(with_commit, written, strict=True) if not ok]
        if failed:
            now = self.clock()
            for e in failed:
                e.attempt += 1
                e.not_before = now + backoff_delay(
                    e.attempt, self.commit_retry_base, self.commit_retry_cap
                )
            log.warning(
                "commit_retry",
                count=len(failed),
                attempt=max(e.attempt for e in failed),
                action="messages kept in flight until their commit is written",
            )
            self._deletes.extend(failed)
            self._wake.set()
        return [e for e in batch if e not in failed]

    async def _flush_changes(self, batch: list[_Entry]) -> None:
        ok = await change_visibility(
            self.sqs, self.queue_url, [(e.receipt, e.visibility or 0) for e in batch]
        )
        for e, took in zip(batch, ok, strict=True):
            e.settled(took)
