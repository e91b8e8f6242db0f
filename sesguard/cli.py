"""`sesguard`: the operator's command line.

Exit codes: 0 done, 1 operational failure (AWS unreachable, table missing, ...),
2 usage or validation error. `main` maps sesguard's error tree (sesguard.errors: Refused 2,
Failed 1) and the SDK's errors to them in one place; every refusal is one line on stderr,
tracebacks only with --debug. The services (`sesguard sender`, `sesguard worker`) are
imported lazily so the core never depends on them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import orjson
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from sesguard import __version__
from sesguard.aws.clients import Clients, not_implemented_message, open_clients
from sesguard.aws.errors import answer_text, error_code
from sesguard.aws.store import PartnerStore
from sesguard.core.exitcodes import ExitCode
from sesguard.core.jobs import JobError, job_schema, parse_job
from sesguard.core.partners import MAX_MIN_VOLUME, MAX_REASON_CHARS, MIN_RATE, utcnow
from sesguard.errors import Failed, Refused, SesguardError
from sesguard.logging import configure_logging
from sesguard.ops import operations
from sesguard.settings import Settings, load_settings

if TYPE_CHECKING:
    from sesguard.local.demo import Services

# Short names for this module; the codes themselves are defined in sesguard.core.exitcodes.
EXIT_OK, EXIT_OPERATIONAL, EXIT_USAGE = ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE


# ---- argument types: each refusal names what is wrong --------------------------------


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


def _reason_filter(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("give some text of the reason, e.g. 'possibly sent'")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"sesguard: error: {message} (see `{self.prog} --help`)\n")


# ---- command implementations --------------------------------------------------------


async def cmd_bootstrap(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    from sesguard.ops.bootstrap import bootstrap

    identities = list(args.identity or [])
    report = await bootstrap(clients, settings, identities)
    for resource, outcome, detail in report.steps:
        print(f"{outcome:8} {resource}" + (f"  ({detail})" if detail else ""))
    print(
        "bootstrap: " + ("resources created or updated" if report.changed else "nothing to change")
    )
    return EXIT_OK


async def cmd_partners_add(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    result = await operations.add_partner(
        clients,
        settings,
        args.partner_id,
        args.contact,
        bounce_limit=args.bounce_limit,
        complaint_limit=args.complaint_limit,
        min_volume=args.min_volume,
        warn_ratio=args.warn_ratio,
        tenant=args.tenant,
    )
    _print_lines(result.lines())
    return EXIT_OK


async def cmd_partners_set(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    result = await operations.set_partner(
        clients,
        settings,
        args.partner_id,
        contact=args.contact,
        bounce_limit=args.bounce_limit,
        complaint_limit=args.complaint_limit,
        min_volume=args.min_volume,
        warn_ratio=args.warn_ratio,
        tenant=args.tenant,
    )
    _print_lines(result.lines())
    return EXIT_OK


async def cmd_partners_pause(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    result = await operations.pause(
        clients, settings, args.partner_id, args.reason, notify=not args.no_notify
    )
    _print_lines(result.lines())
    return EXIT_OK


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
    return EXIT_OK


def _print_lines(lines: Sequence[str]) -> None:
    for line in lines:
        print(line)


async def cmd_partners_show(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    from sesguard.ops.report import partner_text

    store = PartnerStore.from_settings(clients.dynamodb, settings)
    report = await operations.partner_report(store, settings, args.partner_id)
    if report is None:
        raise operations.NoSuchPartner(
            f"no partner {args.partner_id} (and no traffic under that id)"
        )
    print(
        orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
        if args.json
        else partner_text(report)
    )
    return EXIT_OK


async def cmd_partners_list(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    from sesguard.ops.report import partners_table

    rows = await operations.partner_reports(
        PartnerStore.from_settings(clients.dynamodb, settings), settings
    )
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
    elif rows:
        print(partners_table(rows))
    else:
        print("no partners yet: add one with `sesguard partners add ID --contact EMAIL`")
    return EXIT_OK


async def cmd_enqueue(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    from sesguard.aws.enqueue import Enqueuer

    jobs = args.jobs
    enqueuer = await Enqueuer.for_queue(clients.sqs, settings.send_queue)
    ids = await enqueuer.send(jobs)
    for job_id in ids:
        print(job_id)
    print(f"enqueued {len(ids)} job{'s' if len(ids) != 1 else ''}", file=sys.stderr)
    return EXIT_OK


def _jobs_from_args(args: argparse.Namespace) -> list[Any]:
    """Validate every job before the first AWS call: a bad file sends nothing."""
    from sesguard.aws.enqueue import read_jobs_file

    try:
        if args.file:
            if args.file == "-":
                return read_jobs_file(sys.stdin)
            try:
                with open(args.file, encoding="utf-8") as fh:
                    return read_jobs_file(fh)
            except OSError as exc:
                raise Refused(f"cannot read {args.file}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise Refused(f"{args.file} is not UTF-8 text") from None
        given = {
            "--partner": args.partner,
            "--from": args.from_,
            "--to": args.to,
            "--subject": args.subject,
        }
        missing = [flag for flag, value in given.items() if not value]
        if missing:
            raise Refused(f"missing {', '.join(missing)} (or give --file)")
        if not (args.text or args.html):
            raise Refused("give --text or --html (or both)")
        job: dict[str, Any] = {
            "partner_id": args.partner,
            "from": args.from_,
            "to": args.to,
            "subject": args.subject,
        }
        for name in ("cc", "bcc", "reply_to", "text", "html", "job_id"):
            if getattr(args, name):
                job[name] = getattr(args, name)
        if args.tag:
            job["tags"] = dict(_split_tag(t) for t in args.tag)
        return [parse_job(job)]
    except JobError as exc:
        raise Refused(f"invalid job: {exc}") from None


def _split_tag(value: str) -> tuple[str, str]:
    name, sep, tag_value = value.partition("=")
    if not sep:
        raise Refused(f"--tag {value!r}: use NAME=VALUE")
    return name, tag_value


async def cmd_dlq(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    """List a dead-letter queue without consuming it (sesguard.ops.dlq)."""
    from sesguard.ops import dlq

    queue = settings.events_queue if args.events else settings.send_queue
    url = (await clients.sqs.get_queue_url(QueueName=f"{queue}-dlq"))["QueueUrl"]
    entries = await dlq.list_dlq(clients.sqs, url, events=args.events, limit=args.limit)
    if args.json:
        print(orjson.dumps(entries, option=orjson.OPT_INDENT_2).decode())
    else:
        print(dlq.listing_text(entries, events=args.events))
        if len(entries) >= args.limit:
            print(f"(the first {args.limit}; --limit N shows more)", file=sys.stderr)
    return EXIT_OK


async def cmd_dlq_redrive(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    """Re-enqueue what is safe from the send DLQ (sesguard.ops.dlq)."""
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
        print(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(report.text())
    if report.failed:
        raise Failed(
            f"{report.failed} jobs could not be settled and stay in the DLQ: run the redrive"
            " again (nothing was sent twice)"
        )
    return EXIT_OK


async def cmd_console(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    from sesguard.ops.console.server import serve

    return await serve(clients, settings, args.port)


def cmd_job_schema(_args: argparse.Namespace) -> int:
    print(orjson.dumps(job_schema(), option=orjson.OPT_INDENT_2).decode())
    return EXIT_OK


def cmd_events_schema(args: argparse.Namespace) -> int:
    """One lifecycle event type's detail schema, or all of them keyed by detail type."""
    from sesguard.aws import lifecycle

    if args.type is None:
        out: dict[str, Any] = lifecycle.schemas()
    else:  # an unknown type is refused
        out = lifecycle.schema(lifecycle.parse_detail_type(args.type))
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    return EXIT_OK


