"""The embedded AWS stand-in for the demo, the tests and the benchmarks (moto, over HTTP).

moto's threaded server checks a DynamoDB condition and applies the write in separate
steps, so two racing requests can both pass a condition that real DynamoDB would let only
one pass. sesguard's guarantees (one pause winner, one count per object, one send per job)
rest on DynamoDB's atomic conditional writes, so the stand-in serialises moto's DynamoDB
writes with one lock: the semantics of the real service, not a mock of our code.

Needs the `local` extra (moto[server]).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_WRITE_OPS = (
    "put_item", "update_item", "delete_item", "batch_write_item", "transact_write_items",
    "execute_statement", "execute_transaction", "batch_execute_statement",
)
_lock = threading.RLock()
_patched = False


def _make_dynamodb_writes_atomic() -> None:
    global _patched  # noqa: PLW0603 - patch moto once per process
    if _patched:
        return
    from moto.dynamodb.models import DynamoDBBackend

    def locked(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _lock:
                return fn(*args, **kwargs)

        return wrapper

    for op in _WRITE_OPS:
        setattr(DynamoDBBackend, op, locked(getattr(DynamoDBBackend, op)))
    _patched = True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Variables that could point the SDK at a real account; removed while the stand-in runs.
_REAL_ACCOUNT_VARS = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
)


def isolate_environment(endpoint: str) -> None:
    """Point every AWS SDK call in this process at the stand-in with fake credentials."""
    for var in _REAL_ACCOUNT_VARS:
        os.environ.pop(var, None)
    os.environ.update(FAKE_ENV)
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    # Per-service endpoint variables would override AWS_ENDPOINT_URL.
    for var in [v for v in os.environ if v.startswith("AWS_ENDPOINT_URL_")]:
        del os.environ[var]


@contextmanager
def local_aws(port: int | None = None) -> Iterator[str]:
    """Run moto on 127.0.0.1 and point this process at it; yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    _make_dynamodb_writes_atomic()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log on our terminal
    port = port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    isolate_environment(endpoint)
    try:
        yield endpoint
    finally:
        server.stop()
