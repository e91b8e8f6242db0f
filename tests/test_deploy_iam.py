"""Least privilege, both ways.

(a) The template's task roles grant exactly sesguard.ops.permissions.GRANTS: no action more,
    none less, each on exactly its resources; the table only through dynamodb:LeadingKeys
    prefixes, which are part of the resource (`table:P#`, ...).
(b) The code really needs them: the sender and the worker run (their own `run()`, each
    with its own Clients) over a short end-to-end on moto; every request they make, on
    the resource and the item kind it touches, must be granted by GRANTS and allowed by
    the template's statements with their conditions (the partition key of every DynamoDB
    request against LeadingKeys, the From address of every SendEmail, the prefix of every
    listing), and every granted action on every item kind must be used, or be listed in
    UNREACHED with the path that uses it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

import sesguard.aws.clients
from sesguard.aws import table as t
from sesguard.aws.held import count_held
from sesguard.aws.lifecycle import SOURCE, DetailType
from sesguard.aws.seen import ses_accepted
from sesguard.aws.store import PartnerStore
from sesguard.core.jobs import JOB_TAG, job_tag_value
from sesguard.core.partners import Limits, Profile, Status
from sesguard.ops.bootstrap import bootstrap
from sesguard.ops.permissions import (
    GRANTS,
    PUBLISHED,
    TABLE,
    TENANT_MIRROR,
    iam_actions,
    table_requests,
)
from sesguard.settings import Settings, load_settings
from tests.fixtures.cfn_module import load_cfn

ROOT = Path(__file__).resolve().parents[1]


cfn = load_cfn()
ROLES = {"sender": "SenderTaskRole", "worker": "WorkerTaskRole"}


# ---- (a) the template grants exactly the lists ---------------------------------------


def _symbolic(r: Any) -> dict[str, str]:
    """Concrete ARN (as the resolver computes it) -> symbolic resource of permissions.py."""
    p = cfn.PSEUDO
    ses = f"arn:{p['AWS::Partition']}:ses:{p['AWS::Region']}:{p['AWS::AccountId']}"
    bucket = r.get_att("EventsBucket", "Arn")
    return {
        r.get_att("SendQueue", "Arn"): "send_queue",
        r.get_att("SendDeadLetterQueue", "Arn"): "send_dlq",
        r.get_att("EventsQueue", "Arn"): "events_queue",
        r.get_att("EventsDeadLetterQueue", "Arn"): "events_dlq",
        bucket: "events_bucket",
        f"{bucket}/events/*": "events_objects",
        f"{ses}:identity/*": "identities",
        f"{ses}:configuration-set/{r.ref('ConfigurationSet')}": "configuration_set",
        f"{ses}:tenant/*": "tenants",
        _bus_arn(r.ref("EventBusName")): "event_bus",
        "*": "*",
    }


def _bus_arn(bus: str) -> str:
    """An EventBridge bus, by name or ARN (as SESGUARD_EVENT_BUS may give it)."""
    if bus.startswith("arn:"):
        return bus
    p = cfn.PSEUDO
    return f"arn:aws:events:{p['AWS::Region']}:{p['AWS::AccountId']}:event-bus/{bus}"


def _table_items(role: str, stmt: Any) -> set[str]:
    """The table, as far as a statement's dynamodb:LeadingKeys lets it: "table:P#", ..."""
    keys = stmt.condition.get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys")
    assert keys, f"{role} {stmt.sid}: the table without dynamodb:LeadingKeys"
    prefixes = {k.removesuffix("*") for k in keys}
    assert all(k.endswith("*") for k in keys) and prefixes <= set(t.PREFIXES), (
        f"{role} {stmt.sid}: LeadingKeys must be prefixes of sesguard.aws.table, as 'P#*': {keys}"
    )
    return {TABLE + prefix for prefix in prefixes}


