"""The AWS permissions each service needs: the single source for least privilege.

deploy/sesguard.yaml grants each ECS task role exactly `GRANTS[service]`, and
tests/test_deploy_iam.py checks it both ways (docs/deploy.md). Resources are symbolic, so
this module stays free of CloudFormation:

  send_queue, send_dlq, events_queue, events_dlq   the SQS queues
  table:<prefix>                                   the table's items whose partition key
                                                   has that prefix (IAM LeadingKeys;
                                                   docs/table.md)
  events_bucket, events_objects                    the bucket (listed under events/ only),
                                                   the objects under events/
  identities, configuration_set, tenants           this account's SES identities (From
                                                   limited by ses:FromAddress), the set,
                                                   its SES tenants
  event_bus                                        the lifecycle events' bus, limited to
                                                   source "sesguard" and PUBLISHED[service]
  *                                                actions without resource scoping

A new kind of item is one entry in `items()` here and one line in that action's
`dynamodb:LeadingKeys` list in the template.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sesguard.aws import table as t
from sesguard.aws.lifecycle import DetailType

Grants = Mapping[str, frozenset[str]]  # IAM action -> symbolic resources

TABLE = "table:"  # symbolic table resources are TABLE + a partition-key prefix


def items(*prefixes: str) -> frozenset[str]:
    """The table, confined to the items whose partition key starts with one of `prefixes`."""
    return frozenset(TABLE + prefix for prefix in prefixes)


_SES_SEND = frozenset({"identities", "configuration_set"})

SENDER: Grants = {
    # the events DLQ: read (and made visible again at once) to tell whether SES's events
    # of a possibly sent job wait there uncounted (sesguard.ops.dlq.events_pending)
    "sqs:ReceiveMessage": frozenset({"send_queue", "events_dlq"}),
    "sqs:DeleteMessage": frozenset({"send_queue"}),
    "sqs:ChangeMessageVisibility": frozenset({"send_queue", "events_dlq"}),
    "sqs:GetQueueUrl": frozenset({"send_queue", "send_dlq", "events_queue", "events_dlq"}),
    # --drain: is the queue empty? possibly sent: do SES's events wait uncounted?
    "sqs:GetQueueAttributes": frozenset({"send_queue", "events_queue", "events_dlq"}),
    "sqs:SendMessage": frozenset({"send_dlq"}),  # malformed/rejected jobs, with the reason
    # gate: profile + totals + buckets; the sender tasks' leases (one partition); SES's
    # word on a possibly sent job (the partner's counted events around its claim)
    "dynamodb:Query": items(t.PARTNER_PREFIX, t.LEASE_PREFIX, t.SEEN_PREFIX),
    # the profile after winning a pause; an existing job claim
    "dynamodb:GetItem": items(t.PARTNER_PREFIX, t.JOB_PREFIX),
    # job claims; held jobs; this task's lease; lifecycle events (history + outbox, in
    # the transaction of the gate's pause or warn mark)
    "dynamodb:PutItem": items(t.JOB_PREFIX, t.HELD_PREFIX, t.LEASE_PREFIX, t.EVENT_PREFIX),
    # the gate's pause, warn marks; a stale claim turned "sent" on SES's word, or taken over
    "dynamodb:UpdateItem": items(t.PARTNER_PREFIX, t.JOB_PREFIX),
    # releasing a claim SES never saw; this task's lease when it stops; the outbox item
    # of a published event
    "dynamodb:DeleteItem": items(t.JOB_PREFIX, t.LEASE_PREFIX, t.EVENT_PREFIX),
    "dynamodb:BatchWriteItem": items(t.JOB_PREFIX),  # "sent" records, in batches
    "ses:SendEmail": _SES_SEND,  # partner mail and pause notices
    "ses:GetAccount": frozenset({"*"}),  # the account's max send rate (no resource type)
    "events:PutEvents": frozenset({"event_bus"}),  # Partner Paused / Warned by the gate
}

WORKER: Grants = {
    "sqs:ReceiveMessage": frozenset({"events_queue"}),
    "sqs:DeleteMessage": frozenset({"events_queue"}),
    "sqs:ChangeMessageVisibility": frozenset({"events_queue"}),
    "sqs:GetQueueUrl": frozenset({"events_queue", "events_dlq"}),
    "sqs:GetQueueAttributes": frozenset({"events_queue"}),  # --drain: is the queue empty?
    "sqs:SendMessage": frozenset({"events_dlq"}),  # notifications that are not S3 events
    "s3:GetObject": frozenset({"events_objects"}),
    # ListBucket: backfill lists objects, the S3 circuit breaker probes with HeadBucket,
    # and without it S3 answers 403 instead of 404 for a missing object, which the
    # worker must tell apart from a real denial.
    "s3:ListBucket": frozenset({"events_bucket"}),
    # policy evaluation after each object; the lifecycle outbox sweep; what a
    # partner-minute has counted; an object's "counted" marker
    "dynamodb:Query": items(t.PARTNER_PREFIX, t.EVENT_PREFIX, t.SEEN_PREFIX, t.OBJECT_PREFIX),
    "dynamodb:GetItem": items(t.PARTNER_PREFIX),  # the profile, after winning a pause
    # counters and partner-minute versions (in transactions), pause, warn marks
    "dynamodb:UpdateItem": items(t.PARTNER_PREFIX, t.SEEN_PREFIX),
    # "counted" markers; the keys of counted events (in the counters' transactions);
    # lifecycle events (history + outbox, in the transaction of a pause or warn mark)
    "dynamodb:PutItem": items(t.OBJECT_PREFIX, t.SEEN_PREFIX, t.EVENT_PREFIX),
    "dynamodb:DeleteItem": items(t.EVENT_PREFIX),  # the outbox item of a published event
    "ses:SendEmail": frozenset({"identities"}),  # pause notices (no configuration set)
    # the account's verified identities: hard bounces to them stay out of the bounce rate
    "ses:ListEmailIdentities": frozenset({"*"}),
    "events:PutEvents": frozenset({"event_bus"}),  # lifecycle events; the outbox sweep
}

# Extra grants when SESGUARD_USE_TENANTS is on (template condition UseTenants): both
# services may win a pause and then mirror it to the partner's SES tenant.
TENANT_MIRROR: Grants = {
    "ses:GetTenant": frozenset({"tenants"}),
    "ses:UpdateReputationEntityCustomerManagedStatus": frozenset({"tenants"}),
}

# What an operator running `sesguard partners add` with tenants on needs (not a task
# role: documented in docs/deploy.md for the operator's own credentials).
OPERATOR_TENANTS: Grants = {
    "ses:CreateTenant": frozenset({"tenants"}),
    "ses:GetTenant": frozenset({"tenants"}),
    "ses:CreateTenantResourceAssociation": frozenset(
        {"tenants", "identities", "configuration_set"}
    ),
    "ses:UpdateReputationEntityCustomerManagedStatus": frozenset({"tenants"}),
}

GRANTS: Mapping[str, Grants] = {"sender": SENDER, "worker": WORKER}

# The lifecycle events each task role may publish (the template's events:detail-type
# condition): the sender's gate pauses and warns, its throttle reaches and releases daily
# quotas; the worker does too, and its outbox
# sweep republishes whatever an operator's command (or a sender) left unpublished.
PUBLISHED: Mapping[str, frozenset[str]] = {
    "sender": frozenset(
        {
            DetailType.PAUSED.value,
            DetailType.WARNED.value,
            DetailType.QUOTA_REACHED.value,  # a partner's daily quota (sender/throttle.py)
            DetailType.QUOTA_RELEASED.value,
        }
    ),
    "worker": frozenset(kind.value for kind in DetailType),
}

# botocore service name -> IAM prefix, where they differ.
_PREFIX = {"sesv2": "ses"}

# API operations authorised by a differently named IAM action (or by none).
_RENAMED: Mapping[tuple[str, str], frozenset[str]] = {
    ("sqs", "DeleteMessageBatch"): frozenset({"sqs:DeleteMessage"}),
    ("sqs", "ChangeMessageVisibilityBatch"): frozenset({"sqs:ChangeMessageVisibility"}),
    ("sqs", "SendMessageBatch"): frozenset({"sqs:SendMessage"}),
    ("s3", "HeadObject"): frozenset({"s3:GetObject"}),
    ("s3", "HeadBucket"): frozenset({"s3:ListBucket"}),
    ("s3", "ListObjectsV2"): frozenset({"s3:ListBucket"}),
    ("s3", "ListObjects"): frozenset({"s3:ListBucket"}),
    ("dynamodb", "TransactGetItems"): frozenset({"dynamodb:GetItem"}),
    ("sts", "GetCallerIdentity"): frozenset(),  # needs no permission
}

# TransactWriteItems has no IAM action of its own: each item is authorised as the
# single-item action it performs.
_TRANSACT_ITEM_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}


def iam_actions(
    service: str, operation: str, params: Mapping[str, Any] | None = None
) -> frozenset[str]:
    """The IAM actions AWS checks for one API call (botocore service and operation names).

    For TransactWriteItems the request decides; pass its params (without them every
    item kind is assumed, which is the conservative answer).
    """
    if (service, operation) == ("dynamodb", "TransactWriteItems"):
        if params is None:
            return frozenset(_TRANSACT_ITEM_ACTIONS.values())
        kinds = {kind for item in params.get("TransactItems", []) for kind in item}
        return frozenset(_TRANSACT_ITEM_ACTIONS[k] for k in kinds if k in _TRANSACT_ITEM_ACTIONS)
    if (service, operation) in _RENAMED:
        return _RENAMED[(service, operation)]
    return frozenset({f"{_PREFIX.get(service, service)}:{operation}"})


@dataclass(frozen=True)
class TableRequest:
    """One authorisation AWS makes for a DynamoDB call: an action on a table (or one of
    its indexes) for the partition keys the request touches (`dynamodb:LeadingKeys`)."""

    action: str
    table: str
    index: str | None
    keys: frozenset[str]


_EQUALS = re.compile(r"(#?\w+)\s*=\s*(:\w+)")
# The partition key of the table and of each index (sesguard/aws/table.py, bootstrap).
_HASH_KEYS = {None: "pk", t.PARTNERS_INDEX: t.KIND_ATTRIBUTE}


def _pk(key: Mapping[str, Any]) -> str:
    return str(key["pk"]["S"])


def _query_key(params: Mapping[str, Any]) -> str:
    """The partition key value a Query's KeyConditionExpression names."""
    names = params.get("ExpressionAttributeNames", {})
    hash_key = _HASH_KEYS[params.get("IndexName")]
    for name, placeholder in _EQUALS.findall(params["KeyConditionExpression"]):
        if names.get(name, name) == hash_key:
            return str(params["ExpressionAttributeValues"][placeholder]["S"])
    raise ValueError(f"no partition key in {params['KeyConditionExpression']!r}")


