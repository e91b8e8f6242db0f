"""Hostile send jobs: refused with a reason naming the field, on every path (the model, the
Python API, the CLI, and the sender reading raw bodies off the queue), beside valid jobs
that are sent exactly once. The DLQ keeps every refusal's reason, even for a job too large
to carry it (see sesguard.aws.deadletter)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson
import pytest

from sesguard.aws.deadletter import (
    REASON_ATTRIBUTE,
    SHA256_ATTRIBUTE,
    TRUNCATED_ATTRIBUTE,
    dead_letter,
)
from sesguard.aws.enqueue import Enqueuer
from sesguard.aws.store import PartnerStore
from sesguard.core.jobs import MAX_SQS_MESSAGE_BYTES, JobError, parse_job
from sesguard.core.partners import (
    UNATTRIBUTED,
    Counters,
    InvalidPartnerId,
    Limits,
    Profile,
    utcnow,
)
from sesguard.ops.bootstrap import bootstrap
from tests.conftest import cli, one_line_error
from tests.sender.support import Env

GOOD: dict[str, Any] = {
    "partner_id": "acme",
    "from": "News <news@isv.example.com>",
    "to": ["ana@example.org"],
    "subject": "Your order",
    "text": "plain body",
}

# name -> (fields replacing GOOD's, the field the refusal must name, a reason fragment)
HOSTILE: dict[str, tuple[dict[str, Any], str, str]] = {
    "NUL in subject": ({"subject": "hi\x00there"}, "subject", "U+0000"),
    "NUL in from": ({"from": "news\x00@isv.example.com"}, "from", "U+0000"),
    "NUL in text": ({"text": "body\x00"}, "text", "NUL"),
    "NUL in html": ({"html": "<p>\x00</p>"}, "html", "NUL"),
    "NUL in a display name": ({"to": ["A\x00na <ana@example.org>"]}, "to.0", "U+0000"),
    "ESC in subject": ({"subject": "\x1b[31mred"}, "subject", "U+001B"),
    "VT in subject": ({"subject": "a\x0bb"}, "subject", "U+000B"),
    "FF in subject": ({"subject": "a\x0cb"}, "subject", "U+000C"),
    "DEL in subject": ({"subject": "a\x7fb"}, "subject", "U+007F"),
    "NEL in subject": ({"subject": "a\x85b"}, "subject", "U+0085"),
    "CSI (C1) in subject": ({"subject": "a\x9bb"}, "subject", "U+009B"),
    "LSEP in subject": ({"subject": "a\u2028b"}, "subject", "U+2028"),
    "PSEP in subject": ({"subject": "a\u2029b"}, "subject", "U+2029"),
    "CR in reply_to": ({"reply_to": ["r@example.org\rBcc: x@example.org"]}, "reply_to.0", "CR"),
    "LF in cc": ({"cc": ["c@example.org\nBcc: x@example.org"]}, "cc.0", "CR or LF"),
    "ESC in bcc": ({"bcc": ["\x1bb@example.org"]}, "bcc.0", "U+001B"),
    "comma in to": ({"to": ["ana@example.org, eve@example.org"]}, "to.0", "2 addresses"),
    "comma, no space": ({"to": ["ana@example.org,eve@example.org"]}, "to.0", "2 addresses"),
    "unquoted comma in name": ({"to": ["Doe, Ana <ana@example.org>"]}, "to.0", "2 addresses"),
    "semicolon after address": ({"to": ["ana@example.org;"]}, "to.0", "addresses"),
    "unbalanced quotes": ({"to": ['"Ana <ana@example.org>']}, "to.0", "not one mailbox"),
    "stray quote": ({"to": ['Ana" <ana@example.org>']}, "to.0", "not one mailbox"),
    "empty angle brackets": ({"to": ["<>"]}, "to.0", "not an e-mail address"),
    "brackets then garbage": ({"to": ["<ana@example.org> eve"]}, "to.0", "addresses"),
    "nested brackets": ({"to": ["<<ana@example.org>>"]}, "to.0", "addresses"),
    "address as display name": ({"to": ["eve@x.org <ana@example.org>"]}, "to.0", "addresses"),
    "group syntax": ({"to": ["friends: ana@example.org;"]}, "to.0", "not an e-mail address"),
    "group in from": ({"from": "team: news@isv.example.com;"}, "from", "not an e-mail"),
    "cc null": ({"cc": None}, "cc", "must not be null"),
    "bcc null": ({"bcc": None}, "bcc", "must not be null"),
    "reply_to null": ({"reply_to": None}, "reply_to", "must not be null"),
    "to null": ({"to": None}, "to", "must not be null"),
    "tags null": ({"tags": None}, "tags", "must not be null"),
    "control char in tag value": ({"tags": {"campaign": "a\x1bb"}}, "tags", "SES allows"),
    "reserved partner id": ({"partner_id": "_unattributed"}, "partner_id", "reserved"),
    "underscore partner id": ({"partner_id": "_ops"}, "partner_id", "reserved"),
}

STILL_FINE = [
    {"subject": "tab\tin subject"},  # TAB is the one control character headers allow
    {"to": ['"Doe, Ana" <ana@example.org>']},  # a quoted comma is part of the name
    {"to": ["<ana@example.org>"]},  # angle brackets without a display name
    {"to": ["Ána Núñez <ana@example.org>"]},
    {"text": "ESC \x1b and DEL \x7f may be in a body; only NUL may not"},
    {"cc": [], "bcc": [], "reply_to": [], "tags": {}},
]


def hostile(name: str) -> dict[str, Any]:
    return {**GOOD, "job_id": f"hostile-{list(HOSTILE).index(name)}", **HOSTILE[name][0]}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_each_hostile_job_is_refused_naming_its_field(name: str) -> None:
    _, field, fragment = HOSTILE[name]
    with pytest.raises(JobError) as info:
        parse_job(orjson.dumps(hostile(name)))
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(f"{field}: "), str(info.value)
    assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize("key", ["partner_id", "to", "tags.x"])
def test_a_duplicate_key_is_refused_naming_it(key: str) -> None:
    """orjson keeps the last value, another reader the first: the job must mean one thing."""
    body = orjson.dumps({**GOOD, "tags": {"x": "1"}}).decode()
    if key == "partner_id":
        body = '{"partner_id": "_unattributed", ' + body[1:]
    elif key == "to":
        body = '{"to": ["other@example.org"], ' + body[1:]
    else:
        body = body.replace('{"x":"1"}', '{"x":"1","x":"2"}')
        key = "x"
    with pytest.raises(JobError) as info:
        parse_job(body)
    assert info.value.field == key
    assert str(info.value).startswith(f"{key}: duplicate key"), str(info.value)
    with pytest.raises(JobError, match="duplicate key"):
        parse_job(body.encode())
    assert parse_job(orjson.dumps({**GOOD, "tags": {"x": "1"}}))  # once each is fine


@pytest.mark.parametrize("extra", STILL_FINE, ids=range(len(STILL_FINE)))
def test_ordinary_jobs_stay_valid(extra: dict[str, Any]) -> None:
    assert parse_job({**GOOD, **extra})


async def test_the_python_api_refuses_them_before_sqs(clients: Any) -> None:
    await clients.sqs.create_queue(QueueName="jobs")
    enqueuer = await Enqueuer.for_queue(clients.sqs, "jobs")
    for name in ("NUL in subject", "comma in to", "cc null", "reserved partner id"):
        with pytest.raises(JobError, match=HOSTILE[name][1]):
            await enqueuer.send([GOOD, hostile(name)])
    url = (await clients.sqs.get_queue_url(QueueName="jobs"))["QueueUrl"]
    attrs = await clients.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "0"  # not even GOOD


async def test_hostile_jobs_on_the_queue_go_to_the_dlq_and_valid_ones_are_sent_once(
    env: Env,
) -> None:
    """What the issue did: hostile bodies put straight on the queue beside valid jobs."""
    bodies = [hostile(name) for name in HOSTILE]
    valid = [{**GOOD, "job_id": f"ok-{i}", "to": [f"user{i}@example.org"]} for i in range(5)]
    await env.enqueue(*valid[:2], *bodies, *valid[2:])

    svc = await env.drain()

    assert sorted(p["Destination"]["ToAddresses"][0] for p in env.ses.sent) == sorted(
        v["to"][0] for v in valid
    )
    dead = {body["job_id"]: reason for body, reason in await env.dead_letters()}  # type: ignore[index]
    assert len(dead) == len(HOSTILE)
    for name in HOSTILE:
        reason = dead[hostile(name)["job_id"]]
        field, fragment = HOSTILE[name][1:]
        assert reason is not None and reason.startswith(f"{field}: "), (name, reason)
        assert fragment in reason, (name, reason)
    assert svc.tally["sent"] == len(valid)
    assert await env.queue_depth() == (0, 0)


async def test_a_job_too_large_for_its_reason_still_gets_one(env: Env) -> None:
    """300 KB on the queue (SQS allows up to 1 MiB): refused for its size; the DLQ copy
    is cut to 256 KiB and says so, with the whole body's size and SHA-256."""
    raw = orjson.dumps({**GOOD, "job_id": "huge", "text": "x" * 300_000}).decode()
    await env.clients.sqs.send_message(QueueUrl=env.queue_url, MessageBody=raw)
    await env.drain()
    resp = await env.clients.sqs.receive_message(
        QueueUrl=env.dlq_url, MessageAttributeNames=["All"], WaitTimeSeconds=0
    )
    [msg] = resp["Messages"]
    attrs = {k: v["StringValue"] for k, v in msg["MessageAttributes"].items()}
    assert "bytes; SQS allows" in attrs[REASON_ATTRIBUTE]
    assert int(attrs[TRUNCATED_ATTRIBUTE]) == len(raw.encode())
    assert attrs[SHA256_ATTRIBUTE] == hashlib.sha256(raw.encode()).hexdigest()
    assert raw.startswith(msg["Body"])
    size = len(msg["Body"].encode()) + sum(
        len(k) + len(v["DataType"]) + len(v["StringValue"].encode())
        for k, v in msg["MessageAttributes"].items()
    )
    assert size == MAX_SQS_MESSAGE_BYTES
    assert env.ses.sent == []


