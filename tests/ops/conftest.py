"""Fixtures of the operator-tooling tests."""

from __future__ import annotations

import pytest

from sesguard.aws.clients import Clients
from sesguard.ops.bootstrap import bootstrap
from sesguard.settings import Settings


@pytest.fixture
async def ready(clients: Clients, settings: Settings) -> None:
    """A bootstrapped account (table, queues, bucket, identity): what `sesguard bootstrap`
    leaves, before any partner exists."""
    await bootstrap(clients, settings, ["isv.example.com"])
