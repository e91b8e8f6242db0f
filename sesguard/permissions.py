"""The AWS permissions each service needs: the single source for least privilege.

deploy/sesguard.yaml grants each ECS task role exactly `GRANTS[service]` (actions on
symbolic resources), and tests/test_deploy_iam.py checks both directions: the template
grants nothing more and nothing less, and every API call the services make while running
maps (through `iam_actions`) to a granted action, with no granted action left unused.

Resources are symbolic so this module stays free of CloudFormation:
  send_queue / send_dlq / events_queue / events_dlq   the SQS queues
  table                                                the DynamoDB table
  events_bucket / events_objects                       the bucket / objects under events/
  identities / configuration_set                       this account's SES identities
                                                       (From limited by ses:FromAddress), the set
  tenants                                              SES tenants of this account
  *                                                    actions without resource scoping
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Grants = Mapping[str, frozenset[str]]  # IAM action -> symbolic resources

_SES_SEND = frozenset({"identities", "configuration_set"})

SENDER: Grants = {
    "sqs:ReceiveMessage": frozenset({"send_queue"}),
    "sqs:DeleteMessage": frozenset({"send_queue"}),
    "sqs:ChangeMessageVisibility": frozenset({"send_queue"}),
    "sqs:GetQueueUrl": frozenset({"send_queue", "send_dlq"}),
    "sqs:GetQueueAttributes": frozenset({"send_queue"}),  # --drain: is the queue empty?
    "sqs:SendMessage": frozenset({"send_dlq"}),  # malformed/rejected jobs, with the reason
    "dynamodb:Query": frozenset({"table"}),  # gate: profile + totals + buckets
    "dynamodb:GetItem": frozenset({"table"}),  # profile after a pause, existing job claims
    "dynamodb:PutItem": frozenset({"table"}),  # once-per-job claim, held jobs
    "dynamodb:UpdateItem": frozenset({"table"}),  # the gate's pause transition
    "dynamodb:DeleteItem": frozenset({"table"}),  # releasing a claim SES never saw
    "dynamodb:BatchWriteItem": frozenset({"table"}),  # "sent" records, in batches
    "ses:SendEmail": _SES_SEND,  # partner mail and pause notices
    "ses:GetAccount": frozenset({"*"}),  # the account's max send rate (no resource type)
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
    "dynamodb:Query": frozenset({"table"}),  # policy evaluation after each apply
    "dynamodb:GetItem": frozenset({"table"}),  # the profile, after winning a pause
    "dynamodb:UpdateItem": frozenset({"table"}),  # counters (in transactions), pause
    "dynamodb:PutItem": frozenset({"table"}),  # conditional "processed" markers (same)
    "ses:SendEmail": _SES_SEND,  # pause notices
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
SENDER_ACTIONS = frozenset(SENDER)
WORKER_ACTIONS = frozenset(WORKER)
TENANT_ACTIONS = frozenset(TENANT_MIRROR)

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
