"""Every exit code sesguard's commands and services return, in one place.

The numbers are a contract with whoever runs us (ECS, scripts, `docker compose run`), so
they are named once here and nowhere else.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    """Done: the command succeeded, a service stopped cleanly, a --drain emptied its queue."""

    FAILED = 1
    """Operational failure: AWS unreachable, a queue or table missing (a service could not
    start), a --drain that could not finish (a dependency stayed down past the outage
    tolerance), or `sesguard health` finding the heartbeat stale."""

    USAGE = 2
    """Usage or validation error: a bad option, setting, partner id, e-mail or job."""

    ACCOUNT_PAUSED = 3
    """`sesguard sender --drain` ended because SES paused sending for the whole account;
    every job not yet sent is back in the queue."""

    INTERRUPTED = 130
    """Ctrl-C at the operator's command line (the shell's convention, 128 + SIGINT)."""
