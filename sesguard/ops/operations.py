"""What an operator can do to partners, and read of them: the one implementation behind
`sesguard partners ...` and `sesguard console`.

Each action checks its input here (the CLI's argument types wrap the same checks, the
console applies them to the JSON it receives), writes through the store, the pause
transition and the held-jobs store, and returns what happened as data. The CLI prints a
result's `lines()` and maps the errors raised (sesguard.errors) to exit codes; the
console returns the same result as JSON. So an action has one meaning, whichever way the
operator took it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, DecimalException
from enum import StrEnum
from typing import Any

from sesguard.aws import table as t
from sesguard.aws.clients import Clients
from sesguard.aws.held import HeldJobs, count_held, discard_held, replay_held
from sesguard.aws.lifecycle import Publisher
from sesguard.aws.store import NO_CAP, PartnerExists, PartnerNotFound, PartnerStore
from sesguard.core.partners import (
    MAX_DAILY_QUOTA,
    MAX_MAX_RATE,
    MAX_MIN_VOLUME,
    MAX_REASON_CHARS,
    MIN_MAX_RATE,
    MIN_RATE,
    Limits,
    PartnerState,
    PausedBy,
    Profile,
    Throttle,
    check_contact,
    check_partner_id,
    utcnow,
)
from sesguard.domain.reactions import standard_reactions
from sesguard.domain.transitions import Transitions
from sesguard.errors import Refused
from sesguard.ops.report import partner_json
from sesguard.settings import Settings

DEFAULT_PAUSE_REASON = "paused by operator"


# ---- input checks: each refusal names what is wrong, before any AWS call ---------------


def check_rate(value: object) -> float:
    """A limit DynamoDB can store as given and that means something: a finite fraction in
    [MIN_RATE, 1] with at most 38 significant digits. NaN, infinities, subnormal and other
    tiny values are refused. Takes the operator's text (or a JSON number)."""
    text = _number_text(value)
    try:
        exact = Decimal(text)
    except (DecimalException, ValueError):
        raise Refused(f"not a number: {value!r}") from None
    if not exact.is_finite():
        raise Refused(f"{text} is not a finite number")
    digits = t.significant_digits(exact)
    if digits > t.DYNAMODB_DIGITS:
        raise Refused(f"{digits} significant digits; DynamoDB stores at most {t.DYNAMODB_DIGITS}")
    rate = float(exact)
    if not MIN_RATE <= rate <= 1:
        raise Refused(f"{text} is outside [{MIN_RATE:g}, 1]: give a fraction, 0.05 = 5%")
    return rate


def check_warn_ratio(value: object) -> float:
    rate = check_rate(value)
    if rate >= 1:
        raise Refused("warn ratio must be below 1")
    return rate


def check_volume(value: object) -> int:
    """A whole number from 1 to MAX_MIN_VOLUME (a minimum volume, a number of jobs)."""
    text = _number_text(value)
    if len(text) > 40:  # int() of a huge string is slow, and echoing it helps nobody
        raise Refused(f"not a whole number from 1 to {MAX_MIN_VOLUME}")
    try:
        n = int(text)
    except ValueError:
        raise Refused(f"not a whole number: {value!r}") from None
    if not 1 <= n <= MAX_MIN_VOLUME:
        raise Refused(f"{n} is outside [1, {MAX_MIN_VOLUME}]")
    return n


NO_CAP_WORD = "none"  # `--max-rate none`, `--daily-quota none`: remove the cap


def _no_cap(value: object) -> bool:
    return value is NO_CAP or (isinstance(value, str) and value.strip().lower() == NO_CAP_WORD)


def check_max_rate(value: object) -> Any:
    """A partner's rate cap in sends per second, from MIN_MAX_RATE to MAX_MAX_RATE with at
    most 38 significant digits; `none` (or NO_CAP) removes the cap and gives NO_CAP."""
    if _no_cap(value):
        return NO_CAP
    text = _number_text(value)
    try:
        exact = Decimal(text)
    except (DecimalException, ValueError):
        raise Refused(f"a max rate is a number of sends/s or none, not {value!r}") from None
    if not exact.is_finite() or t.significant_digits(exact) > t.DYNAMODB_DIGITS:
        raise Refused(f"a max rate is a number of sends/s or none, not {text!r}")
    rate = float(exact)
    if not MIN_MAX_RATE <= rate <= MAX_MAX_RATE:
        raise Refused(
            f"a max rate of {text} is outside [{MIN_MAX_RATE:g}, {MAX_MAX_RATE:g}] sends/s"
            " (none: no cap)"
        )
    return rate


