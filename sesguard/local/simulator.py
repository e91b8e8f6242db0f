"""Local SES event simulator: the records SES would publish for a message it accepted.

`simulate_events` (pure: the output depends only on the arguments) builds the
event-publishing records per the SES mailbox simulator; `publish` puts them on the Firehose
stream; `EventPublisher.after_send` is the sender's after-send hook. The addresses and what
each yields: docs/local.md, "Simulated SES events".
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import orjson

from sesguard.aws import clients as aws
from sesguard.aws.batching import batches
from sesguard.core.backoff import backoff_delay
from sesguard.core.mailbox import SIMULATOR_DOMAIN
from sesguard.errors import Failed, Refused
from sesguard.logging import get_logger
from sesguard.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_firehose import FirehoseClient

log = get_logger(__name__)


# Firehose PutRecordBatch limits (before base64): 500 records, 1,000 KiB per record,
# 4 MiB per call.
MAX_BATCH_RECORDS = 500
MAX_RECORD_BYTES = 1000 * 1024
MAX_BATCH_BYTES = 4 * 1024 * 1024

# What the sample records show; documentation addresses (RFC 5737), never real hosts.
DEFAULT_CALLER_IDENTITY = "sesguard-sender"
DEFAULT_SOURCE_IP = "127.0.0.1"
_REPORTING_MTA = "a8-70.smtp-out.amazonses.com"
_REMOTE_MTA_IP = "198.51.100.7"

# Offsets from the send time, so the records of one message read like a real timeline.
_SUPPRESSED_AFTER = timedelta(milliseconds=400)  # SES never attempts it: no remote wait
_DELIVERED_AFTER = timedelta(milliseconds=1200)
_BOUNCED_AFTER = timedelta(milliseconds=1500)
_OOTO_AFTER = timedelta(milliseconds=1800)
_COMPLAINT_ARRIVES_AFTER = timedelta(milliseconds=2000)
_COMPLAINED_AFTER = timedelta(milliseconds=3000)


class SimulationError(Refused):
    """The SendEmail parameters cannot describe a message SES would have accepted."""


class PublishError(Failed):
    """Firehose kept refusing some records after every retry."""

    def __init__(self, message: str, failed: int) -> None:
        super().__init__(message)
        self.failed = failed


class SimulatedOutcome(StrEnum):
    """What SES's mailbox simulator does with a recipient (the local part of its address)."""

    DELIVERY = "success"
    BOUNCE = "bounce"
    OOTO = "ooto"
    COMPLAINT = "complaint"
    SUPPRESSED = "suppressionlist"


def bare_address(value: str) -> str:
    """`Name <a@b.example>` -> `a@b.example`; SES lists bare addresses in event records."""
    if not isinstance(value, str) or "\r" in value or "\n" in value:
        raise SimulationError(f"not an e-mail address: {value!r}")
    _, addr = parseaddr(value)
    if "@" not in addr or addr.startswith("@") or addr.endswith("@"):
        raise SimulationError(f"not an e-mail address: {value!r}")
    return addr


def outcome_for(address: str) -> SimulatedOutcome:
    """The mailbox simulator's verdict for one recipient (`bounce+x@...` counts as bounce@)."""
    local, _, domain = bare_address(address).rpartition("@")
    if domain.lower() != SIMULATOR_DOMAIN:
        return SimulatedOutcome.DELIVERY
    mailbox = local.split("+", 1)[0].lower()
    try:
        return SimulatedOutcome(mailbox)
    except ValueError:
        return SimulatedOutcome.DELIVERY


