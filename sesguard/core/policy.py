"""Reputation policy: pure functions from counts and limits to a verdict.

The rules are stated in docs/semantics.md ("Sends and rates", "Hours, windows and resume",
"The verdict"); this module is where they are enforced, and `judged_sends` and `rate` are
the one definition of a rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

from sesguard.core.partners import Counters, Limits, Rearm, hour_floor, hours_back

DEFAULT_WINDOWS: tuple[int, ...] = (24, 168)


class Level(IntEnum):
    OK = 0
    WARN = 1
    PAUSE = 2

    def __str__(self) -> str:
        return self.name.lower()


def judged_sends(sent: int, suppressed: int) -> int:
    """The denominator of both rates: sends minus those to account-suppressed addresses
    (never below 0). SES accepts a send to an address on the account's suppression list
    but never attempts it, and leaves it out of its own rates; so must we."""
    return max(0, sent - suppressed)


def rate(count: int, sent: int, suppressed: int) -> float | None:
    """`count` (hard bounces or complaints) over the judged sends; None without any."""
    basis = judged_sends(sent, suppressed)
    return count / basis if basis else None


@dataclass(frozen=True)
class Window:
    hours: int
    sent: int
    hard_bounces: int
    complaints: int
    suppressed: int = 0

    @property
    def judged_sends(self) -> int:
        return judged_sends(self.sent, self.suppressed)

    @property
    def bounce_rate(self) -> float | None:
        return rate(self.hard_bounces, self.sent, self.suppressed)

    @property
    def complaint_rate(self) -> float | None:
        return rate(self.complaints, self.sent, self.suppressed)

    def as_json(self) -> dict[str, float | int | None]:
        return {
            "hours": self.hours,
            "sent": self.sent,
            "suppressed": self.suppressed,
            "judged_sends": self.judged_sends,
            "hard_bounces": self.hard_bounces,
            "complaints": self.complaints,
            "bounce_rate": self.bounce_rate,
            "complaint_rate": self.complaint_rate,
        }


@dataclass(frozen=True)
class Finding:
    level: Level
    metric: str  # "bounce_rate" | "complaint_rate"
    window_hours: int
    rate: float
    limit: float
    sent: int
    suppressed: int = 0
    # The window's counts behind the rate (lifecycle events carry them).
    hard_bounces: int = 0
    complaints: int = 0

    @property
    def judged_sends(self) -> int:
        return judged_sends(self.sent, self.suppressed)

    @property
    def sends_text(self) -> str:
        """'400 sent', or '400 sent, not counting 12 suppressed' (the notice says it too)."""
        text = f"{self.judged_sends} sent"
        return f"{text}, not counting {self.suppressed} suppressed" if self.suppressed else text

    @property
    def reason(self) -> str:
        word = {"bounce_rate": "bounce rate", "complaint_rate": "complaint rate"}[self.metric]
        verb = "exceeds limit" if self.level is Level.PAUSE else "near limit"
        return (
            f"{word} {self.rate:.2%} {verb} {self.limit:.2%} over {_span(self.window_hours)}"
            f" ({self.sends_text})"
        )


@dataclass(frozen=True)
class Verdict:
    level: Level
    findings: tuple[Finding, ...]
    windows: tuple[Window, ...]

    @property
    def reason(self) -> str:
        """Human-readable reason at the verdict's level: per metric, its shortest window
        ('' when ok)."""
        seen: set[str] = set()
        parts = []
        for f in self.findings:  # sorted: most severe, then shortest window first
            if f.level is self.level and f.metric not in seen:
                seen.add(f.metric)
                parts.append(f.reason)
        return "; ".join(parts)

    @property
    def first(self) -> Finding | None:
        worst = [f for f in self.findings if f.level is self.level]
        return worst[0] if worst else None


def _span(hours: int) -> str:
    return f"{hours // 24} days" if hours % 24 == 0 and hours > 24 else f"{hours} hours"


def compute_windows(
    buckets: Mapping[datetime, Counters],
    now: datetime,
    window_hours: Iterable[int] = DEFAULT_WINDOWS,
    rearm: Rearm | None = None,
) -> tuple[Window, ...]:
    """Sum hourly buckets into rolling windows ending at `now`, after the last re-arm."""
    rearm_hour = hour_floor(rearm.at) if rearm else None
    current = hour_floor(now)
    result = []
    for hours in window_hours:
        start = hours_back(now, hours)
        if rearm_hour is not None and rearm_hour > start:
            start = rearm_hour
        total = Counters()
        for hour, counts in buckets.items():
            if start <= hour <= current:
                if rearm and hour == rearm_hour:
                    total.add(counts.minus(rearm.baseline))
                else:
                    total.add(counts)
        result.append(
            Window(hours, total.sent, total.hard_bounces, total.complaints, total.suppressed)
        )
    return tuple(result)


def judge(limits: Limits, windows: Iterable[Window]) -> Verdict:
    """Judge precomputed windows against limits."""
    windows = tuple(windows)
    findings: list[Finding] = []
    for w in windows:
        if w.judged_sends < limits.min_volume:
            continue  # too little traffic to judge this window
        for metric, limit, value in (
            ("bounce_rate", limits.bounce_rate, w.bounce_rate),
            ("complaint_rate", limits.complaint_rate, w.complaint_rate),
        ):
            assert value is not None  # judged_sends >= min_volume >= 1
            if value > limit:
                found = Level.PAUSE
            elif value >= limit * limits.warn_ratio:
                found = Level.WARN
            else:
                continue
            findings.append(
                Finding(
                    found,
                    metric,
                    w.hours,
                    value,
                    limit,
                    w.sent,
                    w.suppressed,
                    w.hard_bounces,
                    w.complaints,
                )
            )
    findings.sort(key=lambda f: (-f.level, f.window_hours, f.metric))
    level = max((f.level for f in findings), default=Level.OK)
    return Verdict(level, tuple(findings), windows)


def evaluate(
    limits: Limits,
    buckets: Mapping[datetime, Counters],
    now: datetime,
    rearm: Rearm | None = None,
    window_hours: Iterable[int] = DEFAULT_WINDOWS,
) -> Verdict:
    """(limits, hourly counters, last resume, now) -> ok / warn / pause with reasons."""
    return judge(limits, compute_windows(buckets, now, window_hours, rearm))
