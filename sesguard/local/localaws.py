"""The embedded AWS stand-in for the demo, the tests and the benchmarks (moto, over HTTP).

It runs moto's DynamoDB operations one at a time, and its SQS operations one at a time on
a lock of their own, so callers see the real services' semantics; `ses_events` publishes
SES events from inside SendEmail, as SES does. Why, and what moto lacks: docs/testing.md,
"Stand-ins and how tests use them". Needs the `local` extra (moto[server]).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any

_DYNAMODB_OPS = (
    "put_item",
    "update_item",
    "delete_item",
    "batch_write_item",
    "transact_write_items",
    "execute_statement",
    "execute_transaction",
    "batch_execute_statement",
    "get_item",
    "batch_get_item",
    "transact_get_items",
    "query",
    "scan",
    "create_table",
    "delete_table",
    "update_table",
    "describe_table",
    "update_time_to_live",
)
_SQS_OPS = (
    "create_queue",
    "get_queue_url",
    "list_queues",
    "get_queue",
    "delete_queue",
    "get_queue_attributes",
    "set_queue_attributes",
    "send_message",
    "send_message_batch",
    "receive_message",
    "delete_message",
    "delete_message_batch",
    "change_message_visibility",
    "change_message_visibility_batch",
    "purge_queue",
    "list_dead_letter_source_queues",
    "tag_queue",
    "untag_queue",
)
_lock = threading.RLock()
_patched = False
_sqs_lock = threading.RLock()
# Signalled when a message is added; a receive waits on it with _sqs_lock released.
_sqs_message_added = threading.Condition(_sqs_lock)
_sqs_patched = False


def _locked(fn: Callable[..., Any], lock: threading.RLock) -> Callable[..., Any]:
    @functools.wraps(fn)  # keeps __wrapped__: tests reach the unlocked original
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return fn(*args, **kwargs)

    return wrapper


def _serialise_dynamodb() -> None:
    global _patched  # noqa: PLW0603 - patch moto once per process
    if _patched:
        return
    from moto.dynamodb.models import DynamoDBBackend

    for op in _DYNAMODB_OPS:
        setattr(DynamoDBBackend, op, _locked(getattr(DynamoDBBackend, op), _lock))
    _patched = True


# Set while the stand-in's TransactWriteItems runs in this thread: moto's copy of each
# table it names is skipped (the transaction's own items are saved instead).
_in_transaction = threading.local()
_tx_patched = False


def _cheap_transaction_rollback() -> None:
    """TransactWriteItems without moto's deep copy of every table it names.

    moto copies each named table whole before every transaction, to put it back if the
    transaction is cancelled: O(table) per transaction, which made a 100k-event worker
    benchmark at 2,000 partners time out. DynamoDB runs one at a time here (`_lock`), so
    saving only what a transaction can change gives the same answers: the partitions it
    names (their items in order; a copy of each item an Update changes in place), put
    back on a cancel. A table with a stream, or a request we cannot read, keeps moto's
    whole-table copy. tests/local/test_localaws.py compares both with moto's own."""
    global _tx_patched  # noqa: PLW0603 - patch moto once per process
    if _tx_patched:
        return
    from moto.dynamodb import models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    class CopyExceptTables:
        """moto's `copy` module, except that a table is not copied in our transaction."""

        def __getattr__(self, name: str) -> Any:
            return getattr(copy, name)

        @staticmethod
        def deepcopy(x: Any, memo: dict[int, Any] | None = None) -> Any:
            if isinstance(x, Table) and getattr(_in_transaction, "active", False):
                return x  # moto's rollback then puts the same table back: a no-op
            return copy.deepcopy(x, memo)

    models.copy = CopyExceptTables()  # type: ignore[attr-defined,assignment]
    transact = DynamoDBBackend.transact_write_items

    @functools.wraps(transact)
    def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
        with _lock:  # the save, the transaction and the restore as one operation
            saved = _save_partitions(self, transact_items)
            if saved is None:
                return transact(self, transact_items)
            _in_transaction.active = True
            try:
                return transact(self, transact_items)
            except BaseException:
                for restore in saved:
                    restore()
                raise
            finally:
                _in_transaction.active = False

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    _tx_patched = True


