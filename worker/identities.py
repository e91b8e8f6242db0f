"""The worker's cache of the account's verified identities (docs/semantics.md, "Bounces to
verified identities"): listed from SESv2 at most every `refresh_seconds`; a failure to
list keeps the last known set and is logged once until a listing succeeds again."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sesguard.aws.identities import list_verified_identities
from sesguard.core.identities import NO_IDENTITIES, Identities
from sesguard.logging import get_logger

if TYPE_CHECKING:
    from types_aiobotocore_sesv2 import SESV2Client

log = get_logger(__name__)


class IdentityCache:
    def __init__(
        self,
        lister: Callable[[], Awaitable[Identities]],
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lister = lister
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.identities: Identities = NO_IDENTITIES
        self._next = 0.0  # clock time of the next listing: at once
        self._failing = False

    @classmethod
    def for_sesv2(cls, sesv2: SESV2Client, refresh_seconds: float) -> IdentityCache:
        return cls(lambda: list_verified_identities(sesv2), refresh_seconds)

    async def current(self) -> Identities:
        """The verified identities, listed again when the last listing is too old."""
        now = self.clock()
        if now < self._next:
            return self.identities
        self._next = now + self.refresh_seconds
        try:
            identities = await self.lister()
        except Exception as exc:  # any failure keeps the last set
            if not self._failing:
                self._failing = True
                log.warning(
                    "verified_identities_unavailable",
                    error=f"{type(exc).__name__}: {exc}"[:300],
                    kept=len(self.identities),
                    problem="could not list the account's identities; hard bounces are"
                    " judged with the last known set",
                )
            return self.identities
        if self._failing or identities != self.identities:
            log.info("verified_identities", count=len(identities), recovered=self._failing)
        self._failing = False
        self.identities = identities
        return identities
