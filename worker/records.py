"""Stream SES event records out of the bytes of an S3 object (pure, no I/O).

What Firehose writes is not one fixed format, so the reader accepts all of them:

- gzip or plain, decided by the magic bytes 1f 8b (never by key suffix or headers);
  several gzip members back to back are one stream, as RFC 1952 allows;
- records one per line (SES appends a newline) or concatenated with no delimiter at all
  (Firehose's default), or a mix of both.

Bytes are fed in chunks and records come out as soon as they are complete, so an object
is never held whole in memory: only the undecided tail (at most about one record, bounded
by MAX_RECORD_BYTES) is kept between chunks.

Finding boundaries fast: a line that orjson accepts is one record (the common case costs
one `loads`). Otherwise the text is cut at every `}{` (optionally with whitespace between),
which can only occur between records or inside a string. If a piece does not parse, a
string-aware brace scanner finds the real end of the record that starts there; if the
record never closes (truncated) or is not an object at all (garbage), the reader skips to
the next plausible record start and reports the skipped bytes as one malformed record.

Offsets are byte offsets in the decoded (decompressed) stream; for plain objects they are
offsets in the object itself.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

Sink = Callable[[int, dict[str, Any]], None]  # receives (offset, record)

GZIP_MAGIC = b"\x1f\x8b"
# A record longer than this without closing is treated as broken rather than buffered on.
MAX_RECORD_BYTES = 1 << 20
# Decompressed bytes produced per step, so a small compressed chunk cannot balloon memory.
INFLATE_STEP = 1 << 20
# An undelimited tail longer than this is cut into records before more data arrives.
MAX_PENDING_BYTES = 256 * 1024

# `}` then optional whitespace then `{`: outside strings, only ever between two records.
_BOUNDARY = re.compile(rb"\}[ \t\r\n]*\{")
# A plausible start of the next record after garbage: after a closing brace, or an SES
# record's leading key (a raw `{"` cannot occur inside a JSON string: quotes are escaped).
_RESYNC = re.compile(rb'(?<=\})[ \t\r\n]*(\{)|(\{)[ \t\r\n]*"(?:eventType|notificationType)"')
# Where an SES record starts: a real record ends before the next one starts.
_RECORD_START = re.compile(rb'\{[ \t\r\n]*"(?:eventType|notificationType)"')
# Tokens for the brace scanner: whole strings (skipped), braces, or a lone unterminated quote.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[{}"]', re.S)
_WS = b" \t\r\n"
_OPEN, _CLOSE, _QUOTE = 0x7B, 0x7D, 0x22


@dataclass(frozen=True, slots=True)
class Malformed:
    """Bytes that are not a usable record: where they are, how long, and why."""

    offset: int
    length: int
    reason: str


def _balanced_end(buf: bytes, start: int, stop: int) -> int | None:
    """Index just past the `}` closing the object that opens at `start`, looking no
    further than `stop`; None if it does not close there (truncated, or more data needed)."""
    depth = 0
    for m in _TOKEN.finditer(buf, start, stop):
        c = buf[m.start()]
        if c == _QUOTE:
            if m.end() - m.start() == 1:
                return None  # a string that never ends
            continue
        if c == _OPEN:
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return m.end()
    return None


def _resync(buf: bytes, start: int) -> int | None:
    m = _RESYNC.search(buf, start)
    if m is None:
        return None
    return m.start(1) if m.group(1) is not None else m.start(2)


def _skip_ws(buf: bytes, pos: int) -> int:
    n = len(buf)
    while pos < n and buf[pos] in _WS:
        pos += 1
    return pos


class RecordStream:
    """Incremental reader: `feed(chunk)` and finally `finish()` return complete records as
    (offset, dict) pairs; bad bytes accumulate in `malformed`.

    Non-object JSON (`[1]`, `42`) is malformed here; whether an object is an SES event is
    the classifier's call.
    """

    def __init__(self) -> None:
        self.malformed: list[Malformed] = []
        self.bytes_in = 0  # raw bytes fed
        self.bytes_decoded = 0  # bytes after decompression
        self.gzip: bool | None = None  # None until the first two bytes are seen
        self._head = b""
        self._inflater: Any = None
        self._dead = False  # a corrupt gzip stream: nothing after it can be trusted
        self._pending = b""  # decoded bytes not yet cut into records
        self._base = 0  # decoded offset of _pending[0]
        self._finished = False

    # ---- public ------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Decoded bytes held back, waiting for the end of their record."""
        return len(self._pending)

    def feed(self, data: bytes, sink: Sink | None = None) -> list[tuple[int, dict[str, Any]]]:
        """Read a chunk. With a `sink`, each record is handed over as soon as it is parsed
        (and nothing is returned): records are not kept alive, which also spares the
        garbage collector; without one they are returned as a list."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        self.bytes_in += len(data)
        out: list[tuple[int, dict[str, Any]]] = []
        emit = sink or (lambda offset, record: out.append((offset, record)))
        for piece in self._decode(data):
            self._take(piece, emit, final=False)
        return out

    def finish(self, sink: Sink | None = None) -> list[tuple[int, dict[str, Any]]]:
        """Flush the tail: whatever is left must be complete records or it is malformed."""
        if self._finished:
            return []
        self._finished = True
        out: list[tuple[int, dict[str, Any]]] = []
        emit = sink or (lambda offset, record: out.append((offset, record)))
        for piece in self._decode_end():
            self._take(piece, emit, final=False)
        self._take(b"", emit, final=True)
        self._check_truncated_gzip()
        return out

    # ---- decoding ----------------------------------------------------------------

    def _decode(self, data: bytes) -> Iterable[bytes]:
        if self.gzip is None:
            self._head += data
            if len(self._head) < 2:
                return []
            data, self._head = self._head, b""
            self.gzip = data[:2] == GZIP_MAGIC
        if not self.gzip:
            self.bytes_decoded += len(data)
            return [data] if data else []
        return self._inflate(data)

    def _decode_end(self) -> list[bytes]:
        if self.gzip is None:  # fewer than two bytes in total: plain
            data, self._head = self._head, b""
            self.gzip = False
            self.bytes_decoded += len(data)
            return [data] if data else []
        if self.gzip and self._inflater is not None and not self._dead:
            try:
                tail = self._inflater.flush()
            except zlib.error:
                tail = b""
            if tail:
                self.bytes_decoded += len(tail)
                return [tail]
        return []

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        """Decompressed pieces of at most INFLATE_STEP bytes, one at a time (each is cut
        into records before the next is inflated: a small compressed chunk of a highly
        compressible object never becomes one big buffer)."""
        while data and not self._dead:
            if self._inflater is None:
                if not data.strip(b"\x00"):
                    break  # zero padding after the last member is harmless
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = self._inflater.decompress(data, INFLATE_STEP)
            except zlib.error as exc:
                self._corrupt(f"corrupt gzip data: {exc}")
                break
            if self._inflater.eof:
                data = self._inflater.unused_data
                self._inflater = None  # the next member, if any, starts here
            else:
                data = self._inflater.unconsumed_tail
            if out:
                self.bytes_decoded += len(out)
                yield out

    def _corrupt(self, reason: str) -> None:
        self._dead = True
        self._inflater = None
        self.malformed.append(Malformed(self.bytes_decoded, 0, reason))

    def _check_truncated_gzip(self) -> None:
        if self.gzip and self._inflater is not None and not self._inflater.eof and not self._dead:
            self.malformed.append(
                Malformed(self.bytes_decoded, 0, "gzip stream truncated (no end of member)")
            )

    # ---- cutting into records ----------------------------------------------------

    def _take(self, piece: bytes, out: Sink, final: bool) -> None:
        buf = self._pending + piece if self._pending else piece
        base = self._base
        cut = len(buf) if final else buf.rfind(b"\n") + 1
        if cut:
            self._lines(buf[:cut], base, out)
        rest = buf[cut:]
        base += cut
        if len(rest) > MAX_PENDING_BYTES:  # no newline in sight: records are concatenated
            used = self._scan(rest, base, out, final=False)
            rest = rest[used:]
            base += used
        self._pending = rest
        self._base = base

    def _lines(self, text: bytes, base: int, out: Sink) -> None:
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        offset = base
        for line in text.split(b"\n"):
            size = len(line) + 1
            if line:
                try:
                    obj = loads(line)
                except decode_error:
                    if line.strip(_WS):
                        self._scan(line, offset, out, final=True)
                else:
                    if type(obj) is dict:
                        out(offset, obj)
                    else:
                        self._bad(offset, len(line), "not a JSON object")
            offset += size

    def _scan(self, buf: bytes, base: int, out: Sink, final: bool) -> int:
        """Cut undelimited text into records; returns how many bytes were used (when not
        final, an incomplete last record stays for the next call)."""
        n = len(buf)
        pos = _skip_ws(buf, 0)
        # Brace scanning is the slow path; a budget keeps hostile input linear.
        budget = 4 * n + MAX_RECORD_BYTES
        starts = -1  # next record start found so far (n: none left); searched lazily
        while pos < n:
            m = _BOUNDARY.search(buf, pos + 1)
            end = m.start() + 1 if m else n
            if m is None and not final and n - pos <= MAX_RECORD_BYTES:
                return pos  # the last record may continue in the next chunk
            try:
                obj = orjson.loads(buf[pos:end])
            except orjson.JSONDecodeError:
                pass
            else:
                self._emit(obj, base + pos, end - pos, out)
                pos = _skip_ws(buf, end)
                continue
            # Not one record up to the next `}{`: maybe that `}{` was inside a string, so
            # find where this record really ends and try that.
            if buf[pos] == _OPEN and budget > 0:
                if starts <= pos:
                    found = _RECORD_START.search(buf, pos + 1)
                    starts = found.start() if found else n
                stop = min(starts, pos + MAX_RECORD_BYTES)
                budget -= stop - pos
                close = _balanced_end(buf, pos, stop)
                if close is None:
                    if starts == n and not final and n - pos <= MAX_RECORD_BYTES:
                        return pos  # may be completed by the next chunk
                elif close != end:
                    try:
                        obj = orjson.loads(buf[pos:close])
                    except orjson.JSONDecodeError:
                        pass
                    else:
                        self._emit(obj, base + pos, close - pos, out)
                        pos = _skip_ws(buf, close)
                        continue
            # Broken (truncated, invalid, garbage): skip to the next plausible record start.
            nxt = _resync(buf, pos + 1)
            if nxt is None:
                if not final and n - pos <= MAX_RECORD_BYTES:
                    return pos
                nxt = n
            self._bad(base + pos, nxt - pos, "invalid JSON" if buf[pos] == _OPEN else "not JSON")
            pos = nxt
        return n

    def _emit(self, obj: Any, offset: int, length: int, out: Sink) -> None:
        if type(obj) is dict:
            out(offset, obj)
        else:
            self._bad(offset, length, "not a JSON object")

    def _bad(self, offset: int, length: int, reason: str) -> None:
        last = self.malformed[-1] if self.malformed else None
        if last is not None and last.length and last.offset + last.length == offset:
            # one broken stretch, found piecewise while resynchronizing: count it once
            self.malformed[-1] = Malformed(last.offset, last.length + length, reason)
            return
        self.malformed.append(Malformed(offset, length, reason))


def read_all(
    data: bytes, chunk_size: int = 1 << 20
) -> tuple[list[tuple[int, dict[str, Any]]], list[Malformed]]:
    """Convenience for tests and tools: the records and malformed stretches of whole bytes."""
    stream = RecordStream()
    records: list[tuple[int, dict[str, Any]]] = []
    for i in range(0, len(data), chunk_size):
        records.extend(stream.feed(data[i : i + chunk_size]))
    records.extend(stream.finish())
    return records, stream.malformed
