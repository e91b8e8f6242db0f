"""Hostile objects through the real Processor against moto: the event loop keeps turning,
an object over the cap is given up early with nothing counted, memory stays bounded.

Responsiveness is asserted without clocks: the work done between two turns of the event
loop is bounded (bytes decoded and records per parsing step, steps between two runs of a
probe task that only ever yields). The worst lag of a 10 ms timer is printed (`pytest -s`)
for information; bench/worker_lag.py measures it against the one-call baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest

from sesguard.aws import table as t
from sesguard.aws.clients import open_clients
from sesguard.aws.store import PartnerStore
from sesguard.local.localaws import local_aws_process
from sesguard.ops.bootstrap import ensure_table
from sesguard.settings import load_settings
from tests.domain.support import enforcer_for
from tests.fixtures.hostile import BOMBS, RECORDS, records_object, whitespace_bomb
from tests.fixtures.ses_events import EXPECTED_ACME, NDJSON, encode, event
from worker import main as worker_main
from worker.aggregate import Aggregator
from worker.pipeline import READ_CHUNK, ObjectResult, ObjectTooLarge, Processor
from worker.reader import INFLATE_STEP, RECORD_WORK, STEP_WORK

BUCKET = "hostile-objects"
MiB = 1 << 20
# Decoded sizes: large enough for many steps, small enough for a shared machine. The
# `{}` bomb costs a Python call per record, so it is the smallest.
SIZES = {
    "whitespace": 32 * MiB,
    "empty-records": 2 * MiB,
    "garbage": 16 * MiB,
    "one-string": 16 * MiB,
}


@dataclass
class Env:
    clients: Any
    store: PartnerStore
    settings: Any

    def processor(self, **kwargs: Any) -> Processor:
        enforcer = enforcer_for(self.store, self.clients.sesv2, self.settings)
        return Processor(self.clients.s3, self.store, enforcer, **kwargs)

    async def put(self, key: str, data: bytes) -> None:
        await self.clients.s3.put_object(Bucket=BUCKET, Key=key, Body=data)


@pytest.fixture
async def env(clients: Any, store: PartnerStore, settings: Any) -> Env:
    await clients.s3.create_bucket(Bucket=BUCKET)
    return Env(clients, store, settings)


@dataclass
class Watch:
    """What happened while one object was processed."""

    steps: list[tuple[int, int]]  # (bytes decoded, records) after each parsing step
    probe: list[int]  # number of steps done at each run of the yielding probe
    lags: list[float]  # how late a 10 ms timer woke, seconds

    def most(self, index: int) -> int:
        """Most bytes decoded (0) or records read (1) in one step."""
        prev = [(0, 0), *self.steps]
        return max(b[index] - a[index] for a, b in zip(prev, self.steps, strict=False))


async def watched(processor: Processor, key: str) -> tuple[ObjectResult, Watch]:
    """Process `key` with two probes running alongside: one that only yields (it runs once
    per loop turn) and one that measures a timer's lateness."""
    watch = Watch([], [], [])

    def on_step(agg: Aggregator) -> None:
        watch.steps.append((agg.bytes_decoded, agg.stats.records))

    async def yielding() -> None:
        while True:
            watch.probe.append(len(watch.steps))
            await asyncio.sleep(0)

    async def timer() -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(0.01)
            watch.lags.append(loop.time() - start - 0.01)

    processor.on_step = on_step
    probes = [asyncio.create_task(yielding()), asyncio.create_task(timer())]
    try:
        result = await processor.process(BUCKET, key)
    finally:
        for p in probes:
            p.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
    return result, watch


def check_responsive(watch: Watch, decoded: int) -> None:
    assert watch.steps[-1][0] == decoded
    # One parsing step decodes at most about two inflate steps and hands out a bounded
    # number of records (its work is STEP_WORK units, each record costs RECORD_WORK).
    assert watch.most(0) <= 2 * INFLATE_STEP
    assert watch.most(1) <= STEP_WORK // RECORD_WORK + 1
    # The loop turns between steps: the probe ran at least once every two steps (two if
    # the order of the two tasks in the loop's queue changed across an S3 read).
    gaps = [b - a for a, b in pairwise([*watch.probe, len(watch.steps)])]
    assert max(gaps) <= 2
    assert len(watch.probe) >= decoded // (4 * INFLATE_STEP)
    worst = max(watch.lags, default=0.0)
    print(
        f"{len(watch.steps)} steps, {decoded / MiB:.0f} MiB, worst timer lag {worst * 1e3:.1f} ms"
    )


