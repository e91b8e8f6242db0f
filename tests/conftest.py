"""One real moto server (HTTP) per test session; every test starts from an empty account."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from sesguard.aws.clients import Clients
    from sesguard.aws.store import PartnerStore
    from sesguard.settings import Settings

# Never let a test reach real AWS, whatever the developer's environment holds.
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_var, None)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_REGION="us-east-1",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_MAX_ATTEMPTS="1",
    SESGUARD_NOTIFY_FROM="guard@isv.example.com",
    SESGUARD_LOG_FORMAT="json",
)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto over HTTP, with DynamoDB's atomic conditional writes (see sesguard.local.localaws)."""
    from sesguard.local.localaws import local_aws

    with local_aws() as endpoint:
        yield endpoint


@pytest.fixture(autouse=True)
def moto_reset(moto_endpoint: str) -> None:
    req = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(req, timeout=10).close()


@pytest.fixture(scope="session")
async def clients(moto_endpoint: str) -> AsyncIterator[Clients]:
    from sesguard.aws.clients import open_clients

    async with open_clients(concurrency=32, max_attempts=1) as c:
        yield c


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    from sesguard.settings import load_settings

    return load_settings()


@pytest.fixture
async def table(clients: Clients, settings: Settings) -> str:
    """The sesguard table, created by bootstrap's own table step."""
    from sesguard.ops.bootstrap import ensure_table

    await ensure_table(clients, settings)
    return settings.table


@pytest.fixture
async def store(clients: Clients, table: str) -> PartnerStore:
    from sesguard.aws.store import PartnerStore

    return PartnerStore(clients.dynamodb, table)


def sent_emails(endpoint: str) -> list[dict[str, Any]]:
    """Every message moto's SES accepted: source, destinations, subject, body."""
    from sesguard.local.localaws import sent_messages

    return sent_messages(endpoint)


async def drain_queue(clients: Any, url: str) -> list[dict[str, Any]]:
    """Receive and delete everything visible in a queue; the message bodies, parsed."""
    import orjson

    out: list[dict[str, Any]] = []
    while msgs := (
        await clients.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    ).get("Messages", []):
        out += [orjson.loads(m["Body"]) for m in msgs]
        await clients.sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)
            ],
        )
    return out


async def dead_letters_in(clients: Any, url: str) -> list[tuple[str, str | None]]:
    """Receive and delete everything visible in a DLQ: each message's raw body and its
    `sesguard_reason` attribute (None without one)."""
    out: list[tuple[str, str | None]] = []
    while msgs := (
        await clients.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
        )
    ).get("Messages", []):
        for m in msgs:
            reason = m.get("MessageAttributes", {}).get("sesguard_reason", {}).get("StringValue")
            out.append((m["Body"], reason))
        await clients.sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)
            ],
        )
    return out


async def queue_counts(clients: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue, as SQS counts them."""
    attrs = (
        await clients.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def client_error(code: str, message: str = "injected", status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "SendEmail",
    )


class ShiftClock:
    """Real time plus an offset the test can jump."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def wait_until(predicate: Callable[[], bool], limit: float = 20.0) -> None:
    """Poll a condition the service makes true (the test cannot await it directly)."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110 - polling state owned by the service
            await asyncio.sleep(0.01)


# ---- the operator CLI ------------------------------------------------------------------

SESGUARD = str(Path(sys.executable).with_name("sesguard"))


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli(*args: str, stdin: str | None = None, **env: str) -> Result:
    """`sesguard ARGS` in this process: `sesguard.cli.main(argv)` with `env` added to the
    environment (settings are read from it when main runs), `stdin` as standard input,
    and standard output and error captured; argparse's exit becomes the code.

    main() runs in a thread of its own, since it starts its own event loop and async tests
    call this from theirs (blocked meanwhile, as it was by a child process). main() points
    structlog at the captured stderr: the configuration is put back afterwards."""
    import threading

    import structlog

    from sesguard.cli import main

    out, err = io.StringIO(), io.StringIO()
    result: list[int] = []

    def call() -> None:
        try:
            result.append(main(list(args)))
        except SystemExit as exc:
            code = exc.code
            result.append(code if isinstance(code, int) else (0 if code is None else 1))
            if isinstance(code, str):
                print(code, file=sys.stderr)

    saved_env = {name: os.environ.get(name) for name in env}
    saved_stdin, logging_config = sys.stdin, structlog.get_config()
    os.environ.update(env)
    sys.stdin = io.StringIO(stdin or "")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            thread = threading.Thread(target=call, name="sesguard-cli")
            thread.start()
            thread.join(timeout=60)
            assert not thread.is_alive(), f"sesguard {' '.join(args)} still running after 60 s"
    finally:
        sys.stdin = saved_stdin
        structlog.configure(**logging_config)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return Result(result[0], out.getvalue(), err.getvalue())


def cli_process(*args: str, stdin: str | None = None, **env: str) -> Result:
    """`sesguard ARGS` as a child process: for what only a real process shows (the exit
    code as the shell sees it, a service's signal handling, the installed entry point)."""
    proc = subprocess.run(
        [SESGUARD, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def one_line_error(r: Result, code: int, *needles: str) -> None:
    assert r.code == code, (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err  # one clear line, no traceback
    assert "Traceback" not in r.err
    for needle in needles:
        assert needle in lines[0], lines[0]


@contextlib.contextmanager
def json_logs() -> Iterator[list[dict[str, Any]]]:
    """The services' JSON log lines while the block runs, parsed into the list yielded
    (filled when the block ends); structlog's configuration is reset afterwards."""
    import structlog

    from sesguard.logging import configure_logging

    out, lines = io.StringIO(), []
    configure_logging("json", "INFO", stream=out)
    try:
        yield lines
    finally:
        structlog.reset_defaults()
        lines += [json.loads(line) for line in out.getvalue().splitlines()]
