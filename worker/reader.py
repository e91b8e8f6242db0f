"""Stream SES event records out of the bytes of an S3 object, in bounded steps (pure, no I/O).

`feed_steps(chunk, sink)` yields after about STEP_WORK units of work; `feed` runs the same
work to completion. Formats, boundaries, the work measure and the memory bound:
docs/design.md, "The event loop stays responsive, and objects are bounded".
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

Sink = Callable[[int, dict[str, Any]], None]  # receives (offset, record)
# A record's JSON text -> the part of it that the sink reads (worker/classify.py,
# read_fields); ValueError or RecursionError (nested too deep) to have it decoded whole.
# Given only valid UTF-8, at most MAX_RECORD_BYTES long, and only the text of a line.
Fields = Callable[[bytes], dict[str, Any]]
Steps = Iterator[None]  # one item per pause: the caller may do other work in between

GZIP_MAGIC = b"\x1f\x8b"
# The longest record read. Firehose refuses records over 1,000 KiB, so a longer one is not
# SES's: it is malformed, never buffered on nor parsed. orjson allocates about twelve times
# the length of its input before it looks at it, so no text longer than this is ever
# handed to it: that is what bounds the reader's memory (about 12 MiB transient).
MAX_RECORD_BYTES = 1 << 20
# Decompressed bytes produced per inflate call (and per slice of a plain chunk), so a small
# compressed chunk cannot balloon memory or take long in one call.
INFLATE_STEP = 1 << 20
# An undelimited tail longer than this is cut into records before more data arrives.
MAX_PENDING_BYTES = 256 * 1024
# Work between two pauses of feed_steps/finish_steps (units: see the module docstring):
# about a millisecond of CPU on one core, whatever the bytes are. A record handed to the
# sink costs a few microseconds of Python (parse, classify, count), hence RECORD_WORK: at
# most 256 records per step, about 200 of SES's.
STEP_WORK = 1 << 20
RECORD_WORK = 4096
# Malformed stretches kept with their offsets (all of them are counted).
MALFORMED_KEPT = 1000

# `}` then optional whitespace then `{`: outside strings, only ever between two records.
# After garbage, the `{` of such a pair is a plausible start of the next record.
_BOUNDARY = re.compile(rb"\}[ \t\r\n]*\{")
# Where an SES record starts (the other plausible start after garbage): a real record ends
# before the next one starts (a raw `{"` cannot occur inside a JSON string: quotes are
# escaped).
_RECORD_START = re.compile(rb'\{[ \t\r\n]*"(?:eventType|notificationType)"')
# JSON whitespace (RFC 8259), and a run of it.
_WS = b" \t\r\n"
_WS_BYTES = frozenset(_WS)
_WS_RUN = re.compile(rb"[ \t\r\n]*")
# Text that starts blank or with a line shorter than this is split a window of about
# _LINE_WINDOW bytes at a time, and windows of nothing but whitespace are skipped in C.
_DENSE_LINE_BYTES = 32
_BLANK_STARTS = frozenset([b"", *(bytes([c]) for c in _WS)])  # a piece's first byte, or none
_LINE_WINDOW = 64 * 1024
_OPEN = 0x7B
# Bytes no JSON text can end with: where a candidate ends with one, orjson would fail, and
# is not asked (it allocates about twelve times its input before it looks).
_NO_END = frozenset(range(256)) - frozenset(b'}]"0123456789el \t\r\n')
_FAIL = object()
# orjson's messages for a value followed by more text, and for input that is not UTF-8
# (it checks the encoding of its whole input before parsing).
_TRAILING = "unexpected content after document"
_NOT_UTF8 = "str is not valid UTF-8"
_EOF = "unexpected end of data"
# Where a candidate record runs far (no `}{` pair for a long way), its first bytes are
# parsed alone first: garbage is usually broken early.
_PROBE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Malformed:
    """Bytes that are not a usable record: where they are, how long, and why."""

    offset: int
    length: int
    reason: str


def _whole(text: bytes) -> dict[str, Any]:
    """The Fields of a reader without one: every record is decoded whole."""
    raise ValueError("decoded whole")


def _is_utf8(text: bytes) -> bool:
    try:
        text.decode()
    except UnicodeDecodeError:
        return False
    return True


def _skip_ws(buf: bytes, pos: int) -> int:
    match = _WS_RUN.match(buf, pos)
    assert match is not None  # `*` always matches
    return match.end()


def _object_end(buf: bytes, start: int, stop: int) -> tuple[int, Any] | None:
    """(end, value) of the JSON value that opens at `start` if it is complete and valid
    before `stop` (end is just past its last byte); None if it is broken or does not close
    there. One orjson pass in C over buf[start:stop], whatever the bytes are."""
    seg = buf[start:stop]
    try:
        value = orjson.loads(seg)
    except orjson.JSONDecodeError as exc:
        if exc.msg.startswith(_NOT_UTF8):  # somewhere in seg: look again up to that byte
            try:
                seg.decode()
            except UnicodeDecodeError as bad:
                found = _object_end(seg, 0, bad.start) if bad.start else None
                return None if found is None else (start + found[0], found[1])
            return None
        if not exc.msg.startswith(_TRAILING):
            return None
        # orjson counts characters; seg is valid UTF-8 here (it was checked first).
        after = exc.pos if seg.isascii() else len(seg.decode()[: exc.pos].encode())
        end = after if seg[after - 1] not in _WS_BYTES else len(seg[:after].rstrip(_WS))
        return start + end, orjson.loads(seg[:end])
    end = len(seg) if seg[-1] not in _WS_BYTES else len(seg.rstrip(_WS))
    return start + end, value


def _broken_early(buf: bytes, start: int) -> bool:
    """Whether the JSON text at `start` is broken within its first _PROBE_BYTES, so that
    no value starting there can end further on. Spares a full parse of a long rest for
    each of many broken starts (garbage made of record starts would cost quadratic time)."""
    window = buf[start : start + _PROBE_BYTES]
    try:
        orjson.loads(window)
    except orjson.JSONDecodeError as exc:
        if exc.msg.startswith((_EOF, _NOT_UTF8)):
            return False  # more text might complete it, or the cut split a character
        # A definite error, far enough from the cut (exc.pos counts characters, at most 4
        # bytes each) that the cut cannot be its cause.
        return 4 * (exc.pos + 1) + 64 <= len(window)
    return False


def _next_pair(buf: bytes, start: int) -> tuple[int, int]:
    """(index of the `}`, index of the `{`) of the first `}{` pair (whitespace allowed
    between) whose `}` is at or after `start`; (n, n) if there is none."""
    n = len(buf)
    if buf.find(b"{", start + 1) < 0:  # memchr: spares the regex a run of `}` with no `{`
        return n, n
    m = _BOUNDARY.search(buf, start)
    return (m.start(), m.end() - 1) if m else (n, n)


def _line_groups(text: bytes, base: int) -> Iterator[tuple[int, list[bytes], int]]:
    """(offset, lines, work): text split at `\\n`, whole; or if it starts with a blank or
    tiny line (a record's line starts with `{` and is long), a window of whole lines at a
    time, a window of nothing but whitespace skipped in C (no lines, its work counted)."""
    if text[0] not in _WS_BYTES and text.find(b"\n", 0, _DENSE_LINE_BYTES) < 0:
        yield base, text.split(b"\n"), len(text)
        return
    lo = 0
    while lo < len(text):
        hi = text.find(b"\n", lo + _LINE_WINDOW - 1) + 1 or len(text)
        window = text[lo:hi]
        yield base + lo, window.split(b"\n") if window.translate(None, _WS) else [], 2 * len(window)
        lo = hi


class RecordStream:
    """Incremental reader: `feed(chunk)` and finally `finish()` return complete records as
    (offset, dict) pairs; bad bytes accumulate in `malformed`. `feed_steps` and
    `finish_steps` do the same work in bounded steps (see the module docstring).

    Non-object JSON (`[1]`, `42`) is malformed here; whether an object is an SES event is
    the classifier's call.
    """

    def __init__(self, fields: Fields | None = None) -> None:
        # Decodes only what the sink reads, or None: the whole record is decoded instead.
        self._fields = fields
        self.malformed: list[Malformed] = []  # the first MALFORMED_KEPT
        self.malformed_count = 0  # all of them
        self.bytes_in = 0  # raw bytes fed
        self.bytes_decoded = 0  # bytes after decompression
        self.gzip: bool | None = None  # None until the first two bytes are seen
        self._head = b""
        self._inflater: Any = None
        self._dead = False  # a corrupt gzip stream: nothing after it can be trusted
        self._pending = b""  # decoded bytes not yet cut into records
        self._base = 0  # decoded offset of _pending[0]
        self._finished = False
        self._spent = 0  # work since the last pause
        self._bad_end = -1  # end of the last malformed stretch (-1: it has no length)
        self._bad_kept = False  # whether that stretch is in `malformed`

    # ---- public ------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Decoded bytes held back, waiting for the end of their record."""
        return len(self._pending)

    def feed(self, data: bytes, sink: Sink | None = None) -> list[tuple[int, dict[str, Any]]]:
        """Read a chunk. With a `sink`, each record is handed over as soon as it is parsed
        (and nothing is returned): records are not kept alive, which also spares the
        garbage collector; without one they are returned as a list."""
        out: list[tuple[int, dict[str, Any]]] = []
        for _ in self.feed_steps(data, sink or (lambda offset, rec: out.append((offset, rec)))):
            pass
        return out

    def finish(self, sink: Sink | None = None) -> list[tuple[int, dict[str, Any]]]:
        """Flush the tail: whatever is left must be complete records or it is malformed."""
        out: list[tuple[int, dict[str, Any]]] = []
        for _ in self.finish_steps(sink or (lambda offset, rec: out.append((offset, rec)))):
            pass
        return out

    def feed_steps(self, data: bytes, sink: Sink) -> Steps:
        """`feed` in steps of bounded work: records go to `sink` as they are parsed, and the
        generator pauses every STEP_WORK units. Run it to the end before feeding more."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        self.bytes_in += len(data)
        return self._feed_steps(data, sink)

    def finish_steps(self, sink: Sink) -> Steps:
        """`finish` in steps of bounded work."""
        if self._finished:
            return iter(())
        self._finished = True
        return self._finish_steps(sink)

    # ---- steps -------------------------------------------------------------------

    def _feed_steps(self, data: bytes, sink: Sink) -> Steps:
        for piece in self._decode(data):
            yield from self._take(piece, sink, final=False)
            yield from self._pause()

    def _finish_steps(self, sink: Sink) -> Steps:
        for piece in self._decode_end():
            yield from self._take(piece, sink, final=False)
        yield from self._take(b"", sink, final=True)
        self._check_truncated_gzip()

    def _pause(self) -> Steps:
        """Pause if a step's worth of work was done (callers inline this test in loops)."""
        if self._spent >= STEP_WORK:
            self._spent = 0
            yield

    # ---- decoding ----------------------------------------------------------------

    def _decode(self, data: bytes) -> Iterable[bytes]:
        if self.gzip is None:
            self._head += data
            if len(self._head) < 2:
                return []
            data, self._head = self._head, b""
            self.gzip = data[:2] == GZIP_MAGIC
        if not self.gzip:
            return self._slices(data)
        return self._inflate(data)

    def _slices(self, data: bytes) -> Iterator[bytes]:
        """A plain chunk in pieces of at most INFLATE_STEP bytes, like inflated ones."""
        for i in range(0, len(data), INFLATE_STEP):
            piece = data[i : i + INFLATE_STEP]
            self.bytes_decoded += len(piece)
            yield piece

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
        compressible object never becomes one big buffer, nor one long call)."""
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
            self._spent += len(out) + RECORD_WORK
            if out:
                self.bytes_decoded += len(out)
                yield out

    def _corrupt(self, reason: str) -> None:
        self._dead = True
        self._inflater = None
        self._note(self.bytes_decoded, 0, reason)

    def _check_truncated_gzip(self) -> None:
        if self.gzip and self._inflater is not None and not self._inflater.eof and not self._dead:
            self._note(self.bytes_decoded, 0, "gzip stream truncated (no end of member)")

    # ---- cutting into records ----------------------------------------------------

    def _take(self, piece: bytes, out: Sink, final: bool) -> Steps:
        pending = self._pending
        head = pending[:_DENSE_LINE_BYTES] + piece[:_DENSE_LINE_BYTES]
        if (
            not final
            and head[:1] not in _BLANK_STARTS
            and b"\n" not in head[:_DENSE_LINE_BYTES]
            and pending.isascii()
            and piece.isascii()
        ):
            # The usual piece (long lines of ASCII): split as it is, its first line joined
            # to the tail held back, which spares two copies of the piece (`buf` below).
            lines = piece.split(b"\n")
            if len(lines) > 1:
                rest = lines.pop()
                lines[0] = pending + lines[0]
                cut = len(pending) + len(piece) - len(rest)
                self._pending = b""
                self._spent += len(pending) + len(piece)
                yield from self._lines([(self._base, lines, cut)], self._fields, out)
                yield from self._hold(rest, self._base + cut, out)
                return
        buf = pending + piece if pending else piece
        self._pending = b""  # buf holds it now (one copy in memory, not two)
        self._spent += len(buf)
        base = self._base
        cut = len(buf) if final else buf.rfind(b"\n") + 1
        if cut:
            text = buf[:cut]
            # A fields decoder skips what it does not read, without checking that it is
            # UTF-8 (orjson checks the whole text): so it is used on valid UTF-8 only.
            fields = self._fields if text.isascii() or _is_utf8(text) else None
            yield from self._lines(_line_groups(text, base), fields, out)
        yield from self._hold(buf[cut:], base + cut, out)

    def _hold(self, rest: bytes, base: int, out: Sink) -> Steps:
        """Keep an undelimited tail for the next piece (cut into records if too long)."""
        if len(rest) > MAX_PENDING_BYTES:  # no newline in sight: records are concatenated
            used = yield from self._scan(rest, base, out, final=False)
            rest = rest[used:]
            base += used
        self._pending = rest
        self._base = base

    def _lines(
        self, groups: Iterable[tuple[int, list[bytes], int]], fields: Fields | None, out: Sink
    ) -> Steps:
        loads, decode_error, fail = orjson.loads, orjson.JSONDecodeError, _FAIL
        blank_first, no_end, step, record_work = _WS_BYTES, _NO_END, STEP_WORK, RECORD_WORK
        most = MAX_RECORD_BYTES
        decode, fields_most = (fields, most) if fields is not None else (_whole, -1)
        spent = self._spent  # a local in the loop, written back around every pause
        for start, lines, cost in groups:
            offset = start
            spent += cost
            if spent >= step:
                self._spent = spent = 0
                yield
            for line in lines:
                size = len(line)
                if size:
                    spent += size + record_work
                    if spent >= step:
                        self._spent = spent = 0
                        yield
                    if size <= fields_most:
                        try:
                            record = decode(line)
                        except (ValueError, RecursionError):  # refused: decoded whole below
                            pass
                        else:
                            out(offset, record)
                            offset += size + 1
                            continue
                    try:  # a line too long to be one record may still be several
                        obj = loads(line) if line[-1] not in no_end and size <= most else fail
                    except decode_error:
                        obj = fail
                    if obj is fail:
                        if line[0] not in blank_first or line.strip(_WS):  # not a blank line
                            self._spent = spent
                            yield from self._scan(line, offset, out, final=True)
                            spent = self._spent
                    elif type(obj) is dict:
                        out(offset, obj)
                    else:
                        self._bad(offset, size, "not a JSON object")
                offset += size + 1
        self._spent = spent

    def _scan(self, buf: bytes, base: int, out: Sink, final: bool) -> Generator[None, None, int]:
        """Cut undelimited text into records; returns how many bytes were used (when not
        final, an incomplete last record stays for the next call)."""
        n = len(buf)
        pos = _skip_ws(buf, 0)
        # Finding where records end is the slow path; a budget keeps hostile input linear.
        budget = 4 * n + MAX_RECORD_BYTES
        # The next `}{` pair and the next record start, searched lazily (n: none left), so
        # that each search covers buf about once in all.
        pair = starts = -1
        pair_open = n  # the `{` of that pair
        self._spent += 2 * n
        while pos < n:
            if self._spent >= STEP_WORK:
                self._spent = 0
                yield
            if pair <= pos:
                pair, pair_open = _next_pair(buf, pos + 1)
            end = pair + 1 if pair < n else n
            if pair == n and not final and n - pos <= MAX_RECORD_BYTES:
                return pos  # the last record may continue in the next chunk
            self._spent += RECORD_WORK
            if end - pos > _PROBE_BYTES and _broken_early(buf, pos):
                self._spent += _PROBE_BYTES  # and loads(buf[pos:end]) would fail: not asked
            elif buf[end - 1] not in _NO_END and end - pos <= MAX_RECORD_BYTES:
                self._spent += end - pos
                try:
                    obj = orjson.loads(buf[pos:end])
                except orjson.JSONDecodeError:
                    pass
                else:
                    self._emit(obj, base + pos, end - pos, out)
                    pos = _skip_ws(buf, end)
                    continue
            if starts <= pos:
                found = _RECORD_START.search(buf, pos + 1)
                starts = found.start() if found else n
            # Not one record up to the next `}{`: maybe that `}{` was inside a string, so
            # find where this record really ends and try that.
            reason = "invalid JSON" if buf[pos] == _OPEN else "not JSON"
            if buf[pos] == _OPEN and budget > 0:
                stop = min(starts, pos + MAX_RECORD_BYTES)
                budget -= stop - pos
                self._spent += stop - pos
                record = _object_end(buf, pos, stop)
                if record is None:
                    if starts == n and not final and n - pos <= MAX_RECORD_BYTES:
                        return pos  # may be completed by the next chunk
                    if stop - pos == MAX_RECORD_BYTES:
                        reason = f"no record end within {MAX_RECORD_BYTES} bytes"
                elif record[0] != end:
                    close, obj = record
                    self._emit(obj, base + pos, close - pos, out)
                    pos = _skip_ws(buf, close)
                    continue
            # Broken (truncated, invalid, garbage): skip to the next plausible record start,
            # the `{` of a `}{` pair (its `}` may be the one at pos) or a record's first key.
            here = _BOUNDARY.match(buf, pos)
            nxt = min(here.end() - 1 if here else pair_open, starts)
            if nxt == n and not final and n - pos <= MAX_RECORD_BYTES:
                return pos
            self._bad(base + pos, nxt - pos, reason)
            pos = nxt
        return n

    def _emit(self, obj: Any, offset: int, length: int, out: Sink) -> None:
        if type(obj) is dict:
            out(offset, obj)
        else:
            self._bad(offset, length, "not a JSON object")

    def _bad(self, offset: int, length: int, reason: str) -> None:
        if offset == self._bad_end:
            # one broken stretch, found piecewise while resynchronizing: count it once
            if self._bad_kept:
                last = self.malformed[-1]
                # its start says best what went wrong: keep the first reason
                self.malformed[-1] = Malformed(last.offset, last.length + length, last.reason)
            self._bad_end = offset + length
            return
        self._note(offset, length, reason)

    def _note(self, offset: int, length: int, reason: str) -> None:
        """Count a malformed stretch; keep it if fewer than MALFORMED_KEPT are kept."""
        self.malformed_count += 1
        self._bad_kept = len(self.malformed) < MALFORMED_KEPT
        if self._bad_kept:
            self.malformed.append(Malformed(offset, length, reason))
        self._bad_end = offset + length if length else -1


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
