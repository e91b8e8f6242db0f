"""Regression: records shaped as SES publishes them, counted as docs/semantics.md's
table says and as SES itself judges (issue 13).

The fixture (tests/fixtures/ses_regression/, described in its README) covers every event
type, every bounce type and subtype, partial-recipient bounces, complaints with and
without a feedback report and with OnAccountSuppressionList, simulator recipients, and
SNS identity notifications, newline-delimited and concatenated. Every expected number
below is derived by hand from the records (the comment shows how), never by the code
under test.
"""

from __future__ import annotations

import gzip
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from sesguard.aws.store import PartnerStore
from sesguard.core.partners import UNATTRIBUTED, Counters, Limits, Profile, utcnow
from sesguard.core.policy import Level, compute_windows, evaluate, judge
from sesguard.local.simulator import simulate_events
from sesguard.ops.bootstrap import bootstrap
from sesguard.ops.report import partner_json, partner_text
from sesguard.settings import load_settings
from worker.aggregate import aggregate_bytes
from worker.classify import Delta, WrongPipeline, classify
from worker.pipeline import WRONG_PIPELINE
from worker.service import WorkerService

HERE = Path(__file__).parent / "fixtures" / "ses_regression"
NDJSON = (HERE / "records.ndjson").read_bytes()
CONCATENATED = (HERE / "records-concatenated.json").read_bytes()
H10 = datetime(2026, 3, 2, 10, tzinfo=UTC)
H11 = datetime(2026, 3, 2, 11, tzinfo=UTC)
SIM = "simulator.amazonses.com"

# ---- expected counts, by hand -----------------------------------------------------------

SHOP_H10 = {
    "sent": 18,  # M1 3 + M2 4 + M3 5 + M4 2 + M5 2 + M6 1 + M7 1 (M8-M10 have no Send)
    "delivered": 5,  # M1 2 + M2 1 (b4) + M5 2; M7's delivery is at 11:20
    "hard_bounces": 3,  # M1 a3 (General) + M2 b1 (NoEmail) + M2 b2 (Suppressed: global list)
    "suppressed": 2,  # M2 b3 (Bounce OnAccountSuppressionList) + M6 f1 (Complaint, same)
    "soft_bounces": 7,  # M3 five Transient subtypes + M4 Undetermined naming d1 and d2
    "complaints": 2,  # M5 e1 (feedback report) + M5 e2 (none); M6 is suppressed, not here
    "rejects": 2,  # M8: mail.destination h1, h2
    "delivery_delays": 1,  # M7 at 10:59:30
    "rendering_failures": 1,  # M9, at its mail time 10:53
}
SHOP_H11 = {"delivered": 1, "opens": 1, "clicks": 1}  # M7 at 11:20, 11:40, 11:41
MIXED_H10 = {
    "sent": 1,  # M11 k1 (the only real recipient of M11-M13)
    "delivered": 1,  # M11 k1
    "simulator_sent": 4,  # M11 bounce@ + success+m11@, M12 complaint@, M13 suppressionlist+t13@
    "simulator_delivered": 2,  # M11 success+m11@, M12 complaint@
    "simulator_hard_bounces": 2,  # M11 bounce@ (General), M13 suppressionlist+t13@ (Suppressed)
    "simulator_complaints": 1,  # M12 complaint@
    "simulator_opens": 1,  # M12: every recipient of the message is the simulator
}
MIXED_COUNTED = {  # the same mail counted like real mail (SESGUARD_COUNT_SIMULATOR_MAIL)
    "sent": 5,  # 1 + 4
    "delivered": 3,  # 1 + 2
    "hard_bounces": 2,
    "complaints": 1,
    "opens": 1,
}
UNATTRIBUTED_H10 = {"sent": 2, "delivered": 1}  # M14 Send + Delivery, M15 Send (bad tag)
RECORDS = 47  # 3+5+6+2+4+2+5+1+1+1 (M1-M10) + 3+4+2 (M11-M13) + 3 (M14, M15) + 5 (N1-N5)
WRONG = 5  # N1-N5
EVENTS = 41  # 47 - 5 wrong pipeline - 1 Subscription
SIMULATOR_APART = 10  # sum of MIXED_H10's simulator_* counts: 4 + 2 + 2 + 1 + 1


