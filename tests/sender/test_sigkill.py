"""A sender SIGKILLed mid-run, then the documented recovery: every job sent exactly once.

Real processes: `sesguard sender` runs as a subprocess against the moto stand-in and is
killed with SIGKILL at the worst moment, inside SES's handling of a SendEmail: SES has
the message, the sender never learns its id. The worker runs throughout; SES's events
come from the stand-in's SES itself (sesguard.local.localaws.ses_events), the way SES publishes
them whatever becomes of the caller, held back like Firehose's buffer until the
recovery drain has met the stale claims. Then the runbook (docs/operating.md): restart the sender
(`sesguard sender --drain`), then `sesguard dlq redrive` once the settle time has passed,
then let the sender send what it re-enqueued. Counted from SES's own list of accepted
messages (sesguard.local.localaws.sent_messages): each job exactly once, none left over.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from moto.core.exceptions import JsonRESTError

from sesguard.aws.store import PartnerStore
from sesguard.core.jobs import JOB_TAG
from sesguard.core.partners import Limits, Profile
from sesguard.local.localaws import sent_messages, ses_events
from sesguard.ops.bootstrap import bootstrap
from sesguard.settings import load_settings
from tests.conftest import queue_counts, wait_until
from tests.sender.support import DOMAIN, PARTNER
from worker.service import WorkerService

pytestmark = pytest.mark.timeout(300)  # real processes and a real (short) settle time

SESGUARD = str(Path(sys.executable).with_name("sesguard"))
JOBS = 60
KILL_AT = 20  # the SendEmail during which the sender dies
SES_SECONDS = 0.2  # how long SES takes per SendEmail: several are on the wire at once
SETTLE = 15  # SESGUARD_DLQ_SETTLE_SECONDS for the test (the default is 900)
SETTINGS = {
    "SESGUARD_VISIBILITY_TIMEOUT": "10",  # also the claim's lease
    "SESGUARD_SENDER_LEASE_SECONDS": "3",  # the dead task's share of the rate returns fast
    "SESGUARD_CONCURRENCY": "8",
    "SESGUARD_MAX_SEND_RATE": "500",
    "SESGUARD_STOP_GRACE_SECONDS": "5",
    "SESGUARD_DLQ_SETTLE_SECONDS": str(SETTLE),
    "SESGUARD_SIMULATE_EVENTS": "false",  # events come from the SES side here
}


def job_id(n: int) -> str:
    return f"order:{n:03d}.a_b"  # ":" "." "_": every escape of the SES tag on the way


def is_job(params: dict[str, Any]) -> bool:
    return any(tag["Name"] == JOB_TAG for tag in params.get("EmailTags", []))


def service_env(tmp: Path) -> dict[str, str]:
    return {**os.environ, **SETTINGS, "SESGUARD_HEARTBEAT_FILE": str(tmp / "heartbeat")}


def start_sender(tmp: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [SESGUARD, "sender"],
        env=service_env(tmp),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def run(*args: str, tmp: Path) -> tuple[int, str, str]:
    """A `sesguard` command in its own process; the event loop (the worker) keeps going."""
    proc = await asyncio.create_subprocess_exec(
        SESGUARD,
        *args,
        env=service_env(tmp),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_sigkilled_sender_leaves_no_job_the_documented_recovery_sends_twice(
    clients: Any, moto_endpoint: str, tmp_path: Path, monkeypatch: Any
) -> None:
    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(heartbeat_file=str(tmp_path / "worker-heartbeat"))
    await bootstrap(clients, settings, [DOMAIN])
    store = PartnerStore.from_settings(clients.dynamodb, settings)
    await store.create(Profile(PARTNER, f"ops@{PARTNER}.example.org", Limits()))
    send_url = (await clients.sqs.get_queue_url(QueueName=settings.send_queue))["QueueUrl"]
    jobs = [job_id(n) for n in range(JOBS)]
    for start in range(0, JOBS, 10):
        await clients.sqs.send_message_batch(
            QueueUrl=send_url,
            Entries=[
                {
                    "Id": str(i),
                    "MessageBody": json.dumps(
                        {
                            "job_id": j,
                            "partner_id": PARTNER,
                            "from": f"news@{DOMAIN}",
                            "to": [f"customer{i}@example.org"],
                            "subject": f"subject {j}",
                            "text": "hello",
                        }
                    ),
                }
                for i, j in enumerate(jobs[start : start + 10])
            ],
        )

    sender: list[subprocess.Popen[bytes]] = []
    killed = threading.Event()
    accepted = 0
    refused = 0
    lock = threading.Lock()

    def before_send(params: dict[str, Any]) -> None:
        nonlocal refused
        if not is_job(params):
            return
        entered_alive = not killed.is_set()
        time.sleep(SES_SECONDS)
        if entered_alive and killed.is_set():
            # Its sender died while the request was on its way: SES never got all of it.
            with lock:
                refused += 1
            raise JsonRESTError("RequestTimeout", "the connection closed mid-request")

    def after_send(params: dict[str, Any], _message_id: str) -> None:
        nonlocal accepted
        if not is_job(params):
            return
        with lock:
            accepted += 1
            if accepted == KILL_AT and not killed.is_set():
                # SES has this message; its sender dies before hearing the answer.
                os.kill(sender[0].pid, signal.SIGKILL)
                killed.set()

    worker = WorkerService(clients, settings)
    with ses_events(
        settings.firehose_stream, hold=True, before_send=before_send, after_send=after_send
    ) as ses:
        worker_run = asyncio.create_task(worker.run())
        sender.append(start_sender(tmp_path))
        await wait_until(lambda: sender[0].poll() is not None, limit=90)
        assert sender[0].returncode == -signal.SIGKILL
        killed_at = time.time()
        sent_before = Counter(m["subject"] for m in sent_messages(moto_endpoint))
        assert KILL_AT <= sum(sent_before.values()) < JOBS, "killed mid-run"

        # Recovery, as the runbook (docs/operating.md) says. 1: the sender comes back (ECS restarts
        # it); jobs the dead task held come back after their visibility timeout.
        code, _, err = await run("sender", "--drain", tmp=tmp_path)
        assert code == 0, err[-3000:]
        # SES's events (Firehose's buffer) reach the worker after that drain met the
        # stale claims: the hard case, "possibly sent" jobs SES did send.
        assert ses.release() > 0

        # The worker has counted every event SES published (confirmations made or not).
        await wait_until(lambda: worker.tally.events == ses.published, limit=60)

        # 2: once the settle time has passed since the claims (all made before the kill).
        await asyncio.sleep(max(0.0, killed_at + SETTLE + 1 - time.time()))
        code, out, err = await run("dlq", "redrive", "--json", tmp=tmp_path)
        assert code == 0, err[-3000:]
        report = json.loads(out)

        # 3: the sender sends what the redrive put back.
        code, _, err = await run("sender", "--drain", tmp=tmp_path)
        assert code == 0, err[-3000:]
        ses.release()
        worker.stop()
        assert await asyncio.wait_for(worker_run, 60) == 0

    sent = Counter(m["subject"] for m in sent_messages(moto_endpoint))
    assert sent == {f"subject {j}": 1 for j in jobs}, "every job exactly once"
    assert await queue_counts(clients, send_url) == (0, 0)
    code, out, _ = await run("dlq", "--json", tmp=tmp_path)
    assert code == 0 and json.loads(out) == []

    # How the jobs in flight at the kill were settled: every one was dead-lettered as
    # possibly sent (the recovery drain met their stale claims before SES's events).
    summary = report["summary"]
    assert all(m["reason"].startswith("possibly sent") for m in report["messages"])
    # The job SES accepted as the sender died (and any sent beside it): confirmed by
    # SES's Send event, dropped, never re-sent. (Without the confirmation the redrive
    # would have re-sent them: "exactly once" above fails.)
    assert summary["dropped_sent"] >= 1
    # Jobs whose SendEmail never reached SES (or was never made: the sender can die
    # between its claim and the request): claimed, never confirmed, re-sent once.
    assert summary["requeued_unclaimed"] >= refused >= 1
    assert summary["kept"] == 0 and summary["failed"] == 0 and summary["requeued"] == 0
