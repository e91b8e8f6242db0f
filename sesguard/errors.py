"""sesguard's one error tree: every exception we raise is a `Refused` or a `Failed`.

The two branches are the two answers an operator needs: change what you asked
(`Refused`, exit 2) or look at what is around you (`Failed`, exit 1). The CLI maps the
tree in one place (`sesguard.cli.main`) by `exit_code`; the console maps the same two
branches to HTTP 400 and 502. A new exception derives from one of the branches
(tests/test_errors.py fails on a bare `class X(Exception)`).

In the lowest layer with sesguard.core, whose checks raise `Refused`.
"""

from __future__ import annotations

from typing import ClassVar

from sesguard.core.exitcodes import ExitCode


class SesguardError(Exception):
    """The root: one `except` for everything sesguard raises on purpose."""

    exit_code: ClassVar[ExitCode] = ExitCode.FAILED


class Refused(SesguardError):
    """The request or its input is wrong (a bad option, setting, id, e-mail, job, message);
    retrying it unchanged fails the same way. The message is one line naming what is wrong."""

    exit_code = ExitCode.USAGE


class Failed(SesguardError):
    """Something outside the request failed (AWS unreachable, a resource missing, a write
    that did not take); the same request may succeed later."""

    exit_code = ExitCode.FAILED
