"""Where tasks wait (sesguard.runtime.stacks) and the SIGUSR1 that logs it
(sesguard.runtime.signals), in this process."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import structlog

from sesguard.runtime.signals import service_signals
from sesguard.runtime.stacks import await_chain, log_task_stacks


async def inner(event: asyncio.Event) -> None:
    await event.wait()


async def outer(event: asyncio.Event) -> None:
    await inner(event)


async def test_the_chain_follows_every_await_down_to_the_future() -> None:
    event = asyncio.Event()
    task = asyncio.create_task(outer(event), name="waiter")
    await asyncio.sleep(0)
    chain = await_chain(task)
    names = [f.rsplit(" ", 1)[-1] for f in chain]
    assert names[:2] == ["outer", "inner"]
    assert "wait" in names  # asyncio.Event.wait, the coroutine it is suspended in
    assert chain[-1] == "waits on a future"
    assert all("test_stacks.py:" in f for f in chain[:2])
    event.set()
    await task


async def test_sigusr1_logs_every_task_and_changes_nothing() -> None:
    stops: list[str] = []
    event = asyncio.Event()
    task = asyncio.create_task(outer(event), name="the-waiter")
    with structlog.testing.capture_logs() as logs, service_signals(stops.append, lambda: 60.0):
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(100):
            if any(e["event"] == "task_stack" for e in logs):
                break
            await asyncio.sleep(0.01)
    lines: list[dict[str, Any]] = [e for e in logs if e["event"] == "task_stack"]
    assert {e["reason"] for e in lines} == {"SIGUSR1"}
    waiter = [e for e in lines if e["task"] == "the-waiter"]
    assert waiter and any("inner" in f for f in waiter[0]["frames"])
    assert stops == [] and not task.done()  # nothing stopped
    assert log_task_stacks("again") >= 2
    event.set()
    await task


async def test_sigterm_begins_the_stop_with_the_signal_name() -> None:
    stops: list[str] = []
    with service_signals(stops.append, lambda: 60.0):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):
            if stops:
                break
            await asyncio.sleep(0.01)
    assert stops == ["SIGTERM"]
    # once the block is left, the default handlers are back
    assert signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, signal.default_int_handler)


async def test_a_stop_that_outlives_its_budget_logs_what_it_waits_on() -> None:
    """SIGTERM starts a watchdog: past the service's stop budget it logs stop_overrun
    and every task's stack, the one holding the stop up among them."""
    stuck = asyncio.Event()
    holder = asyncio.create_task(outer(stuck), name="the-holdup")
    with structlog.testing.capture_logs() as logs, service_signals(lambda _s: None, lambda: 0.2):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(300):
            if any(e["event"] == "stop_overrun" for e in logs):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
    overrun = [e for e in logs if e["event"] == "stop_overrun"]
    assert overrun and overrun[0]["signal"] == "SIGTERM" and overrun[0]["alert"] is True
    held = [e for e in logs if e["event"] == "task_stack" and e["task"] == "the-holdup"]
    assert held and held[0]["reason"] == "stop overrun"
    assert any("inner" in f for f in held[0]["frames"])
    stuck.set()
    await holder


async def test_a_stop_within_its_budget_logs_nothing() -> None:
    with structlog.testing.capture_logs() as logs:
        with service_signals(lambda _s: None, lambda: 0.2):
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0.05)  # the stop ends before its budget
        await asyncio.sleep(0.4)  # the watchdog was cancelled with the block
    assert [e for e in logs if e["event"] in ("stop_overrun", "task_stack")] == []
