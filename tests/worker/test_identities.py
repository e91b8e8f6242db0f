"""The worker's verified-identity cache against SESv2 on a real moto server."""

from __future__ import annotations

from typing import Any

from sesguard.aws.identities import list_verified_identities
from sesguard.core.identities import Identities, identity_set, is_verified
from tests.conftest import json_logs
from worker.identities import IdentityCache


def test_matching_is_an_address_or_its_exact_domain_in_any_case() -> None:
    ids = identity_set(["Example.com", "ops@partner.example.net", ""])
    assert ids == {"example.com", "ops@partner.example.net"}
    assert is_verified("a@EXAMPLE.com", ids)
    assert is_verified("OPS@partner.example.net", ids)
    assert not is_verified("other@partner.example.net", ids)
    assert not is_verified("a@sub.example.com", ids)
    assert not is_verified(None, ids)
    assert not is_verified("a@example.com", frozenset())


async def test_lists_the_accounts_verified_identities(clients: Any) -> None:
    for name in ["isv.example.com", "ops@partner.example.net"]:
        await clients.sesv2.create_email_identity(EmailIdentity=name)
    assert await list_verified_identities(clients.sesv2) == {
        "isv.example.com",
        "ops@partner.example.net",
    }


async def test_the_cache_refreshes_and_keeps_the_last_set_when_listing_fails(
    clients: Any,
) -> None:
    now = [0.0]
    fail = [False]

    async def lister() -> Identities:
        if fail[0]:
            raise RuntimeError("SES is down")
        return await list_verified_identities(clients.sesv2)

    cache = IdentityCache(lister, refresh_seconds=60, clock=lambda: now[0])
    await clients.sesv2.create_email_identity(EmailIdentity="isv.example.com")
    assert await cache.current() == {"isv.example.com"}
    await clients.sesv2.create_email_identity(EmailIdentity="late.example.com")
    assert await cache.current() == {"isv.example.com"}  # cached until the refresh
    now[0] = 61
    assert await cache.current() == {"isv.example.com", "late.example.com"}
    fail[0] = True
    with json_logs() as lines:
        for t in (122, 183, 244):
            now[0] = t
            assert await cache.current() == {"isv.example.com", "late.example.com"}
    warnings = [e for e in lines if e["event"] == "verified_identities_unavailable"]
    assert len(warnings) == 1  # logged once while it keeps failing
    assert warnings[0]["level"] == "warning" and warnings[0]["kept"] == 2
    fail[0] = False
    await clients.sesv2.delete_email_identity(EmailIdentity="late.example.com")
    now[0] = 305
    with json_logs() as lines:
        assert await cache.current() == {"isv.example.com"}
    assert [e["recovered"] for e in lines if e["event"] == "verified_identities"] == [True]
