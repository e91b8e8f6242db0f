"""`sesguard dlq [redrive]`: read the dead-letter queues, redrive the send DLQ
(sesguard.ops.dlq does both)."""

from __future__ import annotations

import argparse
import sys

from sesguard.aws.clients import Clients
from sesguard.aws.store import PartnerStore
from sesguard.cli.parser import Parser, Subparsers, print_json, volume_arg
from sesguard.core.exitcodes import ExitCode
from sesguard.errors import Failed, Refused
from sesguard.settings import Settings


def register(sub: Subparsers) -> None:
    dq = sub.add_parser(
        "dlq",
        help="list a dead-letter queue (without consuming it); `dlq redrive` to re-enqueue",
        description=(
            "List the send DLQ (or --events: the events DLQ) with each message's reason,"
            " job id, partner and age. Messages are made visible again at once."
        ),
    )
    dq.add_argument("--events", action="store_true", help="the events DLQ instead")
    dq.add_argument("--json", action="store_true")
    dq.add_argument(
        "--limit", type=volume_arg, default=1000, metavar="N", help="at most N (default 1000)"
    )
    dq.set_defaults(handler=cmd_dlq)
    dq_sub = dq.add_subparsers(dest="dlq_action", metavar="ACTION", parser_class=Parser)
    rd = dq_sub.add_parser(
        "redrive",
        help="re-enqueue the send DLQ's jobs that are safe to send (never one twice)",
        description=(
            "Jobs SES's events show sent are dropped; possibly-sent jobs SES said nothing of"
            " within SESGUARD_DLQ_SETTLE_SECONDS of their claim are re-enqueued after their"
            " stale claim is removed; jobs never sent are re-enqueued; malformed and"
            " rejected jobs stay. Each message leaves the DLQ only once its fate is done."
        ),
    )
    rd.add_argument(
        "--reason", type=_reason_filter, metavar="SUBSTRING", help="only jobs whose reason has it"
    )
    rd.add_argument("--dry-run", action="store_true", help="say what would happen; change nothing")
    rd.add_argument("--json", action="store_true")
    rd.set_defaults(handler=cmd_dlq_redrive)


def _reason_filter(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("give some text of the reason, e.g. 'possibly sent'")
    return value


async def cmd_dlq(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    """List a dead-letter queue without consuming it."""
    from sesguard.ops import dlq

    queue = settings.events_queue if args.events else settings.send_queue
    url = (await clients.sqs.get_queue_url(QueueName=f"{queue}-dlq"))["QueueUrl"]
    entries = await dlq.list_dlq(clients.sqs, url, events=args.events, limit=args.limit)
    if args.json:
        print_json(entries)
    else:
        print(dlq.listing_text(entries, events=args.events))
        if len(entries) >= args.limit:
            print(f"(the first {args.limit}; --limit N shows more)", file=sys.stderr)
    return ExitCode.OK


async def cmd_dlq_redrive(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    """Re-enqueue what is safe from the send DLQ."""
    from sesguard.ops import dlq
    from sesguard.runtime import queue_urls

    if args.events:
        raise Refused("redrive works on the send DLQ only (`sesguard dlq --events` lists)")
    queue_url, dlq_url = await queue_urls(clients.sqs, settings.send_queue)
    store = PartnerStore.from_settings(clients.dynamodb, settings)

    async def partner_exists(partner_id: str) -> bool:
        return await store.get_profile(partner_id) is not None

    redrive = dlq.Redrive(
        clients.sqs,
        clients.dynamodb,
        settings,
        queue_url,
        dlq_url,
        partner_exists,
        events_pending=await dlq.events_pending(clients.sqs, settings),
        reason_filter=args.reason,
        dry_run=args.dry_run,
    )
    report = await redrive.run()
    if args.json:
        print_json(report.as_json())
    else:
        print(report.text())
    if report.failed:
        raise Failed(
            f"{report.failed} jobs could not be settled and stay in the DLQ: run the redrive"
            " again (nothing was sent twice)"
        )
    return ExitCode.OK
