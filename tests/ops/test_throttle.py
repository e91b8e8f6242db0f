"""Per-partner throttles as operators set and read them (issue 19): `partners add/set
--max-rate/--daily-quota`, the Python API, `partners show/list` with the current use, and
the Partner Limits Changed transition a throttle change is. Against the moto server;
the CLI in this process (tests.conftest.cli)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from sesguard.aws import lifecycle
from sesguard.aws.lifecycle import DetailType, partner_history
from sesguard.aws.store import NO_CAP, PartnerStore
from sesguard.core.partners import (
    Counters,
    Limits,
    PartnerState,
    Profile,
    Status,
    Throttle,
    hour_floor,
    utc_day,
    utcnow,
)
from sesguard.errors import Refused
from sesguard.ops import operations
from sesguard.ops.report import throttle_json
from sesguard.settings import Settings
from tests.aws.test_lifecycle import valid
from tests.conftest import Result, cli

ADD = ("partners", "add", "acme", "--contact", "ops@acme.example.com")


def refused(r: Result, option: str, needle: str) -> None:
    assert r.code == 2, r
    (line,) = r.err.strip().splitlines()  # one line, no traceback
    assert f"argument {option}:" in line, line
    assert needle in line, line


async def limits_events(store: PartnerStore, pid: str = "acme") -> list[dict[str, Any]]:
    """The partner's Partner Limits Changed details, each checked against its schema."""
    since = utcnow() - timedelta(hours=1)
    events = await partner_history(store.dynamodb, store.table, pid, since)
    out = []
    for e in events:
        if e.detail_type == DetailType.LIMITS_CHANGED.value:
            out.append(
                valid({"source": "sesguard", "detail-type": e.detail_type, "detail": e.detail})
            )
    return out


# ---- setting them ----------------------------------------------------------------------


async def test_add_and_set_throttles_each_change_is_a_transition(store: PartnerStore) -> None:
    r = cli(*ADD, "--max-rate", "2.5", "--daily-quota", "500")
    assert (r.code, r.err) == (0, ""), r
    assert (await store.require_profile("acme")).throttle == Throttle(2.5, 500)
    assert await limits_events(store) == []  # adding is no change of limits

    epoch = await store.status_epoch()
    r = cli("partners", "set", "acme", "--max-rate", "10")
    assert r.code == 0 and "updated partner acme" in r.out, r
    assert (await store.require_profile("acme")).throttle == Throttle(10.0, 500)
    # The status epoch moved: every sender task re-reads the partner within a poll.
    assert await store.status_epoch() > epoch
    (changed,) = await limits_events(store)
    assert changed["previous_limits"]["max_rate"] == 2.5
    assert changed["limits"]["max_rate"] == 10.0
    assert changed["limits"]["daily_quota"] == changed["previous_limits"]["daily_quota"] == 500
    assert changed["limits"]["bounce_rate"] == Limits().bounce_rate  # the rest as it was

    # `none` removes a cap: the attribute is gone, the event says null.
    r = cli("partners", "set", "acme", "--daily-quota", "none", "--max-rate", "NONE")
    assert r.code == 0, r
    assert (await store.require_profile("acme")).throttle == Throttle()
    item = await store.dynamodb.get_item(
        TableName=store.table, Key={"pk": {"S": "P#acme"}, "sk": {"S": "PROFILE"}}
    )
    assert "max_rate" not in item["Item"] and "daily_quota" not in item["Item"]
    _, removed = await limits_events(store)
    assert (removed["limits"]["max_rate"], removed["limits"]["daily_quota"]) == (None, None)
    assert removed["previous_limits"]["max_rate"] == 10.0

    # Setting what is already there changes nothing: no event, no epoch bump.
    epoch = await store.status_epoch()
    assert cli("partners", "set", "acme", "--max-rate", "none").code == 0
    assert len(await limits_events(store)) == 2
    assert await store.status_epoch() == epoch

    # A quota of 0 is a cap (no sends until it is raised), not "no cap".
    assert cli("partners", "set", "acme", "--daily-quota", "0").code == 0
    assert (await store.require_profile("acme")).throttle == Throttle(None, 0)


TOO_PRECISE = "1." + "1" * 38  # 39 significant digits

