"""`sesguard console`: the operators' web console, on 127.0.0.1 only."""

from __future__ import annotations

import argparse

from sesguard.aws.clients import Clients
from sesguard.cli.parser import Subparsers, port_arg
from sesguard.settings import Settings


def register(sub: Subparsers) -> None:
    c = sub.add_parser(
        "console", help="a web console for operators, on 127.0.0.1 (this machine) only"
    )
    c.add_argument(
        "--port",
        type=port_arg,
        default=8765,
        metavar="N",
        help="port on 127.0.0.1 (default 8765; 0 picks a free one)",
    )
    c.set_defaults(handler=cmd_console)


async def cmd_console(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    from sesguard.ops.console.server import serve

    return await serve(clients, settings, args.port)
