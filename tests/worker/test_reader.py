"""The object reader: formats, chunk boundaries and malformed records (pure, no AWS)."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import orjson
import pytest

from tests.fixtures.ses_events import FORMATS, NDJSON, encode, sample_bytes, sample_records
from worker.reader import (
    INFLATE_STEP,
    MALFORMED_KEPT,
    MAX_PENDING_BYTES,
    MAX_RECORD_BYTES,
    RECORD_WORK,
    STEP_WORK,
    Malformed,
    RecordStream,
    read_all,
)

CHUNK_SIZES = [1, 2, 7, 64, 1000, 1 << 20]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("chunk", CHUNK_SIZES)
def test_every_format_at_every_chunk_size_yields_the_records(fmt: str, chunk: int) -> None:
    records, malformed = read_all(sample_bytes(fmt), chunk)
    assert malformed == []
    assert [r for _, r in records] == sample_records()


def test_offsets_point_at_each_record() -> None:
    records, _ = read_all(NDJSON)
    for offset, rec in records:
        end = NDJSON.index(b"\n", offset)
        assert orjson.loads(NDJSON[offset:end]) == rec


def test_crlf_blank_lines_and_mixed_delimiters() -> None:
    recs = sample_records()
    lines = [orjson.dumps(r) for r in recs]
    data = (
        b"\r\n".join(lines[:4])
        + b"\r\n\r\n   \n"
        + b"".join(lines[4:8])
        + b"\n"
        + b" ".join(lines[8:])
    )
    records, malformed = read_all(data, 5)
    assert malformed == []
    assert [r for _, r in records] == recs


def test_empty_and_tiny_objects() -> None:
    assert read_all(b"") == ([], [])
    assert read_all(b"\n \n\t") == ([], [])
    assert read_all(gzip.compress(b"")) == ([], [])
    records, malformed = read_all(b"x")
    assert records == [] and [m.reason for m in malformed] == ["not JSON"]


def _mixed(newline: bool) -> tuple[bytes, list[bytes]]:
    """Good records with a truncated record, garbage, non-object JSON and a non-SES
    object between them; returns the bytes and the bad pieces in order."""
    good = [orjson.dumps(r) for r in sample_records()]
    truncated = good[2][: len(good[2]) // 2]
    bad = [truncated, b"garbage!", b"[1, 2, 3]"]
    sep = b"\n" if newline else b""
    pieces = [good[0], good[1], truncated, good[2], b"garbage!", good[3], b"[1, 2, 3]"]
    pieces += good[4:]
    return sep.join(pieces) + sep, bad


@pytest.mark.parametrize("newline", [True, False], ids=["newline", "concatenated"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("chunk", [3, 100, 1 << 20])
def test_malformed_records_are_reported_and_the_rest_is_read(
    newline: bool, gz: bool, chunk: int
) -> None:
    data, bad = _mixed(newline)
    decoded = data
    if gz:
        data = gzip.compress(data)
    records, malformed = read_all(data, chunk)
    assert [r for _, r in records] == sample_records()
    assert len(malformed) == 3
    for m, piece in zip(malformed, bad, strict=True):
        assert decoded[m.offset : m.offset + len(piece)] == piece
    assert malformed[0].reason == "invalid JSON"


def test_brace_pair_inside_a_string_is_not_a_boundary() -> None:
    rec = sample_records()[0]
    rec["mail"]["commonHeaders"]["subject"] = 'deal }{ "x" }  {"eventType":"Send"} \\ end'
    data = orjson.dumps(rec) * 3
    records, malformed = read_all(data, 11)
    assert malformed == []
    assert [r for _, r in records] == [rec, rec, rec]


def test_truncated_last_record_is_malformed() -> None:
    records, malformed = read_all(NDJSON[:-40])
    assert len(records) == 11
    assert len(malformed) == 1 and malformed[0].reason == "invalid JSON"


def test_gzip_members_back_to_back_and_zero_padding() -> None:
    data = gzip.compress(NDJSON) + gzip.compress(sample_bytes("plain-concatenated")) + b"\0" * 8
    records, malformed = read_all(data, 100)
    assert malformed == []
    assert len(records) == 24


def test_truncated_gzip_keeps_what_was_readable() -> None:
    data = gzip.compress(NDJSON)[:-30]
    records, malformed = read_all(data, 50)
    assert 0 < len(records) < 12
    assert any("truncated" in m.reason for m in malformed)


def test_corrupt_gzip_keeps_what_came_before() -> None:
    good = gzip.compress(NDJSON)
    records, malformed = read_all(good + b"\x1f\x8bthis is not deflate", 64)
    assert len(records) == 12
    assert len(malformed) == 1 and malformed[0].reason.startswith("corrupt gzip")


def test_gzip_is_detected_by_magic_bytes_only() -> None:
    # zlib (not gzip) framing and a plain body that happens to start with 0x1f are not gzip.
    records, malformed = read_all(zlib.compress(NDJSON))
    assert records == [] and malformed
    stream = RecordStream()
    stream.feed(b"\x1f")
    stream.feed(b"\x8b")  # the magic split over two chunks
    assert stream.gzip is True


def test_undelimited_stream_is_read_without_holding_it_whole() -> None:
    recs = sample_records() * 300  # ~4 MB, no newline anywhere
    data = encode(recs, newline=False)
    stream = RecordStream()
    count = 0
    peak = 0
    for i in range(0, len(data), 64 * 1024):
        count += len(stream.feed(data[i : i + 64 * 1024]))
        peak = max(peak, stream.buffered)
    count += len(stream.finish())
    assert count == len(recs)
    assert stream.malformed == []
    assert peak <= MAX_PENDING_BYTES + 64 * 1024


@pytest.mark.parametrize("newline", [True, False])
def test_a_record_longer_than_the_limit_is_malformed_and_its_neighbours_read(
    newline: bool,
) -> None:
    """Valid JSON, but longer than any Firehose record can be: one malformed stretch that
    says why, whether it sits on its own line or between concatenated records."""
    long = orjson.dumps({"eventType": "Send", "pad": "z" * (MAX_RECORD_BYTES + 10)})
    sep = b"\n" if newline else b""
    record = orjson.dumps(sample_records()[0])
    records, malformed = read_all(sep.join([record, long, record]) + sep, 64 * 1024)
    assert [r for _, r in records] == [sample_records()[0]] * 2
    assert [(m.offset, m.length) for m in malformed] == [(len(record) + len(sep), len(long))]
    assert malformed[0].reason == f"no record end within {MAX_RECORD_BYTES} bytes"


@pytest.mark.parametrize("newline", [True, False])
def test_memory_is_bounded_by_the_record_limit_not_by_the_line(newline: bool) -> None:
    """orjson allocates about twelve times its input up front. A line just under 2 MiB is
    two 1 MiB pieces, the first held back waiting for its end: handed to orjson whole it
    would cost about 24 MiB; the reader never hands it more than MAX_RECORD_BYTES (about
    12 MiB, plus a few MiB of pieces and buffer)."""
    head = b'{"eventType":"Send","x":"'
    end = b'"}' + (b"\n" if newline else b"")
    data = head + b"a" * (2 * MAX_RECORD_BYTES - 1 - len(head) - len(end)) + end
    tracemalloc.start()
    try:
        records, malformed = read_all(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"traced peak {peak / MAX_RECORD_BYTES:.1f} MiB")
    assert records == [] and [m.length for m in malformed] == [len(data.rstrip())]
    assert peak < 22 * MAX_RECORD_BYTES  # 16-18 MiB here; 29-31 MiB if the line went whole


def test_hostile_input_stays_fast() -> None:
    # Unbalanced braces and `}{` everywhere: must finish (linear budget), all malformed.
    data = b'{"a":{}{"a":{}' * 20000
    records, malformed = read_all(data)
    assert records == []
    assert malformed


def test_feed_after_finish_is_an_error() -> None:
    stream = RecordStream()
    stream.finish()
    with pytest.raises(RuntimeError):
        stream.feed(b"{}")


# ---- bounded steps and hostile input (see worker/reader.py: "Bounded steps") ----------

HOSTILE_TEXTS = {
    "records": NDJSON * 400,
    "concatenated": sample_bytes("plain-concatenated") * 400,
    "spaces": b" " * (3 << 20),
    "blank-lines": b" \n\r\n\t\n" * (1 << 19),
    "empty-objects": b"{}\n{}{}{}\n" * (1 << 15),
    "numbers": b"1\n" * (1 << 17),
    "open-braces": b"{" * (3 << 20),
    "close-braces": b"}" * (3 << 20),
    "one-string": b'{"eventType":"Send","x":"' + b"a" * (3 << 20) + b'"}',
    # Record starts that never end, no `}{` anywhere: each is a resync point after the
    # one before it, so a full parse of the rest from each would be quadratic (minutes).
    "record-starts": b'{"eventType"' * (1 << 18),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_TEXTS))
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_steps_do_bounded_work_and_read_what_feed_reads(name: str, gz: bool) -> None:
    data = HOSTILE_TEXTS[name]
    if gz:
        data = gzip.compress(data, 9)
    stream = RecordStream()
    got: list[tuple[int, dict[str, object]]] = []
    per_step: list[tuple[int, int]] = []  # (bytes decoded, records + malformed) per step
    mark = (0, 0)

    def step_done() -> None:
        nonlocal mark
        now = (stream.bytes_decoded, len(got) + stream.malformed_count)
        per_step.append((now[0] - mark[0], now[1] - mark[1]))
        mark = now

    for i in range(0, len(data), 1 << 20):
        for _ in stream.feed_steps(data[i : i + (1 << 20)], lambda o, r: got.append((o, r))):
            step_done()
        step_done()
    for _ in stream.finish_steps(lambda o, r: got.append((o, r))):
        step_done()
    step_done()
    assert max(b for b, _ in per_step) <= 2 * INFLATE_STEP
    assert max(n for _, n in per_step) <= STEP_WORK // RECORD_WORK + 1
    assert (got, stream.malformed) == read_all(data)


def test_brace_pairs_inside_non_ascii_strings_are_not_boundaries() -> None:
    recs = sample_records()[:4]
    for rec, subject in zip(recs, ["é }{ ü", "😀}{😀", '\\"}{"', "}   {€"], strict=True):
        rec["mail"]["commonHeaders"]["subject"] = subject
    data = b"".join(orjson.dumps(r) for r in recs) * 2
    for chunk in (13, 1 << 20):
        records, malformed = read_all(data, chunk)
        assert malformed == []
        assert [r for _, r in records] == recs * 2
        for offset, rec in records:
            piece = orjson.dumps(rec)
            assert data[offset : offset + len(piece)] == piece


def test_invalid_utf8_right_after_a_record_is_one_malformed_stretch() -> None:
    rec = sample_records()[0]
    rec["mail"]["commonHeaders"]["subject"] = "a }{ b"  # the slow path finds its end
    good = orjson.dumps(rec)
    data = good + b"\xff\xfe" + good
    records, malformed = read_all(data)
    assert [o for o, _ in records] == [0, len(good) + 2]
    assert malformed == [Malformed(len(good), 2, "not JSON")]


def test_every_malformed_stretch_is_counted_and_the_first_are_kept() -> None:
    lines = b"[1]\n" * (MALFORMED_KEPT + 200)
    garbage = b"x}{x" * 1000  # one stretch, found piecewise while resynchronizing
    data = lines + garbage + b"\n" + NDJSON
    for chunk in (1000, 1 << 20):
        stream = RecordStream()
        records = [r for i in range(0, len(data), chunk) for r in stream.feed(data[i : i + chunk])]
        records += stream.finish()
        assert len(records) == 12
        assert stream.malformed_count == MALFORMED_KEPT + 201
        assert [m.offset for m in stream.malformed] == [4 * i for i in range(MALFORMED_KEPT)]


def test_blank_lines_of_every_shape_are_skipped_and_offsets_kept() -> None:
    blanks = b"\n \r\n\t\t\n   \n" * 50
    lines = [orjson.dumps(r) for r in sample_records()]
    data = blanks + blanks.join(lines) + blanks + b"\x0c\n"  # form feed: not JSON whitespace
    for chunk in (7, 4096, 1 << 20):
        records, malformed = read_all(data, chunk)
        assert [r for _, r in records] == sample_records()
        for (offset, _), line in zip(records, lines, strict=True):
            assert data[offset : offset + len(line)] == line
        assert malformed == [Malformed(len(data) - 2, 1, "not JSON")]


def test_a_long_whitespace_run_then_a_record() -> None:
    data = b" \t" * (3 << 19) + NDJSON.split(b"\n")[0]
    records, malformed = read_all(data)
    assert malformed == [] and [o for o, _ in records] == [3 << 20]
