"""The local loop: the simulator's records through the worker's parser, and the demo."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from sesguard.cli.services import demo_services
from sesguard.core.partners import Counters
from sesguard.local.demo import IDENTITY, NOTIFY_FROM, check_results, demo_jobs, run_demo
from sesguard.local.simulator import encode_records, simulate_events
from worker.aggregate import aggregate_bytes

NOW = datetime(2026, 11, 29, 10, 15, tzinfo=UTC)
SIM = "simulator.amazonses.com"


def send_params(partner: str, to: list[str], cc: list[str] | None = None) -> dict:
    return {
        "FromEmailAddress": f"news@{IDENTITY}",
        "Destination": {"ToAddresses": to, "CcAddresses": cc or []},
        "Content": {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "t"}}}},
        "EmailTags": [{"Name": "partner_id", "Value": partner}],
        "ConfigurationSetName": "sesguard",
    }


def test_simulated_records_count_per_the_design_table() -> None:
    records = []
    records += simulate_events(
        send_params(
            "acme", [f"success@{SIM}", f"bounce@{SIM}", f"bounce+2@{SIM}"], [f"complaint@{SIM}"]
        ),
        "m-1",
        NOW,
        "123456789012",
        "us-east-1",
    )
    records += simulate_events(
        send_params("acme", [f"ooto@{SIM}", f"suppressionlist@{SIM}", "ana@example.org"]),
        "m-2",
        NOW,
        "123456789012",
        "us-east-1",
    )
    untagged = send_params("x", [f"success@{SIM}"])
    untagged["EmailTags"] = []
    records += simulate_events(untagged, "m-3", NOW, "123456789012", "us-east-1")
    blob = b"".join(encode_records(records))  # what lands in S3: newline-terminated records

    hour = NOW.replace(minute=0)
    # m-1: Send 4, Delivery [success, complaint], Bounce [bounce, bounce+2], Complaint 1;
    # m-2: Send 3, Bounce Suppressed [suppressionlist] (hard: the global list), Delivery
    #      [ana], Bounce Transient [ooto]; m-3 (untagged): Send 1, Delivery 1.
    counted = aggregate_bytes(blob, count_simulator=True)  # as the demo's worker counts
    assert counted.stats.malformed_count == 0
    assert counted.counts()[("acme", hour)] == Counters(
        sent=7, delivered=3, hard_bounces=3, soft_bounces=1, complaints=1
    )
    assert counted.counts()[("_unattributed", hour)] == Counters(sent=1, delivered=1)
    # By default only ana@example.org is real mail; the simulator's share is kept apart.
    apart = aggregate_bytes(blob)
    assert apart.counts()[("acme", hour)] == Counters(
        sent=1,
        delivered=1,
        simulator_sent=6,
        simulator_delivered=2,
        simulator_hard_bounces=3,
        simulator_soft_bounces=1,
        simulator_complaints=1,
    )
    assert apart.stats.simulator == 6 + 2 + 3 + 1 + 1 + 2  # + m-3's Send and Delivery


async def test_demo_pauses_the_dirty_and_the_complaining_partner_once(moto_endpoint) -> None:
    out = io.StringIO()
    results = await run_demo(180, moto_endpoint, demo_services(), out=out)
    by_id = {p["partner_id"]: p for p in results["partners"]}

    assert by_id["bakery"]["status"] == "active"
    assert by_id["gadgets"]["status"] == "paused"
    assert by_id["gadgets"]["paused_reason"].startswith("bounce rate")
    assert by_id["newsletter"]["status"] == "paused"
    assert by_id["newsletter"]["paused_reason"].startswith("complaint rate")

    # Nothing lost: every job was either sent (and counted) or held.
    for p in by_id.values():
        assert p["totals"]["sent"] + p["held_jobs"] == 60, p
    assert by_id["bakery"]["held_jobs"] == 0

    notices = results["notices"]
    assert sorted(n["to"][0] for n in notices) == [
        "postmaster@gadgets.example.com",
        "postmaster@newsletter.example.com",
    ]
    assert all(n["from"] == NOTIFY_FROM for n in notices)
    text = out.getvalue()
    assert "4. results" in text and "gadgets: bounce rate" in text
    assert results["problems"] == [] and "PROBLEM" not in text


def _partner(pid: str, status: str, sent: int, held: int) -> dict:
    contact = f"postmaster@{pid}.example.com"
    return {
        "partner_id": pid,
        "status": status,
        "contact_email": contact,
        "totals": {"sent": sent},
        "held_jobs": held,
    }


def _notice(pid: str) -> dict:
    return {"from": NOTIFY_FROM, "to": [f"postmaster@{pid}.example.com"], "subject": "s"}


def test_demo_checks_its_own_promises() -> None:
    """`sesguard demo` exits 1 naming what went wrong when a job is lost, a notice is
    missing or doubled, or the clean partner is paused."""
    jobs = demo_jobs(30)  # 10 per partner
    good = {
        "partners": [
            _partner("bakery", "active", 10, 0),
            _partner("gadgets", "paused", 6, 4),
            _partner("newsletter", "active", 10, 0),
        ],
        "notices": [_notice("gadgets")],
    }
    assert check_results(good, jobs) == []

    bad = {
        "partners": [
            _partner("bakery", "paused", 10, 0),
            _partner("gadgets", "paused", 6, 3),
            _partner("newsletter", "active", 10, 0),
        ],
        "notices": [_notice("gadgets"), _notice("gadgets"), _notice("newsletter")],
    }
    assert check_results(bad, jobs) == [
        "bakery: 0 notices for status paused",
        "gadgets: 6 sent + 3 held != 10 jobs",
        "gadgets: 2 notices for status paused",
        "newsletter: 1 notices for status active",
        "bakery, the clean partner, is not active",
    ]


def test_demo_command_never_uses_the_callers_aws_account(tmp_path) -> None:
    """Real-looking credentials and endpoints in the environment are ignored."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "AKIAREALLOOKINGKEY00",
        "AWS_SECRET_ACCESS_KEY": "real-looking-secret",
        "AWS_PROFILE": "production",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # would fail if used
        "AWS_ENDPOINT_URL_SQS": "http://127.0.0.1:9",
    }
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("sesguard")), "demo", "--jobs", "30"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "4. results" in proc.stdout and "127.0.0.1:9" not in proc.stdout
    log = (tmp_path / ".sesguard-demo.log").read_text()
    assert "real-looking-secret" not in log and "sender_started" in log


async def test_keep_running_prints_the_console_command_for_the_stand_in() -> None:
    """`sesguard demo --keep-running` tells a newcomer how to open the console on it."""
    import asyncio

    from sesguard.local.demo import _keep_running

    out = io.StringIO()
    task = asyncio.create_task(_keep_running("http://127.0.0.1:4567", out))
    await asyncio.sleep(0)  # the task prints before its first wait
    assert "Ctrl-C" in out.getvalue()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    lines = out.getvalue().splitlines()
    export = next(line.strip() for line in lines if line.strip().startswith("export "))
    assert export == (
        "export AWS_ENDPOINT_URL=http://127.0.0.1:4567 AWS_ACCESS_KEY_ID=testing"
        " AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1"
    )
    assert "  sesguard console" in lines