def per_cell(agg: Any) -> dict[tuple[str, datetime], dict[str, int]]:
    return {key: c.nonzero() for key, c in agg.counts().items()}


FORMATS = {
    "newline": NDJSON,
    "concatenated": CONCATENATED,
    "newline-gzip": gzip.compress(NDJSON),
    "concatenated-gzip": gzip.compress(CONCATENATED),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("chunk", [1 << 20, 333])
def test_the_fixture_counts_as_derived_by_hand(fmt: str, chunk: int) -> None:
    agg = aggregate_bytes(FORMATS[fmt], chunk_size=chunk)
    assert per_cell(agg) == {
        ("shop", H10): SHOP_H10,
        ("shop", H11): SHOP_H11,
        ("mixed", H10): MIXED_H10,
        (UNATTRIBUTED, H10): UNATTRIBUTED_H10,
    }
    s = agg.stats
    assert (s.records, s.events, s.wrong_pipeline, s.simulator) == (
        RECORDS,
        EVENTS,
        WRONG,
        SIMULATOR_APART,
    )
    assert s.ignored == {"Subscription": 1}
    assert (s.untagged, s.invalid_tags) == (2, 1)  # M14's two records; M15
    assert s.malformed == []


def test_simulator_mail_counts_like_real_mail_when_asked() -> None:
    agg = aggregate_bytes(NDJSON, count_simulator=True)
    cells = per_cell(agg)
    assert cells[("mixed", H10)] == MIXED_COUNTED
    assert cells[("shop", H10)] == SHOP_H10  # real mail is the same either way
    assert agg.stats.simulator == 0


def test_the_count_simulator_setting_follows_simulate_events() -> None:
    assert load_settings().counts_simulator_mail is False
    assert load_settings(count_simulator_mail=True).counts_simulator_mail is True
    assert load_settings(simulate_events=True).counts_simulator_mail is True


# ---- one record per rule, exactly as SES publishes it ----------------------------------


def records() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in NDJSON.splitlines()]


def find(event_type: str, **detail: Any) -> dict[str, Any]:
    for r in records():
        body = r.get(event_type[0].lower() + event_type[1:], {})
        if r.get("eventType") == event_type and all(body.get(k) == v for k, v in detail.items()):
            return r
    raise AssertionError(f"no {event_type} {detail} in the fixture")


def test_complaint_on_account_suppression_list_counts_as_suppressed() -> None:
    """Item 2: SES accepted the message and never sent it: not a complaint."""
    rec = find("Complaint", complaintSubType="OnAccountSuppressionList")
    assert classify(rec)[:6] == Delta("shop", H10, "suppressed", 1, None, 0)[:6]
    with_report = find("Complaint", complaintFeedbackType="abuse")
    assert classify(with_report).counter == "complaints"  # type: ignore[union-attr]
    without = next(
        r
        for r in records()
        if r.get("eventType") == "Complaint"
        and "complaintFeedbackType" not in r["complaint"]
        and r["complaint"]["complaintSubType"] is None
    )
    assert classify(without).counter == "complaints"  # type: ignore[union-attr]


def test_simulator_recipients_are_split_from_real_ones_per_recipient() -> None:
    """Item 3: M11 goes to one real and two simulator recipients."""
    send = next(r for r in records() if r.get("eventType") == "Send" and len(
        [a for a in r["mail"]["destination"] if a.endswith(SIM)]) == 2)  # fmt: skip
    assert classify(send)[:6] == Delta("mixed", H10, "sent", 3, None, 2)[:6]
    agg = aggregate_bytes(orjson.dumps(send))
    assert per_cell(agg) == {("mixed", H10): {"sent": 1, "simulator_sent": 2}}
    counted = aggregate_bytes(orjson.dumps(send), count_simulator=True)
    assert per_cell(counted) == {("mixed", H10): {"sent": 3}}


