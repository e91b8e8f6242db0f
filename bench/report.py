"""Run the interleaved benchmarks and rewrite their table in docs/testing.md.

    python bench/report.py                 # worker, worker --scale, sender: run and rewrite
    python bench/report.py --only worker   # run some (worker, scale, sender); keep the rest
    python bench/report.py --render        # rewrite from the last saved results, run nothing

Each benchmark's last line (its JSON) is saved in .artifacts/bench/NAME.json, and the
table between the `bench:begin` and `bench:end` comments of docs/testing.md is rebuilt
from the saved results, so the figures the docs show are the ones a run printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
SAVED = ROOT / ".artifacts" / "bench"
DOC = ROOT / "docs" / "testing.md"
BEGIN, END = "<!-- bench:begin (python bench/report.py) -->", "<!-- bench:end -->"
RUNS = {
    "worker": ["bench/worker.py"],
    "scale": ["bench/worker.py", "--scale"],
    "sender": ["bench/sender.py"],
}


def run(name: str, extra: list[str]) -> dict[str, Any]:
    """Run one benchmark (its table goes to our stdout) and save its JSON line."""
    cmd = [sys.executable, *RUNS[name], *extra]
    print("$", " ".join(cmd[1:]), flush=True)
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    print(out.stdout, end="", flush=True)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    result: dict[str, Any] = orjson.loads(out.stdout.strip().splitlines()[-1])
    result["_measured"] = f"{datetime.now(UTC):%Y-%m-%d}, load {os.getloadavg()[0]:.1f}"
    SAVED.mkdir(parents=True, exist_ok=True)
    (SAVED / f"{name}.json").write_bytes(orjson.dumps(result))
    return result


def _spread(s: dict[str, Any]) -> str:
    return f"**{s['median']:g}x** ({s['min']:g}-{s['max']:g}, {len(s['ratios'])} pairs)"


def _met(r: dict[str, Any]) -> str:
    return "; ".join(
        f"{name} {t['target']}: {'met' if t['met'] else '**not met**'}"
        for name, t in r["targets"].items()
    )


def worker_row(r: dict[str, Any]) -> list[str]:
    what = (
        f"`bench/worker.py`: {r['events']:,} events, {r['partners']} partners,"
        f" {r['objects']} objects; ours and the naive per-event worker interleaved"
    )
    result = (
        f"speedup {_spread(r['speedup'])}; parse+aggregate {_spread(r['parse_vs_orjson'])}"
        f" of bare orjson; per 1,000 events **{r['ddb_items_read_per_1k_events']:g}** items"
        f" read ({r['ddb_reads_per_1k_events']:g} read requests),"
        f" **{r['ddb_writes_per_1k_events']:g}** write requests"
        f" ({r['ddb_items_written_per_1k_events']:g} items written),"
        f" {r['ddb_wru_per_1k_events']:g} WRU / {r['ddb_rru_per_1k_events']:g} RRU:"
        f" **${r['ddb_usd_per_million_events']:g}** per million events on demand"
        f" (naive ${r['naive_ddb_usd_per_million_events']:g})"
    )
    return [what, result, _met(r), r["_measured"]]


def scale_row(r: dict[str, Any]) -> list[str]:
    parts = []
    for s in r["sizes"]:
        parts.append(
            f"{s['partners']:,} ({s['partners_sending']:,} sending):"
            f" {s['ddb_reads_per_1k_events']:g} read req / {s['ddb_items_read_per_1k_events']:g}"
            f" items read, {s['ddb_writes_per_1k_events']:g} write req /"
            f" {s['ddb_items_written_per_1k_events']:g} items written per 1k events,"
            f" ${s['ddb_usd_per_million_events']:g}/M events,"
            f" {sorted(s['worker_events_per_s'])[len(s['worker_events_per_s']) // 2]:,} events/s,"
            f" speedup {_spread(s['speedup'])}"
        )
    first = r["sizes"][0]
    what = (
        f"`bench/worker.py --scale`: {first['events']:,} events at each partner count"
        " (partners registered; those sending in brackets)"
    )
    return [what, "<br>".join(parts), "grows with partners sending, not existing", r["_measured"]]


def sender_row(r: dict[str, Any]) -> list[str]:
    at10 = r.get("speedup_at_10ms_latency_spread")
    what = (
        f"`bench/sender.py`: {r['jobs']} jobs, {r['partners']} partners; naive consumer"
        " and ours interleaved"
    )
    result = (
        f"speedup on bare moto {_spread(r['speedup_spread'])}, {r['speedup_over_ceiling']}"
        f" of `speedup_ceiling` ({r['speedup_ceiling']}x)"
        + (f"; with 10 ms added to every call {_spread(at10)}" if at10 else "")
        + f"; {r['sqs_calls_per_job']:g} SQS calls/job, {r['dynamodb_reads_per_job']:g}"
        f" gate reads/job, {r['ses_calls_per_job']:g} SES calls/job"
    )
    return [what, result, _met(r), r["_measured"]]


ROWS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "worker": worker_row,
    "scale": scale_row,
    "sender": sender_row,
}


def render() -> str:
    rows = []
    for name, row in ROWS.items():
        path = SAVED / f"{name}.json"
        if path.exists():
            rows.append(row(orjson.loads(path.read_bytes())))
    lines = ["| benchmark | result | targets | measured |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join([BEGIN, *lines, END])


def rewrite(doc: Path = DOC) -> None:
    text = doc.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    doc.write_text(text[:start] + render() + text[end:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(RUNS), help="comma list of " + ", ".join(RUNS))
    ap.add_argument("--render", action="store_true", help="run nothing; rebuild from saved")
    ap.add_argument("--pairs", default=None, help="passed to every benchmark")
    args = ap.parse_args()
    if not args.render:
        for name in args.only.split(","):
            if name not in RUNS:
                ap.error(f"unknown benchmark {name!r}")
            run(name, ["--pairs", args.pairs] if args.pairs else [])
    rewrite()
    print(f"rewrote the benchmark table in {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
