"""Entry points of the send service for the `sesguard sender` CLI and `python -m sender`.

Exit codes (sesguard.core.exitcodes): 0 stopped or drained, 1 could not start (missing queue,
no AWS access) or a --drain that gave up (a dependency down past the outage tolerance),
3 --drain ended early because SES paused sending for the whole account.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from sender.service import SenderService
from sesguard.aws.clients import open_clients
from sesguard.logging import get_logger
from sesguard.settings import Settings

log = get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--drain",
        action="store_true",
        help="exit 0 once the send queue is empty and nothing is in flight",
    )


async def run(args: argparse.Namespace, settings: Settings) -> int:
    async with open_clients(settings.concurrency) as clients:
        service = SenderService(clients, settings, drain=bool(getattr(args, "drain", False)))
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, service.stop, sig.name)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread / platform
                log.debug("signal_handler_unavailable", signal=sig.name)
        try:
            return await service.run()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