BAD = [
    ("--max-rate", "0", "outside [0.001, 10000] sends/s"),
    ("--max-rate", "-1", "outside [0.001, 10000] sends/s"),
    ("--max-rate", "0.0001", "outside [0.001, 10000] sends/s"),
    ("--max-rate", "10001", "outside [0.001, 10000] sends/s"),
    ("--max-rate", "1e-320", "outside [0.001, 10000]"),
    ("--max-rate", "nan", "a max rate is a number of sends/s or none"),
    ("--max-rate", "inf", "a max rate is a number of sends/s or none"),
    ("--max-rate", TOO_PRECISE, "a max rate is a number of sends/s or none"),
    ("--max-rate", "fast", "a max rate is a number of sends/s or none"),
    ("--max-rate", "", "a max rate is a number of sends/s or none"),
    ("--max-rate", "5/s", "a max rate is a number of sends/s or none"),
    ("--daily-quota", "-1", "a daily quota is a whole number of sends per UTC day or none"),
    ("--daily-quota", "2.5", "a daily quota is a whole number"),
    ("--daily-quota", "1e3", "a daily quota is a whole number"),
    ("--daily-quota", "nan", "a daily quota is a whole number"),
    ("--daily-quota", "", "a daily quota is a whole number"),
    ("--daily-quota", "\u0661\u0662", "a daily quota is a whole number"),  # Arabic-Indic 12
    ("--daily-quota", "1000000001", "outside [0, 1000000000]"),
    ("--daily-quota", "9" * 5000, "a daily quota is a whole number"),
]


@pytest.mark.parametrize("action", ["add", "set"])
@pytest.mark.parametrize(("option", "value", "needle"), BAD)
async def test_bad_throttles_are_usage_errors_and_write_nothing(
    store: PartnerStore, action: str, option: str, value: str, needle: str
) -> None:
    if action == "set":
        await store.create(
            Profile("acme", "ops@acme.example.com", Limits(), throttle=Throttle(3.0, 100))
        )
        epoch = await store.status_epoch()
        r = cli("partners", "set", "acme", f"{option}={value}")
    else:
        r = cli(*ADD, f"{option}={value}")
    refused(r, option, needle)
    assert "9" * 41 not in r.err  # a huge value is not echoed
    profile = await store.get_profile("acme")
    if action == "add":
        assert profile is None
    else:
        assert profile is not None and profile.throttle == Throttle(3.0, 100)
        assert await store.status_epoch() == epoch and await limits_events(store) == []


async def test_edge_values_are_taken_as_given(store: PartnerStore) -> None:
    assert cli(*ADD, "--max-rate", "0.001", "--daily-quota", "1000000000").code == 0
    assert (await store.require_profile("acme")).throttle == Throttle(0.001, 1_000_000_000)
    assert cli("partners", "set", "acme", "--max-rate", " 10000 ", "--daily-quota", "0").code == 0
    assert (await store.require_profile("acme")).throttle == Throttle(10_000.0, 0)
    help_text = " ".join(cli("partners", "set", "--help").out.split())
    assert "--max-rate R|none" in help_text and "--daily-quota N|none" in help_text


async def test_the_python_api_takes_none_numbers_and_no_cap(
    clients: Any, settings: Settings, store: PartnerStore
) -> None:
    added = await operations.add_partner(
        clients, settings, "acme", "ops@acme.example.com", max_rate=7, daily_quota="none"
    )
    assert added.profile.throttle == Throttle(7.0, None)
    result = await operations.set_partner(clients, settings, "acme", daily_quota=250)
    assert result.profile.throttle == Throttle(7.0, 250)
    result = await operations.set_partner(clients, settings, "acme", max_rate=NO_CAP)
    assert result.profile.throttle == Throttle(None, 250)
    for kwargs, needle in (
        ({"max_rate": True}, "not a number"),  # a bool is not a rate
        ({"max_rate": 0}, "outside"),
        ({"daily_quota": 2.5}, "whole number"),
        ({"daily_quota": -3}, "whole number"),
        ({"max_rate": None, "daily_quota": None}, "nothing to change"),
    ):
        with pytest.raises(Refused, match=needle):
            await operations.set_partner(clients, settings, "acme", **kwargs)
    assert (await store.require_profile("acme")).throttle == Throttle(None, 250)
    assert operations.check_max_rate("None") is NO_CAP
    assert operations.check_daily_quota(" none ") is NO_CAP


