"""The send job: what an ISV application puts on the send queue (JSON), validated here once.

The enqueue CLI, the Python API and the sender all validate with `SendJob`, and a refusal
names the field. What is refused, and why: docs/operating.md, "Send jobs"; the job tag:
docs/design.md, "The job tag".
"""

from __future__ import annotations

import json
import re
import uuid
from email.headerregistry import AddressHeader, HeaderRegistry
from email.utils import getaddresses
from typing import Annotated, Any, cast

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

from sesguard.core.partners import PARTNER_ID_RE, InvalidPartnerId, check_partner_id
from sesguard.errors import Refused

MAX_SQS_MESSAGE_BYTES = 256 * 1024
# SES message tags: names and values of ASCII letters, digits, _ - . @ ; at most 256 chars.
SES_TAG_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,256}$")
PARTNER_TAG = "partner_id"  # the partner of every send: how the worker attributes events
JOB_TAG = "sesguard_job"  # the job id of every send: SES's own record that it was sent
RESERVED_TAGS = frozenset({PARTNER_TAG, JOB_TAG})
MAX_JOB_TAGS = 40  # SES allows 50 tags; sesguard keeps room for its own
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
# C0 controls but TAB, DEL, C1 controls, LINE and PARAGRAPH SEPARATOR.
_HEADER_FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_ADDRESS_RE = re.compile(r"\s*(?:(?P<name>[^<>]*?)\s*<(?P<addr>[^<>]+)>|(?P<bare>[^<>\s]+))\s*")
_HEADERS = HeaderRegistry()


def _header_text(value: str) -> str:
    found = _HEADER_FORBIDDEN.search(value)
    if found is not None:
        char = found.group()
        if char in "\r\n":
            raise ValueError("must not contain CR or LF")
        raise ValueError(f"must not contain control character U+{ord(char):04X}")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000)")
    return value


