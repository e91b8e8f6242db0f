"""Partner lifecycle events on moto's EventBridge, delivered by a rule to an SQS queue.

The rule is the one docs/operating.md shows an ISV (read from that file); every detail
that arrives is validated against its shipped JSON Schema.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from structlog.testing import capture_logs

from sesguard.aws import lifecycle
from sesguard.aws import table as t
from sesguard.aws.held import HeldJobs, discard_held, replay_held
from sesguard.aws.lifecycle import DetailType, LifecycleEvent, Publisher, partner_history
from sesguard.aws.store import PartnerStore
from sesguard.core.jobs import parse_job
from sesguard.core.partners import Counters, Limits, PausedBy, Profile, Status, Throttle, utcnow
from sesguard.core.policy import evaluate
from tests.conftest import drain_queue, sent_emails
from tests.domain.support import (
    answer,
    change_partner,
    enforcer_for,
    gate_for,
    note_warnings,
    pause_partner,
    resume_partner,
)
from tests.fault_hooks import Fault, inject

OPERATING = (Path(__file__).resolve().parents[2] / "docs" / "operating.md").read_text()
NOTIFY_FROM = "guard@isv.example.com"


def isv_rule_pattern() -> dict[str, Any]:
    """The event pattern docs/operating.md tells an ISV to write."""
    match = re.search(r"<!-- isv-rule-pattern.*?-->\s*```json\n(.*?)```", OPERATING, re.S)
    assert match, "docs/operating.md lost its rule pattern"
    pattern: dict[str, Any] = json.loads(match.group(1))
    return pattern


ALL_KINDS = {"source": ["sesguard"]}


async def rule_to_queue(clients: Any, pattern: dict[str, Any], bus: str = "default") -> str:
    """An EventBridge rule with `pattern` whose target is a new SQS queue; its URL."""
    name = f"lifecycle-{uuid.uuid4().hex[:8]}"
    url = (await clients.sqs.create_queue(QueueName=name))["QueueUrl"]
    arn = (await clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    await clients.events.put_rule(Name=name, EventPattern=json.dumps(pattern), EventBusName=bus)
    await clients.events.put_targets(
        Rule=name, EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn}]
    )
    return str(url)


def valid(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope's detail, after checking it against its detail type's schema."""
    assert envelope["source"] == "sesguard"
    kind = lifecycle.parse_detail_type(envelope["detail-type"])
    schema = lifecycle.schema(kind)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = [e.message for e in validator.iter_errors(envelope["detail"])]
    assert errors == [], (kind, envelope["detail"])
    detail: dict[str, Any] = envelope["detail"]
    return detail


async def delivered(clients: Any, url: str) -> list[dict[str, Any]]:
    """Every event the rule delivered so far, each detail validated against its schema."""
    envelopes = await drain_queue(clients, url)
    for envelope in envelopes:
        valid(envelope)
    return envelopes


async def outbox(clients: Any, table: str) -> list[dict[str, Any]]:
    resp = await clients.dynamodb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": t.OUTBOX_PK}},
        ConsistentRead=True,
    )
    return list(resp.get("Items", []))


async def partner(store: PartnerStore, clients: Any, pid: str = "acme", **limits: Any) -> None:
    await clients.sesv2.create_email_identity(EmailIdentity="isv.example.com")
    await store.create(Profile(pid, f"ops@{pid}.example.com", Limits(**limits)))


def publisher_of(clients: Any, settings: Any) -> Publisher:
    async def no_wait(_s: float) -> None:
        return None

    pub = Publisher.from_clients(clients, settings)
    pub.sleep = no_wait
    return pub


@pytest.fixture
def pub(clients: Any, settings: Any) -> Publisher:
    return publisher_of(clients, settings)


# ---- pauses --------------------------------------------------------------------------


