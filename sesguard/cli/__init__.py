"""`sesguard`: the operator's command line.

Exit codes (sesguard.core.exitcodes): 0 done, 1 operational failure (AWS unreachable,
table missing, ...), 2 usage or validation error. `main` maps sesguard's error tree
(sesguard.errors: Refused 2, Failed 1) and the SDK's errors to them in one place; every
refusal is one line on stderr, tracebacks only with --debug.

One module per command group (bootstrap, services, partners, enqueue, dlq, console,
events), each adding its subcommands with `register`; sesguard.cli.parser holds what they
share. The services (`sesguard sender`, `sesguard worker`) are imported lazily
(sesguard.cli.services) so the core never depends on them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from sesguard.aws.clients import not_implemented_message, open_clients
from sesguard.aws.errors import answer_text, error_code
from sesguard.cli import bootstrap, console, dlq, enqueue, events, partners, services
from sesguard.cli.parser import Handler, Parser, top_parser
from sesguard.core.exitcodes import ExitCode
from sesguard.errors import SesguardError
from sesguard.logging import configure_logging
from sesguard.settings import Settings, load_settings

# Each command group adds its subcommands, in the order `sesguard --help` lists them.
REGISTER = (
    bootstrap.register,
    services.register,
    partners.register,
    enqueue.register,
    dlq.register,
    console.register,
    events.register,
)


def build_parser() -> Parser:
    parser, sub = top_parser()
    for register in REGISTER:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    debug = bool(args.debug)
    try:
        if getattr(args, "local", None):
            configure_logging("auto", "DEBUG" if debug else "WARNING")
            return int(args.local(args))
        service = getattr(args, "service", None)
        if service:  # --help and bad options before settings
            services.service_args(service, args.service_args)
        settings = load_settings()
        configure_logging(
            settings.log_format,
            "DEBUG" if debug else (settings.log_level if service else "WARNING"),
        )
        if prepare := getattr(args, "prepare", None):
            prepare(args)  # the command's own checks, before any AWS call
        return asyncio.run(_dispatch(args, settings))
    except SesguardError as exc:  # Refused: 2, Failed: 1 (sesguard.errors)
        return _fail(exc.exit_code, str(exc), debug)
    except NoCredentialsError:
        return _fail(
            ExitCode.FAILED,
            "no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID)",
            debug,
        )
    except ClientError as exc:
        if (unimplemented := not_implemented_message(exc)) is not None:
            return _fail(ExitCode.FAILED, unimplemented, debug)
        hint = ""
        if error_code(exc) in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            hint = ": run `sesguard bootstrap` first"
        return _fail(ExitCode.FAILED, f"{answer_text(exc)}{hint}", debug)
    except (BotoCoreError, OSError) as exc:
        return _fail(ExitCode.FAILED, f"cannot reach AWS: {exc}", debug)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except Exception as exc:  # a bug or an unforeseen failure: still one line, exit 1
        return _fail(ExitCode.FAILED, f"unexpected error: {exc!r} (run with --debug)", debug)


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line; a service's options are parsed by the service itself
    (argparse's REMAINDER does not pass options like --drain through a subparser)."""
    rest = list(argv)
    debug = False
    while rest and rest[0] == "--debug":
        debug = True
        rest.pop(0)
    if rest and rest[0] in services.SERVICES:
        return argparse.Namespace(
            debug=debug, command=rest[0], service=rest[0], service_args=rest[1:]
        )
    return build_parser().parse_args(argv)


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "service", None):
        module, service_ns = services.service_args(args.service, args.service_args)
        wiring = services.service_wiring(args.service, settings)
        return int(await module.run(service_ns, settings, **wiring))
    handler: Handler = args.handler
    async with open_clients(settings.concurrency) as clients:
        return await handler(args, settings, clients)


def _fail(code: int, message: str, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exc()
    print(f"sesguard: {message}", file=sys.stderr)
    return code