def check_daily_quota(value: object) -> Any:
    """A partner's daily quota: a whole number of sends per UTC day from 0 to
    MAX_DAILY_QUOTA; `none` (or NO_CAP) removes the quota and gives NO_CAP."""
    if _no_cap(value):
        return NO_CAP
    text = _number_text(value)
    if len(text) > 40:  # int() of a huge string is slow, and echoing it helps nobody
        raise Refused(
            f"a daily quota is a whole number of sends per UTC day, 0 to {MAX_DAILY_QUOTA}"
        )
    if not text.isdigit() or not text.isascii():
        raise Refused(f"a daily quota is a whole number of sends per UTC day or none, not {text!r}")
    n = int(text)
    if n > MAX_DAILY_QUOTA:
        raise Refused(f"a daily quota of {n} is outside [0, {MAX_DAILY_QUOTA}] (none: no cap)")
    return n


def check_reason(value: object) -> str:
    """Refused rather than cut: the operator sees what the partner will read."""
    if not isinstance(value, str):
        raise Refused("the reason must be text")
    text = value.strip()
    if not text:
        raise Refused("give a reason (the partner reads it in the notice)")
    if len(text) > MAX_REASON_CHARS:
        raise Refused(f"{len(text)} characters; a reason may have at most {MAX_REASON_CHARS}")
    return text


def check_id(value: object, *, reserved_ok: bool = False) -> str:
    """InvalidPartnerId (a Refused) for anything but a partner id, text or not."""
    return check_partner_id(value, reserved_ok=reserved_ok)  # type: ignore[arg-type]


def check_email(value: object) -> str:
    if not isinstance(value, str):
        raise Refused("the contact must be an e-mail address")
    return check_contact(value)  # InvalidContact is a Refused


def _number_text(value: object) -> str:
    """The text of a number as given: a JSON number is read back as it prints (0.05,
    not 0.05000000000000000277...), a bool is not a number."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise Refused(f"not a number: {value!r}")
    return value.strip() if isinstance(value, str) else repr(value)


# ---- reads ----------------------------------------------------------------------------


def default_limits(settings: Settings) -> Limits:
    return Limits(
        settings.default_bounce_limit,
        settings.default_complaint_limit,
        settings.default_min_volume,
        settings.warn_ratio,
    )


@dataclass(frozen=True)
class Snapshot:
    """One partner as read at `now` (one Query, one count): the state behind its report."""

    state: PartnerState
    held_jobs: int
    now: datetime
    report: dict[str, Any]  # partner_json: what `partners show --json` prints


async def partner_snapshot(
    store: PartnerStore, settings: Settings, partner_id: str, now: datetime | None = None
) -> Snapshot | None:
    """None when there is neither a profile nor any traffic under that id."""
    now = now or utcnow()
    state = await store.get_state(partner_id, now)
    if state.profile is None and not state.totals and not state.buckets:
        return None
    held = await count_held(store.dynamodb, store.table, partner_id)
    report = partner_json(state, held, now, settings.window_hours, default_limits(settings))
    return Snapshot(state, held, now, report)


async def partner_report(
    store: PartnerStore, settings: Settings, partner_id: str
) -> dict[str, Any] | None:
    """`partners show --json`; None when the id has neither a profile nor traffic."""
    snapshot = await partner_snapshot(store, settings, partner_id)
    return snapshot.report if snapshot else None


async def partner_reports(store: PartnerStore, settings: Settings) -> list[dict[str, Any]]:
    """`partners list --json`: every partner of the sparse partners index (registered ones,
    then ids seen in traffic without a profile), never a table scan."""
    registered, unregistered = await store.list_partner_ids()
    reports = await asyncio.gather(
        *(partner_report(store, settings, pid) for pid in [*registered, *unregistered])
    )
    return [r for r in reports if r is not None]


# ---- actions --------------------------------------------------------------------------


@dataclass(frozen=True)
class PauseResult:
    partner_id: str
    paused: bool  # False: it was already paused (someone else's pause stands)
    notice_sent: bool

    def lines(self) -> list[str]:
        if not self.paused:
            return [f"partner {self.partner_id} was already paused"]
        note = "" if self.notice_sent else " (no notice sent)"
        return [f"paused partner {self.partner_id}{note}"]


@dataclass(frozen=True)
class ResumeResult:
    partner_id: str
    resumed: bool  # False: it was not paused
    warnings: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        if self.resumed:
            return [f"resumed partner {self.partner_id}"]
        return [f"partner {self.partner_id} was not paused"]


class HeldAction(StrEnum):
    """What resume does with the jobs held while the partner was paused."""

    KEEP = "keep"
    REPLAY = "replay"
    DISCARD = "discard"


@dataclass(frozen=True)
class HeldResult:
    partner_id: str
    action: HeldAction
    replayed: int = 0
    discarded: int = 0
    remaining: int = 0  # still held (only counted when kept)

    def lines(self) -> list[str]:
        if self.action is HeldAction.REPLAY:
            return [f"replayed {_jobs(self.replayed, 'held job')}"]
        if self.action is HeldAction.DISCARD:
            out = [f"discarded {_jobs(self.discarded, 'held job')}"]
            if self.replayed:
                out.append(f"replayed {_jobs(self.replayed, 'job')} held after the resume")
            return out
        if self.remaining:
            verb = "remains" if self.remaining == 1 else "remain"
            return [
                f"{_jobs(self.remaining, 'job')} {verb} held: run `sesguard partners resume "
                f"{self.partner_id} --replay` to send them or --discard to drop them"
            ]
        return []


def _jobs(n: int, noun: str) -> str:
    """'1 held job', '3 held jobs'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass(frozen=True)