async def test_twenty_racing_pauses_publish_one_event_through_the_isv_rule(
    store: PartnerStore, clients: Any, settings: Any, pub: Publisher, moto_endpoint: str
) -> None:
    await partner(store, clients)
    url = await rule_to_queue(clients, isv_rule_pattern())
    now = utcnow()
    state_counts = Counters(sent=400, hard_bounces=33)
    await store.add_counts("acme", now, state_counts)
    state = await store.get_state("acme", now)
    assert state.profile is not None
    verdict = evaluate(state.profile.limits, state.buckets, now)

    outcomes = await asyncio.gather(
        *(
            pause_partner(
                store,
                clients.sesv2,
                "acme",
                verdict.reason,
                PausedBy.POLICY,
                NOTIFY_FROM,
                verdict.first,
                now=now,
                publisher=pub,
            )
            for _ in range(20)
        )
    )
    assert sum(o.won for o in outcomes) == 1
    (envelope,) = await delivered(clients, url)  # the 19 losers published nothing
    assert envelope["detail-type"] == "Partner Paused"
    detail = envelope["detail"]
    assert detail["partner_id"] == "acme" and detail["actor"] == "policy"
    assert detail["status"] == "paused" and detail["reason"] == verdict.reason
    assert (detail["metric"], detail["window_hours"]) == ("bounce_rate", 24)
    assert (detail["sent"], detail["hard_bounces"], detail["complaints"]) == (400, 33, 0)
    assert detail["rate"] == pytest.approx(33 / 400) and detail["limit"] == 0.05

    # One history item, the same event; nothing left in the outbox; one notice.
    (event,) = await partner_history(clients.dynamodb, store.table, "acme", now - timedelta(1))
    assert event.event_id == detail["event_id"] and event.detail == detail
    assert await outbox(clients, store.table) == []
    assert [m["subject"] for m in sent_emails(moto_endpoint)] == ["Sending paused for acme"]


async def test_a_pause_that_loses_writes_and_publishes_nothing(
    store: PartnerStore, clients: Any, pub: Publisher
) -> None:
    await partner(store, clients)
    url = await rule_to_queue(clients, ALL_KINDS)
    first = await pause_partner(
        store, clients.sesv2, "acme", "by hand", PausedBy.OPERATOR, None, publisher=pub
    )
    again = await pause_partner(
        store, clients.sesv2, "acme", "again", PausedBy.OPERATOR, None, publisher=pub
    )
    assert first.won and not again.won
    (envelope,) = await delivered(clients, url)
    assert envelope["detail"]["reason"] == "by hand" and envelope["detail"]["actor"] == "operator"
    assert "metric" not in envelope["detail"]  # an operator's pause has no rate: absent
    history = await partner_history(clients.dynamodb, store.table, "acme", utcnow() - timedelta(1))
    assert [e.detail_type for e in history] == [DetailType.PAUSED]


async def test_a_failed_publish_keeps_the_pause_and_the_sweep_republishes_the_same_event(
    store: PartnerStore, clients: Any, pub: Publisher, moto_endpoint: str
) -> None:
    await partner(store, clients)
    url = await rule_to_queue(clients, isv_rule_pattern())
    with (
        capture_logs() as logs,
        inject(clients.events, "PutEvents", Fault(500, "InternalException")) as fault,
    ):
        outcome = await pause_partner(
            store, clients.sesv2, "acme", "too many bounces", PausedBy.POLICY, NOTIFY_FROM,
            publisher=pub,
        )  # fmt: skip
    assert fault.calls >= 1  # the SDK's own retries (if any) failed too
    assert outcome.won and outcome.notice_id  # the pause and the notice stand
    assert (await store.require_profile("acme")).status is Status.PAUSED
    (failed,) = [e for e in logs if e["event"] == "lifecycle_publish_failed"]
    assert failed["log_level"] == "error" and "InternalException" in failed["error"]
    assert await delivered(clients, url) == []
    (leftover,) = await outbox(clients, store.table)

    assert await pub.sweep() == 0  # too young: its own publisher may still be retrying
    pub.sweep_min_age = timedelta(0)
    assert await pub.sweep() == 1
    (envelope,) = await delivered(clients, url)
    (recorded,) = await partner_history(
        clients.dynamodb, store.table, "acme", utcnow() - timedelta(1)
    )
    assert envelope["detail"]["event_id"] == recorded.event_id == leftover["event_id"]["S"]
    assert await outbox(clients, store.table) == []
    assert await pub.sweep() == 0  # published once; nothing more to do


