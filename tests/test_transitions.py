"""The pause transition's side effects: the notice and the SES tenant mirror."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sesguard.partners import Limits, PausedBy, Profile, Status
from sesguard.store import PartnerStore
from sesguard.transitions import pause_partner
from tests.conftest import sent_emails

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
