"""The partner transitions shared by worker, sender and operators, with their events.

Only the writer that wins the conditional active->paused write sends the notice, so a
partner gets exactly one notice per pause however many tasks race to pause it. The
reason is made final once here (sesguard.core.partners.pause_reason), so the stored
`paused_reason`, the log line and the notice carry the same text.

Every transition writes its lifecycle event in the same transaction as the status
(sesguard.aws.store, sesguard.aws.lifecycle), and the winner publishes it: Partner Paused,
Partner Resumed, Partner Limits Changed, and Partner Warned (`note_warnings`, once per
crossing of a warn level). A failed publish is logged and left to the worker's sweep;
it never undoes the transition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sesguard.aws import lifecycle
from sesguard.aws.lifecycle import Publisher
from sesguard.aws.store import PartnerStore
from sesguard.core.partners import (
    InvalidContact,
    PausedBy,
    Profile,
    pause_reason,
    utcnow,
    warn_mark,
)
from sesguard.core.policy import Finding, Level, Verdict
from sesguard.logging import get_logger
from sesguard.ops.notify import compose_pause_notice, send_notice

if TYPE_CHECKING:
    from types_aiobotocore_sesv2 import SESV2Client

log = get_logger(__name__)


@dataclass(frozen=True)
class PauseOutcome:
    won: bool
    notice_id: str | None = None


async def pause_partner(
    store: PartnerStore,
    sesv2: SESV2Client,
    partner_id: str,
    reason: str,
    by: PausedBy,
    notify_from: str | None,
    finding: Finding | None = None,
    now: datetime | None = None,
    mirror_tenant: bool = False,
    publisher: Publisher | None = None,
) -> PauseOutcome:
    """Pause once; the winner publishes Partner Paused (through `publisher`; without one
    the worker's sweep does), notifies and, with `mirror_tenant` (SESGUARD_USE_TENANTS),
    also disables the partner's SES tenant so SES itself refuses its mail."""
    now = now or utcnow()
    reason = pause_reason(reason)
    event = lifecycle.paused(partner_id, reason, by, now, finding)
    won = await store.try_pause(partner_id, reason, by, now, event=event)
    if not won:
        log.debug("pause_lost_race", partner_id=partner_id)
        return PauseOutcome(False)
    log.warning("partner_paused", partner_id=partner_id, reason=reason, by=by.value)
    await publish(publisher, event)
    profile = await store.require_profile(partner_id)
    if mirror_tenant and profile.tenant_name:
        await _disable_tenant(sesv2, partner_id, profile.tenant_name)
    notice = compose_pause_notice(profile, reason, now, finding)
    try:
        notice_id = await send_notice(sesv2, notice, notify_from)
    except InvalidContact as exc:  # refused before SES: fix the contact, the pause stands
        log.error("notice_failed", partner_id=partner_id, reason="invalid contact", error=str(exc))
        return PauseOutcome(True)
    except Exception as exc:  # the pause stands; the notice failure must be visible
        log.error("notice_failed", partner_id=partner_id, error=str(exc))
        return PauseOutcome(True)
    if notice_id:
        log.info("notice_sent", partner_id=partner_id, message_id=notice_id)
    return PauseOutcome(True, notice_id)


async def _disable_tenant(sesv2: SESV2Client, partner_id: str, tenant_name: str) -> None:
    from sesguard.ops.tenants import mirror_status

    try:
        await mirror_status(sesv2, partner_id, True, tenant_name)
    except Exception as exc:  # sesguard's own gate still holds the partner's jobs
        log.error("tenant_not_disabled", partner_id=partner_id, tenant=tenant_name, error=str(exc))


async def publish(publisher: Publisher | None, event: lifecycle.LifecycleEvent) -> None:
    """Publish an event a transition just recorded (never raises); without a publisher
    it waits in the outbox for the worker's sweep."""
    if publisher is not None:
        await publisher.publish([event])


async def resume_partner(
    store: PartnerStore,
    publisher: Publisher | None,
    partner_id: str,
    now: datetime | None = None,
) -> bool:
    """paused -> active (sesguard.aws.store.PartnerStore.resume); the winner publishes
    Partner Resumed. False if it was not paused; PartnerNotFound if there is no partner."""
    now = now or utcnow()
    event = lifecycle.resumed(partner_id, now)
    if not await store.resume(partner_id, now, event=event):
        return False
    log.info("partner_resumed", partner_id=partner_id)
    await publish(publisher, event)
    return True


async def change_partner(
    store: PartnerStore, publisher: Publisher | None, partner_id: str, **fields: Any
) -> Profile:
    """Change a partner's profile; a change of its limits publishes Partner Limits Changed."""
    profile, event = await store.change(partner_id, **fields)
    if event is not None:
        log.info(
            "partner_limits_changed",
            partner_id=partner_id,
            limits=event.detail["limits"],
            previous=event.detail["previous_limits"],
        )
        await publish(publisher, event)
    return profile


async def note_warnings(
    store: PartnerStore,
    publisher: Publisher | None,
    profile: Profile,
    verdict: Verdict,
    now: datetime | None = None,
) -> list[Finding]:
    """Partner Warned once per crossing of a warn level (per metric and window), until it
    clears; returns the findings this caller announced.

    Called with every verdict the worker or a sender's gate reaches about an active
    partner. "Once" holds across all tasks because the warn mark on the profile is set by
    a conditional write (sesguard.aws.store.PartnerStore.try_warn) that only one task wins.
    A mark whose level is no longer reached is removed (as read, so a mark another task
    set meanwhile stays), and the next crossing warns again. A pause verdict changes no
    mark: the pause is the news, and resume forgets the marks.
    """
    if profile.paused or verdict.level is Level.PAUSE:
        return []
    now = now or utcnow()
    reached = {
        warn_mark(f.metric, f.window_hours): f for f in verdict.findings if f.level is Level.WARN
    }
    announced = []
    for mark, finding in reached.items():
        if mark in profile.warned:
            continue
        event = lifecycle.warned(profile.partner_id, finding, profile.limits.warn_ratio, now)
        if await store.try_warn(profile.partner_id, mark, event):
            log.warning("partner_warned", partner_id=profile.partner_id, reason=finding.reason)
            await publish(publisher, event)
            announced.append(finding)
    for mark, seen in profile.warned.items():
        if mark not in reached and await store.clear_warning(profile.partner_id, mark, seen):
            log.info("partner_warning_cleared", partner_id=profile.partner_id, level=mark)
    return announced
