"""`sesguard bootstrap`: create every resource (idempotent)."""

from __future__ import annotations

import argparse

from sesguard.aws.clients import Clients
from sesguard.cli.parser import Subparsers
from sesguard.core.exitcodes import ExitCode
from sesguard.settings import Settings


def register(sub: Subparsers) -> None:
    b = sub.add_parser("bootstrap", help="create all resources (idempotent)")
    b.add_argument(
        "--identity",
        action="append",
        metavar="DOMAIN_OR_ADDRESS",
        help="SES identity to create (repeatable)",
    )
    b.set_defaults(handler=cmd_bootstrap)


async def cmd_bootstrap(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    from sesguard.ops.bootstrap import bootstrap

    identities = list(args.identity or [])
    report = await bootstrap(clients, settings, identities)
    for resource, outcome, detail in report.steps:
        print(f"{outcome:8} {resource}" + (f"  ({detail})" if detail else ""))
    print(
        "bootstrap: " + ("resources created or updated" if report.changed else "nothing to change")
    )
    return ExitCode.OK
