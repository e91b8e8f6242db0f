"""The worker's fast path against the straightforward one (pure, no AWS).

The worker decodes only the fields `classify` reads (worker/classify.py, read_fields) and
caches a few answers per value; the straightforward path decodes whole records with
orjson and classifies them with the same rules. Both must count, group and name every
event alike, on SES's own samples and on generated data with malformed records mixed in.
"""

from __future__ import annotations

import copy
import gzip
import itertools
import random
from datetime import UTC, datetime
from hashlib import blake2b
from pathlib import Path
from typing import Any

import orjson
import pytest

from sesguard.core.jobs import (
    _TAG_UNESCAPES,
    _TAG_VALUE_RE,
    JOB_TAG,
    PARTNER_TAG,
    job_id_from_tag,
    job_tag_value,
)
from sesguard.core.mailbox import is_simulator_address
from sesguard.core.partners import hour_floor
from tests.fixtures.ses_events import CONCATENATED, NDJSON, sample_records
from worker.aggregate import Aggregator
from worker.classify import (
    Delta,
    NotAnEvent,
    _simulated,
    _Tags,
    classify,
    event_time,
    read_fields,
)
from worker.reader import RecordStream, read_all

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "ses-events"


def aggregate(data: bytes, chunk: int, fast: bool) -> Aggregator:
    agg = Aggregator()
    if not fast:
        agg._stream = RecordStream()  # whole records, orjson only
    for i in range(0, len(data), chunk):
        agg.feed_bytes(data[i : i + chunk])
    agg.finish_bytes()
    return agg


def outcome(agg: Aggregator) -> Any:
    counts = agg.counts()
    minutes = [(m.partner_id, m.minute, m.events, m.jobs) for m in agg.take()]
    return counts, agg.stats, minutes, agg.partners()


def reference_key(kind: str, message_id: str, detail: Any, recipients: list[Any]) -> bytes:
    """worker/eventkey.py's event_key as first written: keys are stored, so never change."""
    parts = [kind, message_id]
    if kind not in {"Send", "Reject", "Rendering Failure", "RenderingFailure"}:
        feedback = detail.get("feedbackId") if type(detail) is dict else None
        if type(feedback) is str and feedback:
            parts.append(feedback)
        else:
            if type(detail) is dict:
                for name in ("timestamp", "link", "ipAddress", "userAgent"):
                    value = detail.get(name)
                    if value is not None:
                        parts.append(f"{name}={value}")
            parts.extend(str(r.get("emailAddress") if type(r) is dict else r) for r in recipients)
    return blake2b("\x1f".join(parts).encode(), digest_size=12).digest()


DETAIL_KEYS = {
    "Delivery": ("delivery", "recipients"),
    "DeliveryDelay": ("deliveryDelay", "delayedRecipients"),
    "Bounce": ("bounce", "bouncedRecipients"),
    "Complaint": ("complaint", "complainedRecipients"),
    "Open": ("open", None),
    "Click": ("click", None),
    "Rendering Failure": ("failure", None),
}


def check_keys(records: list[tuple[int, dict[str, Any]]]) -> int:
    """Each counted record's key is the reference key; returns how many were checked."""
    n = 0
    for _, rec in records:
        try:
            d = classify(rec)
        except NotAnEvent:
            continue
        if not isinstance(d, Delta) or type(rec["mail"].get("messageId")) is not str:
            continue
        if not rec["mail"]["messageId"]:
            continue
        kind = rec["eventType"]
        name, list_key = DETAIL_KEYS.get(kind, (None, None))
        detail = rec.get(name) if name else None
        if list_key:
            recipients = detail[list_key]
        else:
            dest = rec["mail"].get("destination")
            recipients = dest if type(dest) is list else []
        assert d.key == reference_key(kind, rec["mail"]["messageId"], detail, recipients)
        n += 1
    return n