async def test_entries_eventbridge_refuses_are_retried_then_left_to_the_sweep(
    store: PartnerStore, clients: Any, pub: Publisher
) -> None:
    """PutEvents answers 200 with FailedEntryCount: retried in place, then kept."""
    await partner(store, clients)
    url = await rule_to_queue(clients, ALL_KINDS)
    refusals = 0

    def refuse(**_: Any) -> Any:
        nonlocal refusals
        refusals += 1
        ok = SimpleNamespace(status_code=200, headers={})
        return ok, {
            "FailedEntryCount": 1,
            "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "injected"}],
        }

    hooks = clients.events.meta.events
    hooks.register("before-call.events.PutEvents", refuse, unique_id="refuse")
    try:
        assert await pause_partner(
            store, clients.sesv2, "acme", "r", PausedBy.OPERATOR, None, publisher=pub
        )
    finally:
        hooks.unregister("before-call.events.PutEvents", unique_id="refuse")
    assert refusals == pub.attempts == 3
    assert len(await outbox(clients, store.table)) == 1
    pub.sweep_min_age = timedelta(0)
    assert await pub.sweep() == 1
    (envelope,) = await delivered(clients, url)
    assert envelope["detail-type"] == "Partner Paused"


async def test_a_transaction_conflict_is_retried_and_the_pause_still_happens_once(
    store: PartnerStore, clients: Any, pub: Publisher
) -> None:
    """Real DynamoDB cancels a transaction that collides with another on the same item
    (moto serialises them, so the answer is injected): retried, not taken as lost."""
    await partner(store, clients)
    url = await rule_to_queue(clients, ALL_KINDS)
    conflicts = 0

    def conflict(**_: Any) -> Any:
        nonlocal conflicts
        if conflicts == 2:
            return None  # then let it through to moto
        conflicts += 1
        reasons = [{"Code": "None"}, {"Code": "TransactionConflict"}, {"Code": "None"}]
        return SimpleNamespace(status_code=400, headers={}), {
            "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
            "CancellationReasons": reasons,
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }

    hooks = clients.dynamodb.meta.events
    hooks.register("before-call.dynamodb.TransactWriteItems", conflict, unique_id="conflict")
    try:
        outcome = await pause_partner(
            store, clients.sesv2, "acme", "r", PausedBy.OPERATOR, None, publisher=pub
        )
    finally:
        hooks.unregister("before-call.dynamodb.TransactWriteItems", unique_id="conflict")
    assert outcome.won and conflicts == 2
    (envelope,) = await delivered(clients, url)
    assert envelope["detail-type"] == "Partner Paused"


async def test_the_worker_service_sweeps_what_a_dead_publisher_left(
    store: PartnerStore, clients: Any, settings: Any
) -> None:
    """A pause recorded without publishing (its process died): the worker publishes it."""
    from sesguard.ops.bootstrap import Report, ensure_queues
    from worker.service import WorkerService

    await partner(store, clients)
    await ensure_queues(clients, settings, Report())
    url = await rule_to_queue(clients, ALL_KINDS)
    assert await store.try_pause("acme", "crashed before publishing", PausedBy.OPERATOR)
    service = WorkerService(clients, settings)
    service.publisher.sweep_min_age = timedelta(0)
    assert await service.run(drain=True) == 0
    (envelope,) = await delivered(clients, url)
    assert envelope["detail"]["reason"] == "crashed before publishing"
    assert await outbox(clients, store.table) == []


async def test_the_senders_gate_publishes_the_pause_it_makes(
    store: PartnerStore, clients: Any, settings: Any, pub: Publisher
) -> None:

    await partner(store, clients, min_volume=10)
    url = await rule_to_queue(clients, ALL_KINDS)
    await store.add_counts("acme", utcnow(), Counters(sent=100, hard_bounces=10))
    gates = [gate_for(store, clients.sesv2, settings, publisher=pub) for _ in range(4)]
    decisions = await asyncio.gather(*(g.check("acme") for g in gates))
    assert {answer(d) for d in decisions} == {"hold"}
    (envelope,) = await delivered(clients, url)
    assert envelope["detail-type"] == "Partner Paused"
    assert envelope["detail"]["hard_bounces"] == 10


# ---- warnings ------------------------------------------------------------------------


