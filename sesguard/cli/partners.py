"""`sesguard partners add|set|pause|resume|list|show`: the CLI face of sesguard.ops.operations
(the console is the other), which checks the input and does the work."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from sesguard.aws.clients import Clients
from sesguard.aws.store import PartnerNotFound, PartnerStore
from sesguard.cli.parser import (
    Parser,
    Subparsers,
    daily_quota_arg,
    email_arg,
    max_rate_arg,
    partner_id_arg,
    print_json,
    rate_arg,
    reason_arg,
    shown_partner_id_arg,
    volume_arg,
    warn_arg,
)
from sesguard.core.exitcodes import ExitCode
from sesguard.core.partners import (
    MAX_DAILY_QUOTA,
    MAX_MAX_RATE,
    MAX_MIN_VOLUME,
    MAX_REASON_CHARS,
    MIN_MAX_RATE,
    MIN_RATE,
)
from sesguard.ops import operations
from sesguard.settings import Settings


def register(sub: Subparsers) -> None:
    parts = sub.add_parser("partners", help="manage partners").add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=Parser
    )

    a = parts.add_parser("add", help="register a partner")
    a.add_argument("partner_id", type=partner_id_arg, metavar="ID")
    a.add_argument("--contact", type=email_arg, required=True, metavar="EMAIL")
    _limit_options(a)
    a.set_defaults(handler=cmd_partners_add)

    s = parts.add_parser("set", help="change a partner's contact, limits or throttle")
    s.add_argument("partner_id", type=partner_id_arg, metavar="ID")
    s.add_argument("--contact", type=email_arg, metavar="EMAIL")
    _limit_options(s)
    s.set_defaults(handler=cmd_partners_set)

    pa = parts.add_parser("pause", help="pause a partner (its jobs are held)")
    pa.add_argument("partner_id", type=partner_id_arg, metavar="ID")
    pa.add_argument(
        "--reason",
        type=reason_arg,
        default=operations.DEFAULT_PAUSE_REASON,
        metavar="TEXT",
        help=(
            "why: stored with the pause and quoted in the partner's notice, at most"
            f" {MAX_REASON_CHARS} characters (longer is refused)"
        ),
    )
    pa.add_argument("--no-notify", action="store_true", help="do not e-mail the partner")
    pa.set_defaults(handler=cmd_partners_pause)

    r = parts.add_parser("resume", help="resume a paused partner")
    r.add_argument("partner_id", type=partner_id_arg, metavar="ID")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--replay", action="store_true", help="send the held jobs")
    g.add_argument("--discard", action="store_true", help="drop the held jobs")
    r.set_defaults(handler=cmd_partners_resume)

    ls = parts.add_parser("list", help="all partners with their rates")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_partners_list)

    sh = parts.add_parser("show", help="one partner in detail")
    sh.add_argument("partner_id", type=shown_partner_id_arg, metavar="ID")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(handler=cmd_partners_show)


def _limit_options(sp: argparse.ArgumentParser) -> None:
    rates = f"from {MIN_RATE:g} to 1"
    sp.add_argument(
        "--bounce-limit", type=rate_arg, metavar="F", help=f"e.g. 0.05 for 5%% ({rates})"
    )
    sp.add_argument(
        "--complaint-limit", type=rate_arg, metavar="F", help=f"e.g. 0.001 for 0.1%% ({rates})"
    )
    sp.add_argument(
        "--min-volume",
        type=volume_arg,
        metavar="N",
        help=f"sends a window needs before it judges (1 to {MAX_MIN_VOLUME})",
    )
    sp.add_argument(
        "--warn-ratio",
        type=warn_arg,
        metavar="F",
        help="warn at this fraction of a limit (default 0.5)",
    )
    sp.add_argument(
        "--max-rate",
        type=max_rate_arg,
        metavar="R|none",
        help=(
            f"most sends per second, all sender tasks together ({MIN_MAX_RATE:g} to"
            f" {MAX_MAX_RATE:g}); none: no cap"
        ),
    )
    sp.add_argument(
        "--daily-quota",
        type=daily_quota_arg,
        metavar="N|none",
        help=f"most sends per UTC day (0 to {MAX_DAILY_QUOTA}); none: no quota",
    )
    sp.add_argument(
        "--tenant",
        type=partner_id_arg,
        metavar="NAME",
        help="SES tenant to send as (with SESGUARD_USE_TENANTS)",
    )


PROFILE_OPTIONS = (
    "bounce_limit",
    "complaint_limit",
    "min_volume",
    "warn_ratio",
    "tenant",
    "max_rate",
    "daily_quota",
)


def _profile_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options `partners add` and `partners set` share (None: not given)."""
    return {name: getattr(args, name) for name in PROFILE_OPTIONS}


async def cmd_partners_add(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    result = await operations.add_partner(
        clients, settings, args.partner_id, args.contact, **_profile_options(args)
    )
    _print_lines(result.lines())
    return ExitCode.OK


async def cmd_partners_set(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    result = await operations.set_partner(
        clients, settings, args.partner_id, contact=args.contact, **_profile_options(args)
    )
    _print_lines(result.lines())
    return ExitCode.OK


async def cmd_partners_pause(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    result = await operations.pause(
        clients, settings, args.partner_id, args.reason, notify=not args.no_notify
    )
    _print_lines(result.lines())
    return ExitCode.OK


async def cmd_partners_resume(
    args: argparse.Namespace, settings: Settings, clients: Clients
) -> int:
    action = (
        operations.HeldAction.REPLAY
        if args.replay
        else operations.HeldAction.DISCARD
        if args.discard
        else operations.HeldAction.KEEP
    )
    resumed = await operations.resume(clients, settings, args.partner_id)
    _print_lines(resumed.lines())
    for warning in resumed.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if action is not operations.HeldAction.KEEP:
        print(f"releasing held jobs (about {operations.release_seconds(settings):.0f} s)...")
    released = await operations.release_held(clients, settings, args.partner_id, action)
    _print_lines(released.lines())
    return ExitCode.OK


def _print_lines(lines: Sequence[str]) -> None:
    for line in lines:
        print(line)


async def cmd_partners_show(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    from sesguard.ops.report import partner_text

    store = PartnerStore.from_settings(clients.dynamodb, settings)
    report = await operations.partner_report(store, settings, args.partner_id)
    if report is None:
        raise PartnerNotFound(f"no partner {args.partner_id} (and no traffic under that id)")
    if args.json:
        print_json(report)
    else:
        print(partner_text(report))
    return ExitCode.OK


async def cmd_partners_list(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    from sesguard.ops.report import partners_table

    rows = await operations.partner_reports(
        PartnerStore.from_settings(clients.dynamodb, settings), settings
    )
    if args.json:
        print_json(rows)
    elif rows:
        print(partners_table(rows))
    else:
        print("no partners yet: add one with `sesguard partners add ID --contact EMAIL`")
    return ExitCode.OK
