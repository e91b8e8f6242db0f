"""Stopping: SIGTERM mid-batch loses nothing and sends nothing twice; slow jobs keep
their visibility; the real process stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter

from sender.records import JOB_SK
from sesguard.aws import table as t
from sesguard.runtime.ratelimit import TokenBucket
from tests.conftest import ShiftClock, wait_until
from tests.sender.support import Env, sender_settings


async def sending_claims(e: Env) -> list[str]:
    resp = await e.clients.dynamodb.scan(TableName=e.settings.table)
    return [
        i["pk"]["S"]
        for i in resp["Items"]
        if i["sk"]["S"] == JOB_SK and i.get("state", {}).get("S") == "sending"
    ]


async def test_stop_mid_batch_then_restart_sends_every_job_exactly_once(env: Env) -> None:
    n = 30
    await env.enqueue(*(env.job(i) for i in range(n)))
    # 10 sends/s with no burst: most of a received batch waits for tokens when stopped
    svc = env.service(
        sender_settings(concurrency=10, stop_grace_seconds=0.2),
        drain=False,
        wait_seconds=1,
        bucket=TokenBucket(10, 1),
    )
    task = asyncio.create_task(svc.run())
    await wait_until(lambda: len(env.ses.sent) >= 4)
    svc.stop("SIGTERM")
    assert await asyncio.wait_for(task, 15) == 0

    first = len(env.ses.sent)
    assert 4 <= first < n
    assert svc.tally["returned"] > 0  # jobs were waiting for a token when the grace ended
    assert await sending_claims(env) == []  # their claims were released
    visible, invisible = await env.queue_depth()
    assert (visible, invisible) == (n - first, 0)  # back at once, not after a timeout

    await env.drain()
    counts = Counter(env.ses.subjects())
    assert sorted(counts) == sorted(f"subject job-{i}" for i in range(n))
    assert set(counts.values()) == {1}
    assert await env.dead_letters() == []


async def test_stop_waits_for_sends_in_flight_within_the_grace(env: Env) -> None:
    env.ses.delay = 0.3  # every SES call takes a while
    await env.enqueue(*(env.job(i) for i in range(5)))
    svc = env.service(sender_settings(stop_grace_seconds=5), drain=False, wait_seconds=1)
    task = asyncio.create_task(svc.run())
    await wait_until(lambda: len(env.ses.attempts) >= 5)
    svc.stop()
    assert await asyncio.wait_for(task, 15) == 0
    assert len(env.ses.sent) == 5  # finished, not abandoned
    assert await env.queue_depth() == (0, 0)


async def test_slow_job_gets_its_visibility_extended(env: Env) -> None:
    changes: list[int] = []

    def record(params, **_):
        changes.extend(e["VisibilityTimeout"] for e in params["Entries"])

    env.clients.sqs.meta.events.register(
        "provide-client-params.sqs.ChangeMessageVisibilityBatch", record, unique_id="t-vis"
    )
    env.ses.gate = asyncio.Event()  # SES "hangs" until the test lets it go
    clock = ShiftClock()
    try:
        await env.enqueue(env.job(1))
        svc = env.service(clock=clock)
        task = asyncio.create_task(svc.run())
        await wait_until(lambda: len(env.ses.attempts) == 1)
        clock.offset += env.settings.visibility_timeout  # the job is now "slow"
        await wait_until(lambda: changes != [], limit=5)
        env.ses.gate.set()
        assert await asyncio.wait_for(task, 15) == 0
    finally:
        env.clients.sqs.meta.events.unregister(
            "provide-client-params.sqs.ChangeMessageVisibilityBatch", unique_id="t-vis"
        )
    assert changes[0] == env.settings.visibility_timeout
    assert len(env.ses.sent) == 1


async def test_hard_stop_releases_claims_of_jobs_not_yet_sent(env: Env) -> None:
    await env.enqueue(*(env.job(i) for i in range(6)))
    svc = env.service(
        sender_settings(concurrency=10, stop_grace_seconds=0.1),
        drain=False,
        wait_seconds=1,
        bucket=TokenBucket(0.5, 1),  # one send, then a 2 s wait per token
    )
    task = asyncio.create_task(svc.run())
    await wait_until(lambda: len(env.ses.sent) == 1 and svc.in_flight >= 5)
    svc.stop()
    assert await asyncio.wait_for(task, 15) == 0
    assert await sending_claims(env) == []
    assert await env.queue_depth() == (5, 0)
    item = await env.clients.dynamodb.get_item(
        TableName=env.settings.table, Key=t.key(t.job_pk("job-0"), JOB_SK)
    )
    sent_ids = {p["Content"]["Simple"]["Subject"]["Data"] for p in env.ses.sent}
    assert len(sent_ids) == 1 and ("Item" in item) == (sent_ids == {"subject job-0"})


def test_process_stops_on_sigterm_and_help_works(env: Env, moto_endpoint: str) -> None:
    assert (
        subprocess.run(  # noqa: PLW1510 - the return code is asserted
            [sys.executable, "-m", "sender", "--help"], capture_output=True, timeout=60
        ).returncode
        == 0
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "sender"],
        env={
            **os.environ,
            "AWS_ENDPOINT_URL": moto_endpoint,
            "SESGUARD_MAX_SEND_RATE": "100",
            # the idle long poll (20 s) is waited for only within the grace
            "SESGUARD_STOP_GRACE_SECONDS": "2",
        },
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "sender_started" in line:
                break
        proc.send_signal(signal.SIGTERM)
        out = proc.stderr.read()
        assert proc.wait(timeout=30) == 0
        assert "sender_stopping" in out and "sender_stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_bad_settings_exit_2(env: Env) -> None:
    proc = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        [sys.executable, "-m", "sender", "--drain"],
        env={**os.environ, "SESGUARD_CONCURRENCY": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "SESGUARD_CONCURRENCY" in proc.stderr