async def test_warned_once_per_crossing_across_two_enforcers_and_a_gate(
    store: PartnerStore, clients: Any, settings: Any, pub: Publisher
) -> None:
    """3% bounces against a 5% limit (warn at 2.5%) on both windows: one Partner Warned
    per window, however many tasks judge it and how often; again after it cleared."""
    from sesguard.domain.judgement import Enforcement

    await partner(store, clients, min_volume=10)
    url = await rule_to_queue(clients, {"source": ["sesguard"], "detail-type": ["Partner Warned"]})
    now = utcnow()
    await store.add_counts("acme", now, Counters(sent=100, hard_bounces=3))
    enforcers = [enforcer_for(store, clients.sesv2, settings, publisher=pub) for _ in range(2)]
    gate = gate_for(store, clients.sesv2, settings, publisher=pub, now=lambda: now)
    for _round in range(3):
        outcomes = await asyncio.gather(
            *(e.check("acme", now) for e in enforcers for _ in range(5)), gate.check("acme")
        )
        gate.invalidate("acme")
        assert set(outcomes[:-1]) == {Enforcement.WARN}
    envelopes = await delivered(clients, url)
    windows = sorted(e["detail"]["window_hours"] for e in envelopes)
    assert windows == [24, 168]
    for envelope in envelopes:
        d = envelope["detail"]
        assert (d["metric"], d["actor"], d["status"]) == ("bounce_rate", "policy", "active")
        assert (d["sent"], d["hard_bounces"], d["warn_ratio"]) == (100, 3, 0.5)
        assert "near limit" in d["reason"]
    profile = await store.require_profile("acme")
    assert set(profile.warned) == {"bounce_rate:24", "bounce_rate:168"}

    # It clears (many more good sends), then crosses again: warned again, once.
    await store.add_counts("acme", now, Counters(sent=900))
    assert {await e.check("acme", now) for e in enforcers} == {Enforcement.OK}
    assert (await store.require_profile("acme")).warned == {}
    await store.add_counts("acme", now, Counters(hard_bounces=30))
    await asyncio.gather(*(e.check("acme", now) for e in enforcers for _ in range(3)))
    again = await delivered(clients, url)
    assert sorted(e["detail"]["window_hours"] for e in again) == [24, 168]
    assert {e["detail"]["event_id"] for e in again}.isdisjoint(
        {e["detail"]["event_id"] for e in envelopes}
    )


async def test_a_stale_clear_does_not_remove_a_mark_set_after_it_was_read(
    store: PartnerStore, clients: Any, pub: Publisher
) -> None:
    await partner(store, clients, min_volume=10)
    now = utcnow()
    await store.add_counts("acme", now, Counters(sent=100, hard_bounces=3))
    state = await store.get_state("acme", now)
    assert state.profile is not None
    verdict = evaluate(state.profile.limits, state.buckets, now)
    assert await note_warnings(store, pub, state.profile, verdict, now)
    marks = dict((await store.require_profile("acme")).warned)
    assert not await store.clear_warning("acme", "bounce_rate:24", "2000-01-01T00:00:00.000Z")
    assert (await store.require_profile("acme")).warned == marks


async def test_a_pause_verdict_warns_nothing_and_resume_forgets_the_marks(
    store: PartnerStore, clients: Any, pub: Publisher
) -> None:
    await partner(store, clients, min_volume=10)
    url = await rule_to_queue(clients, ALL_KINDS)
    now = utcnow()
    await store.add_counts("acme", now, Counters(sent=100, hard_bounces=3))
    state = await store.get_state("acme", now)
    assert state.profile is not None
    await note_warnings(
        store, pub, state.profile, evaluate(state.profile.limits, state.buckets, now)
    )
    await store.add_counts("acme", now, Counters(hard_bounces=20))
    state = await store.get_state("acme", now)
    assert state.profile is not None
    verdict = evaluate(state.profile.limits, state.buckets, now)
    assert await note_warnings(store, pub, state.profile, verdict, now) == []
    assert len(state.profile.warned) == 2  # a pause verdict leaves the marks alone
    await pause_partner(store, clients.sesv2, "acme", verdict.reason, PausedBy.POLICY, None,
                        verdict.first, now=now, publisher=pub)  # fmt: skip
    assert await resume_partner(store, pub, "acme")
    assert (await store.require_profile("acme")).warned == {}
    kinds = [e["detail-type"] for e in await delivered(clients, url)]
    assert sorted(kinds) == sorted(["Partner Warned"] * 2 + ["Partner Paused", "Partner Resumed"])


