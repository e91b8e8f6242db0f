"""`sesguard demo`: the whole loop on an embedded AWS stand-in, no AWS account, no Docker.

An embedded moto server plays AWS; sesguard's simulator plays SES event publishing. Three
partners send through the real sender and worker (in this process): a clean one, one
mailing a dirty list, one drawing complaints. The last two cross their limits mid-way,
are paused with one notice each, and their remaining jobs are held.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TextIO

from sesguard.aws.clients import Clients, open_clients
from sesguard.aws.enqueue import Enqueuer
from sesguard.aws.held import count_held
from sesguard.aws.store import PartnerStore
from sesguard.core.partners import DEFAULT_LIMITS, Profile
from sesguard.core.policy import rate
from sesguard.logging import configure_logging
from sesguard.ops.bootstrap import bootstrap
from sesguard.ops.report import render_table
from sesguard.settings import Settings

IDENTITY = "isv.example.com"
NOTIFY_FROM = f"reputation@{IDENTITY}"
SIM = "simulator.amazonses.com"
DEMO_LIMITS = replace(DEFAULT_LIMITS, min_volume=40)  # bounce 5%, complaint 0.1%


@dataclass(frozen=True)
class DemoPartner:
    partner_id: str
    story: str
    every: int  # every n-th recipient is `trouble`; the rest are success@
    trouble: str


PARTNERS = (
    DemoPartner("bakery", "clean list", 0, ""),
    DemoPartner("gadgets", "dirty list: 1 in 6 addresses bounce", 6, f"bounce@{SIM}"),
    DemoPartner("newsletter", "1 in 25 recipients complain", 25, f"complaint@{SIM}"),
)


def demo_settings() -> Settings:
    """Demo-sized knobs: a fast gate cache and a send rate slow enough to watch."""
    return Settings(
        simulate_events=True,
        notify_from=NOTIFY_FROM,
        gate_cache_seconds=0.5,
        max_send_rate=25.0,
        concurrency=16,
        visibility_timeout=30,
        stop_grace_seconds=5.0,
        log_format="json",
    )


def demo_jobs(total: int) -> list[dict[str, Any]]:
    jobs = []
    per = max(1, total // len(PARTNERS))
    for i in range(per):
        for p in PARTNERS:
            trouble = p.every and (i % p.every == p.every - 1)
            jobs.append(
                {
                    "job_id": f"{p.partner_id}-{i:04d}",
                    "partner_id": p.partner_id,
                    "from": f"{p.partner_id.title()} <{p.partner_id}@{IDENTITY}>",
                    "to": [p.trouble if trouble else f"success+{p.partner_id}{i}@{SIM}"],
                    "subject": f"{p.partner_id} update #{i}",
                    "text": "Hello from the sesguard demo.",
                    "tags": {"campaign": "demo"},
                }
            )
    return jobs


async def _progress(store: PartnerStore, total: int, out: TextIO, done: asyncio.Event) -> None:
    tty = out.isatty()
    last = ""
    while True:
        parts = []
        sent = held = 0
        for p in PARTNERS:
            state = await store.get_state(p.partner_id)
            h = await count_held(store.dynamodb, store.table, p.partner_id)
            sent += state.totals.sent
            held += h
            status = state.profile.status.value if state.profile else "?"
            parts.append(f"{p.partner_id} {state.totals.sent} sent/{status}")
        line = f"  sent and counted {sent}/{total}, held {held} · " + " · ".join(parts)
        if tty:
            out.write("\r" + line.ljust(len(last)))
            out.flush()
        elif line != last:
            out.write(line + "\n")
        last = line
        if done.is_set():
            if tty:
                out.write("\n")
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.5)


class Worker(Protocol):
    """What the demo needs of the worker service (worker.service.WorkerService)."""

    async def run(self, drain: bool = False) -> int: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Services:
    """The two services the demo runs, given by the caller (`sesguard.cli.demo_services`):
    sesguard below the CLI imports neither `sender` nor `worker` (tests/test_layout.py)."""

    drain_sender: Callable[[Clients, Settings], Awaitable[int]]  # send until the queue is empty
    worker: Callable[[Clients, Settings], Worker]


async def run_demo(
    total: int,
    endpoint: str,
    services: Services,
    out: TextIO = sys.stdout,
    keep_running: bool = False,
) -> dict[str, Any]:
    """Run the loop; returns the per-partner results (also printed)."""
    settings = demo_settings()
    started = time.monotonic()
    async with open_clients(settings.concurrency) as clients:
        print(f"1. AWS stand-in at {endpoint}; creating resources (sesguard bootstrap)", file=out)
        await bootstrap(clients, settings, [IDENTITY])
        store = PartnerStore.from_settings(clients.dynamodb, settings)
        for p in PARTNERS:
            await store.create(
                Profile(p.partner_id, f"postmaster@{p.partner_id}.example.com", DEMO_LIMITS)
            )
        print("2. partners (limits: bounce 5%, complaint 0.1%, judged from 40 sends):", file=out)
        for p in PARTNERS:
            print(f"     {p.partner_id:<11} {p.story}", file=out)
        jobs = demo_jobs(total)
        await (await Enqueuer.for_queue(clients.sqs, settings.send_queue)).send(jobs)
        print(f"3. enqueued {len(jobs)} jobs; running sender and worker", file=out)

        worker = services.worker(clients, settings)
        worker_task = asyncio.create_task(worker.run())
        done = asyncio.Event()
        progress = asyncio.create_task(_progress(store, len(jobs), out, done))
        sender_code = await services.drain_sender(clients, settings)
        worker.stop()
        await worker_task
        await services.worker(clients, settings).run(drain=True)  # whatever is left
        done.set()
        await progress

        results = await _results(settings, store, endpoint)
        results["problems"] = check_results(results, jobs)
        _print_results(results, out, sender_code, time.monotonic() - started)
        if keep_running:
            await _keep_running(endpoint, out)
    return results


async def _results(settings: Settings, store: PartnerStore, endpoint: str) -> dict[str, Any]:
    from sesguard.local.localaws import sent_messages
    from sesguard.ops.operations import partner_report

    partners = [await partner_report(store, settings, p.partner_id) for p in PARTNERS]
    notices = []
    for msg in sent_messages(endpoint):
        if msg.get("source") == NOTIFY_FROM:
            notices.append(
                {
                    "from": msg["source"],
                    "to": msg["destinations"]["ToAddresses"],
                    "subject": msg["subject"],
                }
            )
    return {"partners": partners, "notices": notices}


def check_results(results: dict[str, Any], jobs: list[dict[str, Any]]) -> list[str]:
    """What the demo promises, whatever --jobs: every job sent (and counted) or held, the
    clean partner never paused, exactly one notice per paused partner and none otherwise."""
    problems = []
    for p in results["partners"]:
        pid = p["partner_id"]
        enqueued = sum(1 for j in jobs if j["partner_id"] == pid)  # one recipient each
        if p["totals"]["sent"] + p["held_jobs"] != enqueued:
            problems.append(
                f"{pid}: {p['totals']['sent']} sent + {p['held_jobs']} held != {enqueued} jobs"
            )
        notices = sum(1 for n in results["notices"] if n["to"] == [p["contact_email"]])
        expected = 1 if p["status"] == "paused" else 0
        if notices != expected:
            problems.append(f"{pid}: {notices} notices for status {p['status']}")
    if any(p["partner_id"] == "bakery" and p["status"] != "active" for p in results["partners"]):
        problems.append("bakery, the clean partner, is not active")
    return problems


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _print_results(results: dict[str, Any], out: TextIO, sender_code: int, seconds: float) -> None:
    rows = []
    for p in results["partners"]:
        t = p["totals"]
        rows.append(
            [
                p["partner_id"],
                t["sent"],
                t["delivered"],
                _pct(rate(t["hard_bounces"], t["sent"], t["suppressed"])),
                _pct(rate(t["complaints"], t["sent"], t["suppressed"])),
                f"{p['limits']['bounce_rate']:.0%} / {p['limits']['complaint_rate']:.1%}",
                p["status"],
                p["held_jobs"],
            ]
        )
    print("\n4. results", file=out)
    print(
        render_table(
            [
                "PARTNER",
                "SENT",
                "DELIVERED",
                "BOUNCE RATE",
                "COMPLAINT RATE",
                "LIMITS B/C",
                "STATUS",
                "HELD JOBS",
            ],
            rows,
        ),
        file=out,
    )
    print("\n5. paused partners", file=out)
    paused = [p for p in results["partners"] if p["status"] == "paused"]
    for p in paused:
        print(f"     {p['partner_id']}: {p['paused_reason']}", file=out)
    if not paused:
        print("     none", file=out)
    print("\n6. notices sent (one per pause)", file=out)
    for n in results["notices"]:
        print(f"     from {n['from']} to {', '.join(n['to'])}: {n['subject']}", file=out)
    held = sum(p["held_jobs"] for p in results["partners"])
    print(
        f"\n7. {held} jobs held, none lost: `sesguard partners resume ID --replay` sends them,"
        " --discard drops them",
        file=out,
    )
    print(
        f"\ndone in {seconds:.1f} s (sender exit {sender_code}); service logs: "
        f"{os.environ.get('SESGUARD_DEMO_LOG', '')}",
        file=out,
    )
    for problem in results["problems"]:
        print(f"PROBLEM: {problem}", file=out)


async def _keep_running(endpoint: str, out: TextIO) -> None:
    print(
        "\nThe stand-in keeps running. In another terminal, the console (then open the URL it"
        " prints) or the CLI:\n"
        f"  export {demo_env(endpoint)}\n"
        "  sesguard console\n"
        "  sesguard partners list\n"
        "Ctrl-C to stop.",
        file=out,
        flush=True,
    )
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


def demo_env(endpoint: str) -> str:
    """The variables that point a shell's sesguard at the demo's stand-in."""
    from sesguard.local.localaws import FAKE_ENV

    pairs = {"AWS_ENDPOINT_URL": endpoint, **FAKE_ENV}
    return " ".join(f"{k}={v}" for k, v in pairs.items())


def main(args: argparse.Namespace, services: Services) -> int:
    from sesguard.local.localaws import local_aws

    log_path = Path.cwd() / ".sesguard-demo.log"
    os.environ["SESGUARD_DEMO_LOG"] = str(log_path)
    with log_path.open("w", encoding="utf-8") as log_file:
        configure_logging("json", "INFO", stream=log_file)
        # The services' CloudWatch metric lines (EMF, stdout) go to the log file too.
        with local_aws() as endpoint, contextlib.redirect_stdout(log_file):
            try:
                results = asyncio.run(
                    run_demo(args.jobs, endpoint, services, keep_running=args.keep_running)
                )
            except KeyboardInterrupt:
                return 130
            except Exception as exc:
                if args.debug:
                    raise
                reason = f"{type(exc).__name__}: {exc}"
                return _failed(f"{reason} (--debug shows where)", log_path)
    if results["problems"]:
        return _failed("; ".join(results["problems"]), log_path)
    return 0


def _failed(reason: str, log_path: Path) -> int:
    """One line on stderr, exit 1: what went wrong and where the services' logs are."""
    print(f"sesguard: demo failed: {reason}; service logs: {log_path}", file=sys.stderr)
    return 1