class UpdateResult:
    partner_id: str
    profile: Profile
    created: bool = False

    def lines(self) -> list[str]:
        return [f"{'added' if self.created else 'updated'} partner {self.partner_id}"]


async def add_partner(
    clients: Clients,
    settings: Settings,
    partner_id: object,
    contact: object,
    *,
    bounce_limit: object = None,
    complaint_limit: object = None,
    min_volume: object = None,
    warn_ratio: object = None,
    tenant: object = None,
    max_rate: object = None,
    daily_quota: object = None,
) -> UpdateResult:
    """Register a partner; limits not given are the SESGUARD_DEFAULT_* ones, a throttle
    not given (or `none`) is no cap."""
    pid = check_id(partner_id)
    defaults = default_limits(settings)
    limits = Limits(
        bounce_rate=_opt(check_rate, bounce_limit) or defaults.bounce_rate,
        complaint_rate=_opt(check_rate, complaint_limit) or defaults.complaint_rate,
        min_volume=_opt(check_volume, min_volume) or defaults.min_volume,
        warn_ratio=_opt(check_warn_ratio, warn_ratio) or defaults.warn_ratio,
    )
    throttle = Throttle(_cap(check_max_rate, max_rate), _cap(check_daily_quota, daily_quota))
    tenant_name = _opt(check_id, tenant)
    profile = Profile(pid, check_email(contact), limits, tenant_name=tenant_name, throttle=throttle)
    if tenant_name:
        await _ensure_tenant(clients, settings, pid, tenant_name)
    try:
        await PartnerStore.from_settings(clients.dynamodb, settings).create(profile)
    except PartnerExists:
        raise Refused(f"partner {pid} already exists: use `sesguard partners set`") from None
    return UpdateResult(pid, profile, created=True)


async def set_partner(
    clients: Clients,
    settings: Settings,
    partner_id: object,
    *,
    contact: object = None,
    bounce_limit: object = None,
    complaint_limit: object = None,
    min_volume: object = None,
    warn_ratio: object = None,
    tenant: object = None,
    max_rate: object = None,
    daily_quota: object = None,
) -> UpdateResult:
    """Change a partner's contact, limits, throttle or tenant; what is not given (None)
    stays. `max_rate` / `daily_quota` "none" (or NO_CAP) removes that cap. A change of
    the limits or the throttle is a Partner Limits Changed transition: every sender task
    learns it within SESGUARD_STATUS_POLL_SECONDS."""
    pid = check_id(partner_id)
    changes = {
        "contact_email": _opt(check_email, contact),
        "bounce_limit": _opt(check_rate, bounce_limit),
        "complaint_limit": _opt(check_rate, complaint_limit),
        "min_volume": _opt(check_volume, min_volume),
        "warn_ratio": _opt(check_warn_ratio, warn_ratio),
        "max_rate": _opt(check_max_rate, max_rate),
        "daily_quota": _opt(check_daily_quota, daily_quota),
        "tenant_name": _opt(check_id, tenant),
    }
    if all(v is None for v in changes.values()):
        raise Refused("nothing to change: give at least one option (see --help)")
    store = PartnerStore.from_settings(clients.dynamodb, settings)
    if changes["tenant_name"]:
        if await store.get_profile(pid) is None:
            raise PartnerNotFound(f"no partner {pid}: add it first")
        await _ensure_tenant(clients, settings, pid, changes["tenant_name"])
    try:
        profile = await transitions(clients, settings, store).change(pid, **changes)
    except PartnerNotFound:
        raise PartnerNotFound(f"no partner {pid}: add it first") from None
    return UpdateResult(pid, profile)