# ---- operator actions ----------------------------------------------------------------


async def test_resume_replay_discard_and_limits_each_publish_once_with_counts_and_actor(
    store: PartnerStore, clients: Any, settings: Any, pub: Publisher
) -> None:
    from sesguard.ops.bootstrap import Report, ensure_queues

    await partner(store, clients)
    await ensure_queues(clients, settings, Report())
    url = await rule_to_queue(clients, ALL_KINDS)
    held = HeldJobs.from_clients(clients, settings)

    async def hold(n: int) -> None:
        for i in range(n):
            job = parse_job(
                {
                    "job_id": f"j-{uuid.uuid4().hex[:6]}-{i}",
                    "partner_id": "acme",
                    "from": "news@isv.example.com",
                    "to": ["ana@example.org"],
                    "subject": "Hi",
                    "text": "Hi",
                }
            )
            await held.hold(job, datetime.now(UTC) + timedelta(microseconds=i))

    await pause_partner(store, clients.sesv2, "acme", "hold on", PausedBy.OPERATOR, None,
                        publisher=pub)  # fmt: skip
    await hold(3)
    resumed = await asyncio.gather(*(resume_partner(store, pub, "acme") for _ in range(5)))
    assert sum(resumed) == 1
    assert (await replay_held(clients, settings, "acme", settle=False)).replayed == 3
    assert (await replay_held(clients, settings, "acme", settle=False)).replayed == 0
    await pause_partner(store, clients.sesv2, "acme", "again", PausedBy.OPERATOR, None,
                        publisher=pub)  # fmt: skip
    await hold(2)
    assert await resume_partner(store, pub, "acme")
    assert (await discard_held(clients, settings, "acme", settle=False)).discarded == 2

    await change_partner(store, pub, "acme", bounce_limit=0.02, min_volume=50)
    await change_partner(store, pub, "acme", bounce_limit=0.02)  # no change: no event
    await change_partner(store, pub, "acme", contact_email="new@acme.example.com")  # not a limit

    got = [(e["detail-type"], e["detail"]) for e in await delivered(clients, url)]
    # In the order they happened (EventBridge does not promise to deliver them so).
    happened = [
        "Partner Paused",
        "Partner Resumed",
        "Held Jobs Replayed",
        "Partner Paused",
        "Partner Resumed",
        "Held Jobs Discarded",
        "Partner Limits Changed",
    ]
    assert sorted(k for k, _ in got) == sorted(happened)
    by_kind = {k: d for k, d in got}
    assert by_kind["Held Jobs Replayed"]["count"] == 3
    assert by_kind["Held Jobs Discarded"]["count"] == 2
    assert "status" not in by_kind["Held Jobs Discarded"]
    limits = by_kind["Partner Limits Changed"]
    no_caps = {"max_rate": None, "daily_quota": None}  # the throttle: no cap
    assert limits["previous_limits"] == {**Limits().as_json(), **no_caps}
    assert limits["limits"] == {
        **Limits().as_json(),
        "bounce_rate": 0.02,
        "min_volume": 50,
        **no_caps,
    }
    assert limits["status"] == "active"
    assert {d["actor"] for _, d in got} == {"operator"}
    assert by_kind["Partner Resumed"]["status"] == "active"

    # The history has them all, oldest first; the gate's Query on P#acme reads none.
    since = utcnow() - timedelta(hours=1)
    history = await partner_history(clients.dynamodb, store.table, "acme", since)
    assert [str(e.detail_type) for e in history] == happened
    assert [e.detail for e in history] == sorted(
        (d for _, d in got), key=lambda d: d["occurred_at"]
    )
    assert await partner_history(clients.dynamodb, store.table, "acme", utcnow()) == []
    gate_query = await clients.dynamodb.query(
        TableName=store.table,
        KeyConditionExpression="pk = :pk AND sk >= :from",
        ExpressionAttributeValues={":pk": {"S": "P#acme"}, ":from": {"S": "B#"}},
    )
    assert not any("event_id" in item for item in gate_query["Items"])
    assert await outbox(clients, store.table) == []


