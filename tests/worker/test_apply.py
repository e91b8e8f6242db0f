"""Exactly-once apply against DynamoDB (moto server): chunks, markers, replays, races."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sesguard.aws import table as t
from sesguard.aws.store import PartnerStore
from sesguard.core.partners import Counters
from worker.apply import MAX_TRANSACT_ITEMS, apply_object, plan_chunks, transaction_items

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
HOUR = NOW.replace(minute=0)


def many_partner_hours(partners: int, hours: int = 1) -> dict[tuple[str, datetime], Counters]:
    return {
        (f"p{p:03d}", HOUR - timedelta(hours=h)): Counters(sent=10 + p, hard_bounces=h + 1)
        for p in range(partners)
        for h in range(hours)
    }


def test_chunks_respect_the_transaction_limit_and_are_deterministic() -> None:
    counts = many_partner_hours(60) | many_partner_hours(1, hours=150)
    chunks = plan_chunks(counts)
    assert len(chunks) > 2
    assert plan_chunks(dict(reversed(list(counts.items())))) == chunks  # order-independent
    cells = [(pid, hour) for c in chunks for pid, hour, _ in c.cells]
    assert sorted(cells) == sorted(counts) and len(set(cells)) == len(cells)
    store = PartnerStore(object(), "sesguard")
    for chunk in chunks:
        items = transaction_items(store, "b", "k", chunk, len(chunks), None, NOW)
        assert len(items) <= MAX_TRANSACT_ITEMS
        keys = [str(next(iter(i.values())).get("Key") or i["Put"]["Item"]["sk"]) for i in items]
        assert len(set(keys)) == len(keys)  # one operation per item, as DynamoDB requires


def test_empty_counters_need_no_transaction() -> None:
    assert plan_chunks({("p", HOUR): Counters()}) == []


async def table_totals(store: PartnerStore, pid: str) -> Counters:
    return (await store.get_state(pid, NOW)).totals


async def test_applying_twice_counts_once_and_moves_totals_with_buckets(store: Any) -> None:
    counts = {
        ("acme", HOUR): Counters(sent=5, hard_bounces=1),
        ("acme", HOUR - timedelta(hours=1)): Counters(sent=2),
    }
    first = await apply_object(store, "bucket", "2026/11/29/01/obj-1.gz", counts, etag="e1")
    assert (first.chunks, first.applied, first.already) == (1, 1, 0)
    again = await apply_object(store, "bucket", "2026/11/29/01/obj-1.gz", counts, etag="e1")
    assert (again.applied, again.already) == (0, 1) and again.all_already
    state = await store.get_state("acme", NOW)
    assert state.totals.nonzero() == {"sent": 7, "hard_bounces": 1}
    assert state.buckets[HOUR].nonzero() == {"sent": 5, "hard_bounces": 1}
    assert state.buckets[HOUR - timedelta(hours=1)].nonzero() == {"sent": 2}
    # A different object with the same counts is counted on its own.
    await apply_object(store, "bucket", "2026/11/29/01/obj-2.gz", counts)
    assert (await table_totals(store, "acme")).sent == 14


async def test_object_with_more_partner_hours_than_one_transaction(
    store: Any, clients: Any
) -> None:
    counts = many_partner_hours(60, hours=2)  # 120 partner-hours: several transactions
    result = await apply_object(store, "bucket", "big", counts)
    assert result.chunks >= 2 and result.applied == result.chunks
    for p in (0, 37, 59):
        assert (await table_totals(store, f"p{p:03d}")).nonzero() == {
            "sent": 2 * (10 + p),
            "hard_bounces": 3,
        }
    markers = await clients.dynamodb.query(
        TableName=store.table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": t.object_pk("bucket", "big")}},
    )
    assert markers["Count"] == result.chunks
    assert all("expires_at" in m for m in markers["Items"])
    again = await apply_object(store, "bucket", "big", counts)
    assert again.already == again.chunks
    assert (await table_totals(store, "p037")).sent == 2 * 47


class FailSecondTransaction:
    """A DynamoDB client that loses the 2nd transaction (a crash mid-object)."""

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
    store: Any, clients: Any
) -> None:
    counts = many_partner_hours(120)
    flaky = PartnerStore(FailSecondTransaction(clients.dynamodb), store.table)
    with pytest.raises(ConnectionError):
        await apply_object(flaky, "bucket", "crash", counts)
    partial = sum([(await table_totals(store, f"p{p:03d}")).sent for p in range(120)])
    assert 0 < partial < sum(c.sent for c in counts.values())
    result = await apply_object(store, "bucket", "crash", counts)  # the redelivery
    assert result.already == 1 and result.applied == result.chunks - 1
    for p in (0, 60, 119):
        assert (await table_totals(store, f"p{p:03d}")).sent == 10 + p


async def test_concurrent_workers_on_one_object_count_it_once(store: Any, clients: Any) -> None:
    counts = many_partner_hours(70)
    results = await asyncio.gather(
        *(apply_object(store, "bucket", "race", counts) for _ in range(4))
    )
    chunks = results[0].chunks
    assert sum(r.applied for r in results) == chunks
    assert sum(r.already for r in results) == 3 * chunks
    for p in (0, 69):
        assert (await table_totals(store, f"p{p:03d}")).sent == 10 + p


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
    store: Any, clients: Any, with_reasons: bool
) -> None:
    conflicted = PartnerStore(ConflictOnce(clients.dynamodb, with_reasons), store.table)
    counts = {("acme", HOUR): Counters(sent=3)}
    result = await apply_object(conflicted, "bucket", "conflict", counts)
    assert (result.applied, result.retries) == (1, 1)
    assert (await table_totals(store, "acme")).sent == 3


async def test_a_rejected_transaction_is_not_retried(store: Any, clients: Any) -> None:
    class Rejecting(ConflictOnce):
        async def transact_write_items(self, **kwargs: Any) -> Any:
            self.calls += 1
            raise ClientError(
                {"Error": {"Code": "ValidationException", "Message": "no"}},  # type: ignore[typeddict-item]
                "TransactWriteItems",
            )

    rejecting = Rejecting(clients.dynamodb, True)
    with pytest.raises(ClientError):
        await apply_object(
            PartnerStore(rejecting, store.table), "b", "k", {("a", HOUR): Counters(sent=1)}
        )
    assert rejecting.calls == 1
