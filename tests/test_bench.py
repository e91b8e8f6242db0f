"""The benchmarks still run end to end (small sizes; no timing is asserted, only that every
job and event went through and the JSON line carries the figures docs/testing.md quotes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_bench(*args: str, timeout: float = 120) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result: dict[str, Any] = orjson.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_sender_bench_runs_and_reports_its_bounds() -> None:
    r = run_bench(
        "bench/sender.py", "--jobs", "20", "--depth", "10", "--latency-ms", "0,5", "--pairs", "2"
    )
    assert r["jobs"] == 20 and r["pairs"] == 2
    spread = r["speedup_spread"]  # interleaved: one ratio per pair, the median reported
    assert len(spread["ratios"]) == 2 and spread["min"] <= r["speedup"] <= spread["max"]
    assert len(r["speedup_at_5ms_latency_spread"]["ratios"]) == 2
    for key in (
        "speedup",
        "sqs_calls_per_job",
        "dynamodb_reads_per_job",
        "ses_calls_per_job",
        "speedup_at_5ms_latency",
        "targets_met",
    ):
        assert key in r, key
    assert r["ses_calls_per_job"] == 1.0  # one send per job, no more
    targets = r["targets"]
    assert set(targets) == {
        "speedup_at_10ms_latency",
        "speedup_over_ceiling",
        "sqs_calls_per_job",
        "dynamodb_reads_per_job",
    }
    assert targets["speedup_at_10ms_latency"] == {  # no 10 ms scenario in this run
        "value": None,
        "target": ">= 5",
        "met": False,
    }
    assert r["targets_met"] is False
    if sys.platform == "linux":
        assert r["speedup_ceiling"] > 0 and r["speedup_bound_any_consumer"] > 0


WORKER_TARGETS = {
    "speedup",
    "ddb_items_read_per_1k_events",
    "ddb_writes_per_1k_events",
    "parse_vs_orjson",
}


def test_worker_bench_runs_interleaved_and_reports_targets_and_cost() -> None:
    r = run_bench(
        "bench/worker.py",
        *("--events", "2000", "--partners", "5", "--objects", "2"),
        *("--naive-sample", "200", "--pairs", "2"),
    )
    for key in ("speedup", "parse_vs_orjson"):
        assert len(r[key]["ratios"]) == 2, key  # one per interleaved pair
        assert r[key]["min"] <= r[key]["median"] <= r[key]["max"], key
    assert len(r["worker_events_per_s"]) == len(r["naive_events_per_s"]) == 2
    for key in (
        "ddb_writes_per_1k_events",
        "ddb_items_written_per_1k_events",
        "ddb_reads_per_1k_events",
        "ddb_items_read_per_1k_events",
    ):
        assert r[key] >= 0, key
    # Every write item costs at least one unit; the naive worker writes 1 KB per event.
    assert r["ddb_wru_per_1k_events"] >= r["ddb_items_written_per_1k_events"]
    assert r["ddb_usd_per_million_events"] > 0
    assert r["naive_ddb_usd_per_million_events"] >= r["prices"]["wru_usd_per_million"] / 2
    assert "ConsumedCapacity" in r["units_basis"]
    assert set(r["targets"]) == WORKER_TARGETS
    for target in r["targets"].values():
        assert set(target) == {"value", "target", "met"}
    assert r["targets_met"] == all(t["met"] for t in r["targets"].values())


def test_worker_bench_scale_reports_each_partner_count() -> None:
    r = run_bench(
        "bench/worker.py",
        *("--scale", "3,40", "--events", "1500", "--objects", "2"),
        *("--naive-sample", "100", "--pairs", "1"),
    )
    assert r["benchmark"] == "worker-scale"
    assert [s["partners"] for s in r["sizes"]] == [3, 40]
    for s in r["sizes"]:
        assert 0 < s["partners_sending"] <= s["partners"]
        assert len(s["speedup"]["ratios"]) == 1
        assert {"ddb_reads_per_1k_events", "ddb_items_written_per_1k_events"} <= s.keys()


def test_report_rewrites_only_the_marked_table(tmp_path: Path, monkeypatch: Any) -> None:
    """bench/report.py --render: the saved results become the table between the markers,
    and nothing else in the document changes."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import report
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert report.BEGIN in (ROOT / "docs" / "testing.md").read_text()
    spread = {"median": 2.0, "min": 1.5, "max": 3.0, "ratios": [1.5, 2.0, 3.0]}
    target = {"value": 2.0, "target": ">= 40", "met": False}
    worker = {
        "events": 1000, "partners": 5, "objects": 2, "speedup": spread,
        "parse_vs_orjson": spread, "ddb_items_read_per_1k_events": 1,
        "ddb_reads_per_1k_events": 1, "ddb_writes_per_1k_events": 2,
        "ddb_items_written_per_1k_events": 3, "ddb_wru_per_1k_events": 6,
        "ddb_rru_per_1k_events": 0.5, "ddb_usd_per_million_events": 0.004,
        "naive_ddb_usd_per_million_events": 0.625, "targets": {"speedup": target},
        "_measured": "today",
    }  # fmt: skip
    monkeypatch.setattr(report, "SAVED", tmp_path)
    (tmp_path / "worker.json").write_bytes(orjson.dumps(worker))
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{report.BEGIN}\nold\n{report.END}\nafter\n")
    report.rewrite(doc)
    text = doc.read_text()
    assert text.startswith(f"before\n{report.BEGIN}\n| benchmark |")
    assert text.endswith(f"{report.END}\nafter\n")
    assert "**2x** (1.5-3, 3 pairs)" in text and "speedup >= 40: **not met**" in text
    assert "old" not in text