def _save_partitions(
    backend: Any, transact_items: list[dict[str, Any]]
) -> list[Callable[[], None]] | None:
    """What puts back each partition `transact_items` may change (a table without a sort
    key is one partition); None where moto's own copy must do (a stream, an odd request).

    An item only changes through its partition's dict: Put replaces it, Delete pops it,
    Update changes it in place (hence its copy), ConditionCheck reads it. A new partition
    is removed on restore, as moto's copy would not have it."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    saved: dict[tuple[str, Any], tuple[Any, dict[Any, Any] | None, dict[Any, Any]]] = {}
    try:
        for entry in transact_items:
            ((op_type, op),) = entry.items()
            name = op.get("TableName")
            table = backend.tables.get(name)
            if table is None:
                continue  # moto cancels it: nothing of this op is written
            if table.stream_shard is not None:
                return None
            key = op.get("Item" if op_type == "Put" else "Key") or {}
            if table.hash_key_attr not in key or (
                table.has_range_key and table.range_key_attr not in key
            ):
                continue  # moto refuses the op before writing anything
            hash_value = DynamoType(key[table.hash_key_attr])
            item_key = DynamoType(key[table.range_key_attr]) if table.has_range_key else hash_value
            part_key = hash_value if table.has_range_key else None
            if (name, part_key) not in saved:
                part = table.items.get(hash_value) if table.has_range_key else table.items
                saved[(name, part_key)] = (table, None if part is None else dict(part), {})
            _, items, changed = saved[(name, part_key)]
            if op_type == "Update" and items is not None and item_key in items:
                changed[item_key] = copy.deepcopy(items[item_key])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None

    def restorer(
        table: Any, part_key: Any, items: dict[Any, Any] | None, changed: dict[Any, Any]
    ) -> Callable[[], None]:
        def restore() -> None:
            if items is None:
                table.items.pop(part_key, None)
                return
            part = table.items[part_key] if part_key is not None else table.items
            part.clear()
            part.update(items)
            part.update(changed)  # the same keys: the order stays

        return restore

    return [restorer(t, pk, i, c) for (_, pk), (t, i, c) in saved.items()]


def _serialise_sqs() -> None:
    """One SQS operation at a time (see the module docstring).

    A receive with WaitTimeSeconds would hold the lock for the whole wait; moto's wait
    (Queue.wait_for_messages) becomes a wait on a condition of the same lock instead,
    which releases it while waiting and wakes when a message is added."""
    global _sqs_patched  # noqa: PLW0603 - patch moto once per process
    if _sqs_patched:
        return
    from moto.sqs.models import Message, Queue, SQSBackend

    for op in _SQS_OPS:
        setattr(SQSBackend, op, _locked(getattr(SQSBackend, op), _sqs_lock))

    add_message = Queue.add_message

    def add_and_notify(self: Queue, message: Message) -> None:
        with _sqs_message_added:
            add_message(self, message)
            _sqs_message_added.notify_all()

    def wait_for_messages(self: Queue, timeout: int) -> None:
        with _sqs_message_added:
            _sqs_message_added.wait_for(lambda: self.messages, timeout=timeout)

    Queue.add_message = add_and_notify  # type: ignore[method-assign]
    Queue.wait_for_messages = wait_for_messages  # type: ignore[method-assign]
    _sqs_patched = True


def _speed_up_moto() -> None:
    """Two of moto's per-request costs that real AWS does not have, removed without
    changing any answer (moto is pinned, and tests/local/test_localaws.py checks both):

    - SQS recomputes every queue attribute, counting all messages, three times for each
      message it returns, only to read the retention period; so receives slowed down with
      queue depth. The check now reads the retention period alone.
    - the server lists moto's package directory on disk for every request to find the
      service; the list is now read once.
    - DynamoDB's Query on a table (not an index) listed and sorted every item of the table
      to keep one partition's: O(table) per Query, so the worker's judgement slowed with
      every item the table held. It now looks at the partition alone (moto keeps items by
      partition key); the same items are then filtered and sorted by moto as before
      (`_partition_query`).
    - a queue's visible messages and its three counts (`Queue.messages`, read by every
      receive, and the counts behind `Queue.attributes`, which every *send* computes to
      read ContentBasedDeduplication) asked the clock twice per message, ~10 us each: at
      3,000 messages a send took 0.1 s and a receive with its visibility change 80 ms.
      They now read the clock once per call; each message is judged against the same
      `unix_time_millis()` instant, as before (`_one_clock_sqs`); and finding a message
      by receipt handle (every visibility change and delete) no longer builds a list
      per message it passes.
    """
    from moto import backends
    from moto.core.utils import unix_time
    from moto.sqs.models import Message, SQSBackend

    _one_clock_sqs()
    _partition_query()

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules

    def is_message_valid_based_on_retention_period(
        self: SQSBackend, queue_name: str, message: Message
    ) -> bool:
        queue = self.get_queue(queue_name)  # attributes are set on it by name at creation:
        retention = int(queue.message_retention_period)  # type: ignore[attr-defined]
        return bool(retention + message.sent_timestamp / 1000 > unix_time())  # type: ignore[operator]

    SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        is_message_valid_based_on_retention_period
    )


def _partition_query() -> None:
    """moto's Table.query, reading only the queried partition of a table with a sort key.

    moto's base-table branch keeps `item.hash_key == hash_key` of `all_items()` (every item
    of the table, sorted); with `all_items` answering the partition's items alone for the
    call, the filter, sort, paging and conditions that follow are moto's own, unchanged.
    It holds the DynamoDB lock (`_serialise_dynamodb`) meanwhile, so the per-call
    override is seen by no other request."""
    from moto.dynamodb.models.table import Table

    query = Table.query
    if getattr(query, "_sesguard_partition", False):
        return

    @functools.wraps(query)
    def partition_query(self: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
        if index_name or not self.range_key_attr or hash_key is None:
            return query(self, hash_key, *args, **kwargs)
        with _lock:
            partition = self.items.get(hash_key, {})
            self.all_items = lambda: list(partition.values())  # type: ignore[method-assign]
            try:
                return query(self, hash_key, *args, **kwargs)
            finally:
                del self.all_items

    partition_query._sesguard_partition = True  # type: ignore[attr-defined]
    Table.query = partition_query  # type: ignore[method-assign]


def _one_clock_sqs() -> None:
    """Queue.messages and the Approximate* counts, with one clock reading per call.

    moto's own: `visible` is `now > visible_at`, `delayed` is `now < delayed_until`, each
    with its own `unix_time_millis()`; the same comparisons against one reading give the
    same lists and counts (tests/local/test_localaws.py compares them with moto's)."""
    from moto.core import utils
    from moto.sqs.models import Message, Queue

    def messages(self: Queue) -> list[Message]:
        now = utils.unix_time_millis()
        return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]

    def delayed(self: Queue) -> int:
        now = utils.unix_time_millis()
        return sum(1 for m in self._messages if now < m.delayed_until)

    def not_visible(self: Queue) -> int:
        now = utils.unix_time_millis()
        return sum(1 for m in self._messages if not now > m.visible_at)

    def visible(self: Queue) -> int:
        return len(messages(self))

    def had_receipt_handle(self: Message, receipt_handle: str) -> bool:
        # moto's: `receipt_handle in [current] + old`, a new list per message scanned by
        # every visibility change and delete (each scans the queue for its handle)
        return receipt_handle == self.receipt_handle or receipt_handle in self._old_receipt_handles

    Message.had_receipt_handle = had_receipt_handle  # type: ignore[method-assign]
    Queue.messages = property(messages)  # type: ignore[assignment,method-assign]
    Queue.approximate_number_of_messages_delayed = property(delayed)  # type: ignore[assignment,method-assign]
    Queue.approximate_number_of_messages_not_visible = property(not_visible)  # type: ignore[assignment,method-assign]
    Queue.approximate_number_of_messages = property(visible)  # type: ignore[assignment,method-assign]


