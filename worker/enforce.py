"""Policy after every apply: judge each touched partner and pause it on a breach.

Evaluation runs even when the object turned out to be counted already: a worker that
crashed between apply and evaluation leaves the judgement to the redelivery. Pausing is
the shared conditional transition, so however many workers judge the same partner at
once, exactly one pauses it, sends the notice and publishes Partner Paused; a warn level
crossed is announced once (Partner Warned) the same way (sesguard.ops.transitions).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from sesguard.aws.lifecycle import Publisher
from sesguard.aws.store import PartnerStore
from sesguard.core.partners import UNATTRIBUTED, PausedBy, utcnow
from sesguard.core.policy import Level, evaluate
from sesguard.logging import get_logger
from sesguard.ops.transitions import note_warnings, pause_partner
from sesguard.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_sesv2 import SESV2Client

log = get_logger(__name__)


class Enforcement(StrEnum):
    """What judging one partner after an object led to (counted by the worker, logged)."""

    OK = "ok"
    WARN = "warn"
    PAUSED = "paused"  # this worker paused it (and sent the notice)
    PAUSE_LOST = "pause_lost"  # breach, but another writer paused it first
    ALREADY_PAUSED = "already_paused"
    UNREGISTERED = "unregistered"
    UNATTRIBUTED = "unattributed"


@dataclass
class Enforcer:
    store: PartnerStore
    sesv2: SESV2Client
    settings: Settings
    parallel: int = 8  # partners judged at once per object
    publisher: Publisher | None = None  # lifecycle events (None: the sweep publishes them)

    async def check(self, partner_id: str, now: datetime | None = None) -> Enforcement:
        if partner_id == UNATTRIBUTED:
            return Enforcement.UNATTRIBUTED
        now = now or utcnow()
        state = await self.store.get_state(partner_id, now)
        profile = state.profile
        if profile is None:
            return Enforcement.UNREGISTERED
        if profile.paused:
            return Enforcement.ALREADY_PAUSED
        verdict = evaluate(
            profile.limits, state.buckets, now, profile.rearm, self.settings.window_hours
        )
        if verdict.level is Level.PAUSE:
            outcome = await pause_partner(
                self.store,
                self.sesv2,
                partner_id,
                verdict.reason,
                by=PausedBy.POLICY,
                notify_from=self.settings.notify_from,
                finding=verdict.first,
                now=now,
                mirror_tenant=self.settings.use_tenants,
                publisher=self.publisher,
            )
            log.warning(
                "policy_breach",
                partner_id=partner_id,
                reason=verdict.reason,
                paused_here=outcome.won,
            )
            return Enforcement.PAUSED if outcome.won else Enforcement.PAUSE_LOST
        await note_warnings(self.store, self.publisher, profile, verdict, now)
        return Enforcement.WARN if verdict.level is Level.WARN else Enforcement.OK

    async def check_all(
        self, partner_ids: Iterable[str], now: datetime | None = None
    ) -> dict[str, Enforcement]:
        now = now or utcnow()
        ids = sorted(set(partner_ids))
        gate = asyncio.Semaphore(self.parallel)

        async def one(pid: str) -> Enforcement:
            async with gate:
                return await self.check(pid, now)

        outcomes = await asyncio.gather(*(one(pid) for pid in ids))
        return dict(zip(ids, outcomes, strict=True))
