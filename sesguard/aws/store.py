"""Partners in DynamoDB: profiles, counters, and the conditional status transitions."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from sesguard.aws import lifecycle
from sesguard.aws import table as t
from sesguard.aws.errors import error_code
from sesguard.aws.lifecycle import LifecycleEvent
from sesguard.core.backoff import backoff_delay
from sesguard.core.partners import (
    DEFAULT_LIMITS,
    MAX_REASON_CHARS,
    UNATTRIBUTED,
    Counters,
    Limits,
    PartnerState,
    PausedBy,
    Profile,
    Rearm,
    Status,
    Throttle,
    check_partner_id,
    hour_floor,
    hours_back,
    utc_day,
    utcnow,
    warn_mark,
)
from sesguard.core.policy import DEFAULT_WINDOWS
from sesguard.errors import Failed, Refused
from sesguard.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

_CHANGE_ATTEMPTS = 5
_CONFLICT_ATTEMPTS = 5  # a transaction cancelled by a concurrent one on the same item


class StoreError(Failed):
    """An operational problem with the table (missing, unreachable)."""


class PartnerNotFound(Refused):
    """No partner has this id (the console answers 404)."""


class PartnerExists(Refused):
    """A partner with this id already exists; the message is the id."""


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat() if ts else None


def _dt(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def profile_to_item(p: Profile) -> dict[str, Any]:
    return t.to_item(
        {
            "pk": t.partner_pk(p.partner_id),
            "sk": t.PROFILE,
            "partner_id": p.partner_id,
            "contact_email": p.contact_email,
            "bounce_limit": p.limits.bounce_rate,
            "complaint_limit": p.limits.complaint_rate,
            "min_volume": p.limits.min_volume,
            "warn_ratio": p.limits.warn_ratio,
            "status": p.status.value,
            "paused_reason": p.paused_reason,
            "paused_at": _iso(p.paused_at),
            "paused_by": p.paused_by.value if p.paused_by else None,
            "resumed_at": _iso(p.resumed_at),
            "tenant_name": p.tenant_name,
            "max_rate": p.throttle.max_rate,
            "daily_quota": p.throttle.daily_quota,
            t.KIND_ATTRIBUTE: t.PARTNER_KIND,
            "created_at": _iso(p.created_at),
            "updated_at": _iso(p.updated_at),
        }
    )


def profile_from_item(item: dict[str, Any]) -> Profile:
    d = t.from_item(item)
    rearm = None
    if d.get("rearm_at"):
        rearm = Rearm(
            at=datetime.fromisoformat(d["rearm_at"]),
            baseline=Counters.from_mapping(d.get("rearm_baseline") or {}),
        )
    return Profile(
        partner_id=d["partner_id"],
        contact_email=d["contact_email"],
        limits=Limits(
            bounce_rate=float(d["bounce_limit"]),
            complaint_rate=float(d["complaint_limit"]),
            min_volume=int(d["min_volume"]),
            warn_ratio=float(d.get("warn_ratio", DEFAULT_LIMITS.warn_ratio)),
        ),
        status=Status(d.get("status", "active")),
        paused_reason=d.get("paused_reason"),
        paused_at=_dt(d.get("paused_at")),
        paused_by=PausedBy(d["paused_by"]) if d.get("paused_by") else None,
        resumed_at=_dt(d.get("resumed_at")),
        rearm=rearm,
        tenant_name=d.get("tenant_name"),
        throttle=Throttle(
            max_rate=float(d["max_rate"]) if d.get("max_rate") is not None else None,
            daily_quota=int(d["daily_quota"]) if d.get("daily_quota") is not None else None,
        ),
        created_at=_dt(d.get("created_at")),
        updated_at=_dt(d.get("updated_at")),
        warned={
            k.removeprefix(t.WARNED_PREFIX): str(v)
            for k, v in d.items()
            if k.startswith(t.WARNED_PREFIX)
        },
    )


# Profile attributes that are a partner's limits (a change of one is an event).
LIMIT_ATTRIBUTES = ("bounce_limit", "complaint_limit", "min_volume", "warn_ratio")
# The throttle's attributes: a change of one is a limits change too (the same event, and
# the status epoch the event bumps is how every sender task learns the new caps).
THROTTLE_ATTRIBUTES = ("max_rate", "daily_quota")
_METRICS = ("bounce_rate", "complaint_rate")


class _NoCap:
    """The value of a throttle attribute (max_rate, daily_quota) that removes the cap."""

    def __repr__(self) -> str:
        return "NO_CAP"


# `change(pid, max_rate=NO_CAP)` removes the attribute: the partner has no rate cap.
NO_CAP: Any = _NoCap()


def _limits_with(limits: Limits, fields: dict[str, Any]) -> Limits:
    return Limits(
        bounce_rate=float(fields.get("bounce_limit", limits.bounce_rate)),
        complaint_rate=float(fields.get("complaint_limit", limits.complaint_rate)),
        min_volume=int(fields.get("min_volume", limits.min_volume)),
        warn_ratio=float(fields.get("warn_ratio", limits.warn_ratio)),
    )


def _throttle_with(throttle: Throttle, fields: dict[str, Any]) -> Throttle:
    def value(name: str, current: float | None) -> float | None:
        given = fields.get(name, current)
        return None if given is NO_CAP else given

    rate = value("max_rate", throttle.max_rate)
    quota = value("daily_quota", throttle.daily_quota)
    return Throttle(
        max_rate=None if rate is None else float(rate),
        daily_quota=None if quota is None else int(quota),
    )


def _set_and_remove(fields: dict[str, Any]) -> tuple[str, dict[str, str], dict[str, Any]]:
    """An UpdateExpression that SETs `fields` and REMOVEs those given as NO_CAP, with its
    names and values."""
    sets = {k: v for k, v in fields.items() if v is not NO_CAP}
    removes = [k for k, v in fields.items() if v is NO_CAP]
    expr = "SET " + ", ".join(f"#{k} = :{k}" for k in sets)
    if removes:
        expr += " REMOVE " + ", ".join(f"#{k}" for k in removes)
    names = {f"#{k}": k for k in fields}
    values = {f":{k}": t.to_attr(v) for k, v in sets.items()}
    return expr, names, values


def counter_update(
    table: str, pk: str, sk: str, counts: Counters, sets: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One Update (for TransactWriteItems) that ADDs the non-zero counters to an item and
    sets `sets` attributes where the item does not have them yet."""
    nonzero = counts.nonzero()
    names = {f"#{n}": n for n in nonzero}
    values: dict[str, Any] = {f":{n}": {"N": str(v)} for n, v in nonzero.items()}
    expr = "ADD " + ", ".join(f"#{n} :{n}" for n in nonzero)
    if sets:
        names.update({f"#{k}": k for k in sets})
        values.update({f":{k}": t.to_attr(v) for k, v in sets.items()})
        expr += " SET " + ", ".join(f"#{k} = if_not_exists(#{k}, :{k})" for k in sets)
    return {
        "Update": {
            "TableName": table,
            "Key": t.key(pk, sk),
            "UpdateExpression": expr,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
    }


@dataclass
class PartnerStore:
    """All reads and writes of partner items; the only module that knows their layout."""

    dynamodb: DynamoDBClient
    table: str
    window_hours: tuple[int, ...] = DEFAULT_WINDOWS
    retention_days: int = 14

    @classmethod
    def from_settings(
        cls,
        dynamodb: DynamoDBClient,
        settings: Settings,
        window_hours: tuple[int, ...] | None = None,
    ) -> PartnerStore:
        """The store as configured (table, windows, bucket retention): the one way to build
        it; `window_hours` reads more hours of buckets than the windows judge (charts)."""
        return cls(
            dynamodb,
            settings.table,
            settings.window_hours if window_hours is None else window_hours,
            settings.bucket_retention_days,
        )

    # ---- reads -------------------------------------------------------------------

    async def get_state(self, partner_id: str, now: datetime | None = None) -> PartnerState:
        """Profile, totals and the buckets of the longest window: one Query (one page)."""
        now = now or utcnow()
        oldest = hours_back(now, max(self.window_hours))
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND sk >= :from",
            "ExpressionAttributeValues": {
                ":pk": {"S": t.partner_pk(partner_id)},
                ":from": {"S": t.bucket_sk(oldest)},
            },
        }
        while True:
            resp = await self.call("query", **kwargs)
            items.extend(resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return self._state_from_items(partner_id, items)

    def _state_from_items(self, partner_id: str, items: list[dict[str, Any]]) -> PartnerState:
        profile = None
        totals = Counters()
        buckets: dict[datetime, Counters] = {}
        quota_used: dict[str, int] = {}
        for item in items:
            sk = item["sk"]["S"]
            if sk == t.PROFILE:
                profile = profile_from_item(item)
            elif sk == t.TOTALS:
                totals = Counters.from_mapping(t.from_item(item))
            elif sk.startswith("B#"):
                buckets[t.parse_bucket_sk(sk)] = Counters.from_mapping(t.from_item(item))
            elif sk.startswith("Q#"):
                quota_used[sk.removeprefix("Q#")] = int(item.get("used", {}).get("N", 0))
        return PartnerState(partner_id, profile, totals, buckets, quota_used)

    async def get_profile(self, partner_id: str) -> Profile | None:
        resp = await self.call(
            "get_item",
            TableName=self.table,
            Key=t.key(t.partner_pk(partner_id), t.PROFILE),
            ConsistentRead=True,
        )
        return profile_from_item(resp["Item"]) if "Item" in resp else None

    async def status_epoch(self) -> int:
        """The status epoch (0 before the first change): one consistent GetItem that
        every sender task makes four times a second, so a pause reaches them at once
        instead of after their cached judgements expire (sender/gate.py)."""
        resp = await self.call(
            "get_item",
            TableName=self.table,
            Key=t.key(t.STATUS_PK, t.STATUS_SK),
            ConsistentRead=True,
            ProjectionExpression="epoch",
        )
        return int(resp.get("Item", {}).get("epoch", {}).get("N", 0))

    async def bump_status_epoch(self, partner_id: str, now: datetime | None = None) -> None:
        """Tell the sender tasks that `partner_id` changed (paused, resumed, limits)."""
        await self.call(
            "update_item",
            TableName=self.table,
            Key=t.key(t.STATUS_PK, t.STATUS_SK),
            UpdateExpression="ADD epoch :one SET partner_id = :p, changed_at = :at",
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":p": {"S": partner_id},
                ":at": {"S": _iso(now or utcnow()) or ""},
            },
        )

    async def take_quota(
        self, partner_id: str, quota: int, n: int = 1, now: datetime | None = None
    ) -> bool:
        """Count `n` sends against the partner's quota for today (UTC), only if that keeps
        the day's count at or below `quota`: one conditional ADD, so however many sender
        tasks take at once, the day never counts more than the quota. False: no room."""
        now = now or utcnow()
        try:
            await self.call(
                "update_item",
                TableName=self.table,
                Key=t.key(t.partner_pk(partner_id), t.quota_sk(utc_day(now))),
                UpdateExpression="ADD used :n SET expires_at = if_not_exists(expires_at, :exp)",
                ConditionExpression="attribute_not_exists(used) OR used <= :room",
                ExpressionAttributeValues={
                    ":n": {"N": str(n)},
                    ":room": {"N": str(quota - n)},
                    ":exp": {"N": str(int((now + timedelta(days=2)).timestamp()))},
                },
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    async def give_back_quota(self, partner_id: str, day: str, n: int = 1) -> None:
        """Return sends taken for `day` that were never made (SES refused them)."""
        try:
            await self.call(
                "update_item",
                TableName=self.table,
                Key=t.key(t.partner_pk(partner_id), t.quota_sk(day)),
                UpdateExpression="ADD used :minus",
                ConditionExpression="used >= :n",
                ExpressionAttributeValues={":minus": {"N": str(-n)}, ":n": {"N": str(n)}},
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise  # else: nothing taken that day (expired, or never): nothing to return

    async def probe(self) -> None:
        """One cheap read (the profile of `_unattributed`, which never exists): how the
        services' circuit breakers ask whether DynamoDB answers again."""
        await self.get_profile(UNATTRIBUTED)

    async def require_profile(self, partner_id: str) -> Profile:
        profile = await self.get_profile(partner_id)
        if profile is None:
            raise PartnerNotFound(f"no partner {partner_id}")
        return profile

    async def list_partner_ids(self) -> tuple[list[str], list[str]]:
        """(registered ids, ids seen in traffic without a profile), both sorted.

        Queries the sparse "partners" index (PROFILE and TOTALS items only), never the
        whole table."""
        registered: set[str] = set()
        seen: set[str] = set()
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": t.PARTNERS_INDEX,
            "KeyConditionExpression": "#kind = :partner",
            "ExpressionAttributeNames": {"#kind": t.KIND_ATTRIBUTE},
            "ExpressionAttributeValues": {":partner": {"S": t.PARTNER_KIND}},
        }
        while True:
            resp = await self.call("query", **kwargs)
            for item in resp.get("Items", []):
                pid = item["pk"]["S"][2:]
                (registered if item["sk"]["S"] == t.PROFILE else seen).add(pid)
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return sorted(registered), sorted(seen - registered)

    # ---- profile writes ----------------------------------------------------------

    async def create(self, profile: Profile) -> None:
        """Add a profile; InvalidPartnerId for a malformed or reserved id (whoever calls),
        PartnerExists if there is one."""
        check_partner_id(profile.partner_id)
        now = utcnow()
        item = profile_to_item(
            Profile(**{**profile.__dict__, "created_at": now, "updated_at": now})
        )
        try:
            await self.call(
                "put_item",
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise PartnerExists(profile.partner_id) from None
            raise

    async def update(self, partner_id: str, **fields: Any) -> Profile:
        """Change profile attributes (contact_email, bounce_limit, ...) of an existing
        partner; a change of its limits also records a Partner Limits Changed event (which
        the sweep publishes: callers that can publish at once use `change`)."""
        profile, _event = await self.change(partner_id, **fields)
        return profile

    async def change(self, partner_id: str, **fields: Any) -> tuple[Profile, LifecycleEvent | None]:
        """`update`, returning also the Partner Limits Changed event when the limits (or
        the throttle: max_rate, daily_quota; NO_CAP removes one) changed.

        The limits before and after are exact: the update is conditional on the profile's
        `updated_at` as read, in one transaction with the event, and retried if another
        write came between."""
        fields = {k: v for k, v in fields.items() if v is not None}
        if not set(LIMIT_ATTRIBUTES + THROTTLE_ATTRIBUTES) & set(fields):
            return await self._update(partner_id, fields), None
        for _attempt in range(_CHANGE_ATTEMPTS):
            before = await self.require_profile(partner_id)
            after = _limits_with(before.limits, fields)
            throttle = _throttle_with(before.throttle, fields)
            if after == before.limits and throttle == before.throttle:
                return await self._update(partner_id, fields), None
            now = utcnow()
            event = lifecycle.limits_changed(
                partner_id,
                before.limits,
                after,
                before.status,
                now,
                previous_throttle=before.throttle,
                throttle=throttle,
            )
            expr, names, expr_values = _set_and_remove({**fields, "updated_at": _iso(now)})
            if before.updated_at is None:
                condition = "attribute_exists(pk) AND attribute_not_exists(updated_at)"
            else:
                condition = "updated_at = :seen"
                expr_values[":seen"] = {"S": _iso(before.updated_at) or ""}
            update = {
                "Update": {
                    "TableName": self.table,
                    "Key": t.key(t.partner_pk(partner_id), t.PROFILE),
                    "UpdateExpression": expr,
                    "ConditionExpression": condition,
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": expr_values,
                }
            }
            if await self._transact(update, event):
                return await self.require_profile(partner_id), event
        raise StoreError(f"partner {partner_id} kept changing while its limits were set; retry")

    async def _update(self, partner_id: str, fields: dict[str, Any]) -> Profile:
        expr, names, values = _set_and_remove({**fields, "updated_at": _iso(utcnow())})
        try:
            resp = await self.call(
                "update_item",
                TableName=self.table,
                Key=t.key(t.partner_pk(partner_id), t.PROFILE),
                UpdateExpression=expr,
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise PartnerNotFound(f"no partner {partner_id}") from None
            raise
        return profile_from_item(resp["Attributes"])

    async def try_pause(
        self,
        partner_id: str,
        reason: str,
        by: PausedBy,
        now: datetime | None = None,
        event: LifecycleEvent | None = None,
    ) -> bool:
        """active -> paused as one conditional write; True only for the writer that won.

        The Partner Paused event (`event`, or a plain one) is written in the same
        transaction, so it exists exactly when the pause does: once per pause.
        `reason` is stored as given: sesguard.core.partners.pause_reason makes it final (once,
        in pause_partner), so a reason that breaks its limit here is a caller's bug."""
        if not reason or len(reason) > MAX_REASON_CHARS:
            raise ValueError(f"pause reason must have 1 to {MAX_REASON_CHARS} characters")
        now = now or utcnow()
        update = {
            "Update": {
                "TableName": self.table,
                "Key": t.key(t.partner_pk(partner_id), t.PROFILE),
                "UpdateExpression": (
                    "SET #s = :paused, paused_reason = :r, paused_at = :at, paused_by = :by,"
                    " updated_at = :at"
                ),
                "ConditionExpression": "attribute_exists(pk) AND #s = :active",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {
                    ":paused": {"S": Status.PAUSED.value},
                    ":active": {"S": Status.ACTIVE.value},
                    ":r": {"S": reason},
                    ":at": {"S": _iso(now) or ""},
                    ":by": {"S": by.value},
                },
            }
        }
        return await self._transact(update, event or lifecycle.paused(partner_id, reason, by, now))

    async def resume(
        self, partner_id: str, now: datetime | None = None, event: LifecycleEvent | None = None
    ) -> bool:
        """paused -> active, re-arming the detector and forgetting the warn levels crossed
        before; False if it was not paused. The Partner Resumed event (`event`, or a plain
        one) is written in the same transaction: once per resume."""
        now = now or utcnow()
        baseline = await self._bucket(partner_id, now)
        marks = [warn_mark(m, h) for m in _METRICS for h in self.window_hours]
        names = {"#s": "status"} | {f"#w{i}": t.WARNED_PREFIX + m for i, m in enumerate(marks)}
        update = {
            "Update": {
                "TableName": self.table,
                "Key": t.key(t.partner_pk(partner_id), t.PROFILE),
                "UpdateExpression": (
                    "SET #s = :active, resumed_at = :at, rearm_at = :at, rearm_baseline = :b,"
                    " updated_at = :at REMOVE paused_reason, paused_at, paused_by"
                    + "".join(f", #w{i}" for i in range(len(marks)))
                ),
                "ConditionExpression": "attribute_exists(pk) AND #s = :paused",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": {
                    ":paused": {"S": Status.PAUSED.value},
                    ":active": {"S": Status.ACTIVE.value},
                    ":at": {"S": _iso(now) or ""},
                    ":b": t.to_attr(baseline.nonzero()),
                },
            }
        }
        if await self._transact(update, event or lifecycle.resumed(partner_id, now)):
            return True
        await self.require_profile(partner_id)
        return False

    async def try_warn(self, partner_id: str, mark: str, event: LifecycleEvent) -> bool:
        """Mark a warn level crossed (sesguard.core.partners.warn_mark) with its Partner Warned
        event, in one conditional transaction: True only for the one writer that found the
        mark absent (and the partner active), however many tasks saw the crossing."""
        update = {
            "Update": {
                "TableName": self.table,
                "Key": t.key(t.partner_pk(partner_id), t.PROFILE),
                "UpdateExpression": "SET #w = :at",
                "ConditionExpression": (
                    "attribute_exists(pk) AND #s = :active AND attribute_not_exists(#w)"
                ),
                "ExpressionAttributeNames": {"#s": "status", "#w": t.WARNED_PREFIX + mark},
                "ExpressionAttributeValues": {
                    ":active": {"S": Status.ACTIVE.value},
                    ":at": {"S": lifecycle.stamp(event.occurred_at)},
                },
            }
        }
        return await self._transact(update, event)

    async def clear_warning(self, partner_id: str, mark: str, seen: str) -> bool:
        """Forget a crossed warn level, only as it was read (`seen`, its time): a mark set
        again by another task after this one's read stays."""
        try:
            await self.call(
                "update_item",
                TableName=self.table,
                Key=t.key(t.partner_pk(partner_id), t.PROFILE),
                UpdateExpression="REMOVE #w",
                ConditionExpression="#w = :seen",
                ExpressionAttributeNames={"#w": t.WARNED_PREFIX + mark},
                ExpressionAttributeValues={":seen": {"S": seen}},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    async def try_quota_reached(self, partner_id: str, mark: str, event: LifecycleEvent) -> bool:
        """Mark the daily quota reached (`mark`: "<day>/<quota>") with its Partner Quota
        Reached event, in one conditional transaction: True only for the one writer that
        found the mark different, however many sender tasks found the day full."""
        update = {
            "Update": {
                "TableName": self.table,
                "Key": t.key(t.partner_pk(partner_id), t.PROFILE),
                "UpdateExpression": "SET #q = :mark",
                "ConditionExpression": (
                    "attribute_exists(pk) AND (attribute_not_exists(#q) OR #q <> :mark)"
                ),
                "ExpressionAttributeNames": {"#q": t.QUOTA_REACHED},
                "ExpressionAttributeValues": {":mark": {"S": mark}},
            }
        }
        return await self._transact(update, event)

    async def try_quota_released(
        self,
        partner_id: str,
        event: LifecycleEvent,
        *,
        before_day: str | None = None,
        mark: str | None = None,
    ) -> bool:
        """Remove the quota-reached mark with its Partner Quota Released event, in one
        conditional transaction: the mark of a day before `before_day` (a new UTC day), or
        exactly `mark` (the quota was raised). True only for the one writer that removed it."""
        if (before_day is None) == (mark is None):
            raise ValueError("give before_day or mark")
        if before_day is not None:
            condition, value = "attribute_exists(#q) AND #q < :v", before_day
        else:
            condition, value = "#q = :v", str(mark)
        update = {
            "Update": {
                "TableName": self.table,
                "Key": t.key(t.partner_pk(partner_id), t.PROFILE),
                "UpdateExpression": "REMOVE #q",
                "ConditionExpression": condition,
                "ExpressionAttributeNames": {"#q": t.QUOTA_REACHED},
                "ExpressionAttributeValues": {":v": {"S": value}},
            }
        }
        return await self._transact(update, event)

    async def _transact(self, update: dict[str, Any], event: LifecycleEvent) -> bool:
        """One conditional Update and the event it causes (history + outbox items), in one
        TransactWriteItems: False, with nothing written, when the Update's condition
        failed (the transition was lost to another writer, or is not possible).

        DynamoDB cancels a transaction that collides with another one on the same item
        (TransactionConflict) instead of ordering them as it orders single writes; that
        is retried, and the retry finds the condition decided by the other writer."""
        items = [update, *lifecycle.event_items(event, self.table, self.history_hours)]
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                await self.call("transact_write_items", TransactItems=items)
            except ClientError as exc:
                codes = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
                if error_code(exc) != "TransactionCanceledException" or not codes:
                    raise
                if codes[0] == "ConditionalCheckFailed":
                    return False
                if "TransactionConflict" not in codes or attempt + 1 == _CONFLICT_ATTEMPTS:
                    raise
                await asyncio.sleep(backoff_delay(attempt, base=0.02, cap=0.5))
            else:
                return True
        raise AssertionError("unreachable")

    @property
    def history_hours(self) -> int:
        return lifecycle.history_hours(self.retention_days, self.window_hours)

    async def delete(self, partner_id: str) -> None:
        await self.call(
            "delete_item", TableName=self.table, Key=t.key(t.partner_pk(partner_id), t.PROFILE)
        )

    # ---- counters ----------------------------------------------------------------

    def counter_updates(
        self, partner_id: str, hour: datetime, counts: Counters
    ) -> list[dict[str, Any]]:
        """The two transaction items that add `counts` to one hour bucket and the totals."""
        if not counts:
            return []
        return [
            self.bucket_update(partner_id, hour, counts),
            self.totals_update(partner_id, counts),
        ]

    def bucket_update(self, partner_id: str, hour: datetime, counts: Counters) -> dict[str, Any]:
        """ADD to one hour bucket, which expires after the retention period."""
        expires = int((hour_floor(hour) + timedelta(days=self.retention_days)).timestamp())
        return counter_update(
            self.table,
            t.partner_pk(partner_id),
            t.bucket_sk(hour),
            counts,
            {t.TTL_ATTRIBUTE: expires},
        )

    def totals_update(self, partner_id: str, counts: Counters) -> dict[str, Any]:
        """ADD to the all-time totals, which are listed in the partners index."""
        return counter_update(
            self.table,
            t.partner_pk(partner_id),
            t.TOTALS,
            counts,
            {t.KIND_ATTRIBUTE: t.PARTNER_KIND},
        )

    async def add_counts(self, partner_id: str, hour: datetime, counts: Counters) -> None:
        """Apply one partner-hour of counts atomically (bucket and totals together)."""
        items = self.counter_updates(partner_id, hour, counts)
        if items:
            await self.call("transact_write_items", TransactItems=items)

    async def _bucket(self, partner_id: str, hour: datetime) -> Counters:
        resp = await self.call(
            "get_item",
            TableName=self.table,
            Key=t.key(t.partner_pk(partner_id), t.bucket_sk(hour)),
            ConsistentRead=True,
        )
        return Counters.from_mapping(t.from_item(resp.get("Item", {})))

    # ---- plumbing ----------------------------------------------------------------

    async def call(self, op: str, **kwargs: Any) -> Any:
        """One DynamoDB call (`op` with its arguments) on the partners table, the missing table
        turned into a StoreError that says what to do; worker/apply.py commits through it."""
        try:
            return await getattr(self.dynamodb, op)(**kwargs)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise StoreError(
                    f"DynamoDB table {self.table!r} not found: run `sesguard bootstrap` first"
                ) from None
            raise
