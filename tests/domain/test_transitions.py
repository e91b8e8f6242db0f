"""The pause transition's side effects: the notice and the SES tenant mirror."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from structlog.testing import capture_logs

from sesguard.aws import table as t
from sesguard.aws.store import PartnerStore
from sesguard.core.partners import MAX_REASON_CHARS, Limits, PausedBy, Profile, Status
from tests.conftest import sent_emails
from tests.domain.support import pause_partner

TENANT_ARN = "arn:aws:ses:us-east-1:123456789012:tenant/acme-t/abc"


async def _partner(store: PartnerStore, clients: Any) -> None:
    await clients.sesv2.create_email_identity(EmailIdentity="isv.example.com")
    await store.create(Profile("acme", "ops@acme.example.com", Limits(), tenant_name="acme-t"))


async def test_pause_mirrors_to_the_ses_tenant(store: PartnerStore, clients, moto_endpoint) -> None:
    """moto has no tenant APIs: stand in for SES's two answers and record the requests."""
    await _partner(store, clients)
    calls: list[tuple[str, dict[str, Any]]] = []
    ok = SimpleNamespace(status_code=200, headers={})

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        calls.append((model.name, dict(params)))

    def fake_ses(model: Any, **_: Any) -> Any:
        if model.name == "GetTenant":
            return ok, {"Tenant": {"TenantName": "acme-t", "TenantArn": TENANT_ARN}}
        return ok, {}

    events = clients.sesv2.meta.events
    for op in ("GetTenant", "UpdateReputationEntityCustomerManagedStatus"):
        events.register(f"provide-client-params.sesv2.{op}", record, unique_id=f"r-{op}")
        events.register(f"before-call.sesv2.{op}", fake_ses, unique_id=f"t-{op}")
    try:
        outcome = await pause_partner(
            store,
            clients.sesv2,
            "acme",
            "too many bounces",
            PausedBy.POLICY,
            "guard@isv.example.com",
            mirror_tenant=True,
        )
    finally:
        for op in ("GetTenant", "UpdateReputationEntityCustomerManagedStatus"):
            events.unregister(f"provide-client-params.sesv2.{op}", unique_id=f"r-{op}")
            events.unregister(f"before-call.sesv2.{op}", unique_id=f"t-{op}")
    assert outcome.won
    assert [name for name, _ in calls] == [
        "GetTenant",
        "UpdateReputationEntityCustomerManagedStatus",
    ]
    status_body = calls[1][1]
    assert (
        b"DISABLED" in status_body
        if isinstance(status_body, bytes)
        else ("DISABLED" in str(status_body))
    )
    assert TENANT_ARN in str(status_body)


async def test_pause_stands_when_the_endpoint_has_no_tenants(
    store: PartnerStore, clients, moto_endpoint
) -> None:
    await _partner(store, clients)
    outcome = await pause_partner(
        store,
        clients.sesv2,
        "acme",
        "too many bounces",
        PausedBy.POLICY,
        "guard@isv.example.com",
        mirror_tenant=True,
    )
    assert outcome.won and outcome.notice_id
    assert (await store.require_profile("acme")).status is Status.PAUSED
    assert [m["subject"] for m in sent_emails(moto_endpoint)] == ["Sending paused for acme"]


async def test_no_notice_without_notify_from(store: PartnerStore, clients, moto_endpoint) -> None:
    await _partner(store, clients)
    outcome = await pause_partner(store, clients.sesv2, "acme", "operator", PausedBy.OPERATOR, None)
    assert outcome.won and outcome.notice_id is None
    assert sent_emails(moto_endpoint) == []


async def test_long_reason_is_cut_once_and_the_notice_says_what_is_stored(
    store: PartnerStore, clients, moto_endpoint
) -> None:
    """A 5 KB reason (the Python API does not refuse it, the CLI does): one limit, one cut."""
    await _partner(store, clients)
    outcome = await pause_partner(
        store, clients.sesv2, "acme", "r" * 5000, PausedBy.OPERATOR, "guard@isv.example.com"
    )
    assert outcome.won and outcome.notice_id
    stored = (await store.require_profile("acme")).paused_reason
    assert stored == "r" * (MAX_REASON_CHARS - 1) + "\u2026"
    (notice,) = sent_emails(moto_endpoint)
    assert f"<p>Reason: {stored}</p>" in str(notice["body"])
    assert "r" * MAX_REASON_CHARS not in str(notice["body"])


BAD_CONTACT = "ops@acme.example.com\r\nBcc: victim@evil.example.net"


async def write_bad_contact(store: PartnerStore, clients: Any) -> None:
    """As someone with table access (or an older version) could: no check ever saw it."""
    await clients.dynamodb.update_item(
        TableName=store.table,
        Key=t.key(t.partner_pk("acme"), t.PROFILE),
        UpdateExpression="SET contact_email = :c",
        ExpressionAttributeValues={":c": {"S": BAD_CONTACT}},
    )


async def test_invalid_contact_in_the_table_gets_no_notice_and_the_pause_stands(
    store: PartnerStore, clients, moto_endpoint
) -> None:
    await _partner(store, clients)
    await write_bad_contact(store, clients)
    with capture_logs() as logs:
        outcome = await pause_partner(
            store,
            clients.sesv2,
            "acme",
            "too many bounces",
            PausedBy.POLICY,
            "guard@isv.example.com",
        )
    assert outcome.won and outcome.notice_id is None
    assert (await store.require_profile("acme")).status is Status.PAUSED
    assert sent_emails(moto_endpoint) == []  # no SendEmail reached SES at all
    (failed,) = [e for e in logs if e["event"] == "notice_failed"]
    assert failed["log_level"] == "error" and failed["partner_id"] == "acme"
    assert failed["reason"] == "invalid contact" and "U+000D" in failed["error"]
    for value in failed.values():  # never the address's raw bytes
        assert not any(c in str(value) for c in "\r\n") and "victim" not in str(value)
