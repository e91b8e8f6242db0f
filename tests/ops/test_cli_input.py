"""Operator numbers and reasons, through `sesguard.cli.main(argv)` in this process
(tests.conftest.cli).

Every value DynamoDB cannot store, or that makes no sense as a limit, is a usage error
(exit 2, one line on stderr naming the option) before any AWS call; the edge values
that are accepted come back from DynamoDB exactly as given.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from sesguard.aws import table as t
from sesguard.aws.store import PartnerStore
from sesguard.core.partners import MAX_REASON_CHARS, Limits, Profile, Status
from tests.conftest import Result, cli, sent_emails


def refused(r: Result, option: str, needle: str) -> None:
    assert r.code == 2, r
    (line,) = r.err.strip().splitlines()  # one line, no traceback
    assert f"argument {option}:" in line, line
    assert needle in line, line


TOO_PRECISE = "0." + "1" * 39  # 39 significant digits: one more than DynamoDB keeps

BAD_NUMBERS = [
    # (option, value, what the line says)
    ("--bounce-limit", "1e-320", "outside [1e-09, 1]"),  # subnormal: Underflow in DynamoDB
    ("--bounce-limit", "5e-324", "outside [1e-09, 1]"),  # the smallest subnormal
    ("--bounce-limit", "1e-131", "outside [1e-09, 1]"),  # below DynamoDB's smallest
    ("--bounce-limit", "1e-400", "outside [1e-09, 1]"),  # zero as a float
    ("--bounce-limit", "0", "outside [1e-09, 1]"),
    ("--bounce-limit", "-0.05", "outside [1e-09, 1]"),
    ("--bounce-limit", "1.0000001", "outside [1e-09, 1]"),
    ("--bounce-limit", "nan", "not a finite number"),
    ("--bounce-limit", "NaN", "not a finite number"),
    ("--bounce-limit", "inf", "not a finite number"),
    ("--bounce-limit", "-Infinity", "not a finite number"),
    ("--bounce-limit", TOO_PRECISE, "39 significant digits; DynamoDB stores at most 38"),
    ("--bounce-limit", "five", "not a number"),
    ("--bounce-limit", "", "not a number"),
    ("--complaint-limit", "1e-320", "outside [1e-09, 1]"),
    ("--complaint-limit", "nan", "not a finite number"),
    ("--complaint-limit", TOO_PRECISE, "39 significant digits"),
    ("--min-volume", "1" * 40, "outside [1, 1000000000]"),  # the 40 digits of the report
    ("--min-volume", "1000000001", "outside [1, 1000000000]"),
    ("--min-volume", "0", "outside [1, 1000000000]"),
    ("--min-volume", "-5", "outside [1, 1000000000]"),
    ("--min-volume", "2.5", "not a whole number"),
    ("--min-volume", "1e3", "not a whole number"),
    ("--min-volume", "nan", "not a whole number"),
    ("--min-volume", "9" * 5000, "not a whole number from 1 to 1000000000"),
    ("--warn-ratio", "1", "warn ratio must be below 1"),
    ("--warn-ratio", "1e-320", "outside [1e-09, 1]"),
    ("--warn-ratio", "inf", "not a finite number"),
    ("--warn-ratio", TOO_PRECISE, "39 significant digits"),
]


@pytest.mark.parametrize("action", ["add", "set"])
@pytest.mark.parametrize(("option", "value", "needle"), BAD_NUMBERS)
async def test_bad_numbers_are_usage_errors_naming_the_option(
    store: PartnerStore,
    action: str,
    option: str,
    value: str,
    needle: str,
) -> None:
    if action == "set":
        await store.create(Profile("acme", "ops@acme.example.com", Limits()))
    argv = ["partners", action, "acme", f"{option}={value}"]
    if action == "add":
        argv += ["--contact", "ops@acme.example.com"]
    refused(cli(*argv), option, needle)
    # Nothing was written: no partner added, the existing one unchanged.
    profile = await store.get_profile("acme")
    assert (profile is None) if action == "add" else (profile.limits == Limits())  # type: ignore[union-attr]


async def test_edge_values_round_trip_through_dynamodb(store: PartnerStore) -> None:
    precise = "0." + "1" * 38  # 38 significant digits: the most DynamoDB keeps
    r = cli(
        "partners",
        "add",
        "edge",
        "--contact",
        "ops@edge.example.com",
        "--bounce-limit",
        "1e-9",
        "--complaint-limit",
        precise,
        "--min-volume",
        "1000000000",
        "--warn-ratio",
        "0.999999999",
    )
    assert (r.code, r.err) == (0, ""), r
    expected = Limits(1e-9, float(precise), 1_000_000_000, 0.999999999)
    assert (await store.require_profile("edge")).limits == expected
    shown = cli("partners", "show", "edge", "--json")
    assert json.loads(shown.out)["limits"] == expected.as_json()

    r = cli("partners", "set", "edge", "--bounce-limit", "1", "--min-volume", " 1 ")
    assert r.code == 0, r
    limits = (await store.require_profile("edge")).limits
    assert (limits.bounce_rate, limits.min_volume) == (1.0, 1)


def test_to_attr_refuses_what_dynamodb_cannot_hold() -> None:
    for value in (1e-320, 1e-131, 1e130, 10**40 + 1, float("nan"), float("inf"), [0.5, 1e-320]):
        with pytest.raises(ValueError, match="cannot be stored in DynamoDB"):
            t.to_attr(value)


async def test_to_attr_floats_are_exact_through_dynamodb(clients: Any, table: str) -> None:
    values: dict[str, Any] = {
        "tiny": 1e-130,
        "third": 1 / 3,
        "tenth": 0.1,
        "big": 9.99e125,
        "int38": 10**38 - 1,
        "nested": {"a": [2.5, 1e-9], "b": 0.30000000000000004},
    }
    item = t.to_item({"pk": "X#edge", "sk": "X", **values})
    await clients.dynamodb.put_item(TableName=table, Item=item)
    got = await clients.dynamodb.get_item(TableName=table, Key=t.key("X#edge", "X"))
    back = t.from_item(got["Item"])
    for name in ("tiny", "third", "tenth", "big", "int38"):
        # from_item reads integral numbers as int: compare as the type that was written
        assert type(values[name])(back[name]) == values[name], name
    # Nested numbers come back as Decimal: the shortest decimal that is the same float.
    assert back["nested"] == {"a": [Decimal("2.5"), Decimal("1E-9")], "b": Decimal(repr(0.1 + 0.2))}


# ---- pause reasons: one limit, the same text in the table and the notice --------------


async def test_reason_longer_than_the_limit_is_refused(
    store: PartnerStore, moto_endpoint: str
) -> None:
    await store.create(Profile("acme", "ops@acme.example.com", Limits()))
    for reason, needle in (
        (
            "x" * (MAX_REASON_CHARS + 1),
            f"1001 characters; a reason may have at most {MAX_REASON_CHARS}",
        ),
        ("x" * 5000, "5000 characters"),
        ("   ", "give a reason"),
    ):
        refused(cli("partners", "pause", "acme", "--reason", reason), "--reason", needle)
    assert (await store.require_profile("acme")).status is Status.ACTIVE
    assert sent_emails(moto_endpoint) == []

    r = cli("partners", "pause", "--help")
    assert f"at most {MAX_REASON_CHARS} characters" in " ".join(r.out.split())


async def test_reason_at_the_limit_is_stored_and_sent_whole(
    store: PartnerStore, clients: Any, moto_endpoint: str
) -> None:
    await clients.sesv2.create_email_identity(EmailIdentity="guard@isv.example.com")
    await store.create(Profile("acme", "ops@acme.example.com", Limits()))
    reason = ("list audit; " * 100)[: MAX_REASON_CHARS - 1] + "!"
    r = cli("partners", "pause", "acme", "--reason", reason)
    assert r.code == 0 and "paused partner acme" in r.out, r
    assert (await store.require_profile("acme")).paused_reason == reason
    (notice,) = sent_emails(moto_endpoint)
    assert f"<p>Reason: {reason}</p>" in str(notice["body"])  # moto keeps the HTML part


async def test_cli_pause_with_an_invalid_contact_in_the_table(
    store: PartnerStore, clients: Any, moto_endpoint: str
) -> None:
    from tests.domain.test_transitions import write_bad_contact

    await clients.sesv2.create_email_identity(EmailIdentity="guard@isv.example.com")
    await store.create(Profile("acme", "ops@acme.example.com", Limits()))
    await write_bad_contact(store, clients)
    r = cli("partners", "pause", "acme", "--reason", "list audit")
    assert r.code == 0 and "paused partner acme (no notice sent)" in r.out, r
    assert (await store.require_profile("acme")).status is Status.PAUSED
    assert sent_emails(moto_endpoint) == []
    (line,) = [json.loads(x) for x in r.err.splitlines() if "notice_failed" in x]
    assert line["partner_id"] == "acme" and line["level"] == "error"
    assert "\r" not in r.err and "victim" not in r.err