def table_requests(operation: str, params: Mapping[str, Any]) -> list[TableRequest]:
    """What AWS authorises for one DynamoDB call (botocore operation name and params):
    single-item calls and Query once, for their key; BatchWriteItem once per table, for
    every key in it; TransactWriteItems once per item, as the single-item action it is."""
    if operation == "TransactWriteItems":
        out = []
        for item in params["TransactItems"]:
            ((kind, body),) = item.items()
            key = body["Item"] if kind == "Put" else body["Key"]
            out.append(
                TableRequest(
                    _TRANSACT_ITEM_ACTIONS[kind], body["TableName"], None, frozenset({_pk(key)})
                )
            )
        return out
    if operation in ("BatchWriteItem", "BatchGetItem"):
        action = f"dynamodb:{operation}"
        out = []
        for table, entries in params["RequestItems"].items():
            if operation == "BatchGetItem":
                keys = [_pk(k) for k in entries["Keys"]]
            else:
                keys = [
                    _pk(e["PutRequest"]["Item"] if "PutRequest" in e else e["DeleteRequest"]["Key"])
                    for e in entries
                ]
            out.append(TableRequest(action, table, None, frozenset(keys)))
        return out
    action = f"dynamodb:{operation}"
    if operation == "Query":
        key = _query_key(params)
    elif operation == "PutItem":
        key = _pk(params["Item"])
    elif "Key" in params:
        key = _pk(params["Key"])
    else:  # Scan, DescribeTable, ...: no partition key in the request
        return [TableRequest(action, params["TableName"], params.get("IndexName"), frozenset())]
    return [TableRequest(action, params["TableName"], params.get("IndexName"), frozenset({key}))]