@pytest.mark.parametrize("kind", sorted(BOMBS))
async def test_a_gzip_bomb_never_holds_the_event_loop(env: Env, kind: str) -> None:
    data = BOMBS[kind](SIZES[kind])
    decoded = len(gzip.decompress(data))
    await env.put(kind, data)
    result, watch = await watched(env.processor(), kind)
    check_responsive(watch, decoded)
    stats = result.stats
    assert stats.events == 0 and result.applied.transactions == 0
    if kind == "empty-records":  # 5 records per 13 bytes, each one malformed, 1000 kept
        assert stats.records == stats.malformed_count == decoded // 13 * 5
        assert len(stats.malformed) == 1000
    elif kind != "garbage":  # nothing but blanks, or one record that never closes
        assert stats.records == 0 and stats.malformed_count == (kind == "one-string")


async def test_a_large_object_of_real_records_never_holds_the_event_loop(env: Env) -> None:
    data = records_object(12 * MiB)
    await env.put("records", data)
    result, watch = await watched(env.processor(), "records")
    check_responsive(watch, len(data))
    copies = len(data) // len(RECORDS)
    assert result.stats.records == copies * 12 and result.stats.malformed_count == 0
    # The same 12 records over and over: each counted once, every repeat recognised,
    # in memory or (once a batch was written) in the table.
    assert (await env.store.get_state("acme")).totals.nonzero() == EXPECTED_ACME
    assert result.applied.counted == 12
    assert result.stats.duplicates + result.applied.duplicates == (copies - 1) * 12


async def test_an_object_is_written_in_batches_and_counted_exactly(env: Env) -> None:
    """What an object holds in memory is bounded by the batch (`flush_events`), not by
    its size: 300 distinct events in batches of 50, each counted once."""
    records = [event("Send", f"p{i % 7}", datetime.now(UTC)) for i in range(300)]
    await env.put("batched", encode(records))
    result = await env.processor(flush_events=50).process(BUCKET, "batched")
    assert result.applied.counted == 300 and result.applied.transactions > 1
    assert sum([(await env.store.get_state(f"p{i}")).totals.sent for i in range(7)]) == 300


async def test_concurrent_objects_take_one_step_per_loop_turn_between_them(env: Env) -> None:
    """The turn is shared: with several objects in parsing, the loop still turns between
    any two steps, not after one step of each."""
    for i in range(4):
        await env.put(f"ws{i}", whitespace_bomb(8 * MiB))
    processor = env.processor()
    steps = 0
    probe: list[int] = []

    def on_step(agg: Aggregator) -> None:
        nonlocal steps
        steps += 1

    async def yielding() -> None:
        while True:
            probe.append(steps)
            await asyncio.sleep(0)

    processor.on_step = on_step
    task = asyncio.create_task(yielding())
    await asyncio.gather(*(processor.process(BUCKET, f"ws{i}") for i in range(4)))
    task.cancel()
    assert steps > 4 * 8
    assert max(b - a for a, b in pairwise(probe)) <= 2


@pytest.fixture(scope="module")
def child_endpoint() -> Iterator[str]:
    """The AWS stand-in in a child process, as a real endpoint would be, so that the traced
    memory below is this process's alone: moto's request threads, sharing the tracer,
    added up to 10 MiB of their own at random moments."""
    with local_aws_process(point=False) as endpoint:  # the other tests keep moto_endpoint
        yield endpoint


@pytest.mark.parametrize("kind", ["whitespace", "garbage", "one-string"])
async def test_memory_stays_bounded_while_a_bomb_is_read(
    child_endpoint: str, settings: Any, kind: str
) -> None:
    """Traced peak of the client and the worker while a bomb is read. The one-string bomb
    is one record far over MAX_RECORD_BYTES: orjson's look at its first MiB costs about
    12 MiB (worker/reader.py), the rest of the peak is pieces and buffers. The `{}` bomb's
    one growing thing, its malformed list, is capped (test above)."""
    size = 8 * MiB if kind == "garbage" else 32 * MiB  # garbage: many lines, slow to trace
    async with open_clients(endpoint_url=child_endpoint, max_attempts=1) as clients:
        await ensure_table(clients, settings)
        await clients.s3.create_bucket(Bucket=BUCKET)
        env = Env(clients, PartnerStore(clients.dynamodb, settings.table), settings)
        await env.put(kind, BOMBS[kind](size))
        processor = env.processor()
        tracemalloc.start()
        try:
            result = await processor.process(BUCKET, kind)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    print(f"{kind}: {size / MiB:.1f} MiB decoded, traced peak {peak / MiB:.1f} MiB")
    assert result.stats.events == 0
    assert peak < 24 * MiB


