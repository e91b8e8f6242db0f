"""The domain's transitions called as the tests call them: one pause (or resume...) with
the reactions a service would wire for these arguments (sesguard.domain.reactions)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sender.gate import Gate
from sesguard.aws.lifecycle import Publisher
from sesguard.aws.store import PartnerStore
from sesguard.core.partners import PausedBy, Profile, utcnow
from sesguard.core.policy import Finding, Verdict
from sesguard.domain.judgement import Judgement, PartnerJudge
from sesguard.domain.reactions import standard_reactions
from sesguard.domain.transitions import PauseOutcome, Transitions
from sesguard.settings import Settings, load_settings
from worker.enforce import Enforcer


def transitions(
    store: PartnerStore,
    sesv2: Any = None,
    notify_from: str | None = None,
    mirror_tenant: bool = False,
    publisher: Publisher | None = None,
) -> Transitions:
    settings = load_settings(notify_from=notify_from, use_tenants=mirror_tenant)
    return Transitions(store, standard_reactions(sesv2, settings, publisher))


async def pause_partner(
    store: PartnerStore,
    sesv2: Any,
    partner_id: str,
    reason: str,
    by: PausedBy,
    notify_from: str | None,
    finding: Finding | None = None,
    now: datetime | None = None,
    mirror_tenant: bool = False,
    publisher: Publisher | None = None,
) -> PauseOutcome:
    t = transitions(store, sesv2, notify_from, mirror_tenant, publisher)
    return await t.pause(partner_id, reason, by, finding, now)


async def resume_partner(
    store: PartnerStore, publisher: Publisher | None, partner_id: str, now: datetime | None = None
) -> bool:
    return await transitions(store, publisher=publisher).resume(partner_id, now) is not None


async def change_partner(
    store: PartnerStore, publisher: Publisher | None, partner_id: str, **fields: Any
) -> Profile:
    return await transitions(store, publisher=publisher).change(partner_id, **fields)


async def note_warnings(
    store: PartnerStore,
    publisher: Publisher | None,
    profile: Profile,
    verdict: Verdict,
    now: datetime | None = None,
) -> list[Finding]:
    return await transitions(store, publisher=publisher).note_warnings(profile, verdict, now)


def judge(
    store: PartnerStore,
    sesv2: Any,
    settings: Settings,
    publisher: Publisher | None = None,
    now: Callable[[], datetime] = utcnow,
) -> PartnerJudge:
    return PartnerJudge.standard(store, sesv2, settings, publisher, now)


def gate_for(
    store: PartnerStore,
    sesv2: Any,
    settings: Settings,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime] = utcnow,
    publisher: Publisher | None = None,
) -> Gate:
    """The sender's gate, wired as sender.service wires it."""
    return Gate(judge(store, sesv2, settings, publisher, now), settings.gate_cache_seconds, clock)


def enforcer_for(
    store: PartnerStore, sesv2: Any, settings: Settings, publisher: Publisher | None = None
) -> Enforcer:
    """The worker's enforcement, wired as worker.service wires it."""
    return Enforcer(judge(store, sesv2, settings, publisher))


def answer(judgement: Judgement) -> str:
    """The gate's answer in one word, as the sender acts on it."""
    if judgement.unknown:
        return "unknown"
    return "send" if judgement.admits else "hold"
