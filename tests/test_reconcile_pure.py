"""Reconciling "possibly sent" from SES's own records: the pure parts (no AWS).

The job tag (a job id in SES's tag charset and back), what a Send event confirms, what
the worker does with a job's record, and what `sesguard dlq redrive` decides for each
DLQ message."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from sender.records import ClaimState, judge_existing
from sender.ses import email_tags
from sesguard.aws.deadletter import dead_letter, possibly_sent_reason
from sesguard.core.jobs import (
    JOB_ID_RE,
    JOB_TAG,
    JobError,
    job_id_from_tag,
    job_tag_value,
    parse_job,
)
from sesguard.local.simulator import simulate_events
from sesguard.ops.dlq import Context, Facts, Remedy, Verdict, body_with_job_id, decide, settle
from tests.fixtures.ses_events import event
from worker.aggregate import Aggregator
from worker.classify import Delta, classify

# SES's API reference: message tag values contain only A-Z a-z 0-9 _ - (at most 256).
SES_STRICT_TAG = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


# ---- the job tag -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "job_id",
    [
        "order-1234",
        "a",
        "a_b",
        "x.y:z",
        "__",
        "_d",
        "_c_",
        ":.:._",
        "0" * 128,
        "_" * 128,
        ".:" * 64,
        "3f2a9c5e-41b7-4c1e-9d0f-6a8b2e7c1d34",
        "urn:order:2026.11.29:0001",
    ],
)
def test_every_job_id_maps_to_one_strict_ses_tag_value_and_back(job_id: str) -> None:
    assert JOB_ID_RE.fullmatch(job_id)
    value = job_tag_value(job_id)
    assert SES_STRICT_TAG.fullmatch(value), value
    assert job_id_from_tag(value) == job_id


def test_the_mapping_is_one_to_one_on_every_short_id() -> None:
    alphabet = "a_.:-"
    ids = [a + b + c for a in alphabet for b in alphabet for c in alphabet]
    values = {job_tag_value(i) for i in ids}
    assert len(values) == len(ids)


@pytest.mark.parametrize(
    "value",
    [None, "", "_", "a_", "_x", "a.b", "a:b", "a@b", "é", 5, ["x"], "a" * 129, "_d" * 129],
)
def test_a_tag_sesguard_did_not_write_names_no_job(value: Any) -> None:
    assert job_id_from_tag(value) is None


def test_a_job_id_that_is_not_one_has_no_tag() -> None:
    with pytest.raises(ValueError, match="not a job id"):
        job_tag_value("bad id!")


def test_jobs_cannot_set_the_reserved_tags() -> None:
    base = {
        "partner_id": "acme",
        "from": "news@isv.example.com",
        "to": ["a@example.org"],
        "subject": "s",
        "text": "t",
    }
    for name in ("partner_id", JOB_TAG):
        with pytest.raises(JobError, match="reserved"):
            parse_job({**base, "tags": {name: "x"}})


def test_partner_tag_first_then_the_job_tag_then_the_jobs_own() -> None:
    job = parse_job(
        {
            "job_id": "urn:order.7",
            "partner_id": "acme",
            "from": "news@isv.example.com",
            "to": ["a@example.org"],
            "subject": "s",
            "text": "t",
            "tags": {"zeta": "1", "alpha": "2"},
        }
    )
    assert email_tags(job) == [
        {"Name": "partner_id", "Value": "acme"},
        {"Name": JOB_TAG, "Value": "urn_corder_d7"},
        {"Name": "alpha", "Value": "2"},
        {"Name": "zeta", "Value": "1"},
    ]


def test_the_simulator_carries_the_job_tag_into_every_record() -> None:
    """SESGUARD_SIMULATE_EVENTS and the stand-in's own publishing (sesguard.local.localaws)
    build records with simulate_events: the job tag must arrive in mail.tags, as SES
    publishes every message tag there."""
    job = parse_job(
        {
            "job_id": "o:1.2",
            "partner_id": "acme",
            "from": "news@isv.example.com",
            "to": ["bounce@simulator.amazonses.com", "x@example.org"],
            "subject": "s",
            "text": "t",
        }
    )
    params = {
        "FromEmailAddress": job.from_,
        "Destination": {"ToAddresses": job.to},
        "Content": {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "t"}}}},
        "EmailTags": email_tags(job),
        "ConfigurationSetName": "sesguard",
    }
    records = simulate_events(params, "0100-abc", NOW, "123456789012", "us-east-1")
    assert {r["eventType"] for r in records} == {"Send", "Delivery", "Bounce"}
    for r in records:
        assert r["mail"]["tags"][JOB_TAG] == [job_tag_value("o:1.2")]
    (send,) = [r for r in records if r["eventType"] == "Send"]
    assert sent_job(send) == "o:1.2"


# ---- what a Send event confirms ----------------------------------------------------------


def sent_job(record: dict[str, Any]) -> str | None:
    """The job a record's Send event records as accepted by SES (None: none)."""
    delta = classify(record)
    return delta.job if isinstance(delta, Delta) else None


