"""Retry delays shared by the services and the CLI (one formula, one place)."""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int, base: float = 0.1, cap: float = 5.0, rng: random.Random | None = None
) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)], so
    many retrying tasks spread out instead of retrying in step."""
    upper = min(cap, base * (2 ** max(0, attempt)))
    return (rng or random).uniform(0, upper)
