"""Fair share of the account rate (sender.fairshare): the plan's decisions, pure, and the
sender reading past one partner's backlog to a quiet partner's job on the stand-in."""

from __future__ import annotations

import asyncio

import pytest

from sender.fairshare import HOLD_SECONDS, FairPlan, FairTokens
from sesguard.core.partners import Limits, Profile
from sesguard.runtime.ratelimit import TokenBucket
from sesguard.runtime.retry import FAIR_DEFERS
from tests.conftest import dead_letters_in
from tests.sender.support import Env, sender_settings

BUDGET = 225.0  # a quarter of the default outage tolerance


def waiting(plan: FairPlan, **jobs: int) -> None:
    for partner, n in jobs.items():
        for _ in range(n):
            plan.join(partner)


def picks(plan: FairPlan, n: int) -> list[str | None]:
    return [plan.pick() for _ in range(n)]


# ---- who gets the next token ----------------------------------------------------------


def test_partners_waiting_take_turns_whatever_their_backlog() -> None:
    plan = FairPlan(hands=32, room=10)
    waiting(plan, big=20, quiet=2)
    assert picks(plan, 6) == ["big", "quiet", "big", "quiet", "big", "big"]


def test_a_partner_that_starts_waiting_is_served_next_not_after_the_backlog() -> None:
    plan = FairPlan(hands=32, room=10)
    waiting(plan, big=20)
    assert picks(plan, 5) == ["big"] * 5
    waiting(plan, quiet=1)
    assert plan.pick() == "quiet"
    assert picks(plan, 3) == ["big"] * 3


def test_an_idle_partner_saves_no_credit() -> None:
    plan = FairPlan(hands=32, room=10)
    waiting(plan, big=30, other=1)
    assert picks(plan, 2) == ["big", "other"]  # other idle from here on
    assert picks(plan, 10) == ["big"] * 10
    waiting(plan, other=3)  # back: one turn each, not ten in a row for the time it was away
    assert picks(plan, 4) == ["other", "big", "other", "big"]


def test_a_partner_alone_gets_every_token() -> None:
    plan = FairPlan(hands=32, room=10)
    waiting(plan, big=4)
    assert picks(plan, 5) == ["big", "big", "big", "big", None]
    assert plan.waiting == {}


def test_weights_divide_the_tokens() -> None:
    plan = FairPlan(hands=32, room=10, weights={"gold": 2.0})
    waiting(plan, gold=30, plain=30)
    got = picks(plan, 30)
    assert got.count("gold") == 20 and got.count("plain") == 10


def test_a_waiter_that_leaves_is_not_picked() -> None:
    plan = FairPlan(hands=32, room=10)
    waiting(plan, a=1, b=1)
    plan.leave("a")
    assert picks(plan, 2) == ["b", None]


# ---- wait in hand, or defer to its turn ------------------------------------------------


def test_a_partner_holds_its_share_in_hand_and_the_rest_is_deferred_to_its_slots() -> None:
    plan = FairPlan(hands=64, room=10)
    rate = 20.0
    assert plan.limit("big", rate) == int(rate * HOLD_SECONDS)
    waiting(plan, big=19)
    assert plan.admit("big", rate, 100.0, receives=1, budget=BUDGET) is None  # the 20th waits
    waiting(plan, big=1)
    first = plan.admit("big", rate, 100.0, receives=1, budget=BUDGET)
    second = plan.admit("big", rate, 100.0, receives=1, budget=BUDGET)
    third = plan.admit("big", rate, 100.0, receives=1, budget=BUDGET)
    assert first == pytest.approx(21 / rate)  # after the 20 in hand
    assert second == pytest.approx(22 / rate)  # then one slot each at its share
    assert third == pytest.approx(23 / rate)


def test_a_turn_nearer_than_a_second_is_deferred_by_one() -> None:
    plan = FairPlan(hands=16, room=10)  # 6 in hand: 0.3 s of 20/s
    waiting(plan, big=6)
    assert plan.admit("big", 20.0, 0.0, receives=1, budget=BUDGET) == 1.0  # SQS: whole seconds


def test_the_hands_keep_room_for_a_receive() -> None:
    plan = FairPlan(hands=16, room=10)
    assert plan.limit("big", 20.0) == 6
    assert FairPlan(hands=10, room=10).limit("big", 20.0) == 1  # never none at all


def test_a_quiet_partner_is_never_deferred_behind_a_backlog() -> None:
    plan = FairPlan(hands=32, room=10)
    waiting(plan, big=20)
    assert plan.admit("big", 20.0, 0.0, receives=1, budget=BUDGET) is not None
    assert plan.admit("quiet", 20.0, 0.0, receives=1, budget=BUDGET) is None


def test_the_share_shrinks_while_others_wait_so_the_turn_is_later() -> None:
    plan = FairPlan(hands=64, room=10)
    waiting(plan, big=10, other=1)
    assert plan.share("big", 20.0) == 10.0
    seconds = plan.admit("big", 20.0, 0.0, receives=1, budget=BUDGET)
    assert seconds == pytest.approx(11 / 10.0)
    assert plan.admit("big", 20.0, 0.0, receives=1, budget=BUDGET) == pytest.approx(12 / 10.0)


def test_a_job_is_deferred_a_bounded_number_of_times() -> None:
    plan = FairPlan(hands=32, room=10)
    waiting(plan, big=22)
    for receives in range(1, FAIR_DEFERS + 1):
        assert plan.admit("big", 20.0, 0.0, receives=receives, budget=BUDGET) is not None
    assert plan.admit("big", 20.0, 0.0, receives=FAIR_DEFERS + 1, budget=BUDGET) is None


