"""What a failed AWS call says about the service that answered it: DOWN, THROTTLED or UP (pure).

One judgement for the whole runtime, made per call; none of these is a reason to
dead-letter a message. See docs/design.md, "Transient failures and the outage tolerance"
and "Circuit breakers".
"""

from __future__ import annotations

import asyncio
from enum import StrEnum

import aiohttp
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError


class Health(StrEnum):
    UP = "up"
    DOWN = "down"
    THROTTLED = "throttled"


THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "LimitExceededException",
        "LimitExceeded",
        "SlowDown",
        "AWS.SimpleQueueService.RequestThrottled",
    }
)
# Error codes that mean the dependency cannot serve, whatever status came with them:
# its own failures, and "this endpoint does not implement the API" (a misconfigured
# endpoint or an emulator without the service). Nothing the request could change.
DOWN_CODES = frozenset(
    {
        "NotImplemented",
        "NotImplementedException",
        "UnknownOperationException",
        "InvalidAction",
        "UnsupportedOperation",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalServerError",
        "InternalError",
    }
)
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    BotoConnectionError,
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
    HTTPClientError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
    OSError,
)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or "ClientError"
    return type(exc).__name__


def error_message(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message", ""))[:300]
    return str(exc)[:300]


def answer_text(exc: ClientError) -> str:
    """`AWS Code: message`, the one line the CLI and the console show for an AWS error."""
    err = exc.response.get("Error", {})
    return f"AWS {err.get('Code', 'error')}: {err.get('Message', '')}"


def describe(exc: BaseException) -> str:
    """`Code: message`, short, for logs and reasons (never a request body)."""
    message = error_message(exc)
    return f"{error_code(exc)}: {message}" if message else error_code(exc)


def status_of(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def judge_answer(status: int, code: str) -> Health:
    """An HTTP answer (status, AWS error code or '') from a dependency."""
    if code in THROTTLE_CODES or status == 429:
        return Health.THROTTLED
    if status >= 500 or code in DOWN_CODES:
        return Health.DOWN
    return Health.UP


def judge_exception(exc: BaseException) -> Health:
    """What an exception raised by an AWS call says about the dependency."""
    if isinstance(exc, ClientError):
        return judge_answer(status_of(exc), error_code(exc))
    if isinstance(exc, _NETWORK_ERRORS):
        return Health.DOWN
    return Health.UP  # a bug or a bad parameter on our side: not the dependency's health
