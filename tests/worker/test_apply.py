"""Each event counted once against DynamoDB (moto server): repeats in one object and across
objects, redeliveries, races between workers, crashes and lost answers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sesguard.aws.seen import Seen, read_seen, seen_pk, ses_accepted
from sesguard.aws.store import PartnerStore
from sesguard.core.partners import Counters
from tests.fixtures.ses_events import event
from worker.aggregate import Aggregator, Minute
from worker.apply import MAX_TRANSACT_ITEMS, Applier, Known, plan_chunks, transaction_items
from worker.classify import classify

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
HOUR = NOW.replace(minute=0)


def minutes_of(records: list[dict[str, Any]]) -> list[Minute]:
    agg = Aggregator()
    for i, r in enumerate(records):
        agg.add(i, r)
    return agg.take()


def sends(partners: int, per_partner: int = 2, minutes: int = 1) -> list[dict[str, Any]]:
    return [
        event("Send", f"p{p:03d}", NOW + timedelta(minutes=m))
        for p in range(partners)
        for m in range(minutes)
        for _ in range(per_partner)
    ]


async def totals(store: PartnerStore, pid: str) -> Counters:
    return (await store.get_state(pid, NOW)).totals


async def apply(store: PartnerStore, records: list[dict[str, Any]], url: str = "s3://b/k") -> Any:
    applier = Applier(store, url)
    await applier.apply(minutes_of(records), NOW)
    return applier.result


def test_chunks_respect_the_transaction_limit() -> None:
    from worker.apply import Unit

    units = [Unit(m, Seen(), dict(m.events), []) for m in minutes_of(sends(150, minutes=2))]
    store = PartnerStore(object(), "sesguard")
    chunks = plan_chunks(units)
    assert sum(len(c) for c in chunks) == 300
    for chunk in chunks:
        assert len(transaction_items(store, chunk, "s3://b/k", NOW)) <= MAX_TRANSACT_ITEMS
    # A partner's two minutes share its bucket and totals: 2 versions + 2 parts + 2 = 6.
    assert len(transaction_items(store, chunks[0][:2], "s3://b/k", NOW)) == 6


async def test_the_same_events_twice_count_once(store: PartnerStore) -> None:
    records = [event("Send", "acme", NOW, recipients=2), event("Bounce", "acme", NOW)]
    first = await apply(store, records, "s3://b/one")
    assert (first.counted, first.duplicates, first.transactions) == (2, 0, 1)
    again = await apply(store, records, "s3://b/two")  # another object, same records
    assert (again.counted, again.duplicates, again.transactions) == (0, 2, 0)
    assert (await totals(store, "acme")).nonzero() == {"sent": 2, "hard_bounces": 1}


async def test_a_repeat_within_one_object_counts_once() -> None:
    bounce = event("Bounce", "acme", NOW)
    agg = Aggregator()
    for i, r in enumerate([bounce, event("Send", "acme", NOW), bounce]):
        agg.add(i, r)
    assert agg.stats.duplicates == 1
    assert agg.counts()[("acme", HOUR)].hard_bounces == 1


async def test_a_repeat_after_its_first_was_written_counts_once(store: PartnerStore) -> None:
    """The object's events are written in batches: a repeat in a later batch of the same
    object finds the first counted."""
    bounce = event("Bounce", "acme", NOW)
    applier = Applier(store, "s3://b/k")
    await applier.apply(minutes_of([bounce]), NOW)
    await applier.apply(minutes_of([bounce, event("Send", "acme", NOW)]), NOW)
    assert (applier.result.counted, applier.result.duplicates) == (2, 1)
    assert (await totals(store, "acme")).nonzero() == {"sent": 1, "hard_bounces": 1}


async def test_more_partner_minutes_than_one_transaction(store: PartnerStore) -> None:
    records = sends(120, minutes=2)
    result = await apply(store, records)
    assert result.transactions > 1 and result.counted == 480
    for p in (0, 60, 119):
        assert (await totals(store, f"p{p:03d}")).sent == 4
    again = await apply(store, records)
    assert (again.counted, again.transactions) == (0, 0)


class FailSecondTransaction:
    """A DynamoDB client whose second transaction never happens (the worker died)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.transactions = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def transact_write_items(self, **kwargs: Any) -> Any:
        self.transactions += 1
        if self.transactions == 2:
            raise ConnectionError("worker died")
        return await self.real.transact_write_items(**kwargs)


async def test_replay_after_a_crash_mid_object_completes_it_exactly(
    store: PartnerStore, clients: Any
) -> None:
    records = sends(120)
    flaky = PartnerStore(FailSecondTransaction(clients.dynamodb), store.table)
    with pytest.raises(ConnectionError):
        await apply(flaky, records)
    partial = sum([(await totals(store, f"p{p:03d}")).sent for p in range(120)])
    assert 0 < partial < 240
    result = await apply(store, records)  # the redelivery
    assert result.duplicates == partial and result.counted == 240 - partial
    for p in (0, 60, 119):
        assert (await totals(store, f"p{p:03d}")).sent == 2


class LoseFirstAnswer(FailSecondTransaction):
    """The first transaction commits, and its answer is lost (a 500 from the endpoint)."""

    async def transact_write_items(self, **kwargs: Any) -> Any:
        self.transactions += 1
        answer = await self.real.transact_write_items(**kwargs)
        if self.transactions == 1:
            raise ClientError(
                {
                    "Error": {"Code": "InternalServerError", "Message": "lost"},
                    "ResponseMetadata": {"HTTPStatusCode": 500},
                },  # type: ignore[typeddict-item]
                "TransactWriteItems",
            )
        return answer


