"""The SES account-pause watch: SES stopped sending for the whole account.

Suspends the consumer's intake and probes GetAccount every PROBE_SECONDS until sending is
enabled; with `sender --drain` the run ends with exit code 3. See docs/design.md,
"Suspending intake".
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from sesguard.aws.errors import error_code
from sesguard.logging import get_logger
from sesguard.runtime import Consumer

if TYPE_CHECKING:
    from types_aiobotocore_sesv2 import SESV2Client

log = get_logger(__name__)

SUSPEND_KEY = "ses-account"
PROBE_SECONDS = 60.0


class AccountWatch:
    def __init__(
        self,
        sesv2: SESV2Client,
        consumer: Consumer,
        *,
        drain: bool,
        probe_seconds: float = PROBE_SECONDS,
    ) -> None:
        self.sesv2 = sesv2
        self.consumer = consumer
        self.drain = drain
        self.probe_seconds = probe_seconds
        self.paused = False
        self.ended_run = False
        self._probe: asyncio.Task[None] | None = None

    def trip(self, why: str) -> None:
        """SES said the account cannot send (the handler calls this)."""
        if self.paused:
            return
        self.paused = True
        log.error(
            "ses_account_sending_paused",
            alert=True,
            error=why,
            action="stopped taking work; jobs returned to the queue",
        )
        self.consumer.suspend(SUSPEND_KEY, f"SES account paused: {why}")  # given back at once
        if self.drain:
            self.ended_run = True
            self.consumer.end("ses account sending paused")
        elif self._probe is None:
            self._probe = asyncio.create_task(self._wait_for_sending(), name="ses-account-probe")

    async def _wait_for_sending(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.probe_seconds)
                try:
                    account = await self.sesv2.get_account()
                    enabled = bool(account.get("SendingEnabled", True))
                except Exception as exc:
                    log.info("ses_account_probe_failed", error=error_code(exc))
                    enabled = True  # cannot tell: try sending again; a pause re-trips at once
                if enabled:
                    log.warning("ses_account_sending_resumed")
                    self.paused = False
                    self.consumer.lift(SUSPEND_KEY)
                    return
        finally:
            self._probe = None

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
