"""Fold an object's events into per-(partner, hour) counters before any write (pure).

DynamoDB writes then scale with the partner-hours of an object, not with its events.
The per-object statistics are what the worker logs and measures: events counted,
records ignored by kind, malformed records (with their offsets), untagged events,
records of the wrong pipeline, simulator recipients kept out of the rates.

Mailbox-simulator recipients are decided here, at counting time: by default each goes to
the `simulator_` twin of its counter (SES leaves simulator mail out of the account's
rates, and so do we); with `count_simulator` they count like real mail (README,
"Reputation semantics").

The jobs the object's Send events name are collected in `sends`, for the worker to
confirm (worker/confirm.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sesguard.partners import COUNTERS, SIMULATOR_PREFIX, Counters
from worker.classify import Ignored, NotAnEvent, SentJob, WrongPipeline, classify, sent_job
from worker.records import Malformed, RecordStream

CellKey = tuple[str, datetime]  # (partner_id, hour)
_SIMULATOR_TWIN = {name: SIMULATOR_PREFIX + name for name in COUNTERS}


@dataclass
class ObjectStats:
    records: int = 0  # JSON objects read
    events: int = 0  # SES events counted into some counter
    recipients: int = 0  # sum of the amounts counted (per-recipient semantics)
    ignored: Counter[str] = field(default_factory=Counter)  # by kind
    untagged: int = 0  # events without a partner tag (counted as UNATTRIBUTED)
    invalid_tags: int = 0  # events whose partner tag is not a valid id (UNATTRIBUTED)
    # SNS identity notifications: records of the wrong pipeline, in no partner's counters
    wrong_pipeline: int = 0
    simulator: int = 0  # simulator recipients counted apart, out of the rates
    malformed: list[Malformed] = field(default_factory=list)

    @property
    def malformed_count(self) -> int:
        return len(self.malformed)

    @property
    def ignored_count(self) -> int:
        return sum(self.ignored.values())


class Aggregator:
    """Feed records (or raw bytes through `feed_bytes`); read `counts()` and `stats`."""

    def __init__(self, count_simulator: bool = False) -> None:
        self.count_simulator = count_simulator
        self.stats = ObjectStats()
        self._cells: dict[CellKey, dict[str, int]] = {}
        self.sends: list[SentJob] = []  # jobs SES says it accepted (Send events)
        self._stream = RecordStream()

    def add(self, offset: int, record: dict[str, Any]) -> None:
        stats = self.stats
        stats.records += 1
        try:
            result = classify(record)
        except NotAnEvent as exc:
            stats.malformed.append(Malformed(offset, 0, str(exc)))
            return
        if isinstance(result, Ignored):
            stats.ignored[result.kind] += 1
            return
        if isinstance(result, WrongPipeline):
            stats.wrong_pipeline += 1
            return
        partner_id, hour, counter, amount, problem, simulator = result
        stats.events += 1
        if counter == "sent" and (job := sent_job(record)) is not None:
            self.sends.append(job)
        if problem is not None:
            if problem == "missing":
                stats.untagged += 1
            else:
                stats.invalid_tags += 1
        if not amount:
            return
        stats.recipients += amount
        key = (partner_id, hour)
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = {}
        if simulator and not self.count_simulator:
            stats.simulator += simulator
            twin = _SIMULATOR_TWIN[counter]
            cell[twin] = cell.get(twin, 0) + simulator
            amount -= simulator
        if amount:
            cell[counter] = cell.get(counter, 0) + amount

    def feed_bytes(self, data: bytes) -> None:
        """Parse a chunk of the object's bytes (gzip or plain) and fold its records in."""
        self._stream.feed(data, self.add)

    def finish_bytes(self) -> None:
        """End of the object: flush the reader and collect what it found malformed."""
        self._stream.finish(self.add)
        # The reader's findings come first: they are about bytes, ours about meaning.
        self.stats.malformed = sorted(
            [*self._stream.malformed, *self.stats.malformed], key=lambda m: m.offset
        )

    @property
    def bytes_in(self) -> int:
        return self._stream.bytes_in

    def counts(self) -> dict[CellKey, Counters]:
        """Non-empty counters per (partner, hour)."""
        return {key: Counters(**cell) for key, cell in self._cells.items() if any(cell.values())}

    def partners(self) -> set[str]:
        return {pid for pid, _ in self._cells}


def aggregate_bytes(
    data: bytes, chunk_size: int = 1 << 20, count_simulator: bool = False
) -> Aggregator:
    """Whole bytes -> finished Aggregator (tests, backfill tools, the benchmark)."""
    agg = Aggregator(count_simulator)
    for i in range(0, len(data), chunk_size):
        agg.feed_bytes(data[i : i + chunk_size])
    agg.finish_bytes()
    return agg