async def test_a_committed_transaction_whose_answer_is_lost_counts_once(
    store: PartnerStore, clients: Any
) -> None:
    lossy = PartnerStore(LoseFirstAnswer(clients.dynamodb), store.table)
    result = await apply(lossy, sends(3))
    assert (await totals(store, "p000")).sent == 2
    assert result.transactions == 0 and result.duplicates == 6  # it found its own write


async def test_concurrent_workers_on_the_same_events_count_them_once(
    store: PartnerStore,
) -> None:
    records = [*sends(70), event("Bounce", "p000", NOW)]
    results = await asyncio.gather(*(apply(store, records, f"s3://b/{i}") for i in range(4)))
    assert sum(r.counted for r in results) == 141
    assert sum(r.duplicates for r in results) == 3 * 141
    for p in (0, 69):
        assert (await totals(store, f"p{p:03d}")).sent == 2
    assert (await totals(store, "p000")).hard_bounces == 1


class ConflictOnce:
    """A DynamoDB client whose first transaction meets a concurrent one (as on AWS)."""

    def __init__(self, real: Any, with_reasons: bool) -> None:
        self.real = real
        self.with_reasons = with_reasons
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def transact_write_items(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            n = len(kwargs["TransactItems"])
            codes = ["None"] * (n - 1) + ["TransactionConflict"]
            response: dict[str, Any] = {
                "Error": {
                    "Code": "TransactionCanceledException",
                    "Message": "Transaction cancelled, please refer cancellation reasons for"
                    f" specific reasons [{', '.join(codes)}]",
                }
            }
            if self.with_reasons:
                response["CancellationReasons"] = [{"Code": c} for c in codes]
            raise ClientError(response, "TransactWriteItems")  # type: ignore[arg-type]
        return await self.real.transact_write_items(**kwargs)


@pytest.mark.parametrize("with_reasons", [True, False])
async def test_transaction_conflict_is_retried(
    store: PartnerStore, clients: Any, with_reasons: bool
) -> None:
    conflicted = PartnerStore(ConflictOnce(clients.dynamodb, with_reasons), store.table)
    result = await apply(conflicted, [event("Send", "acme", NOW, recipients=3)])
    assert (result.transactions, result.retries) == (1, 1)
    assert (await totals(store, "acme")).sent == 3


async def test_a_rejected_transaction_is_not_retried(store: PartnerStore, clients: Any) -> None:
    class Rejecting(ConflictOnce):
        async def transact_write_items(self, **kwargs: Any) -> Any:
            self.calls += 1
            raise ClientError(
                {"Error": {"Code": "ValidationException", "Message": "no"}},  # type: ignore[typeddict-item]
                "TransactWriteItems",
            )

    rejecting = Rejecting(clients.dynamodb, True)
    with pytest.raises(ClientError):
        await apply(PartnerStore(rejecting, store.table), [event("Send", "a", NOW)])
    assert rejecting.calls == 1


async def test_send_events_record_the_jobs_ses_accepted(store: PartnerStore) -> None:
    """SES's word on a job, for the sender and the redrive: no read per Send event."""
    send = event("Send", "acme", NOW)
    send["mail"]["tags"]["sesguard_job"] = ["order_c42"]  # job "order:42", tag-escaped
    assert classify(send).job == "order:42"  # type: ignore[union-attr]
    await apply(store, [send, event("Send", "acme", NOW)])
    claimed = NOW - timedelta(seconds=5)
    assert await ses_accepted(store.dynamodb, store.table, "acme", "order:42", claimed, 60)
    assert not await ses_accepted(store.dynamodb, store.table, "acme", "order:43", claimed, 60)
    assert not await ses_accepted(store.dynamodb, store.table, "other", "order:42", claimed, 60)
    seen, _ = await read_seen(
        store.dynamodb, store.table, seen_pk("acme", NOW.strftime("%Y-%m-%dT%H:%M"))
    )
    assert (seen.parts, len(seen.keys), len(seen.jobs)) == (1, 2, 1)


async def test_a_job_sent_twice_is_reported(store: PartnerStore) -> None:
    first, second = event("Send", "acme", NOW), event("Send", "acme", NOW)
    for send in (first, second):
        send["mail"]["tags"]["sesguard_job"] = ["order_c42"]
    await apply(store, [first])
    result = await apply(store, [second], "s3://b/later")
    assert result.jobs_sent_twice == ["order:42"] and result.counted == 1


async def test_what_the_worker_knows_spares_reads_and_a_stale_guess_is_read_again(
    store: PartnerStore,
) -> None:
    """At steady state nothing is read; a partition another worker wrote since fails the
    write's condition and is read before anything is counted."""
    known = Known()
    first = [event("Send", "acme", NOW), event("Bounce", "acme", NOW)]
    mine = Applier(store, "s3://b/1", known)
    await mine.apply(minutes_of(first), NOW)
    later = [event("Delivery", "acme", NOW)]
    again = Applier(store, "s3://b/2", known)
    await again.apply(minutes_of([*first, *later]), NOW)  # repeats found in memory
    assert (again.result.reads, again.result.counted, again.result.duplicates) == (0, 1, 2)
    other = [event("Send", "acme", NOW)]
    await Applier(store, "s3://b/3").apply(minutes_of(other), NOW)  # another worker
    stale = Applier(store, "s3://b/4", known)
    await stale.apply(minutes_of([*other, event("Complaint", "acme", NOW)]), NOW)
    assert stale.result.reads > 0 and (stale.result.counted, stale.result.duplicates) == (1, 1)
    assert (await totals(store, "acme")).nonzero() == {
        "sent": 2,
        "hard_bounces": 1,
        "delivered": 1,
        "complaints": 1,
    }
