"""The send rate this task may use: the account's SES quota shared by the sender tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sesguard.aws.errors import error_code
from sesguard.logging import get_logger
from sesguard.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_sesv2 import SESV2Client

log = get_logger(__name__)

FALLBACK_SEND_RATE = 14.0  # SES's usual starting quota, when GetAccount is unavailable


async def resolve_send_rate(sesv2: SESV2Client, settings: Settings) -> tuple[float, str]:
    """Account-wide sends/s and where it came from: the setting, else the account's
    quota (SESv2 GetAccount), else a fallback that is logged (moto has no GetAccount)."""
    if settings.max_send_rate:
        return settings.max_send_rate, "setting"
    try:
        account = await sesv2.get_account()
        rate = float(account["SendQuota"]["MaxSendRate"])
    except Exception as exc:
        log.warning(
            "send_rate_unknown",
            error=error_code(exc),
            fallback=FALLBACK_SEND_RATE,
            hint="set SESGUARD_MAX_SEND_RATE",
        )
        return FALLBACK_SEND_RATE, "fallback"
    if rate <= 0:
        log.warning("send_rate_unknown", account_rate=rate, fallback=FALLBACK_SEND_RATE)
        return FALLBACK_SEND_RATE, "fallback"
    return rate, "account"
