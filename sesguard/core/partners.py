"""The partner: who it is, what it may do, and what it has done (plain data, no I/O)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from email_validator import EmailNotValidError, validate_email

from sesguard.errors import Refused

PARTNER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Ids starting with "_" are sesguard's own buckets (today `_unattributed`, for events
# without a usable partner tag): no profile, job or tag may use one, so a partner can
# never be mistaken for, or mixed into, traffic sesguard could not attribute.
RESERVED_PREFIX = "_"
UNATTRIBUTED = "_unattributed"

# Counter names, in the order reports print them (docs/semantics.md).
COUNTERS: tuple[str, ...] = (
    "sent",
    "delivered",
    "hard_bounces",
    "soft_bounces",
    "suppressed",
    "complaints",
    "rejects",
    "delivery_delays",
    "opens",
    "clicks",
    "rendering_failures",
)
# The same counts for mailbox-simulator recipients, kept out of the rates
# (docs/semantics.md, "Mailbox-simulator mail"): `simulator_sent`, `simulator_hard_bounces`, ...
SIMULATOR_PREFIX = "simulator_"
SIMULATOR_COUNTERS: tuple[str, ...] = tuple(SIMULATOR_PREFIX + name for name in COUNTERS)
# Hard bounces to an address or domain verified in the account, kept out of the bounce
# rate as SES keeps them (docs/semantics.md, "Bounces to verified identities").
VERIFIED_HARD_BOUNCES = "verified_hard_bounces"
ALL_COUNTERS: tuple[str, ...] = COUNTERS + SIMULATOR_COUNTERS + (VERIFIED_HARD_BOUNCES,)


class InvalidPartnerId(Refused):
    """Not a partner id (or a reserved one where it may not be used)."""


def is_reserved(partner_id: str) -> bool:
    return partner_id.startswith(RESERVED_PREFIX)


def check_partner_id(value: str, *, reserved_ok: bool = False) -> str:
    """Partner ids are what SES tag values and tenant names both allow; ids starting with
    "_" are reserved for sesguard's own buckets (only read-only commands may name them)."""
    if not isinstance(value, str) or not PARTNER_ID_RE.fullmatch(value):
        raise InvalidPartnerId(
            f"invalid partner id {value!r}: use 1-64 characters from A-Z a-z 0-9 _ -"
        )
    if not reserved_ok and is_reserved(value):
        raise InvalidPartnerId(
            f"partner id {value!r} is reserved: ids starting with {RESERVED_PREFIX!r}"
            f" are sesguard's own (e.g. {UNATTRIBUTED} holds untagged events)"
        )
    return value


class InvalidContact(Refused):
    """Not an e-mail address a notice may be sent to."""


def check_contact(value: str) -> str:
    """A partner's contact address, normalised; the one check for `partners add --contact`
    and for every notice sent (the table may hold what no check ever saw).

    The error never echoes the address: it may hold control characters (CR/LF) that must
    not reach a log line or a terminal raw; email_validator names them as U+000D etc."""
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidContact(f"invalid e-mail address: {exc}") from None


# ---- limits an operator may set: what DynamoDB can store and what makes sense ---------

MAX_MIN_VOLUME = 1_000_000_000  # sends in a window; far above any SES account's quota
MIN_RATE = 1 / MAX_MIN_VOLUME  # below this, any single event in any window crosses it
MAX_REASON_CHARS = 1000  # a pause reason, as stored (paused_reason) and sent (notice)
# A partner's throttle (Throttle): a rate cap from one send per 1000 s (3.6 an hour) to
# 10,000 sends/s (beyond any SES account's rate: higher is no cap), a daily quota from 0
# (no sends until it is raised) to MAX_DAILY_QUOTA.
MIN_MAX_RATE = 0.001
MAX_MAX_RATE = 10_000.0
MAX_DAILY_QUOTA = 1_000_000_000


def pause_reason(text: str) -> str:
    """The reason exactly as stored and sent: stripped, never empty, and cut (marked with
    an ellipsis) to MAX_REASON_CHARS. Applied once, by the pause transition
    (sesguard.domain.transitions), so the table and the notice carry the same text; the
    CLI refuses longer reasons."""
    text = text.strip() or "paused"
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 1] + "\u2026"
    return text


def warn_mark(metric: str, window_hours: int) -> str:
    """One warn level of a partner: a metric over a window, "bounce_rate:24"."""
    return f"{metric}:{window_hours}"


