"""The partner judgement's pure half: one partner state -> what it may do (no AWS)."""

from __future__ import annotations

from datetime import UTC, datetime

from sesguard.core.partners import UNATTRIBUTED, Counters, Limits, PartnerState, Profile, Status
from sesguard.domain.judgement import Enforcement, decide
from tests.domain.support import answer

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_gate_decisions_from_state() -> None:
    hour = NOW.replace(minute=0)
    active = Profile("acme", "ops@acme.example.org", Limits())
    state = PartnerState("acme", active, Counters(), {hour: Counters(sent=500, hard_bounces=5)})
    assert answer(decide(state, NOW, (24, 168))) == "send"
    state.buckets[hour] = Counters(sent=500, hard_bounces=50)
    decision = decide(state, NOW, (24, 168))
    verdict = decision.verdict
    assert answer(decision) == "hold" and verdict is not None and "bounce rate" in decision.reason
    paused = Profile(
        "acme", "ops@acme.example.org", Limits(), status=Status.PAUSED, paused_reason="r"
    )
    assert decide(PartnerState("acme", paused, Counters(), {}), NOW, (24,)).reason == "r"
    assert answer(decide(PartnerState("x", None, Counters(), {}), NOW, (24,))) == "unknown"


def test_each_enforcement_the_pure_half_can_reach() -> None:
    hour = NOW.replace(minute=0)
    limits = Limits(bounce_rate=0.05, warn_ratio=0.8)
    active = Profile("acme", "ops@acme.example.org", limits)

    def at(hard_bounces: int) -> Enforcement:
        buckets = {hour: Counters(sent=1000, hard_bounces=hard_bounces)}
        return decide(PartnerState("acme", active, Counters(), buckets), NOW, (24,)).enforcement

    assert at(10) is Enforcement.OK
    assert at(45) is Enforcement.WARN  # 4.5% >= 80% of 5%
    assert at(60) is Enforcement.PAUSE  # to be written: only `act` says who won it
    paused = Profile("acme", "ops@acme.example.org", limits, status=Status.PAUSED)
    state = PartnerState("acme", paused, Counters(), {hour: Counters(sent=1000, hard_bounces=60)})
    assert decide(state, NOW, (24,)).enforcement is Enforcement.ALREADY_PAUSED
    nobody = PartnerState(UNATTRIBUTED, None, Counters(), {})
    assert decide(nobody, NOW, (24,)).enforcement is Enforcement.UNATTRIBUTED
    assert decide(nobody, NOW, (24,)).unknown
