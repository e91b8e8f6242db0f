"""Fixtures of the sender tests: `env`, a bootstrapped account with one partner, its
queues, and a recorder of what is asked of SES (tests.sender.support)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sesguard.aws.clients import Clients
from sesguard.aws.store import PartnerStore
from sesguard.core.partners import Limits, Profile
from sesguard.ops.bootstrap import bootstrap
from tests.sender.support import DOMAIN, PARTNER, Env, SesRecorder, sender_settings


@pytest.fixture
async def env(clients: Clients) -> AsyncIterator[Env]:
    settings = sender_settings()
    await bootstrap(clients, settings, [DOMAIN])
    store = PartnerStore.from_settings(clients.dynamodb, settings)
    await store.create(Profile(PARTNER, f"ops@{PARTNER}.example.org", Limits()))
    queue_url = (await clients.sqs.get_queue_url(QueueName=settings.send_queue))["QueueUrl"]
    dlq_url = (await clients.sqs.get_queue_url(QueueName=f"{settings.send_queue}-dlq"))["QueueUrl"]
    with SesRecorder(clients) as ses:
        yield Env(clients, settings, store, queue_url, dlq_url, ses)
