"""Group an object's events by partner and minute, each under its key, before any write (pure).

The groups (`Minute`) are what worker/apply.py writes, each event once (a key met twice
in one object is a repeat and is dropped here); `counts()` folds them into per-(partner,
hour) counters. Also the object's statistics (`ObjectStats`). Whether simulator mail
counts like real mail is decided here, at counting time: docs/semantics.md,
"Mailbox-simulator mail".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sesguard.core.identities import NO_IDENTITIES, Identities
from sesguard.core.partners import COUNTERS, SIMULATOR_PREFIX, VERIFIED_HARD_BOUNCES, Counters
from worker.classify import (
    MISSPELLED_PREFIX,
    DeltaFields,
    Ignored,
    NotAnEvent,
    classify_tuple,
    read_fields,
)
from worker.reader import MALFORMED_KEPT, Malformed, RecordStream

CellKey = tuple[str, datetime]  # (partner_id, hour)
MinuteKey = tuple[str, str]  # (partner_id, "YYYY-MM-DDTHH:MM")
_SIMULATOR_TWIN = {name: SIMULATOR_PREFIX + name for name in COUNTERS}


# What one event adds: (hour, ((counter name, n), ...)) to the partner's counters.
Counted = tuple[datetime, tuple[tuple[str, int], ...]]
# (hour, counter, n) -> its Counted, shared by the events that add just that: an object
# holds tens of thousands of events and few distinct values, and one tuple per event kept
# until the object is written is most of what makes the garbage collector run.
_COUNTED: dict[tuple[datetime, str, int], Counted] = {}
_COUNTED_KEPT = 4096


@dataclass
class Minute:
    """One partner's events of one minute (their own time) in one object, by key; and the
    jobs its Send events name (job id -> the Send event's key)."""

    partner_id: str
    minute: str
    events: dict[bytes, Counted] = field(default_factory=dict)
    jobs: dict[str, bytes] = field(default_factory=dict)


def fold(minutes: Iterable[Minute]) -> dict[CellKey, Counters]:
    """Per-(partner, hour) counters of the events of `minutes` (non-empty ones only)."""
    cells: dict[CellKey, dict[str, int]] = {}
    for m in minutes:
        # Events share their few distinct values (_COUNTED): count those in C first.
        for (hour, amounts), times in Counter(m.events.values()).items():
            cell = cells.setdefault((m.partner_id, hour), {})
            for name, n in amounts:
                cell[name] = cell.get(name, 0) + n * times
    return {key: Counters(**cell) for key, cell in cells.items() if any(cell.values())}


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
    duplicates: int = 0  # events seen before, in this object or counted from another one

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
        self._minutes: dict[MinuteKey, Minute] = {}  # not yet taken (`take`)
        self._partners: set[str] = set()
        self._stream = RecordStream(read_fields)
        self._finished = False

    def add(self, offset: int, record: dict[str, Any]) -> None:
        """Count one record (the sink of the reader: once per record, so kept lean)."""
        stats = self.stats
        stats.records += 1
        try:
            result = classify_tuple(record, self.identities)
        except NotAnEvent as exc:
            stats.malformed_count += 1
            if len(stats.malformed) < MALFORMED_KEPT:
                stats.malformed.append(Malformed(offset, 0, str(exc)))
            return
        if type(result) is not tuple:  # not counted
            if type(result) is Ignored:
                stats.ignored[result.kind] += 1
            else:  # WrongPipeline
                stats.wrong_pipeline += 1
            return
        stats.events += 1
        fields: DeltaFields = result  # type: ignore[assignment]  # (cast() is a call)
        partner_id, hour, counter, amount, problem, simulator, verified, when, key, job = fields
        if problem is not None:
            if problem == "missing":
                stats.untagged += 1
            else:
                stats.invalid_tags += 1
        if not amount:
            return
        minute = self._minutes.get((partner_id, when))
        if minute is None:
            minute = self._minutes[partner_id, when] = Minute(partner_id, when)
            self._partners.add(partner_id)
        events = minute.events
        if key in events:  # the same event twice in this object
            stats.duplicates += 1
            return
        stats.recipients += amount
        if (simulator and not self.count_simulator) or verified:
            amounts: list[tuple[str, int]] = []
            if simulator and not self.count_simulator:
                stats.simulator += simulator
                amounts.append((_SIMULATOR_TWIN[counter], simulator))
                amount -= simulator
            if verified:  # hard bounces SES leaves out of the bounce rate
                stats.verified += verified
                amounts.append((VERIFIED_HARD_BOUNCES, verified))
                amount -= verified
            if amount:
                amounts.append((counter, amount))
            events[key] = (hour, tuple(amounts))
        else:  # the usual event: one counter, a few values in all, so shared
            counted = _COUNTED.get((hour, counter, amount))
            if counted is None:
                if len(_COUNTED) >= _COUNTED_KEPT:
                    _COUNTED.clear()
                counted = _COUNTED[hour, counter, amount] = (hour, ((counter, amount),))
            events[key] = counted
        if job is not None:
            minute.jobs.setdefault(job, key)

    @property
    def pending(self) -> int:
        """Events grouped and not yet taken (counted when asked: a few hundred groups at
        most, where a counter would cost every event a step)."""
        return sum(len(m.events) for m in self._minutes.values())

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

    def take(self) -> list[Minute]:
        """The events grouped so far, handed over to be written (worker/apply.py): what an
        object holds in memory is bounded by how often it is taken, not by its size."""
        out = list(self._minutes.values())
        self._minutes = {}
        return out

    def counts(self) -> dict[CellKey, Counters]:
        """Non-empty counters per (partner, hour) of the events not taken yet (all of them
        for `aggregate_bytes`)."""
        return fold(self._minutes.values())

    def partners(self) -> set[str]:
        """Every partner with an event in the object, taken or not."""
        return set(self._partners)


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
