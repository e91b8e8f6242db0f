"""The one partner judgement: from a partner's state to what it may do, acted on once.

The sender's gate and the worker's enforcement both call `PartnerJudge.judge`; `decide`
is its pure half (state + policy -> Judgement), `PartnerJudge.act` the half with effects
(a pause through the conditional transition, warn levels announced once). See
docs/design.md, "The partner judgement".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from sesguard.aws.lifecycle import Publisher
from sesguard.aws.store import PartnerStore
from sesguard.core.partners import UNATTRIBUTED, PartnerState, PausedBy, Profile, utcnow
from sesguard.core.policy import Level, Verdict, evaluate
from sesguard.domain.reactions import standard_reactions
from sesguard.domain.transitions import Transitions
from sesguard.logging import get_logger
from sesguard.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_sesv2 import SESV2Client

log = get_logger(__name__)

UNKNOWN_REASON = "unknown partner"


class Enforcement(StrEnum):
    """What judging one partner found, or led to."""

    OK = "ok"
    WARN = "warn"
    PAUSE = "pause"  # over a limit: `act` turns it into PAUSED or PAUSE_LOST
    PAUSED = "paused"  # this judge paused it (and its reactions ran)
    PAUSE_LOST = "pause_lost"  # over a limit, but another writer paused it first
    ALREADY_PAUSED = "already_paused"
    UNREGISTERED = "unregistered"
    UNATTRIBUTED = "unattributed"


@dataclass(frozen=True)
class Judgement:
    partner_id: str
    enforcement: Enforcement
    profile: Profile | None = None
    verdict: Verdict | None = None  # the policy's reading (None: paused or unknown)

    @property
    def admits(self) -> bool:
        """May the partner send now?"""
        return self.enforcement in (Enforcement.OK, Enforcement.WARN)

    @property
    def unknown(self) -> bool:
        return self.enforcement in (Enforcement.UNREGISTERED, Enforcement.UNATTRIBUTED)

    @property
    def reason(self) -> str:
        if self.unknown:
            return UNKNOWN_REASON
        if self.enforcement is Enforcement.ALREADY_PAUSED:
            return (self.profile and self.profile.paused_reason) or "partner paused"
        return self.verdict.reason if self.verdict else ""


def decide(state: PartnerState, now: datetime, window_hours: Sequence[int]) -> Judgement:
    """Pure: the judgement of one partner state (nothing written yet)."""
    pid, profile = state.partner_id, state.profile
    if pid == UNATTRIBUTED:
        return Judgement(pid, Enforcement.UNATTRIBUTED)
    if profile is None:
        return Judgement(pid, Enforcement.UNREGISTERED)
    if profile.paused:
        return Judgement(pid, Enforcement.ALREADY_PAUSED, profile)
    verdict = evaluate(profile.limits, state.buckets, now, profile.rearm, window_hours)
    level = {Level.OK: Enforcement.OK, Level.WARN: Enforcement.WARN, Level.PAUSE: Enforcement.PAUSE}
    return Judgement(pid, level[verdict.level], profile, verdict)


class PartnerJudge:
    """Reads a partner's state (one Query), decides, and acts on the decision once."""

    def __init__(
        self,
        store: PartnerStore,
        transitions: Transitions,
        window_hours: Sequence[int],
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.transitions = transitions
        self.window_hours = tuple(window_hours)
        self.now = now

    @classmethod
    def standard(
        cls,
        store: PartnerStore,
        sesv2: SESV2Client,
        settings: Settings,
        publisher: Publisher | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> PartnerJudge:
        """The judge as the services run it, with the standard reactions (without a
        publisher the worker's sweep publishes the events)."""
        reactions = standard_reactions(sesv2, settings, publisher)
        return cls(store, Transitions(store, reactions), settings.window_hours, now)

    async def judge(self, partner_id: str, now: datetime | None = None) -> Judgement:
        if partner_id == UNATTRIBUTED:  # counted, never registered: nothing to read
            return Judgement(partner_id, Enforcement.UNATTRIBUTED)
        now = now or self.now()
        state = await self.store.get_state(partner_id, now)
        return await self.act(decide(state, now, self.window_hours), now)

    async def act(self, judgement: Judgement, now: datetime) -> Judgement:
        """Pause on a breach (only one writer wins it, and only it runs the reactions);
        announce warn levels crossed by an active partner."""
        verdict, profile = judgement.verdict, judgement.profile
        if verdict is None or profile is None:
            return judgement
        if judgement.enforcement is Enforcement.PAUSE:
            outcome = await self.transitions.pause(
                judgement.partner_id, verdict.reason, PausedBy.POLICY, verdict.first, now
            )
            log.warning(
                "policy_breach",
                partner_id=judgement.partner_id,
                reason=verdict.reason,
                paused_here=outcome.won,
            )
            won = Enforcement.PAUSED if outcome.won else Enforcement.PAUSE_LOST
            return replace(judgement, enforcement=won)
        await self.transitions.note_warnings(profile, verdict, now)
        return judgement
