"""The I/O edge of the circuit breakers: watching dependency clients, probing, alerting.

Each `Dependency` is a client the handlers call (SES, DynamoDB, S3) plus one cheap probe
call; its botocore `after-call` events feed the dependency's `Breaker`, so every call any
handler makes is judged without the handler doing anything. See docs/design.md,
"Circuit breakers".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sesguard.aws.errors import Health, describe, judge_answer, judge_exception
from sesguard.logging import get_logger
from sesguard.runtime.breaker import Breaker, Change
from sesguard.runtime.delivery import current_delivery

log = get_logger(__name__)


@dataclass(frozen=True)
class Dependency:
    name: str  # "ses", "dynamodb", "s3": the breaker's name in logs and metrics
    client: Any  # an aiobotocore client; its events are watched
    probe: Callable[[], Awaitable[object]]  # one cheap call; any answer means "up"
    probe_call: str = ""  # what the probe asks, for the log ("GetAccount")


class Guard:
    """Breakers for one consumer's dependencies."""

    def __init__(
        self,
        owner: str,
        dependencies: Sequence[Dependency],
        *,
        on_open: Callable[[str, str], None],
        on_trial: Callable[[str], None],
        on_close: Callable[[str], None],
        threshold: int = 5,
        probe_first: float = 1.0,
        probe_cap: float = 30.0,
        clock: Callable[[], float],
    ) -> None:
        self.owner = owner
        self.dependencies = {d.name: d for d in dependencies}
        self.breakers = {
            d.name: Breaker(d.name, threshold, probe_first, probe_cap) for d in dependencies
        }
        self.on_open = on_open
        self.on_trial = on_trial
        self.on_close = on_close
        self.clock = clock
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._hooks: list[tuple[Any, str, str]] = []

    @property
    def open(self) -> list[str]:
        """Dependencies whose breaker is not closed (open or half-open)."""
        return sorted(name for name, b in self.breakers.items() if not b.is_closed)

    def attach(self) -> None:
        for dep in self.dependencies.values():
            for event, handler in (
                ("after-call", self._after_call(dep.name)),
                ("after-call-error", self._after_error(dep.name)),
            ):
                uid = f"sesguard-guard-{id(self)}-{dep.name}-{event}"
                dep.client.meta.events.register(event, handler, unique_id=uid)
                self._hooks.append((dep.client, event, uid))

    async def close(self) -> None:
        for client, event, uid in self._hooks:
            client.meta.events.unregister(event, unique_id=uid)
        self._hooks.clear()
        probes = list(self._probes.values())
        for task in probes:
            task.cancel()
        for task in probes:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._probes.clear()

    # ---- observing -------------------------------------------------------------------

    def _after_call(self, name: str) -> Callable[..., None]:
        def hook(http_response: Any = None, parsed: Any = None, **_: Any) -> None:
            status = int(getattr(http_response, "status_code", 0) or 0)
            error = parsed.get("Error", {}) if isinstance(parsed, dict) else {}
            error = error if isinstance(error, dict) else {}
            code, message = str(error.get("Code", "")), str(error.get("Message", ""))[:300]
            described = f"{code or 'HTTP'} ({status})" + (f": {message}" if message else "")
            self.observe(name, judge_answer(status, code), described)

        return hook

    def _after_error(self, name: str) -> Callable[..., None]:
        def hook(exception: BaseException | None = None, **_: Any) -> None:
            if exception is not None:
                self.observe(name, judge_exception(exception), describe(exception))

        return hook

    def observe(self, name: str, health: Health, error: str = "") -> None:
        """One call's outcome for dependency `name` (the hooks call this)."""
        delivery = current_delivery()
        if delivery is not None:
            delivery.progress()  # the call came back, whatever it said
        breaker = self.breakers[name]
        change = breaker.observe(health, self.clock(), error)
        if change is Change.OPENED:
            self._opened(breaker)
        elif change is Change.REOPENED:
            self._reopened(breaker)
        elif change is Change.CLOSED:
            self._closed(breaker)

    # ---- open, probe, close ----------------------------------------------------------

    def _opened(self, breaker: Breaker) -> None:
        dep = self.dependencies[breaker.name]
        log.error(
            "dependency_unavailable",
            alert=True,
            service=self.owner,
            dependency=breaker.name,
            consecutive_failures=breaker.failures,
            error=breaker.last_error,
            action=(
                "stopped receiving; messages in hand go back to the queue with a delay;"
                f" probing {dep.probe_call or 'the dependency'} until it answers"
            ),
        )
        self._suspend_and_probe(breaker)

    def _reopened(self, breaker: Breaker) -> None:
        log.info(
            "dependency_trial_failed",
            service=self.owner,
            dependency=breaker.name,
            error=breaker.last_error,
            next_probe_seconds=round(breaker.probe_delay(), 1),
        )
        self._suspend_and_probe(breaker)

    def _suspend_and_probe(self, breaker: Breaker) -> None:
        self.on_open(breaker.name, f"{breaker.name} unavailable: {breaker.last_error}")
        if breaker.name not in self._probes:
            self._probes[breaker.name] = asyncio.create_task(
                self._probe_while_open(breaker), name=f"probe-{breaker.name}"
            )

    def _closed(self, breaker: Breaker) -> None:
        now = self.clock()
        log.warning(
            "dependency_available",
            alert=True,
            service=self.owner,
            dependency=breaker.name,
            unavailable_seconds=round(now - (breaker.opened_at or now), 1),
            action="receiving again",
        )
        self.on_close(breaker.name)

    async def _probe_while_open(self, breaker: Breaker) -> None:
        """Probe with backoff until a probe answers; then trials decide (half-open)."""
        dep = self.dependencies[breaker.name]
        try:
            while breaker.is_open:
                await asyncio.sleep(breaker.probe_delay())
                try:
                    await dep.probe()
                    health, error = Health.UP, ""
                except Exception as exc:
                    health, error = judge_exception(exc), describe(exc)
                if breaker.probed(health, self.clock(), error):
                    log.info(
                        "dependency_probe_answered",
                        service=self.owner,
                        dependency=breaker.name,
                        action="one message at a time until a call succeeds",
                    )
                    self.on_trial(breaker.name)
                    return
                log.info(
                    "dependency_probe_failed",
                    dependency=breaker.name,
                    error=error,
                    next_probe_seconds=round(breaker.probe_delay(), 1),
                )
        finally:
            self._probes.pop(breaker.name, None)
