"""The runtime's pure parts: failure judgement, the breaker's state machine (fake clock),
the retry curve and the maxReceiveCount it implies, the loop-lag arithmetic."""

from __future__ import annotations

import random

import pytest
from botocore.exceptions import (
    ConnectTimeoutError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
)

from sesguard.aws.errors import Health, judge_answer, judge_exception
from sesguard.core.backoff import spaced_delay, spaced_floor
from sesguard.runtime.breaker import Breaker, BreakerState, Change
from sesguard.runtime.lag import LoopLag
from sesguard.runtime.retry import FAIR_DEFERS, RECEIVE_SLACK, RetryPolicy, max_receive_count
from sesguard.settings import load_settings
from tests.conftest import client_error

LOCALSTACK_501 = (
    "The API for service 'sesv2' is either not included in your current license plan or"
    " has not yet been emulated by LocalStack."
)


@pytest.mark.parametrize(
    ("exc", "health"),
    [
        (client_error("InternalFailure", LOCALSTACK_501, 501), Health.DOWN),
        (client_error("ServiceUnavailable", status=503), Health.DOWN),
        (client_error("InternalServerError", status=500), Health.DOWN),
        (client_error("UnknownOperationException", status=400), Health.DOWN),
        (EndpointConnectionError(endpoint_url="http://x"), Health.DOWN),
        (ConnectTimeoutError(endpoint_url="http://x"), Health.DOWN),
        (ReadTimeoutError(endpoint_url="http://x"), Health.DOWN),
        (TimeoutError(), Health.DOWN),
        (ConnectionResetError(), Health.DOWN),
        (client_error("ThrottlingException", status=400), Health.THROTTLED),
        (client_error("TooManyRequestsException", status=429), Health.THROTTLED),
        (client_error("ProvisionedThroughputExceededException"), Health.THROTTLED),
        (client_error("SlowDown", status=503), Health.THROTTLED),
        (client_error("MessageRejected"), Health.UP),
        (client_error("ConditionalCheckFailedException"), Health.UP),
        (client_error("AccessDeniedException", status=403), Health.UP),
        (client_error("404", "Not Found", 404), Health.UP),
        (ParamValidationError(report="bad"), Health.UP),
    ],
)
def test_what_a_failure_says_about_the_dependency(exc: Exception, health: Health) -> None:
    assert judge_exception(exc) is health


def test_answers_by_status_and_code() -> None:
    assert judge_answer(200, "") is Health.UP
    assert judge_answer(400, "ValidationException") is Health.UP
    assert judge_answer(502, "") is Health.DOWN
    assert judge_answer(501, "InternalFailure") is Health.DOWN
    assert judge_answer(429, "") is Health.THROTTLED


def test_breaker_opens_after_consecutive_failures_only() -> None:
    b = Breaker("ses", threshold=3)
    assert b.observe(Health.DOWN, 0.0, "503") is None
    assert b.observe(Health.DOWN, 1.0, "503") is None
    assert b.observe(Health.UP, 2.0) is None  # an answer in between starts the count again
    assert b.observe(Health.DOWN, 3.0) is None
    assert b.observe(Health.THROTTLED, 3.5) is None  # throttling neither counts nor resets
    assert b.observe(Health.DOWN, 4.0) is None
    assert b.state is BreakerState.CLOSED
    assert b.observe(Health.DOWN, 5.0, "InternalFailure (501)") is Change.OPENED  # third
    assert b.is_open and b.opened_at == 5.0 and b.last_error == "InternalFailure (501)"
    assert b.observe(Health.DOWN, 6.0) is None  # already open: opens once
    assert b.observe(Health.UP, 7.0) is None  # a late answer does not close it
    assert b.is_open


def test_breaker_probes_back_off_and_an_answer_only_makes_it_half_open() -> None:
    b = Breaker("dynamodb", threshold=1, probe_first=1.0, probe_cap=8.0)
    assert b.observe(Health.DOWN, 100.0) is Change.OPENED
    delays = []
    for t in range(5):
        delays.append(b.probe_delay())
        assert not b.probed(Health.DOWN, 101.0 + t, "500")
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]  # doubling, capped
    assert b.open_for(110.0) == 10.0
    assert b.probed(Health.UP, 111.0)
    assert b.state is BreakerState.HALF_OPEN and not b.is_open and not b.is_closed
    assert not b.probed(Health.UP, 111.5)  # half-open: probes are over, trials decide
    assert b.observe(Health.THROTTLED, 111.8) is None  # a throttled trial decides nothing
    assert b.observe(Health.UP, 112.0) is Change.CLOSED  # a real call succeeded
    assert b.state is BreakerState.CLOSED and b.failures == 0 and b.probe_delay() == 1.0
    assert b.open_for(113.0) == 0.0
    assert not b.probed(Health.UP, 113.0)  # closed: nothing to probe


def test_a_failed_trial_reopens_and_the_probes_keep_backing_off() -> None:
    """SES answers GetAccount while SendEmail fails: every probe answers, every trial
    fails. The breaker must stay open most of the time, the waits doubling as if the
    probes failed, and the outage keeps its start."""
    b = Breaker("ses", threshold=2, probe_first=1.0, probe_cap=16.0)
    b.observe(Health.DOWN, 0.0)
    assert b.observe(Health.DOWN, 0.1, "ServiceUnavailable (503)") is Change.OPENED
    now, waits = 0.1, []
    for _ in range(6):
        waits.append(b.probe_delay())
        now += b.probe_delay()
        assert b.probed(Health.UP, now)  # GetAccount answers
        assert b.observe(Health.DOWN, now + 0.1, "503") is Change.REOPENED  # SendEmail not
        assert b.is_open and b.opened_at == 0.1
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0]
    assert b.observe(Health.DOWN, now + 0.2) is None  # open: stragglers change nothing
    now += b.probe_delay()
    assert b.probed(Health.THROTTLED, now)  # an answer, even "slow down"
    assert b.observe(Health.UP, now + 0.1) is Change.CLOSED
    assert b.probes_failed == 0 and b.failures == 0


