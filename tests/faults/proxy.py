"""An HTTP proxy that injects AWS faults between sesguard's processes and the stand-in.

Services point at it with `AWS_ENDPOINT_URL`; it forwards every request to the upstream
endpoint (the moto stand-in) byte for byte, except where a fault is injected for the
request's AWS service and operation during a time window:

- an error answered the way that service answers it on the wire (JSON `__type` for
  DynamoDB, SQS and Firehose, `x-amzn-ErrorType` for the REST SESv2 API, an `<Error>`
  document for S3, an `<ErrorResponse>` for query APIs), so botocore parses it into the
  same ClientError code, HTTP status and retry decision as the real service's answer:
  5xx, throttling (429 / 400 / 503 SlowDown, per service) and LocalStack's 501
  "not implemented";
- added latency, before the request reaches the upstream or after it answered;
- a connection reset (RST), before the request reaches the upstream (it never happened)
  or after the upstream answered (it happened, the caller cannot know).

The service comes from the SigV4 credential scope (`Credential=.../<region>/<service>/
aws4_request`, in `Authorization` or a presigned URL's `X-Amz-Credential`); SES's scope is
`ses` for both APIs, and SESv2 is the one under `/v2/`. The operation comes from
`X-Amz-Target` (JSON protocols), the `Action` parameter (query protocols), or the method
and path matched against the operation's HTTP binding in botocore's own service model
(REST protocols: SESv2, S3).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import Any
from xml.sax.saxutils import escape

import aiohttp
import botocore.session
from aiohttp import web

# ---- what a request is ----------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """A request as AWS sees it: the botocore service name and the operation."""

    service: str  # "sesv2", "dynamodb", "sqs", "s3", "firehose", "sts", "ses"; "" unsigned
    operation: str  # "SendEmail", ...; "" when no operation matched


_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_QUERY_SCOPE = re.compile(r"^[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request$")


@cache
def _model(service: str) -> Any:
    return botocore.session.get_session().get_service_model(service)


@dataclass(frozen=True)
class _Route:
    method: str
    path: re.Pattern[str]
    query_keys: frozenset[str]  # literal in the binding or required members (uploadId)
    headers: frozenset[str]  # required members bound to headers (x-amz-copy-source: a copy)
    literal: int  # characters of the template that are not placeholders
    operation: str


@cache
def _routes(service: str) -> tuple[_Route, ...]:
    """The REST bindings of every operation of a service, from botocore's model."""
    model = _model(service)
    routes = []
    for name in model.operation_names:
        if model.operation_model(name).deprecated:  # same binding as its successor
            continue
        http = model.operation_model(name).http
        path, _, query = str(http["requestUri"]).partition("?")
        parts = re.split(r"(\{[^}]+\})", path)
        regex = "".join(
            (".+" if p.endswith("+}") else "[^/]+") if p.startswith("{") else re.escape(p)
            for p in parts
        )
        literal = sum(len(p) for p in parts if not p.startswith("{"))
        shape = model.operation_model(name).input_shape
        required = [
            shape.members[m].serialization for m in (shape.required_members if shape else ())
        ]
        keys = frozenset(q.split("=", 1)[0] for q in query.split("&") if q) | {
            str(s["name"]) for s in required if s.get("location") == "querystring"
        }
        headers = frozenset(
            str(s["name"]).lower() for s in required if s.get("location") == "header"
        )
        routes.append(
            _Route(str(http["method"]), re.compile(f"^{regex}/?$"), keys, headers, literal, name)
        )
    return tuple(routes)


def rest_operation(
    service: str,
    method: str,
    path: str,
    query_keys: frozenset[str],
    header_names: frozenset[str] = frozenset(),
) -> str:
    """The operation a REST request calls: the most specific binding that matches (query
    keys, then required headers, then literal path characters)."""
    best: tuple[int, int, int, str] | None = None
    for r in _routes(service):
        if (
            r.method == method
            and r.query_keys <= query_keys
            and r.headers <= header_names
            and r.path.match(path)
        ):
            rank = (len(r.query_keys), len(r.headers), r.literal, r.operation)
            if best is None or rank[:3] > best[:3]:
                best = rank
    return best[3] if best else ""


