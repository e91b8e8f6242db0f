"""What operators see of a partner: the JSON of `partners show` and the text tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sesguard.core.partners import (
    SIMULATOR_PREFIX,
    Counters,
    Limits,
    PartnerState,
    Throttle,
    hour_floor,
    utc_day,
)
from sesguard.core.policy import compute_windows, judge

HOUR_SECONDS = 3600
# The current hour's rate is its sends over the seconds it has run, at least this many
# (a minute into the hour, a handful of sends is not a rate of hundreds a second).
MIN_RATE_SECONDS = 60


def _sends(bucket: Counters | None) -> int:
    """Sends in an hour bucket as the rate cap counts them: every SES Send event, mailbox
    simulator recipients too (the sender throttles those sends like any other)."""
    return bucket.sent + bucket.simulator_sent if bucket else 0


def throttle_json(state: PartnerState, now: datetime) -> dict[str, Any]:
    """A partner's caps and their current use: today's sends against the daily quota (the
    count the senders keep, `Q#<day>`), and the sends of the current and the last hour as
    rates (from the hourly buckets the worker counts from SES's Send events, so they lag
    by the Firehose buffer)."""
    throttle = state.profile.throttle if state.profile else Throttle()
    hour = hour_floor(now)
    this_hour = _sends(state.buckets.get(hour))
    last_hour = _sends(state.buckets.get(hour - timedelta(hours=1)))
    elapsed = max(MIN_RATE_SECONDS, (now - hour).total_seconds())
    day = utc_day(now)
    return {
        "max_rate": throttle.max_rate,
        "daily_quota": throttle.daily_quota,
        "day": day,
        "quota_used": state.quota_used.get(day, 0),
        "sent_this_hour": this_hour,
        "sent_last_hour": last_hour,
        "rate_this_hour": round(this_hour / elapsed, 3),
        "rate_last_hour": round(last_hour / HOUR_SECONDS, 3),
    }


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
        "throttle": throttle_json(state, now),
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


def _num(value: float) -> str:
    """3 -> "3", 0.5 -> "0.5", 2.25 -> "2.25": a rate as an operator typed it."""
    return f"{value:g}"


def rate_use(th: dict[str, Any]) -> str:
    """'5 sends/s (sending 0.4/s this hour, 1.2/s last hour)': the cap and its use."""
    cap = f"{_num(th['max_rate'])} sends/s" if th["max_rate"] is not None else "no cap"
    return (
        f"{cap} (sending {_num(th['rate_this_hour'])}/s this hour,"
        f" {_num(th['rate_last_hour'])}/s last hour)"
    )


def quota_use(th: dict[str, Any]) -> str:
    """'120 of 500 today (UTC)', or 'no cap' (the senders count a day only under a quota)."""
    if th["daily_quota"] is None:
        return "no cap"
    return f"{th['quota_used']} of {th['daily_quota']} today (UTC)"


def _cap_cell(used: str, cap: float | None) -> str:
    return f"{used}/{_num(cap) if cap is not None else '-'}"


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
                _cap_cell(_num(p["throttle"]["rate_this_hour"]), p["throttle"]["max_rate"]),
                _cap_cell(str(p["throttle"]["quota_used"]), p["throttle"]["daily_quota"]),
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
            "RATE/S",
            "TODAY (UTC)",
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
        f"max rate     {rate_use(p['throttle'])}",
        f"daily quota  {quota_use(p['throttle'])}",
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
        "Send rates are counted from SES's Send events (recipients), so they lag by the",
        "Firehose buffer; today's sends are those the senders counted against the quota.",
    ]
    return "\n".join(lines)
