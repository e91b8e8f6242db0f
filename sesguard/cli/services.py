"""`sesguard sender|worker|health|demo`: run the services, check one's heartbeat, run the
whole loop locally.

This is the one module of sesguard that imports `sender` and `worker`, lazily, when one
is run: the layers below receive the services instead (tests/test_layout.py checks it).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sesguard.cli.parser import Parser, Subparsers, volume_arg
from sesguard.settings import Settings

if TYPE_CHECKING:
    from sesguard.local.demo import Services

SERVICES = ("sender", "worker")


def register(sub: Subparsers) -> None:
    for name in SERVICES:
        # The service parses its own options (same as `python -m sender`): imported only
        # when run, so the core never depends on the services.
        sp = sub.add_parser(name, help=f"run the {name} service", add_help=False)
        sp.add_argument("service_args", nargs=argparse.REMAINDER)
        sp.set_defaults(service=name)

    h = sub.add_parser("health", help="exit 0 if this container's service loop is alive")
    h.add_argument("--max-age", type=float, default=90.0, metavar="SECONDS")
    h.set_defaults(local=cmd_health)

    d = sub.add_parser("demo", help="the whole loop on an embedded AWS stand-in (no Docker)")
    d.add_argument("--jobs", type=volume_arg, default=300, metavar="N", help="jobs to send")
    d.add_argument(
        "--keep-running", action="store_true", help="leave the embedded endpoint up after the demo"
    )
    d.set_defaults(local=cmd_demo)


def service_module(name: str) -> Any:
    """The service's `main` module (its options and its entry point), imported only when run."""
    if name == "sender":
        from sender import main as sender_main

        return sender_main
    if name == "worker":
        from worker import main as worker_main

        return worker_main
    raise ValueError(f"no service named {name!r}")


def service_wiring(name: str, settings: Settings) -> dict[str, Any]:
    """What local runs inject into a service: with SESGUARD_SIMULATE_EVENTS (compose,
    the fault stack), the sender's after-send hook publishes the events SES would."""
    if name != "sender" or not settings.simulate_events:
        return {}
    from sesguard.local.simulator import simulated_events

    return {"after_send": simulated_events}


def service_args(name: str, argv: Sequence[str]) -> tuple[Any, argparse.Namespace]:
    """Parse `sesguard sender|worker ...` with the service's own options."""
    module = service_module(name)
    parser = Parser(prog=f"sesguard {name}", description=f"Run the {name} service.")
    module.add_arguments(parser)
    return module, parser.parse_args(list(argv))


def cmd_health(args: argparse.Namespace) -> int:
    from sesguard.runtime import health
    from sesguard.settings import load_settings

    settings = load_settings()
    return int(health.check(settings.heartbeat_file, args.max_age))


def cmd_demo(args: argparse.Namespace) -> int:
    from sesguard.local import demo

    return int(demo.main(args, demo_services()))


def demo_services() -> Services:
    """The sender and worker services, as the demo runs them (`sesguard.local.demo.Services`)."""
    from sender.service import SenderService
    from sesguard.local.demo import Services
    from sesguard.local.simulator import after_send_for
    from worker.service import WorkerService

    return Services(
        drain_sender=lambda clients, settings: SenderService(
            clients, settings, drain=True, after_send=after_send_for(settings)
        ).run(),
        worker=WorkerService,
    )