def identify(
    method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes
) -> Call:
    """Which AWS service and operation a request is for (see the module docstring)."""
    scope = _SCOPE.search(headers.get("Authorization", ""))
    if scope is None:
        scope = _QUERY_SCOPE.match(query.get("X-Amz-Credential", ""))
    if scope is None:
        return Call("", "")
    service = scope.group(1)
    if service == "ses":
        service = "sesv2" if path.startswith("/v2/") else "ses"
    try:
        protocol = _model(service).protocol
    except botocore.exceptions.UnknownServiceError:
        return Call(service, "")
    if protocol == "json":
        return Call(service, headers.get("X-Amz-Target", "").rpartition(".")[2])
    if protocol in ("query", "ec2"):
        action = (
            query.get("Action")
            or urllib.parse.parse_qs(body.decode(errors="replace")).get("Action", [""])[0]
        )
        return Call(service, action)
    names = frozenset(k.lower() for k in headers)
    return Call(service, rest_operation(service, method, path, frozenset(query), names))


# ---- how each service answers an error -------------------------------------------------


class Error(StrEnum):
    UNAVAILABLE = "unavailable"  # 503
    INTERNAL = "internal"  # 500
    THROTTLING = "throttling"  # the service's own throttling answer


# (HTTP status, error code, message), as each service sends them.
ERRORS: dict[str, dict[Error, tuple[int, str, str]]] = {
    "sesv2": {
        Error.UNAVAILABLE: (503, "ServiceUnavailable", "Service Unavailable"),
        Error.INTERNAL: (500, "InternalFailure", "An internal error occurred."),
        Error.THROTTLING: (429, "TooManyRequestsException", "Maximum sending rate exceeded."),
    },
    "ses": {
        Error.UNAVAILABLE: (503, "ServiceUnavailable", "Service Unavailable"),
        Error.INTERNAL: (500, "InternalFailure", "An internal error occurred."),
        Error.THROTTLING: (400, "Throttling", "Maximum sending rate exceeded."),
    },
    "dynamodb": {
        Error.UNAVAILABLE: (503, "ServiceUnavailable", "Service unavailable"),
        Error.INTERNAL: (500, "InternalServerError", "Internal server error"),
        Error.THROTTLING: (
            400,
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded."
            " Consider increasing your provisioning level with the UpdateTable API.",
        ),
    },
    "sqs": {
        Error.UNAVAILABLE: (503, "ServiceUnavailable", "Service Unavailable"),
        Error.INTERNAL: (500, "InternalFailure", "An internal error occurred."),
        Error.THROTTLING: (400, "RequestThrottled", "Request is throttled."),
    },
    "s3": {
        Error.UNAVAILABLE: (503, "ServiceUnavailable", "Reduce your request rate."),
        Error.INTERNAL: (500, "InternalError", "We encountered an internal error. Try again."),
        Error.THROTTLING: (503, "SlowDown", "Please reduce your request rate."),
    },
    "firehose": {
        Error.UNAVAILABLE: (
            503,
            "ServiceUnavailableException",
            "The service is unavailable. Back off and retry the operation.",
        ),
        Error.INTERNAL: (500, "InternalFailure", "An internal error occurred."),
        Error.THROTTLING: (  # Firehose's throttling is this code with HTTP 500
            500,
            "ServiceUnavailableException",
            "Slow down. Throughput limits for the delivery stream may have been exceeded.",
        ),
    },
    "sts": {
        Error.UNAVAILABLE: (503, "ServiceUnavailable", "Service Unavailable"),
        Error.INTERNAL: (500, "InternalFailure", "An internal error occurred."),
        Error.THROTTLING: (400, "Throttling", "Rate exceeded"),
    },
}

# What LocalStack answers for an API it does not emulate (HTTP 501).
NOT_IMPLEMENTED = (
    501,
    "InternalFailure",
    "The API for service '{service}' is either not included in your current license plan"
    " or has not yet been emulated by LocalStack.",
)
_JSON_TYPE_PREFIX = {"dynamodb": "com.amazonaws.dynamodb.v20120810#", "sqs": "com.amazonaws.sqs#"}