def _ts(moment: datetime) -> str:
    """SES's timestamp format: ISO 8601, UTC, milliseconds, `Z`."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _feedback_id(message_id: str, kind: str) -> str:
    token = uuid.uuid5(uuid.NAMESPACE_URL, f"ses-feedback:{message_id}:{kind}")
    return f"0100{token.hex[:12]}-{token}-000000"


def _str_list(params: Mapping[str, Any], key: str) -> list[str]:
    value = params.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SimulationError(f"{key} must be a list of addresses")
    return list(value)


def _subject(params: Mapping[str, Any]) -> str | None:
    content = params.get("Content") or {}
    simple = content.get("Simple") if isinstance(content, Mapping) else None
    if not isinstance(simple, Mapping):
        return None  # Raw or Template content: SES knows the subject, we do not
    subject = simple.get("Subject")
    data = subject.get("Data") if isinstance(subject, Mapping) else None
    if data is not None and not isinstance(data, str):
        raise SimulationError("Content.Simple.Subject.Data must be a string")
    return data


def _tags(
    params: Mapping[str, Any], from_domain: str, caller_identity: str, source_ip: str
) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = {
        "ses:operation": ["SendEmail"],
        "ses:configuration-set": [str(params["ConfigurationSetName"])],
        "ses:source-ip": [source_ip],
        "ses:from-domain": [from_domain],
        "ses:caller-identity": [caller_identity],
    }
    email_tags = params.get("EmailTags", [])
    if not isinstance(email_tags, list):
        raise SimulationError("EmailTags must be a list of {Name, Value}")
    for tag in email_tags:
        if not (
            isinstance(tag, Mapping)
            and isinstance(tag.get("Name"), str)
            and isinstance(tag.get("Value"), str)
        ):
            raise SimulationError(f"EmailTags entry {tag!r} needs string Name and Value")
        tags.setdefault(tag["Name"], []).append(tag["Value"])
    return tags


def _mail(
    params: Mapping[str, Any],
    message_id: str,
    now: datetime,
    account_id: str,
    region_name: str,
    caller_identity: str,
    source_ip: str,
) -> dict[str, Any]:
    source = params.get("FromEmailAddress")
    if not isinstance(source, str) or not source:
        raise SimulationError("FromEmailAddress is required")
    from_domain = bare_address(source).rpartition("@")[2].lower()
    destination = params.get("Destination")
    if not isinstance(destination, Mapping):
        raise SimulationError("Destination is required")
    to = _str_list(destination, "ToAddresses")
    cc = _str_list(destination, "CcAddresses")
    bcc = _str_list(destination, "BccAddresses")
    reply_to = _str_list(params, "ReplyToAddresses")
    recipients = [bare_address(a) for a in (*to, *cc, *bcc)]
    if not recipients:
        raise SimulationError("Destination has no recipients")
    for addr in reply_to:
        bare_address(addr)
    subject = _subject(params)

    headers = [{"name": "From", "value": source}]
    common: dict[str, Any] = {"from": [source]}
    if reply_to:
        headers.append({"name": "Reply-To", "value": ", ".join(reply_to)})
        common["replyTo"] = reply_to
    if to:
        headers.append({"name": "To", "value": ", ".join(to)})
        common["to"] = to
    if cc:
        headers.append({"name": "Cc", "value": ", ".join(cc)})
        common["cc"] = cc
    common["messageId"] = message_id
    if subject is not None:
        headers.append({"name": "Subject", "value": subject})
        common["subject"] = subject
    headers.append({"name": "MIME-Version", "value": "1.0"})

    return {
        "timestamp": _ts(now),
        "source": source,
        "sourceArn": f"arn:aws:ses:{region_name}:{account_id}:identity/{from_domain}",
        "sendingAccountId": account_id,
        "messageId": message_id,
        "destination": recipients,
        "headersTruncated": False,
        "headers": headers,
        "commonHeaders": common,
        "tags": _tags(params, from_domain, caller_identity, source_ip),
    }


def _bounce(
    mail: dict[str, Any],
    recipients: list[str],
    *,
    kind: str,
    bounce_type: str,
    subtype: str,
    at: datetime,
    status: str,
    diagnostic: str,
    reporting_mta: str,
) -> dict[str, Any]:
    return {
        "eventType": "Bounce",
        "mail": mail,
        "bounce": {
            "feedbackId": _feedback_id(mail["messageId"], kind),
            "bounceType": bounce_type,
            "bounceSubType": subtype,
            "bouncedRecipients": [
                {
                    "emailAddress": r,
                    "action": "failed",
                    "status": status,
                    "diagnosticCode": diagnostic,
                }
                for r in recipients
            ],
            "timestamp": _ts(at),
            "reportingMTA": reporting_mta,
        },
    }


def simulate_events(
    send_params: Mapping[str, Any],
    message_id: str,
    now: datetime,
    account_id: str,
    region: str,
    *,
    caller_identity: str = DEFAULT_CALLER_IDENTITY,
    source_ip: str = DEFAULT_SOURCE_IP,
) -> list[dict[str, Any]]:
    """The SES event-publishing records for one accepted SESv2 SendEmail call.

    `send_params` are the SendEmail request parameters, `message_id` is the MessageId
    SES (or its stand-in) answered, `now` the send time (naive means UTC). The records
    share one `mail` object, as they describe one message: treat them as read-only.
    Raises SimulationError for parameters SES would have refused.
    """
    if not isinstance(send_params, Mapping):
        raise SimulationError("SendEmail parameters must be a mapping")
    if not isinstance(message_id, str) or not message_id:
        raise SimulationError("message_id is required")
    if not send_params.get("ConfigurationSetName"):
        return []  # SES publishes events only through a configuration set
    mail = _mail(send_params, message_id, now, account_id, region, caller_identity, source_ip)

    by_outcome: dict[SimulatedOutcome, list[str]] = {o: [] for o in SimulatedOutcome}
    for addr in mail["destination"]:
        by_outcome[outcome_for(addr)].append(addr)
    delivered = [
        a
        for a in mail["destination"]
        if outcome_for(a) in (SimulatedOutcome.DELIVERY, SimulatedOutcome.COMPLAINT)
    ]

    records: list[dict[str, Any]] = [{"eventType": "Send", "mail": mail, "send": {}}]
    if by_outcome[SimulatedOutcome.SUPPRESSED]:
        records.append(
            _bounce(
                mail,
                by_outcome[SimulatedOutcome.SUPPRESSED],
                kind="suppressed",
                bounce_type="Permanent",
                subtype="Suppressed",
                at=now + _SUPPRESSED_AFTER,
                status="5.1.1",
                diagnostic="Amazon SES did not send the message: this address is on the"
                " global suppression list after recent hard bounces.",
                reporting_mta="dns; amazonses.com",
            )
        )
    if delivered:
        at = now + _DELIVERED_AFTER
        records.append(
            {
                "eventType": "Delivery",
                "mail": mail,
                "delivery": {
                    "timestamp": _ts(at),
                    "processingTimeMillis": int(_DELIVERED_AFTER.total_seconds() * 1000),
                    "recipients": delivered,
                    "smtpResponse": "250 2.6.0 Message received",
                    "reportingMTA": _REPORTING_MTA,
                    "remoteMtaIp": _REMOTE_MTA_IP,
                },
            }
        )
    if by_outcome[SimulatedOutcome.BOUNCE]:
        records.append(
            _bounce(
                mail,
                by_outcome[SimulatedOutcome.BOUNCE],
                kind="bounce",
                bounce_type="Permanent",
                subtype="General",
                at=now + _BOUNCED_AFTER,
                status="5.1.1",
                diagnostic="smtp; 550 5.1.1 user unknown",
                reporting_mta=f"dsn; {_REPORTING_MTA}",
            )
        )
    if by_outcome[SimulatedOutcome.OOTO]:
        records.append(
            _bounce(
                mail,
                by_outcome[SimulatedOutcome.OOTO],
                kind="ooto",
                bounce_type="Transient",
                subtype="General",
                at=now + _OOTO_AFTER,
                status="4.0.0",
                diagnostic="smtp; 450 4.0.0 recipient is out of the office",
                reporting_mta=f"dsn; {_REPORTING_MTA}",
            )
        )
    if by_outcome[SimulatedOutcome.COMPLAINT]:
        records.append(
            {
                "eventType": "Complaint",
                "mail": mail,
                "complaint": {
                    "feedbackId": _feedback_id(message_id, "complaint"),
                    "complaintSubType": None,
                    "complainedRecipients": [
                        {"emailAddress": a} for a in by_outcome[SimulatedOutcome.COMPLAINT]
                    ],
                    "timestamp": _ts(now + _COMPLAINED_AFTER),
                    "userAgent": "Amazon SES Mailbox Simulator",
                    "complaintFeedbackType": "abuse",
                    "arrivalDate": _ts(now + _COMPLAINT_ARRIVES_AFTER),
                },
            }
        )
    return records


# ---- writing to Firehose ----------------------------------------------------------------


def encode_records(records: Iterable[Mapping[str, Any]]) -> list[bytes]:
    """One JSON object per record, newline-terminated, as SES writes them."""
    blobs = []
    for record in records:
        blob = orjson.dumps(record) + b"\n"
        if len(blob) > MAX_RECORD_BYTES:
            raise PublishError(
                f"record of {len(blob)} bytes; Firehose allows {MAX_RECORD_BYTES}", 1
            )
        blobs.append(blob)
    return blobs


def record_batches(blobs: Sequence[bytes]) -> Iterator[list[bytes]]:
    """Group records under PutRecordBatch's 500-record and 4 MiB limits."""
    return batches(blobs, len, MAX_BATCH_RECORDS, MAX_BATCH_BYTES)


