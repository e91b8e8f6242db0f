"""Failures injected at the HTTP edge of one client, in process (no tests here).

A `before-send` hook answers chosen operations with what the service would send on the
wire (an error body in the service's own protocol, with its HTTP status) or fails the
connection, instead of sending the request to moto. Everything above the socket is real:
botocore parses the answer into the same ClientError, retries by its own rules, and
emits `after-call`/`after-call-error`, which is what the runtime's breakers watch.
(Fault injection between real processes is the proxy suite's job.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiobotocore.awsrequest import AioAWSResponse
from botocore.awsrequest import HTTPHeaders
from botocore.exceptions import EndpointConnectionError

LOCALSTACK_NOT_EMULATED = (
    "The API for service 'sesv2' is either not included in your current license plan or"
    " has not yet been emulated by LocalStack. Please refer to"
    " https://docs.localstack.cloud/references/coverage for more details."
)


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self) -> bytes:
        return self.data


@dataclass
class Fault:
    """An answer for every matching call while `active`."""

    status: int = 503
    code: str = "ServiceUnavailable"
    message: str = "injected"
    connection_error: bool = False
    active: bool = True
    calls: int = 0  # matching calls answered with the fault
    passed: int = 0  # matching calls let through (fault inactive)
    only: Callable[[dict[str, Any]], bool] = field(default=lambda _req: True)

    def answer(self, protocol: str, url: str) -> AioAWSResponse:
        headers = HTTPHeaders()
        if protocol == "rest-xml":
            body = (
                f"<Error><Code>{self.code}</Code><Message>{self.message}</Message></Error>"
            ).encode()
            headers["Content-Type"] = "application/xml"
        elif protocol == "rest-json":
            body = json.dumps({"message": self.message}).encode()
            headers["Content-Type"] = "application/json"
            headers["x-amzn-ErrorType"] = self.code
        else:  # json (DynamoDB, SQS)
            body = json.dumps({"__type": self.code, "message": self.message}).encode()
            headers["Content-Type"] = "application/x-amz-json-1.0"
        return AioAWSResponse(url, self.status, headers, _Body(body))


@contextmanager
def inject(client: Any, operation: str, fault: Fault) -> Iterator[Fault]:
    """Answer `operation` ("SendEmail", "PutItem", "*") of `client` with `fault`."""
    service_id = client.meta.service_model.service_id.hyphenize()
    protocol = client.meta.service_model.protocol
    event = f"before-send.{service_id}" + ("" if operation == "*" else f".{operation}")
    uid = f"test-fault-{id(fault)}"

    def before_send(request: Any, **_: Any) -> AioAWSResponse | None:
        if not fault.active or not fault.only({"url": request.url, "body": request.body}):
            fault.passed += 1
            return None
        fault.calls += 1
        if fault.connection_error:
            raise EndpointConnectionError(endpoint_url=request.url)
        return fault.answer(protocol, request.url)

    client.meta.events.register(event, before_send, unique_id=uid)
    try:
        yield fault
    finally:
        client.meta.events.unregister(event, unique_id=uid)
