"""Entry points of the event service for the CLI (`sesguard worker ...`) and `python -m worker`.

worker [--drain]                                   consume the events queue
worker backfill [--prefix P] [--since ISO] [--bucket B]   count objects already in S3
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from sesguard.aws.clients import Clients, open_clients
from sesguard.aws.lifecycle import Publisher
from sesguard.aws.store import PartnerStore
from sesguard.core.exitcodes import ExitCode
from sesguard.domain.judgement import PartnerJudge
from sesguard.logging import get_logger
from sesguard.runtime.signals import service_signals, stop_budget
from sesguard.settings import Settings
from worker.backfill import backfill
from worker.enforce import Enforcer
from worker.identities import IdentityCache
from worker.pipeline import Processor
from worker.service import WorkerService

log = get_logger(__name__)

ACTION_DEST = "worker_action"


def parse_since(value: str) -> datetime:
    """ISO date or time; without a zone it is UTC."""
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO date/time: {value!r} (e.g. 2026-11-29 or 2026-11-29T13:00Z)"
        ) from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--drain",
        action="store_true",
        help="exit 0 once the events queue is empty and nothing is in flight",
    )
    actions = parser.add_subparsers(dest=ACTION_DEST, metavar="ACTION")
    bf = actions.add_parser(
        "backfill",
        help="count objects already in the events bucket (exactly once)",
        description=(
            "Process objects already in the events bucket with the same exactly-once"
            " guarantee as the service: objects counted before are skipped."
        ),
    )
    bf.add_argument(
        "--prefix",
        default=None,
        help="key prefix to list (default: SESGUARD_EVENTS_PREFIX), e.g. 2026/11/29/",
    )
    bf.add_argument(
        "--since",
        type=parse_since,
        default=None,
        help="only objects last modified at or after this ISO date/time (UTC if no zone)",
    )
    bf.add_argument("--bucket", default=None, help="default: the events bucket")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    action = getattr(args, ACTION_DEST, None)
    async with open_clients(settings.concurrency) as clients:
        if action == "backfill":
            return await _backfill(args, settings, clients)
        service = WorkerService(clients, settings)
        with service_signals(service.stop, lambda: stop_budget(service.consumer)):
            return await service.run(drain=bool(getattr(args, "drain", False)))


async def _backfill(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    bucket = args.bucket or settings.bucket_name(await clients.account_id())
    prefix = settings.events_prefix if args.prefix is None else args.prefix
    store = PartnerStore.from_settings(clients.dynamodb, settings)
    judge = PartnerJudge.standard(
        store, clients.sesv2, settings, Publisher.from_clients(clients, settings)
    )
    processor = Processor(
        clients.s3,
        store,
        Enforcer(judge),
        max_object_bytes=settings.max_object_bytes,
        count_simulator=settings.counts_simulator_mail,
        identities=IdentityCache.for_sesv2(clients.sesv2, settings.identities_refresh_seconds),
    )
    report = await backfill(
        processor, clients.s3, bucket, prefix, since=args.since, concurrency=settings.concurrency
    )
    print(report.line())  # the operator's summary
    return ExitCode.FAILED if report.failed else ExitCode.OK