async def publish(
    firehose: FirehoseClient,
    stream: str,
    records: Iterable[Mapping[str, Any]],
    *,
    max_attempts: int = 5,
    base_delay: float = 0.1,
) -> int:
    """Put records on the delivery stream; returns how many were accepted.

    Firehose can accept a batch partly (FailedPutCount > 0): only the refused records
    are sent again, with exponential backoff. PublishError if some are still refused
    after `max_attempts` calls.
    """
    accepted = 0
    for batch in record_batches(encode_records(records)):
        pending = batch
        for attempt in range(max_attempts):
            resp = await firehose.put_record_batch(
                DeliveryStreamName=stream, Records=[{"Data": blob} for blob in pending]
            )
            if not resp.get("FailedPutCount"):
                accepted += len(pending)
                break
            answers = resp.get("RequestResponses", [])
            refused = [b for b, r in zip(pending, answers, strict=True) if r.get("ErrorCode")]
            accepted += len(pending) - len(refused)
            codes = sorted({str(r.get("ErrorCode")) for r in answers if r.get("ErrorCode")})
            log.warning(
                "firehose_records_refused",
                stream=stream,
                refused=len(refused),
                codes=codes,
                attempt=attempt + 1,
            )
            pending = refused
            if attempt + 1 < max_attempts:
                await asyncio.sleep(backoff_delay(attempt, base=base_delay))
        else:
            raise PublishError(
                f"{len(pending)} records refused by firehose {stream} after {max_attempts} calls",
                len(pending),
            )
    return accepted


