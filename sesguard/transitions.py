"""The pause transition shared by worker, sender and operators.

Only the writer that wins the conditional active->paused write sends the notice, so a
partner gets exactly one notice per pause however many tasks race to pause it. The
reason is made final once here (sesguard.partners.pause_reason), so the stored
`paused_reason`, the log line and the notice carry the same text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sesguard.logging import get_logger
from sesguard.notify import compose_pause_notice, send_notice
from sesguard.partners import InvalidContact, PausedBy, pause_reason, utcnow
from sesguard.policy import Finding
from sesguard.store import PartnerStore

log = get_logger(__name__)


@dataclass(frozen=True)
class PauseOutcome:
    won: bool
    notice_id: str | None = None


async def pause_partner(
    store: PartnerStore,
    sesv2: object,
    partner_id: str,
    reason: str,
    by: PausedBy,
    notify_from: str | None,
    finding: Finding | None = None,
    configuration_set: str | None = None,
    now: datetime | None = None,
    mirror_tenant: bool = False,
) -> PauseOutcome:
    """Pause once; the winner notifies and, with `mirror_tenant` (SESGUARD_USE_TENANTS),
    also disables the partner's SES tenant so SES itself refuses its mail."""
    now = now or utcnow()
    reason = pause_reason(reason)
    won = await store.try_pause(partner_id, reason, by, now)
    if not won:
        log.debug("pause_lost_race", partner_id=partner_id)
        return PauseOutcome(False)
    log.warning("partner_paused", partner_id=partner_id, reason=reason, by=by.value)
    profile = await store.require_profile(partner_id)
    if mirror_tenant and profile.tenant_name:
        await _disable_tenant(sesv2, partner_id, profile.tenant_name)
    notice = compose_pause_notice(profile, reason, now, finding)
    try:
        notice_id = await send_notice(sesv2, notice, notify_from, configuration_set)
    except InvalidContact as exc:  # refused before SES: fix the contact, the pause stands
        log.error("notice_failed", partner_id=partner_id, reason="invalid contact", error=str(exc))
        return PauseOutcome(True)
    except Exception as exc:  # the pause stands; the notice failure must be visible
        log.error("notice_failed", partner_id=partner_id, error=str(exc))
        return PauseOutcome(True)
    if notice_id:
        log.info("notice_sent", partner_id=partner_id, message_id=notice_id)
    return PauseOutcome(True, notice_id)


async def _disable_tenant(sesv2: object, partner_id: str, tenant_name: str) -> None:
    from sesguard.tenants import mirror_status

    try:
        await mirror_status(sesv2, partner_id, True, tenant_name)
    except Exception as exc:  # sesguard's own gate still holds the partner's jobs
        log.error("tenant_not_disabled", partner_id=partner_id, tenant=tenant_name, error=str(exc))
