"""What follows a won transition, each reaction a small object; `standard_reactions` is the
wiring both services and the operator tools use. A new reaction (a webhook, say) is one
class here and one line in `standard_reactions`. See docs/design.md, "The partner
judgement".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sesguard.aws.lifecycle import Publisher
from sesguard.aws.store import PartnerStore
from sesguard.aws.tenants import mirror_status
from sesguard.core.partners import InvalidContact
from sesguard.domain.notice import compose_pause_notice, send_notice
from sesguard.domain.transitions import Kind, Reaction, Transition
from sesguard.logging import get_logger
from sesguard.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_sesv2 import SESV2Client

log = get_logger(__name__)


# Transitions that change nothing the sender's gate caches: no epoch bump for them.
QUIET_KINDS = frozenset({Kind.WARNED, Kind.QUOTA_REACHED, Kind.QUOTA_RELEASED})


@dataclass
class StatusEpochReaction:
    """Bumps the status epoch after a pause, resume or limits change, so every sender task
    drops its cached judgements within a poll (about half a second) instead of its cache
    time. First in the list: a slow notice must not delay a pause reaching the senders."""

    store: PartnerStore
    name: str = "status_epoch"

    async def __call__(self, transition: Transition) -> None:
        if transition.kind not in QUIET_KINDS:
            await self.store.bump_status_epoch(transition.partner_id, transition.at)


@dataclass
class LifecycleReaction:
    """Publishes the transition's lifecycle event to EventBridge. The event is already in
    the outbox (same transaction as the status), so a failed publish is the sweep's."""

    publisher: Publisher
    name: str = "lifecycle"

    async def __call__(self, transition: Transition) -> None:
        await self.publisher.publish([transition.event])


@dataclass
class TenantMirrorReaction:
    """Mirrors a pause or resume to the partner's SES tenant (SESGUARD_USE_TENANTS), so SES
    itself refuses a paused partner's mail. sesguard's own gate holds the jobs whatever
    happens here; a failure is logged (and on resume reported to the operator)."""

    sesv2: SESV2Client
    name: str = "tenant_mirror"

    async def __call__(self, transition: Transition) -> None:
        profile = transition.profile
        if transition.kind not in (Kind.PAUSED, Kind.RESUMED) or not profile:
            return
        if not profile.tenant_name:
            return
        paused = transition.kind is Kind.PAUSED
        try:
            await mirror_status(self.sesv2, transition.partner_id, paused, profile.tenant_name)
        except Exception as exc:
            if paused:
                log.error(
                    "tenant_not_disabled",
                    partner_id=transition.partner_id,
                    tenant=profile.tenant_name,
                    error=str(exc),
                )
            else:
                transition.warnings.append(
                    f"SES tenant {profile.tenant_name} not re-enabled: {exc}"
                )


@dataclass
class NoticeReaction:
    """The one notice a paused partner's contact gets. A failure never undoes the pause,
    and is logged as `notice_failed` naming the partner."""

    sesv2: SESV2Client
    notify_from: str | None
    name: str = "notice"

    async def __call__(self, transition: Transition) -> None:
        if transition.kind is not Kind.PAUSED or transition.profile is None:
            return
        if not transition.notify:
            log.info("notice_not_sent", partner_id=transition.partner_id, reason="not asked")
            return
        pid = transition.partner_id
        notice = compose_pause_notice(
            transition.profile, transition.reason, transition.at, transition.finding
        )
        try:
            notice_id = await send_notice(self.sesv2, notice, self.notify_from)
        except InvalidContact as exc:  # refused before SES: fix the contact, the pause stands
            log.error("notice_failed", partner_id=pid, reason="invalid contact", error=str(exc))
            return
        except Exception as exc:
            log.error("notice_failed", partner_id=pid, error=str(exc))
            return
        if notice_id:
            log.info("notice_sent", partner_id=pid, message_id=notice_id)
            transition.notice_id = notice_id


def standard_reactions(
    store: PartnerStore, sesv2: SESV2Client, settings: Settings, publisher: Publisher | None
) -> list[Reaction]:
    """The reactions, in order: the senders' status epoch, the event (without a publisher
    the worker's sweep publishes it), the SES tenant when SESGUARD_USE_TENANTS is on, and
    the notice."""
    reactions: list[Reaction] = [StatusEpochReaction(store)]
    if publisher is not None:
        reactions.append(LifecycleReaction(publisher))
    if settings.use_tenants:
        reactions.append(TenantMirrorReaction(sesv2))
    reactions.append(NoticeReaction(sesv2, settings.notify_from))
    return reactions