def _address(value: str) -> str:
    """Exactly one e-mail address, optionally with a display name: `Name <a@b.example>`,
    read as that one mailbox by our grammar and by both of Python's mail parsers."""
    _header_text(value)
    header = _HEADERS("to", value)
    parsed = [a.addr_spec for a in cast(AddressHeader, header).addresses]
    loose = [addr for _, addr in getaddresses([value])]
    if max(len(parsed), len(loose)) > 1:
        raise ValueError(
            f"{value!r} reads as {max(len(parsed), len(loose))} addresses: give one per"
            " entry (quote a display name that contains a comma or @)"
        )
    match = _ADDRESS_RE.fullmatch(value)
    if not match:
        raise ValueError(f"not an e-mail address: {value!r}")
    addr = match.group("addr") or match.group("bare")
    try:
        validate_email(addr, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not an e-mail address: {addr!r} ({exc})") from None
    groups = cast(AddressHeader, header).groups
    if header.defects or any(g.display_name is not None for g in groups):
        raise ValueError(f"{value!r} is not one mailbox (unbalanced quotes, group or garbage)")
    if parsed != [addr] or loose != [addr]:
        raise ValueError(f"{value!r} is not read as {addr!r} by a mail parser")
    return value.strip()


def _partner_id(value: str) -> str:
    try:
        return check_partner_id(value)
    except InvalidPartnerId as exc:
        raise ValueError(str(exc)) from None


# Job id <-> SES tag value. SES's API reference allows only A-Z a-z 0-9 _ - in message
# tag values (at most 256); job ids also allow "." and ":" (at most 128). "_" escapes:
# "_" -> "__", "." -> "_d", ":" -> "_c". Every job id maps to exactly one value of at most
# 256 characters in SES's strictest charset, and every value maps back to one job id.
_TAG_ESCAPES = {"_": "__", ".": "_d", ":": "_c"}
_TAG_UNESCAPES = {"_": "_", "d": ".", "c": ":"}
_TAG_VALUE_RE = re.compile(r"^(?:[A-Za-z0-9-]|_[_dc]){1,128}$")


def job_tag_value(job_id: str) -> str:
    """The `sesguard_job` tag value of a (valid) job id."""
    if not JOB_ID_RE.fullmatch(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return "".join(_TAG_ESCAPES.get(c, c) for c in job_id)


def job_id_from_tag(value: object) -> str | None:
    """The job id a `sesguard_job` tag value stands for; None for anything that is not
    one (sesguard never wrote it: nothing may be concluded from it)."""
    # What _TAG_VALUE_RE accepts, without it (the worker reads a tag per Send event and
    # the regex's alternation costs a step per character): only its characters...
    if type(value) is not str or not value.isascii():
        return None
    rest = value.replace("_", "").replace("-", "")
    if rest and not rest.isalnum():
        return None
    # ...and "_" only in "__", "_d", "_c". Read left to right, the first "__" is always an
    # escape (every "_" before it starts "_d" or "_c"): so split at each "__".
    if "__" in value:
        parts = [part.replace("_d", ".").replace("_c", ":") for part in value.split("__")]
        if any("_" in part for part in parts):
            return None
        job_id = "_".join(parts)
    else:
        job_id = value.replace("_d", ".").replace("_c", ":")
        if "_" in job_id:
            return None
    return job_id if 0 < len(job_id) <= 128 else None  # one character per escape


def ids_for_log(body: str) -> dict[str, str]:
    """partner_id / job_id of a body that failed validation, if they look sane."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(data, dict):
        return {}
    out = {}
    for name, pattern in (("partner_id", PARTNER_ID_RE), ("job_id", JOB_ID_RE)):
        value = data.get(name)
        if isinstance(value, str) and pattern.fullmatch(value):
            out[name] = value
    return out


HeaderText = Annotated[str, AfterValidator(_header_text)]
Address = Annotated[str, AfterValidator(_address)]
Body = Annotated[str, AfterValidator(_no_nul)]


class SendJob(BaseModel):
    """One message to send for one partner."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)

    job_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=JOB_ID_RE.pattern)
    partner_id: Annotated[str, AfterValidator(_partner_id)] = Field(pattern=PARTNER_ID_RE.pattern)
    from_: Address = Field(alias="from")
    to: list[Address] = Field(min_length=1, max_length=50)
    cc: list[Address] = Field(default_factory=list, max_length=50)
    bcc: list[Address] = Field(default_factory=list, max_length=50)
    reply_to: list[Address] = Field(default_factory=list, max_length=50)
    subject: HeaderText = Field(min_length=1, max_length=998)
    text: Body | None = None
    html: Body | None = None
    tags: dict[str, str] = Field(default_factory=dict, max_length=MAX_JOB_TAGS)

    @field_validator("to", "cc", "bcc", "reply_to", "tags", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null (leave the field out for none)")
        return value

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


class JobError(Refused):
    """A job that can never be sent; `field` names what is wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def describe_validation_error(exc: ValidationError) -> JobError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or None
    msg = err["msg"].removeprefix("Value error, ")
    return JobError(f"{loc}: {msg}" if loc else msg, loc)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise JobError(f"{key}: duplicate key (another reader may take the other value)", key)
        seen.add(key)
    return dict(pairs)


def _refuse_duplicate_keys(raw: bytes | str) -> None:
    """JobError naming the first key an object repeats. orjson (like json.loads) keeps the
    last value, another reader of the same message may take the first: a job must mean
    one thing to all. The JSON Schema cannot say this, so the parser does (a second,
    stdlib parse: jobs are small, and orjson has already judged it valid JSON)."""
    json.loads(raw, object_pairs_hook=_no_duplicates)


def parse_job(raw: bytes | str | dict[str, Any]) -> SendJob:
    """Bytes, text or a dict -> SendJob, or JobError with one clear reason."""
    if isinstance(raw, dict):
        data: Any = raw
    else:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise JobError(f"not JSON: {exc}") from None
        _refuse_duplicate_keys(raw)
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