def error_response(
    service: str, status: int, code: str, message: str
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of an error, in the wire format of the service's protocol."""
    model = _model(service)
    request_id = str(uuid.uuid4())
    fault = "Sender" if status < 500 else "Receiver"
    protocol = model.protocol
    headers = {"x-amzn-RequestId": request_id}
    if protocol == "json":
        headers["Content-Type"] = f"application/x-amz-json-{model.metadata['jsonVersion']}"
        if "awsQueryCompatible" in model.metadata:  # SQS: the query API's code, in a header
            headers["x-amzn-query-error"] = f"{code};{fault}"
        body = {"__type": _JSON_TYPE_PREFIX.get(service, "") + code, "message": message}
        return status, headers, json.dumps(body).encode()
    if protocol == "rest-json":
        headers["Content-Type"] = "application/json"
        headers["x-amzn-ErrorType"] = code
        return status, headers, json.dumps({"message": message}).encode()
    if protocol == "rest-xml":
        headers = {"Content-Type": "application/xml", "x-amz-request-id": request_id}
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
            f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"<RequestId>{request_id}</RequestId><HostId>{request_id}</HostId></Error>"
        )
        return status, headers, xml.encode()
    headers["Content-Type"] = "text/xml"  # query protocols
    xml = (
        f'<ErrorResponse xmlns="https://{model.endpoint_prefix}.amazonaws.com/doc/'
        f'{model.api_version}/"><Error><Type>{fault}</Type><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>{request_id}</RequestId>"
        "</ErrorResponse>"
    )
    return status, headers, xml.encode()


# ---- faults ---------------------------------------------------------------------------


class Kind(StrEnum):
    ERROR = "error"
    LATENCY = "latency"
    RESET = "reset"


@dataclass(frozen=True)
class Fault:
    """What to do to the requests of one service (and some of its operations)."""

    service: str
    operations: frozenset[str] = frozenset()  # empty: every operation
    kind: Kind = Kind.ERROR
    status: int = 0
    code: str = ""
    message: str = ""
    delay: float = 0.0
    after_upstream: bool = False  # latency/reset after the upstream answered
    label: str = ""

    def matches(self, call: Call) -> bool:
        return call.service == self.service and (
            not self.operations or call.operation in self.operations
        )


def error(service: str, kind: Error, *operations: str) -> Fault:
    status, code, message = ERRORS[service][kind]
    return Fault(service, frozenset(operations), Kind.ERROR, status, code, message, label=f"{code}")


def not_implemented(service: str, *operations: str) -> Fault:
    status, code, message = NOT_IMPLEMENTED
    return Fault(
        service,
        frozenset(operations),
        Kind.ERROR,
        status,
        code,
        message.format(service=service),
        label="501 not implemented",
    )


def latency(service: str, *operations: str, seconds: float, after_upstream: bool = False) -> Fault:
    return Fault(
        service,
        frozenset(operations),
        Kind.LATENCY,
        delay=seconds,
        after_upstream=after_upstream,
        label=f"+{seconds:g}s",
    )


def reset(service: str, *operations: str, after_upstream: bool = False) -> Fault:
    where = "after" if after_upstream else "before"
    return Fault(
        service,
        frozenset(operations),
        Kind.RESET,
        after_upstream=after_upstream,
        label=f"reset {where} upstream",
    )


@dataclass
class Injection:
    """A fault active from `start` until `end` (monotonic), for at most `limit` requests."""

    fault: Fault
    start: float
    end: float
    limit: int | None = None
    hits: int = 0  # requests it applied to
    forwarded: int = 0  # of those, requests the upstream saw
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def active(self, now: float) -> bool:
        return self.start <= now < self.end and (self.limit is None or self.hits < self.limit)


HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "expect",
    }
)


