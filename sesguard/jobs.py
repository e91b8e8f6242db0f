"""The send job: what an ISV application puts on the send queue (JSON).

Validation happens here once, for the enqueue CLI, the Python API and the sender alike:
addresses are parsed, header values may not carry CR/LF, and text or html is required.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

import orjson
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sesguard.partners import PARTNER_ID_RE

MAX_SQS_MESSAGE_BYTES = 256 * 1024
# SES message tags: names and values of ASCII letters, digits, _ - . @ ; at most 256 chars.
SES_TAG_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,256}$")
RESERVED_TAGS = frozenset({"partner_id"})
MAX_JOB_TAGS = 40  # SES allows 50 tags; sesguard keeps room for its own
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def _no_crlf(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain CR or LF")
    return value


def _address(value: str) -> str:
    """An e-mail address, optionally with a display name: `Name <a@b.example>`."""
    _no_crlf(value)
    match = re.fullmatch(
        r"\s*(?:(?P<name>[^<>]*?)\s*<(?P<addr>[^<>]+)>|(?P<bare>[^<>\s]+))\s*", value
    )
    if not match:
        raise ValueError(f"not an e-mail address: {value!r}")
    addr = match.group("addr") or match.group("bare")
    try:
        validate_email(addr, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not an e-mail address: {addr!r} ({exc})") from None
    return value.strip()


HeaderText = Annotated[str, AfterValidator(_no_crlf)]
Address = Annotated[str, AfterValidator(_address)]


class SendJob(BaseModel):
    """One message to send for one partner."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)

    job_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=JOB_ID_RE.pattern)
    partner_id: str = Field(pattern=PARTNER_ID_RE.pattern)
    from_: Address = Field(alias="from")
    to: list[Address] = Field(min_length=1, max_length=50)
    cc: list[Address] = Field(default_factory=list, max_length=50)
    bcc: list[Address] = Field(default_factory=list, max_length=50)
    reply_to: list[Address] = Field(default_factory=list, max_length=50)
    subject: HeaderText = Field(min_length=1, max_length=998)
    text: str | None = None
    html: str | None = None
    tags: dict[str, str] = Field(default_factory=dict, max_length=MAX_JOB_TAGS)

    @field_validator("tags")
    @classmethod
    def _ses_tag_charset(cls, tags: dict[str, str]) -> dict[str, str]:
        for name, value in tags.items():
            if name in RESERVED_TAGS:
                raise ValueError(f"tag {name!r} is reserved for sesguard")
            for part in (name, value):
                if not SES_TAG_RE.fullmatch(part):
                    raise ValueError(
                        f"tag {name!r}={value!r}: SES allows only A-Z a-z 0-9 _ - . @ (1-256)"
                    )
        return tags

    @model_validator(mode="after")
    def _body_and_recipients(self) -> SendJob:
        if not (self.text or self.html):
            raise ValueError("text or html is required")
        if len(self.to) + len(self.cc) + len(self.bcc) > 50:
            raise ValueError("at most 50 recipients (to + cc + bcc) per message, as SES allows")
        return self

    @property
    def recipients(self) -> list[str]:
        return [*self.to, *self.cc, *self.bcc]

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(by_alias=True, exclude_defaults=False, mode="json"))


class JobError(ValueError):
    """A job that can never be sent; `field` names what is wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def describe_validation_error(exc: ValidationError) -> JobError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or None
    msg = err["msg"].removeprefix("Value error, ")
    return JobError(f"{loc}: {msg}" if loc else msg, loc)


def parse_job(raw: bytes | str | dict[str, Any]) -> SendJob:
    """Bytes, text or a dict -> SendJob, or JobError with one clear reason."""
    if isinstance(raw, dict):
        data: Any = raw
    else:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise JobError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise JobError("a send job must be a JSON object")
    try:
        job = SendJob.model_validate(data)
    except ValidationError as exc:
        raise describe_validation_error(exc) from None
    size = len(job.to_json())
    if size > MAX_SQS_MESSAGE_BYTES:
        raise JobError(f"job is {size} bytes; SQS allows {MAX_SQS_MESSAGE_BYTES}", "size")
    return job


def job_schema() -> dict[str, Any]:
    return SendJob.model_json_schema(by_alias=True)
