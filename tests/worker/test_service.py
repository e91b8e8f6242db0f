"""The event service end to end on a moto server: S3 -> notification -> SQS -> worker."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote_plus

import orjson
import pytest

from sesguard.aws.store import PartnerStore
from sesguard.core.partners import UNATTRIBUTED, Limits, Profile, Status
from sesguard.ops.bootstrap import bootstrap
from sesguard.runtime.finisher import Finisher
from sesguard.settings import load_settings
from tests.conftest import client_error, json_logs, sent_emails
from tests.fixtures.ses_events import (
    EXPECTED_ACME,
    FORMATS,
    encode,
    event,
    sample_bytes,
    sample_records,
)
from worker import main as worker_main
from worker.service import WorkerService

NOW = datetime.now(UTC)


@dataclass
class Env:
    clients: Any
    settings: Any
    store: PartnerStore
    bucket: str
    queue_url: str
    dlq_url: str

    async def put(self, key: str, data: bytes) -> None:
        """Upload like Firehose; moto sends the ObjectCreated notification to the queue."""
        await self.clients.s3.put_object(Bucket=self.bucket, Key=key, Body=data)

    async def drain(self, **kwargs: Any) -> WorkerService:
        service = WorkerService(self.clients, self.settings, **kwargs)
        assert await service.run(drain=True) == 0
        return service

    async def totals(self, pid: str) -> dict[str, int]:
        return (await self.store.get_state(pid)).totals.nonzero()

    async def depth(self, url: str) -> int:
        attrs = await self.clients.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        a = attrs["Attributes"]
        return int(a["ApproximateNumberOfMessages"]) + int(
            a["ApproximateNumberOfMessagesNotVisible"]
        )

    async def dead_letters(self) -> list[dict[str, Any]]:
        resp = await self.clients.sqs.receive_message(
            QueueUrl=self.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )
        return list(resp.get("Messages", []))


@pytest.fixture
async def env(clients: Any, settings: Any) -> Env:
    await bootstrap(clients, settings, ["isv.example.com"])
    bucket = settings.bucket_name(await clients.account_id())
    sqs = clients.sqs
    return Env(
        clients=clients,
        settings=settings,
        store=PartnerStore.from_settings(clients.dynamodb, settings),
        bucket=bucket,
        queue_url=(await sqs.get_queue_url(QueueName=settings.events_queue))["QueueUrl"],
        dlq_url=(await sqs.get_queue_url(QueueName=f"{settings.events_queue}-dlq"))["QueueUrl"],
    )


def firehose_key(n: int, gz: bool = True) -> str:
    stamp = NOW.strftime("%Y/%m/%d/%H")
    name = NOW.strftime("%Y-%m-%d-%H-%M-%S")
    return f"{stamp}/sesguard-ses-events-1-{name}-{n:04d}-abc+def {n}" + (".gz" if gz else "")


async def test_every_format_counts_exactly_and_the_test_event_is_skipped(env: Env) -> None:
    """The same 12 records in four objects (one per format): read 48 times, counted once."""
    for i, fmt in enumerate(sorted(FORMATS)):
        await env.put(firehose_key(i, gz="gzip" in fmt), sample_bytes(fmt))
    service = await env.drain()
    assert await env.totals("acme") == EXPECTED_ACME
    assert await env.totals(UNATTRIBUTED) == {"sent": 1}
    m = service.tally
    assert (m.objects, m.test_events, m.events, m.malformed, m.dead_lettered) == (4, 1, 48, 0, 0)
    assert (m.events_counted, m.duplicates) == (12, 36)
    assert m.untagged == 4
    assert await env.depth(env.queue_url) == 0
    assert await env.depth(env.dlq_url) == 0


async def test_malformed_records_are_skipped_and_the_rest_counted(env: Env) -> None:
    good = [orjson.dumps(r) for r in sample_records()]
    data = b"".join(good[:3]) + good[3][:50] + b"\n" + b"{oops}\n" + b"".join(good[3:]) + b"[1]"
    await env.put(firehose_key(1, gz=False), data)
    await env.put(firehose_key(2, gz=False), b"")  # an empty object is fine
    service = await env.drain()
    assert await env.totals("acme") == EXPECTED_ACME
    assert service.tally.malformed == 3
    assert service.tally.objects == 2
    assert await env.depth(env.dlq_url) == 0


async def test_every_log_line_of_an_object_names_it(env: Env) -> None:
    """The object's bucket and key are bound into the log context per unit of work (the
    handler and ObjectProcessor.process), not passed to each call: lines logged deep in
    the pipeline (a malformed record, the object's summary) still name the object."""
    good = orjson.dumps(sample_records()[0])
    key = firehose_key(1, gz=False)
    await env.put(key, good + b"\n{oops}\n")
    with json_logs() as lines:
        await env.drain()
    named = {e["event"]: (e.get("bucket"), e.get("key")) for e in lines}
    assert named["malformed_record"] == named["object_processed"] == (env.bucket, key)
    assert not [e for e in lines if e["event"] == "worker_stopped" and "key" in e]  # unbound after


async def test_event_types_ses_never_writes_are_warned_and_measured(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bounce`, `BOUNCE`: not counted (SES never writes them), but a warning line with
    the count per spelling and the `events_misspelled` metric, not only an info line."""
    records = []
    for kind in ["bounce", "BOUNCE", "bounce", "Teleport"]:
        rec = event("Bounce", "acme", NOW)
        rec["eventType"] = kind
        records.append(rec)
    records.append(event("Bounce", "acme", NOW))
    await env.put(firehose_key(1, gz=False), encode(records))
    with json_logs() as lines:
        await env.drain()
    assert await env.totals("acme") == {"hard_bounces": 1}
    [warning] = [e for e in lines if e["event"] == "event_type_misspelled"]
    assert warning["level"] == "warning"
    assert (warning["records"], warning["spellings"]) == (3, {"BOUNCE": 1, "bounce": 2})
    emf = [orjson.loads(x) for x in capsys.readouterr().out.splitlines() if '"_aws"' in x]
    assert sum(m.get("events_misspelled", 0) for m in emf) == 3
    assert sum(m.get("events_ignored", 0) for m in emf) == 4


async def test_hard_bounces_to_verified_identities_stay_out_of_the_rate(env: Env) -> None:
    """The issue's case: 20 sends to the bootstrapped (verified) identity's domain with 10
    permanent bounces left the partner active at SES but paused it here."""
    await env.store.create(
        Profile("acme", "ops@acme.example.com", Limits(bounce_rate=0.05, min_volume=10))
    )
    records = [event("Send", "acme", NOW) for _ in range(20)]
    for i, rec in enumerate(records):
        rec["mail"]["destination"] = [f"user{i}@isv.example.com"]
    for i in range(10):
        rec = event("Bounce", "acme", NOW)
        rec["bounce"]["bouncedRecipients"] = [{"emailAddress": f"user{i}@ISV.example.com"}]
        records.append(rec)
    await env.put(firehose_key(1, gz=False), encode(records))
    await env.drain()
    assert await env.totals("acme") == {"sent": 20, "verified_hard_bounces": 10}
    assert (await env.store.require_profile("acme")).status is Status.ACTIVE


async def test_multi_recipient_untagged_and_invalid_tags(env: Env) -> None:
    records = [
        event("Send", "multi", NOW, recipients=5),
        event("Bounce", "multi", NOW, recipients=3),
        event("Bounce", "multi", NOW, recipients=2, bounce_type="Transient"),
        event("Send", None, NOW, recipients=2),
        event("Send", "bad tag!", NOW, recipients=3),
    ]
    await env.put(firehose_key(1), encode(records, newline=False, gz=True))
    service = await env.drain()
    assert await env.totals("multi") == {"sent": 5, "hard_bounces": 3, "soft_bounces": 2}
    assert await env.totals(UNATTRIBUTED) == {"sent": 5}
    assert service.tally.untagged == 1


async def test_same_notification_twice_counts_once(env: Env) -> None:
    await env.put(firehose_key(1), sample_bytes("gzip-newline"))
    await env.drain()
    # Redeliver: S3/SQS are at least once, so the same notification can arrive again.
    key = firehose_key(1)
    body = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": env.bucket}, "object": {"key": quote_plus(key)}},
            }
        ]
    }
    for _ in range(2):
        await env.clients.sqs.send_message(
            QueueUrl=env.queue_url, MessageBody=orjson.dumps(body).decode()
        )
    service = await env.drain()
    assert service.tally.objects == 2
    assert service.tally.objects_counted_before == 2  # its marker: the object is not read
    assert service.tally.events_counted == 0
    assert await env.totals("acme") == EXPECTED_ACME


async def test_two_workers_on_one_object_count_it_once(env: Env) -> None:
    records = [event("Send", f"p{i:02d}", NOW, recipients=2) for i in range(60)]
    await env.put(firehose_key(1), encode(records, gz=True))  # 60 partner-hours: 2 chunks
    copy = await env.clients.sqs.receive_message(QueueUrl=env.queue_url, MaxNumberOfMessages=10)
    for msg in copy["Messages"]:  # put them back twice: both workers get one each
        await env.clients.sqs.send_message(QueueUrl=env.queue_url, MessageBody=msg["Body"])
        await env.clients.sqs.send_message(QueueUrl=env.queue_url, MessageBody=msg["Body"])
        await env.clients.sqs.delete_message(
            QueueUrl=env.queue_url, ReceiptHandle=msg["ReceiptHandle"]
        )
    a = WorkerService(env.clients, env.settings)
    b = WorkerService(env.clients, env.settings)
    codes = await asyncio.gather(a.run(drain=True), b.run(drain=True))
    assert codes == [0, 0]
    assert a.tally.objects + b.tally.objects == 2
    assert a.tally.events_counted + b.tally.events_counted == 60
    # The second either found the first's marker or raced it and found its events counted.
    before = a.tally.objects_counted_before + b.tally.objects_counted_before
    assert (before, a.tally.duplicates + b.tally.duplicates) in ((1, 0), (0, 60))
    for i in (0, 31, 59):
        assert await env.totals(f"p{i:02d}") == {"sent": 2}


async def test_bad_notifications_and_missing_objects_go_to_the_dlq(env: Env) -> None:
    bodies = [
        "this is not json",
        '{"hello": "world"}',
        '{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}}}]}',
        orjson.dumps(
            {
                "Records": [
                    {
                        "eventName": "ObjectCreated:Put",
                        "s3": {"bucket": {"name": env.bucket}, "object": {"key": "no/such+key.gz"}},
                    }
                ]
            }
        ).decode(),
    ]
    for body in bodies:
        await env.clients.sqs.send_message(QueueUrl=env.queue_url, MessageBody=body)
    await env.put(firehose_key(1), sample_bytes("gzip-concatenated"))  # still counted
    service = await env.drain()
    assert service.tally.dead_lettered == 4
    assert await env.totals("acme") == EXPECTED_ACME
    assert await env.depth(env.queue_url) == 0
    dead = await env.dead_letters()
    reasons = {m["Body"]: m["MessageAttributes"]["sesguard_reason"]["StringValue"] for m in dead}
    assert set(reasons) == set(bodies)
    assert reasons["this is not json"].startswith("bad notification: body is not JSON")
    assert "no Records" in reasons['{"hello": "world"}']
    assert reasons[bodies[3]] == f"missing object: s3://{env.bucket}/no/such key.gz"


def _notification(bucket: str, *keys: str) -> str:
    return orjson.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key)}},
                }
                for key in keys
            ]
        }
    ).decode()


async def test_only_the_events_bucket_and_prefix_are_counted(
    clients: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15, item 4: a notification naming an object in another bucket (or outside
    the events prefix) is dead-lettered with the reason, and none of it is counted, not
    even the objects it names in the events bucket. (Before: every object counted.)"""
    monkeypatch.setenv("SESGUARD_EVENTS_PREFIX", "events/")
    settings = load_settings()
    await bootstrap(clients, settings, ["isv.example.com"])
    env = Env(
        clients=clients,
        settings=settings,
        store=PartnerStore.from_settings(clients.dynamodb, settings),
        bucket=settings.bucket_name(await clients.account_id()),
        queue_url=(await clients.sqs.get_queue_url(QueueName=settings.events_queue))["QueueUrl"],
        dlq_url=(await clients.sqs.get_queue_url(QueueName=f"{settings.events_queue}-dlq"))[
            "QueueUrl"
        ],
    )
    data = encode([event("Send", "acme", NOW, recipients=9)], gz=True)
    await clients.s3.create_bucket(Bucket="someone-elses-bucket")
    await clients.s3.put_object(Bucket="someone-elses-bucket", Key="events/x.gz", Body=data)
    await env.put("elsewhere/y.gz", data)  # right bucket, outside the events prefix
    await env.put("events/ours.gz", data)  # ours: counted once, by its own notification
    foreign = _notification("someone-elses-bucket", "events/x.gz")
    outside = _notification(env.bucket, "elsewhere/y.gz")
    mixed = _notification(env.bucket, "events/ours.gz", "elsewhere/y.gz")
    for body in (foreign, outside, mixed):
        await clients.sqs.send_message(QueueUrl=env.queue_url, MessageBody=body)
    service = await env.drain()
    assert await env.totals("acme") == {"sent": 9}  # ours, once; nothing else
    dead = {
        m["Body"]: m["MessageAttributes"]["sesguard_reason"]["StringValue"]
        for m in await env.dead_letters()
    }
    assert set(dead) == {foreign, outside, mixed}
    where = f"(this worker counts only objects under s3://{env.bucket}/events/)"
    assert dead[foreign] == f"not the events bucket: s3://someone-elses-bucket/events/x.gz {where}"
    assert dead[outside] == f"not the events bucket: s3://{env.bucket}/elsewhere/y.gz {where}"
    assert dead[mixed] == f"not the events bucket: s3://{env.bucket}/elsewhere/y.gz {where}"
    assert service.tally.dead_lettered == 3


async def test_object_removed_records_are_skipped(env: Env) -> None:
    body = {
        "Records": [
            {
                "eventName": "ObjectRemoved:Delete",
                "s3": {"bucket": {"name": "b"}, "object": {"key": "k"}},
            }
        ]
    }
    await env.clients.sqs.send_message(
        QueueUrl=env.queue_url, MessageBody=orjson.dumps(body).decode()
    )
    service = await env.drain()
    assert service.tally.dead_lettered == 0 and service.tally.objects == 0
    assert await env.depth(env.queue_url) == 0


async def test_firehose_error_objects_are_not_counted(env: Env) -> None:
    """With an empty events prefix, S3 notifies for Firehose's error output too."""
    await env.put("errors/processing-failed/2026/11/29/x", sample_bytes("plain-newline"))
    await env.put(firehose_key(1), sample_bytes("plain-newline"))
    service = await env.drain()
    assert await env.totals("acme") == EXPECTED_ACME  # the error object was not counted
    assert service.tally.dead_lettered == 0
    assert await env.depth(env.queue_url) == 0


async def register(env: Env, pid: str) -> None:
    await env.store.create(
        Profile(pid, f"ops@{pid}.example.com", Limits(bounce_rate=0.05, min_volume=200))
    )


async def test_auto_pause_end_to_end_with_exactly_one_notice(env: Env, moto_endpoint: str) -> None:
    await register(env, "careless")
    await register(env, "small")
    await register(env, "careful")
    first = (
        [event("Send", "careless", NOW, recipients=100) for _ in range(3)]  # 300 sent
        + [event("Bounce", "careless", NOW, recipients=10) for _ in range(3)]  # 10% hard
        + [event("Send", "small", NOW, recipients=50), event("Bounce", "small", NOW, recipients=20)]
        + [event("Send", "careful", NOW, recipients=300), event("Bounce", "careful", NOW)]
        + [
            event("Send", "stranger", NOW, recipients=300),
            event("Bounce", "stranger", NOW, recipients=90),
        ]
    )
    await env.put(firehose_key(1), encode(first, gz=True))
    await env.drain()
    careless = await env.store.require_profile("careless")
    assert careless.status is Status.PAUSED
    assert (
        careless.paused_reason
        and "bounce rate 10.00% exceeds limit 5.00%" in careless.paused_reason
    )
    assert (await env.store.require_profile("small")).status is Status.ACTIVE  # under min_volume
    assert (await env.store.require_profile("careful")).status is Status.ACTIVE
    assert await env.totals("stranger") == {"sent": 300, "hard_bounces": 90}  # unregistered
    assert await env.store.get_profile("stranger") is None

    # More bad traffic for the paused partner, processed by two workers: no second notice.
    await env.put(firehose_key(2), encode(first[:6], gz=True))
    await asyncio.gather(env.drain(), env.drain())
    notices = [
        m
        for m in sent_emails(moto_endpoint)
        if m["destinations"]["ToAddresses"] == ["ops@careless.example.com"]
    ]  # type: ignore[index]
    assert len(notices) == 1
    assert "paused" in str(notices[0]["subject"]).lower()
    assert not [m for m in sent_emails(moto_endpoint) if "small" in str(m["destinations"])]


async def test_sigterm_drains_and_exits_zero(env: Env) -> None:
    await env.put(firehose_key(1), sample_bytes("plain-newline"))
    args = argparse.Namespace(drain=False, worker_action=None)
    loop = asyncio.get_running_loop()

    async def stop_when_counted() -> None:
        for _ in range(1200):  # until the object is counted (bounded by the test timeout)
            if (await env.store.get_state("acme")).totals:
                break
            await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    stopper = loop.create_task(stop_when_counted())
    code = await asyncio.wait_for(worker_main.run(args, env.settings), timeout=60)
    await stopper
    assert code == 0
    assert await env.totals("acme") == EXPECTED_ACME
    assert await env.depth(env.queue_url) == 0


async def test_drain_on_an_empty_queue_exits_zero(env: Env) -> None:
    args = argparse.Namespace(drain=True, worker_action=None)
    assert await worker_main.run(args, env.settings) == 0


async def test_missing_queue_is_an_error_not_a_crash(clients: Any, settings: Any) -> None:
    assert await WorkerService(clients, settings).run(drain=True) == 1


async def test_backfill_counts_existing_objects_once(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    old = NOW - timedelta(days=1)
    await env.put(f"{old:%Y/%m/%d/%H}/a.gz", sample_bytes("gzip-newline", 1))
    await env.put(f"{NOW:%Y/%m/%d/%H}/b", sample_bytes("plain-concatenated", 2))
    await env.put(f"other/{NOW:%Y/%m/%d/%H}/c", sample_bytes("plain-concatenated"))
    # The queue lost its notifications (the recovery case): purge it.
    await env.clients.sqs.purge_queue(QueueUrl=env.queue_url)
    parser = argparse.ArgumentParser()
    worker_main.add_arguments(parser)
    args = parser.parse_args(["backfill", "--prefix", f"{NOW:%Y}/"])
    assert await worker_main.run(args, env.settings) == 0
    assert await env.totals("acme") == {k: 2 * v for k, v in EXPECTED_ACME.items()}
    assert "2 objects processed" in capsys.readouterr().out
    # Again, and overlapping with the service: nothing is counted twice.
    assert await worker_main.run(args, env.settings) == 0
    assert "0 counted, 0 counted before; 2 objects counted before" in capsys.readouterr().out
    args = parser.parse_args(
        ["backfill", "--prefix", "", "--since", (NOW + timedelta(hours=1)).isoformat()]
    )
    assert await worker_main.run(args, env.settings) == 0
    assert "0 objects processed (3 listed, 3 before --since" in capsys.readouterr().out
    assert await env.totals("acme") == {k: 2 * v for k, v in EXPECTED_ACME.items()}


async def test_a_dynamodb_error_returns_the_message_and_it_is_counted_once_later(
    env: Env,
) -> None:
    await env.put(firehose_key(1), sample_bytes("plain-newline"))
    failures = {"left": 1}

    def flaky_transaction(**_: Any) -> None:
        if failures["left"]:
            failures["left"] -= 1
            # Not retried in place (a missing permission, say): the message goes back.
            raise client_error("AccessDeniedException", "injected", 400)

    returned: list[int] = []

    def on_return(params: dict[str, Any], **_: Any) -> None:
        returned.extend(e["VisibilityTimeout"] for e in params["Entries"])

    events = env.clients.dynamodb.meta.events
    events.register("provide-client-params.dynamodb.TransactWriteItems", flaky_transaction)
    sqs = env.clients.sqs.meta.events
    sqs.register("provide-client-params.sqs.ChangeMessageVisibilityBatch", on_return)
    try:
        # --drain waits for the returned message (it is in flight until its backoff
        # ends) instead of reporting a drained queue with work outstanding.
        first = WorkerService(env.clients, env.settings)
        assert await first.run(drain=True) == 0
    finally:
        events.unregister("provide-client-params.dynamodb.TransactWriteItems", flaky_transaction)
        sqs.unregister("provide-client-params.sqs.ChangeMessageVisibilityBatch", on_return)
    assert first.tally.failures == 1 and first.tally.dead_lettered == 0
    assert len(returned) == 1 and returned[0] >= 1  # returned with a backoff, not deleted
    assert first.tally.objects == 1  # counted on its redelivery, once
    assert await env.totals("acme") == EXPECTED_ACME
    assert await env.depth(env.queue_url) == 0
    assert await env.depth(env.dlq_url) == 0


async def test_a_slow_object_keeps_its_message_invisible_until_done(env: Env) -> None:
    await env.put(firehose_key(1), sample_bytes("plain-newline"))
    renewals: list[int] = []

    def on_change(params: dict[str, Any], **_: Any) -> None:
        renewals.extend(e["VisibilityTimeout"] for e in params["Entries"])

    async def slow_s3(**_: Any) -> None:
        await asyncio.sleep(0.7)  # an object that takes long to fetch

    s3, sqs = env.clients.s3.meta.events, env.clients.sqs.meta.events
    s3.register("before-call.s3.GetObject", slow_s3)
    sqs.register("provide-client-params.sqs.ChangeMessageVisibilityBatch", on_change)
    try:
        service = WorkerService(env.clients, env.settings, renew_every=0.2)
        assert await service.run(drain=True) == 0
    finally:
        s3.unregister("before-call.s3.GetObject", slow_s3)
        sqs.unregister("provide-client-params.sqs.ChangeMessageVisibilityBatch", on_change)
    assert len(renewals) >= 2
    assert set(renewals) == {env.settings.visibility_timeout}  # renewed, never shortened
    assert await env.totals("acme") == EXPECTED_ACME  # counted once
    assert await env.depth(env.queue_url) == 0


async def test_closing_the_finisher_completes_a_delete_already_on_the_wire(env: Env) -> None:
    """SIGTERM while a DeleteMessageBatch is in flight: the delete completes (the worker's
    former batcher cancelled it, leaving a counted message in flight until its visibility
    timeout)."""
    sqs = env.clients.sqs
    await sqs.purge_queue(QueueUrl=env.queue_url)
    await sqs.send_message(QueueUrl=env.queue_url, MessageBody="{}")
    msg = (await sqs.receive_message(QueueUrl=env.queue_url, WaitTimeSeconds=1))["Messages"][0]
    on_the_wire = asyncio.Event()

    async def slow_delete(**_: Any) -> None:
        on_the_wire.set()
        await asyncio.sleep(0.3)

    sqs.meta.events.register("before-call.sqs.DeleteMessageBatch", slow_delete)
    try:
        finisher = Finisher(sqs, env.queue_url, linger=0.0)
        finisher.start()
        finisher.done(msg["ReceiptHandle"])
        await asyncio.wait_for(on_the_wire.wait(), timeout=5)
        await finisher.close()
    finally:
        sqs.meta.events.unregister("before-call.sqs.DeleteMessageBatch", slow_delete)
    assert await env.depth(env.queue_url) == 0


async def test_deletes_are_batched_within_the_sqs_limit(env: Env) -> None:
    sizes: list[int] = []

    def on_delete(params: dict[str, Any], **_: Any) -> None:
        sizes.append(len(params["Entries"]))

    events = env.clients.sqs.meta.events
    events.register("provide-client-params.sqs.DeleteMessageBatch", on_delete)
    try:
        for i in range(23):
            await env.put(firehose_key(i, gz=False), encode([event("Send", f"p{i}", NOW)]))
        service = await env.drain()
    finally:
        events.unregister("provide-client-params.sqs.DeleteMessageBatch", on_delete)
    assert service.tally.objects == 23
    assert sum(sizes) == 24  # 23 objects and the test event
    assert max(sizes) <= 10 and len(sizes) < 24  # batched, within the limit
    assert await env.depth(env.queue_url) == 0


async def test_s3_outage_holds_the_worker_and_every_object_is_counted_once_after(
    env: Env,
) -> None:
    """S3 answers 503 to everything: the worker's S3 breaker opens, it stops receiving
    and keeps the notifications (none dead-lettered); once HeadBucket answers again every
    object is counted exactly once."""
    from sesguard.runtime import RetryPolicy
    from tests.conftest import wait_until
    from tests.fault_hooks import Fault, inject

    for i in range(6):
        await env.put(firehose_key(i, gz=False), sample_bytes("plain-newline", i + 1))
    outage = Fault(status=503, code="ServiceUnavailable")
    with inject(env.clients.s3, "*", outage):
        service = WorkerService(
            env.clients,
            env.settings,
            breaker_threshold=3,
            retry=RetryPolicy(tolerance=900, probe_first=0.2, probe_cap=0.5),
        )
        run = asyncio.create_task(service.run(drain=True))
        await wait_until(lambda: service.consumer is not None and service.consumer.held)
        assert service.consumer is not None and service.consumer.open_breakers == ["s3"]
        await wait_until(lambda: outage.calls >= 6)  # the probe (HeadBucket) fails too
        outage.active = False
        assert await asyncio.wait_for(run, 60) == 0
    assert service.tally.dead_lettered == 0
    assert service.tally.objects == 6
    assert await env.totals("acme") == {k: 6 * v for k, v in EXPECTED_ACME.items()}
    assert await env.depth(env.queue_url) == 0
    assert await env.depth(env.dlq_url) == 0


async def test_sigterm_during_a_long_object_returns_it_at_once_and_it_is_counted_later(
    env: Env,
) -> None:
    """An object still being read when the stop grace ends is abandoned: its message is
    visible again at once (not after the visibility timeout), and the next run counts it
    exactly once."""
    from tests.conftest import wait_until

    await env.put(firehose_key(1, gz=False), sample_bytes("plain-newline"))
    reading = asyncio.Event()

    async def endless_s3(**_: Any) -> None:
        reading.set()
        await asyncio.sleep(3600)  # an object that takes far longer than the grace

    settings = env.settings.model_copy(update={"stop_grace_seconds": 0.3})
    s3 = env.clients.s3.meta.events
    s3.register("before-call.s3.GetObject", endless_s3)
    try:
        service = WorkerService(env.clients, settings)
        run = asyncio.create_task(service.run())
        await asyncio.wait_for(reading.wait(), 30)
        await wait_until(lambda: service.consumer is not None)
        service.stop()
        assert await asyncio.wait_for(run, 30) == 0
    finally:
        s3.unregister("before-call.s3.GetObject", endless_s3)
    assert service.tally.returned == 1
    assert await env.totals("acme") == {}
    attrs = await env.clients.sqs.get_queue_attributes(
        QueueUrl=env.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "1"  # visible at once
    await env.drain()
    assert await env.totals("acme") == EXPECTED_ACME
    assert await env.depth(env.queue_url) == 0


async def test_an_object_over_the_size_cap_is_dead_lettered_with_its_reason(env: Env) -> None:
    """SESGUARD_MAX_OBJECT_BYTES reaches the service's real processor: an object that
    decompresses past it is a permanent failure, dead-lettered at once with the reason
    (the object, the cap, the setting), and nothing of it is counted."""
    data = sample_bytes("plain-newline")
    await env.put(firehose_key(1, gz=False), data)
    settings = env.settings.model_copy(update={"max_object_bytes": len(data) - 1})
    service = WorkerService(env.clients, settings)
    assert await service.run(drain=True) == 0
    assert service.tally.dead_lettered == 1 and service.tally.failures == 0
    (dead,) = await env.dead_letters()
    reason = dead["MessageAttributes"]["sesguard_reason"]["StringValue"]
    assert reason.startswith(f"s3://{env.bucket}/{firehose_key(1, gz=False)} decompresses to")
    assert f"more than {len(data) - 1} bytes (SESGUARD_MAX_OBJECT_BYTES)" in reason
    assert await env.totals("acme") == {}
    assert await env.depth(env.queue_url) == 0
