"""Helpers of the sender tests (no tests here; the `env` fixture is in conftest.py): a
partner, a queue, a recorder of what is asked of SES, and a way to run the service until
the queue is drained."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from sender.service import SenderService
from sesguard.aws import table as t
from sesguard.aws.store import PartnerStore
from sesguard.core.jobs import JOB_TAG, job_tag_value
from sesguard.runtime.ratelimit import TokenBucket
from sesguard.settings import Settings, load_settings
from tests.conftest import dead_letters_in, queue_counts

DOMAIN = "isv.example.com"
PARTNER = "acme"


class SesRecorder:
    """Records every SendEmail the sender asks for; `fail(params)` may return an error
    to raise instead of calling moto (throttling, account paused, ...)."""

    def __init__(self, clients: Any) -> None:
        self.clients = clients
        self.attempts: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.fail: Callable[[dict[str, Any]], Exception | None] = lambda p: None
        self.delay = 0.0
        self.gate: asyncio.Event | None = None

    async def _before(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if any(t["Name"] == "sesguard" for t in params.get("EmailTags", [])):
            return  # a partner notice, not a job
        self.attempts.append(params)
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        error = self.fail(params)
        if error is not None:
            raise error
        context["test_ses_params"] = params

    def _after(self, http_response: Any, context: dict[str, Any], **_: Any) -> None:
        params = context.get("test_ses_params")
        if params is not None and http_response.status_code < 300:
            self.sent.append(params)  # moto accepted it

    def __enter__(self) -> SesRecorder:
        events = self.clients.ses_send.meta.events
        events.register("provide-client-params.sesv2.SendEmail", self._before, unique_id="t-ses-b")
        events.register("after-call.sesv2.SendEmail", self._after, unique_id="t-ses-a")
        return self

    def __exit__(self, *exc: object) -> None:
        events = self.clients.ses_send.meta.events
        events.unregister("provide-client-params.sesv2.SendEmail", unique_id="t-ses-b")
        events.unregister("after-call.sesv2.SendEmail", unique_id="t-ses-a")

    def subjects(self) -> list[str]:
        return [p["Content"]["Simple"]["Subject"]["Data"] for p in self.sent]


@dataclass
class Env:
    clients: Any
    settings: Settings
    store: PartnerStore
    queue_url: str
    dlq_url: str
    ses: SesRecorder
    services: list[SenderService] = field(default_factory=list)

    def job(self, n: int | str, partner: str = PARTNER, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "job_id": f"job-{n}",
            "partner_id": partner,
            "from": f"News <news@{DOMAIN}>",
            "to": [f"user{n}@example.org"],
            "subject": f"subject job-{n}",
            "text": "hello",
        }
        body.update(extra)
        return body

    async def enqueue(self, *bodies: dict[str, Any] | str) -> None:
        raw = [b if isinstance(b, str) else orjson.dumps(b).decode() for b in bodies]
        for start in range(0, len(raw), 10):
            chunk = raw[start : start + 10]
            await self.clients.sqs.send_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(chunk)],
            )

    def service(self, settings: Settings | None = None, **kwargs: Any) -> SenderService:
        kwargs.setdefault("drain", True)
        kwargs.setdefault("wait_seconds", 0)
        kwargs.setdefault("bucket", TokenBucket(1000, 1000))
        kwargs.setdefault("backoff_base", 0.01)
        kwargs.setdefault("linger", 0.01)
        svc = SenderService(self.clients, settings or self.settings, **kwargs)
        self.services.append(svc)
        return svc

    async def drain(
        self, settings: Settings | None = None, expect: int = 0, **kwargs: Any
    ) -> SenderService:
        svc = self.service(settings, **kwargs)
        code = await asyncio.wait_for(svc.run(), timeout=60)
        assert code == expect
        return svc

    async def queue_depth(self, url: str | None = None) -> tuple[int, int]:
        return await queue_counts(self.clients, url or self.queue_url)

    async def dead_letters(self) -> list[tuple[dict[str, Any] | str, str | None]]:
        """(body, sesguard_reason) of every DLQ message."""
        out: list[tuple[dict[str, Any] | str, str | None]] = []
        for raw, reason in await dead_letters_in(self.clients, self.dlq_url):
            try:
                body: dict[str, Any] | str = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = raw
            out.append((body, reason))
        return out


async def ses_word(
    clients: Any,
    settings: Settings,
    job_id: str,
    partner_id: str,
    message_id: str,
    mail_at: datetime | None = None,
) -> None:
    """SES's word that it accepted job `job_id`'s message: its Send event (tagged as the
    sender tags it, at `mail_at`: by default when the job was claimed, as SES's own
    timestamp would be) counted by the worker's own code."""
    from tests.fixtures.ses_events import event
    from worker.aggregate import Aggregator
    from worker.apply import Applier

    if mail_at is None:
        resp = await clients.dynamodb.get_item(
            TableName=settings.table, Key=t.key(t.job_pk(job_id), t.JOB_SK), ConsistentRead=True
        )
        claimed = resp.get("Item", {}).get("claimed_at", {}).get("S")
        mail_at = datetime.fromisoformat(claimed) if claimed else datetime.now(UTC)
    send = event("Send", partner_id, mail_at, message_id=message_id)
    send["mail"]["tags"][JOB_TAG] = [job_tag_value(job_id)]
    agg = Aggregator()
    agg.add(0, send)
    store = PartnerStore.from_settings(clients.dynamodb, settings)
    await Applier(store, f"s3://test/{message_id}").apply(agg.take())


def sender_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "max_send_rate": 1000.0,
        "concurrency": 16,
        "stop_grace_seconds": 5.0,
        "visibility_timeout": 30,
        "heartbeat_file": f"/tmp/sesguard-test-sender-heartbeat-{os.getpid()}",
    }
    base.update(overrides)
    return load_settings(**base)
