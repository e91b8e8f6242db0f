"""A partner's lifecycle events, for the pause and resume markers on the console's charts.

STAND-IN. The lifecycle module of issue 14 part 1 (`sesguard.lifecycle`, built in
parallel) keeps every event a partner's transitions publish and reads them back with
`partner_history(dynamodb, table, partner_id, since)`. Until it is merged, this function
has the same signature and result shape and derives what it can from the profile: the
current pause (`paused_at`, with its reason and actor) and the last resume
(`resumed_at`), which is all the profile keeps (a resume removes the pause's fields).
At the merge, the console's one call (sesguard.console.api, `partner_history`) switches
to the lifecycle module's function and this file goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sesguard.store import PartnerStore


@dataclass(frozen=True)
class LifecycleEvent:
    """The shape of sesguard.lifecycle's event: what the console reads of one."""

    event_id: str
    detail_type: str  # "Partner Paused", "Partner Resumed", ...
    occurred_at: datetime
    detail: dict[str, Any] = field(default_factory=dict)


async def partner_history(
    dynamodb: Any, table: str, partner_id: str, since: datetime
) -> list[LifecycleEvent]:
    """The partner's pause and resume events since `since`, oldest first (see above)."""
    profile = await PartnerStore(dynamodb, table).get_profile(partner_id)
    if profile is None:
        return []
    events = []
    if profile.resumed_at:
        events.append(
            LifecycleEvent(
                f"{partner_id}:resumed:{profile.resumed_at.isoformat()}",
                "Partner Resumed",
                profile.resumed_at,
                {"partner_id": partner_id, "status": "active"},
            )
        )
    if profile.paused and profile.paused_at:
        events.append(
            LifecycleEvent(
                f"{partner_id}:paused:{profile.paused_at.isoformat()}",
                "Partner Paused",
                profile.paused_at,
                {
                    "partner_id": partner_id,
                    "status": "paused",
                    "reason": profile.paused_reason,
                    "actor": profile.paused_by.value if profile.paused_by else None,
                },
            )
        )
    return sorted((e for e in events if e.occurred_at >= since), key=lambda e: e.occurred_at)