# ---- reading them, with their current use ----------------------------------------------


async def test_show_and_list_give_each_cap_with_its_current_use(store: PartnerStore) -> None:
    assert cli(*ADD, "--max-rate", "5", "--daily-quota", "500").code == 0
    assert cli("partners", "add", "free", "--contact", "ops@free.example.com").code == 0
    now = utcnow()
    assert await store.take_quota("acme", 500, n=120, now=now)
    hour = hour_floor(now)
    await store.add_counts("acme", hour - timedelta(hours=1), Counters(sent=3600))
    await store.add_counts("acme", hour, Counters(sent=30, simulator_sent=6))

    shown = json.loads(cli("partners", "show", "acme", "--json").out)
    th = shown["throttle"]
    assert th["max_rate"] == 5.0 and th["daily_quota"] == 500
    assert (th["day"], th["quota_used"]) == (utc_day(now), 120)
    assert (th["sent_this_hour"], th["sent_last_hour"]) == (36, 3600)
    assert th["rate_last_hour"] == 1.0
    elapsed = max(60.0, (utcnow() - hour).total_seconds())
    assert th["rate_this_hour"] == pytest.approx(36 / elapsed, abs=0.01)

    text = cli("partners", "show", "acme").out
    assert "daily quota  120 of 500 today (UTC)" in text
    assert "max rate     5 sends/s (sending " in text and "1/s last hour" in text
    assert "lag by the" in text  # the rates come from SES's Send events
    free = cli("partners", "show", "free").out
    assert "max rate     no cap (sending 0/s this hour, 0/s last hour)" in free
    assert "daily quota  no cap" in free

    listed = {p["partner_id"]: p for p in json.loads(cli("partners", "list", "--json").out)}
    same = {k: v for k, v in th.items() if k != "rate_this_hour"}  # read a moment later
    assert same.items() <= listed["acme"]["throttle"].items()
    assert listed["free"]["throttle"]["max_rate"] is None
    table = cli("partners", "list").out.splitlines()
    assert table[0].split()[-3:] == ["RATE/S", "TODAY", "(UTC)"]
    acme = next(line for line in table if line.startswith("acme"))
    free_row = next(line for line in table if line.startswith("free"))
    assert acme.split()[-1] == "120/500" and acme.split()[-2].endswith("/5")
    assert free_row.split()[-1] == "0/-" and free_row.split()[-2] == "0/-"


def test_rate_of_the_current_hour_is_not_inflated_in_its_first_minute() -> None:
    now = hour_floor(utcnow()) + timedelta(seconds=5)
    state = PartnerState("acme", None, Counters(), {hour_floor(now): Counters(sent=30)})
    th = throttle_json(state, now)
    assert th["rate_this_hour"] == 0.5  # 30 over a minute, not over 5 seconds
    assert th["max_rate"] is None and th["quota_used"] == 0


# ---- the event's schema ----------------------------------------------------------------


def test_limits_changed_detail_carries_the_throttle_and_validates() -> None:
    now = utcnow()
    event = lifecycle.limits_changed(
        "acme",
        Limits(),
        Limits(),
        Status.ACTIVE,
        now,
        previous_throttle=Throttle(None, 10),
        throttle=Throttle(0.5, None),
    )
    detail = valid({"source": "sesguard", "detail-type": event.detail_type, "detail": event.detail})
    assert detail["limits"]["max_rate"] == 0.5 and detail["limits"]["daily_quota"] is None
    assert detail["previous_limits"]["daily_quota"] == 10
    # Without a throttle, both are null: the keys are always there.
    plain = lifecycle.limits_changed("acme", Limits(), Limits(min_volume=5), Status.ACTIVE, now)
    assert plain.detail["limits"]["max_rate"] is None
    assert plain.detail["previous_limits"]["daily_quota"] is None
    validator = Draft202012Validator(lifecycle.schema(DetailType.LIMITS_CHANGED))
    missing = json.loads(json.dumps(event.detail))
    del missing["limits"]["max_rate"]
    assert not validator.is_valid(missing)
    negative = json.loads(json.dumps(event.detail))
    negative["limits"]["daily_quota"] = -1
    assert not validator.is_valid(negative)