class Status(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


class PausedBy(StrEnum):
    POLICY = "policy"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Limits:
    bounce_rate: float = 0.05
    complaint_rate: float = 0.001
    min_volume: int = 200
    warn_ratio: float = 0.5

    def as_json(self) -> dict[str, float | int]:
        return {
            "bounce_rate": self.bounce_rate,
            "complaint_rate": self.complaint_rate,
            "min_volume": self.min_volume,
            "warn_ratio": self.warn_ratio,
        }


# A partner's limits when nothing says otherwise: the defaults of the SESGUARD_DEFAULT_*
# settings (sesguard.settings), which give a new partner's limits.
DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Throttle:
    """An operator's caps on a partner's volume, across all sender tasks together: sends
    per second, and sends per UTC day (the quota resets at 00:00 UTC). None: no cap."""

    max_rate: float | None = None
    daily_quota: int | None = None

    def as_json(self) -> dict[str, float | int | None]:
        return {"max_rate": self.max_rate, "daily_quota": self.daily_quota}


def utc_day(ts: datetime) -> str:
    """The UTC day a send counts toward in a daily quota: `YYYY-MM-DD`."""
    return (ts.astimezone(UTC) if ts.tzinfo else ts.replace(tzinfo=UTC)).strftime("%Y-%m-%d")


@dataclass
class Counters:
    """Per-recipient counts of SES events (one hour bucket, a window, or all time)."""

    sent: int = 0
    delivered: int = 0
    hard_bounces: int = 0
    soft_bounces: int = 0
    suppressed: int = 0
    complaints: int = 0
    rejects: int = 0
    delivery_delays: int = 0
    opens: int = 0
    clicks: int = 0
    rendering_failures: int = 0
    simulator_sent: int = 0
    simulator_delivered: int = 0
    simulator_hard_bounces: int = 0
    simulator_soft_bounces: int = 0
    simulator_suppressed: int = 0
    simulator_complaints: int = 0
    simulator_rejects: int = 0
    simulator_delivery_delays: int = 0
    simulator_opens: int = 0
    simulator_clicks: int = 0
    simulator_rendering_failures: int = 0
    verified_hard_bounces: int = 0

    def add(self, other: Counters) -> None:
        for name in ALL_COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def minus(self, other: Counters) -> Counters:
        """Difference, never below zero (a baseline can't exceed what it was taken from)."""
        return Counters(**{n: max(0, getattr(self, n) - getattr(other, n)) for n in ALL_COUNTERS})

    def as_dict(self) -> dict[str, int]:
        return {n: getattr(self, n) for n in ALL_COUNTERS}

    def nonzero(self) -> dict[str, int]:
        return {n: v for n, v in self.as_dict().items() if v}

    @classmethod
    def from_mapping(cls, data: dict[str, object]) -> Counters:
        return cls(**{n: int(data.get(n, 0) or 0) for n in ALL_COUNTERS})  # type: ignore[call-overload]

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))


@dataclass(frozen=True)
class Rearm:
    """Where the detector restarts after a resume: the resume time and the counts its
    hour bucket already held then (subtracted, so pre-resume traffic is not judged again)."""

    at: datetime
    baseline: Counters = field(default_factory=Counters)


@dataclass(frozen=True)
class Profile:
    partner_id: str
    contact_email: str
    limits: Limits
    status: Status = Status.ACTIVE
    paused_reason: str | None = None
    paused_at: datetime | None = None
    paused_by: PausedBy | None = None
    resumed_at: datetime | None = None
    rearm: Rearm | None = None
    tenant_name: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    throttle: Throttle = field(default_factory=Throttle)
    # Warn levels crossed and not cleared yet: warn_mark -> when (ISO); see
    # sesguard.domain.transitions.Transitions.note_warnings.
    warned: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def paused(self) -> bool:
        return self.status is Status.PAUSED


@dataclass
class PartnerState:
    """Everything the gate and reports need about one partner, from one read."""

    partner_id: str
    profile: Profile | None
    totals: Counters
    buckets: dict[datetime, Counters]  # hour start (UTC) -> counts
    # Sends counted against the daily quota, per UTC day (`utc_day`), as read.
    quota_used: dict[str, int] = field(default_factory=dict)

    @property
    def registered(self) -> bool:
        return self.profile is not None


def hour_floor(ts: datetime) -> datetime:
    ts = ts.astimezone(UTC) if ts.tzinfo else ts.replace(tzinfo=UTC)
    return ts.replace(minute=0, second=0, microsecond=0)


def utcnow() -> datetime:
    return datetime.now(UTC)


def hours_back(now: datetime, hours: int) -> datetime:
    """Start of the oldest hour bucket inside a window of `hours` ending at `now`."""
    return hour_floor(now) - timedelta(hours=hours - 1)
