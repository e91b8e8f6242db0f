"""The top-level parser and what every command group shares: the argument types (each
refusal names what is wrong), the one-line parser, the handler's signature, JSON output.

A command group (sesguard.cli.partners, ...) adds its subcommands with `register(sub)` and
sets `handler` (async, given settings and AWS clients), or `local` (no settings, no AWS).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeAlias

import orjson

from sesguard import __version__
from sesguard.aws.clients import Clients
from sesguard.core.exitcodes import ExitCode
from sesguard.errors import Refused
from sesguard.ops import operations
from sesguard.settings import Settings

Handler = Callable[[argparse.Namespace, Settings, Clients], Awaitable[int]]


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"sesguard: error: {message} (see `{self.prog} --help`)\n")


Subparsers: TypeAlias = "argparse._SubParsersAction[Parser]"


def top_parser() -> tuple[Parser, Subparsers]:
    """`sesguard [--version] [--debug] COMMAND`, and the subparsers the groups add to."""
    p = Parser(prog="sesguard", description="Per-partner sending-reputation guard for Amazon SES.")
    p.add_argument("--version", action="version", version=f"sesguard {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    return p, sub


def print_json(data: Any) -> None:
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


# ---- argument types -------------------------------------------------------------------


def _arg_type(check: Callable[[Any], Any], value: str) -> Any:
    """An argparse type from a check of sesguard.ops.operations (the console applies the same
    checks): its refusal becomes argparse's, which prefixes it with the option's name."""
    try:
        return check(value)
    except Refused as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def partner_id_arg(value: str) -> str:
    """A partner id; reserved ids (`_unattributed`, any leading "_") are refused."""
    return str(_arg_type(operations.check_id, value))


def shown_partner_id_arg(value: str) -> str:
    """`partners show` reads any id counts are kept under, `_unattributed` included."""
    return str(_arg_type(lambda v: operations.check_id(v, reserved_ok=True), value))


def email_arg(value: str) -> str:
    return str(_arg_type(operations.check_email, value))


def rate_arg(value: str) -> float:
    """A limit DynamoDB can store as given (operations.check_rate), before any AWS call."""
    return float(_arg_type(operations.check_rate, value))


def volume_arg(value: str) -> int:
    """A whole number from 1 to MAX_MIN_VOLUME (a minimum volume, a number of jobs)."""
    return int(_arg_type(operations.check_volume, value))


def warn_arg(value: str) -> float:
    return float(_arg_type(operations.check_warn_ratio, value))


def max_rate_arg(value: str) -> Any:
    """Sends per second (operations.check_max_rate), or `none`: no cap."""
    return _arg_type(operations.check_max_rate, value)


def daily_quota_arg(value: str) -> Any:
    """Sends per UTC day (operations.check_daily_quota), or `none`: no quota."""
    return _arg_type(operations.check_daily_quota, value)


def reason_arg(value: str) -> str:
    """Refused rather than cut: the operator sees what the partner will read."""
    return str(_arg_type(operations.check_reason, value))


def port_arg(value: str) -> int:
    """A TCP port, 0 for any free one."""
    try:
        port = int(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is outside [0, 65535]")
    return port