@pytest.mark.parametrize("index", range(RECORDS - WRONG, RECORDS))
def test_sns_identity_notifications_are_the_wrong_pipeline(index: int) -> None:
    """Item 4: no eventType, no tags: never counted under any partner."""
    rec = records()[index]
    kind = "sns-envelope" if rec.get("Type") == "Notification" else "notification"
    assert classify(rec) == WrongPipeline(kind)
    agg = aggregate_bytes(orjson.dumps(rec))
    assert agg.counts() == {} and agg.stats.wrong_pipeline == 1


def test_the_simulators_suppressionlist_bounce_is_what_ses_publishes() -> None:
    """Item 5: the SES guide says suppressionlist@ answers "as if the recipient's address
    is on the global suppression list", i.e. Permanent/Suppressed (a hard bounce SES counts
    toward the bounce rate), never OnAccountSuppressionList; M13 is that record."""
    ses = find("Bounce", bounceSubType="Suppressed", reportingMTA="dns; amazonses.com")
    params = {
        "FromEmailAddress": "notices@shop.example.net",
        "Destination": {"ToAddresses": [f"suppressionlist+x@{SIM}"]},
        "Content": {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "t"}}}},
        "EmailTags": [{"Name": "partner_id", "Value": "shop"}],
        "ConfigurationSetName": "sesguard",
    }
    ours = simulate_events(params, "m-1", H10, "111122223333", "eu-west-1")
    [bounce] = [r for r in ours if r["eventType"] == "Bounce"]
    for key in ("bounceType", "bounceSubType", "reportingMTA"):
        assert bounce["bounce"][key] == ses["bounce"][key], key
    assert set(bounce["bounce"]) == set(ses["bounce"])
    assert set(bounce["bounce"]["bouncedRecipients"][0]) == set(
        ses["bounce"]["bouncedRecipients"][0]
    )
    assert [r["eventType"] for r in ours] == ["Send", "Bounce"]  # no Delivery: never sent
    assert classify(bounce).counter == "hard_bounces"  # type: ignore[union-attr]


# ---- item 1: the denominator -----------------------------------------------------------


def test_sends_to_suppressed_addresses_leave_the_denominator() -> None:
    """The issue's case: 100 sends to suppressed addresses and 100 real sends with 10
    hard bounces is 10% (pause), not 5% (warn)."""
    now = H10 + timedelta(minutes=30)
    buckets = {H10: Counters(sent=200, suppressed=100, hard_bounces=10)}
    verdict = evaluate(Limits(min_volume=100), buckets, now)
    assert verdict.level is Level.PAUSE
    assert verdict.first is not None and verdict.first.rate == pytest.approx(0.10)
    assert "(100 sent, not counting 100 suppressed)" in verdict.reason
    # min_volume counts judged sends too: 100 real sends are not 200.
    assert evaluate(Limits(min_volume=150), buckets, now).level is Level.OK
    # Never below zero, whatever the order events arrive in.
    [w] = compute_windows({H10: Counters(sent=1, suppressed=3, complaints=1)}, now, [24])
    assert (w.judged_sends, w.complaint_rate) == (0, None)
    assert judge(Limits(min_volume=1), [w]).level is Level.OK


def test_the_fixture_window_shows_both_numbers() -> None:
    agg = aggregate_bytes(NDJSON)
    buckets = {hour: c for (pid, hour), c in agg.counts().items() if pid == "shop"}
    now = H11 + timedelta(minutes=59)
    [day] = compute_windows(buckets, now, [24])
    # 18 sent - 2 suppressed = 16 judged; 3 hard bounces, 2 complaints
    assert (day.sent, day.suppressed, day.judged_sends) == (18, 2, 16)
    assert day.bounce_rate == pytest.approx(3 / 16)
    assert day.complaint_rate == pytest.approx(2 / 16)
    assert day.as_json()["judged_sends"] == 16 and day.as_json()["suppressed"] == 2


# ---- end to end: the worker against moto -----------------------------------------------


def shifted(data: bytes, day: datetime) -> bytes:
    """The fixture moved to `day` (its own date is long outside any window)."""
    return data.replace(b"2026-03-02T", day.strftime("%Y-%m-%dT").encode())


