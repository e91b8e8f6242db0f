"""The fault scenarios run once per session, concurrently, before their tests look at the
results; the results table is printed at the end of the run and written to a file."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.faults.scenarios import BY_KEY, Result, run_all, table

# How many scenarios run at once (each has its own stand-in, proxies and processes).
PARALLEL = int(os.environ.get("FAULTS_PARALLEL", "4"))
_results: dict[str, Result] = {}
_kept: list[Path] = []  # where the logs of a run with failures are


@pytest.fixture(scope="session")
async def fault_results(request: pytest.FixtureRequest) -> dict[str, Result]:
    """Run every scenario selected in this session (longest first), once. Their logs stay
    in FAULTS_DIR (default: a new temporary directory) when a scenario fails."""
    keys = [
        item.callspec.params["key"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_fault" and hasattr(item, "callspec")
    ]
    scenarios = [BY_KEY[k] for k in dict.fromkeys(keys)]
    base = Path(os.environ.get("FAULTS_DIR") or tempfile.mkdtemp(prefix="sesguard-faults-"))
    _results.update(await run_all(scenarios, base, PARALLEL))
    text = table([_results[s.key] for s in scenarios])
    for path in (base / "results.md", os.environ.get("FAULTS_TABLE")):
        if path:
            Path(path).write_text(text + "\n")  # noqa: ASYNC240 - once, after the runs
    if os.environ.get("FAULTS_DIR") or any(r.failures() for r in _results.values()):
        _kept.append(base)
    else:
        shutil.rmtree(base, ignore_errors=True)
    return _results


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _results:
        terminalreporter.section("fault injection results")
        terminalreporter.write_line(table(list(_results.values())))
        for path in _kept:
            terminalreporter.write_line(f"logs and results.md in {path}")
