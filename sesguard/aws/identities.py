"""The identities verified in the SES account (SESv2 ListEmailIdentities)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sesguard.core.identities import Identities, identity_set

if TYPE_CHECKING:
    from types_aiobotocore_sesv2 import SESV2Client

_MAX_PAGES = 1000  # an account holds at most 10,000 identities


async def list_verified_identities(sesv2: SESV2Client) -> Identities:
    """Every email address and domain identity whose verification succeeded."""
    names: list[str] = []
    token: str | None = None
    for _ in range(_MAX_PAGES):
        # No PageSize: SES's default page; moto cannot page with one (it reads it as text).
        resp = await (
            sesv2.list_email_identities(NextToken=token) if token else sesv2.list_email_identities()
        )
        for ident in resp.get("EmailIdentities", []):
            name = ident.get("IdentityName")
            if name and ident.get("VerificationStatus") == "SUCCESS":
                names.append(name)
        token = resp.get("NextToken")
        if not token:
            break
    return identity_set(names)
