"""The partner gate: may this partner send now? (sesguard.domain.judgement answers it.)

The judgement costs one Query (profile, totals, hourly buckets); the gate caches it per
partner for `settings.gate_cache_seconds`, so at steady state it costs one read per
partner per TTL instead of one per job. Concurrent jobs of a partner whose entry is
missing share one read (single flight). A pause, resume or limits change written
anywhere bumps the status epoch (sesguard.domain.transitions), which
`follow` polls: when it moves, every cached judgement is dropped, so a pause lands here
within a poll, not a TTL. The TTL is the backstop when the epoch cannot be read.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sesguard.core.policy import Level
from sesguard.domain.judgement import Enforcement, Judgement, PartnerJudge
from sesguard.logging import get_logger

log = get_logger(__name__)


@dataclass
class _Entry:
    expires: float
    future: asyncio.Future[Judgement]


class Gate:
    def __init__(
        self,
        judge: PartnerJudge,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.judge = judge
        self.ttl = ttl
        self.clock = clock
        self.reads = 0  # judgements read, for the counters line and the benchmark
        self.pauses = 0  # pause transitions this task won
        self._cache: dict[str, _Entry] = {}
        self._levels: dict[str, Level] = {}

    async def check(self, partner_id: str) -> Judgement:
        entry = self._cache.get(partner_id)
        if entry is None or (entry.future.done() and entry.expires <= self.clock()):
            entry = _Entry(self.clock() + self.ttl, asyncio.ensure_future(self._load(partner_id)))
            entry.future.add_done_callback(functools.partial(self._loaded, partner_id, entry))
            self._cache[partner_id] = entry
        # shield: one waiter being cancelled must not cancel the read the others share
        return await asyncio.shield(entry.future)

    def invalidate(self, partner_id: str) -> None:
        self._cache.pop(partner_id, None)

    async def follow(self, read_epoch: Callable[[], Awaitable[int]], every: float) -> None:
        """Drop every cached judgement when the status epoch moves (runs until cancelled).
        A failed read is logged once per outage; the cache's TTL still bounds staleness."""
        seen: int | None = None
        failing = False
        while True:
            try:
                epoch = await read_epoch()
            except Exception as exc:
                if not failing:
                    log.warning("status_epoch_unreadable", error=repr(exc))
                failing = True
            else:
                failing = False
                if seen is not None and epoch != seen:
                    self._cache.clear()
                    log.info("partner_status_changed", epoch=epoch, judgements_dropped=True)
                seen = epoch
            await asyncio.sleep(every)

    def _loaded(self, partner_id: str, entry: _Entry, _fut: object = None) -> None:
        fut = entry.future
        if fut.cancelled() or fut.exception() is not None:
            if self._cache.get(partner_id) is entry:
                del self._cache[partner_id]  # never cache a failure
            return
        # the TTL runs from when the answer arrived, not from when it was asked for
        entry.expires = self.clock() + self.ttl

    async def _load(self, partner_id: str) -> Judgement:
        self.reads += 1
        judgement = await self.judge.judge(partner_id)
        self._note_level(judgement)
        if judgement.enforcement in (Enforcement.PAUSED, Enforcement.PAUSE_LOST):
            self.pauses += judgement.enforcement is Enforcement.PAUSED
            # Do not keep this answer: the next job reads the status as written.
            asyncio.get_running_loop().call_soon(self.invalidate, partner_id)
        return judgement

    def _note_level(self, judgement: Judgement) -> None:
        """Log a partner's warn level when it is reached (not on every read); a breach is
        the judgement's own `policy_breach` line."""
        verdict, partner_id = judgement.verdict, judgement.partner_id
        if verdict is None:
            return
        level: Level = verdict.level
        if self._levels.get(partner_id) != level:
            self._levels[partner_id] = level
            if level is Level.WARN:
                log.warning("partner_near_limit", partner_id=partner_id, reason=verdict.reason)