def _send(job_tag: Any = "job-1", partner: str | None = "acme") -> dict[str, Any]:
    rec = event("Send", partner, NOW)
    if job_tag is not None:
        rec["mail"]["tags"][JOB_TAG] = [job_tag]
    return rec


def test_a_send_event_names_its_job() -> None:
    assert sent_job(_send("order_d1")) == "order.1"


@pytest.mark.parametrize(
    "record",
    [
        _send(None),  # no job tag: not sent by sesguard
        _send("bad.tag"),  # not a value sesguard writes
        _send("job-1", partner=None),  # no partner: nothing to match the record with
        _send("job-1", partner="_unattributed"),
        event("Delivery", "acme", NOW),  # only Send events confirm a send
    ],
)
def test_no_job_is_concluded_from_a_record_sesguard_did_not_tag(record: dict[str, Any]) -> None:
    if record["eventType"] == "Delivery":
        record["mail"]["tags"][JOB_TAG] = ["job-1"]
    assert sent_job(record) is None


def test_the_aggregator_collects_the_sends_without_changing_the_counts() -> None:
    plain, tagged = Aggregator(), Aggregator()
    for agg, records in (
        (plain, [event("Send", "acme", NOW), event("Delivery", "acme", NOW)]),
        (tagged, [_send("job-1"), event("Delivery", "acme", NOW), _send("job-2")]),
    ):
        for i, r in enumerate(records):
            agg.add(i, r)
    assert tagged.counts()[("acme", NOW.replace(minute=0))].sent == 2
    assert [sorted(m.jobs) for m in tagged.take()] == [["job-1", "job-2"]]
    assert [m.jobs for m in plain.take()] == [{}]


# ---- the sender meeting a stale claim ----------------------------------------------------


def test_a_stale_claim_ses_confirmed_is_a_duplicate_not_possibly_sent() -> None:
    old = (NOW - timedelta(hours=1)).isoformat()
    confirmed = {"state": "sent", "message_id": "m-1", "confirmed_by": "ses", "claimed_at": old}
    claim = judge_existing(confirmed, NOW, 60)
    assert claim.state is ClaimState.SENT and claim.confirmed_by_ses and claim.message_id == "m-1"
    stale = judge_existing({"state": "sending", "claimed_at": old}, NOW, 60)
    assert stale.state is ClaimState.POSSIBLY_SENT and stale.claimed_at == old


def test_the_possibly_sent_reason_points_to_the_redrive_never_to_deleting_the_record() -> None:
    reason = possibly_sent_reason("2026-11-29T11:00:00+00:00")
    assert reason.startswith("possibly sent")
    assert "sesguard dlq redrive" in reason and "2026-11-29T11:00:00+00:00" in reason
    assert "delete" not in reason.lower()


def test_the_dlq_copy_names_the_message_it_copies() -> None:
    letter = dead_letter("{}", "why", message_id="m-123")
    assert letter.attributes["sesguard_message_id"] == {
        "DataType": "String",
        "StringValue": "m-123",
    }
    big = dead_letter("x" * 300_000, "why", message_id="m-123")
    assert big.truncated_from == 300_000 and "sesguard_message_id" in big.attributes
    assert big.size <= 256 * 1024


# ---- redrive decisions --------------------------------------------------------------------

SETTLE = 900.0
CTX = Context(NOW, SETTLE, 14, None)


def facts(
    record: dict[str, Any] | None = None,
    reason: str | None = "possibly sent: ...",
    **kw: Any,
) -> Facts:
    base: dict[str, Any] = {
        "reason": reason,
        "job_error": None,
        "record": record,
        "partner_known": True,
        "age_seconds": 3600.0,
    }
    base.update(kw)
    return Facts(**base)


def claim(minutes_ago: float, **kw: Any) -> dict[str, Any]:
    at = (NOW - timedelta(minutes=minutes_ago)).isoformat()
    return {"state": "sending", "token": "tok-1", "claimed_at": at, **kw}


def test_a_job_ses_confirmed_is_dropped_never_resent() -> None:
    d = decide(facts({"state": "sent", "message_id": "m-1", "confirmed_by": "ses"}), CTX)
    assert d.remedy is Remedy.DROP and "confirmed by SES" in d.why and "m-1" in d.why
    d = decide(facts({"state": "sent", "message_id": "m-2"}, reason=None), CTX)
    assert d.remedy is Remedy.DROP  # the sender's own record: sent as well


def test_a_possibly_sent_job_waits_for_the_settle_time_from_its_claim() -> None:
    d = decide(facts(claim(minutes_ago=14)), CTX)
    assert d.remedy is Remedy.KEEP and "waiting for SES's word on it until" in d.why
    ready = (NOW + timedelta(minutes=1)).isoformat()
    assert ready in d.why


