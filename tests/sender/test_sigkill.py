"""A sender SIGKILLed mid-run, then no operator at all: every job sent exactly once.

Real processes: `sesguard sender` runs as a subprocess against the moto stand-in and is
killed with SIGKILL at the worst moment, inside SES's handling of a SendEmail: SES has
the message, the sender never learns its id. The worker runs throughout; SES's events
come from the stand-in's SES itself (sesguard.local.localaws.ses_events), the way SES publishes
them whatever becomes of the caller, held back like Firehose's buffer until the
restarted sender has met every stale claim: the hard case, "possibly sent" jobs SES did
send. The sender comes back (ECS restarts it; here `sesguard sender --drain`, which ends
once nothing is left) and settles every stale claim itself (sender/settle.py): sent on
SES's word, re-sent once the settle time has passed without it. No `dlq redrive`.
Counted from SES's own list of accepted messages (sesguard.local.localaws.sent_messages):
each job exactly once, none left over, nothing dead-lettered.
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

from sesguard.aws import table as t
from sesguard.aws.store import PartnerStore
from sesguard.core.jobs import JOB_TAG
from sesguard.core.partners import Limits, Profile
from sesguard.local.localaws import sent_messages, ses_events
from sesguard.ops.bootstrap import bootstrap
from sesguard.settings import load_settings
from tests.conftest import queue_counts, wait_until
from tests.sender.support import DOMAIN, PARTNER, ses_word
from worker.service import WorkerService

pytestmark = pytest.mark.timeout(300)  # real processes and a real (short) settle time

SESGUARD = str(Path(sys.executable).with_name("sesguard"))
JOBS = 60
KILL_AT = 20  # the SendEmail during which the sender dies
SES_SECONDS = 0.2  # how long SES takes per SendEmail: several are on the wire at once
SETTLE = 30  # SESGUARD_DLQ_SETTLE_SECONDS: room after the claims' lease (10 s) for SES's word
SETTINGS = {
    "SESGUARD_VISIBILITY_TIMEOUT": "10",  # also the claim's lease
    "SESGUARD_SENDER_LEASE_SECONDS": "3",  # the dead task's share of the rate returns fast
    "SESGUARD_CONCURRENCY": "8",
    "SESGUARD_MAX_SEND_RATE": "500",
    "SESGUARD_STOP_GRACE_SECONDS": "5",
    "SESGUARD_DLQ_SETTLE_SECONDS": str(SETTLE),
    "SESGUARD_SIMULATE_EVENTS": "false",  # events come from the SES side here
    "SESGUARD_LOG_FORMAT": "json",  # the test follows the restarted sender's log (stderr)
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


async def stale_claims(clients: Any, table: str) -> set[str]:
    """The job ids whose record still says "sending" (claims the dead sender left)."""
    found: set[str] = set()
    request: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        resp = await clients.dynamodb.scan(**request)
        for item in resp.get("Items", []):
            rec = t.from_item(item)
            if rec.get("sk") == t.JOB_SK and rec.get("state") == "sending":
                found.add(str(rec["pk"]).removeprefix(t.JOB_PREFIX))
        if "LastEvaluatedKey" not in resp:
            return found
        request["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


async def test_a_sigkilled_sender_settles_every_job_by_itself_each_sent_once(
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
    accepted: dict[str, str] = {}  # job id -> SES message id, as SES took them
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

    def after_send(params: dict[str, Any], message_id: str) -> None:
        if not is_job(params):
            return
        with lock:
            accepted[params["Content"]["Simple"]["Subject"]["Data"].removeprefix("subject ")] = (
                message_id
            )
            if len(accepted) == KILL_AT and not killed.is_set():
                # SES has this message; its sender dies before hearing the answer.
                os.kill(sender[0].pid, signal.SIGKILL)
                killed.set()

    worker = WorkerService(clients, settings)
    lines: list[dict[str, Any]] = []
    with ses_events(
        settings.firehose_stream, hold=True, before_send=before_send, after_send=after_send
    ) as ses:
        worker_run = asyncio.create_task(worker.run())
        sender.append(start_sender(tmp_path))
        await wait_until(lambda: sender[0].poll() is not None, limit=90)
        assert sender[0].returncode == -signal.SIGKILL
        sent_before = Counter(m["subject"] for m in sent_messages(moto_endpoint))
        assert KILL_AT <= sum(sent_before.values()) < JOBS, "killed mid-run"
        stale = await stale_claims(clients, settings.table)
        with lock:
            ses_took_stale = {j for j in stale if j in accepted}
        assert ses_took_stale, "the job SES accepted as its sender died"

        # The sender comes back and meets every stale claim before SES's word on any.
        restarted = await asyncio.create_subprocess_exec(
            SESGUARD,
            "sender",
            "--drain",
            env={**service_env(tmp_path), "PYTHONUNBUFFERED": "1"},  # lines as they come
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,  # the log lines
        )
        follow = asyncio.create_task(read_lines(restarted, lines))
        met: set[str] = set()

        def all_met() -> bool:
            met.update(
                str(e.get("job_id"))
                for e in lines
                if e.get("outcome") == "deferred"
                and str(e.get("reason", "")).startswith("possibly sent")
            )
            return met >= stale

        await wait_until(all_met, limit=60)
        # Then SES's events reach the worker (Firehose's buffer), and with them SES's word
        # on every message it accepted, within the settle time.
        assert ses.release() > 0
        with lock:
            took = dict(accepted)
        for job, message_id in took.items():
            await ses_word(clients, settings, job, PARTNER, message_id)

        # The restarted sender settles them all by itself, and ends once nothing is left.
        assert await asyncio.wait_for(restarted.wait(), 120) == 0
        await follow
        ses.release()
        await wait_until(lambda: worker.tally.events == ses.published, limit=60)
        worker.stop()
        assert await asyncio.wait_for(worker_run, 60) == 0

    sent = Counter(m["subject"] for m in sent_messages(moto_endpoint))
    assert sent == {f"subject {j}": 1 for j in jobs}, "every job exactly once"
    assert await queue_counts(clients, send_url) == (0, 0)
    code, out, _ = await run("dlq", "--json", tmp=tmp_path)
    assert code == 0 and json.loads(out) == [], "nothing for an operator to do"

    # How the stale claims were settled, one line per job: those SES took, from its
    # word, never re-sent (without it "exactly once" above fails); the others (SendEmail
    # refused as the sender died, or never made: it can die between claim and request)
    # re-sent once, after the settle time.
    confirmed = {
        str(e["job_id"])
        for e in lines
        if e.get("event") == "job"
        and e.get("outcome") == "duplicate"
        and e.get("confirmed_by") == "ses"
    }
    resent = [str(e["job_id"]) for e in lines if e.get("event") == "possibly_sent_resent"]
    assert confirmed == ses_took_stale
    assert sorted(resent) == sorted(stale - ses_took_stale) and len(resent) >= refused >= 1
    assert not any(e.get("outcome") == "dead_lettered" for e in lines)


async def read_lines(proc: asyncio.subprocess.Process, into: list[dict[str, Any]]) -> None:
    """The process's JSON log lines, as they come (others are left out)."""
    assert proc.stderr is not None
    async for raw in proc.stderr:
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict):
            into.append(line)