def test_worker_lag_bench_runs_and_compares_both_modes() -> None:
    r = run_bench(
        "bench/worker_lag.py", "--bomb-mib", "4", "--records-bomb-mib", "0.2", "--plain-mb", "1"
    )
    assert len(r["objects"]) == 5
    for figures in r["objects"].values():
        for mode in ("ours", "one_call"):
            assert {"worst_lag_ms", "worst_held_ms", "cpu_seconds"} <= figures[mode].keys()
    for key in ("worst_lag_ms", "worst_held_ms", "worst_lag_ms_one_call", "lag_target_met"):
        assert key in r, key


@pytest.mark.timeout(360)
def test_recovery_bench_runs(tmp_path: Path) -> None:
    r = run_bench(
        "bench/recovery.py",
        *("--jobs", "20", "--outage", "2", "--visibility", "10", "--max-wait", "120"),
        *("--log", str(tmp_path / "sender.log")),
        timeout=300,
    )
    assert r["jobs"] == 20
    for who in ("naive", "ours"):
        assert r[f"{who}_recovery_seconds"] is not None, who
        assert r[f"{who}_sent"] + r[f"{who}_dead_lettered"] == 20, who
        assert r[f"{who}_ses_calls_in_outage"] > 0, who  # the outage did hit it
    assert "goal_met" in r


def test_overshoot_bench_runs_both_variants_and_reports_its_target() -> None:
    r = run_bench(
        "bench/overshoot.py",
        "--runs",
        "1",
        "--jobs",
        "120",
        "--min-volume",
        "40",
        timeout=240,
    )
    assert r["benchmark"] == "overshoot" and r["runs"] == 1
    assert {row["variant"] for row in r["_rows"]} == {"ours", "baseline"}
    for row in r["_rows"]:  # every run crossed at its evidence and was paused (or it exits 1)
        assert row["evidence_at_send"] >= 40
        assert row["sent"] == row["evidence_at_send"] + row["sends_after_evidence"]
    assert set(r["target"]) == {"value", "target", "met"}


def test_fairness_bench_runs_both_variants_and_reports_its_targets() -> None:
    r = run_bench("bench/fairness.py", "--quick", "--jobs", "100", "--seconds", "4", timeout=240)
    assert r["benchmark"] == "fairness" and r["big_jobs"] == 100
    assert {row["variant"] for row in r["_rows"]} == {"ours", "baseline"}
    for row in r["_rows"]:
        assert row["quiet_jobs"] >= 2  # both quiet partners enqueued
        assert row["sent"] > 0
    assert r["baseline_deferred"] == 0  # the baseline never defers
    assert "baseline_over_ours_quiet_p95" in r
    assert set(r["targets"]) == {"quiet_p95_dwell_s", "rate_used"}
    for target in r["targets"].values():
        assert set(target) == {"value", "target", "met"}
    assert isinstance(r["targets_met"], bool)
