"""Partner lifecycle events: what happened to a partner, on EventBridge and in its history.

Eight kinds (`DetailType`), schemas in `sesguard/aws/lifecycle_schemas/`; written with the
transition through an outbox, published by `Publisher` and its sweep. What a consumer
sees: docs/operating.md, "Partner lifecycle events (EventBridge)"; why once per
transition: docs/design.md, "Lifecycle events once per transition".
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson

from sesguard.aws import table as t
from sesguard.aws.batching import batches
from sesguard.core.backoff import backoff_delay
from sesguard.core.partners import Limits, PausedBy, Status, Throttle, utcnow
from sesguard.core.policy import Finding
from sesguard.errors import Refused
from sesguard.logging import get_logger

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import TransactWriteItemTypeDef
    from types_aiobotocore_events import EventBridgeClient
    from types_aiobotocore_events.type_defs import PutEventsRequestEntryTypeDef

    from sesguard.aws.clients import Clients
    from sesguard.settings import Settings

log = get_logger(__name__)

SOURCE = "sesguard"
SCHEMA_VERSION = 1
PUT_EVENTS_MAX_ENTRIES = 10  # AWS limits of one PutEvents call
PUT_EVENTS_MAX_BYTES = 256 * 1024
# The sweep leaves younger outbox items to their own publisher (whose SDK may still be
# retrying), so it rarely publishes an event twice.
SWEEP_MIN_AGE = timedelta(minutes=2)
SWEEP_EVERY_SECONDS = 60.0
SWEEP_MAX_EVENTS = 500  # per sweep; the next sweep takes the rest


class DetailType(StrEnum):
    WARNED = "Partner Warned"
    PAUSED = "Partner Paused"
    RESUMED = "Partner Resumed"
    REPLAYED = "Held Jobs Replayed"
    DISCARDED = "Held Jobs Discarded"
    LIMITS_CHANGED = "Partner Limits Changed"
    QUOTA_REACHED = "Partner Quota Reached"
    QUOTA_RELEASED = "Partner Quota Released"

    @property
    def slug(self) -> str:
        """ "Partner Paused" -> "partner-paused" (the schema's file name)."""
        return self.value.lower().replace(" ", "-")


def parse_detail_type(text: str) -> DetailType:
    """A detail type by its name ("Partner Paused") or slug ("partner-paused"), any case."""
    wanted = text.strip().lower()
    for kind in DetailType:
        if wanted in (kind.value.lower(), kind.slug):
            return kind
    names = ", ".join(repr(k.value) for k in DetailType)
    raise Refused(f"unknown event type {text!r}: one of {names}")


@dataclass(frozen=True)
class LifecycleEvent:
    """One event: its id (the same on every publish), kind, time and `detail` (the JSON
    EventBridge carries, as the kind's schema describes it)."""

    event_id: str
    detail_type: str
    occurred_at: datetime
    detail: dict[str, Any] = field(hash=False)

    @property
    def partner_id(self) -> str:
        return str(self.detail["partner_id"])


# ---- the events (pure) -----------------------------------------------------------------


def stamp(ts: datetime) -> str:
    """Fixed-width UTC time with milliseconds, "2026-11-29T13:05:00.123Z": the detail's
    `occurred_at` and the sort keys (string order is time order)."""
    ts = ts.astimezone(UTC) if ts.tzinfo else ts.replace(tzinfo=UTC)
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(
    kind: DetailType, partner_id: str, actor: PausedBy, at: datetime, **facts: Any
) -> LifecycleEvent:
    occurred = stamp(at)
    event_id = str(uuid.uuid4())
    detail: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id,
        "partner_id": partner_id,
        "actor": actor.value,
        "occurred_at": occurred,
    }
    detail.update({k: v for k, v in facts.items() if v is not None})
    return LifecycleEvent(event_id, kind, datetime.fromisoformat(occurred), detail)


def _finding_facts(finding: Finding) -> dict[str, Any]:
    return {
        "metric": finding.metric,
        "window_hours": finding.window_hours,
        "rate": finding.rate,
        "limit": finding.limit,
        "sent": finding.sent,
        "suppressed": finding.suppressed,
        "hard_bounces": finding.hard_bounces,
        "complaints": finding.complaints,
    }


