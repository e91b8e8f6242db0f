"""The one place AWS clients are built.

Endpoint, region and credentials come from the SDK's own environment; retries are the
SDK's standard mode (never adaptive), except `Clients.ses_send`, whose SendEmail is never
retried by the SDK. Why: docs/design.md, "The SDK never retries SendEmail".
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from sesguard.aws.errors import error_code

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_events import EventBridgeClient
    from types_aiobotocore_firehose import FirehoseClient
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sesv2 import SESV2Client
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sts import STSClient

DEFAULT_REGION = "us-east-1"

# Error codes that mean "this endpoint has no such API" rather than "the call failed".
NOT_IMPLEMENTED_CODES = frozenset(
    {
        "NotImplemented",
        "NotImplementedError",
        "NotImplementedException",
        "UnknownOperation",
        "UnknownOperationException",
        "InvalidAction",
    }
)
# Where `open_clients` notes, in an error response, which service and endpoint answered it.
ANSWERED_BY = "SesguardAnsweredBy"


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def client_config(concurrency: int, max_attempts: int | None = None) -> AioConfig:
    """Our clients' configuration; `max_attempts` (default AWS_MAX_ATTEMPTS, else 5) is the
    total number of attempts of one call."""
    attempts = (
        max_attempts if max_attempts is not None else int(os.environ.get("AWS_MAX_ATTEMPTS", "5"))
    )
    return AioConfig(
        max_pool_connections=max(10, concurrency + 8),
        retries={"mode": "standard", "total_max_attempts": max(1, attempts)},
        connect_timeout=5,
        read_timeout=30,
        tcp_keepalive=True,
    )


@dataclass
class Clients:
    """Open clients for one process; built by `open_clients`. Typed with types-aiobotocore
    (a dev dependency, imported for the type checker only)."""

    dynamodb: DynamoDBClient
    sqs: SQSClient
    s3: S3Client
    sesv2: SESV2Client
    firehose: FirehoseClient
    sts: STSClient
    events: EventBridgeClient  # EventBridge: partner lifecycle events (sesguard.aws.lifecycle)
    # SESv2 for SendEmail only: one attempt per call, never retried by the SDK (above).
    ses_send: SESV2Client
    _account_id: str | None = None
    # (service, Operation) of every call made through these clients: the IAM
    # least-privilege test compares it with what the deployment grants.
    calls: set[tuple[str, str]] = field(default_factory=set)

    async def account_id(self) -> str:
        if self._account_id is None:
            ident = await self.sts.get_caller_identity()
            self._account_id = str(ident["Account"])
        return self._account_id


@asynccontextmanager
async def open_clients(
    concurrency: int = 32, max_attempts: int | None = None, endpoint_url: str | None = None
) -> AsyncIterator[Clients]:
    """Every client sesguard uses; `endpoint_url` overrides the SDK's endpoint variables
    (a test process that talks to several stand-ins at once)."""
    session = aioboto3.Session(region_name=region())
    config = client_config(concurrency, max_attempts)
    async with AsyncExitStack() as stack:
        calls: set[tuple[str, str]] = set()

        async def make(name: str, config: AioConfig = config) -> Any:
            client = await stack.enter_async_context(
                session.client(name, config=config, endpoint_url=endpoint_url)
            )

            def record(model: Any, **_: Any) -> None:
                calls.add((name, model.name))

            def note_who_answered(http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
                if http_response.status_code >= 300:  # this dict becomes ClientError.response
                    parsed[ANSWERED_BY] = {
                        "service": client.meta.service_model.service_id,
                        "endpoint": client.meta.endpoint_url,
                    }

            client.meta.events.register("before-call.*.*", record)
            client.meta.events.register("after-call.*.*", note_who_answered)
            return client

        yield Clients(
            dynamodb=await make("dynamodb"),
            sqs=await make("sqs"),
            s3=await make("s3"),
            sesv2=await make("sesv2"),
            firehose=await make("firehose"),
            sts=await make("sts"),
            events=await make("events"),
            ses_send=await make("sesv2", client_config(concurrency, max_attempts=1)),
            calls=calls,
        )


def endpoint_variable(service_id: str) -> str:
    """The SDK's per-service endpoint variable: `SESv2` -> AWS_ENDPOINT_URL_SESV2."""
    return "AWS_ENDPOINT_URL_" + service_id.replace(" ", "_").upper()


def not_implemented(exc: ClientError) -> bool:
    """True when the endpoint answered that it does not implement the API called: HTTP 501
    (LocalStack's community edition: "InternalFailure ... not included in your current
    license plan or has not yet been emulated") or an unknown-operation code. That is a
    routing mistake to report, never a failure to retry or a bad request to drop.
    """
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 501 or error_code(exc) in NOT_IMPLEMENTED_CODES


def not_implemented_message(exc: ClientError) -> str | None:
    """One line naming the service, the endpoint and the variable that routes the service
    elsewhere, for an error from a client of `open_clients`; None for any other error."""
    if not not_implemented(exc):
        return None
    answered = exc.response.get(ANSWERED_BY)
    if not isinstance(answered, dict):  # not from our clients: name what we know
        return f"{exc.operation_name} is not implemented by this endpoint ({exc})"
    service = str(answered["service"])
    return (
        f"{service} is not implemented by {answered['endpoint']} — route it to an endpoint"
        f" that has it with {endpoint_variable(service)}"
    )
