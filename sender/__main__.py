"""`python -m sender [--drain]`: the send service as the container runs it."""

from __future__ import annotations

import argparse
import asyncio
import sys

from sender.main import add_arguments, run
from sesguard.logging import configure_logging
from sesguard.settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sender",
        description="sesguard send service: SQS send-jobs -> partner gate -> SES.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging("json")
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"sesguard sender: {exc}", file=sys.stderr)
        return 2
    configure_logging("json", settings.log_level)
    return asyncio.run(run(args, settings))


if __name__ == "__main__":
    sys.exit(main())
