"""The object reader: formats, chunk boundaries and malformed records (pure, no AWS)."""

from __future__ import annotations

import gzip
import zlib

import orjson
import pytest

from tests.fixtures.ses_events import FORMATS, NDJSON, encode, sample_bytes, sample_records
from worker.records import MAX_PENDING_BYTES, RecordStream, read_all

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