def test_dead_letter_keeps_small_bodies_whole_and_cuts_large_ones_on_a_character() -> None:
    small = dead_letter("{}", "why")
    assert (small.body, small.truncated_from) == ("{}", None)
    assert small.attributes == {REASON_ATTRIBUTE: {"DataType": "String", "StringValue": "why"}}
    assert dead_letter("", "why").body == "(empty body)"  # SQS refuses empty messages

    exact = "x" * (MAX_SQS_MESSAGE_BYTES - len(REASON_ATTRIBUTE) - len("String") - 3)
    assert dead_letter(exact, "why").body == exact  # fits to the byte: untouched
    over = dead_letter(exact + "y", "why")
    assert over.truncated_from == len(exact) + 1 and over.size <= MAX_SQS_MESSAGE_BYTES

    wide = "é" * MAX_SQS_MESSAGE_BYTES  # two bytes each: the cut must not split one
    letter = dead_letter(wide, "r" * 10_000)
    assert set(letter.body) == {"é"} and letter.size <= MAX_SQS_MESSAGE_BYTES
    assert MAX_SQS_MESSAGE_BYTES - letter.size <= 1
    assert len(letter.attributes[REASON_ATTRIBUTE]["StringValue"]) == 4096  # capped, kept


# ---- the CLI: reserved ids, and hostile values given as flags ---------------------------


