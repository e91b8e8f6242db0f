"""Structured logging: JSON lines for services, readable lines for people.

Two small processors keep secrets and mail content out of every log line, whatever a
caller passes: bodies are never logged, credentials never leave the process.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

# Keys whose values must never appear in a log line (mail content and credentials).
_REDACTED_KEYS = frozenset(
    {
        "text",
        "html",
        "body",
        "content",
        "raw",
        "password",
        "secret",
        "token",
        "aws_secret_access_key",
        "aws_session_token",
        "secret_access_key",
        "session_token",
        "authorization",
        "credentials",
    }
)


def redact_sensitive(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace values of known-sensitive keys, at top level and one level down."""
    for key in list(event_dict):
        if key.lower() in _REDACTED_KEYS:
            event_dict[key] = "[redacted]"
        elif isinstance(event_dict[key], dict):
            event_dict[key] = {
                k: ("[redacted]" if str(k).lower() in _REDACTED_KEYS else v)
                for k, v in event_dict[key].items()
            }
    return event_dict


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(fmt: str = "auto", level: str = "INFO", stream: Any = None) -> None:
    """Configure structlog once per process.

    fmt "json" for services (one JSON object per line), "console" for a person at a
    terminal, "auto" picks console on a TTY and JSON otherwise.
    """
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(out, "isatty", lambda: False)() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_sensitive,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
