"""`sesguard events schema|history` and `sesguard job-schema`: the documents sesguard
reads and writes (a send job, a lifecycle event), and a partner's lifecycle history."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sesguard.aws.clients import Clients
from sesguard.cli.parser import Parser, Subparsers, partner_id_arg, print_json, volume_arg
from sesguard.core.exitcodes import ExitCode
from sesguard.core.jobs import job_schema
from sesguard.core.partners import utcnow
from sesguard.settings import Settings

if TYPE_CHECKING:
    from sesguard.aws.lifecycle import LifecycleEvent


def register(sub: Subparsers) -> None:
    js = sub.add_parser("job-schema", help="print the send job's JSON Schema")
    js.set_defaults(local=cmd_job_schema)

    ev = sub.add_parser("events", help="partner lifecycle events (EventBridge)").add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=Parser
    )
    es = ev.add_parser("schema", help="print the JSON Schema of an event type's detail")
    es.add_argument(
        "type",
        nargs="?",
        metavar="TYPE",
        help='"Partner Paused" or partner-paused, ...; all types when omitted',
    )
    es.set_defaults(local=cmd_events_schema)
    eh = ev.add_parser("history", help="one partner's lifecycle events, oldest first")
    eh.add_argument("partner_id", type=partner_id_arg, metavar="ID")
    eh.add_argument(
        "--hours", type=volume_arg, default=168, metavar="N", help="how far back (default 168)"
    )
    eh.add_argument(
        "--json", action="store_true", help="the events as JSON: each detail with its detail-type"
    )
    eh.set_defaults(handler=cmd_events_history)


def cmd_job_schema(_args: argparse.Namespace) -> int:
    print_json(job_schema())
    return ExitCode.OK


def cmd_events_schema(args: argparse.Namespace) -> int:
    """One lifecycle event type's detail schema (an unknown type is refused), or all of
    them keyed by detail type."""
    from sesguard.aws import lifecycle

    if args.type is None:
        print_json(lifecycle.schemas())
    else:
        print_json(lifecycle.schema(lifecycle.parse_detail_type(args.type)))
    return ExitCode.OK


async def cmd_events_history(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    from sesguard.aws.lifecycle import partner_history

    since = utcnow() - timedelta(hours=args.hours)
    events = await partner_history(clients.dynamodb, settings.table, args.partner_id, since)
    if args.json:
        print_json([history_json(e) for e in events])
    elif not events:
        print(f"no lifecycle events of {args.partner_id} in the last {args.hours} hours")
    else:
        for event in events:
            print(
                f"{event.occurred_at:%Y-%m-%d %H:%M:%S}Z  {event.detail_type:22}  {_summary(event)}"
            )
    return ExitCode.OK


def history_json(event: LifecycleEvent) -> dict[str, Any]:
    """The detail as EventBridge carries it, with the envelope's `detail-type`: without it
    "Held Jobs Replayed" and "Held Jobs Discarded" read the same."""
    return {"detail-type": str(event.detail_type), **event.detail}


def _summary(event: LifecycleEvent) -> str:
    d = event.detail
    parts = [f"by {d['actor']}"]
    if "reason" in d:
        parts.append(d["reason"])
    if "count" in d:
        parts.append(f"{d['count']} jobs")
    if "limits" in d:
        parts.append(
            " ".join(f"{k}={'none' if v is None else f'{v:g}'}" for k, v in d["limits"].items())
        )
    return "  ".join(parts)
