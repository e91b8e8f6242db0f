"""The SES event simulator: record shapes, mailbox-simulator outcomes, Firehose writes.

The shapes are checked against the hand-written samples in tests/fixtures (the
documented SES format). The counts use a small counter written here from docs/semantics.md's
table (checked first against the samples' expected counts), not the worker's parser.
The Firehose tests use the real moto server; the retry tests use a stand-in for the
Firehose API that refuses records, since moto never does.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import orjson
import pytest

from sesguard.core.mailbox import is_simulator_address
from sesguard.local.simulator import (
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    MAX_RECORD_BYTES,
    EventPublisher,
    Gathering,
    PublishError,
    SimulatedOutcome,
    SimulationError,
    encode_records,
    outcome_for,
    publish,
    record_batches,
    simulate_events,
)
from sesguard.ops.bootstrap import bootstrap

# Copies of shared/ses-events, kept with the tests so a clone is self-contained.
SAMPLES = Path(__file__).resolve().parents[1] / "fixtures"
SIM = "simulator.amazonses.com"
NOW = datetime(2026, 11, 29, 1, 2, 3, tzinfo=UTC)
ACCOUNT = "111122223333"


def sample_records() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (SAMPLES / "events.ndjson").read_bytes().splitlines()]


def params(*to: str, cc: tuple[str, ...] = (), bcc: tuple[str, ...] = (), **extra: Any) -> dict:
    p: dict[str, Any] = {
        "FromEmailAddress": "Acme Store <orders@mail.example.com>",
        "Destination": {"ToAddresses": list(to)},
        "Content": {
            "Simple": {
                "Subject": {"Data": "Your order has shipped"},
                "Body": {"Text": {"Data": "never logged, never published"}},
            }
        },
        "EmailTags": [{"Name": "partner_id", "Value": "acme"}],
        "ConfigurationSetName": "sesguard",
    }
    if cc:
        p["Destination"]["CcAddresses"] = list(cc)
    if bcc:
        p["Destination"]["BccAddresses"] = list(bcc)
    p.update(extra)
    return p


def simulate(p: dict, message_id: str = "msg-1", now: datetime = NOW) -> list[dict[str, Any]]:
    return simulate_events(
        p,
        message_id,
        now,
        ACCOUNT,
        "us-east-1",
        caller_identity="sesguard-sender",
        source_ip="203.0.113.10",
    )


# ---- a counter written from docs/semantics.md's table (simulator mail counted) ----------


def count(records: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    per: dict[str, Counter[str]] = {}
    for r in records:
        pid = r["mail"].get("tags", {}).get("partner_id", ["_unattributed"])[0]
        c = per.setdefault(pid, Counter())
        t = r["eventType"]
        if t == "Send":
            c["sent"] += len(r["mail"]["destination"])
        elif t == "Delivery":
            c["delivered"] += len(r["delivery"]["recipients"])
        elif t == "Bounce":
            b = r["bounce"]
            n = len(b["bouncedRecipients"])
            if b["bounceSubType"] == "OnAccountSuppressionList":
                c["suppressed"] += n
            elif b["bounceType"] == "Permanent":
                c["hard_bounces"] += n
            else:
                c["soft_bounces"] += n
        elif t == "Complaint":
            cp = r["complaint"]
            suppressed = cp.get("complaintSubType") == "OnAccountSuppressionList"
            c["suppressed" if suppressed else "complaints"] += len(cp["complainedRecipients"])
        elif t == "Reject":
            c["rejects"] += len(r["mail"]["destination"])
        elif t == "DeliveryDelay":
            c["delivery_delays"] += len(r["deliveryDelay"]["delayedRecipients"])
        elif t in ("Open", "Click", "Rendering Failure"):
            key = {"Open": "opens", "Click": "clicks", "Rendering Failure": "rendering_failures"}
            c[key[t]] += 1
    return per


def parse_object(body: bytes) -> list[dict[str, Any]]:
    """Line by line with orjson; gzip detected by its magic bytes, as the worker must."""
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    return [orjson.loads(line) for line in body.splitlines() if line.strip()]


def test_counter_agrees_with_the_samples() -> None:
    counts = count(sample_records())
    assert counts["acme"] == Counter(
        sent=1,
        delivered=1,
        hard_bounces=2,
        soft_bounces=1,
        suppressed=1,
        complaints=1,
        rejects=1,
        delivery_delays=1,
        opens=1,
        clicks=1,
        rendering_failures=1,
    )
    assert counts["_unattributed"] == Counter(sent=1)


# ---- shapes ---------------------------------------------------------------------------


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def _sample(event_type: str, subtype: str | None = None) -> dict[str, Any]:
    for r in sample_records():
        if r["eventType"] == event_type and (
            subtype is None or r.get("bounce", {}).get("bounceSubType") == subtype
        ):
            return r
    raise AssertionError(f"no sample {event_type} {subtype}")


def test_send_record_equals_the_sample() -> None:
    """Same inputs as the first sample message -> byte-for-byte the same Send record."""
    want = _sample("Send")
    got = simulate(params("ana@customer.example.org"), message_id=want["mail"]["messageId"])
    assert [r["eventType"] for r in got] == ["Send", "Delivery"]
    assert got[0] == want
    assert got[1]["mail"] == want["mail"]


@pytest.mark.parametrize(
    ("address", "event_type", "subtype", "key"),
    [
        (f"success@{SIM}", "Delivery", None, "delivery"),
        (f"bounce@{SIM}", "Bounce", "General", "bounce"),
        # SES's suppression bounces (global or account list) share one shape
        (f"suppressionlist@{SIM}", "Bounce", "OnAccountSuppressionList", "bounce"),
        (f"complaint@{SIM}", "Complaint", None, "complaint"),
    ],
)
def test_record_shapes_match_the_samples(
    address: str, event_type: str, subtype: str | None, key: str
) -> None:
    records = simulate(params(address))
    assert shape(records[0]) == shape(_sample("Send"))
    rec = next(r for r in records if r["eventType"] == event_type)
    want = _sample(event_type, subtype)
    assert set(rec) == {"eventType", "mail", key}
    assert shape(rec) == shape(want)


def test_ooto_is_a_transient_general_bounce_without_delivery() -> None:
    records = simulate(params(f"ooto@{SIM}"))
    assert [r["eventType"] for r in records] == ["Send", "Bounce"]
    bounce = records[1]["bounce"]
    assert (bounce["bounceType"], bounce["bounceSubType"]) == ("Transient", "General")
    assert shape(records[1]) == shape(_sample("Bounce", "MailboxFull"))


def test_timestamps_come_from_now() -> None:
    records = simulate(params(f"success@{SIM}", f"bounce@{SIM}", f"complaint@{SIM}"))
    assert {r["mail"]["timestamp"] for r in records} == {"2026-11-29T01:02:03.000Z"}
    later = {
        r["eventType"]: datetime.fromisoformat(r[r["eventType"].lower()]["timestamp"])
        for r in records[1:]
    }
    assert all(NOW < t < NOW + timedelta(seconds=10) for t in later.values())
    assert later["Delivery"] < later["Complaint"]
    naive = simulate(params(f"success@{SIM}"), now=NOW.replace(tzinfo=None))
    assert naive == simulate(params(f"success@{SIM}"))


# ---- outcomes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "outcome"),
    [
        (f"success@{SIM}", SimulatedOutcome.DELIVERY),
        (f"bounce@{SIM}", SimulatedOutcome.BOUNCE),
        (f"bounce+list-7@{SIM}", SimulatedOutcome.BOUNCE),
        ("Bounce+X@Simulator.AmazonSES.com", SimulatedOutcome.BOUNCE),
        (f"ooto@{SIM}", SimulatedOutcome.OOTO),
        (f"complaint+42@{SIM}", SimulatedOutcome.COMPLAINT),
        (f"suppressionlist@{SIM}", SimulatedOutcome.SUPPRESSED),
        (f"Partner Test <suppressionlist+a@{SIM}>", SimulatedOutcome.SUPPRESSED),
        (f"whoever@{SIM}", SimulatedOutcome.DELIVERY),
        ("bounce@example.com", SimulatedOutcome.DELIVERY),
        ("ana@customer.example.org", SimulatedOutcome.DELIVERY),
    ],
)
def test_outcome_for(address: str, outcome: SimulatedOutcome) -> None:
    assert outcome_for(address) is outcome


@pytest.mark.parametrize(
    ("value", "simulator"),
    [
        (f"bounce+x@{SIM}", True),
        (f"Bounce@{SIM.upper()}", True),
        (f"Tester <complaint@{SIM}> ", True),
        (f"a@not{SIM}", False),  # another domain that merely ends the same way
        (f"a@{SIM}.example", False),
        (f"{SIM}@example.org", False),
        (None, False),
        (7, False),
    ],
)
def test_is_simulator_address(value: object, simulator: bool) -> None:
    assert is_simulator_address(value) is simulator


def test_every_outcome_counts_per_recipient_and_groups_like_ses() -> None:
    p = params(
        f"success@{SIM}",
        f"bounce@{SIM}",
        f"bounce+2@{SIM}",
        cc=(f"ooto@{SIM}", f"complaint@{SIM}"),
        bcc=(f"suppressionlist@{SIM}", "ana@customer.example.org"),
    )
    records = simulate(p)
    types = [(r["eventType"], r.get("bounce", {}).get("bounceSubType")) for r in records]
    assert types == [
        ("Send", None),
        ("Bounce", "Suppressed"),
        ("Delivery", None),
        ("Bounce", "General"),
        ("Bounce", "General"),
        ("Complaint", None),
    ]
    assert records[0]["mail"]["destination"] == [
        f"success@{SIM}",
        f"bounce@{SIM}",
        f"bounce+2@{SIM}",
        f"ooto@{SIM}",
        f"complaint@{SIM}",
        f"suppressionlist@{SIM}",
        "ana@customer.example.org",
    ]
    hard = records[3]["bounce"]
    assert hard["bounceType"] == "Permanent"
    assert [b["emailAddress"] for b in hard["bouncedRecipients"]] == [
        f"bounce@{SIM}",
        f"bounce+2@{SIM}",
    ]
    assert records[2]["delivery"]["recipients"] == [
        f"success@{SIM}",
        f"complaint@{SIM}",
        "ana@customer.example.org",
    ]
    assert count(records) == {
        # suppressionlist@ is a hard bounce (global suppression list), not `suppressed`
        "acme": Counter(sent=7, delivered=3, hard_bounces=3, soft_bounces=1, complaints=1)
    }
    # Bcc recipients are envelope-only: in destination, never in the headers.
    mail = records[0]["mail"]
    assert mail["commonHeaders"]["cc"] == [f"ooto@{SIM}", f"complaint@{SIM}"]
    assert "bcc" not in mail["commonHeaders"]
    assert not any("suppressionlist" in h["value"] for h in mail["headers"])
    assert all(r["mail"] is records[0]["mail"] or r["mail"] == mail for r in records)


def test_display_names_stay_in_headers_bare_addresses_in_destination() -> None:
    records = simulate(params(f"Ana <bounce@{SIM}>"))
    mail = records[0]["mail"]
    assert mail["destination"] == [f"bounce@{SIM}"]
    assert mail["commonHeaders"]["to"] == [f"Ana <bounce@{SIM}>"]
    assert records[1]["bounce"]["bouncedRecipients"][0]["emailAddress"] == f"bounce@{SIM}"


def test_tags_as_ses_writes_them() -> None:
    p = params(f"success@{SIM}", ConfigurationSetName="cs-1", ReplyToAddresses=["r@x.example"])
    p["EmailTags"].append({"Name": "campaign", "Value": "spring"})
    mail = simulate(p)[0]["mail"]
    assert mail["tags"] == {
        "ses:operation": ["SendEmail"],
        "ses:configuration-set": ["cs-1"],
        "ses:source-ip": ["203.0.113.10"],
        "ses:from-domain": ["mail.example.com"],
        "ses:caller-identity": ["sesguard-sender"],
        "partner_id": ["acme"],
        "campaign": ["spring"],
    }
    assert mail["commonHeaders"]["replyTo"] == ["r@x.example"]
    assert mail["sourceArn"] == f"arn:aws:ses:us-east-1:{ACCOUNT}:identity/mail.example.com"
    untagged = params(f"success@{SIM}")
    del untagged["EmailTags"]
    assert count(simulate(untagged)) == {"_unattributed": Counter(sent=1, delivered=1)}


def test_no_configuration_set_no_events() -> None:
    p = params(f"bounce@{SIM}")
    del p["ConfigurationSetName"]
    assert simulate(p) == []


def test_template_content_has_no_subject() -> None:
    p = params(f"success@{SIM}", Content={"Template": {"TemplateName": "t", "TemplateData": "{}"}})
    mail = simulate(p)[0]["mail"]
    assert "subject" not in mail["commonHeaders"]


def test_deterministic_and_does_not_touch_its_input() -> None:
    p = params(f"bounce@{SIM}", f"complaint@{SIM}")
    before = copy.deepcopy(p)
    first = orjson.dumps(simulate(p))
    assert orjson.dumps(simulate(p)) == first
    assert p == before
    ids = [
        next(r["bounce"]["feedbackId"] for r in simulate(p, message_id=m) if "bounce" in r)
        for m in ("msg-1", "msg-2")
    ]
    assert ids[0] != ids[1]
    assert b"never logged" not in first  # bodies are not part of event records


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.pop("FromEmailAddress"), "FromEmailAddress"),
        (lambda p: p.update(FromEmailAddress="not-an-address"), "not an e-mail address"),
        (lambda p: p.pop("Destination"), "Destination"),
        (lambda p: p.update(Destination={"ToAddresses": []}), "no recipients"),
        (lambda p: p.update(Destination={"ToAddresses": "a@b.example"}), "ToAddresses"),
        (lambda p: p.update(Destination={"ToAddresses": ["x@y\r\nBcc: z@w"]}), "e-mail"),
        (lambda p: p.update(EmailTags=[{"Name": "partner_id"}]), "EmailTags"),
        (lambda p: p.update(EmailTags={"partner_id": "acme"}), "EmailTags"),
        (lambda p: p.update(ReplyToAddresses=["@nowhere"]), "e-mail"),
        (lambda p: p["Content"]["Simple"]["Subject"].update(Data=5), "Subject"),
    ],
)
def test_bad_input(mutate: Any, message: str) -> None:
    p = params(f"success@{SIM}")
    mutate(p)
    with pytest.raises(SimulationError, match=message):
        simulate(p)


def test_bad_message_id_and_params_type() -> None:
    with pytest.raises(SimulationError, match="message_id"):
        simulate(params(f"success@{SIM}"), message_id="")
    with pytest.raises(SimulationError, match="mapping"):
        simulate_events(["x"], "m", NOW, ACCOUNT, "us-east-1")  # type: ignore[arg-type]


# ---- batching and retries --------------------------------------------------------------


def test_record_batches_respect_firehose_limits() -> None:
    small = [b"x" * 10 + b"\n"] * (MAX_BATCH_RECORDS + 1)
    assert [len(b) for b in record_batches(small)] == [MAX_BATCH_RECORDS, 1]
    big = [b"y" * (MAX_RECORD_BYTES - 1) + b"\n"] * 5
    batches = list(record_batches(big))
    assert [len(b) for b in batches] == [4, 1]
    assert all(sum(map(len, b)) <= MAX_BATCH_BYTES for b in batches)
    assert list(record_batches([])) == []


def test_records_are_newline_terminated_json_and_size_checked() -> None:
    blobs = encode_records(simulate(params(f"bounce@{SIM}")))
    assert all(b.endswith(b"\n") and b.count(b"\n") == 1 for b in blobs)
    assert [orjson.loads(b)["eventType"] for b in blobs] == ["Send", "Bounce"]
    with pytest.raises(PublishError, match="Firehose allows"):
        encode_records([{"eventType": "Send", "pad": "z" * MAX_RECORD_BYTES}])


class RefusingFirehose:
    """Stand-in for the Firehose API that refuses chosen records (moto never does)."""

    def __init__(self, refuse: list[set[int]]) -> None:
        self.refuse = refuse  # per call: indexes to refuse
        self.calls: list[list[bytes]] = []

    async def put_record_batch(self, DeliveryStreamName: str, Records: list[dict]) -> dict:
        data = [r["Data"] for r in Records]
        self.calls.append(data)
        refused = self.refuse[len(self.calls) - 1] if len(self.calls) <= len(self.refuse) else set()
        return {
            "FailedPutCount": len(refused),
            "RequestResponses": [
                {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "slow down"}
                if i in refused
                else {"RecordId": f"r{i}"}
                for i in range(len(data))
            ],
        }


async def test_publish_resends_only_refused_records() -> None:
    records = simulate(params(f"success@{SIM}", f"bounce@{SIM}", f"complaint@{SIM}"))
    fh = RefusingFirehose([{0, 2}, {1}])
    assert await publish(fh, "s", records, base_delay=0) == 4
    blobs = encode_records(records)
    assert fh.calls == [blobs, [blobs[0], blobs[2]], [blobs[2]]]


async def test_publish_gives_up_after_max_attempts() -> None:
    records = simulate(params(f"success@{SIM}"))
    fh = RefusingFirehose([{0}, {0}, {0}])
    with pytest.raises(PublishError, match="1 records refused") as info:
        await publish(fh, "s", records, max_attempts=3, base_delay=0)
    assert info.value.failed == 1
    assert len(fh.calls) == 3


# ---- through moto: Firehose -> S3 -> SQS notification -----------------------------------


async def _objects(clients: Any, bucket: str) -> dict[str, bytes]:
    listed = await clients.s3.list_objects_v2(Bucket=bucket)
    out = {}
    for obj in listed.get("Contents", []):
        got = await clients.s3.get_object(Bucket=bucket, Key=obj["Key"])
        out[obj["Key"]] = await got["Body"].read()
    return out


async def _notified_keys(clients: Any, queue: str, want: int) -> list[str]:
    url = (await clients.sqs.get_queue_url(QueueName=queue))["QueueUrl"]
    keys: list[str] = []
    for _ in range(10):
        resp = await clients.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        for msg in resp.get("Messages", []):
            body = orjson.loads(msg["Body"])
            for rec in body.get("Records", []):  # the s3:TestEvent has none
                assert rec["eventName"].startswith("ObjectCreated:")
                keys.append(unquote_plus(rec["s3"]["object"]["key"]))
            await clients.sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])
        if len(keys) >= want:
            break
    return keys


async def test_events_reach_the_bucket_and_the_events_queue(clients, settings) -> None:
    await bootstrap(clients, settings, [])
    publisher = await EventPublisher.create(clients, settings)
    account = await clients.account_id()
    bucket = settings.bucket_name(account)
    first = params(
        f"success@{SIM}",
        f"bounce@{SIM}",
        f"ooto@{SIM}",
        f"complaint@{SIM}",
        f"suppressionlist@{SIM}",
    )
    second = params(f"bounce+x@{SIM}", EmailTags=[{"Name": "partner_id", "Value": "beta"}])
    assert await publisher.after_send(first, "m-1") == 6
    assert await publisher.after_send(second, "m-2") == 2
    assert publisher.records_published == 8

    objects = await _objects(clients, bucket)
    assert len(objects) == 2  # moto writes one object per PutRecordBatch
    stream = settings.firehose_stream
    for key in objects:  # YYYY/MM/DD/HH/<stream>-<n>-YYYY-MM-DD-HH-MM-SS-<uuid>
        parts = key.split("/")
        assert len(parts) == 5 and parts[4].startswith(f"{stream}-1-{'-'.join(parts[:3])}-")
    records = [r for body in objects.values() for r in parse_object(body)]
    assert all(b.endswith(b"\n") for b in objects.values())
    assert {r["mail"]["sendingAccountId"] for r in records} == {account}
    assert count(records) == {
        "acme": Counter(sent=5, delivered=2, hard_bounces=2, soft_bounces=1, complaints=1),
        "beta": Counter(sent=1, hard_bounces=1),
    }
    # moto sends the bucket's ObjectCreated notifications for what Firehose writes.
    assert sorted(await _notified_keys(clients, settings.events_queue, 2)) == sorted(objects)


async def test_large_publish_is_split_into_batches(clients, settings) -> None:
    await bootstrap(clients, settings, [])
    account = await clients.account_id()
    records = [
        r
        for i in range(MAX_BATCH_RECORDS // 2 + 1)
        for r in simulate(params(f"success+{i}@{SIM}"), message_id=f"m-{i}")
    ]
    assert len(records) == MAX_BATCH_RECORDS + 2
    assert await publish(clients.firehose, settings.firehose_stream, records) == len(records)
    objects = await _objects(clients, settings.bucket_name(account))
    assert sorted(len(parse_object(b)) for b in objects.values()) == [2, MAX_BATCH_RECORDS]


async def test_publish_to_a_missing_stream_raises(clients) -> None:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError):
        await publish(clients.firehose, "no-such-stream", simulate(params(f"success@{SIM}")))


async def test_sends_within_the_linger_share_one_object(clients, settings) -> None:
    """The local stack's Firehose writes one object per call: the gathering hook makes one
    call for the sends of one linger, as Firehose's buffer makes one object of them."""
    await bootstrap(clients, settings, [])
    gathering = Gathering(await EventPublisher.create(clients, settings), linger=0.05)
    counts = await asyncio.gather(
        gathering(params(f"success@{SIM}"), "m-1"),
        gathering(params(f"bounce@{SIM}", f"complaint@{SIM}"), "m-2"),
        gathering(params("x@isv.example.com", ConfigurationSetName=None), "m-3"),  # none
    )
    assert counts == [2, 4, 0]
    assert await gathering(params(f"bounce@{SIM}"), "m-4") == 2  # the next linger
    objects = await _objects(clients, settings.bucket_name(await clients.account_id()))
    assert sorted(len(parse_object(b)) for b in objects.values()) == [2, 6]
    assert gathering.publisher.records_published == 8


async def test_a_failed_gathered_publish_reaches_every_waiting_send() -> None:
    firehose: Any = RefusingFirehose([{0, 1}] * 5)
    publisher = EventPublisher(firehose, "s", "123456789012", "us-east-1")
    gathering = Gathering(publisher, linger=0.01)
    results = await asyncio.gather(
        gathering(params(f"success@{SIM}"), "m-1"),
        gathering(params(f"success@{SIM}"), "m-2"),
        return_exceptions=True,
    )
    assert all(isinstance(r, PublishError) for r in results)
    assert publisher.records_published == 0