def warned(partner_id: str, finding: Finding, warn_ratio: float, at: datetime) -> LifecycleEvent:
    return _event(
        DetailType.WARNED,
        partner_id,
        PausedBy.POLICY,
        at,
        status=Status.ACTIVE.value,
        reason=finding.reason,
        warn_ratio=warn_ratio,
        **_finding_facts(finding),
    )


def paused(
    partner_id: str, reason: str, by: PausedBy, at: datetime, finding: Finding | None = None
) -> LifecycleEvent:
    """`reason` as stored; the finding's numbers when the policy paused on one."""
    facts = _finding_facts(finding) if finding is not None else {}
    return _event(
        DetailType.PAUSED,
        partner_id,
        by,
        at,
        status=Status.PAUSED.value,
        reason=reason,
        **facts,
    )


def resumed(partner_id: str, at: datetime) -> LifecycleEvent:
    return _event(DetailType.RESUMED, partner_id, PausedBy.OPERATOR, at, status=Status.ACTIVE.value)


def quota_reached(partner_id: str, day: str, daily_quota: int, at: datetime) -> LifecycleEvent:
    """The partner's sends today (UTC `day`) reached its daily quota: its jobs wait for the
    next UTC day (or a higher quota)."""
    return _event(
        DetailType.QUOTA_REACHED,
        partner_id,
        PausedBy.POLICY,
        at,
        day=day,
        daily_quota=daily_quota,
        resumes_at=stamp(next_utc_midnight(at)),
    )


def quota_released(
    partner_id: str, day: str, daily_quota: int | None, reason: str, at: datetime
) -> LifecycleEvent:
    """The partner may send again after reaching its quota: a new UTC `day`, or an operator
    raised (or removed: no `daily_quota`) the quota."""
    return _event(
        DetailType.QUOTA_RELEASED,
        partner_id,
        PausedBy.POLICY,
        at,
        day=day,
        daily_quota=daily_quota,
        reason=reason,
    )


def next_utc_midnight(at: datetime) -> datetime:
    """00:00 UTC after `at`: when a day's quota opens again."""
    at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
    return datetime(at.year, at.month, at.day, tzinfo=UTC) + timedelta(days=1)


def held_released(kind: DetailType, partner_id: str, count: int, at: datetime) -> LifecycleEvent:
    """Held Jobs Replayed or Discarded: `count` jobs, by an operator."""
    if kind not in (DetailType.REPLAYED, DetailType.DISCARDED):
        raise ValueError(f"{kind} is not a held-jobs event")
    return _event(kind, partner_id, PausedBy.OPERATOR, at, count=count)


def limits_changed(
    partner_id: str,
    before: Limits,
    after: Limits,
    status: Status,
    at: datetime,
    *,
    previous_throttle: Throttle | None = None,
    throttle: Throttle | None = None,
) -> LifecycleEvent:
    """`limits` and `previous_limits` carry the throttle too: `max_rate` and
    `daily_quota`, null when there is no cap."""
    return _event(
        DetailType.LIMITS_CHANGED,
        partner_id,
        PausedBy.OPERATOR,
        at,
        status=status.value,
        limits={**after.as_json(), **(throttle or Throttle()).as_json()},
        previous_limits={**before.as_json(), **(previous_throttle or Throttle()).as_json()},
    )


# ---- schemas ---------------------------------------------------------------------------


@cache
def _schema_text(kind: DetailType) -> str:
    path = resources.files("sesguard.aws") / "lifecycle_schemas" / f"{kind.slug}.json"
    return path.read_text(encoding="utf-8")


def schema(kind: DetailType) -> dict[str, Any]:
    """The JSON Schema of one kind's `detail` (a fresh copy)."""
    loaded: dict[str, Any] = json.loads(_schema_text(kind))
    return loaded


def schemas() -> dict[str, dict[str, Any]]:
    """Every kind's schema, by detail type."""
    return {kind.value: schema(kind) for kind in DetailType}


# ---- items: history and outbox ----------------------------------------------------------


def history_hours(retention_days: int, window_hours: Sequence[int]) -> int:
    """How long the history is kept: as long as the hourly counters, and never less than
    the longest window (a chart of a window shows its pauses and resumes)."""
    return max(retention_days * 24, *window_hours)


