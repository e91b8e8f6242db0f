"""Helpers of the sender tests (no tests here; the `env` fixture is in conftest.py): a
partner, a queue, a recorder of what is asked of SES, and a way to run the service until
the queue is drained."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from sender.service import SenderService
from sesguard.aws import table as t
from sesguard.aws.store import PartnerStore
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
    mail_at: str = "2026-11-29T11:00:00.000Z",
) -> None:
    """SES's word that it accepted job `job_id`'s message: the item the worker writes, in
    its counters' transaction, for each SES message whose events it counts (issue 20:
    `sesguard.aws.table.message_key`, with partner_id, message_id, mail_at and the keys
    `e_*` of the events counted). Until the worker writes it, the tests that need SES's
    word write it here, and only here: switch this one helper to the real worker."""
    pk, sk = t.message_key(message_id, job_id)
    await clients.dynamodb.put_item(
        TableName=settings.table,
        Item=t.to_item(
            {
                "pk": pk,
                "sk": sk,
                "partner_id": partner_id,
                "message_id": message_id,
                "mail_at": mail_at,
                "e_send": 1,
            }
        ),
    )


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
