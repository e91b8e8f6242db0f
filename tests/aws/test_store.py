"""Partner store round trips and the pause race, against the moto server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from sesguard.aws.store import PartnerExists, PartnerNotFound, PartnerStore, StoreError
from sesguard.core.partners import Counters, Limits, PausedBy, Profile, Status, Throttle
from tests.conftest import sent_emails
from tests.domain.support import pause_partner

NOW = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)


def acme(**kw) -> Profile:
    return Profile("acme", "ops@acme.example.com", Limits(0.04, 0.002, 50), **kw)


async def test_profile_round_trip(store: PartnerStore) -> None:
    await store.create(acme())
    got = await store.require_profile("acme")
    assert got.contact_email == "ops@acme.example.com"
    assert got.limits == Limits(0.04, 0.002, 50, 0.5)
    assert got.status is Status.ACTIVE and got.created_at is not None
    with pytest.raises(PartnerExists):
        await store.create(acme())
    updated = await store.update("acme", bounce_limit=0.1, min_volume=10)
    assert updated.limits.bounce_rate == 0.1 and updated.limits.min_volume == 10
    with pytest.raises(PartnerNotFound):
        await store.update("ghost", bounce_limit=0.1)


async def test_counts_and_state_in_one_query(store: PartnerStore, clients) -> None:
    await store.create(acme())
    await store.add_counts("acme", NOW, Counters(sent=10, hard_bounces=1))
    await store.add_counts("acme", NOW, Counters(sent=5, complaints=1))
    await store.add_counts("acme", NOW - timedelta(hours=30), Counters(sent=7))
    await store.add_counts("acme", NOW - timedelta(days=9), Counters(sent=100))  # outside 7 d
    before = {c for c in clients.calls}
    clients.calls.clear()
    state = await store.get_state("acme", NOW)
    assert clients.calls == {("dynamodb", "Query")}
    clients.calls.update(before)
    assert state.profile is not None
    assert state.totals.sent == 122 and state.totals.hard_bounces == 1
    assert state.buckets[NOW.replace(minute=0)] == Counters(sent=15, hard_bounces=1, complaints=1)
    assert len(state.buckets) == 2  # the 9-day-old bucket is not read


async def test_unregistered_traffic_is_kept(store: PartnerStore, clients) -> None:
    await store.add_counts("newco", NOW, Counters(sent=3))
    state = await store.get_state("newco", NOW)
    assert state.profile is None and state.totals.sent == 3
    clients.calls.clear()
    assert await store.list_partner_ids() == ([], ["newco"])
    assert clients.calls == {("dynamodb", "Query")}  # the partners index, never a Scan
    await store.create(Profile("newco", "a@newco.example.com", Limits()))
    assert await store.list_partner_ids() == (["newco"], [])
    assert (await store.get_state("newco", NOW)).totals.sent == 3


async def test_resume_rearms_with_baseline(store: PartnerStore) -> None:
    await store.create(acme())
    await store.add_counts("acme", NOW, Counters(sent=100, hard_bounces=20))
    assert await store.try_pause("acme", "too many bounces", PausedBy.POLICY, NOW)
    resumed_at = NOW + timedelta(minutes=5)
    assert await store.resume("acme", resumed_at)
    assert not await store.resume("acme", resumed_at)  # not paused any more
    p = await store.require_profile("acme")
    assert p.status is Status.ACTIVE and p.paused_reason is None
    assert p.rearm is not None and p.rearm.baseline == Counters(sent=100, hard_bounces=20)
    assert p.resumed_at == resumed_at
    with pytest.raises(PartnerNotFound):
        await store.resume("ghost")


async def test_missing_table_says_run_bootstrap(clients) -> None:
    store = PartnerStore(clients.dynamodb, "no-such-table")
    with pytest.raises(StoreError, match="run `sesguard bootstrap`"):
        await store.get_state("acme")


async def test_twenty_concurrent_pauses_one_winner_one_notice(
    store: PartnerStore, clients, moto_endpoint
) -> None:
    await clients.sesv2.create_email_identity(EmailIdentity="guard@isv.example.com")
    await store.create(acme())
    outcomes = await asyncio.gather(
        *(
            pause_partner(
                store,
                clients.sesv2,
                "acme",
                f"racer {i}",
                PausedBy.POLICY,
                "guard@isv.example.com",
            )
            for i in range(20)
        )
    )
    winners = [o for o in outcomes if o.won]
    assert len(winners) == 1 and winners[0].notice_id
    notices = [
        m
        for m in sent_emails(moto_endpoint)
        if m["destinations"]["ToAddresses"] == ["ops@acme.example.com"]
    ]
    assert len(notices) == 1
    assert notices[0]["subject"] == "Sending paused for acme"
    assert notices[0]["source"] == "guard@isv.example.com"
    profile = await store.require_profile("acme")
    assert profile.status is Status.PAUSED and profile.paused_by is PausedBy.POLICY


async def test_a_daily_quota_is_never_passed_however_many_take_at_once(store) -> None:
    """20 takes race for a quota of 7: exactly 7 win, and the gate's Query reads the count."""
    await store.create(Profile("q", "ops@q.example.org", Limits(), throttle=Throttle(None, 7)))
    now = datetime(2026, 12, 6, 23, 59, tzinfo=UTC)
    won = await asyncio.gather(*(store.take_quota("q", 7, now=now) for _ in range(20)))
    assert sum(won) == 7
    state = await store.get_state("q", now)
    assert state.quota_used == {"2026-12-06": 7}
    assert state.profile is not None and state.profile.throttle == Throttle(None, 7)
    await store.give_back_quota("q", "2026-12-06", 2)
    assert await store.take_quota("q", 7, n=2, now=now)
    assert not await store.take_quota("q", 7, now=now)
    tomorrow = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)  # the quota resets at 00:00 UTC
    assert await store.take_quota("q", 7, now=tomorrow)
    await store.give_back_quota("q", "2026-12-01")  # nothing taken that day: no error
