"""Where every asyncio task of this process is waiting, as log lines.

Logged when a stop overruns its budget, on SIGUSR1 and when the receive loop stalls, so a
hung service says on what before it is killed. `Task.get_stack()` gives one frame for a
suspended coroutine; the chain of awaits (`cr_await`) is followed here instead, outermost
first. See docs/design.md, "Stop".
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sesguard.logging import get_logger

log = get_logger(__name__)

MAX_TASKS = 100  # lines per dump
MAX_FRAMES = 12  # innermost frames kept per task
MAX_DEPTH = 64  # awaits followed per task


def _where(frame: Any) -> str:
    code = frame.f_code
    path = Path(code.co_filename)
    short = "/".join(path.parts[-2:])
    return f"{short}:{frame.f_lineno} {code.co_name}"


def await_chain(task: asyncio.Task[Any]) -> list[str]:
    """The frames of `task`'s coroutine and of everything it awaits, outermost first,
    ending with what it waits on when that is not a coroutine (a future or task)."""
    frames: list[str] = []
    obj: Any = task.get_coro()
    for _ in range(MAX_DEPTH):
        frame = (
            getattr(obj, "cr_frame", None)
            or getattr(obj, "ag_frame", None)
            or getattr(obj, "gi_frame", None)
        )
        if frame is None:
            if obj is not None and not frames:
                frames.append(type(obj).__name__)
            break
        frames.append(_where(frame))
        nxt = (
            getattr(obj, "cr_await", None)
            or getattr(obj, "ag_await", None)
            or getattr(obj, "gi_yieldfrom", None)
        )
        if nxt is None:
            break
        if not any(hasattr(nxt, a) for a in ("cr_frame", "ag_frame", "gi_frame")):
            kind = type(nxt).__name__  # `await fut` and `await task` both show FutureIter
            frames.append("waits on a future" if kind == "FutureIter" else f"waits on {kind}")
            break
        obj = nxt
    return frames[-MAX_FRAMES:]


def log_task_stacks(reason: str) -> int:
    """One `task_stack` line per pending task (at most MAX_TASKS); returns how many."""
    tasks = [t for t in asyncio.all_tasks() if not t.done()]
    tasks.sort(key=lambda t: t.get_name())
    for task in tasks[:MAX_TASKS]:
        log.warning("task_stack", reason=reason, task=task.get_name(), frames=await_chain(task))
    if len(tasks) > MAX_TASKS:
        log.warning("task_stack_truncated", reason=reason, tasks=len(tasks), logged=MAX_TASKS)
    return len(tasks)
