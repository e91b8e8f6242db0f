"""What the sender asks SES, and what SES's answers mean for the job (pure functions).

`classify_failure` sorts an error into THROTTLED, REJECTED, ACCOUNT, TRANSIENT or
AMBIGUOUS; what each means for the claim: docs/design.md, "A job id is sent at most once"
(step 5) and "The SDK never retries SendEmail" (`never_connected`).
"""

from __future__ import annotations

import asyncio
import socket
from enum import StrEnum
from typing import Any

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ParamValidationError,
)

from sesguard.aws.errors import THROTTLE_CODES, error_code
from sesguard.core.jobs import JOB_TAG, PARTNER_TAG, SendJob, job_tag_value
from sesguard.core.partners import Profile
from sesguard.settings import Settings


class Failure(StrEnum):
    THROTTLED = "throttled"
    REJECTED = "rejected"
    ACCOUNT = "account"
    TRANSIENT = "transient"
    AMBIGUOUS = "ambiguous"


REJECT_CODES = frozenset(
    {
        "MessageRejected",
        "BadRequestException",
        "InvalidParameterValue",
        "InvalidParameterValueException",
        "MailFromDomainNotVerifiedException",
        "MailFromDomainNotVerified",
    }
)
ACCOUNT_CODES = frozenset({"AccountSuspendedException", "SendingPausedException"})


def classify_failure(exc: BaseException) -> Failure:
    """Map an exception from SendEmail to what happens to the job."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in THROTTLE_CODES:
            return Failure.THROTTLED
        if code in ACCOUNT_CODES:
            return Failure.ACCOUNT
        if code in REJECT_CODES:
            return Failure.REJECTED
        # 5xx, AccessDenied, NotFound (configuration set, tenant): not the job's fault
        return Failure.TRANSIENT
    if isinstance(exc, ParamValidationError):
        return Failure.REJECTED  # this job's parameters can never be sent
    if isinstance(exc, ConnectTimeoutError):
        return Failure.TRANSIENT  # never connected: SES has not seen the request
    if isinstance(exc, EndpointConnectionError):
        return Failure.TRANSIENT if never_connected(exc) else Failure.AMBIGUOUS
    if isinstance(exc, BotoCoreError | aiohttp.ClientError | asyncio.TimeoutError | OSError):
        return Failure.AMBIGUOUS
    return Failure.AMBIGUOUS  # unknown: assume it may have been sent (at most once)


def never_connected(exc: EndpointConnectionError) -> bool:
    """True when no connection was made (refused, unreachable, DNS): botocore's meaning of
    the error, and aiobotocore's when it wraps aiohttp's ClientConnectorError. False when
    an open connection broke (it wraps another ClientConnectionError or OSError)."""
    wrapped = exc.kwargs.get("error")
    if wrapped is None:
        return True
    return isinstance(wrapped, aiohttp.ClientConnectorError | socket.gaierror)


def email_tags(job: SendJob) -> list[dict[str, str]]:
    """partner_id first (the worker attributes every event by it), then the job id in
    SES's tag charset (SES's Send event then names the job: sender.records), then the
    job's own tags."""
    tags = [
        {"Name": PARTNER_TAG, "Value": job.partner_id},
        {"Name": JOB_TAG, "Value": job_tag_value(job.job_id)},
    ]
    tags += [{"Name": k, "Value": v} for k, v in sorted(job.tags.items())]
    return tags


def send_params(job: SendJob, settings: Settings, profile: Profile | None) -> dict[str, Any]:
    """SESv2 SendEmail parameters for one job (Simple content)."""
    destination: dict[str, list[str]] = {"ToAddresses": list(job.to)}
    if job.cc:
        destination["CcAddresses"] = list(job.cc)
    if job.bcc:
        destination["BccAddresses"] = list(job.bcc)
    body: dict[str, dict[str, str]] = {}
    if job.text:
        body["Text"] = {"Data": job.text, "Charset": "UTF-8"}
    if job.html:
        body["Html"] = {"Data": job.html, "Charset": "UTF-8"}
    params: dict[str, Any] = {
        "FromEmailAddress": job.from_,
        "Destination": destination,
        "Content": {"Simple": {"Subject": {"Data": job.subject, "Charset": "UTF-8"}, "Body": body}},
        "EmailTags": email_tags(job),
        "ConfigurationSetName": settings.configuration_set,
    }
    if job.reply_to:
        params["ReplyToAddresses"] = list(job.reply_to)
    if settings.use_tenants and profile is not None and profile.tenant_name:
        params["TenantName"] = profile.tenant_name
    return params
