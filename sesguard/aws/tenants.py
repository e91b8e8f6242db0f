"""SES-level enforcement: one SES tenant per partner, its pause mirrored into SES itself.

`ensure_tenant` creates and associates a tenant; `mirror_status` sets its customer-managed
sending status. See docs/deploy.md, "SES-level enforcement (optional)".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from sesguard.aws.clients import not_implemented
from sesguard.aws.errors import error_code
from sesguard.core.partners import check_partner_id
from sesguard.errors import Failed
from sesguard.logging import get_logger

if TYPE_CHECKING:
    from types_aiobotocore_sesv2 import SESV2Client

log = get_logger(__name__)

ENABLED, DISABLED = "ENABLED", "DISABLED"
PARTNER_TAG = "sesguard:partner_id"


class TenantsUnsupported(Failed):
    """The SES endpoint does not implement tenants (moto, LocalStack, an old region)."""


@dataclass(frozen=True)
class Tenant:
    name: str
    arn: str
    sending_status: str | None = None


def tenant_name(partner_id: str, name: str | None = None) -> str:
    """The partner's SES tenant: `name` if given (Profile.tenant_name), else the partner id.

    Tenant names allow what partner ids allow, so one check validates both.
    """
    check_partner_id(partner_id)
    return check_partner_id(name) if name is not None else partner_id


def identity_arn(region: str, account: str, identity: str, partition: str = "aws") -> str:
    return f"arn:{partition}:ses:{region}:{account}:identity/{identity}"


def configuration_set_arn(region: str, account: str, name: str, partition: str = "aws") -> str:
    return f"arn:{partition}:ses:{region}:{account}:configuration-set/{name}"


def is_unsupported(exc: ClientError) -> bool:
    """True when the answer means "no such API here" rather than an AWS error.

    A bare HTTP status as the code (404, 500, 501) means the endpoint replied with no AWS
    error document at all, which AWS's SES never does; real transient failures carry a
    code (InternalFailure, TooManyRequestsException) and are left to the caller.
    """
    return not_implemented(exc) or error_code(exc).isdigit()


async def _call(sesv2: SESV2Client, operation: str, **params: Any) -> Any:
    try:
        return await getattr(sesv2, operation)(**params)
    except ClientError as exc:
        if is_unsupported(exc):
            op = exc.operation_name or operation
            raise TenantsUnsupported(
                f"SES tenants are not supported by this endpoint ({op} answered"
                f" {error_code(exc)}): set SESGUARD_USE_TENANTS=false, or run"
                " against Amazon SES in a region with tenants"
            ) from None
        raise


async def get_tenant(sesv2: SESV2Client, name: str) -> Tenant | None:
    try:
        resp = await _call(sesv2, "get_tenant", TenantName=name)
    except ClientError as exc:
        if error_code(exc) == "NotFoundException":
            return None
        raise
    t = resp["Tenant"]
    return Tenant(t["TenantName"], t["TenantArn"], t.get("SendingStatus"))


async def ensure_tenant(
    sesv2: SESV2Client,
    partner_id: str,
    identity_arn: str,
    configuration_set_arn: str,
    name: str | None = None,
) -> Tenant:
    """Create the partner's tenant and associate identity + configuration set (idempotent).

    Store the returned `Tenant.name` as the partner's `tenant_name`: the sender sends
    with it (TenantName) when SESGUARD_USE_TENANTS is on.
    """
    name = tenant_name(partner_id, name)
    try:
        resp = await _call(
            sesv2,
            "create_tenant",
            TenantName=name,
            Tags=[{"Key": PARTNER_TAG, "Value": partner_id}],
        )
        tenant = Tenant(resp["TenantName"], resp["TenantArn"], resp.get("SendingStatus"))
        log.info("tenant_created", partner_id=partner_id, tenant_arn=tenant.arn)
    except ClientError as exc:
        if error_code(exc) != "AlreadyExistsException":
            raise
        found = await get_tenant(sesv2, name)
        if found is None:  # deleted between the two calls: let the caller retry
            raise
        tenant = found
    for arn in (identity_arn, configuration_set_arn):
        try:
            await _call(
                sesv2, "create_tenant_resource_association", TenantName=name, ResourceArn=arn
            )
        except ClientError as exc:
            if error_code(exc) != "AlreadyExistsException":
                raise
    return tenant


async def set_tenant_sending(sesv2: SESV2Client, tenant_arn: str, enabled: bool) -> None:
    """Set the customer-managed sending status of one tenant."""
    await _call(
        sesv2,
        "update_reputation_entity_customer_managed_status",
        ReputationEntityType="RESOURCE",
        ReputationEntityReference=tenant_arn,
        SendingStatus=ENABLED if enabled else DISABLED,
    )


async def mirror_status(
    sesv2: SESV2Client, partner_id: str, paused: bool, name: str | None = None
) -> Tenant | None:
    """Mirror a pause (or resume) of the partner to its tenant; None if it has no tenant.

    Called after sesguard's own conditional transition has been won, so SES follows
    sesguard, never the other way round. `name` is the profile's tenant_name, if any.
    """
    tenant = await get_tenant(sesv2, tenant_name(partner_id, name))
    if tenant is None:
        log.warning("tenant_missing", partner_id=partner_id, paused=paused)
        return None
    await set_tenant_sending(sesv2, tenant.arn, enabled=not paused)
    log.info(
        "tenant_status_mirrored",
        partner_id=partner_id,
        tenant_arn=tenant.arn,
        sending_status=DISABLED if paused else ENABLED,
    )
    return tenant
