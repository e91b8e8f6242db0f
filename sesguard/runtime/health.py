"""Container health: a heartbeat file the service loop refreshes, and its check.

The consumer runtime calls `touch_heartbeat` every second unless every running handler is
stuck; `check` (`sesguard health`) fails once the beat is older than --max-age. See
docs/design.md, "Heartbeat and health".
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TextIO

from sesguard.core.exitcodes import ExitCode
from sesguard.logging import get_logger

log = get_logger(__name__)

HEALTHY, UNHEALTHY, BAD_USAGE = ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE


def touch_heartbeat(path: str | os.PathLike[str]) -> None:
    """Refresh the heartbeat. Never raises: a service must not die for its health file;
    if the beat cannot be written the check turns unhealthy and the orchestrator acts."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch(exist_ok=True)  # updates the mtime of an existing file
    except OSError as exc:
        log.warning("heartbeat_write_failed", path=str(p), error=str(exc))


def status(
    path: str | os.PathLike[str], max_age_s: float, now: float | None = None
) -> tuple[bool, str]:
    """(fresh?, one-line message). `now` is a time.time() value, for tests."""
    now = time.time() if now is None else now
    try:
        mtime = Path(path).stat().st_mtime
    except FileNotFoundError:
        return False, f"unhealthy: no heartbeat at {path} (service loop not started?)"
    except OSError as exc:
        return False, f"unhealthy: cannot read heartbeat {path}: {exc.strerror or exc}"
    age = max(0.0, now - mtime)  # a beat from the future (clock step) counts as fresh
    if age > max_age_s:
        return False, f"unhealthy: heartbeat {age:.0f}s old (max {max_age_s:g}s) at {path}"
    return True, f"healthy: heartbeat {age:.1f}s old (max {max_age_s:g}s)"


def check(
    path: str | os.PathLike[str],
    max_age_s: float,
    *,
    now: float | None = None,
    out: TextIO | None = None,
) -> int:
    """`sesguard health`: print one line; exit 0 fresh, 1 stale or missing, 2 bad max age."""
    stream = out or sys.stdout
    if not max_age_s > 0:  # also rejects NaN
        print(f"invalid max age {max_age_s!r}: must be a positive number of seconds", file=stream)
        return BAD_USAGE
    fresh, message = status(path, max_age_s, now)
    print(message, file=stream)
    return HEALTHY if fresh else UNHEALTHY
