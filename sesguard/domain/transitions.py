"""A partner's status transitions, each written once and then handed to its reactions.

Every transition is a conditional write (sesguard.aws.store) that records its lifecycle
event in the same transaction; only the writer that wins it signals the sender tasks (the
status epoch) and runs the reactions (sesguard.domain.reactions), so a partner gets one
notice and one event per transition however many tasks race. A reaction that fails is
logged and never undoes the transition.
See docs/design.md, "The partner judgement".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from sesguard.aws import lifecycle
from sesguard.aws.lifecycle import LifecycleEvent
from sesguard.aws.store import PartnerStore
from sesguard.core.partners import PausedBy, Profile, pause_reason, utcnow, warn_mark
from sesguard.core.policy import Finding, Level, Verdict
from sesguard.logging import get_logger

log = get_logger(__name__)


def quota_mark(day: str, quota: int) -> str:
    """The value of the profile's `quota_reached` mark: "<UTC day>/<daily quota>"."""
    return f"{day}/{quota}"


class Kind(StrEnum):
    PAUSED = "paused"
    RESUMED = "resumed"
    WARNED = "warned"
    LIMITS_CHANGED = "limits_changed"
    QUOTA_REACHED = "quota_reached"
    QUOTA_RELEASED = "quota_released"


@dataclass
class Transition:
    """One transition a partner went through, as every reaction sees it."""

    kind: Kind
    partner_id: str
    event: LifecycleEvent
    at: datetime
    profile: Profile | None = None  # as stored after the transition
    reason: str = ""
    by: PausedBy | None = None
    finding: Finding | None = None
    notify: bool = True  # an operator may pause without a notice
    # What reactions report back to whoever asked for the transition.
    notice_id: str | None = None
    warnings: list[str] = field(default_factory=list)


class Reaction(Protocol):
    """Something that follows a won transition (a notice, an event, a webhook...). It may
    ignore kinds it has no business with; raising is logged, never undoes anything."""

    name: str

    async def __call__(self, transition: Transition) -> None: ...


@dataclass(frozen=True)
class PauseOutcome:
    won: bool
    notice_id: str | None = None


