"""Entry points of the send service for the `sesguard sender` CLI and `python -m sender`.

Exit codes (sesguard.core.exitcodes): 0 stopped or drained, 1 could not start (missing queue,
no AWS access) or a --drain that gave up (a dependency down past the outage tolerance),
3 --drain ended early because SES paused sending for the whole account.
"""

from __future__ import annotations

import argparse

from sender.handler import AfterSendFactory
from sender.service import SenderService
from sesguard.aws.clients import open_clients
from sesguard.runtime.signals import service_signals, stop_budget
from sesguard.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--drain",
        action="store_true",
        help="exit 0 once the send queue is empty and nothing is in flight",
    )


async def run(
    args: argparse.Namespace, settings: Settings, after_send: AfterSendFactory | None = None
) -> int:
    """Run until stopped; `after_send` is local wiring (sesguard.cli.service_wiring)."""
    async with open_clients(settings.concurrency) as clients:
        drain = bool(getattr(args, "drain", False))
        service = SenderService(clients, settings, drain=drain, after_send=after_send)
        with service_signals(service.stop, lambda: stop_budget(service.consumer)):
            return await service.run()