class FaultProxy:
    """One proxy on 127.0.0.1 (a free port) in front of `upstream`.

    `seen` counts requests per Call, `ok` the ones the upstream answered with 2xx and the
    caller received, `in_flight` the requests waiting for the upstream now.
    """

    def __init__(self, upstream: str, name: str = "proxy") -> None:
        self.upstream = upstream.rstrip("/")
        self.name = name
        self.endpoint = ""
        self.injections: list[Injection] = []
        self.seen: Counter[Call] = Counter()
        self.ok: Counter[Call] = Counter()
        self.in_flight: Counter[Call] = Counter()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> str:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.endpoint = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=120),
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Accept", "Content-Type"),
        )
        return self.endpoint

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # ---- control ---------------------------------------------------------------------

    def inject(
        self, fault: Fault, seconds: float | None = None, *, limit: int | None = None
    ) -> Injection:
        """Apply `fault` from now, for `seconds` (None: until cleared) or `limit` requests."""
        now = time.monotonic()
        end = now + seconds if seconds is not None else float("inf")
        injection = Injection(fault, now, end, limit)
        self.injections.append(injection)
        if seconds is not None:
            asyncio.get_running_loop().call_later(seconds, injection.ended.set)
        return injection

    def clear(self) -> None:
        now = time.monotonic()
        for injection in self.injections:
            if injection.end > now:
                injection.end = now
                injection.ended.set()

    def count(self, service: str, operation: str = "", *, ok: bool = False) -> int:
        counts = self.ok if ok else self.seen
        return sum(
            n
            for call, n in counts.items()
            if call.service == service and (not operation or call.operation == operation)
        )

    def busy(self, ignore: frozenset[str] = frozenset({"ReceiveMessage"})) -> int:
        """Requests waiting for the upstream now, long polls aside."""
        return sum(n for call, n in self.in_flight.items() if call.operation not in ignore)

    def _active(self, call: Call) -> Injection | None:
        now = time.monotonic()
        for injection in reversed(self.injections):  # the latest injected wins
            if injection.fault.matches(call) and injection.active(now):
                return injection
        return None

    # ---- the proxy -------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        call = identify(request.method, request.path, request.query, request.headers, body)
        self.seen[call] += 1
        injection = self._active(call)
        fault = injection.fault if injection else None
        if injection is not None:
            injection.hits += 1
        if fault is not None and fault.kind is Kind.ERROR:
            status, headers, payload = error_response(
                call.service, fault.status, fault.code, fault.message
            )
            return web.Response(status=status, headers=headers, body=payload)
        if fault is not None and not fault.after_upstream:
            if fault.kind is Kind.RESET:
                return _reset(request)
            await asyncio.sleep(fault.delay)
        self.in_flight[call] += 1
        try:
            status, reason, headers, payload, length = await self._forward(request, body)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return _reset(request)  # the upstream is gone: so is the caller's connection
        finally:
            self.in_flight[call] -= 1
        if injection is not None:
            injection.forwarded += 1
        if fault is not None and fault.kind is Kind.RESET:
            return _reset(request)
        if fault is not None and fault.kind is Kind.LATENCY:
            await asyncio.sleep(fault.delay)
        response = web.StreamResponse(status=status, reason=reason, headers=headers)
        response.content_length = length
        try:
            await response.prepare(request)
            if request.method != "HEAD":
                await response.write(payload)
            await response.write_eof()
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            return response  # the caller went away (killed): nothing to answer
        if 200 <= status < 300:
            self.ok[call] += 1
        return response

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, str, dict[str, str], bytes, int]:
        """The upstream's answer: status, reason, end-to-end headers, body, and the
        Content-Length to send (a HEAD answer's is the object's, with no body)."""
        assert self._session is not None
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        async with self._session.request(
            request.method,
            self.upstream + request.raw_path,
            headers=headers,
            data=body if body else None,
            allow_redirects=False,
        ) as resp:
            payload = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
            length = len(payload)
            if request.method == "HEAD":
                length = int(resp.headers.get("Content-Length", "0"))
            return resp.status, resp.reason or "", out, payload, length


def _reset(request: web.Request) -> web.Response:
    """Drop the caller's connection with a TCP RST (SO_LINGER 0), mid-request."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response()