def variants(rng: random.Random) -> list[bytes]:
    """Lines of SES records in shapes SES writes and shapes it does not, and garbage."""
    out: list[bytes] = []
    for base in sample_records():
        for n in range(14):
            rec = copy.deepcopy(base)
            mail = rec["mail"]
            detail = next((rec[k] for k, _ in DETAIL_KEYS.values() if k in rec), None)
            if n == 1:
                mail["destination"].append("success@SIMULATOR.amazonses.com")
                for key in ("recipients", "bouncedRecipients", "complainedRecipients"):
                    if detail is not None and key in detail:
                        entry: Any = "bounce@simulator.amazonses.com"
                        if detail[key] and type(detail[key][0]) is dict:
                            entry = {"emailAddress": "Ops <bounce@simulator.amazonses.com>"}
                        detail[key].append(entry)
            elif n == 2:
                mail.pop("messageId", None)
            elif n == 3:
                mail["messageId"] = ""
            elif n == 4:
                mail.setdefault("tags", {})["partner_id"] = rng.choice(
                    [["_x"], ["bad id!"], [], 5, None, "acme", [["acme"]], [[]]]
                )
            elif n == 5:
                mail["headers"] = [{"name": "Subject", "value": "Ihre Bestellung: Größe ✓"}]
            elif n == 6:
                mail["timestamp"] = rng.choice([5, None, "2026-11-29T01:02:03+00:00", "x"])
            elif n == 7 and detail is not None:
                detail["timestamp"] = rng.choice([2**62, None, "2026-11-29T01:02", []])
            elif n == 8:
                rec["extra"] = {"deep": [[[{"a": [1, 2.5, -0.0, True, None]}]]]}
                mail["commonHeaders"] = {"subject": "x" * 3000}
            elif n == 9:
                mail["destination"] = [{"emailAddress": "a@b.example"}, "c@d.example"]
            elif n == 10:
                rec["eventType"] = rng.choice(["bounce", "BOUNCE", "Subscription", "Nope", 7])
            elif n == 11 and detail is not None:
                detail["feedbackId"] = rng.choice(["", None, 3, "fb-1"])
            elif n == 12:
                mail["tags"] = rng.choice([None, [], {"partner_id": "acme"}, {"sesguard_job": 1}])
            elif n == 13:
                rec["mail"] = rng.choice([None, [], "mail", 0])
            out.append(orjson.dumps(rec))
        line = orjson.dumps(base)
        out.append(line)  # the same record again: a duplicate
        # The same key twice in one object: the last one counts, for both readers.
        out.append(line.replace(b'{"eventType":', b'{"eventType":"Nope","eventType":', 1))
        out.append(line.replace(b'"mail":{', b'"mail":3,"mail":{', 1))
        out.append(line.replace(b'"mail":{', b'"mail":{"messageId":"dup",', 1))
        # A number orjson reads as a float where the fields decoder would read an int.
        big = b'"timestamp":123456789012345678901234567890,"x":"'
        out.append(line.replace(b'"timestamp":"', big, 1))
    out += [
        b"[1,2]",
        b"42",
        b'"text"',
        b"{}",
        b'{"notificationType":"Bounce","mail":{}}',
        b'{"Type":"Notification","Message":"{}"}',
        out[0] + b" " + out[1],  # two records on one line
        out[2][:-40],  # truncated
        b"\x00\x01garbage}{",
        b"   ",
        out[3] + b"\r",  # CRLF
        out[4].replace(b'"mail":', b'"h":"\\ud800","mail":', 1),  # lone surrogate
        out[5].replace(b'"mail":', b'"h":"a\x01b","mail":', 1),  # raw control character
        out[6].replace(b'"mail":', b'"h":[' + b"[" * 1100 + b"]" * 1100 + b'],"mail":', 1),
        out[7].replace(b'"mail":', b'"h":1e308,"mail":', 1),
    ]
    return out


def not_utf8(lines: list[bytes]) -> list[bytes]:
    """Bytes that are not UTF-8 in a field the worker does not read."""
    return [line.replace(b'"mail":', b'"h":"\xff\xfe","mail":', 1) for line in lines[::7]]


def objects() -> list[tuple[str, bytes]]:
    rng = random.Random(20)
    lines = variants(rng)
    shuffled = lines[:]
    rng.shuffle(shuffled)
    out = [
        ("samples-ndjson", NDJSON),
        ("samples-concatenated", CONCATENATED),
        ("generated", b"\n".join(lines) + b"\n"),
        ("generated-shuffled", b"\n".join(shuffled)),
        ("generated-not-utf8", b"\n".join(lines + not_utf8(lines))),
    ]
    for name in ("events.ndjson", "events-concatenated.json"):
        if (SHARED / name).exists():
            out.append((f"shared-{name}", (SHARED / name).read_bytes()))
    return out


