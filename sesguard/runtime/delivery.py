"""One received message as a handler sees it, and what the handler may ask of the runtime.

`fields` and `outcome` for its log line, `abortable()`, `uninterruptible()` and
`progress()`. See docs/design.md, "Fates", "Stop" and "Heartbeat and health".
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from sesguard.runtime.retry import MAX_VISIBILITY

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

T = TypeVar("T")

_current: ContextVar[Delivery | None] = ContextVar("sesguard_delivery", default=None)


class Aborted(Exception):
    """The runtime asked handlers to give their messages back.

    Control flow, not an error, so outside sesguard.errors' tree: nothing is wrong with
    the request or around it, and no operator is told. It unwinds a handler from an
    `abortable()` wait to the consumer, which gives the message back (GiveBack)."""


class Stage(StrEnum):
    HANDLING = "handling"  # the handler runs
    COMMITTING = "committing"  # done: commit and delete queued (visibility still renewed)
    RETURNING = "returning"  # a visibility change or DLQ copy queued
    SETTLED = "settled"  # SQS has been told


# SQS counts its 12 h visibility limit from the receive, not from the change: a change
# keeps this much room for the time the message was already in hand (and the finisher's
# batch).
VISIBILITY_MARGIN_SECONDS = 60


def _epoch_ms(value: str | None) -> float | None:
    return int(value) / 1000 if value and value.isdigit() else None


@dataclass(eq=False)
class Delivery:
    message_id: str
    receipt: str
    body: str
    receive_count: int
    sent_at: datetime | None
    first_received_at: float | None  # epoch seconds (SQS ApproximateFirstReceiveTimestamp)
    received_at: float  # runtime clock
    abort: asyncio.Event
    clock: Callable[[], float]
    fields: dict[str, Any] = field(default_factory=dict)
    outcome: str | None = None
    # Set by a handler whose messages may have been deferred on purpose (Defer) before: the
    # outage tolerance is then judged by receive count, not by the time since the first
    # receive, which includes the deferred time (docs/design.md, "Throttles").
    patient: bool = False
    stage: Stage = Stage.HANDLING
    extended_at: float = 0.0
    last_progress: float = 0.0
    task: asyncio.Task[None] | None = None
    _critical: int = 0
    _waiting: int = 0

    def visible_after(self, seconds: float) -> int:
        """Whole seconds for a visibility change of this message: at least 0, and within
        SQS's limit of 12 h from the receive (less the time in hand and a margin)."""
        held = math.ceil(max(0.0, self.clock() - self.received_at))
        room = MAX_VISIBILITY - VISIBILITY_MARGIN_SECONDS - held
        return max(0, min(room, math.ceil(seconds)))

    @classmethod
    def from_sqs(
        cls, msg: MessageTypeDef, abort: asyncio.Event, clock: Callable[[], float]
    ) -> Delivery:
        attrs = msg.get("Attributes", {})
        sent = _epoch_ms(attrs.get("SentTimestamp"))
        count = str(attrs.get("ApproximateReceiveCount", "1"))
        now = clock()
        return cls(
            message_id=str(msg.get("MessageId", "")),
            receipt=str(msg["ReceiptHandle"]),
            body=str(msg.get("Body", "")),
            receive_count=int(count) if count.isdigit() else 1,
            sent_at=datetime.fromtimestamp(sent, UTC) if sent is not None else None,
            first_received_at=_epoch_ms(attrs.get("ApproximateFirstReceiveTimestamp")),
            received_at=now,
            abort=abort,
            clock=clock,
            extended_at=now,
            last_progress=now,
        )

    @property
    def aborting(self) -> bool:
        return self.abort.is_set()

    @property
    def interruptible(self) -> bool:
        return self._critical == 0

    @property
    def waiting(self) -> bool:
        """In an `abortable()` wait (a rate token, a backoff): idle on purpose, not stuck."""
        return self._waiting > 0

    def progress(self) -> None:
        self.last_progress = self.clock()

    @contextlib.contextmanager
    def uninterruptible(self) -> Iterator[None]:
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1

    async def abortable(self, aw: Awaitable[T]) -> T:
        """Await `aw` unless the runtime aborts first (then `Aborted`, `aw` cancelled)."""
        task = asyncio.ensure_future(aw)
        if self.abort.is_set():
            task.cancel()
            raise Aborted
        aborted = asyncio.ensure_future(self.abort.wait())
        self._waiting += 1
        try:
            await asyncio.wait({task, aborted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiting -= 1
            self.progress()
            aborted.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise Aborted


def current_delivery() -> Delivery | None:
    """The delivery whose handler is running in this task, if any."""
    return _current.get()


def report_progress() -> None:
    """Tell the runtime the running handler is moving (no-op outside a handler)."""
    delivery = _current.get()
    if delivery is not None:
        delivery.progress()


def enter(delivery: Delivery) -> Any:
    """Make `delivery` current in this task; returns the token for `leave`."""
    return _current.set(delivery)


def leave(token: Any) -> None:
    _current.reset(token)