class EventPublisher:
    """What the sender holds when SESGUARD_SIMULATE_EVENTS is on.

    After each successful SendEmail: `await publisher.after_send(params, message_id)`.
    It raises SimulationError, PublishError or botocore's ClientError; the mail is sent
    by then, so the caller should log and carry on rather than retry the send.
    """

    def __init__(
        self,
        firehose: FirehoseClient,
        stream: str,
        account_id: str,
        region_name: str,
        *,
        caller_identity: str = DEFAULT_CALLER_IDENTITY,
        source_ip: str = DEFAULT_SOURCE_IP,
    ) -> None:
        self.firehose = firehose
        self.stream = stream
        self.account_id = account_id
        self.region = region_name
        self.caller_identity = caller_identity
        self.source_ip = source_ip
        self.records_published = 0

    @classmethod
    async def create(cls, clients: aws.Clients, settings: Settings) -> EventPublisher:
        return cls(
            clients.firehose, settings.firehose_stream, await clients.account_id(), aws.region()
        )

    def records_for(
        self, send_params: Mapping[str, Any], message_id: str, now: datetime | None = None
    ) -> list[dict[str, Any]]:
        return simulate_events(
            send_params,
            message_id,
            now or datetime.now(UTC),
            self.account_id,
            self.region,
            caller_identity=self.caller_identity,
            source_ip=self.source_ip,
        )

    async def after_send(
        self, send_params: Mapping[str, Any], message_id: str, now: datetime | None = None
    ) -> int:
        records = self.records_for(send_params, message_id, now)
        if not records:
            return 0
        published = await publish(self.firehose, self.stream, records)
        self.records_published += published
        return published


