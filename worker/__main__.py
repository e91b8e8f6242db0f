"""`python -m worker`: the event service's container entry point."""

from __future__ import annotations

import argparse
import asyncio
import sys

from sesguard.logging import configure_logging
from sesguard.settings import SettingsError, load_settings
from worker.main import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description="sesguard event service: SES events from S3 -> per-partner counters -> policy",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging("json")
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if settings.log_format != "auto" or settings.log_level != "INFO":
        fmt = "json" if settings.log_format == "auto" else settings.log_format
        configure_logging(fmt, settings.log_level)
    return asyncio.run(run(args, settings))


if __name__ == "__main__":
    sys.exit(main())
