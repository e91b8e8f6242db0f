"""Policy table tests: pure functions, no AWS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sesguard.core.partners import Counters, Limits, Rearm
from sesguard.core.policy import Level, compute_windows, evaluate

NOW = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)
HOUR = NOW.replace(minute=0)
LIMITS = Limits(bounce_rate=0.05, complaint_rate=0.001, min_volume=200)


def bucket(hours_ago: int, sent: int = 0, hard: int = 0, complaints: int = 0, soft: int = 0):
    return HOUR - timedelta(hours=hours_ago), Counters(
        sent=sent, hard_bounces=hard, complaints=complaints, soft_bounces=soft
    )


@pytest.mark.parametrize(
    ("buckets", "level", "reason_part"),
    [
        ([], Level.OK, ""),  # zero sends
        ([bucket(0, sent=199, hard=100)], Level.OK, ""),  # below min_volume: no judgement
        ([bucket(0, sent=200, hard=10)], Level.WARN, "bounce rate 5.00% near limit"),  # exactly at
        ([bucket(0, sent=200, hard=11)], Level.PAUSE, "bounce rate 5.50% exceeds limit 5.00%"),
        ([bucket(0, sent=1000, hard=24)], Level.OK, ""),  # 2.4% < warn at 2.5%
        ([bucket(0, sent=1000, hard=25)], Level.WARN, "bounce rate 2.50% near limit"),
        ([bucket(0, sent=1000, soft=900)], Level.OK, ""),  # soft bounces never count
        ([bucket(0, sent=1000, complaints=1)], Level.WARN, "complaint rate 0.10% near"),
        ([bucket(0, sent=1000, complaints=2)], Level.PAUSE, "complaint rate 0.20% exceeds"),
    ],
)
def test_single_window_table(buckets, level, reason_part) -> None:
    verdict = evaluate(LIMITS, dict(buckets), NOW)
    assert verdict.level is level
    assert reason_part in verdict.reason
    if level is Level.PAUSE:
        assert "over 24 hours" in verdict.reason


def test_seven_day_window_catches_slow_burn() -> None:
    # 150 sends a day with 9 hard bounces: each day alone is under min_volume,
    # the 7-day window (1050 sent, 63 hard = 6%) is over the limit.
    buckets = dict(bucket(24 * d + 1, sent=150, hard=9) for d in range(7))
    verdict = evaluate(LIMITS, buckets, NOW)
    assert verdict.level is Level.PAUSE
    assert verdict.first is not None and verdict.first.window_hours == 168
    assert "over 7 days (1050 sent)" in verdict.reason


def test_buckets_outside_windows_are_ignored() -> None:
    buckets = dict([bucket(24, sent=1000, hard=500)])  # 24 hours ago: outside the 24 h window
    windows = compute_windows(buckets, NOW)
    assert [(w.hours, w.sent) for w in windows] == [(24, 0), (168, 1000)]
    old = dict([bucket(168, sent=1000, hard=500)])  # outside both
    assert evaluate(LIMITS, old, NOW).level is Level.OK


def test_resume_rearms_the_detector() -> None:
    buckets = dict([bucket(2, sent=1000, hard=500), bucket(0, sent=300, hard=60)])
    assert evaluate(LIMITS, buckets, NOW).level is Level.PAUSE
    # Resumed in the current hour after 300 sends / 60 bounces had been counted in it:
    rearm = Rearm(at=NOW - timedelta(minutes=10), baseline=Counters(sent=300, hard_bounces=60))
    verdict = evaluate(LIMITS, buckets, NOW, rearm)
    assert verdict.level is Level.OK
    assert [w.sent for w in verdict.windows] == [0, 0]
    # New traffic after the resume is judged on its own.
    buckets[HOUR] = Counters(sent=600, hard_bounces=80)  # 300 new sends, 20 new bounces
    verdict = evaluate(LIMITS, buckets, NOW, rearm)
    assert [w.sent for w in verdict.windows] == [300, 300]
    assert verdict.level is Level.PAUSE and "6.67%" in verdict.reason


def test_min_volume_is_per_partner() -> None:
    buckets = dict([bucket(0, sent=20, hard=5)])
    assert evaluate(LIMITS, buckets, NOW).level is Level.OK
    assert evaluate(Limits(min_volume=10), buckets, NOW).level is Level.PAUSE


def test_both_metrics_reported() -> None:
    verdict = evaluate(LIMITS, dict([bucket(0, sent=1000, hard=60, complaints=5)]), NOW)
    assert verdict.level is Level.PAUSE
    assert {f.metric for f in verdict.findings if f.level is Level.PAUSE} == {
        "bounce_rate",
        "complaint_rate",
    }
