"""Fold an object's events into per-(partner, hour) counters before any write (pure).

Also its statistics (`ObjectStats`) and the jobs its Send events name (`sends`, for
worker/confirm.py). Whether simulator mail counts like real mail is decided here, at
counting time: docs/semantics.md, "Mailbox-simulator mail".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sesguard.core.identities import NO_IDENTITIES, Identities
from sesguard.core.partners import COUNTERS, SIMULATOR_PREFIX, VERIFIED_HARD_BOUNCES, Counters
from worker.classify import (
    MISSPELLED_PREFIX,
    Ignored,
    NotAnEvent,
    SentJob,
    WrongPipeline,
    classify,
    sent_job,
)
from worker.reader import MALFORMED_KEPT, Malformed, RecordStream

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
    verified: int = 0  # hard bounces to verified identities counted apart, out of the rate
    malformed: list[Malformed] = field(default_factory=list)  # the first MALFORMED_KEPT
    malformed_count: int = 0  # all of them

    @property
    def ignored_count(self) -> int:
        return sum(self.ignored.values())

    @property
    def misspelled(self) -> dict[str, int]:
        """Ignored records by eventType spelling SES never writes (`bounce`, `BOUNCE`)."""
        n = len(MISSPELLED_PREFIX)
        return {k[n:]: v for k, v in self.ignored.items() if k.startswith(MISSPELLED_PREFIX)}


class Aggregator:
    """Feed records (or raw bytes through `feed_bytes`, or in bounded steps through
    `feed_steps`); read `counts()` and `stats`."""

    def __init__(
        self, count_simulator: bool = False, identities: Identities = NO_IDENTITIES
    ) -> None:
        self.count_simulator = count_simulator
        self.identities = identities  # verified in the account (worker/identities.py)
        self.stats = ObjectStats()
        self._cells: dict[CellKey, dict[str, int]] = {}
        self.sends: list[SentJob] = []  # jobs SES says it accepted (Send events)
        self._stream = RecordStream()
        self._finished = False

    def add(self, offset: int, record: dict[str, Any]) -> None:
        stats = self.stats
        stats.records += 1
        try:
            result = classify(record, self.identities)
        except NotAnEvent as exc:
            stats.malformed_count += 1
            if len(stats.malformed) < MALFORMED_KEPT:
                stats.malformed.append(Malformed(offset, 0, str(exc)))
            return
        if isinstance(result, Ignored):
            stats.ignored[result.kind] += 1
            return
        if isinstance(result, WrongPipeline):
            stats.wrong_pipeline += 1
            return
        partner_id, hour, counter, amount, problem, simulator, verified = result
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
        if verified:  # hard bounces SES leaves out of the bounce rate
            stats.verified += verified
            cell[VERIFIED_HARD_BOUNCES] = cell.get(VERIFIED_HARD_BOUNCES, 0) + verified
            amount -= verified
        if amount:
            cell[counter] = cell.get(counter, 0) + amount

    def feed_bytes(self, data: bytes) -> None:
        """Parse a chunk of the object's bytes (gzip or plain) and fold its records in."""
        for _ in self.feed_steps(data):
            pass

    def finish_bytes(self) -> None:
        """End of the object: flush the reader and collect what it found malformed."""
        for _ in self.finish_steps():
            pass

    def feed_steps(self, data: bytes) -> Iterator[None]:
        """`feed_bytes` in steps of bounded work (RecordStream.feed_steps)."""
        return self._stream.feed_steps(data, self.add)

    def finish_steps(self) -> Iterator[None]:
        """`finish_bytes` in steps of bounded work."""
        if self._finished:
            return
        self._finished = True
        yield from self._stream.finish_steps(self.add)
        stream, stats = self._stream, self.stats
        # The reader's findings come first: they are about bytes, ours about meaning. Both
        # lists hold the first of their kind in offset order, so these are the first of all.
        stats.malformed = sorted([*stream.malformed, *stats.malformed], key=lambda m: m.offset)
        del stats.malformed[MALFORMED_KEPT:]
        stats.malformed_count += stream.malformed_count

    @property
    def bytes_in(self) -> int:
        """Bytes of the object read so far."""
        return self._stream.bytes_in

    @property
    def bytes_decoded(self) -> int:
        """Bytes after decompression so far (the object's own bytes if it is plain)."""
        return self._stream.bytes_decoded

    def counts(self) -> dict[CellKey, Counters]:
        """Non-empty counters per (partner, hour)."""
        return {key: Counters(**cell) for key, cell in self._cells.items() if any(cell.values())}

    def partners(self) -> set[str]:
        return {pid for pid, _ in self._cells}


def aggregate_bytes(
    data: bytes,
    chunk_size: int = 1 << 20,
    count_simulator: bool = False,
    identities: Identities = NO_IDENTITIES,
) -> Aggregator:
    """Whole bytes -> finished Aggregator (tests, backfill tools, the benchmark)."""
    agg = Aggregator(count_simulator, identities)
    for i in range(0, len(data), chunk_size):
        agg.feed_bytes(data[i : i + chunk_size])
    agg.finish_bytes()
    return agg