@pytest.mark.parametrize(("name", "data"), objects(), ids=[n for n, _ in objects()])
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("chunk", [1 << 20, 997, 64])
def test_fast_path_counts_groups_and_names_events_like_whole_records(
    name: str, data: bytes, gz: bool, chunk: int
) -> None:
    blob = gzip.compress(data) if gz else data
    fast, plain = aggregate(blob, chunk, True), aggregate(blob, chunk, False)
    assert outcome(fast) == outcome(plain)
    assert fast.stats.records > 0
    if name.startswith("generated") and chunk == 64 and not gz:
        assert fast.stats.malformed_count > 10
        assert fast.stats.duplicates > 0
        assert fast.stats.events > 100
    assert check_keys(read_all(data)[0]) > 0


def test_the_sample_files_take_the_fast_path() -> None:
    lines = [line for line in NDJSON.splitlines() if line.strip()]
    assert all(read_fields(line) for line in lines)


def test_the_tags_read_are_the_partner_and_job_tags() -> None:
    assert set(_Tags.__annotations__) == {PARTNER_TAG, JOB_TAG}


def test_a_record_without_a_message_id_is_decoded_whole() -> None:
    """Its key is made of its whole content, which the fields alone do not hold."""
    rec = sample_records()[0]
    del rec["mail"]["messageId"]
    with pytest.raises(ValueError):
        read_fields(orjson.dumps(rec))


def test_an_out_of_range_number_in_an_unread_field_is_the_one_known_difference() -> None:
    """orjson refuses a number beyond a double's range anywhere in a record; the fields
    decoder skips unread fields without converting numbers, so it reads the record (SES
    never writes such a number: a record that has one is not SES's in any case)."""
    line = orjson.dumps(sample_records()[0]).replace(b'"mail":', b'"h":1e400,"mail":', 1)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(line)
    assert read_fields(line)["eventType"] == "Send"
    assert aggregate(line, 1 << 20, True).stats.events == 1
    assert aggregate(line, 1 << 20, False).stats.malformed_count == 1


def reference_job_id(value: object) -> str | None:
    """job_id_from_tag as first written, by its regex."""
    if type(value) is not str or not _TAG_VALUE_RE.fullmatch(value):
        return None
    out: list[str] = []
    chars = iter(value)
    for c in chars:
        out.append(_TAG_UNESCAPES[next(chars)] if c == "_" else c)
    return "".join(out)


def test_job_ids_from_tags_match_the_tag_grammar() -> None:
    values: list[object] = [None, 5, [], "", "\uff21", "a\u0663", "\u00b2", "a\n", "x" * 129]
    for n in range(6):
        values += ["".join(t) for t in itertools.product("_dca-.é", repeat=n)]
    for unit in ("a", "_d", "__", "_c", "-"):
        values += [unit * k + tail for k in (127, 128, 129) for tail in ("", "a", "\n")]
    values += [job_tag_value(j) for j in ("order:1", "a_b.c:d", "__", "x" * 128)]
    for value in values:
        assert job_id_from_tag(value) == reference_job_id(value), value


def test_simulator_counts_match_the_address_test() -> None:
    addrs = [
        "a@b.example",
        "success@simulator.amazonses.com",
        "Ops <BOUNCE@Simulator.AmazonSES.com> ",
        "İx@simulator.amazonses.com",
        "x@simulator.amazonses.co",
        "",
        "@simulator.amazonses.com",
    ]
    rng = random.Random(3)
    for _ in range(500):
        entries: list[Any] = []
        for _ in range(rng.randrange(5)):
            a = rng.choice(addrs)
            entries.append(rng.choice([a, a, {"emailAddress": a}, {"x": 1}, 5, None]))
        expected = sum(
            is_simulator_address(r.get("emailAddress") if type(r) is dict else r) for r in entries
        )
        assert _simulated(entries) == expected, entries


def test_event_times_are_the_same_read_again() -> None:
    """event_time keeps the minutes it has read: a second read, and another second of
    the same minute, give what a full parse gives."""
    for ts in [
        "2026-11-29T01:02:03.000Z",
        "2026-11-29T01:02:04Z",
        "2026-11-29T01:02:59.999+00:00",
        "2026-11-29T01:02:03.000+01:00",
        "2026-11-29 01:02:03.000Z",
        "2026-11-29T01:02:03",
        "2026-13-29T01:02:03.000Z",
    ]:
        try:
            parsed = datetime.fromisoformat(ts)
            if parsed.tzinfo is None:
                raise ValueError(ts)
        except ValueError:
            for _ in range(2):
                with pytest.raises(ValueError):
                    event_time(ts)
            continue
        expected = (hour_floor(parsed), parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M"))
        assert event_time(ts) == expected
        assert event_time(ts) == expected
