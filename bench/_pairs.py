"""What the benchmarks share: interleaved runs, their ratio with its spread, and targets.

Ours and a baseline run alternately (A B A B ...), each pair on the same data, so that a
change in the machine's load falls on both sides of a pair; the figure is the median of
the per-pair ratios, and min..max says how much the load moved it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from statistics import median
from typing import Any, TypeVar

A = TypeVar("A")
B = TypeVar("B")

DEFAULT_PAIRS = 3


def interleave(a: Callable[[], A], b: Callable[[], B], pairs: int) -> list[tuple[A, B]]:
    """Run a, b, a, b, ... `pairs` times each; returns the pairs."""
    return [(a(), b()) for _ in range(pairs)]


async def interleave_async(
    a: Callable[[], Awaitable[A]], b: Callable[[], Awaitable[B]], pairs: int
) -> list[tuple[A, B]]:
    """`interleave` for coroutines, one after the other (never side by side)."""
    out = []
    for _ in range(pairs):
        first = await a()
        out.append((first, await b()))
    return out


def spread(ratios: list[float], digits: int = 2) -> dict[str, Any]:
    """The median of per-pair ratios, their min and max, and the ratios in run order."""
    return {
        "median": round(median(ratios), digits),
        "min": round(min(ratios), digits),
        "max": round(max(ratios), digits),
        "ratios": [round(r, digits) for r in ratios],
    }


def show(s: dict[str, Any], unit: str = "x") -> str:
    """'12.3x (11.0-13.5 over 3 pairs)'."""
    n = len(s["ratios"])
    return f"{s['median']:g}{unit} ({s['min']:g}-{s['max']:g} over {n} pair{'s' * (n != 1)})"


def judge(
    targets: dict[str, tuple[str, float]], values: dict[str, float | None]
) -> dict[str, dict[str, Any]]:
    """Each target with its measured value, goal and whether it is met (a value that could
    not be measured is not met)."""
    out = {}
    for name, (op, goal) in targets.items():
        value = values.get(name)
        met = value is not None and (value >= goal if op == ">=" else value <= goal)
        out[name] = {"value": value, "target": f"{op} {goal:g}", "met": met}
    return out
