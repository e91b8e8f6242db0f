"""Faults injected into real sesguard processes (tests/faults/scenarios.py): nothing lost,
nothing sent or counted twice, nothing dead-lettered for a transient fault, and the
services recover by themselves."""

from __future__ import annotations

import pytest

from tests.faults.scenarios import SCENARIOS, Result


@pytest.mark.timeout(1800)  # the first test waits for every scenario (run concurrently)
@pytest.mark.parametrize("key", [s.key for s in SCENARIOS])
def test_fault(key: str, fault_results: dict[str, Result]) -> None:
    result = fault_results[key]
    failures = result.failures()
    logs = "".join(
        f"\n--- {name}: notable, then last lines ---\n{tail}" for name, tail in result.logs.items()
    )
    assert not failures, (
        f"{result.scenario.fault}:\n- "
        + "\n- ".join(failures)
        + f"\ntimeline (s): {result.timeline}; logs in {result.workdir}{logs}"
    )
