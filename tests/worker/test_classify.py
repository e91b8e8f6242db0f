"""Counting semantics (docs/semantics.md's table) and per-object aggregation (pure, no AWS)."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from sesguard.core.identities import identity_set
from sesguard.core.partners import ALL_COUNTERS, COUNTERS, UNATTRIBUTED, Counters
from sesguard.core.policy import compute_windows
from tests.fixtures.ses_events import (
    EXPECTED_ACME,
    EXPECTED_UNATTRIBUTED,
    FORMATS,
    NDJSON,
    encode,
    event,
    record_of,
    sample_bytes,
    sample_records,
)
from worker.aggregate import Aggregator, aggregate_bytes
from worker.classify import Delta, Ignored, NotAnEvent, event_hour
from worker.classify import classify as classify_record
from worker.reader import MALFORMED_KEPT


def classify(record: Any, *args: Any) -> Any:
    """What the record counts (the Delta without its key, minute and job, which
    tests/worker/test_dedup.py covers)."""
    d = classify_record(record, *args)
    return Delta(*d[:7]) if isinstance(d, Delta) else d


T = datetime(2026, 11, 29, 1, 30, tzinfo=UTC)
H1 = datetime(2026, 11, 29, 1, tzinfo=UTC)


def totals(counts: dict[tuple[str, datetime], Counters]) -> dict[str, dict[str, int]]:
    out: dict[str, Counters] = {}
    for (pid, _), c in counts.items():
        out.setdefault(pid, Counters()).add(c)
    return {pid: c.nonzero() for pid, c in out.items()}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_sample_files_give_the_readme_counts_in_every_format(fmt: str) -> None:
    agg = aggregate_bytes(sample_bytes(fmt), chunk_size=97)
    assert totals(agg.counts()) == {"acme": EXPECTED_ACME, UNATTRIBUTED: EXPECTED_UNATTRIBUTED}
    assert agg.stats.events == 12
    assert agg.stats.untagged == 1
    assert agg.stats.malformed == []


def test_every_counter_is_covered_by_the_samples() -> None:
    assert set(EXPECTED_ACME) == set(COUNTERS)


@pytest.mark.parametrize(
    ("kind", "counter"),
    [
        ("Send", "sent"),
        ("Delivery", "delivered"),
        ("Reject", "rejects"),
        ("DeliveryDelay", "delivery_delays"),
    ],
)
def test_multi_recipient_events_count_per_recipient(kind: str, counter: str) -> None:
    delta = classify(event(kind, "p1", T, recipients=3))
    assert delta == Delta("p1", H1, counter, 3, None)


def test_a_complaint_report_is_one_complaint_whatever_its_recipients() -> None:
    """complainedRecipients names who *might* have complained: one report, one complaint."""
    assert classify(event("Complaint", "p1", T, recipients=3)) == Delta(
        "p1", H1, "complaints", 1, None
    )
    sim = event("Complaint", "p1", T, recipients=2)
    sim["complaint"]["complainedRecipients"] = [
        {"emailAddress": "complaint@simulator.amazonses.com"},
        {"emailAddress": "r1@customer.example.org"},
    ]
    assert classify(sim) == Delta("p1", H1, "complaints", 1, None, 0)
    sim["complaint"]["complainedRecipients"].pop()
    assert classify(sim) == Delta("p1", H1, "complaints", 1, None, 1)


def test_a_suppressed_complaint_counts_per_recipient_as_the_sends_it_offsets() -> None:
    rec = event("Complaint", "p1", T, recipients=3)
    rec["complaint"]["complaintSubType"] = "OnAccountSuppressionList"
    assert classify(rec) == Delta("p1", H1, "suppressed", 3, None)


@pytest.mark.parametrize(
    ("bounce_type", "subtype", "counter"),
    [
        ("Permanent", "General", "hard_bounces"),
        ("Permanent", "NoEmail", "hard_bounces"),
        ("Permanent", "OnAccountSuppressionList", "suppressed"),
        ("Transient", "MailboxFull", "soft_bounces"),
        ("Undetermined", "Undetermined", "soft_bounces"),
    ],
)
def test_bounce_kinds(bounce_type: str, subtype: str, counter: str) -> None:
    rec = event("Bounce", "p1", T, recipients=2, bounce_type=bounce_type, bounce_subtype=subtype)
    assert classify(rec) == Delta("p1", H1, counter, 2, None)


def test_opens_clicks_rendering_failures_count_one() -> None:
    for kind, counter in [("Open", "opens"), ("Click", "clicks")]:
        assert classify(event(kind, "p1", T, recipients=5)).counter == counter  # type: ignore[union-attr]
        assert classify(event(kind, "p1", T, recipients=5)).amount == 1  # type: ignore[union-attr]
    rec = record_of("Rendering Failure")
    rec["mail"]["destination"] = ["a@x.example", "b@x.example"]
    assert classify(rec)[2:4] == ("rendering_failures", 1)


def test_subscription_unknown_types_and_bounce_types_are_ignored() -> None:
    rec = record_of("Send")
    rec["eventType"] = "Subscription"
    assert classify(rec) == Ignored("Subscription")
    rec["eventType"] = "Teleport"
    assert classify(rec) == Ignored("unknown:Teleport")
    bounce = event("Bounce", "p1", T, bounce_type="Sideways")
    assert classify(bounce) == Ignored("Bounce/Sideways")


@pytest.mark.parametrize(
    "kind", ["bounce", "BOUNCE", "complaint", "delivery_delay", "RENDERING FAILURE"]
)
def test_spellings_ses_never_writes_are_ignored_as_misspelled(kind: str) -> None:
    rec = event("Bounce", "p1", T)
    rec["eventType"] = kind
    assert classify(rec) == Ignored(f"misspelled:{kind}")


@pytest.mark.parametrize(
    ("tags", "problem"),
    [
        ({}, "missing"),
        ({"partner_id": []}, "missing"),
        ({"partner_id": ["not valid!"]}, "invalid"),
        ({"partner_id": ["x" * 65]}, "invalid"),
        ({"partner_id": [7]}, "invalid"),
        ({"partner_id": ["_unattributed"]}, "invalid"),  # reserved: no partner has it
        ({"partner_id": ["_ops"]}, "invalid"),
        ("not-a-dict", "missing"),
    ],
)
def test_missing_or_invalid_partner_tag_counts_as_unattributed(tags: object, problem: str) -> None:
    rec = event("Send", "p1", T)
    rec["mail"]["tags"] = tags
    delta = classify(rec)
    assert isinstance(delta, Delta)
    assert (delta.partner_id, delta.tag_problem, delta.amount) == (UNATTRIBUTED, problem, 1)


def test_hour_is_the_events_own_time_with_mail_time_as_fallback() -> None:
    complaint = record_of("Complaint")  # mail 00:40, complaint 01:06
    assert classify(complaint).hour == H1  # type: ignore[union-attr]
    del complaint["complaint"]["timestamp"]
    assert classify(complaint).hour == datetime(2026, 11, 29, 0, tzinfo=UTC)  # type: ignore[union-attr]
    complaint["complaint"]["timestamp"] = "yesterday"
    assert classify(complaint).hour == datetime(2026, 11, 29, 0, tzinfo=UTC)  # type: ignore[union-attr]


def test_event_hour_parses_offsets_and_rejects_nonsense() -> None:
    assert event_hour("2026-11-29T01:59:59.999Z") == H1
    assert event_hour("2026-11-29T03:10:00+02:00") == H1
    assert event_hour("2026-11-29T01:10:00+00:00") == H1
    for bad in ("2026-13-29T01:02:03.000Z", "2026-11-29T01:02:03", "", None, 5):
        with pytest.raises(ValueError):
            event_hour(bad)


@pytest.mark.parametrize(
    "record",
    [
        {"foo": 1},
        {"eventType": "Send"},
        {"eventType": 5, "mail": {}},
        {"eventType": "Send", "mail": {"timestamp": "2026-11-29T01:02:03.000Z"}},
        {"eventType": "Delivery", "mail": {"timestamp": "2026-11-29T01:02:03.000Z"}},
        {"eventType": "Bounce", "mail": {"timestamp": "2026-11-29T01:02:03.000Z"}, "bounce": 1},
        {"eventType": "Send", "mail": {"destination": ["a@b.example"]}},
    ],
)
def test_json_that_is_not_a_countable_event_raises(record: dict[str, object]) -> None:
    with pytest.raises(NotAnEvent):
        classify(record)


def test_aggregation_folds_events_per_partner_hour_with_stats() -> None:
    h2 = datetime(2026, 11, 29, 2, 5, tzinfo=UTC)
    records = [
        event("Send", "p1", T, recipients=3),
        event("Send", "p1", h2, recipients=2),
        event("Bounce", "p1", T, recipients=2),
        event("Send", "p2", T),
        event("Send", None, T, recipients=4),
        {"eventType": "Subscription", "mail": {"timestamp": "2026-11-29T01:02:03.000Z"}},
        {"not": "ses"},
    ]
    data = encode(records)
    agg = aggregate_bytes(data)
    counts = {k: c.nonzero() for k, c in agg.counts().items()}
    assert counts == {
        ("p1", H1): {"sent": 3, "hard_bounces": 2},
        ("p1", datetime(2026, 11, 29, 2, tzinfo=UTC)): {"sent": 2},
        ("p2", H1): {"sent": 1},
        (UNATTRIBUTED, H1): {"sent": 4},
    }
    stats = agg.stats
    assert (stats.records, stats.events, stats.recipients) == (7, 5, 12)
    assert stats.ignored == {"Subscription": 1}
    assert stats.untagged == 1
    assert len(stats.malformed) == 1
    m = stats.malformed[0]
    assert data[m.offset :].startswith(orjson.dumps({"not": "ses"}))
    assert "not an SES event" in m.reason
    assert agg.partners() == {"p1", "p2", UNATTRIBUTED}


def test_zero_recipient_events_touch_no_counter() -> None:
    agg = aggregate_bytes(encode([event("Send", "p1", T, recipients=0)]))
    assert agg.counts() == {}
    assert agg.stats.events == 1


def test_reader_and_classifier_findings_are_merged_in_offset_order() -> None:
    good = sample_records()
    data = b"garbage\n" + orjson.dumps({"x": 1}) + b"\n" + b"\n".join(orjson.dumps(r) for r in good)
    agg = aggregate_bytes(data, 10)
    reasons = [m.reason for m in agg.stats.malformed]
    assert reasons[0] == "not JSON" and "not an SES event" in reasons[1]
    assert totals(agg.counts())["acme"] == EXPECTED_ACME


def test_a_per_message_event_is_simulator_mail_only_when_every_recipient_is() -> None:
    sim = "simulator.amazonses.com"
    rec = event("Open", "p1", T)
    rec["mail"]["destination"] = [f"success@{sim}", "ana@x.example"]
    assert classify(rec) == Delta("p1", H1, "opens", 1, None, 0)
    rec["mail"]["destination"] = [f"success@{sim}", f"Ana <bounce+1@{sim.upper()}>"]
    assert classify(rec) == Delta("p1", H1, "opens", 1, None, 1)
    rec["mail"]["destination"] = []
    assert classify(rec) == Delta("p1", H1, "opens", 1, None, 0)


def test_counters_hold_every_named_counter_in_report_order() -> None:
    assert tuple(f.name for f in fields(Counters)) == ALL_COUNTERS
    simulator = tuple(f"simulator_{c}" for c in COUNTERS)
    assert (*COUNTERS, *simulator, "verified_hard_bounces") == ALL_COUNTERS


VERIFIED = identity_set(["isv.example.com", "Ops@Partner.Example.NET"])


def test_hard_bounces_to_verified_identities_count_apart() -> None:
    """SES's bounce rate counts only hard bounces to domains the account has not verified."""
    rec = event("Bounce", "p1", T, recipients=2)
    rec["bounce"]["bouncedRecipients"] = [
        {"emailAddress": "gone@ISV.example.com"},  # a verified domain, any case
        {"emailAddress": "ops@partner.example.net"},  # a verified address
        {"emailAddress": "other@partner.example.net"},  # its domain is not verified
        {"emailAddress": "x@sub.isv.example.com"},  # exact domain only
        {"emailAddress": "bounce@simulator.amazonses.com"},  # simulator stays simulator
    ]
    assert classify(rec, VERIFIED) == Delta("p1", H1, "hard_bounces", 5, None, 1, 2)
    assert classify(rec) == Delta("p1", H1, "hard_bounces", 5, None, 1, 0)
    agg = Aggregator(identities=VERIFIED)
    agg.add(0, rec)
    [cell] = agg.counts().values()
    assert cell.nonzero() == {
        "hard_bounces": 2,
        "simulator_hard_bounces": 1,
        "verified_hard_bounces": 2,
    }
    assert agg.stats.verified == 2