async def markers(env: Env, key: str) -> int:
    resp = await env.clients.dynamodb.query(
        TableName=env.store.table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": t.object_pk(BUCKET, key)}},
    )
    return int(resp["Count"])


async def over_cap(
    env: Env, key: str, cap: int, read_chunk: int = READ_CHUNK
) -> tuple[str, list[tuple[int, int]]]:
    """Process `key` with `cap`; the ObjectTooLarge message and (bytes read, decoded) after
    each step."""
    seen: list[tuple[int, int]] = []
    on_step: Callable[[Aggregator], None] = lambda agg: seen.append(  # noqa: E731
        (agg.bytes_in, agg.bytes_decoded)
    )
    processor = env.processor(max_object_bytes=cap, on_step=on_step, read_chunk=read_chunk)
    with pytest.raises(ObjectTooLarge) as caught:
        await processor.process(BUCKET, key)
    return str(caught.value), seen


async def test_an_object_over_the_cap_is_given_up_early_and_nothing_of_it_counted(
    env: Env,
) -> None:
    data = records_object(16 * MiB)  # real records of partner acme, plain
    await env.put("big", data)
    cap = 2 * MiB
    message, seen = await over_cap(env, "big", cap)
    assert f"s3://{BUCKET}/big" in message
    assert str(cap) in message and "SESGUARD_MAX_OBJECT_BYTES" in message
    read, decoded = seen[-1]
    assert cap < decoded <= cap + 2 * INFLATE_STEP  # given up in the step that passed it
    assert read <= cap + READ_CHUNK < len(data) // 4  # and without reading on
    assert (await env.store.get_state("acme")).totals.nonzero() == {}
    assert await markers(env, "big") == 0


async def test_a_gzip_bomb_over_the_cap_is_given_up_without_reading_on(env: Env) -> None:
    total = 512 * MiB
    data = whitespace_bomb(total)
    await env.put("bomb", data)
    cap, chunk = 32 * MiB, 16 * 1024
    message, seen = await over_cap(env, "bomb", cap, read_chunk=chunk)
    read, decoded = seen[-1]
    assert cap < decoded <= cap + 2 * INFLATE_STEP
    # The compressed bytes that hold what was decoded, and one chunk more.
    assert read <= len(data) * decoded // total + chunk < len(data) // 4
    assert "s3://hostile-objects/bomb" in message


async def test_an_object_exactly_at_the_cap_is_counted(env: Env) -> None:
    await env.put("exact", NDJSON)
    processor = env.processor(max_object_bytes=len(NDJSON))
    result = await processor.process(BUCKET, "exact")
    assert result.stats.events == 12
    assert (await env.store.get_state("acme")).totals.nonzero() == EXPECTED_ACME
    await env.put("over", NDJSON)
    with pytest.raises(ObjectTooLarge):
        await env.processor(max_object_bytes=len(NDJSON) - 1).process(BUCKET, "over")


async def test_a_cancelled_object_stops_at_once_and_counts_nothing(env: Env) -> None:
    """What SIGTERM past the grace period does: the object is dropped between two steps
    (its message goes back and it is counted whole on redelivery)."""
    data = records_object(8 * MiB)
    await env.put("stopped", data)
    processor = env.processor()
    started = asyncio.Event()
    steps = 0

    def on_step(agg: Aggregator) -> None:
        nonlocal steps
        steps += 1
        if steps == 3:
            started.set()

    processor.on_step = on_step
    task = asyncio.create_task(processor.process(BUCKET, "stopped"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps <= 4
    assert await markers(env, "stopped") == 0
    result = await processor.process(BUCKET, "stopped")  # the redelivery
    assert result.applied.counted == 12 and await markers(env, "stopped") == 1


async def test_backfill_gives_up_an_object_over_the_setting(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SESGUARD_MAX_OBJECT_BYTES reaches the Processor that `worker backfill` builds."""
    await env.put("cap/small", NDJSON)
    await env.put("cap/large", NDJSON * 2)
    monkeypatch.setenv("SESGUARD_MAX_OBJECT_BYTES", str(len(NDJSON)))
    parser = argparse.ArgumentParser()
    worker_main.add_arguments(parser)
    args = parser.parse_args(["backfill", "--bucket", BUCKET, "--prefix", "cap/"])
    assert await worker_main.run(args, load_settings()) == 1  # one object failed
    assert "1 objects processed" in capsys.readouterr().out
    assert (await env.store.get_state("acme")).totals.nonzero() == EXPECTED_ACME
    assert await markers(env, "cap/large") == 0
