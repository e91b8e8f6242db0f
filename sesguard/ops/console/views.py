"""What the console's pages show, as plain data: pure functions of a partner's report,
its hourly buckets and its lifecycle events (no I/O, no HTML).

Levels and rates come from sesguard.core.policy, the one definition every other report uses:
a cell is `over` when its window would pause the partner, `warn` at or above the warn
level, `low` when the window has fewer judged sends than min_volume (not judged yet),
`none` without any judged send, `ok` otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sesguard.core.partners import Counters, Limits, Rearm, hour_floor, hours_back
from sesguard.core.policy import Level, Window, compute_windows, judge, judged_sends, rate

METRICS = ("bounce_rate", "complaint_rate")
ROLLING_HOURS = 24  # the rolling rate the charts draw: the shortest default window


def limits_of(report: Mapping[str, Any]) -> Limits:
    lim = report["limits"]
    return Limits(lim["bounce_rate"], lim["complaint_rate"], lim["min_volume"], lim["warn_ratio"])


def _window(w: Mapping[str, Any]) -> Window:
    return Window(w["hours"], w["sent"], w["hard_bounces"], w["complaints"], w["suppressed"])


def cell_levels(report: Mapping[str, Any]) -> dict[tuple[int, str], str]:
    """(window hours, metric) -> ok | warn | over | low | none, judged by sesguard.core.policy."""
    limits = limits_of(report)
    windows = [_window(w) for w in report["windows"]]
    found = {(f.window_hours, f.metric): f.level for f in judge(limits, windows).findings}
    out: dict[tuple[int, str], str] = {}
    for w in windows:
        for metric in METRICS:
            if w.judged_sends == 0:
                level = "none"
            elif w.judged_sends < limits.min_volume:
                level = "low"
            else:
                level = {Level.PAUSE: "over", Level.WARN: "warn"}.get(
                    found.get((w.hours, metric), Level.OK), "ok"
                )
            out[(w.hours, metric)] = level
    return out


def verdict_level(report: Mapping[str, Any]) -> str:
    """What the policy says now, paused or not: over, warn or ok."""
    return {"pause": "over", "warn": "warn"}.get(report["verdict"], "ok")


def row_level(report: Mapping[str, Any]) -> str:
    """The row's colour: paused, else what the policy says now (over, warn, ok)."""
    if report["status"] == "paused":
        return "paused"
    return verdict_level(report)


def partner_row(report: Mapping[str, Any]) -> dict[str, Any]:
    """One partner as the partners page lists it (and the partner page heads it)."""
    levels = cell_levels(report)
    return {
        "partner_id": report["partner_id"],
        "registered": report["registered"],
        "status": report["status"],
        "level": row_level(report),
        "verdict": report["verdict"],
        "verdict_level": verdict_level(report),
        "verdict_reason": report["verdict_reason"],
        "paused_reason": report["paused_reason"],
        "paused_by": report["paused_by"],
        "paused_at": report["paused_at"],
        "resumed_at": report["resumed_at"],
        "contact_email": report["contact_email"],
        "held_jobs": report["held_jobs"],
        "sent_total": report["totals"]["sent"],
        "limits": dict(report["limits"]),
        "throttle": dict(report["throttle"]),
        "windows": [
            {
                **w,
                "bounce_level": levels[(w["hours"], "bounce_rate")],
                "complaint_level": levels[(w["hours"], "complaint_rate")],
            }
            for w in report["windows"]
        ],
    }


def hour_range(now: datetime, hours: int) -> list[datetime]:
    """The starts of the `hours` hour buckets ending with the current one, oldest first."""
    start = hours_back(now, hours)
    return [start + timedelta(hours=i) for i in range(hours)]


def hourly_series(
    buckets: Mapping[datetime, Counters],
    now: datetime,
    limits: Limits,
    hours: int = 168,
    rearm: Rearm | None = None,
    rolling_hours: int = ROLLING_HOURS,
) -> dict[str, Any]:
    """The partner page's chart data: one value per hour bucket (UTC), oldest first.

    Per hour: sends, judged sends, hard bounces, complaints and both rates of that hour.
    `*_rate_rolling` is the rate of the `rolling_hours` window ending with that hour, as
    the detector judged it then (after the last resume, through compute_windows), and
    None where that window had fewer judged sends than min_volume: it was not judged.
    """
    series: dict[str, list[Any]] = {
        name: []
        for name in (
            "hours",
            "sent",
            "judged_sends",
            "hard_bounces",
            "complaints",
            "bounce_rate",
            "complaint_rate",
            "bounce_rate_rolling",
            "complaint_rate_rolling",
        )
    }
    hour_list = hour_range(now, hours)
    for hour in hour_list:
        c = buckets.get(hour) or Counters()
        series["hours"].append(hour.isoformat())
        series["sent"].append(c.sent)
        series["judged_sends"].append(judged_sends(c.sent, c.suppressed))
        series["hard_bounces"].append(c.hard_bounces)
        series["complaints"].append(c.complaints)
        series["bounce_rate"].append(rate(c.hard_bounces, c.sent, c.suppressed))
        series["complaint_rate"].append(rate(c.complaints, c.sent, c.suppressed))
        recent = {
            h: buckets[h]
            for h in (hour - timedelta(hours=i) for i in range(rolling_hours))
            if h in buckets
        }
        after_rearm = rearm if rearm and hour_floor(rearm.at) <= hour else None
        (window,) = compute_windows(recent, hour, [rolling_hours], after_rearm)
        judged = window.judged_sends >= limits.min_volume
        series["bounce_rate_rolling"].append(window.bounce_rate if judged else None)
        series["complaint_rate_rolling"].append(window.complaint_rate if judged else None)
    return {"rolling_hours": rolling_hours, **series}


# Lifecycle events (sesguard.aws.lifecycle.partner_history) the charts mark, and their names there.
MARKED = {"Partner Paused": "paused", "Partner Resumed": "resumed"}


def event_rows(events: Sequence[Any], now: datetime, hours: int = 168) -> list[dict[str, Any]]:
    """Lifecycle events, oldest first, each with the index of its hour in the chart series
    (None when it is older than the charts) and whether the charts mark it."""
    first = hours_back(now, hours)
    rows = []
    for event in events:
        at: datetime = event.occurred_at
        index = int((hour_floor(at) - first) / timedelta(hours=1))
        detail = event.detail or {}
        rows.append(
            {
                "event_id": event.event_id,
                "type": event.detail_type,
                "marker": MARKED.get(event.detail_type),
                "at": at.isoformat(),
                "index": index if 0 <= index < hours else None,
                "actor": detail.get("actor"),
                "reason": detail.get("reason"),
            }
        )
    return rows