def _granted(r: Any, role: str) -> dict[str, frozenset[str]]:
    names = _symbolic(r)
    table = r.get_att("Table", "Arn")
    out: dict[str, set[str]] = {}
    for stmt in cfn.role_statements(r, role):
        symbols: set[str] = set()
        for arn in stmt.resources:
            if arn == table:
                symbols |= _table_items(role, stmt)
                continue
            assert arn in names, f"{role} {stmt.sid}: {arn} not in permissions.py's vocabulary"
            symbols.add(names[arn])
        for action in stmt.actions:
            out.setdefault(action, set()).update(symbols)
    return {action: frozenset(symbols) for action, symbols in out.items()}


def _merge(*grants: Any) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for g in grants:
        for action, resources in g.items():
            out[action] = out.get(action, frozenset()) | resources
    return out


@pytest.mark.parametrize("service", sorted(ROLES))
@pytest.mark.parametrize("tenants", [False, True])
def test_task_role_grants_exactly_the_list(service: str, tenants: bool) -> None:
    r = cfn.Resolver(cfn.load(), UseTenants=str(tenants).lower())
    expected = _merge(GRANTS[service], TENANT_MIRROR if tenants else {})
    granted = _granted(r, ROLES[service])
    assert set(granted) - set(expected) == set(), "granted but not in sesguard.ops.permissions"
    assert set(expected) - set(granted) == set(), "in sesguard.ops.permissions but not granted"
    for action, resources in expected.items():
        assert granted[action] == resources, action


def _statements(r: Any, service: str, action: str) -> list[Any]:
    return [st for st in cfn.role_statements(r, ROLES[service]) if action in st.actions]


@pytest.mark.parametrize("service", sorted(ROLES))
def test_sending_is_limited_by_from_address(service: str) -> None:
    """Partner mail (the sender only): AllowedFromAddresses. Notices (both services):
    NotifyFrom exactly, and without the configuration set, as sesguard sends them."""
    allowed = ["*@mail.isv.example.com", "guard@isv.example.com"]
    r = cfn.Resolver(cfn.load(), AllowedFromAddresses=",".join(allowed))
    conditions = {st.sid: st.condition for st in _statements(r, service, "ses:SendEmail")}
    expected = {"SendNotice": {"StringEquals": {"ses:FromAddress": [r.ref("NotifyFrom")]}}}
    if service == "sender":
        expected["SendEmail"] = {"StringLike": {"ses:FromAddress": allowed}}
    assert conditions == expected
    (notice,) = [st for st in _statements(r, service, "ses:SendEmail") if st.sid == "SendNotice"]
    assert all(":identity/" in arn for arn in notice.resources)


def test_allowed_from_addresses_default_is_loud() -> None:
    spec = cfn.load()["Parameters"]["AllowedFromAddresses"]
    assert spec["Default"] == "*"
    assert spec["Description"].startswith("SET THIS IN PRODUCTION")
    assert "ANY" in spec["Description"]


@pytest.mark.parametrize("service", sorted(ROLES))
def test_lifecycle_events_only_from_sesguard_and_only_the_roles_kinds(service: str) -> None:
    """PutEvents on the one bus, with source "sesguard" and the detail types the role
    publishes (sesguard.ops.permissions.PUBLISHED): a task cannot forge other events."""
    r = cfn.Resolver(cfn.load(), EventBusName="partner-events")
    (stmt,) = _statements(r, service, "events:PutEvents")
    assert stmt.resources == {_bus_arn("partner-events")}
    condition = stmt.condition["ForAllValues:StringEquals"]
    assert set(stmt.condition) == {"ForAllValues:StringEquals"}
    assert set(condition) == {"events:source", "events:detail-type"}
    assert condition["events:source"] == [SOURCE]
    assert sorted(condition["events:detail-type"]) == sorted(PUBLISHED[service])
    assert PUBLISHED["worker"] == {k.value for k in DetailType}  # its sweep republishes all


def test_bucket_listing_is_limited_to_the_events_prefix() -> None:
    r = cfn.Resolver(cfn.load())
    prefix = cfn.container_environment(r, "WorkerTaskDefinition")["SESGUARD_EVENTS_PREFIX"]
    (listing,) = _statements(r, "worker", "s3:ListBucket")
    assert listing.condition == {"StringLike": {"s3:prefix": [f"{prefix}*"]}}