async def pause(
    clients: Clients,
    settings: Settings,
    partner_id: object,
    reason: object = DEFAULT_PAUSE_REASON,
    *,
    notify: bool = True,
) -> PauseResult:
    """Pause as an operator: the conditional transition every pause goes through, so the
    partner gets one notice (unless `notify` is off) however many pauses race."""
    pid = check_id(partner_id)
    text = check_reason(reason)
    store = PartnerStore.from_settings(clients.dynamodb, settings)
    if await store.get_profile(pid) is None:
        raise PartnerNotFound(f"no partner {pid}")
    outcome = await transitions(clients, settings, store).pause(
        pid, text, PausedBy.OPERATOR, notify=notify
    )
    return PauseResult(pid, outcome.won, outcome.notice_id is not None)


async def resume(clients: Clients, settings: Settings, partner_id: object) -> ResumeResult:
    """paused -> active, re-arming the detector; held jobs are `release_held`'s business."""
    pid = check_id(partner_id)
    store = PartnerStore.from_settings(clients.dynamodb, settings)
    try:
        resumed = await transitions(clients, settings, store).resume(pid)
    except PartnerNotFound:
        raise PartnerNotFound(f"no partner {pid}") from None
    warnings = tuple(resumed.warnings) if resumed else ()
    return ResumeResult(pid, resumed is not None, warnings)


def release_seconds(settings: Settings) -> float:
    """How long replaying or discarding takes at least: senders may trust a cached
    "paused" for gate_cache_seconds after a resume, so the release sweeps once more then."""
    return settings.gate_cache_seconds + 1


async def release_held(
    clients: Clients, settings: Settings, partner_id: object, action: HeldAction
) -> HeldResult:
    """After `resume`: replay the held jobs in order, discard them, or keep them (and say
    how many are held)."""
    pid = check_id(partner_id)
    if action is HeldAction.REPLAY:
        release = await replay_held(clients, settings, pid)
        return HeldResult(pid, action, replayed=release.replayed)
    if action is HeldAction.DISCARD:
        release = await discard_held(clients, settings, pid)
        return HeldResult(pid, action, replayed=release.replayed, discarded=release.discarded)
    remaining = await HeldJobs.from_clients(clients, settings).count(pid)
    return HeldResult(pid, action, remaining=remaining)


def held_action(value: object) -> HeldAction:
    for action in HeldAction:
        if value == action.value:
            return action
    choices = ", ".join(a.value for a in HeldAction)
    raise Refused(f"held jobs: choose one of {choices}, not {value!r}")


# ---- helpers --------------------------------------------------------------------------


def _opt(check: Any, value: object) -> Any:
    return None if value is None else check(value)


def _cap(check: Any, value: object) -> Any:
    """A throttle value for a new profile: None for not given or no cap."""
    checked = _opt(check, value)
    return None if checked is NO_CAP else checked


async def _ensure_tenant(clients: Clients, settings: Settings, partner_id: str, name: str) -> None:
    """With SESGUARD_USE_TENANTS, map the partner to its SES tenant before storing the name."""
    from sesguard.aws import tenants
    from sesguard.aws.clients import region

    if not settings.use_tenants:
        return  # the name is stored; SES tenants are only touched when enforcement is on
    if not settings.tenant_identity:
        raise Refused("--tenant with SESGUARD_USE_TENANTS needs SESGUARD_TENANT_IDENTITY")
    account = await clients.account_id()
    await tenants.ensure_tenant(  # TenantsUnsupported is a Failed naming the operation
        clients.sesv2,
        partner_id,
        tenants.identity_arn(region(), account, settings.tenant_identity),
        tenants.configuration_set_arn(region(), account, settings.configuration_set),
        name,
    )


def transitions(clients: Clients, settings: Settings, store: PartnerStore) -> Transitions:
    """An operator's transitions run the same reactions as the services' (the notice,
    the lifecycle event, the SES tenant mirror)."""
    publisher = Publisher.from_clients(clients, settings)
    return Transitions(store, standard_reactions(clients.sesv2, settings, publisher))
