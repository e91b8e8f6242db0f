"""The worker's entry points: argument parsing, `python -m worker`, configuration errors."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from worker.main import ACTION_DEST, add_arguments, parse_since


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sesguard worker")
    add_arguments(parser)
    return parser.parse_args(argv)


def test_service_and_backfill_share_one_parser() -> None:
    args = parse([])
    assert (args.drain, getattr(args, ACTION_DEST)) == (False, None)
    assert parse(["--drain"]).drain is True
    args = parse(["backfill", "--prefix", "2026/11/", "--since", "2026-11-29"])
    assert getattr(args, ACTION_DEST) == "backfill"
    assert args.prefix == "2026/11/"
    assert args.since == datetime(2026, 11, 29, tzinfo=UTC)
    assert parse(["backfill"]).prefix is None  # default: SESGUARD_EVENTS_PREFIX


def test_since_accepts_zones_and_rejects_nonsense() -> None:
    assert parse_since("2026-11-29T13:00+02:00") == datetime(2026, 11, 29, 11, tzinfo=UTC)
    with pytest.raises(SystemExit):
        parse(["backfill", "--since", "last tuesday"])


def test_lead_cli_parses_worker_options() -> None:
    from sesguard.cli import services

    module, args = services.service_args("worker", ["backfill", "--prefix", "x/"])
    assert module.__name__ == "worker.main"
    assert getattr(args, ACTION_DEST) == "backfill" and args.prefix == "x/"


def run_module(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


def test_python_m_worker_help() -> None:
    out = run_module("--help")
    assert out.returncode == 0
    assert "--drain" in out.stdout and "backfill" in out.stdout
    out = run_module("backfill", "--help")
    assert out.returncode == 0 and "--since" in out.stdout


def test_bad_setting_exits_2_with_one_line() -> None:
    out = run_module("--drain", SESGUARD_CONCURRENCY="0")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "SESGUARD_CONCURRENCY" in out.stderr


async def test_python_m_worker_drains_an_empty_queue(
    moto_endpoint: str, clients: object, settings: object
) -> None:
    import asyncio

    from sesguard.ops.bootstrap import Report, ensure_queues

    await ensure_queues(clients, settings, Report())  # type: ignore[arg-type]
    out = await asyncio.to_thread(run_module, "--drain", AWS_ENDPOINT_URL=moto_endpoint)
    assert out.returncode == 0, out.stderr
    assert '"event":"worker_stopped"' in out.stderr