async def test_end_to_end_through_the_worker(clients: Any, settings: Any) -> None:
    await bootstrap(clients, settings, ["shop.example.net"])
    store = PartnerStore.from_settings(clients.dynamodb, settings)
    await store.create(Profile("shop", "ops@shop.example.net", Limits(min_volume=10)))
    bucket = settings.bucket_name(await clients.account_id())
    day = utcnow() - timedelta(days=1)
    stamp = day.strftime("%Y/%m/%d/%H")
    await clients.s3.put_object(
        Bucket=bucket, Key=f"{stamp}/sesguard-1-a", Body=shifted(NDJSON, day)
    )
    await clients.s3.put_object(
        Bucket=bucket,
        Key=f"{stamp}/sesguard-1-b.gz",
        Body=gzip.compress(shifted(CONCATENATED, day)),
    )

    with capture_logs() as logs:
        assert await WorkerService(clients, settings).run(drain=True) == 0

    # The same records in two objects (Firehose delivers at least once): counted once.
    once = {**SHOP_H10, **SHOP_H11}
    once["delivered"] = SHOP_H10["delivered"] + SHOP_H11["delivered"]
    shop = await store.get_state("shop")
    assert shop.totals.nonzero() == once
    assert (await store.get_state("mixed")).totals.nonzero() == MIXED_H10
    assert (await store.get_state(UNATTRIBUTED)).totals.nonzero() == UNATTRIBUTED_H10
    processed = [e for e in logs if e["event"] == "object_processed"]
    assert sorted(e["duplicates"] for e in processed) == [0, processed[0]["events"]]

    # The wrong pipeline: loud, once per object (not once per record), and counted.
    wrong = [e for e in logs if e["event"] == "wrong_pipeline"]
    assert len(wrong) == 2 and {e["records"] for e in wrong} == {WRONG}
    assert all(e["log_level"] == "error" and e["problem"] == WRONG_PIPELINE for e in wrong)
    processed = [e for e in logs if e["event"] == "object_processed"]
    assert [e["wrong_pipeline"] for e in processed] == [WRONG, WRONG]
    final = [e for e in logs if e["event"] == "worker_stopped"]
    assert [e["wrong_pipeline"] for e in final] == [2 * WRONG]  # the service's own counter
    assert [e["simulator_recipients"] for e in processed] == [SIMULATOR_APART] * 2

    # Item 1 where the operator sees it: both numbers, and the rate SES would compute.
    # Counted once: 18 sent - 2 suppressed = 16 judged; 3 hard bounces -> 18.75%.
    profile = shop.profile
    assert profile is not None and profile.paused
    assert "bounce rate 18.75%" in (profile.paused_reason or "")
    assert "(16 sent, not counting 2 suppressed)" in (profile.paused_reason or "")
    report = partner_json(shop, 0, utcnow(), settings.window_hours, Limits())
    week = report["windows"][-1]
    assert (week["sent"], week["suppressed"], week["judged_sends"]) == (18, 2, 16)
    assert week["bounce_rate"] == pytest.approx(3 / 16)
    text = partner_text(report)
    assert "SUPPRESSED" in text and "JUDGED SENDS" in text
    assert "simulator_sent" not in text  # shop has no simulator mail
    mixed_text = partner_text(
        partner_json(await store.get_state("mixed"), 0, utcnow(), settings.window_hours, Limits())
    )
    assert re.search(r"^simulator_sent +4$", mixed_text, re.M), mixed_text


async def test_end_to_end_simulator_mail_counted_when_asked(clients: Any, settings: Any) -> None:
    await bootstrap(clients, settings, [])
    bucket = settings.bucket_name(await clients.account_id())
    day = utcnow() - timedelta(days=1)
    await clients.s3.put_object(Bucket=bucket, Key="2026/x/obj", Body=shifted(NDJSON, day))
    asked = load_settings(count_simulator_mail=True)
    assert await WorkerService(clients, asked).run(drain=True) == 0
    store = PartnerStore.from_settings(clients.dynamodb, settings)
    assert (await store.get_state("mixed")).totals.nonzero() == MIXED_COUNTED
