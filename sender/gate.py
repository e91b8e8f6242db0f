"""The partner gate: may this partner send now?

One `store.get_state` (a single Query: profile, totals, hourly buckets) answers it for a
partner, and the answer is cached in the task for `settings.gate_cache_seconds`, so at
steady state the gate costs one read per partner per TTL instead of one per job.
Concurrent jobs of a partner whose entry is missing share one read (single flight).
A pause written elsewhere (another task, an operator) takes effect here within the TTL.

If the policy finds an active partner over its limits (an operator lowered a limit, say),
the gate pauses it through the same conditional transition the worker uses, so the
partner still gets exactly one notice (and one Partner Paused event), and drops its cache
entry so the next job reads the paused status. A warn level crossed is announced once
across all tasks (sesguard.ops.transitions.note_warnings).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from sesguard.aws.lifecycle import Publisher
from sesguard.aws.store import PartnerStore
from sesguard.core.partners import PartnerState, PausedBy, Profile, utcnow
from sesguard.core.policy import Level, Verdict, evaluate
from sesguard.logging import get_logger
from sesguard.ops.transitions import note_warnings, pause_partner
from sesguard.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_sesv2 import SESV2Client

log = get_logger(__name__)


class Action(StrEnum):
    SEND = "send"
    HOLD = "hold"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Decision:
    action: Action
    profile: Profile | None = None
    reason: str = ""


def decide(
    state: PartnerState, now: datetime, window_hours: tuple[int, ...]
) -> tuple[Decision, Verdict | None]:
    """Pure: the gate's answer from one partner state, plus the policy verdict (or None)."""
    profile = state.profile
    if profile is None:
        return Decision(Action.UNKNOWN, None, "unknown partner"), None
    if profile.paused:
        return Decision(Action.HOLD, profile, profile.paused_reason or "partner paused"), None
    verdict = evaluate(profile.limits, state.buckets, now, profile.rearm, window_hours)
    if verdict.level is Level.PAUSE:
        return Decision(Action.HOLD, profile, verdict.reason), verdict
    return Decision(Action.SEND, profile), verdict


@dataclass
class _Entry:
    expires: float
    future: asyncio.Future[Decision]


class Gate:
    def __init__(
        self,
        store: PartnerStore,
        sesv2: SESV2Client,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
        publisher: Publisher | None = None,
    ) -> None:
        self.store = store
        self.publisher = publisher  # lifecycle events (None: the worker's sweep publishes)
        self.sesv2 = sesv2
        self.settings = settings
        self.ttl = settings.gate_cache_seconds
        self.clock = clock
        self.now = now
        self.reads = 0  # get_state calls, for the counters line and the benchmark
        self.pauses = 0  # pause transitions this task won
        self._cache: dict[str, _Entry] = {}
        self._levels: dict[str, Level] = {}

    async def check(self, partner_id: str) -> Decision:
        entry = self._cache.get(partner_id)
        if entry is None or (entry.future.done() and entry.expires <= self.clock()):
            entry = _Entry(self.clock() + self.ttl, asyncio.ensure_future(self._load(partner_id)))
            entry.future.add_done_callback(functools.partial(self._loaded, partner_id, entry))
            self._cache[partner_id] = entry
        # shield: one waiter being cancelled must not cancel the read the others share
        return await asyncio.shield(entry.future)

    def invalidate(self, partner_id: str) -> None:
        self._cache.pop(partner_id, None)

    def _loaded(self, partner_id: str, entry: _Entry, _fut: object = None) -> None:
        fut = entry.future
        if fut.cancelled() or fut.exception() is not None:
            if self._cache.get(partner_id) is entry:
                del self._cache[partner_id]  # never cache a failure
            return
        # the TTL runs from when the answer arrived, not from when it was asked for
        entry.expires = self.clock() + self.ttl

    async def _load(self, partner_id: str) -> Decision:
        now = self.now()
        self.reads += 1
        state = await self.store.get_state(partner_id, now)
        decision, verdict = decide(state, now, self.settings.window_hours)
        if verdict is not None:
            self._note_level(partner_id, verdict)
        if verdict is not None and verdict.level is Level.PAUSE:
            outcome = await pause_partner(
                self.store,
                self.sesv2,
                partner_id,
                verdict.reason,
                PausedBy.POLICY,
                self.settings.notify_from,
                verdict.first,
                now=now,
                mirror_tenant=self.settings.use_tenants,
                publisher=self.publisher,
            )
            if outcome.won:
                self.pauses += 1
            # Do not keep this answer: the next job reads the status as written.
            asyncio.get_running_loop().call_soon(self.invalidate, partner_id)
        elif verdict is not None and state.profile is not None:
            await note_warnings(self.store, self.publisher, state.profile, verdict, now)
        return decision

    def _note_level(self, partner_id: str, verdict: Verdict) -> None:
        """Log a partner's policy level when it changes (not on every read)."""
        level: Level = verdict.level
        if self._levels.get(partner_id) != level:
            self._levels[partner_id] = level
            if level is Level.WARN:
                log.warning("partner_near_limit", partner_id=partner_id, reason=verdict.reason)
            elif level is Level.PAUSE:
                log.warning("partner_over_limit", partner_id=partner_id, reason=verdict.reason)