@pytest.mark.parametrize("service", sorted(ROLES))
def test_every_table_grant_is_confined_to_key_prefixes(service: str) -> None:
    r = cfn.Resolver(cfn.load())
    table = r.get_att("Table", "Arn")
    for stmt in cfn.role_statements(r, ROLES[service]):
        if table in stmt.resources:
            assert stmt.resources == {table}, stmt.sid  # never an index: listing is operator-only
            assert set(stmt.condition) == {"ForAllValues:StringLike"}, stmt.sid
            assert _table_items(ROLES[service], stmt)


def test_only_the_task_roles_can_be_assumed_by_ecs_tasks() -> None:
    r = cfn.Resolver(cfn.load())
    for role in ROLES.values():
        (stmt,) = r.props(role)["AssumeRolePolicyDocument"]["Statement"]
        assert stmt["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
        assert (
            stmt["Condition"]["StringEquals"]["aws:SourceAccount"] == cfn.PSEUDO["AWS::AccountId"]
        )


def test_iam_action_mapping() -> None:
    assert iam_actions("sqs", "DeleteMessageBatch") == {"sqs:DeleteMessage"}
    assert iam_actions("sesv2", "SendEmail") == {"ses:SendEmail"}
    assert iam_actions("s3", "ListObjectsV2") == {"s3:ListBucket"}
    assert iam_actions("s3", "HeadBucket") == {"s3:ListBucket"}  # the S3 breaker's probe
    assert iam_actions("sts", "GetCallerIdentity") == set()
    items = {"TransactItems": [{"Put": {}}, {"Update": {}}, {"Update": {}}]}
    assert iam_actions("dynamodb", "TransactWriteItems", items) == {
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    }
    assert "dynamodb:ConditionCheckItem" in iam_actions("dynamodb", "TransactWriteItems")
    assert iam_actions("dynamodb", "BatchWriteItem") == {"dynamodb:BatchWriteItem"}
    assert iam_actions("events", "PutEvents") == {"events:PutEvents"}


# ---- (b) what the services really call -----------------------------------------------

# Granted actions the end-to-end below does not reach, and the path that needs each.
UNREACHED: dict[str, dict[str, str]] = {
    "sender": {
        "dynamodb:GetItem table:J#": (
            "reading an existing job claim when a failed claim does not return the old item"
            " (sender/records.py); moto returns it with the condition failure"
        ),
        "sqs:ChangeMessageVisibility": (
            "retry/defer/give-back (ChangeMessageVisibilityBatch 0 or a delay) and the"
            " extension of slow jobs; covered by the sender's own SIGTERM and throttling tests"
        ),
    },
    "worker": {
        "sqs:ChangeMessageVisibility": (
            "returning a message whose object failed to apply (DynamoDB/S3 errors)"
        ),
    },
}


@dataclass
class CallLog:
    """(service, operation, params) of every call one service's clients make."""

    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def hook(self, service: str) -> Any:
        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            self.calls.append((service, model.name, dict(params)))

        return record


@dataclass
class Spy:
    """Wraps sesguard.aws.clients.open_clients: the real clients, plus a record per service."""

    service: str
    logs: dict[str, CallLog]
    clients: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.logs.setdefault(self.service, CallLog())

    @asynccontextmanager
    async def __call__(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async with sesguard.aws.clients.open_clients(*args, **kwargs) as c:
            log = self.logs[self.service]
            for name in ("dynamodb", "sqs", "s3", "sesv2", "firehose", "sts", "events"):
                getattr(c, name).meta.events.register("provide-client-params", log.hook(name))
            # the sender's SendEmail: an SESv2 client of its own (sesguard.aws.clients)
            c.ses_send.meta.events.register("provide-client-params", log.hook("sesv2"))
            self.clients.append(c)
            yield c


@dataclass(frozen=True)
class Request:
    """One authorisation AWS makes for a call: an action on resources (as symbols of
    sesguard.ops.permissions and as ARNs), with the condition keys the request carries."""

    action: str
    symbols: frozenset[str]
    arns: tuple[str, ...]
    context: dict[str, Any] = field(default_factory=dict)


def _requests(
    service: str, op: str, params: dict[str, Any], s: Settings, bucket: str
) -> list[Request]:
    p = cfn.PSEUDO
    region, account = p["AWS::Region"], p["AWS::AccountId"]
    if service == "dynamodb":
        out = []
        for req in table_requests(op, params):
            arn = f"arn:aws:dynamodb:{region}:{account}:table/{req.table}"
            if req.index:
                arn += f"/index/{req.index}"
            symbols = {
                (TABLE + t.pk_prefix(pk)) if req.table == s.table and not req.index else f"?{arn}"
                for pk in req.keys
            }
            context = {"dynamodb:LeadingKeys": sorted(req.keys)}
            out.append(Request(req.action, frozenset(symbols), (arn,), context))
        return out
    actions = iam_actions(service, op, params)
    symbols: set[str] = set()
    arns: list[str] = []
    context: dict[str, Any] = {}
    if service == "sqs":
        queues = {
            s.send_queue: "send_queue",
            f"{s.send_queue}-dlq": "send_dlq",
            s.events_queue: "events_queue",
            f"{s.events_queue}-dlq": "events_dlq",
        }
        name = params.get("QueueName") or urlparse(params["QueueUrl"]).path.rsplit("/", 1)[-1]
        symbols.add(queues.get(name, f"?queue {name}"))
        arns.append(f"arn:aws:sqs:{region}:{account}:{name}")
    elif service == "s3":
        if "Key" in params:
            key = params["Key"]
            ok = params["Bucket"] == bucket and key.startswith("events/")
            symbols.add("events_objects" if ok else f"?object {params['Bucket']}/{key}")
            arns.append(f"arn:aws:s3:::{params['Bucket']}/{key}")
        else:
            symbols.add("events_bucket" if params["Bucket"] == bucket else "?bucket")
            arns.append(f"arn:aws:s3:::{params['Bucket']}")
            if "Prefix" in params:
                context["s3:prefix"] = params["Prefix"]
    elif service == "sesv2" and op == "SendEmail":
        address = parseaddr(params["FromEmailAddress"])[1]
        context["ses:FromAddress"] = address
        symbols.add("identities")
        arns.append(f"arn:aws:ses:{region}:{account}:identity/{address.rpartition('@')[2]}")
        cs = params.get("ConfigurationSetName")
        if cs is not None:
            ok = cs == s.configuration_set
            symbols.add("configuration_set" if ok else f"?configuration set {cs}")
            arns.append(f"arn:aws:ses:{region}:{account}:configuration-set/{cs}")
    elif service == "sesv2" and op in ("GetAccount", "ListEmailIdentities"):
        symbols.add("*")
        arns.append("*")
    elif service == "events" and op == "PutEvents":
        entries = params["Entries"]
        for bus in sorted({e.get("EventBusName", "default") for e in entries}):
            symbols.add("event_bus" if bus == s.event_bus else f"?event bus {bus}")
            arns.append(_bus_arn(bus))
        context["events:source"] = sorted({e["Source"] for e in entries})
        context["events:detail-type"] = sorted({e["DetailType"] for e in entries})
    return [Request(a, frozenset(symbols), tuple(arns), context) for a in actions]


def _ses_event(
    kind: str, partner: str, recipients: list[str], now: datetime, job: str | None = None
) -> dict[str, Any]:
    ts = now.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    tags = {"partner_id": [partner]}
    if job is not None:
        tags[JOB_TAG] = [job_tag_value(job)]
    mail = {
        "timestamp": ts,
        "source": "news@isv.example.com",
        "messageId": str(uuid.uuid4()),
        "destination": recipients,
        "tags": tags,
    }
    if kind == "Send":
        return {"eventType": "Send", "mail": mail, "send": {}}
    return {
        "eventType": "Bounce",
        "mail": mail,
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "timestamp": ts,
            "bouncedRecipients": [{"emailAddress": a} for a in recipients],
        },
    }


def _job(job_id: str, partner: str, sender: str = "news@isv.example.com") -> str:
    return json.dumps(
        {
            "job_id": job_id,
            "partner_id": partner,
            "from": sender,
            "to": ["ana@example.org"],
            "subject": "Your order",
            "text": "Shipped.",
        }
    )


async def _run(module: Any, argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return int(await module.run(parser.parse_args(argv), settings))


async def test_services_use_exactly_what_their_roles_grant(
    clients: Any, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sender.main
    import worker.main

    settings = load_settings(
        events_prefix="events/", heartbeat_file=str(tmp_path / "heartbeat"), concurrency=8
    )
    await bootstrap(clients, settings, ["isv.example.com"])
    account = await clients.account_id()
    bucket = settings.bucket_name(account)
    store = PartnerStore(
        clients.dynamodb, settings.table, settings.window_hours, settings.bucket_retention_days
    )
    for pid, limit in (("good", 0.05), ("dirty", 0.05), ("lowered", 0.5)):
        await store.create(Profile(pid, f"ops@{pid}.example.com", Limits(limit, 0.001, 1)))

    logs: dict[str, CallLog] = {}
    monkeypatch.setattr(sender.main, "open_clients", Spy("sender", logs))
    monkeypatch.setattr(worker.main, "open_clients", Spy("worker", logs))
    send_url = (await clients.sqs.get_queue_url(QueueName=settings.send_queue))["QueueUrl"]
    events_url = (await clients.sqs.get_queue_url(QueueName=settings.events_queue))["QueueUrl"]

    # 1. Sender: two good jobs, one SES rejects (unverified sender), one malformed.
    for body in (
        _job("good-1", "good"),
        _job("good-2", "good"),
        _job("rejected-1", "good", "x@unverified.example.net"),
        "not json",
    ):
        await clients.sqs.send_message(QueueUrl=send_url, MessageBody=body)
    assert await _run(sender.main, ["--drain"], settings) == 0

    # 2. SES events land in S3: `dirty` bounces 5 of 10 (paused by the worker); `lowered`
    #    1 of 10, under its limit of 50%. Plus a message that is not an S3 notification.
    #    The Send events of `good-1` (recorded "sent") and of `lost-1` (a claim its dead
    #    sender left "sending") name their jobs: recorded with the counted events.
    now = datetime.now(UTC)
    await clients.dynamodb.put_item(
        TableName=settings.table,
        Item=t.to_item(
            {
                "pk": t.job_pk("lost-1"),
                "sk": t.JOB_SK,
                "state": "sending",
                "token": "dead",
                "partner_id": "good",
                "claimed_at": now.isoformat(),
            }
        ),
    )
    records = [
        _ses_event("Send", "dirty", [f"d{i}@example.org" for i in range(10)], now),
        _ses_event("Bounce", "dirty", [f"d{i}@example.org" for i in range(5)], now),
        _ses_event("Send", "lowered", [f"l{i}@example.org" for i in range(10)], now),
        _ses_event("Bounce", "lowered", ["l0@example.org"], now),
        _ses_event("Send", "good", ["ana@example.org"], now, job="good-1"),
        _ses_event("Send", "good", ["ana@example.org"], now, job="lost-1"),
    ]
    key = f"events/{now:%Y/%m/%d/%H}/sesguard-ses-events-1-{now:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}"
    body = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in records))

    async def depth() -> int:
        resp = await clients.sqs.get_queue_attributes(
            QueueUrl=events_url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        return int(resp["Attributes"]["ApproximateNumberOfMessages"])

    before = await depth()
    await clients.s3.put_object(Bucket=bucket, Key=key, Body=body)
    if await depth() == before:
        # This moto build did not deliver the S3 notification: deliver it as S3 would.
        notice = {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": len(body)}},
                }
            ]
        }
        await clients.sqs.send_message(QueueUrl=events_url, MessageBody=json.dumps(notice))
    await clients.sqs.send_message(QueueUrl=events_url, MessageBody='{"hello": "world"}')
    assert await _run(worker.main, ["--drain"], settings) == 0
    dirty = await store.require_profile("dirty")
    assert dirty.status is Status.PAUSED, "the worker should have paused `dirty`"
    assert await ses_accepted(
        clients.dynamodb, settings.table, "good", "lost-1", now, settings.visibility_timeout
    ), "the worker should have recorded SES's word on lost-1"

    # 3. An operator lowers `lowered`'s limit: the sender's gate pauses it; both jobs held.
    #    And `lost-2`, claimed by a sender that died two hours ago, SES never told of it:
    #    its partition read, the events queues asked (the events DLQ holds the worker's
    #    bad notification: read, released), the stale claim taken over, the job sent.
    await store.update("lowered", bounce_limit=0.05)
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    await clients.dynamodb.put_item(
        TableName=settings.table,
        Item=t.to_item(
            {
                "pk": t.job_pk("lost-2"),
                "sk": t.JOB_SK,
                "state": "sending",
                "token": "dead",
                "partner_id": "good",
                "claimed_at": long_ago.isoformat(),
            }
        ),
    )
    for body in (_job("dirty-1", "dirty"), _job("lowered-1", "lowered"), _job("lost-2", "good")):
        await clients.sqs.send_message(QueueUrl=send_url, MessageBody=body)
    assert await _run(sender.main, ["--drain"], settings) == 0
    assert (await store.require_profile("lowered")).status is Status.PAUSED
    lost = await clients.dynamodb.get_item(
        TableName=settings.table, Key=t.key(t.job_pk("lost-2"), t.JOB_SK), ConsistentRead=True
    )
    assert lost["Item"]["state"]["S"] == "sent", "the sender should have re-sent lost-2"
    assert (
        await count_held(store.dynamodb, store.table, "dirty") == 1
        and await count_held(store.dynamodb, store.table, "lowered") == 1
    )

    # 4. Backfill (an ECS one-off task with the worker's role): lists and skips what was
    #    counted; a new object with one more Send for `dirty` in the same minute is counted
    #    once, after the backfill's guess (an empty minute) meets what the service wrote
    #    and reads it (Query D#).
    late = [_ses_event("Send", "dirty", ["d10@example.org"], now)]
    late_key = key.replace("sesguard-ses-events-1-", "sesguard-ses-events-2-")
    await clients.s3.put_object(
        Bucket=bucket,
        Key=late_key,
        Body=gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in late)),
    )
    await clients.sqs.purge_queue(QueueUrl=events_url)  # its notification: the backfill's
    assert await _run(worker.main, ["backfill", "--prefix", "events/"], settings) == 0
    state = await store.get_state("dirty")
    assert state.totals.sent == 11 and state.totals.hard_bounces == 5

    # Each service used its own clients, nothing else.
    for svc in ("sender", "worker"):
        assert logs[svc].calls, f"{svc} made no AWS calls through its own clients"

    # Every request, as AWS would authorise it: granted by sesguard.ops.permissions, and
    # allowed by the template's statements with their conditions (LeadingKeys of every
    # key written or read, ses:FromAddress, s3:prefix), resolved with the run's names.
    template = cfn.Resolver(cfn.load())
    problems: list[str] = []
    for svc, log in logs.items():
        grants = GRANTS[svc]
        statements = cfn.role_statements(template, ROLES[svc])
        used: set[str] = set()
        for service, op, params in log.calls:
            for req in _requests(service, op, params, settings, bucket):
                used |= {req.action} | {f"{req.action} {sym}" for sym in req.symbols}
                if req.action not in grants:
                    problems.append(f"{svc}: {service}.{op} needs {req.action}, not granted")
                    continue
                for sym in sorted(req.symbols - grants[req.action]):
                    problems.append(f"{svc}: {service}.{op} on {sym}: {req.action} not granted")
                for arn in req.arns:
                    if not cfn.allows(statements, req.action, arn, req.context):
                        problems.append(
                            f"{svc}: {service}.{op}: the template denies {req.action} on"
                            f" {arn} with {req.context}"
                        )
        granted = {f"{a} {sym}" for a, syms in grants.items() for sym in syms}
        unused = granted - used - set(UNREACHED.get(svc, {}))
        unused = {g for g in unused if g.split(" ", 1)[0] not in UNREACHED.get(svc, {})}
        problems += [f"{svc}: {g} granted but never used" for g in sorted(unused)]
        stale = {u for u in UNREACHED.get(svc, {}) if u not in set(grants) | granted}
        problems += [f"{svc}: UNREACHED lists {u}, which is not granted" for u in sorted(stale)]
    assert not problems, "\n".join(problems)
