"""Policy after every apply: judge each partner an object touched (sesguard.domain.judgement).

Judging runs even when the object turned out to be counted already: a worker that crashed
between apply and judgement leaves the judgement to the redelivery. However many workers
judge the same partner at once, the conditional pause lets exactly one of them pause it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sesguard.core.partners import utcnow
from sesguard.domain.judgement import Enforcement, PartnerJudge


@dataclass
class Enforcer:
    judge: PartnerJudge
    parallel: int = 8  # partners judged at once per object

    async def check(self, partner_id: str, now: datetime | None = None) -> Enforcement:
        return (await self.judge.judge(partner_id, now)).enforcement

    async def check_all(
        self, partner_ids: Iterable[str], now: datetime | None = None
    ) -> dict[str, Enforcement]:
        now = now or utcnow()
        ids = sorted(set(partner_ids))
        gate = asyncio.Semaphore(self.parallel)

        async def one(pid: str) -> Enforcement:
            async with gate:
                return await self.check(pid, now)

        outcomes = await asyncio.gather(*(one(pid) for pid in ids))
        return dict(zip(ids, outcomes, strict=True))