async def test_cli_refuses_reserved_partner_ids_but_shows_unattributed(
    clients: Any, settings: Any
) -> None:
    await bootstrap(clients, settings, [])
    for args in (
        ("partners", "add", "_unattributed", "--contact", "ops@example.com"),
        ("partners", "add", "_ops", "--contact", "ops@example.com"),
        ("partners", "set", "_unattributed", "--min-volume", "5"),
        ("partners", "pause", "_unattributed"),
        ("partners", "resume", "_unattributed"),
        ("partners", "add", "acme", "--contact", "ops@example.com", "--tenant", "_t"),
        ("enqueue", "--partner", "_unattributed", "--from", "a@isv.example.com", "--to",
         "b@example.org", "--subject", "s", "--text", "t"),
    ):  # fmt: skip
        one_line_error(cli(*args), 2, "reserved")
    # Reading it is allowed: it is where untagged traffic is counted.
    store = PartnerStore.from_settings(clients.dynamodb, settings)
    await store.add_counts(UNATTRIBUTED, utcnow(), Counters(sent=3))
    r = cli("partners", "show", UNATTRIBUTED, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["totals"]["sent"] == 3
    with pytest.raises(InvalidPartnerId):  # nor can the Python API make a profile for it
        await store.create(Profile(UNATTRIBUTED, "ops@example.com", Limits()))


def test_cli_enqueue_refuses_hostile_flags(moto_endpoint: str) -> None:
    base = ["enqueue", "--partner", "acme", "--from", "a@isv.example.com", "--text", "t"]
    one_line_error(cli(*base, "--to", "a@example.org, b@example.org", "--subject", "s"), 2, "to.0")
    one_line_error(cli(*base, "--to", "a@example.org", "--subject", "\x1b[2J"), 2, "subject")


def test_enqueue_file_refuses_a_null_cc_by_name(moto_endpoint: str, tmp_path: Any) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(json.dumps({**GOOD, "cc": None}) + "\n")
    one_line_error(cli("enqueue", "--file", str(path)), 2, "line 1: cc: must not be null")