GATHER_SECONDS = 0.2


class Gathering:
    """Gathers the records of the sends made within `linger` seconds into one PutRecordBatch,
    as Firehose gathers records into one object. The stand-in's Firehose writes an object
    per call: at a sustained 20 sends/s, one per mail costs the local stack's one moto
    process an S3 PUT, a notification and a counting transaction per mail, and the worker
    falls behind (bench/overshoot.py uses this; the demo, compose and the fault scenarios
    keep one object per send, which their kill points are timed against)."""

    def __init__(self, publisher: EventPublisher, linger: float = GATHER_SECONDS) -> None:
        self.publisher = publisher
        self.linger = linger
        self._waiting: list[tuple[list[dict[str, Any]], asyncio.Future[int]]] = []
        self._flush: asyncio.Task[None] | None = None

    async def __call__(self, send_params: Mapping[str, Any], message_id: str) -> int:
        records = self.publisher.records_for(send_params, message_id)
        if not records:
            return 0
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        self._waiting.append((records, done))
        if self._flush is None:
            self._flush = loop.create_task(self._after_linger(), name="simulated-events")
        return await done

    async def _after_linger(self) -> None:
        await asyncio.sleep(self.linger)
        waiting, self._waiting, self._flush = self._waiting, [], None
        p = self.publisher
        try:
            published = await publish(
                p.firehose, p.stream, [r for records, _ in waiting for r in records]
            )
        except Exception as exc:
            for _, done in waiting:
                if not done.done():
                    done.set_exception(exc)
            return
        p.records_published += published
        for records, done in waiting:
            if not done.done():
                done.set_result(len(records))


async def simulated_events(
    clients: aws.Clients, settings: Settings
) -> Callable[[Mapping[str, Any], str], Awaitable[int]]:
    """The sender's after-send hook in local runs (the demo, SESGUARD_SIMULATE_EVENTS):
    the wiring above the services injects it (sender.handler.AfterSend)."""
    publisher = await EventPublisher.create(clients, settings)
    log.warning("simulating_ses_events", stream=settings.firehose_stream)
    return publisher.after_send


async def gathered_events(clients: aws.Clients, settings: Settings) -> Gathering:
    """`simulated_events`, one Firehose call per GATHER_SECONDS of sends (`Gathering`)."""
    publisher = await EventPublisher.create(clients, settings)
    log.warning("simulating_ses_events", stream=settings.firehose_stream, gathered=True)
    return Gathering(publisher)


def after_send_for(
    settings: Settings,
) -> (
    Callable[[aws.Clients, Settings], Awaitable[Callable[[Mapping[str, Any], str], Awaitable[int]]]]
    | None
):
    """What the sender runs after each send, by the settings: simulated SES events, or
    nothing (AWS publishes the real ones)."""
    return simulated_events if settings.simulate_events else None
