"""Every kind of malformed job goes to the DLQ with its reason; good jobs beside it are sent."""

from __future__ import annotations

import orjson

from sesguard.core.jobs import MAX_SQS_MESSAGE_BYTES
from tests.sender.support import Env


def oversize_body(e: Env) -> str:
    """Fits one SQS message as sent, but the normalized job (defaults filled in, a job_id
    generated) exceeds 256 KiB: it could never be held or replayed, so it is refused."""
    body = e.job("big")
    del body["job_id"]
    body["text"] = ""
    base = len(orjson.dumps(body))
    body["text"] = "x" * (MAX_SQS_MESSAGE_BYTES - 80 - base)
    raw = orjson.dumps(body).decode()
    assert len(raw) == MAX_SQS_MESSAGE_BYTES - 80
    return raw


async def test_each_malformed_kind_is_dead_lettered_with_its_reason(env: Env) -> None:
    bad: dict[str, tuple[str, str]] = {  # name -> (body, expected reason fragment)
        "not json": ("this is {not json", "not JSON"),
        "json array": ("[1, 2]", "JSON object"),
        "missing fields": (orjson.dumps({"job_id": "m1", "partner_id": "acme"}).decode(), "from"),
        "bad address": (orjson.dumps(env.job("m2", to=["not-an-address"])).decode(), "to.0"),
        "crlf subject": (
            orjson.dumps(env.job("m3", subject="hi\r\nBcc: victim@example.org")).decode(),
            "subject: must not contain CR or LF",
        ),
        "crlf from": (
            orjson.dumps(env.job("m4", **{"from": "a@isv.example.com\nX-Evil: 1"})).decode(),
            "from",
        ),
        "no body": (orjson.dumps(env.job("m5", text=None)).decode(), "text or html"),
        "bad tag": (orjson.dumps(env.job("m6", tags={"bad tag": "x"})).decode(), "tags"),
        "reserved tag": (
            orjson.dumps(env.job("m7", tags={"partner_id": "other"})).decode(),
            "reserved",
        ),
        "bad partner id": (orjson.dumps(env.job("m8", partner="no spaces")).decode(), "partner_id"),
        "unknown partner": (
            orjson.dumps(env.job("m9", partner="ghost")).decode(),
            "unknown partner",
        ),
        "duplicate key": (
            '{"partner_id": "_unattributed", ' + orjson.dumps(env.job("m10")).decode()[1:],
            "partner_id: duplicate key",
        ),
        "oversize": (oversize_body(env), "bytes; SQS allows"),
    }
    good = [env.job("ok-1"), env.job("ok-2")]
    await env.enqueue(good[0], *[b for b, _ in list(bad.values())[:8]])
    await env.enqueue(*[b for b, _ in list(bad.values())[8:-1]], good[1])
    await env.clients.sqs.send_message(QueueUrl=env.queue_url, MessageBody=bad["oversize"][0])

    svc = await env.drain()

    assert sorted(env.ses.subjects()) == ["subject job-ok-1", "subject job-ok-2"]
    dead = await env.dead_letters()
    assert len(dead) == len(bad)
    by_body = {(b if isinstance(b, str) else orjson.dumps(b).decode()): r for b, r in dead}
    for name, (body, fragment) in bad.items():
        key = body if name in ("not json",) else orjson.dumps(orjson.loads(body)).decode()
        if name == "oversize":
            # Too large to carry its reason and source id beside it: cut to fit, never
            # dropped (sesguard/aws/deadletter.py), so the DLQ holds a long prefix of it.
            cut = [b for b in by_body if len(b) > 200_000 and key.startswith(b)]
            assert len(cut) == 1, f"{name}: its cut body not in the DLQ"
            key = cut[0]
        assert key in by_body, f"{name}: original body not in the DLQ"
        reason = by_body[key]
        assert reason is not None and fragment in reason, f"{name}: reason {reason!r}"
    assert svc.tally["dead_lettered"] == len(bad)
    assert svc.tally["sent"] == 2
    assert await env.queue_depth() == (0, 0)  # deleted, not left for maxReceiveCount
