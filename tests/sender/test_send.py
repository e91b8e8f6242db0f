"""The sender against moto: what it asks SES, once per job, held jobs, failures."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

from sender.records import JOB_SK
from sesguard.aws import table as t
from sesguard.aws.held import HeldJobs, count_held
from sesguard.core.partners import PausedBy
from tests.conftest import client_error, json_logs, wait_until
from tests.sender.support import DOMAIN, PARTNER, Env, sender_settings


async def record(e: Env, job_id: str) -> dict | None:
    resp = await e.clients.dynamodb.get_item(
        TableName=e.settings.table, Key=t.key(t.job_pk(job_id), JOB_SK), ConsistentRead=True
    )
    return t.from_item(resp["Item"]) if "Item" in resp else None


async def test_every_send_has_partner_tag_job_tags_and_configuration_set(env: Env) -> None:
    await env.enqueue(
        env.job(1),
        env.job(
            2,
            cc=["cc@example.org"],
            bcc=["bcc@example.org"],
            reply_to=["help@isv.example.com"],
            html="<p>hi</p>",
            tags={"campaign": "spring-2026", "kind": "news"},
        ),
        env.job(3, text=None, html="<b>only html</b>"),
    )
    svc = await env.drain()
    assert svc.tally["sent"] == 3
    assert len(env.ses.sent) == 3
    for params in env.ses.sent:
        assert params["ConfigurationSetName"] == "sesguard"
        assert params["EmailTags"][0] == {"Name": "partner_id", "Value": PARTNER}
        # the job id, in SES's tag charset (job-1 needs no escape): SES's Send event names it
        subject = params["Content"]["Simple"]["Subject"]["Data"]
        assert params["EmailTags"][1] == {
            "Name": "sesguard_job",
            "Value": subject.removeprefix("subject "),
        }
        assert "TenantName" not in params  # use_tenants is off by default
    by_subject = {p["Content"]["Simple"]["Subject"]["Data"]: p for p in env.ses.sent}
    two = by_subject["subject job-2"]
    assert two["EmailTags"] == [
        {"Name": "partner_id", "Value": PARTNER},
        {"Name": "sesguard_job", "Value": "job-2"},
        {"Name": "campaign", "Value": "spring-2026"},
        {"Name": "kind", "Value": "news"},
    ]
    assert two["Destination"] == {
        "ToAddresses": ["user2@example.org"],
        "CcAddresses": ["cc@example.org"],
        "BccAddresses": ["bcc@example.org"],
    }
    assert two["ReplyToAddresses"] == ["help@isv.example.com"]
    assert two["FromEmailAddress"] == f"News <news@{DOMAIN}>"
    assert set(two["Content"]["Simple"]["Body"]) == {"Text", "Html"}
    assert set(by_subject["subject job-3"]["Content"]["Simple"]["Body"]) == {"Html"}
    # moto really got them, the queue is empty, and each job is recorded as sent
    assert await env.queue_depth() == (0, 0)
    rec = await record(env, "job-2")
    assert rec is not None and rec["state"] == "sent" and rec["message_id"]
    assert rec["expires_at"] > datetime.now(UTC).timestamp() + 13 * 86400


async def test_tenant_name_is_sent_when_enabled(env: Env) -> None:
    await env.store.update(PARTNER, tenant_name="acme-tenant")
    await env.enqueue(env.job(1))
    await env.drain(sender_settings(use_tenants=True))
    assert env.ses.sent[0]["TenantName"] == "acme-tenant"


async def test_duplicate_job_id_is_sent_once(env: Env) -> None:
    await env.enqueue(env.job(1), env.job(1), env.job(2))
    first = await env.drain()
    await env.enqueue(env.job(1))  # the same job_id again, later
    second = await env.drain()
    assert Counter(env.ses.subjects()) == {"subject job-1": 1, "subject job-2": 1}
    # the same job_id twice in one batch: the second waits for the first, no deferral
    assert first.tally["duplicate"] == 1 and first.tally["deferred"] == 0
    assert second.tally["duplicate"] == 1
    assert await env.queue_depth() == (0, 0)


async def test_a_failed_delete_brings_the_job_back_as_a_duplicate_not_a_resend(
    env: Env,
) -> None:
    """SQS failed to delete a sent job's message: it is redelivered, and the once-per-job
    record turns the redelivery into a duplicate; SES sees the job once."""
    kept: list[str] = []

    def fail_deletes(params: dict, **_: object) -> None:
        kept.extend(e["ReceiptHandle"] for e in params["Entries"])
        raise client_error("InternalError", "injected", 500)

    sqs = env.clients.sqs
    await env.enqueue(env.job(1), env.job(2))
    sqs.meta.events.register(
        "provide-client-params.sqs.DeleteMessageBatch", fail_deletes, unique_id="t-del"
    )
    try:
        await env.drain()
    finally:
        sqs.meta.events.unregister(
            "provide-client-params.sqs.DeleteMessageBatch", unique_id="t-del"
        )
    assert sorted(env.ses.subjects()) == ["subject job-1", "subject job-2"]
    assert await env.queue_depth() == (0, 2)  # still in flight: not deleted
    for receipt in kept:  # redelivery now, instead of after the visibility timeout
        await sqs.change_message_visibility(
            QueueUrl=env.queue_url, ReceiptHandle=receipt, VisibilityTimeout=0
        )
    again = await env.drain()
    assert again.tally["duplicate"] == 2 and again.tally["sent"] == 0
    assert sorted(env.ses.subjects()) == ["subject job-1", "subject job-2"]  # still once each
    assert await env.queue_depth() == (0, 0)


async def test_job_without_job_id_uses_the_sqs_message_id(env: Env) -> None:
    body = env.job(7)
    del body["job_id"]
    await env.enqueue(body)
    await env.drain()
    assert len(env.ses.sent) == 1


async def test_paused_partner_is_held_not_sent_then_replayed_exactly_once(env: Env) -> None:
    await env.store.try_pause(PARTNER, "operator says so", PausedBy.OPERATOR)
    await env.enqueue(*(env.job(n) for n in range(5)))
    svc = await env.drain()
    assert svc.tally["held"] == 5
    assert env.ses.sent == []
    assert await env.queue_depth() == (0, 0)
    held = HeldJobs.from_clients(env.clients, env.settings)
    assert await count_held(env.store.dynamodb, env.store.table, PARTNER) == 5

    assert await env.store.resume(PARTNER)
    assert await held.replay(PARTNER, env.queue_url) == 5
    assert await held.replay(PARTNER, env.queue_url) == 0
    await env.drain()
    assert sorted(env.ses.subjects()) == [f"subject job-{n}" for n in range(5)]
    assert await held.count(PARTNER) == 0


async def test_throttling_is_backed_off_and_retried_then_sent_once(env: Env) -> None:
    calls = Counter[str]()

    def throttle_first(params: dict) -> Exception | None:
        subject = params["Content"]["Simple"]["Subject"]["Data"]
        calls[subject] += 1
        if calls[subject] == 1:
            return client_error("TooManyRequestsException", "Maximum sending rate exceeded.", 429)
        return None

    env.ses.fail = throttle_first
    await env.enqueue(env.job(1), env.job(2))
    svc = await env.drain()
    assert sorted(env.ses.subjects()) == ["subject job-1", "subject job-2"]
    assert calls == {"subject job-1": 2, "subject job-2": 2}
    assert svc.tally["sent"] == 2 and svc.tally["retried"] == 0
    assert await env.dead_letters() == []


async def test_every_log_line_of_a_job_names_it(env: Env) -> None:
    """partner_id and job_id are bound into the log context per job (the handler), not
    passed to each call: a line logged deep in the send (a throttled attempt) names its
    own job, with two jobs in flight at once, and nothing stays bound after the job."""
    throttled = set[str]()

    def throttle_first(params: dict) -> Exception | None:
        subject = params["Content"]["Simple"]["Subject"]["Data"]
        if subject not in throttled:
            throttled.add(subject)
            return client_error("TooManyRequestsException", "Maximum sending rate exceeded.", 429)
        return None

    env.ses.fail = throttle_first
    await env.enqueue(env.job(1), env.job(2))
    with json_logs() as lines:
        await env.drain()
    deep = [(e.get("partner_id"), e.get("job_id")) for e in lines if e["event"] == "job_throttled"]
    assert sorted(deep) == [(PARTNER, "job-1"), (PARTNER, "job-2")]
    stopped = [e for e in lines if e["event"] == "sender_stopped"]
    assert stopped and not [e for e in stopped if "job_id" in e or "partner_id" in e]


async def test_throttling_that_does_not_clear_returns_the_job(env: Env) -> None:
    env.ses.fail = lambda p: client_error("Throttling", "Maximum sending rate exceeded.", 400)
    await env.enqueue(env.job(1))
    svc = env.service(drain=False, wait_seconds=0, throttle_attempts=3)
    task = asyncio.create_task(svc.run())
    await wait_until(lambda: svc.tally["retried"] > 0)
    svc.stop()
    assert await task == 0
    assert len(env.ses.attempts) >= 3 and env.ses.sent == []
    assert await record(env, "job-1") is None  # claim released
    env.ses.fail = lambda p: None
    await env.drain()
    assert env.ses.subjects() == ["subject job-1"]


async def test_ses_rejection_dead_letters_with_reason(env: Env) -> None:
    # moto rejects a From identity that is not verified, like SES (MessageRejected)
    await env.enqueue(env.job(1, **{"from": "someone@unverified.example.net"}), env.job(2))
    svc = await env.drain()
    assert env.ses.subjects() == ["subject job-2"]
    dead = await env.dead_letters()
    assert len(dead) == 1
    body, reason = dead[0]
    assert isinstance(body, dict) and body["job_id"] == "job-1"  # the original body
    assert reason is not None and reason.startswith("rejected by SES: MessageRejected")
    assert svc.tally["dead_lettered"] == 1
    assert await record(env, "job-1") is None  # not sent: the claim was released
    assert await env.queue_depth() == (0, 0)


async def test_account_sending_paused_stops_work_and_keeps_every_job(env: Env) -> None:
    env.ses.fail = lambda p: client_error("SendingPausedException", "Sending paused for account")
    await env.enqueue(*(env.job(n) for n in range(4)))
    svc = await env.drain(expect=3)
    assert env.ses.sent == []
    assert svc.tally["sent"] == 0 and svc.tally["dead_lettered"] == 0
    assert await env.queue_depth() == (4, 0)  # all visible again at once
    assert await env.dead_letters() == []
    env.ses.fail = lambda p: None
    await env.drain()
    assert sorted(env.ses.subjects()) == [f"subject job-{n}" for n in range(4)]


async def test_account_pause_waits_probes_and_resumes_without_losing_a_job(env: Env) -> None:
    """Without --drain: SES pauses the account, the sender returns the jobs and probes
    GetAccount; once sending is enabled again it sends every job exactly once."""
    from types import SimpleNamespace

    paused = {"on": True}
    probes: list[bool] = []

    def account(**_: object) -> tuple[SimpleNamespace, dict[str, object]]:
        probes.append(paused["on"])
        enabled = not paused["on"]
        return SimpleNamespace(status_code=200, headers={}), {"SendingEnabled": enabled}

    env.ses.fail = lambda p: (
        client_error("SendingPausedException", "Sending paused for account")
        if paused["on"]
        else None
    )
    sesv2 = env.clients.sesv2
    sesv2.meta.events.register("before-call.sesv2.GetAccount", account, unique_id="t-probe")
    try:
        await env.enqueue(*(env.job(n) for n in range(3)))
        svc = env.service(drain=False, wait_seconds=1, account_probe_seconds=0.05)
        run = asyncio.create_task(svc.run())
        await wait_until(lambda: len(probes) >= 3)  # paused: waiting, probing
        assert env.ses.sent == []
        assert await env.queue_depth() == (3, 0)  # every job given back at once
        paused["on"] = False
        await wait_until(lambda: len(env.ses.sent) == 3)
        svc.stop("test done")
        assert await asyncio.wait_for(run, timeout=30) == 0
    finally:
        sesv2.meta.events.unregister("before-call.sesv2.GetAccount", unique_id="t-probe")
    assert sorted(env.ses.subjects()) == [f"subject job-{n}" for n in range(3)]
    assert await env.queue_depth() == (0, 0)
    assert await env.dead_letters() == []


async def test_dynamodb_error_returns_the_job_and_the_service_keeps_running(env: Env) -> None:
    failures = {"left": 2}

    def flaky_put(params, **_):
        if params.get("ConditionExpression") == "attribute_not_exists(pk)" and failures["left"]:
            failures["left"] -= 1
            raise client_error("InternalServerError", "injected", 500)

    env.clients.dynamodb.meta.events.register(
        "provide-client-params.dynamodb.PutItem", flaky_put, unique_id="t-flaky"
    )
    try:
        await env.enqueue(env.job(1), env.job(2), env.job(3))
        svc = await env.drain()
    finally:
        env.clients.dynamodb.meta.events.unregister(
            "provide-client-params.dynamodb.PutItem", unique_id="t-flaky"
        )
    assert svc.tally["retried"] == 2
    assert sorted(env.ses.subjects()) == ["subject job-1", "subject job-2", "subject job-3"]
    assert await env.dead_letters() == []


async def test_run_entry_point_drains(env: Env, monkeypatch) -> None:
    import argparse

    from sender.main import run

    await env.enqueue(env.job(1))
    assert await run(argparse.Namespace(drain=True), sender_settings()) == 0
    assert env.ses.subjects() == []  # run() opens its own clients: count via moto instead
    assert await env.queue_depth() == (0, 0)
    assert await record(env, "job-1") is not None


async def test_send_rate_comes_from_setting_account_or_fallback(env: Env) -> None:
    from types import SimpleNamespace

    from sender.rate import FALLBACK_SEND_RATE, resolve_send_rate

    sesv2 = env.clients.sesv2
    assert await resolve_send_rate(sesv2, sender_settings(max_send_rate=7.0)) == (7.0, "setting")
    # moto has no GetAccount: the fallback is used (and logged)
    assert await resolve_send_rate(sesv2, sender_settings(max_send_rate=None)) == (
        FALLBACK_SEND_RATE,
        "fallback",
    )

    def account(**_):
        return SimpleNamespace(status_code=200, headers={}), {"SendQuota": {"MaxSendRate": 50.0}}

    sesv2.meta.events.register("before-call.sesv2.GetAccount", account, unique_id="t-acct")
    try:
        assert await resolve_send_rate(sesv2, sender_settings(max_send_rate=None)) == (
            50.0,
            "account",
        )
        # the only live task of a 4-task maximum takes the whole account rate (leases);
        # SESGUARD_SENDER_TASKS only divides it when the leases cannot be read
        await env.enqueue(env.job(1))
        svc = await env.drain(sender_settings(max_send_rate=None, sender_tasks=4), bucket=None)
    finally:
        sesv2.meta.events.unregister("before-call.sesv2.GetAccount", unique_id="t-acct")
    assert svc.bucket is not None and svc.bucket.rate == 50.0
    assert svc.share is not None and svc.share.tasks == 1
    assert env.ses.subjects() == ["subject job-1"]
