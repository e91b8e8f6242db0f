"""SES tenants: what sesguard asks SES to do, and one clear error where SES can't.

moto has no tenant APIs, so each test records the request parameters with a botocore
event hook (`provide-client-params`). Against moto itself the calls must fail with one
`TenantsUnsupported`. For the success paths a small stand-in for the missing endpoint
answers at the `before-call` hook (the HTTP boundary, as botocore's Stubber does), so
the parsing of responses and error codes runs through the real client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aioboto3
import pytest
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from sesguard.aws.tenants import (
    DISABLED,
    ENABLED,
    PARTNER_TAG,
    Tenant,
    TenantsUnsupported,
    configuration_set_arn,
    ensure_tenant,
    identity_arn,
    is_unsupported,
    mirror_status,
    set_tenant_sending,
)
from sesguard.core.partners import InvalidPartnerId
from sesguard.ops.permissions import OPERATOR_TENANTS, TENANT_MIRROR, iam_actions

ACCOUNT = "123456789012"
IDENTITY = identity_arn("us-east-1", ACCOUNT, "isv.example.com")
CONFIG_SET = configuration_set_arn("us-east-1", ACCOUNT, "sesguard")


@dataclass(eq=False)  # hashable: botocore keys handlers by identity
class Recorder:
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, dict(params)))

    @property
    def ops(self) -> list[str]:
        return [op for op, _ in self.calls]


class _Http:
    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}


@dataclass(eq=False)
class TenantsStandIn:
    """Answers the four tenant operations the way SES documents them."""

    recorder: Recorder
    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)
    associations: set[tuple[str, str]] = field(default_factory=set)
    fail_with: str | None = None

    def __call__(self, model: Any, **_: Any) -> tuple[_Http, dict[str, Any]]:
        op, params = self.recorder.calls[-1]
        assert op == model.name
        if self.fail_with:
            return self._error(400 if self.fail_with != "InternalFailure" else 500, self.fail_with)
        if op == "CreateTenant":
            name = params["TenantName"]
            if name in self.tenants:
                return self._error(400, "AlreadyExistsException")
            arn = f"arn:aws:ses:us-east-1:{ACCOUNT}:tenant/{name}/tn-{len(self.tenants):04d}"
            self.tenants[name] = {"TenantName": name, "TenantArn": arn, "SendingStatus": ENABLED}
            return _Http(200), dict(self.tenants[name])
        if op == "GetTenant":
            t = self.tenants.get(params["TenantName"])
            return (_Http(200), {"Tenant": dict(t)}) if t else self._error(404, "NotFoundException")
        if op == "CreateTenantResourceAssociation":
            key = (params["TenantName"], params["ResourceArn"])
            if key in self.associations:
                return self._error(400, "AlreadyExistsException")
            self.associations.add(key)
            return _Http(200), {}
        if op == "UpdateReputationEntityCustomerManagedStatus":
            for t in self.tenants.values():
                if t["TenantArn"] == params["ReputationEntityReference"]:
                    t["SendingStatus"] = params["SendingStatus"]
                    return _Http(200), {}
            return self._error(404, "NotFoundException")
        raise AssertionError(f"unexpected operation {op}")

    @staticmethod
    def _error(status: int, code: str) -> tuple[_Http, dict[str, Any]]:
        return _Http(status), {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {}}


@pytest.fixture
async def sesv2(moto_endpoint: str) -> AsyncIterator[Any]:
    """A client of its own, so hooks registered here never leak into other tests."""
    session = aioboto3.Session(region_name="us-east-1")
    config = AioConfig(retries={"max_attempts": 1, "mode": "standard"})
    async with session.client("sesv2", endpoint_url=moto_endpoint, config=config) as client:
        yield client


@pytest.fixture
def recorder(sesv2: Any) -> Recorder:
    rec = Recorder()
    sesv2.meta.events.register("provide-client-params.sesv2.*", rec)
    return rec


@pytest.fixture
def stand_in(sesv2: Any, recorder: Recorder) -> TenantsStandIn:
    fake = TenantsStandIn(recorder)
    sesv2.meta.events.register("before-call.sesv2.*", fake)
    return fake


# ---- against moto: the endpoint lacks the APIs ------------------------------------


async def test_moto_answers_unsupported_with_one_clear_error(
    sesv2: Any, recorder: Recorder
) -> None:
    with pytest.raises(TenantsUnsupported) as info:
        await ensure_tenant(sesv2, "acme", IDENTITY, CONFIG_SET)
    message = str(info.value)
    assert "CreateTenant" in message and "SESGUARD_USE_TENANTS=false" in message
    assert "\n" not in message and "<html" not in message.lower()  # no HTML dump
    assert recorder.calls == [
        ("CreateTenant", {"TenantName": "acme", "Tags": [{"Key": PARTNER_TAG, "Value": "acme"}]})
    ]

    with pytest.raises(TenantsUnsupported, match="GetTenant"):
        await mirror_status(sesv2, "acme", paused=True)
    with pytest.raises(TenantsUnsupported, match="UpdateReputationEntityCustomerManagedStatus"):
        await set_tenant_sending(sesv2, f"arn:aws:ses:us-east-1:{ACCOUNT}:tenant/acme/x", False)
    assert recorder.ops[1:] == ["GetTenant", "UpdateReputationEntityCustomerManagedStatus"]


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "CreateTenant",
    )


@pytest.mark.parametrize(
    ("code", "status", "unsupported"),
    [
        ("404", 404, True),  # moto: URL not routed, HTML body, no AWS error code
        ("500", 500, True),
        ("501", 501, True),
        ("UnknownOperationException", 400, True),
        ("NotImplemented", 501, True),
        ("InternalFailure", 500, False),  # a real (transient) AWS error: retry, don't degrade
        ("TooManyRequestsException", 429, False),
        ("NotFoundException", 404, False),
        ("BadRequestException", 400, False),
    ],
)
def test_is_unsupported(code: str, status: int, unsupported: bool) -> None:
    assert is_unsupported(_client_error(code, status)) is unsupported


async def test_invalid_partner_id_is_refused_before_any_call(
    sesv2: Any, recorder: Recorder
) -> None:
    for bad in ("", "a b", "x" * 65, "acme/../other", "ünï"):
        with pytest.raises(InvalidPartnerId):
            await ensure_tenant(sesv2, bad, IDENTITY, CONFIG_SET)
        with pytest.raises(InvalidPartnerId):
            await mirror_status(sesv2, bad, paused=True)
    assert recorder.calls == []


# ---- where SES has tenants (stand-in answers) ---------------------------------------


async def test_ensure_tenant_creates_and_associates(
    sesv2: Any, recorder: Recorder, stand_in: TenantsStandIn
) -> None:
    tenant = await ensure_tenant(sesv2, "acme", IDENTITY, CONFIG_SET)
    assert tenant == Tenant("acme", stand_in.tenants["acme"]["TenantArn"], ENABLED)
    assert recorder.calls == [
        ("CreateTenant", {"TenantName": "acme", "Tags": [{"Key": PARTNER_TAG, "Value": "acme"}]}),
        ("CreateTenantResourceAssociation", {"TenantName": "acme", "ResourceArn": IDENTITY}),
        ("CreateTenantResourceAssociation", {"TenantName": "acme", "ResourceArn": CONFIG_SET}),
    ]
    assert stand_in.associations == {("acme", IDENTITY), ("acme", CONFIG_SET)}


async def test_ensure_tenant_is_idempotent(
    sesv2: Any, recorder: Recorder, stand_in: TenantsStandIn
) -> None:
    first = await ensure_tenant(sesv2, "acme", IDENTITY, CONFIG_SET)
    recorder.calls.clear()
    again = await ensure_tenant(sesv2, "acme", IDENTITY, CONFIG_SET)
    assert again == first
    assert recorder.ops == [
        "CreateTenant",  # AlreadyExists ...
        "GetTenant",  # ... so the existing tenant is read
        "CreateTenantResourceAssociation",  # AlreadyExists, ignored
        "CreateTenantResourceAssociation",
    ]
    assert len(stand_in.tenants) == 1


async def test_pause_and_resume_mirror_the_customer_managed_status(
    sesv2: Any, recorder: Recorder, stand_in: TenantsStandIn
) -> None:
    tenant = await ensure_tenant(sesv2, "acme", IDENTITY, CONFIG_SET)
    recorder.calls.clear()

    assert await mirror_status(sesv2, "acme", paused=True) == tenant
    assert recorder.calls == [
        ("GetTenant", {"TenantName": "acme"}),
        (
            "UpdateReputationEntityCustomerManagedStatus",
            {
                "ReputationEntityType": "RESOURCE",
                "ReputationEntityReference": tenant.arn,
                "SendingStatus": DISABLED,
            },
        ),
    ]
    assert stand_in.tenants["acme"]["SendingStatus"] == DISABLED

    await mirror_status(sesv2, "acme", paused=False)
    assert recorder.calls[-1][1]["SendingStatus"] == ENABLED  # not REINSTATED: SES findings stand
    assert stand_in.tenants["acme"]["SendingStatus"] == ENABLED


async def test_tenant_name_may_differ_from_the_partner_id(
    sesv2: Any, recorder: Recorder, stand_in: TenantsStandIn
) -> None:
    tenant = await ensure_tenant(sesv2, "acme", IDENTITY, CONFIG_SET, name="acme-eu")
    assert tenant.name == "acme-eu"
    assert recorder.calls[0] == (
        "CreateTenant",
        {"TenantName": "acme-eu", "Tags": [{"Key": PARTNER_TAG, "Value": "acme"}]},
    )
    assert await mirror_status(sesv2, "acme", paused=True, name="acme-eu") == tenant
    assert stand_in.tenants["acme-eu"]["SendingStatus"] == DISABLED
    with pytest.raises(InvalidPartnerId):
        await mirror_status(sesv2, "acme", paused=True, name="bad name")


async def test_mirror_without_tenant_changes_nothing(
    sesv2: Any, recorder: Recorder, stand_in: TenantsStandIn
) -> None:
    assert await mirror_status(sesv2, "never-mapped", paused=True) is None
    assert recorder.ops == ["GetTenant"]


async def test_real_aws_errors_are_not_mistaken_for_missing_support(
    sesv2: Any, recorder: Recorder, stand_in: TenantsStandIn
) -> None:
    for code in ("TooManyRequestsException", "InternalFailure", "LimitExceededException"):
        stand_in.fail_with = code
        with pytest.raises(ClientError) as info:
            await ensure_tenant(sesv2, "acme", IDENTITY, CONFIG_SET)
        assert not isinstance(info.value, TenantsUnsupported)
        assert info.value.response["Error"]["Code"] == code


async def test_tenant_calls_are_covered_by_the_iam_lists(
    sesv2: Any, recorder: Recorder, stand_in: TenantsStandIn
) -> None:
    """The services' mirror needs exactly TENANT_MIRROR; mapping needs OPERATOR_TENANTS."""
    await ensure_tenant(sesv2, "acme", IDENTITY, CONFIG_SET)
    mapping_ops = set(recorder.ops)
    recorder.calls.clear()
    await mirror_status(sesv2, "acme", paused=True)
    await mirror_status(sesv2, "acme", paused=False)
    mirror_ops = set(recorder.ops)

    def actions(ops: set[str]) -> set[str]:
        return {a for op in ops for a in iam_actions("sesv2", op)}

    assert actions(mirror_ops) == set(TENANT_MIRROR)
    assert actions(mapping_ops | mirror_ops) == set(OPERATOR_TENANTS)
