"""Retry delays shared by the services and the CLI (one formula, one place)."""

from __future__ import annotations

import random


def backoff_ceiling(attempt: int, base: float, cap: float) -> float:
    """The exponential curve both jitters draw under: min(cap, base * 2**attempt)."""
    return min(cap, base * 2.0 ** min(max(0, attempt), 64))


def backoff_delay(
    attempt: int, base: float = 0.1, cap: float = 5.0, rng: random.Random | None = None
) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)], so
    many retrying tasks spread out instead of retrying in step."""
    return (rng or random).uniform(0, backoff_ceiling(attempt, base, cap))


def spaced_delay(
    attempt: int, base: float = 1.0, cap: float = 300.0, rng: random.Random | None = None
) -> float:
    """ "Equal jitter": uniform in [c/2, c] with c = min(cap, base * 2**attempt).

    Still spread out, but never shorter than half the curve, so the total time a series
    of retries takes has a known lower bound (`spaced_floor`); the runtime sizes the
    queues' maxReceiveCount from that bound (sesguard.runtime.retry)."""
    ceiling = backoff_ceiling(attempt, base, cap)
    return (rng or random).uniform(ceiling / 2, ceiling)


def spaced_floor(attempt: int, base: float = 1.0, cap: float = 300.0) -> float:
    """The least `spaced_delay` can return for this attempt."""
    return backoff_ceiling(attempt, base, cap) / 2
