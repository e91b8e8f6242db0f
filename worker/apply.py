"""Apply an object's counters exactly once: counters and "processed" marker in one
DynamoDB transaction per chunk (`plan_chunks` is pure).

Why it holds: docs/design.md, "Every event is counted exactly once". Log lines name the
object through structlog's context (worker.pipeline binds its bucket and key), not through
arguments repeated in each call.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from sesguard.aws import table as t
from sesguard.aws.errors import error_code
from sesguard.aws.store import PartnerStore
from sesguard.core.backoff import spaced_delay
from sesguard.core.partners import Counters, utcnow
from sesguard.errors import Failed
from sesguard.logging import get_logger

log = get_logger(__name__)

MAX_TRANSACT_ITEMS = 100  # AWS limit; moto does not enforce it, so we do
# Markers must outlive every redelivery (SQS keeps messages 14 days, DLQ redrives later).
MARKER_TTL_DAYS = 400
_RETRY_REASONS = frozenset(
    {
        "TransactionConflict",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "RequestLimitExceeded",
    }
)
_RETRY_ERRORS = frozenset(
    {
        "TransactionConflictException",
        "TransactionInProgressException",
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
)
_REASONS_IN_MESSAGE = re.compile(r"\[([A-Za-z, ]+)\]\s*$")


class ApplyError(Failed):
    """The transaction failed for a reason retrying here will not fix."""


Cell = tuple[str, datetime, Counters]


@dataclass(frozen=True)
class Chunk:
    index: int
    cells: tuple[Cell, ...]

    @property
    def partners(self) -> list[str]:
        return sorted({pid for pid, _, _ in self.cells})


@dataclass
class ApplyResult:
    chunks: int = 0
    applied: int = 0  # chunks written by this call
    already: int = 0  # chunks found counted before (redelivery, another worker)
    retries: int = 0

    @property
    def all_already(self) -> bool:
        return self.chunks > 0 and self.applied == 0


def plan_chunks(
    counts: Mapping[tuple[str, datetime], Counters], max_items: int = MAX_TRANSACT_ITEMS
) -> list[Chunk]:
    """Deterministic chunks: cells sorted by (partner, hour), filled greedily so that
    marker + bucket items + one TOTALS item per partner stay within `max_items`."""
    if max_items < 3:
        raise ValueError("a chunk needs room for a marker, a bucket and a totals item")
    budget = max_items - 1  # the marker
    chunks: list[Chunk] = []
    cells: list[Cell] = []
    used = 0
    last_pid: str | None = None
    for (pid, hour), c in sorted(counts.items(), key=lambda kv: kv[0]):
        if not c:
            continue
        cost = 1 if pid == last_pid else 2
        if used + cost > budget:
            chunks.append(Chunk(len(chunks), tuple(cells)))
            cells, used, last_pid = [], 0, None
            cost = 2
        cells.append((pid, hour, c))
        used += cost
        last_pid = pid
    if cells:
        chunks.append(Chunk(len(chunks), tuple(cells)))
    return chunks


def marker_sk(index: int) -> str:
    return f"{index:05d}"


def transaction_items(
    store: PartnerStore,
    bucket: str,
    key: str,
    chunk: Chunk,
    total_chunks: int,
    etag: str | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """Marker Put first (its cancellation reason tells "already counted"), then counters."""
    marker = t.to_item(
        {
            "pk": t.object_pk(bucket, key),
            "sk": marker_sk(chunk.index),
            "chunks": total_chunks,
            "cells": len(chunk.cells),
            "etag": etag,
            "processed_at": now.isoformat(),
            t.TTL_ATTRIBUTE: int((now + timedelta(days=MARKER_TTL_DAYS)).timestamp()),
        }
    )
    items: list[dict[str, Any]] = [
        {
            "Put": {
                "TableName": store.table,
                "Item": marker,
                "ConditionExpression": "attribute_not_exists(pk)",
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }
    ]
    totals: dict[str, Counters] = {}
    for pid, hour, c in chunk.cells:
        if c:
            items.append(store.bucket_update(pid, hour, c))
        totals.setdefault(pid, Counters()).add(c)  # one totals item per partner per chunk
    for pid, c in totals.items():
        if c:
            items.append(store.totals_update(pid, c))
    if len(items) > MAX_TRANSACT_ITEMS:
        raise AssertionError(f"chunk of {len(items)} items")  # plan_chunks guarantees it
    return items


def cancellation_reasons(exc: ClientError) -> list[str]:
    """Reason codes, one per transaction item, from the error (or its message)."""
    reasons = exc.response.get("CancellationReasons")
    if isinstance(reasons, list):
        return [str(r.get("Code", "None")) for r in reasons]
    message = str(exc.response.get("Error", {}).get("Message", ""))
    m = _REASONS_IN_MESSAGE.search(message)
    return [r.strip() for r in m.group(1).split(",")] if m else []


async def apply_object(
    store: PartnerStore,
    bucket: str,
    key: str,
    counts: Mapping[tuple[str, datetime], Counters],
    etag: str | None = None,
    now: datetime | None = None,
    max_attempts: int = 8,
    max_items: int = MAX_TRANSACT_ITEMS,
) -> ApplyResult:
    """Write every chunk of `counts` once; safe to call again for the same object."""
    now = now or utcnow()
    chunks = plan_chunks(counts, max_items)
    result = ApplyResult(chunks=len(chunks))
    for chunk in chunks:
        items = transaction_items(store, bucket, key, chunk, len(chunks), etag, now)
        applied, retries = await _write(store, items, bucket, key, chunk, etag, max_attempts)
        result.retries += retries
        if applied:
            result.applied += 1
        else:
            result.already += 1
    return result


async def _write(
    store: PartnerStore,
    items: list[dict[str, Any]],
    bucket: str,
    key: str,
    chunk: Chunk,
    etag: str | None,
    max_attempts: int,
) -> tuple[bool, int]:
    """(True if written, False if counted before; retries used)."""
    for attempt in range(max_attempts):
        try:
            await store.call("transact_write_items", TransactItems=items)
        except ClientError as exc:
            code = error_code(exc)
            if code == "TransactionCanceledException":
                reasons = cancellation_reasons(exc)
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    _check_same_object(exc, bucket, key, chunk, etag)
                    return False, attempt
                if not any(r in _RETRY_REASONS for r in reasons):
                    raise ApplyError(f"transaction cancelled: {reasons or code}") from exc
            elif code not in _RETRY_ERRORS and not _server_error(exc):
                raise
            if attempt + 1 == max_attempts:
                raise ApplyError(
                    f"transaction still failing after {max_attempts} attempts: {code}"
                ) from exc
            delay = spaced_delay(attempt, base=0.05, cap=2.0)
            log.info("transaction_retry", chunk=chunk.index, code=code, delay=delay)
            await asyncio.sleep(delay)
            continue
        return True, attempt
    raise ApplyError("unreachable")  # pragma: no cover


def _server_error(exc: ClientError) -> bool:
    """A 5xx: the outcome is unknown, and retrying is safe because of the marker."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return isinstance(status, int) and status >= 500


def _check_same_object(
    exc: ClientError, bucket: str, key: str, chunk: Chunk, etag: str | None
) -> None:
    """A marker with another ETag means the key was overwritten after it was counted:
    the new content is not counted again (keys from Firehose are unique; say so loudly)."""
    reasons: Any = exc.response.get("CancellationReasons") or []
    old: Any = reasons[0].get("Item") if reasons and isinstance(reasons[0], dict) else None
    old_etag = old.get("etag", {}).get("S") if isinstance(old, dict) else None
    if etag and old_etag and old_etag != etag:
        log.error(
            "object_overwritten_after_counting",
            chunk=chunk.index,
            counted_etag=old_etag,
            etag=etag,
        )
    else:
        log.info("chunk_already_counted", chunk=chunk.index)