def test_a_possibly_sent_job_ses_has_word_of_is_dropped_whatever_its_age() -> None:
    """SES's word (the worker's item of its message, same partner) settles it: sent."""
    word = {"job_id": "job-1", "minute": "2026-11-29T11:59"}
    for minutes in (1, 60):
        d = decide(facts(claim(minutes, partner_id="acme"), evidence=word), CTX)
        assert d.remedy is Remedy.DROP and "SES accepted its message" in d.why
    held = Context(NOW, SETTLE, 14, "3 S3 notifications wait in sesguard-ses-events")
    assert decide(facts(claim(60), evidence=word), held).remedy is Remedy.DROP


def test_the_settle_rule_the_sender_and_the_redrive_share() -> None:
    rec = claim(minutes_ago=20)
    word = {"job_id": "job-1", "minute": "2026-11-29T11:00"}
    assert settle(rec, word, NOW, SETTLE, "pending").verdict is Verdict.SENT
    young = settle(claim(minutes_ago=5), None, NOW, SETTLE, None)
    assert young.verdict is Verdict.WAIT and young.ready_at == NOW + timedelta(minutes=10)
    held = settle(rec, None, NOW, SETTLE, "3 S3 notifications wait")
    assert (held.verdict, held.why) == (Verdict.HOLD, "3 S3 notifications wait")
    go = settle(rec, None, NOW, SETTLE, None)
    assert (go.verdict, go.token) == (Verdict.RESEND, "tok-1")
    assert settle({"state": "sending"}, None, NOW, SETTLE, None).verdict is Verdict.MANUAL


def test_a_possibly_sent_job_with_no_send_event_after_the_settle_time_is_unclaimed() -> None:
    d = decide(facts(claim(minutes_ago=16)), CTX)
    assert d.remedy is Remedy.UNCLAIM and d.token == "tok-1"


def test_events_not_yet_counted_hold_a_possibly_sent_job_back() -> None:
    ctx = Context(NOW, SETTLE, 14, "3 S3 notifications wait in sesguard-ses-events")
    d = decide(facts(claim(minutes_ago=60)), ctx)
    assert d.remedy is Remedy.KEEP and "3 S3 notifications wait" in d.why


def test_a_claim_without_a_readable_time_or_token() -> None:
    d = decide(facts({"state": "sending", "token": "t", "claimed_at": "?"}), CTX)
    assert d.remedy is Remedy.UNCLAIM  # unreadable time: as old as can be (like the sender)
    d = decide(facts({"state": "sending", "claimed_at": "?"}), CTX)
    assert d.remedy is Remedy.KEEP and "no token" in d.why
    assert decide(facts({"state": "odd"}), CTX).remedy is Remedy.KEEP


def test_a_job_never_claimed_is_requeued() -> None:
    for reason in (
        "failing for longer than the outage tolerance (900s, received 19 times): ses: ...",
        None,
        "possibly sent: ...",  # its claim was removed by a redrive that then crashed
    ):
        assert decide(facts(None, reason=reason), CTX).remedy is Remedy.REQUEUE


def test_malformed_and_rejected_jobs_stay_with_their_reason() -> None:
    d = decide(facts(None, reason="to.0: not an e-mail address", job_error="to.0: nope"), CTX)
    assert d.remedy is Remedy.KEEP and d.why == "malformed: to.0: nope"
    d = decide(
        facts(None, reason="rejected by SES: MessageRejected: Email address is not verified"), CTX
    )
    assert d.remedy is Remedy.KEEP and d.why.startswith("rejected by SES: MessageRejected")


def test_an_unknown_partner_stays_until_it_exists() -> None:
    kept = decide(facts(None, reason="unknown partner", partner_known=False), CTX)
    assert kept.remedy is Remedy.KEEP and "sesguard partners add" in kept.why
    assert decide(facts(None, reason="unknown partner"), CTX).remedy is Remedy.REQUEUE


def test_a_job_whose_record_may_have_expired_stays() -> None:
    old = 13.5 * 86400  # dead-lettered 13.5 days ago, records live 14 days from the claim
    d = decide(facts(None, reason=None, age_seconds=old), CTX)
    assert d.remedy is Remedy.KEEP and "may have expired" in d.why
    sent = decide(facts({"state": "sent"}, age_seconds=old), CTX)
    assert sent.remedy is Remedy.DROP  # a record still there still decides


def test_a_requeued_job_keeps_its_id() -> None:
    body = orjson.dumps({"partner_id": "acme", "to": ["a@example.org"]}).decode()
    assert orjson.loads(body_with_job_id(body, "m-123"))["job_id"] == "m-123"
    own = orjson.dumps({"job_id": "mine", "partner_id": "acme"}).decode()
    assert body_with_job_id(own, "m-123") == own  # untouched, byte for byte