class SesEvents:
    """The stand-in's SES publishing events (see `ses_events`)."""

    def __init__(
        self,
        stream: str,
        *,
        hold: bool,
        before_send: Callable[[dict[str, Any]], None] | None,
        after_send: Callable[[dict[str, Any], str], None] | None,
    ) -> None:
        self.stream = stream
        self.hold = hold
        self.before_send = before_send
        self.after_send = after_send
        self.published = 0  # records put on the stream
        self._held: list[tuple[str, str, list[bytes]]] = []
        self._lock = threading.Lock()

    def accepted(self, params: dict[str, Any], message_id: str, account: str, region: str) -> None:
        from sesguard.local.simulator import encode_records, simulate_events

        blobs = encode_records(
            simulate_events(params, message_id, datetime.now(UTC), account, region)
        )
        with self._lock:
            if self.hold:
                self._held.append((account, region, blobs))
                return
        self._publish(account, region, blobs)

    def release(self) -> int:
        """Publish what was held (Firehose's buffer flushing) and stop holding; returns
        how many records went out."""
        with self._lock:
            held, self._held, self.hold = self._held, [], False
        for account, region, blobs in held:
            self._publish(account, region, blobs)
        return sum(len(b) for _, _, b in held)

    def _publish(self, account: str, region: str, blobs: list[bytes]) -> None:
        if not blobs:
            return
        from moto.firehose.models import firehose_backends

        firehose = firehose_backends[account][region]
        firehose.put_record_batch(self.stream, [{"Data": b} for b in blobs])
        with self._lock:
            self.published += len(blobs)


