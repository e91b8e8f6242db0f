"""The operator CLI end to end against the moto server: `sesguard.cli.main(argv)` in this
process (tests.conftest.cli), and the installed `sesguard` command as a child process where
only a real process shows it (exit codes as the shell sees them, the services' own
options and signals)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli, cli_process, drain_queue, one_line_error

# One job from flags, body options left to each test.
ENQUEUE_ONE = (
    "enqueue",
    "--partner",
    "acme",
    "--from",
    "a@acme.example.com",
    "--to",
    "b@x.example.org",
    "--subject",
    "s",
)


async def queue_bodies(clients, name: str = "sesguard-send-jobs") -> list[dict]:
    url = (await clients.sqs.get_queue_url(QueueName=name))["QueueUrl"]
    return await drain_queue(clients, url)


# ---- partners --------------------------------------------------------------------------


async def test_partners_lifecycle(ready) -> None:
    r = cli(
        "partners", "add", "acme", "--contact", "ops@acme.example.com", "--bounce-limit", "0.04"
    )
    assert r.code == 0 and "added partner acme" in r.out
    one_line_error(cli("partners", "add", "acme", "--contact", "x@acme.example.com"), 2, "exists")

    r = cli("partners", "set", "acme", "--complaint-limit", "0.002", "--min-volume", "50")
    assert r.code == 0, r.err
    shown = json.loads(cli("partners", "show", "acme", "--json").out)
    for key in (
        "partner_id",
        "status",
        "contact_email",
        "limits",
        "totals",
        "windows",
        "held_jobs",
        "paused_reason",
    ):
        assert key in shown
    assert shown["limits"] == {
        "bounce_rate": 0.04,
        "complaint_rate": 0.002,
        "min_volume": 50,
        "warn_ratio": 0.5,
    }
    rate_counters = {
        "sent",
        "delivered",
        "hard_bounces",
        "soft_bounces",
        "suppressed",
        "complaints",
        "rejects",
        "delivery_delays",
        "opens",
        "clicks",
        "rendering_failures",
    }
    # Hard bounces to verified identities are counted apart, with no simulator twin.
    assert set(shown["totals"]) == rate_counters | {f"simulator_{c}" for c in rate_counters} | {
        "verified_hard_bounces"
    }
    assert [w["hours"] for w in shown["windows"]] == [24, 168]
    assert set(shown["windows"][0]) >= {
        "hours",
        "sent",
        "suppressed",
        "judged_sends",
        "hard_bounces",
        "complaints",
        "bounce_rate",
        "complaint_rate",
    }
    assert shown["status"] == "active" and shown["held_jobs"] == 0

    r = cli("partners", "pause", "acme", "--reason", "list audit")
    assert r.code == 0 and "paused partner acme" in r.out, r.err
    shown = json.loads(cli("partners", "show", "acme", "--json").out)
    assert shown["status"] == "paused" and shown["paused_reason"] == "list audit"
    assert shown["paused_by"] == "operator"
    assert "already paused" in cli("partners", "pause", "acme").out

    r = cli("partners", "resume", "acme")
    assert r.code == 0 and "resumed partner acme" in r.out, r.err
    assert json.loads(cli("partners", "show", "acme", "--json").out)["status"] == "active"

    listed = json.loads(cli("partners", "list", "--json").out)
    assert [p["partner_id"] for p in listed] == ["acme"]
    text = cli("partners", "list").out
    assert text.splitlines()[0].startswith("PARTNER") and "acme" in text
    assert "bounce 4.00%" in cli("partners", "show", "acme").out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["partners", "add", "bad id!", "--contact", "a@b.example.com"], "invalid partner id"),
        (["partners", "add", "x" * 65, "--contact", "a@b.example.com"], "invalid partner id"),
        (["partners", "add", "acme", "--contact", "not-an-email"], "invalid e-mail"),
        (["partners", "add", "acme"], "--contact"),
        (
            ["partners", "add", "acme", "--contact", "a@b.example.com", "--bounce-limit", "0"],
            "outside [1e-09, 1]",
        ),
        (
            ["partners", "add", "acme", "--contact", "a@b.example.com", "--bounce-limit", "1.5"],
            "outside [1e-09, 1]",
        ),
        (
            ["partners", "add", "acme", "--contact", "a@b.example.com", "--complaint-limit", "x"],
            "not a number",
        ),
        (
            ["partners", "add", "acme", "--contact", "a@b.example.com", "--min-volume", "0"],
            "outside [1, 1000000000]",
        ),
        (
            ["partners", "add", "acme", "--contact", "a@b.example.com", "--min-volume", "2.5"],
            "not a whole number",
        ),
        (["partners", "resume", "acme", "--replay", "--discard"], "not allowed with"),
        (["partners", "frobnicate"], "invalid choice"),
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(moto_endpoint, args, needle) -> None:
    one_line_error(cli(*args), 2, needle)


async def test_unknown_partner_refusals(ready) -> None:
    one_line_error(cli("partners", "show", "ghost"), 2, "no partner ghost")
    one_line_error(cli("partners", "set", "ghost", "--min-volume", "3"), 2, "no partner ghost")
    one_line_error(cli("partners", "pause", "ghost"), 2, "no partner ghost")
    one_line_error(cli("partners", "resume", "ghost"), 2, "no partner ghost")
    one_line_error(cli("partners", "set", "ghost"), 2, "nothing to change")


def test_operational_errors_exit_1(moto_endpoint) -> None:
    # No bootstrap: the table does not exist.
    one_line_error(cli_process("partners", "list"), 1, "run `sesguard bootstrap`")
    one_line_error(cli_process(*ENQUEUE_ONE, "--text", "t"), 1, "run `sesguard bootstrap`")
    one_line_error(
        cli_process("partners", "list", AWS_ENDPOINT_URL="http://127.0.0.1:9"),
        1,
        "cannot reach AWS",
    )
    r = cli_process("--debug", "partners", "list")
    assert r.code == 1 and "Traceback" in r.err


def test_bad_settings_name_the_variable(moto_endpoint) -> None:
    one_line_error(cli("partners", "list", SESGUARD_CONCURRENCY="lots"), 2, "SESGUARD_CONCURRENCY")
    one_line_error(cli("partners", "list", SESGUARD_NOTIFY_FROM="nope"), 2, "SESGUARD_NOTIFY_FROM")


def test_bootstrap_twice(moto_endpoint) -> None:
    first = cli("bootstrap", "--identity", "isv.example.com")
    assert first.code == 0, first.err
    assert "created  dynamodb table sesguard" in first.out
    second = cli("bootstrap", "--identity", "isv.example.com")
    assert second.code == 0 and "nothing to change" in second.out
    assert "created" not in second.out


# ---- enqueue ---------------------------------------------------------------------------


JOB = {
    "partner_id": "acme",
    "from": "Acme <news@acme.example.com>",
    "to": ["ana@customer.example.org"],
    "subject": "Hello",
    "text": "Hi Ana",
}


async def test_enqueue_from_flags(ready, clients) -> None:
    r = cli(
        "enqueue",
        "--partner",
        "acme",
        "--from",
        "news@acme.example.com",
        "--to",
        "a@x.example.org",
        "--to",
        "b@x.example.org",
        "--subject",
        "Hi",
        "--html",
        "<p>hi</p>",
        "--tag",
        "campaign=nov",
        "--job-id",
        "job-1",
    )
    assert r.code == 0, r.err
    assert r.out.strip() == "job-1"
    [body] = await queue_bodies(clients)
    assert body["job_id"] == "job-1" and body["to"] == ["a@x.example.org", "b@x.example.org"]
    assert body["tags"] == {"campaign": "nov"} and body["html"] == "<p>hi</p>"


async def test_enqueue_file_in_batches(ready, clients, tmp_path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(json.dumps({**JOB, "job_id": f"j{i}"}) for i in range(23)) + "\n")
    r = cli("enqueue", "--file", str(path))
    assert r.code == 0, r.err
    assert "enqueued 23 jobs" in r.err
    bodies = await queue_bodies(clients)
    assert sorted(b["job_id"] for b in bodies) == sorted(f"j{i}" for i in range(23))
    r = cli("enqueue", "--file", "-", stdin=json.dumps({**JOB, "job_id": "stdin-1"}))
    assert r.code == 0 and r.out.strip() == "stdin-1"


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{not json", "line 2: not JSON"),
        ("[1, 2]", "line 2: a send job must be a JSON object"),
        (json.dumps({**JOB, "to": ["nobody"]}), "line 2: to.0: not an e-mail address"),
        (
            json.dumps({**JOB, "subject": "hi\r\nBcc: all@x.example.org"}),
            "line 2: subject: must not contain CR or LF",
        ),
        (
            json.dumps({**JOB, "from": "a@b.example.com\nBcc: c@d.example.com"}),
            "line 2: from: must not contain CR or LF",
        ),
        (
            json.dumps({k: v for k, v in JOB.items() if k != "text"}),
            "line 2: text or html is required",
        ),
        (
            json.dumps({k: v for k, v in JOB.items() if k != "partner_id"}),
            "line 2: partner_id: Field required",
        ),
        (json.dumps({**JOB, "partner_id": "no spaces"}), "line 2: partner_id"),
        (json.dumps({**JOB, "tags": {"bad tag": "x"}}), "line 2: tags"),
        (json.dumps({**JOB, "tags": {"partner_id": "other"}}), "reserved"),
        (json.dumps({**JOB, "surprise": 1}), "line 2: surprise: Extra inputs"),
        (json.dumps({**JOB, "text": "x" * 300_000}), "line 2: job is"),
    ],
)
async def test_enqueue_file_with_a_bad_line_sends_nothing(
    ready, clients, tmp_path, line, needle
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(json.dumps(JOB) + "\n" + line + "\n" + json.dumps(JOB) + "\n")
    one_line_error(cli("enqueue", "--file", str(path)), 2, needle)
    assert await queue_bodies(clients) == []


def test_enqueue_usage_errors(moto_endpoint, tmp_path) -> None:
    one_line_error(cli("enqueue", "--partner", "acme"), 2, "missing --from, --to, --subject")
    one_line_error(cli(*ENQUEUE_ONE), 2, "--text or --html")
    one_line_error(cli("enqueue", "--file", str(tmp_path / "missing.jsonl")), 2, "cannot read")
    one_line_error(cli(*ENQUEUE_ONE, "--text", "t", "--tag", "novalue"), 2, "NAME=VALUE")


def test_job_schema_printable() -> None:
    r = cli("job-schema")
    schema = json.loads(r.out)
    assert r.code == 0 and set(schema["required"]) >= {"partner_id", "from", "to", "subject"}


async def _hold_three(clients, settings) -> None:
    from sesguard.aws.held import HeldJobs
    from sesguard.core.jobs import parse_job

    held = HeldJobs.from_clients(clients, settings)
    for i in range(3):
        assert await held.hold(parse_job({**JOB, "job_id": f"held-{i}"}))


async def test_resume_replay_sends_held_jobs_in_order(ready, clients, settings) -> None:
    assert cli("partners", "add", "acme", "--contact", "ops@acme.example.com").code == 0
    assert cli("partners", "pause", "acme", "--no-notify").code == 0
    await _hold_three(clients, settings)
    assert json.loads(cli("partners", "show", "acme", "--json").out)["held_jobs"] == 3
    r = cli("partners", "resume", "acme")
    assert "3 jobs remain held" in r.out
    assert json.loads(cli("partners", "show", "acme", "--json").out)["held_jobs"] == 3

    assert cli("partners", "pause", "acme", "--no-notify").code == 0
    r = cli("partners", "resume", "acme", "--replay", SESGUARD_GATE_CACHE_SECONDS="0")
    assert r.code == 0 and "replayed 3 held jobs" in r.out, r.err
    assert [b["job_id"] for b in await queue_bodies(clients)] == ["held-0", "held-1", "held-2"]
    assert json.loads(cli("partners", "show", "acme", "--json").out)["held_jobs"] == 0


async def test_resume_discard_drops_held_jobs(ready, clients, settings) -> None:
    assert cli("partners", "add", "acme", "--contact", "ops@acme.example.com").code == 0
    assert cli("partners", "pause", "acme", "--no-notify").code == 0
    await _hold_three(clients, settings)
    r = cli("partners", "resume", "acme", "--discard", SESGUARD_GATE_CACHE_SECONDS="0")
    assert r.code == 0 and "discarded 3 held jobs" in r.out, r.err
    assert await queue_bodies(clients) == []
    assert json.loads(cli("partners", "show", "acme", "--json").out)["held_jobs"] == 0


async def test_tenant_mapping_degrades_with_one_clear_line(ready) -> None:
    # moto has no SES tenant APIs: with enforcement on, the refusal is one line, exit 1,
    # and no half-made partner is left behind.
    r = cli(
        "partners",
        "add",
        "acme",
        "--contact",
        "ops@acme.example.com",
        "--tenant",
        "acme",
        SESGUARD_USE_TENANTS="true",
        SESGUARD_TENANT_IDENTITY="isv.example.com",
    )
    one_line_error(r, 1, "CreateTenant")
    one_line_error(cli("partners", "show", "acme"), 2, "no partner acme")
    r = cli(
        "partners",
        "add",
        "acme",
        "--contact",
        "ops@acme.example.com",
        "--tenant",
        "acme",
        SESGUARD_USE_TENANTS="true",
    )
    one_line_error(r, 2, "SESGUARD_TENANT_IDENTITY")
    # With enforcement off the mapping is only stored.
    assert (
        cli("partners", "add", "acme", "--contact", "o@acme.example.com", "--tenant", "acme").code
        == 0
    )
    assert json.loads(cli("partners", "show", "acme", "--json").out)["tenant_name"] == "acme"


async def test_services_run_from_the_cli_with_their_own_options(ready) -> None:
    for service in ("sender", "worker"):
        r = cli_process(service, "--drain", SESGUARD_STOP_GRACE_SECONDS="2")
        assert r.code == 0, (service, r.err)
        assert f"{service}_stopped" in r.err  # JSON service logs on stderr
        one_line_error(cli_process(service, "--bogus"), 2, "unrecognized arguments: --bogus")
        assert cli_process(service, "--help").code == 0
    r = cli_process("--debug", "worker", "--drain")
    assert r.code == 0, r.err


def test_bad_list_settings_name_the_variable(moto_endpoint) -> None:
    one_line_error(
        cli("partners", "list", SESGUARD_WINDOW_HOURS="24h"),
        2,
        "SESGUARD_WINDOW_HOURS: not valid JSON",
    )
    one_line_error(
        cli("partners", "list", SESGUARD_WINDOW_HOURS="[0]"),
        2,
        "SESGUARD_WINDOW_HOURS: give one or more positive hour counts",
    )
    # A window longer than the counters live would judge on deleted hours.
    one_line_error(
        cli("partners", "list", SESGUARD_WINDOW_HOURS="[24, 720]"),
        2,
        "SESGUARD_BUCKET_RETENTION_DAYS (14) must cover the longest of SESGUARD_WINDOW_HOURS",
    )


def test_held_job_lines_count_in_words() -> None:
    """ "1 held job", never "1 held jobs" (the CLI and the console print these lines)."""
    from sesguard.ops.operations import HeldAction, HeldResult

    assert HeldResult("a", HeldAction.REPLAY, replayed=1).lines() == ["replayed 1 held job"]
    assert HeldResult("a", HeldAction.DISCARD, replayed=1, discarded=2).lines() == [
        "discarded 2 held jobs",
        "replayed 1 job held after the resume",
    ]
    (kept,) = HeldResult("a", HeldAction.KEEP, remaining=1).lines()
    assert kept.startswith("1 job remains held")
