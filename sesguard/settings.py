"""Every knob sesguard has, read once from SESGUARD_* variables (and nothing else).

AWS endpoints, region and credentials are deliberately *not* here: they come from the
SDK's standard variables so the same code runs against AWS, LocalStack and moto.
"""

from __future__ import annotations

import re
from functools import cached_property

from pydantic import EmailStr, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from sesguard.core.partners import DEFAULT_LIMITS, MAX_MIN_VOLUME, MIN_RATE
from sesguard.core.policy import DEFAULT_WINDOWS
from sesguard.errors import Refused

# Decompressed bytes one event object may have: 8 times Firehose's largest object. Why:
# docs/design.md, "The event loop stays responsive, and objects are bounded".
DEFAULT_MAX_OBJECT_BYTES = 1 << 30


class SettingsError(Refused):
    """A configuration value is wrong; the message names the variable and says it is
    configuration (the CLI prints it as it is, next to refusals of the command's input)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"configuration: {message}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SESGUARD_", extra="ignore", frozen=True)

    # Resource names (docs/operating.md, "Configuration").
    table: str = Field("sesguard", min_length=3, max_length=255, pattern=r"^[A-Za-z0-9_.-]+$")
    send_queue: str = Field("sesguard-send-jobs", min_length=1, max_length=75)
    events_queue: str = Field("sesguard-ses-events", min_length=1, max_length=75)
    events_bucket: str | None = Field(None, description="default: sesguard-ses-events-<account>")
    events_prefix: str = ""
    firehose_stream: str = Field("sesguard-ses-events", min_length=1, max_length=64)
    # Where Firehose writes records it could not deliver; never SES events to count.
    firehose_error_prefix: str = Field("errors/", min_length=1)
    configuration_set: str = Field("sesguard", min_length=1, max_length=64)
    notify_from: EmailStr | None = None
    # The EventBridge bus that gets partner lifecycle events (a name or an ARN).
    event_bus: str = Field(
        "default",
        pattern=r"^(arn:aws[a-z-]*:events:[a-z0-9-]+:\d{12}:event-bus/)?[A-Za-z0-9._/-]{1,256}$",
    )
    simulate_events: bool = False
    # Mailbox-simulator mail counts toward the rates only when asked (SES leaves it out).
    count_simulator_mail: bool = False
    # The worker lists the account's verified identities this often: hard bounces to them
    # stay out of the bounce rate, as at SES (docs/semantics.md).
    identities_refresh_seconds: float = Field(600.0, ge=10, le=86400)
    firehose_role_arn: str | None = None
    ses_firehose_role_arn: str | None = None

    # Reputation defaults for partners created without explicit limits (the CLI's bounds).
    default_bounce_limit: float = Field(DEFAULT_LIMITS.bounce_rate, ge=MIN_RATE, le=1)
    default_complaint_limit: float = Field(DEFAULT_LIMITS.complaint_rate, ge=MIN_RATE, le=1)
    default_min_volume: int = Field(DEFAULT_LIMITS.min_volume, ge=1, le=MAX_MIN_VOLUME)
    warn_ratio: float = Field(DEFAULT_LIMITS.warn_ratio, ge=MIN_RATE, lt=1)
    window_hours: tuple[int, ...] = DEFAULT_WINDOWS
    bucket_retention_days: int = Field(14, ge=8, description="TTL of hourly counter buckets")

    # Service behaviour.
    concurrency: int = Field(32, ge=1, le=512)
    gate_cache_seconds: float = Field(5.0, ge=0, le=300)
    # How often each sender task reads the status epoch (a pause lands within about this).
    status_poll_seconds: float = Field(0.25, gt=0, le=60)
    max_send_rate: float | None = Field(None, gt=0, description="SES sends/s; default: account")
    sender_tasks: int = Field(
        1, ge=1, description="divides the send rate when the sender leases cannot be read"
    )
    sender_lease_seconds: float = Field(
        30.0, ge=3, le=600, description="a sender task's lease lives this long; renewed every third"
    )
    visibility_timeout: int = Field(60, ge=10, le=43200)
    stop_grace_seconds: float = Field(20.0, gt=0, le=110)
    # How long a dependency (SES, DynamoDB, S3) may fail before a message that keeps
    # failing is dead-lettered; the queues' maxReceiveCount is derived from it
    # (sesguard.runtime.retry.max_receive_count), with dlq_max_receives as a floor.
    outage_tolerance_seconds: float = Field(900.0, ge=0, le=86400)
    dlq_max_receives: int = Field(5, ge=1, le=1000)
    max_object_bytes: int = Field(
        DEFAULT_MAX_OBJECT_BYTES, ge=1, description="decompressed bytes per event object"
    )
    job_record_days: int = Field(14, ge=1)
    # The sender and `sesguard dlq redrive`: how long after its claim a "possibly sent" job
    # must have gone without a word from SES (its events) before it is re-sent
    # (sesguard.ops.dlq `settle`). Well above Firehose's buffering (firehose_buffer_seconds,
    # at most 900 s) plus the worker's lag.
    dlq_settle_seconds: float = Field(900.0, ge=0, le=86400)
    # How long Firehose gathers SES events before it writes an object (bootstrap's stream;
    # the stack's FirehoseBufferSeconds): what a pause waits for on AWS, see
    # docs/design.md "A pause lands within a second". S3 destinations accept 0-900 s.
    firehose_buffer_seconds: int = Field(10, ge=0, le=900)
    use_tenants: bool = False
    tenant_identity: str | None = Field(
        None, description="SES identity associated with each partner's tenant (operator CLI)"
    )
    heartbeat_file: str = "/tmp/sesguard-heartbeat"  # noqa: S108 - container-local by design
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    log_format: str = Field("auto", pattern=r"^(auto|json|console)$")

    @field_validator("window_hours")
    @classmethod
    def _positive_windows(cls, hours: tuple[int, ...]) -> tuple[int, ...]:
        if not hours or any(h < 1 for h in hours):
            raise ValueError("give one or more positive hour counts, e.g. [24, 168]")
        return hours

    @model_validator(mode="after")
    def _buckets_outlive_windows(self) -> Settings:
        """A window longer than the counters are kept would judge on hours TTL has deleted
        (quietly lower rates): the buckets must outlive the longest window by a day."""
        if self.bucket_retention_days * 24 < max(self.window_hours) + 24:
            raise ValueError(
                f"SESGUARD_BUCKET_RETENTION_DAYS ({self.bucket_retention_days}) must cover the"
                f" longest of SESGUARD_WINDOW_HOURS ({max(self.window_hours)} h) plus a day"
            )
        return self

    @property
    def counts_simulator_mail(self) -> bool:
        """Simulator recipients count like real mail: asked for, or the simulator publishes
        the events (local runs and the demo must see their simulated bounces pause)."""
        return self.count_simulator_mail or self.simulate_events

    @cached_property
    def max_window_hours(self) -> int:
        return max(self.window_hours)

    def bucket_name(self, account_id: str) -> str:
        return self.events_bucket or f"sesguard-ses-events-{account_id}"


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning pydantic's report into one line that names the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except PydanticSettingsError as exc:  # a list/tuple variable that is not JSON
        match = re.search(r'field "(\w+)"', str(exc))
        var = f"SESGUARD_{match.group(1).upper()}" if match else "a SESGUARD_ variable"
        raise SettingsError(f"{var}: not valid JSON (e.g. [24, 168])") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        message = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a check across settings: its message names them
            raise SettingsError(message) from None
        var = f"SESGUARD_{str(err['loc'][0]).upper()}"
        raise SettingsError(f"{var}: {message}") from None