_ses_events: SesEvents | None = None
_ses_hooked = False


def _hook_ses() -> None:
    """moto's SESv2 SendEmail, plus the active `ses_events` (none: unchanged)."""
    global _ses_hooked  # noqa: PLW0603 - patch moto once per process
    if _ses_hooked:
        return
    from moto.sesv2.responses import SESV2Response

    send_email = SESV2Response.send_email

    def send_and_publish(self: SESV2Response) -> str:
        hook = _ses_events
        if hook is None:
            return send_email(self)
        params = json.loads(self.body)
        if hook.before_send is not None:
            hook.before_send(params)  # may raise: the message is then not accepted
        answer = send_email(self)
        message_id = str(json.loads(answer)["MessageId"])
        hook.accepted(params, message_id, self.current_account, self.region)
        if hook.after_send is not None:
            hook.after_send(params, message_id)
        return answer

    SESV2Response.send_email = send_and_publish  # type: ignore[method-assign]
    _ses_hooked = True


@contextmanager
def ses_events(
    stream: str,
    *,
    hold: bool = False,
    before_send: Callable[[dict[str, Any]], None] | None = None,
    after_send: Callable[[dict[str, Any], str], None] | None = None,
) -> Iterator[SesEvents]:
    """While active, the in-process stand-in's SES publishes the events SES would for every
    SendEmail it accepts (sesguard.local.simulator.simulate_events: nothing without a
    configuration set) to Firehose stream `stream`, from inside SES, before it answers.

    `hold` keeps them back until `release()` (Firehose's buffering, made explicit).
    `before_send(params)` runs before the message is accepted (raise to refuse it: the
    request never reached SES) and `after_send(params, message_id)` after, before the
    answer goes back: fault injection at the exact moment a test needs (a test can kill
    the sender there). Do not combine with SESGUARD_SIMULATE_EVENTS (events twice)."""
    global _ses_events  # noqa: PLW0603 - one stand-in per process
    if _ses_events is not None:
        raise RuntimeError("ses_events is already active")
    _hook_ses()
    _ses_events = hook = SesEvents(
        stream, hold=hold, before_send=before_send, after_send=after_send
    )
    try:
        yield hook
    finally:
        _ses_events = None


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
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


@contextmanager
def pointed_at(endpoint: str) -> Iterator[None]:
    """`isolate_environment` for the length of a block; the environment is restored after
    it, so the rest of the process (a test session) talks to what it talked to before."""
    saved = dict(os.environ)
    isolate_environment(endpoint)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


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


# Our one route next to moto's (an S3 bucket name cannot start with "_", so no AWS path
# collides with it): the messages moto's SES accepted, as `sent_messages` returns them.
MESSAGES_PATH = "/_sesguard/ses/messages"
_in_process: set[str] = set()  # endpoints of the stand-ins this process runs