def test_a_throttled_probe_is_an_answer() -> None:
    b = Breaker("ses", threshold=1)
    b.observe(Health.DOWN, 0.0)
    assert b.probed(Health.THROTTLED, 1.0)
    assert b.state is BreakerState.HALF_OPEN
    with pytest.raises(ValueError, match="threshold"):
        Breaker("s3", threshold=0)


def test_retry_delays_grow_with_the_receive_count_jittered_and_capped() -> None:
    policy = RetryPolicy.for_tolerance(900)
    rng = random.Random(11)
    for receives in range(1, 30):
        ceiling = min(policy.cap, policy.base * 2 ** (receives - 1))
        for _ in range(20):
            d = policy.delay(receives, rng)
            assert isinstance(d, int) and d >= 1
            assert ceiling / 2 <= d <= max(1, ceiling) + 1  # whole seconds, rounded up
    assert {policy.delay(30, rng) for _ in range(50)} <= set(range(112, 226))
    assert len({policy.delay(8, rng) for _ in range(50)}) > 5  # spread, not in step


def test_equal_jitter_never_goes_below_half_the_curve() -> None:
    rng = random.Random(3)
    for attempt in range(12):
        floor = spaced_floor(attempt, 1.0, 60.0)
        assert all(floor <= spaced_delay(attempt, 1.0, 60.0, rng) <= 2 * floor for _ in range(50))


@pytest.mark.parametrize("tolerance", [0, 3, 20, 60, 300, 900, 1800, 3600, 86400])
def test_receives_to_cover_is_the_least_that_spans_the_tolerance(tolerance: float) -> None:
    policy = RetryPolicy.for_tolerance(tolerance)
    n = policy.receives_to_cover

    def least_wait(receives: int) -> float:  # before the `receives`-th receive
        return sum(spaced_floor(r - 1, policy.base, policy.cap) for r in range(1, receives))

    assert least_wait(n) >= tolerance
    assert n == 1 or least_wait(n - 1) < tolerance


def test_max_receive_count_follows_the_tolerance_with_a_floor() -> None:
    default = load_settings()
    assert default.outage_tolerance_seconds == 900
    derived = RetryPolicy.for_tolerance(900).receives_to_cover + RECEIVE_SLACK + FAIR_DEFERS
    assert max_receive_count(default) == derived == 21
    assert max_receive_count(load_settings(outage_tolerance_seconds=3600)) > derived
    # one receive, the slack and the fair-share defers: 6, above the floor of 5
    assert max_receive_count(load_settings(outage_tolerance_seconds=0)) == 6
    assert max_receive_count(load_settings(outage_tolerance_seconds=0, dlq_max_receives=8)) == 8
    assert max_receive_count(load_settings(dlq_max_receives=50)) == 50
    assert max_receive_count(load_settings(outage_tolerance_seconds=86400)) <= 1000


def test_past_tolerance_by_first_receive_time_or_receive_count() -> None:
    policy = RetryPolicy.for_tolerance(60)
    assert not policy.past_tolerance(1000.0, 99, now=1059.0)
    assert policy.past_tolerance(1000.0, 2, now=1060.0)
    assert not policy.past_tolerance(None, policy.receives_to_cover - 1, now=0.0)
    assert policy.past_tolerance(None, policy.receives_to_cover, now=0.0)


def test_short_tolerances_give_quick_probes_and_short_backoffs() -> None:
    quick = RetryPolicy.for_tolerance(20)
    assert quick.cap == 5.0 and quick.probe_cap == 2.0
    slow = RetryPolicy.for_tolerance(3600)
    assert slow.cap == 300.0 and slow.probe_cap == 30.0


def test_loop_lag_keeps_the_worst_per_interval() -> None:
    lag = LoopLag(interval=0.1)
    assert lag.lag_of(0.1, started=10.0, woke=10.35) == pytest.approx(0.25)
    assert lag.lag_of(0.1, started=10.0, woke=10.05) == 0.0  # early wake-ups are not lag
    for value in (0.01, 0.25, 0.02):
        lag.record(value)
    assert lag.take_worst() == 0.25
    assert lag.take_worst() == 0.0  # the next interval starts over


def test_a_visibility_change_stays_within_12_h_of_the_receive() -> None:
    """SQS counts its 12 h limit from the receive: the time in hand is taken off (with a
    minute's margin), for every fate that asks for a visibility change."""
    import asyncio

    from sesguard.runtime.delivery import Delivery

    now = [1000.0]
    d = Delivery("m", "r", "{}", 1, None, None, 1000.0, asyncio.Event(), lambda: now[0])
    assert d.visible_after(30.2) == 31
    assert d.visible_after(86_400) == 43_200 - 60
    now[0] += 600.5  # ten minutes in hand
    assert d.visible_after(86_400) == 43_200 - 60 - 601
    assert d.visible_after(-5) == 0
