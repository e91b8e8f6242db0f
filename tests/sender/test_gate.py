"""The partner gate: cached per TTL (fake clock), single flight, pauses over-limit partners once."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from sesguard.aws.held import count_held
from sesguard.aws.store import StoreError
from sesguard.core.partners import Counters, Limits, PausedBy, Profile
from tests.conftest import sent_emails, wait_until
from tests.domain.support import answer, gate_for, transitions
from tests.sender.support import PARTNER, Env, sender_settings


class Tick:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class QueryCounter:
    def __init__(self, clients) -> None:
        self.clients = clients
        self.count = 0

    def _hook(self, **_) -> None:
        self.count += 1

    def __enter__(self) -> QueryCounter:
        self.clients.dynamodb.meta.events.register(
            "provide-client-params.dynamodb.Query", self._hook, unique_id="t-query-count"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.clients.dynamodb.meta.events.unregister(
            "provide-client-params.dynamodb.Query", unique_id="t-query-count"
        )


async def test_one_read_per_partner_per_ttl_and_concurrent_checks_share_it(env: Env) -> None:
    tick = Tick()
    gate = gate_for(env.store, env.clients.sesv2, sender_settings(gate_cache_seconds=5), clock=tick)
    with QueryCounter(env.clients) as q:
        decisions = await asyncio.gather(*(gate.check(PARTNER) for _ in range(50)))
        assert {answer(d) for d in decisions} == {"send"}
        assert q.count == 1 and gate.reads == 1
        tick.now += 4.9
        await gate.check(PARTNER)
        assert q.count == 1
        tick.now += 0.2  # TTL over
        await gate.check(PARTNER)
        assert q.count == 2


async def test_pause_elsewhere_takes_effect_within_the_ttl(env: Env) -> None:
    tick = Tick()
    gate = gate_for(env.store, env.clients.sesv2, sender_settings(gate_cache_seconds=5), clock=tick)
    assert answer(await gate.check(PARTNER)) == "send"
    await env.store.try_pause(PARTNER, "by operator", PausedBy.OPERATOR)
    assert answer(await gate.check(PARTNER)) == "send"  # cached, within the TTL
    tick.now += 5.01
    decision = await gate.check(PARTNER)
    assert answer(decision) == "hold" and decision.reason == "by operator"


async def test_unknown_partner_and_failures_are_not_sticky(env: Env, clients) -> None:
    tick = Tick()
    gate = gate_for(env.store, clients.sesv2, sender_settings(), clock=tick)
    assert answer(await gate.check("ghost")) == "unknown"
    broken = gate_for(
        type(env.store)(clients.dynamodb, "no-such-table"),
        clients.sesv2,
        sender_settings(),
        clock=tick,
    )
    with pytest.raises(StoreError):
        await broken.check(PARTNER)
    broken.judge.store = env.store  # the table is back: the failure was not cached
    assert answer(await broken.check(PARTNER)) == "send"


async def test_many_jobs_for_one_partner_cost_far_fewer_reads(env: Env) -> None:
    await env.enqueue(*(env.job(n) for n in range(40)))
    with QueryCounter(env.clients) as q:
        svc = await env.drain()
    assert svc.tally["sent"] == 40
    assert svc.gate.reads <= 2
    assert q.count <= 2


async def test_gate_pauses_an_over_limit_partner_once_and_holds_its_jobs(
    env: Env, moto_endpoint
) -> None:
    # an operator lowered the limit; the worker has not judged the partner since
    await env.store.add_counts(PARTNER, datetime.now(UTC), Counters(sent=400, hard_bounces=16))
    gate = gate_for(env.store, env.clients.sesv2, sender_settings())
    assert answer(await gate.check(PARTNER)) == "send"
    await env.store.update(PARTNER, bounce_limit=0.02)  # 4% is now over the limit
    await env.enqueue(*(env.job(n) for n in range(12)))
    svc = await env.drain()

    profile = await env.store.require_profile(PARTNER)
    assert profile.paused and profile.paused_by is PausedBy.POLICY
    assert "bounce rate" in (profile.paused_reason or "")
    assert svc.tally["held"] == 12 and env.ses.sent == []
    assert svc.gate.pauses == 1
    assert await count_held(env.store.dynamodb, env.store.table, PARTNER) == 12
    notices = [
        m
        for m in sent_emails(moto_endpoint)
        if m["destinations"].get("ToAddresses") == [f"ops@{PARTNER}.example.org"]
    ]
    assert len(notices) == 1  # exactly one notice for the one pause


async def test_two_gates_racing_to_pause_send_one_notice(env: Env, moto_endpoint, clients) -> None:
    await env.store.add_counts(PARTNER, datetime.now(UTC), Counters(sent=300, complaints=30))
    settings = sender_settings()
    gates = [gate_for(env.store, clients.sesv2, settings) for _ in range(4)]
    decisions = await asyncio.gather(*(g.check(PARTNER) for g in gates))
    assert {answer(d) for d in decisions} == {"hold"}
    assert sum(g.pauses for g in gates) == 1
    notices = Counter(m["destinations"]["ToAddresses"][0] for m in sent_emails(moto_endpoint))
    assert notices == {f"ops@{PARTNER}.example.org": 1}


async def test_warn_level_still_sends(env: Env) -> None:
    await env.store.create(Profile("warned", "ops@warned.example.org", Limits(bounce_rate=0.05)))
    await env.store.add_counts("warned", datetime.now(UTC), Counters(sent=1000, hard_bounces=30))
    gate = gate_for(env.store, env.clients.sesv2, sender_settings())
    assert answer(await gate.check("warned")) == "send"


async def test_gate_pause_with_tenants_on_still_holds(env: Env, clients) -> None:
    # the tenant mirror is attempted (moto has no tenant API: logged), the pause stands
    await env.store.update(PARTNER, tenant_name="acme")
    await env.store.add_counts(PARTNER, datetime.now(UTC), Counters(sent=300, hard_bounces=60))
    gate = gate_for(env.store, clients.sesv2, sender_settings(use_tenants=True))
    decision = await gate.check(PARTNER)
    assert answer(decision) == "hold" and gate.pauses == 1
    assert (await env.store.require_profile(PARTNER)).paused


async def test_a_pause_anywhere_reaches_a_cached_gate_through_the_status_epoch(
    env: Env, clients
) -> None:
    """The cache never expires here (the clock stands still): only the epoch can tell the
    gate that an operator paused the partner, and a resume reaches it the same way."""
    gate = gate_for(env.store, clients.sesv2, sender_settings(gate_cache_seconds=300), Tick())
    assert answer(await gate.check(PARTNER)) == "send"
    follow = asyncio.create_task(gate.follow(env.store.status_epoch, 0.01))
    try:
        await asyncio.sleep(0.05)  # the first read of the epoch is the baseline
        operator = transitions(env.store, clients.sesv2)
        assert (await operator.pause(PARTNER, "by operator", PausedBy.OPERATOR)).won
        await wait_until(lambda: PARTNER not in gate._cache)
        assert answer(await gate.check(PARTNER)) == "hold"
        assert await operator.resume(PARTNER) is not None
        await wait_until(lambda: PARTNER not in gate._cache)
        assert answer(await gate.check(PARTNER)) == "send"
    finally:
        follow.cancel()


async def test_an_unreadable_epoch_leaves_the_cache_to_its_ttl(env: Env, clients) -> None:
    tick = Tick()
    gate = gate_for(env.store, clients.sesv2, sender_settings(gate_cache_seconds=5), tick)
    reads = 0

    async def broken() -> int:
        nonlocal reads
        reads += 1
        raise StoreError("no table")

    with capture_logs() as logs:
        follow = asyncio.create_task(gate.follow(broken, 0.01))
        await wait_until(lambda: reads >= 3)
        follow.cancel()
    assert [e["event"] for e in logs].count("status_epoch_unreadable") == 1  # once per outage
    assert answer(await gate.check(PARTNER)) == "send"
    await env.store.try_pause(PARTNER, "by operator", PausedBy.OPERATOR)
    assert answer(await gate.check(PARTNER)) == "send"  # cached
    tick.now += 5.1
    assert answer(await gate.check(PARTNER)) == "hold"  # the TTL still bounds it