@pytest.mark.parametrize(
    ("bounce_type", "subtype"),
    [("Transient", "General"), ("Permanent", "OnAccountSuppressionList")],
)
def test_only_hard_bounces_are_counted_apart_for_verified_identities(
    bounce_type: str, subtype: str
) -> None:
    rec = event("Bounce", "p1", T, bounce_type=bounce_type, bounce_subtype=subtype)
    rec["bounce"]["bouncedRecipients"] = [{"emailAddress": "a@isv.example.com"}]
    assert classify(rec, VERIFIED).verified == 0  # type: ignore[union-attr]
    delivery = event("Delivery", "p1", T)
    delivery["delivery"]["recipients"] = ["a@isv.example.com"]
    assert classify(delivery, VERIFIED).verified == 0  # type: ignore[union-attr]


def test_verified_hard_bounces_stay_out_of_the_bounce_rate() -> None:
    """The issue's case: 20 sends to a verified domain, 10 hard bounces: no pause."""
    now = datetime(2026, 11, 29, 10, 30, tzinfo=UTC)
    hour = datetime(2026, 11, 29, 10, tzinfo=UTC)
    [w] = compute_windows({hour: Counters(sent=20, verified_hard_bounces=10)}, now, [24])
    assert w.bounce_rate == 0


def test_malformed_findings_are_all_counted_and_the_first_thousand_kept() -> None:
    # Alternating reader findings (not JSON) and classifier findings (not an SES event).
    data = b"x\n{}\n" * 800 + NDJSON
    agg = aggregate_bytes(data, 4096)
    stats = agg.stats
    assert stats.malformed_count == 1600
    assert len(stats.malformed) == MALFORMED_KEPT == 1000
    assert [m.offset for m in stats.malformed] == [5 * (i // 2) + 2 * (i % 2) for i in range(1000)]
    assert stats.events == 12
