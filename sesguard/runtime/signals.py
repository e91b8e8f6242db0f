"""The signals a service answers: SIGTERM and SIGINT begin its graceful stop, SIGUSR1
logs where every task waits (sesguard.runtime.stacks) and changes nothing.

A stop that outlives the service's stop budget logs `stop_overrun` and the same task
stacks: a service that hangs on its way out (an AWS call that never returns, a lock)
says on what before the orchestrator's SIGKILL, instead of just being killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

from sesguard.logging import get_logger
from sesguard.runtime.consumer import Consumer
from sesguard.runtime.stacks import log_task_stacks

log = get_logger(__name__)

CLEANUP_SECONDS = 10.0  # a service's own clean-up after its consumer stopped


def stop_budget(consumer: Consumer | None) -> float:
    """How long a service's stop may take before it is logged as hanging: its
    consumer's budget (none if it never started one) plus the service's own clean-up
    (the sender's rate-share lease, clients closing)."""
    return (consumer.stop_budget() if consumer is not None else 0.0) + CLEANUP_SECONDS


@contextlib.contextmanager
def service_signals(stop: Callable[[str], None], budget: Callable[[], float]) -> Iterator[None]:
    """Install the handlers on the running loop for the duration of the block. `stop`
    gets the signal's name; `budget()` (seconds) is read at the first stop signal. Where
    signals cannot be handled (not the main thread), the service runs without them."""
    loop = asyncio.get_running_loop()
    watchdogs: list[asyncio.Task[None]] = []

    def stopping(name: str) -> None:
        stop(name)
        if not watchdogs:
            seconds = budget()
            watchdogs.append(loop.create_task(_watch(seconds, name), name="stop-watchdog"))

    installed: list[signal.Signals] = []
    handlers: list[tuple[signal.Signals, Callable[[], object]]] = [
        (signal.SIGTERM, lambda: stopping("SIGTERM")),
        (signal.SIGINT, lambda: stopping("SIGINT")),
        (signal.SIGUSR1, lambda: log_task_stacks("SIGUSR1")),
    ]
    for sig, handler in handlers:
        try:
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread / platform
            log.debug("signal_handler_unavailable", signal=sig.name)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        for task in watchdogs:
            task.cancel()


async def _watch(budget: float, why: str) -> None:
    await asyncio.sleep(budget)
    log.error(
        "stop_overrun",
        alert=True,
        signal=why,
        seconds=round(budget, 1),
        action="the stop waits on the tasks logged as task_stack; SIGKILL is next",
    )
    log_task_stacks("stop overrun")