class Transitions:
    """The conditional status writes, and the reactions that follow the ones won here."""

    def __init__(self, store: PartnerStore, reactions: Sequence[Reaction] = ()) -> None:
        self.store = store
        self.reactions = tuple(reactions)

    async def pause(
        self,
        partner_id: str,
        reason: str,
        by: PausedBy,
        finding: Finding | None = None,
        now: datetime | None = None,
        notify: bool = True,
    ) -> PauseOutcome:
        """active -> paused, once. The reason is made final here (pause_reason), so the
        stored `paused_reason`, the log line and the notice carry the same text."""
        now = now or utcnow()
        reason = pause_reason(reason)
        event = lifecycle.paused(partner_id, reason, by, now, finding)
        if not await self.store.try_pause(partner_id, reason, by, now, event=event):
            log.debug("pause_lost_race", partner_id=partner_id)
            return PauseOutcome(False)
        log.warning("partner_paused", partner_id=partner_id, reason=reason, by=by.value)
        await self._signal(partner_id, now)
        profile = await self.store.require_profile(partner_id)
        change = Transition(
            Kind.PAUSED, partner_id, event, now, profile, reason, by, finding, notify
        )
        await self._react(change)
        return PauseOutcome(True, change.notice_id)

    async def resume(self, partner_id: str, now: datetime | None = None) -> Transition | None:
        """paused -> active (re-arming the detector); None if it was not paused,
        PartnerNotFound if there is no partner."""
        now = now or utcnow()
        event = lifecycle.resumed(partner_id, now)
        if not await self.store.resume(partner_id, now, event=event):
            return None
        log.info("partner_resumed", partner_id=partner_id)
        await self._signal(partner_id, now)
        profile = await self.store.get_profile(partner_id)
        change = Transition(Kind.RESUMED, partner_id, event, now, profile)
        await self._react(change)
        return change

    async def change(self, partner_id: str, **fields: Any) -> Profile:
        """Change a partner's profile; a change of its limits is a transition."""
        profile, event = await self.store.change(partner_id, **fields)
        if event is not None:
            log.info(
                "partner_limits_changed",
                partner_id=partner_id,
                limits=event.detail["limits"],
                previous=event.detail["previous_limits"],
            )
            await self._signal(partner_id, event.occurred_at)
            await self._react(Transition(Kind.LIMITS_CHANGED, partner_id, event, utcnow(), profile))
        return profile

    async def note_warnings(
        self, profile: Profile, verdict: Verdict, now: datetime | None = None
    ) -> list[Finding]:
        """Partner Warned once per crossing of a warn level (per metric and window), until
        it clears; returns the findings announced here.

        "Once" holds across all tasks because the warn mark on the profile is set by a
        conditional write (PartnerStore.try_warn) that only one task wins. A mark whose
        level is no longer reached is removed (as read, so a mark another task set
        meanwhile stays), and the next crossing warns again. A pause verdict changes no
        mark: the pause is the news, and resume forgets the marks.
        """
        if profile.paused or verdict.level is Level.PAUSE:
            return []
        now = now or utcnow()
        reached = {
            warn_mark(f.metric, f.window_hours): f
            for f in verdict.findings
            if f.level is Level.WARN
        }
        announced = []
        pid = profile.partner_id
        for mark, finding in reached.items():
            if mark in profile.warned:
                continue
            event = lifecycle.warned(pid, finding, profile.limits.warn_ratio, now)
            if await self.store.try_warn(pid, mark, event):
                log.warning("partner_warned", partner_id=pid, reason=finding.reason)
                await self._react(
                    Transition(
                        Kind.WARNED, pid, event, now, profile, finding.reason, finding=finding
                    )
                )
                announced.append(finding)
        for mark, seen in profile.warned.items():
            if mark not in reached and await self.store.clear_warning(pid, mark, seen):
                log.info("partner_warning_cleared", partner_id=pid, level=mark)
        return announced

    async def _signal(self, partner_id: str, now: datetime) -> None:
        """Bump the status epoch that every sender task polls, before anything slow (the
        profile read, the reactions): a pause must reach the senders first. A failure
        leaves the senders' cache time as the bound (docs/design.md, "A pause lands
        within a second")."""
        try:
            await self.store.bump_status_epoch(partner_id, now)
        except Exception as exc:
            log.error("status_epoch_not_bumped", partner_id=partner_id, error=repr(exc))

    async def note_quota(
        self,
        partner_id: str,
        day: str,
        quota: int | None,
        reached: bool,
        now: datetime | None = None,
        *,
        raised_from: int | None = None,
    ) -> bool:
        """Partner Quota Reached / Released once per crossing, across all sender tasks.

        Reached: the conditional mark `quota_reached = "<day>/<quota>"` on the profile
        (PartnerStore.try_quota_reached), which one task wins. Released: the mark removed
        conditionally, either any mark of a day before `day` (the first send of a new UTC
        day) or exactly `"<day>/<raised_from>"` (the quota was raised from that, or removed:
        `quota` None). Returns whether this call won (and ran the reactions)."""
        now = now or utcnow()
        if reached:
            assert quota is not None
            event = lifecycle.quota_reached(partner_id, day, quota, now)
            won = await self.store.try_quota_reached(partner_id, quota_mark(day, quota), event)
            kind = Kind.QUOTA_REACHED
        elif raised_from is None:
            event = lifecycle.quota_released(partner_id, day, quota, "new UTC day", now)
            won = await self.store.try_quota_released(partner_id, event, before_day=day)
            kind = Kind.QUOTA_RELEASED
        else:
            event = lifecycle.quota_released(partner_id, day, quota, "quota raised", now)
            mark = quota_mark(day, raised_from)
            won = await self.store.try_quota_released(partner_id, event, mark=mark)
            kind = Kind.QUOTA_RELEASED
        if won:
            log.info(f"partner_{kind.value}", partner_id=partner_id, day=day, daily_quota=quota)
            await self._react(Transition(kind, partner_id, event, now))
        return won

    async def _react(self, transition: Transition) -> None:
        for reaction in self.reactions:
            try:
                await reaction(transition)
            except Exception as exc:  # the transition stands; the failure must be visible
                log.error(
                    "reaction_failed",
                    reaction=reaction.name,
                    partner_id=transition.partner_id,
                    transition=transition.kind.value,
                    error=repr(exc),
                )