async def cmd_events_history(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    from datetime import timedelta

    from sesguard.aws.lifecycle import partner_history

    since = utcnow() - timedelta(hours=args.hours)
    events = await partner_history(clients.dynamodb, settings.table, args.partner_id, since)
    if args.json:
        print(orjson.dumps([e.detail for e in events], option=orjson.OPT_INDENT_2).decode())
    elif not events:
        print(f"no lifecycle events of {args.partner_id} in the last {args.hours} hours")
    for event in [] if args.json else events:
        print(f"{event.occurred_at:%Y-%m-%d %H:%M:%S}Z  {event.detail_type:22}  {_summary(event)}")
    return EXIT_OK


def _summary(event: Any) -> str:
    d = event.detail
    parts = [f"by {d['actor']}"]
    if "reason" in d:
        parts.append(d["reason"])
    if "count" in d:
        parts.append(f"{d['count']} jobs")
    if "limits" in d:
        parts.append(" ".join(f"{k}={v:g}" for k, v in d["limits"].items()))
    return "  ".join(parts)


def cmd_health(args: argparse.Namespace) -> int:
    from sesguard.runtime import health

    settings = load_settings()
    return int(health.check(settings.heartbeat_file, args.max_age))


def cmd_demo(args: argparse.Namespace) -> int:
    from sesguard.local import demo

    return int(demo.main(args, demo_services()))


def demo_services() -> Services:
    """The sender and worker services, as the demo runs them (`sesguard.local.demo.Services`).

    The CLI is the one module of sesguard that imports `sender` and `worker`: the layers
    below it receive the services instead (tests/test_layout.py checks it)."""
    from sender.service import SenderService
    from sesguard.local.demo import Services
    from worker.service import WorkerService

    return Services(
        drain_sender=lambda clients, settings: SenderService(clients, settings, drain=True).run(),
        worker=WorkerService,
    )


def service_module(name: str) -> Any:
    """The service's `main` module (its options and its entry point), imported only when run."""
    if name == "sender":
        from sender import main as sender_main

        return sender_main
    if name == "worker":
        from worker import main as worker_main

        return worker_main
    raise ValueError(f"no service named {name!r}")


def service_args(name: str, argv: Sequence[str]) -> tuple[Any, argparse.Namespace]:
    """Parse `sesguard sender|worker ...` with the service's own options."""
    module = service_module(name)
    parser = _Parser(prog=f"sesguard {name}", description=f"Run the {name} service.")
    module.add_arguments(parser)
    return module, parser.parse_args(list(argv))


# ---- parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sesguard", description="Per-partner sending-reputation guard for Amazon SES.")
    p.add_argument("--version", action="version", version=f"sesguard {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    b = sub.add_parser("bootstrap", help="create all resources (idempotent)")
    b.add_argument(
        "--identity",
        action="append",
        metavar="DOMAIN_OR_ADDRESS",
        help="SES identity to create (repeatable)",
    )
    b.set_defaults(handler=cmd_bootstrap)

    for name in ("sender", "worker"):
        # The service parses its own options (same as `python -m sender`): imported only
        # when run, so the core never depends on the services.
        sp = sub.add_parser(name, help=f"run the {name} service", add_help=False)
        sp.add_argument("service_args", nargs=argparse.REMAINDER)
        sp.set_defaults(service=name)

    parts = sub.add_parser("partners", help="manage partners").add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=_Parser
    )

    def limit_options(sp: argparse.ArgumentParser) -> None:
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
            "--tenant",
            type=partner_id_arg,
            metavar="NAME",
            help="SES tenant to send as (with SESGUARD_USE_TENANTS)",
        )

    a = parts.add_parser("add", help="register a partner")
    a.add_argument("partner_id", type=partner_id_arg, metavar="ID")
    a.add_argument("--contact", type=email_arg, required=True, metavar="EMAIL")
    limit_options(a)
    a.set_defaults(handler=cmd_partners_add)

    s = parts.add_parser("set", help="change a partner's contact or limits")
    s.add_argument("partner_id", type=partner_id_arg, metavar="ID")
    s.add_argument("--contact", type=email_arg, metavar="EMAIL")
    limit_options(s)
    s.set_defaults(handler=cmd_partners_set)

    pa = parts.add_parser("pause", help="pause a partner (its jobs are held)")
    pa.add_argument("partner_id", type=partner_id_arg, metavar="ID")
    pa.add_argument(
        "--reason",
        type=reason_arg,
        default="paused by operator",
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

    e = sub.add_parser("enqueue", help="put send jobs on the send queue")
    e.add_argument("--file", metavar="PATH", help="JSON lines, one job per line ('-' for stdin)")
    e.add_argument("--partner", type=partner_id_arg, metavar="ID")
    e.add_argument("--from", dest="from_", metavar="ADDR")
    e.add_argument("--to", action="append", metavar="ADDR")
    e.add_argument("--cc", action="append", metavar="ADDR")
    e.add_argument("--bcc", action="append", metavar="ADDR")
    e.add_argument("--reply-to", action="append", metavar="ADDR")
    e.add_argument("--subject", metavar="S")
    e.add_argument("--text", metavar="T")
    e.add_argument("--html", metavar="H")
    e.add_argument("--tag", action="append", metavar="NAME=VALUE")
    e.add_argument("--job-id", metavar="X")
    e.set_defaults(handler=cmd_enqueue)

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
    dq_sub = dq.add_subparsers(dest="dlq_action", metavar="ACTION", parser_class=_Parser)
    rd = dq_sub.add_parser(
        "redrive",
        help="re-enqueue the send DLQ's jobs that are safe to send (never one twice)",
        description=(
            "Jobs SES confirms sent are dropped; possibly-sent jobs with no Send event"
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

    js = sub.add_parser("job-schema", help="print the send job's JSON Schema")
    js.set_defaults(local=cmd_job_schema)

    ev = sub.add_parser("events", help="partner lifecycle events (EventBridge)").add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=_Parser
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
    eh.add_argument("--json", action="store_true", help="the events' details as JSON")
    eh.set_defaults(handler=cmd_events_history)

    h = sub.add_parser("health", help="exit 0 if this container's service loop is alive")
    h.add_argument("--max-age", type=float, default=90.0, metavar="SECONDS")
    h.set_defaults(local=cmd_health)

    d = sub.add_parser("demo", help="the whole loop on an embedded AWS stand-in (no Docker)")
    d.add_argument("--jobs", type=volume_arg, default=300, metavar="N", help="jobs to send")
    d.add_argument(
        "--keep-running", action="store_true", help="leave the embedded endpoint up after the demo"
    )
    d.set_defaults(local=cmd_demo)
    return p


Handler = Callable[[argparse.Namespace, Settings, Clients], Awaitable[int]]


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "service", None):
        module, service_ns = service_args(args.service, args.service_args)
        return int(await module.run(service_ns, settings))
    handler: Handler = args.handler
    async with open_clients(settings.concurrency) as clients:
        return await handler(args, settings, clients)


SERVICES = ("sender", "worker")


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line; a service's options are parsed by the service itself
    (argparse's REMAINDER does not pass options like --drain through a subparser)."""
    rest = list(argv)
    debug = False
    while rest and rest[0] == "--debug":
        debug = True
        rest.pop(0)
    if rest and rest[0] in SERVICES:
        return argparse.Namespace(
            debug=debug, command=rest[0], service=rest[0], service_args=rest[1:]
        )
    return build_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    debug = bool(args.debug)
    try:
        if getattr(args, "local", None):
            configure_logging("auto", "DEBUG" if debug else "WARNING")
            return int(args.local(args))
        service = getattr(args, "service", None)
        if service:
            service_args(service, args.service_args)  # --help and bad options before settings
        settings = load_settings()
        configure_logging(
            settings.log_format,
            "DEBUG" if debug else (settings.log_level if service else "WARNING"),
        )
        if args.command == "enqueue":
            args.jobs = _jobs_from_args(args)
        return asyncio.run(_dispatch(args, settings))
    except SesguardError as exc:  # Refused: 2, Failed: 1 (sesguard.errors)
        return _fail(exc.exit_code, str(exc), debug)
    except NoCredentialsError:
        return _fail(
            EXIT_OPERATIONAL,
            "no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID)",
            debug,
        )
    except ClientError as exc:
        if (unimplemented := not_implemented_message(exc)) is not None:
            return _fail(EXIT_OPERATIONAL, unimplemented, debug)
        hint = ""
        if error_code(exc) in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            hint = ": run `sesguard bootstrap` first"
        return _fail(
            EXIT_OPERATIONAL,
            f"{answer_text(exc)}{hint}",
            debug,
        )
    except (BotoCoreError, OSError) as exc:
        return _fail(EXIT_OPERATIONAL, f"cannot reach AWS: {exc}", debug)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except Exception as exc:  # a bug or an unforeseen failure: still one line, exit 1
        return _fail(EXIT_OPERATIONAL, f"unexpected error: {exc!r} (run with --debug)", debug)


def _fail(code: int, message: str, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exc()
    print(f"sesguard: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