def _sk(event: LifecycleEvent) -> str:
    return f"{stamp(event.occurred_at)}#{event.event_id}"


def event_items(
    event: LifecycleEvent, table: str, keep_hours: int
) -> list[TransactWriteItemTypeDef]:
    """The two Puts (for TransactWriteItems) that record an event: the partner's history
    item and the outbox item. Both expire `keep_hours` after the event."""
    expires = int((event.occurred_at + timedelta(hours=keep_hours)).timestamp())
    body = {
        "event_id": event.event_id,
        "detail_type": str(event.detail_type),
        "occurred_at": stamp(event.occurred_at),
        "detail": orjson.dumps(event.detail).decode(),
        t.TTL_ATTRIBUTE: expires,
    }
    sk = _sk(event)
    return [
        {
            "Put": {
                "TableName": table,
                "Item": t.to_item({"pk": t.event_pk(event.partner_id), "sk": sk, **body}),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
        {"Put": {"TableName": table, "Item": t.to_item({"pk": t.OUTBOX_PK, "sk": sk, **body})}},
    ]


def event_from_item(item: dict[str, Any]) -> LifecycleEvent:
    d = t.from_item(item)
    kind: str = d["detail_type"]
    if kind in {k.value for k in DetailType}:
        kind = DetailType(kind)
    return LifecycleEvent(
        event_id=d["event_id"],
        detail_type=kind,
        occurred_at=datetime.fromisoformat(d["occurred_at"]),
        detail=orjson.loads(d["detail"]),
    )


async def _query(dynamodb: DynamoDBClient, **kwargs: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    limit = kwargs.pop("max_items", None)
    while True:
        resp = await dynamodb.query(**kwargs)
        items.extend(resp.get("Items", []))
        if "LastEvaluatedKey" not in resp or (limit is not None and len(items) >= limit):
            return items[:limit] if limit is not None else items
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


async def partner_history(
    dynamodb: DynamoDBClient, table: str, partner_id: str, since: datetime
) -> list[LifecycleEvent]:
    """A partner's lifecycle events from `since` on, oldest first (one Query on its own
    partition; published or not yet)."""
    items = await _query(
        dynamodb,
        TableName=table,
        KeyConditionExpression="pk = :pk AND sk >= :since",
        ExpressionAttributeValues={
            ":pk": {"S": t.event_pk(partner_id)},
            ":since": {"S": stamp(since)},
        },
        ScanIndexForward=True,
        ConsistentRead=True,
    )
    return [event_from_item(item) for item in items]


# ---- publishing ------------------------------------------------------------------------


def put_events_entry(event: LifecycleEvent, bus: str) -> PutEventsRequestEntryTypeDef:
    return {
        "Source": SOURCE,
        "DetailType": str(event.detail_type),
        "Detail": orjson.dumps(event.detail).decode(),
        "EventBusName": bus,
        "Time": event.occurred_at,
    }


def entry_size(event: LifecycleEvent) -> int:
    """An entry's size as EventBridge counts it against the 256 KiB of a PutEvents call."""
    entry = put_events_entry(event, "")
    return 14 + sum(len(str(entry[k]).encode()) for k in ("Source", "DetailType", "Detail"))


@dataclass
class Publisher:
    """Puts lifecycle events on the bus and clears their outbox items."""

    events: EventBridgeClient  # the EventBridge client
    bus: str
    dynamodb: DynamoDBClient
    table: str
    keep_hours: int = 14 * 24
    attempts: int = 3  # PutEvents calls for entries EventBridge refused
    sweep_min_age: timedelta = SWEEP_MIN_AGE
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    @classmethod
    def from_clients(cls, clients: Clients, settings: Settings) -> Publisher:
        return cls(
            clients.events,
            settings.event_bus,
            clients.dynamodb,
            settings.table,
            history_hours(settings.bucket_retention_days, settings.window_hours),
        )

    async def publish(self, events: Sequence[LifecycleEvent]) -> int:
        """Publish events already recorded (history + outbox); returns how many EventBridge
        took. Never raises: what is not published stays in the outbox for the sweep."""
        published = 0
        for batch in batches(events, entry_size, PUT_EVENTS_MAX_ENTRIES, PUT_EVENTS_MAX_BYTES):
            published += await self._publish_batch(batch)
        return published

    async def announce(self, event: LifecycleEvent) -> None:
        """Record an event that is not part of a transition (the held-jobs events), then
        publish it. A failure to record is logged: the operation it reports is done."""
        try:
            await self.dynamodb.transact_write_items(
                TransactItems=event_items(event, self.table, self.keep_hours)
            )
        except Exception as exc:
            log.error("lifecycle_event_not_recorded", **_fields(event), error=_describe(exc))
            return
        await self.publish([event])

    async def sweep(self, now: datetime | None = None) -> int:
        """Publish the outbox items older than `sweep_min_age`: events whose publisher
        failed or died. Same event ids as before. Returns how many were published."""
        cutoff = stamp((now or utcnow()) - self.sweep_min_age)
        items = await _query(
            self.dynamodb,
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND sk < :cutoff",
            ExpressionAttributeValues={":pk": {"S": t.OUTBOX_PK}, ":cutoff": {"S": cutoff}},
            ScanIndexForward=True,
            ConsistentRead=True,
            max_items=SWEEP_MAX_EVENTS,
        )
        if not items:
            return 0
        leftovers = [event_from_item(item) for item in items]
        log.warning(
            "lifecycle_republishing",
            events=len(leftovers),
            oldest=stamp(leftovers[0].occurred_at),
        )
        return await self.publish(leftovers)

    async def sweep_logged(self) -> int:
        """`sweep`, with a failure (DynamoDB unreachable, say) logged instead of raised."""
        try:
            return await self.sweep()
        except Exception as exc:
            log.error("lifecycle_sweep_failed", error=_describe(exc))
            return 0

    async def sweep_forever(self, every: float = SWEEP_EVERY_SECONDS) -> None:
        """The worker's background sweep: now, then every `every` seconds, until cancelled."""
        while True:
            await self.sweep_logged()
            await self.sleep(every)

    async def _publish_batch(self, batch: list[LifecycleEvent]) -> int:
        pending = batch
        done: list[LifecycleEvent] = []
        for attempt in range(self.attempts):
            if attempt:
                await self.sleep(backoff_delay(attempt - 1, base=0.2, cap=2.0))
            try:
                resp = await self.events.put_events(
                    Entries=[put_events_entry(e, self.bus) for e in pending]
                )
            except Exception as exc:  # the SDK has retried already
                log.error(
                    "lifecycle_publish_failed",
                    event_ids=[e.event_id for e in pending],
                    error=_describe(exc),
                    hint="left in the outbox: the worker's sweep publishes it again",
                )
                break
            results = resp.get("Entries", [])
            refused = []
            for i, event in enumerate(pending):
                result = results[i] if i < len(results) else {"ErrorCode": "NoResult"}
                if result.get("ErrorCode"):
                    refused.append(event)
                    log.warning(
                        "lifecycle_event_refused",
                        **_fields(event),
                        code=result.get("ErrorCode"),
                        message=result.get("ErrorMessage"),
                        attempt=attempt + 1,
                    )
                else:
                    done.append(event)
            pending = refused
            if not pending:
                break
        else:
            log.error(
                "lifecycle_publish_failed",
                event_ids=[e.event_id for e in pending],
                error="EventBridge refused the entries",
                hint="left in the outbox: the worker's sweep publishes it again",
            )
        for event in done:
            log.info("lifecycle_event_published", **_fields(event))
            await self._forget(event)
        return len(done)

    async def _forget(self, event: LifecycleEvent) -> None:
        """Delete a published event's outbox item. If that fails, the sweep publishes the
        event again (same event_id): a repeat, never a loss."""
        try:
            await self.dynamodb.delete_item(
                TableName=self.table, Key=t.key(t.OUTBOX_PK, _sk(event))
            )
        except Exception as exc:
            log.warning("lifecycle_outbox_not_cleared", **_fields(event), error=_describe(exc))


def _fields(event: LifecycleEvent) -> dict[str, str]:
    return {
        "event_id": event.event_id,
        "detail_type": str(event.detail_type),
        "partner_id": event.partner_id,
    }


def _describe(exc: BaseException) -> str:
    from sesguard.aws.errors import describe

    return describe(exc)
