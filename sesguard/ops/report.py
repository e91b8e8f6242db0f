"""What operators see of a partner: the JSON of `partners show` and the text tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sesguard.core.partners import SIMULATOR_PREFIX, Limits, PartnerState
from sesguard.core.policy import compute_windows, judge


def partner_json(
    state: PartnerState,
    held_jobs: int,
    now: datetime,
    window_hours: Sequence[int],
    defaults: Limits,
) -> dict[str, Any]:
    """The `partners show --json` object (keys fixed by docs/operating.md, "Limits"; extra
    keys are additive)."""
    p = state.profile
    limits = p.limits if p else defaults
    windows = compute_windows(state.buckets, now, window_hours, p.rearm if p else None)
    verdict = judge(limits, windows)
    return {
        "partner_id": state.partner_id,
        "registered": p is not None,
        "status": p.status.value if p else "unregistered",
        "contact_email": p.contact_email if p else None,
        "limits": limits.as_json(),
        "totals": state.totals.as_dict(),
        "windows": [w.as_json() for w in windows],
        "verdict": str(verdict.level),
        "verdict_reason": verdict.reason or None,
        "held_jobs": held_jobs,
        "paused_reason": p.paused_reason if p else None,
        "paused_at": p.paused_at.isoformat() if p and p.paused_at else None,
        "paused_by": p.paused_by.value if p and p.paused_by else None,
        "resumed_at": p.resumed_at.isoformat() if p and p.resumed_at else None,
        "tenant_name": p.tenant_name if p else None,
    }


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.2%}"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def partners_table(partners: Sequence[dict[str, Any]]) -> str:
    rows = []
    for p in partners:
        day = p["windows"][0] if p["windows"] else {}
        rows.append(
            [
                p["partner_id"],
                p["status"],
                p["totals"]["sent"],
                day.get("sent", 0),
                _pct(day.get("bounce_rate")),
                _pct(day.get("complaint_rate")),
                f"{p['limits']['bounce_rate']:.2%}/{p['limits']['complaint_rate']:.2%}",
                p["verdict"],
                p["held_jobs"],
            ]
        )
    return render_table(
        [
            "PARTNER",
            "STATUS",
            "SENT",
            "SENT 24H",
            "BOUNCE 24H",
            "COMPLAINT 24H",
            "LIMITS B/C",
            "VERDICT",
            "HELD",
        ],
        rows,
    )


def _total_rows(totals: dict[str, int]) -> list[list[object]]:
    """Every rate counter; a simulator counter only when it holds something."""
    return [[k, v] for k, v in totals.items() if v or not k.startswith(SIMULATOR_PREFIX)]


def partner_text(p: dict[str, Any]) -> str:
    lines = [
        f"partner      {p['partner_id']}",
        f"status       {p['status']}"
        + (f" ({p['paused_by']}: {p['paused_reason']})" if p["status"] == "paused" else ""),
        f"contact      {p['contact_email'] or '-'}",
        f"limits       bounce {p['limits']['bounce_rate']:.2%}, complaint "
        f"{p['limits']['complaint_rate']:.3%}, min volume {p['limits']['min_volume']}",
        f"verdict      {p['verdict']}"
        + (f": {p['verdict_reason']}" if p["verdict_reason"] else ""),
        f"held jobs    {p['held_jobs']}",
        "",
        render_table(
            [
                "WINDOW",
                "SENT",
                "SUPPRESSED",
                "JUDGED SENDS",
                "HARD BOUNCES",
                "COMPLAINTS",
                "BOUNCE RATE",
                "COMPLAINT RATE",
            ],
            [
                [
                    f"{w['hours']}h",
                    w["sent"],
                    w["suppressed"],
                    w["judged_sends"],
                    w["hard_bounces"],
                    w["complaints"],
                    _pct(w["bounce_rate"]),
                    _pct(w["complaint_rate"]),
                ]
                for w in p["windows"]
            ],
        ),
        "",
        render_table(["TOTAL", "COUNT"], _total_rows(p["totals"])),
        "",
        "Rates are hard bounces or complaints over judged sends (sent minus suppressed);",
        "simulator_* counts are mailbox-simulator mail, kept out of the rates.",
    ]
    return "\n".join(lines)
