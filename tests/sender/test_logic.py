"""Pure parts of the sender: claims, SES error classes, request building, DLQ sizes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from botocore.exceptions import (
    ConnectTimeoutError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
)

from sender.intake import ids_for_log, job_from_message
from sender.records import ClaimState, judge_existing
from sender.ses import Failure, classify_failure, send_params
from sesguard.core.backoff import backoff_delay
from sesguard.core.jobs import JobError, parse_job
from sesguard.core.partners import Limits, Profile
from sesguard.settings import load_settings
from tests.conftest import client_error

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
RESET = aiohttp.ClientOSError(104, "Connection reset by peer")
REFUSED = aiohttp.ClientConnectorError(
    ConnectionKey("x", 443, True, None, None, None, None),  # type: ignore[arg-type]
    ConnectionRefusedError(111, "Connection refused"),
)
JOB = parse_job(
    {
        "job_id": "j1",
        "partner_id": "acme",
        "from": "a@isv.example.com",
        "to": ["b@example.org"],
        "subject": "s",
        "text": "t",
        "tags": {"z": "1", "a": "2"},
    }
)


def test_existing_record_decisions() -> None:
    sent = judge_existing({"state": "sent", "message_id": "m"}, NOW, 60)
    assert sent.state is ClaimState.SENT and sent.message_id == "m"
    young = judge_existing(
        {"state": "sending", "claimed_at": (NOW - timedelta(seconds=20)).isoformat()}, NOW, 60
    )
    assert young.state is ClaimState.IN_PROGRESS and young.retry_after == pytest.approx(40)
    old = judge_existing(
        {"state": "sending", "claimed_at": (NOW - timedelta(seconds=61)).isoformat()}, NOW, 60
    )
    assert old.state is ClaimState.POSSIBLY_SENT
    assert (
        judge_existing({"state": "sending", "claimed_at": "garbage"}, NOW, 60).state
        is ClaimState.POSSIBLY_SENT
    )
    assert judge_existing({"state": "sending"}, NOW, 60).state is ClaimState.POSSIBLY_SENT


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (client_error("TooManyRequestsException"), Failure.THROTTLED),
        (client_error("Throttling"), Failure.THROTTLED),
        (client_error("LimitExceededException"), Failure.THROTTLED),
        (client_error("MessageRejected"), Failure.REJECTED),
        (client_error("InvalidParameterValue"), Failure.REJECTED),
        (client_error("BadRequestException"), Failure.REJECTED),
        (client_error("MailFromDomainNotVerifiedException"), Failure.REJECTED),
        (client_error("AccountSuspendedException"), Failure.ACCOUNT),
        (client_error("SendingPausedException"), Failure.ACCOUNT),
        (client_error("InternalFailure", status=500), Failure.TRANSIENT),
        (client_error("NotFoundException", status=404), Failure.TRANSIENT),
        (EndpointConnectionError(endpoint_url="http://x"), Failure.TRANSIENT),
        (EndpointConnectionError(endpoint_url="http://x", error=REFUSED), Failure.TRANSIENT),
        # aiobotocore's name for a connection reset mid-request: SES may have the mail
        (EndpointConnectionError(endpoint_url="http://x", error=RESET), Failure.AMBIGUOUS),
        (ConnectTimeoutError(endpoint_url="http://x"), Failure.TRANSIENT),
        (ReadTimeoutError(endpoint_url="http://x"), Failure.AMBIGUOUS),
        (TimeoutError(), Failure.AMBIGUOUS),
        (RuntimeError("?"), Failure.AMBIGUOUS),
        (ParamValidationError(report="bad"), Failure.REJECTED),
    ],
)
def test_ses_error_classes(exc: Exception, kind: Failure) -> None:
    assert classify_failure(exc) is kind


def test_backoff_has_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(a, base=0.1, cap=2.0, rng=rng) for a in range(12)]
    assert all(0 <= d <= 2.0 for d in delays)
    assert len(set(delays)) == len(delays)
    assert all(backoff_delay(0, base=0.1, rng=rng) <= 0.1 for _ in range(50))


def test_send_params_tenant_only_when_enabled_and_mapped() -> None:
    profile = Profile("acme", "ops@acme.example.org", Limits(), tenant_name="acme")
    off = send_params(JOB, load_settings(), profile)
    assert "TenantName" not in off
    assert off["EmailTags"] == [
        {"Name": "partner_id", "Value": "acme"},
        {"Name": "sesguard_job", "Value": "j1"},  # the job id (sender.ses.email_tags)
        {"Name": "a", "Value": "2"},
        {"Name": "z", "Value": "1"},
    ]
    assert "ReplyToAddresses" not in off and "CcAddresses" not in off["Destination"]
    on = send_params(JOB, load_settings(use_tenants=True, configuration_set="cs2"), profile)
    assert on["TenantName"] == "acme" and on["ConfigurationSetName"] == "cs2"
    unmapped = Profile("acme", "ops@acme.example.org", Limits())
    assert "TenantName" not in send_params(JOB, load_settings(use_tenants=True), unmapped)


def test_job_id_defaults_to_the_sqs_message_id() -> None:
    body = (
        '{"partner_id":"acme","from":"a@isv.example.com","to":["b@example.org"],'
        '"subject":"s","text":"t"}'
    )
    assert job_from_message(body, "msg-123").job_id == "msg-123"
    assert job_from_message(body.replace("{", '{"job_id":"mine",', 1), "msg-123").job_id == "mine"
    with pytest.raises(JobError):
        job_from_message("nope", "m")


def test_log_ids_of_bad_bodies_are_only_taken_when_sane() -> None:
    assert ids_for_log('{"partner_id":"acme","job_id":"j-1","to":"x"}') == {
        "partner_id": "acme",
        "job_id": "j-1",
    }
    assert ids_for_log('{"partner_id":"a\\nb","job_id":5}') == {}
    assert ids_for_log("[]") == {} and ids_for_log("{") == {}