def test_while_slots_are_booked_new_jobs_join_the_ledger_and_returning_ones_the_hand() -> None:
    plan = FairPlan(hands=32, room=10)
    waiting(plan, big=20)
    booked = [plan.admit("big", 20.0, 0.0, receives=1, budget=BUDGET) for _ in range(100)]
    assert booked[-1] == pytest.approx(120 / 20.0)  # the ledger reaches 6 s ahead
    for _ in range(15):
        assert plan.pick() == "big"  # the hand drains: 5 still wait, room for 15
    # a job seen for the first time goes after the booked ones, though the hand has room
    assert plan.admit("big", 20.0, 0.0, receives=1, budget=BUDGET) == pytest.approx(121 / 20.0)
    # a booked one coming back takes the room in hand
    assert plan.admit("big", 20.0, 0.0, receives=2, budget=BUDGET) is None
    # once the booked slots are past, first looks wait in hand again
    assert plan.admit("big", 20.0, 10.0, receives=1, budget=BUDGET) is None


def test_a_returning_job_without_room_goes_to_the_end_of_the_ledger() -> None:
    plan = FairPlan(hands=32, room=10)
    waiting(plan, big=20)
    for _ in range(40):
        plan.admit("big", 20.0, 0.0, receives=1, budget=BUDGET)
    assert plan.admit("big", 20.0, 0.0, receives=2, budget=BUDGET) == pytest.approx(61 / 20.0)


def test_the_deferred_time_stays_within_the_budget() -> None:
    plan = FairPlan(hands=32, room=10)
    waiting(plan, big=22)
    for _ in range(200):  # ledger ~10 s ahead
        plan.admit("big", 20.0, 0.0, receives=1, budget=BUDGET)
    assert plan.admit("big", 20.0, 0.0, receives=1, budget=3.0) == 3.0
    assert plan.admit("big", 20.0, 0.0, receives=1, budget=0.5) is None  # too little: keep
    assert FairPlan(hands=32, room=10).admit("big", 20.0, 0.0, 1, BUDGET) is None  # none waits


# ---- the tokens handed out (FairTokens, a fake clock) -----------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


async def test_waiters_get_their_tokens_in_the_plans_order() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, clock=clock)
    bucket.drain()
    tokens = FairTokens(bucket, FairPlan(hands=32, room=10), clock)
    order: list[str] = []

    async def one(partner: str) -> None:
        await tokens.acquire(partner)
        order.append(partner)

    waiters = [asyncio.create_task(one("big")) for _ in range(4)]
    await asyncio.sleep(0)
    waiters.append(asyncio.create_task(one("quiet")))
    await asyncio.gather(*waiters)
    assert order == ["big", "quiet", "big", "big", "big"]
    assert clock.now == pytest.approx(0.5)  # one token each 0.1 s: the rate, no more
    assert tokens.plan.waiting == {}
    await tokens.close()


async def test_a_cancelled_waiter_leaves_the_line_and_the_others_are_served() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, clock=clock)
    bucket.drain()
    tokens = FairTokens(bucket, FairPlan(hands=32, room=10), clock)
    gone = asyncio.create_task(tokens.acquire("a"))
    stays = asyncio.create_task(tokens.acquire("b"))
    await asyncio.sleep(0)
    assert tokens.plan.waiting == {"a": 1, "b": 1}
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    await stays
    assert tokens.plan.waiting == {}
    await tokens.close()


# ---- the sender on the stand-in -------------------------------------------------------


async def _backlog_then_quiet(env: Env, *, fair: bool) -> list[str]:
    await env.store.create(Profile("quiet", "ops@quiet.example.org", Limits()))
    await env.store.create(Profile("big", "ops@big.example.org", Limits()))
    await env.enqueue(*[env.job(f"big-{i}", partner="big") for i in range(60)])
    await env.enqueue(env.job("quiet-0", partner="quiet"), env.job("quiet-1", partner="quiet"))
    settings = sender_settings(concurrency=32)  # 20 of one partner in hand, room for 10 more
    await env.drain(settings, bucket=TokenBucket(20.0), fair_share=fair)
    return env.ses.subjects()


async def test_a_quiet_partners_job_goes_out_before_a_backlog_queued_first(env: Env) -> None:
    order = await _backlog_then_quiet(env, fair=True)
    assert sorted(order) == sorted(
        [f"subject job-big-{i}" for i in range(60)] + ["subject job-quiet-0", "subject job-quiet-1"]
    )  # every job sent, once
    quiet = [order.index("subject job-quiet-0"), order.index("subject job-quiet-1")]
    # Before the big backlog is done, where first come, first served puts them (>= 50,
    # the test below). Not tighter: on a loaded machine the quiet jobs are received a few
    # sends later (42 and 44 were seen), and that is the receive, not the fair share.
    assert max(quiet) < 50, order
    assert await dead_letters_in(env.clients, env.dlq_url) == []
    assert await env.queue_depth() == (0, 0)


async def test_without_fair_share_the_quiet_job_waits_for_the_backlog(env: Env) -> None:
    """The baseline: first come, first served; moto's SQS does not reorder."""
    order = await _backlog_then_quiet(env, fair=False)
    assert len(order) == 62
    assert min(order.index("subject job-quiet-0"), order.index("subject job-quiet-1")) >= 50