async def test_history_items_expire_after_the_longest_window_at_the_earliest(
    store: PartnerStore, clients: Any, pub: Publisher
) -> None:
    await partner(store, clients)
    now = utcnow()
    await pause_partner(store, clients.sesv2, "acme", "r", PausedBy.OPERATOR, None, now=now,
                        publisher=pub)  # fmt: skip
    resp = await clients.dynamodb.query(
        TableName=store.table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": t.event_pk("acme")}},
    )
    (item,) = resp["Items"]
    expires = int(item[t.TTL_ATTRIBUTE]["N"])
    longest = max(store.window_hours)
    assert expires >= (now + timedelta(hours=longest)).timestamp() - 1
    assert abs(expires - (now + timedelta(days=store.retention_days)).timestamp()) < 2


# ---- schemas and the CLI -------------------------------------------------------------


def _maximal_events() -> dict[DetailType, LifecycleEvent]:
    """One event of each kind, with every field the code can put in it."""
    from sesguard.core.policy import Finding, Level

    now = utcnow()
    finding = Finding(Level.PAUSE, "complaint_rate", 168, 0.002, 0.001, 5000, 12, 40, 10)
    warn = Finding(Level.WARN, "bounce_rate", 24, 0.03, 0.05, 400, 0, 12, 0)
    return {
        DetailType.WARNED: lifecycle.warned("acme", warn, 0.5, now),
        DetailType.PAUSED: lifecycle.paused("acme", finding.reason, PausedBy.POLICY, now, finding),
        DetailType.RESUMED: lifecycle.resumed("acme", now),
        DetailType.REPLAYED: lifecycle.held_released(DetailType.REPLAYED, "acme", 3, now),
        DetailType.DISCARDED: lifecycle.held_released(DetailType.DISCARDED, "acme", 2, now),
        DetailType.LIMITS_CHANGED: lifecycle.limits_changed(
            "acme",
            Limits(),
            Limits(bounce_rate=0.02),
            Status.PAUSED,
            now,
            previous_throttle=Throttle(None, 500),
            throttle=Throttle(2.5, None),
        ),
        DetailType.QUOTA_REACHED: lifecycle.quota_reached("acme", "2026-12-06", 500, now),
        DetailType.QUOTA_RELEASED: lifecycle.quota_released(
            "acme", "2026-12-06", 1000, "quota raised", now
        ),
    }


def test_each_schema_describes_exactly_what_its_kind_carries() -> None:
    events = _maximal_events()
    assert set(events) == set(DetailType)
    common = None
    for kind, event in events.items():
        schema = lifecycle.schema(kind)
        assert schema["title"].startswith(kind.value)
        valid({"source": "sesguard", "detail-type": kind.value, "detail": event.detail})
        assert set(event.detail) == set(schema["properties"]), kind
        shared = {k: schema["properties"][k] for k in ("schema_version", "event_id", "partner_id")}
        common = common or shared
        assert shared == common  # the same words for the same fields in every file
    # An operator's pause carries no rate fields; a policy pause with them has all of them.
    op = lifecycle.paused("acme", "r", PausedBy.OPERATOR, utcnow())
    valid({"source": "sesguard", "detail-type": "Partner Paused", "detail": op.detail})
    half = {**events[DetailType.PAUSED].detail}
    del half["hard_bounces"]
    validator = Draft202012Validator(lifecycle.schema(DetailType.PAUSED))
    assert not validator.is_valid(half)
    assert not validator.is_valid({**op.detail, "metric": None})  # absent, never null


def test_events_schema_command_prints_one_or_all() -> None:
    from tests.conftest import cli, one_line_error

    everything = cli("events", "schema")
    assert everything.code == 0, everything.err
    assert json.loads(everything.out) == lifecycle.schemas()
    for name in ("Partner Paused", "partner-paused", "PARTNER PAUSED"):
        one = cli("events", "schema", name)
        assert one.code == 0 and json.loads(one.out) == lifecycle.schema(DetailType.PAUSED)
    one_line_error(cli("events", "schema", "Partner Exploded"), 2, "unknown event type")