def _ses_messages() -> bytes:
    """JSON: every message moto's SES (v1 and v2) accepted, from its backends, in sending order
    per account and region: each one's public attributes, as /moto-api/data.json shows a
    `ses.Message` (id, source, destinations, subject, body; raw sends have raw_data).

    O(messages): data.json instead serialises every object moto ever created (all DynamoDB
    items and table copies included), which took ~10 s after a 300-job demo.
    """
    from moto.ses.models import ses_backends

    out: list[dict[str, Any]] = []
    for regions in list(ses_backends.values()):  # only the accounts and regions in use
        for backend in list(regions.values()):
            out += [_public(m) for m in list(backend.sent_messages)]
    return json.dumps(out).encode()


def _public(obj: object) -> dict[str, Any]:
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")}


def _with_our_routes(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != MESSAGES_PATH:
            return app(environ, start_response)
        body = _ses_messages()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return wsgi


def sent_messages(endpoint: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The messages the stand-in at `endpoint` accepted through SES, oldest first, each shaped
    like a data.json `ses.Message` (`source`, `destinations` {ToAddresses, CcAddresses,
    BccAddresses}, `subject`, `body`, `id`). Read from moto's backend when the stand-in runs
    in this process (`local_aws`), else from its MESSAGES_PATH route (`local_aws_process`,
    `python -m sesguard.local.localaws`). A plain moto server has no such route (404).
    """
    endpoint = endpoint.rstrip("/")
    if endpoint in _in_process:
        data = _ses_messages()  # a copy: callers cannot change moto's state
    else:
        with urllib.request.urlopen(endpoint + MESSAGES_PATH, timeout=timeout) as resp:  # noqa: S310
            data = resp.read()
    return list(json.loads(data))


@contextmanager
def local_aws(port: int | None = None) -> Iterator[str]:
    """Run moto on 127.0.0.1 and point this process at it; yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    _serialise_dynamodb()
    _cheap_transaction_rollback()
    _serialise_sqs()
    _speed_up_moto()
    _hook_ses()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log on our terminal
    port = port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()  # returns once the WSGI server exists; it reads `.app` per request
    server._server.app = _with_our_routes(server._server.app)  # type: ignore[union-attr]
    endpoint = f"http://127.0.0.1:{port}"
    _in_process.add(endpoint)
    try:
        with pointed_at(endpoint):
            yield endpoint
    finally:
        _in_process.discard(endpoint)
        server.stop()


@contextmanager
def local_aws_process(ready_timeout: float = 30.0, point: bool = True) -> Iterator[str]:
    """The same stand-in in a child process (so it does not share this interpreter's lock
    with the code under test, as a real endpoint would not); yields the endpoint URL. With
    `point`, this process's SDK environment points at it for the block (`pointed_at`);
    without, only clients given the endpoint talk to it."""
    import subprocess
    import sys
    import time

    port = free_port()
    proc = subprocess.Popen(  # noqa: S603 - our own module, this interpreter
        [sys.executable, "-m", "sesguard.local.localaws", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout
    try:
        while True:
            try:
                urllib.request.urlopen(endpoint + MESSAGES_PATH, timeout=1).close()  # noqa: S310
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the local AWS stand-in did not start") from None
                time.sleep(0.1)
        with pointed_at(endpoint) if point else nullcontext():
            yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _serve(port: int, events_stream: str | None = None) -> None:
    """`python -m sesguard.local.localaws PORT [--ses-events STREAM]`: the stand-in on PORT;
    with --ses-events its SES publishes the events SES would for every message it
    accepts to Firehose stream STREAM (`ses_events`), whether or not the sender hears
    the answer, as SES does (the sender then runs without SESGUARD_SIMULATE_EVENTS)."""
    import signal

    with local_aws(port), ses_events(events_stream) if events_stream else nullcontext():
        signal.pause()  # until SIGTERM ends the process


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sesguard.local.localaws")
    parser.add_argument("port", type=int)
    parser.add_argument("--ses-events", metavar="STREAM", default=None)
    cli = parser.parse_args()
    _serve(cli.port, cli.ses_events)
