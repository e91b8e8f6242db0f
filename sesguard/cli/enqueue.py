"""`sesguard enqueue`: put send jobs on the send queue, every one checked before the first."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sesguard.aws.clients import Clients
from sesguard.cli.parser import Subparsers, partner_id_arg
from sesguard.core.exitcodes import ExitCode
from sesguard.core.jobs import JobError, SendJob, parse_job
from sesguard.errors import Refused
from sesguard.settings import Settings


def register(sub: Subparsers) -> None:
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
    e.set_defaults(handler=cmd_enqueue, prepare=read_jobs)


def read_jobs(args: argparse.Namespace) -> None:
    """Validate every job before the first AWS call (main runs it before opening clients):
    a bad file sends nothing."""
    args.jobs = _jobs_from_args(args)


async def cmd_enqueue(args: argparse.Namespace, settings: Settings, clients: Clients) -> int:
    from sesguard.aws.enqueue import Enqueuer

    enqueuer = await Enqueuer.for_queue(clients.sqs, settings.send_queue)
    ids = await enqueuer.send(args.jobs)
    for job_id in ids:
        print(job_id)
    print(f"enqueued {len(ids)} job{'s' if len(ids) != 1 else ''}", file=sys.stderr)
    return ExitCode.OK


def _jobs_from_args(args: argparse.Namespace) -> list[SendJob]:
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