async def test_cli_commands_publish_and_events_history_reads_them_back(
    clients: Any, settings: Any
) -> None:
    from sesguard.ops.bootstrap import bootstrap
    from tests.conftest import cli, one_line_error

    await bootstrap(clients, settings, ["isv.example.com"])
    url = await rule_to_queue(clients, ALL_KINDS)
    assert cli("partners", "add", "acme", "--contact", "ops@acme.example.com").code == 0
    assert cli("partners", "set", "acme", "--bounce-limit", "0.02").code == 0
    assert cli("partners", "pause", "acme", "--reason", "checking", "--no-notify").code == 0
    held = HeldJobs.from_clients(clients, settings)
    for i in range(2):
        job = {"partner_id": "acme", "from": "a@isv.example.com", "to": ["b@example.org"]}
        await held.hold(parse_job({**job, "subject": "s", "text": "t", "job_id": f"h{i}"}))
    r = cli("partners", "resume", "acme", "--discard", SESGUARD_GATE_CACHE_SECONDS="0")
    assert r.code == 0, r.err

    envelopes = await delivered(clients, url)
    details = sorted((e["detail"] for e in envelopes), key=lambda d: d["occurred_at"])
    kinds = {e["detail"]["event_id"]: e["detail-type"] for e in envelopes}
    assert [kinds[d["event_id"]] for d in details] == [
        "Partner Limits Changed",
        "Partner Paused",
        "Partner Resumed",
        "Held Jobs Discarded",
    ]
    assert details[3]["count"] == 2 and details[1]["reason"] == "checking"
    assert {d["actor"] for d in details} == {"operator"}
    assert await outbox(clients, settings.table) == []

    history = cli("events", "history", "acme", "--json")
    assert history.code == 0, history.err
    # Each detail as published, with its detail-type (Held Jobs Replayed and Discarded
    # carry the same fields: only the type tells them apart).
    assert json.loads(history.out) == [{"detail-type": kinds[d["event_id"]], **d} for d in details]
    text = cli("events", "history", "acme", "--hours", "1")
    lines = text.out.strip().splitlines()
    assert len(lines) == 4 and "Partner Paused" in lines[1] and "checking" in lines[1]
    assert "bounce_rate=0.02" in lines[0] and "max_rate=none daily_quota=none" in lines[0]
    assert "2 jobs" in lines[3]
    one_line_error(cli("events", "history", "_unattributed"), 2, "reserved")
    one_line_error(cli("events", "history", "acme", "--hours", "0"), 2, "--hours")


async def test_a_replay_that_fails_part_way_reports_what_it_moved(
    store: PartnerStore, clients: Any, settings: Any
) -> None:
    import orjson

    from sesguard.aws.held import HeldError
    from sesguard.ops.bootstrap import Report, ensure_queues

    await partner(store, clients)
    await ensure_queues(clients, settings, Report())
    url = await rule_to_queue(clients, ALL_KINDS)
    held = HeldJobs.from_clients(clients, settings)
    for n in range(3):
        job = {"partner_id": "acme", "from": "a@isv.example.com", "to": ["b@example.org"]}
        await held.hold(parse_job({**job, "subject": "s", "text": "t", "job_id": f"job-{n}"}))

    def refuse_one(params: dict[str, Any], **_: Any) -> None:
        for entry in params["Entries"]:
            if orjson.loads(entry["MessageBody"])["job_id"] == "job-0":
                entry["DelaySeconds"] = 901  # SQS refuses this entry (SenderFault)

    hooks = clients.sqs.meta.events
    hooks.register("provide-client-params.sqs.SendMessageBatch", refuse_one, unique_id="r1")
    try:
        with pytest.raises(HeldError):
            await replay_held(clients, settings, "acme", settle=False)
    finally:
        hooks.unregister("provide-client-params.sqs.SendMessageBatch", unique_id="r1")
    (envelope,) = await delivered(clients, url)
    assert envelope["detail-type"] == "Held Jobs Replayed"
    assert envelope["detail"]["count"] == 2
