"""`sesguard console`'s server in this process, over HTTP, against the moto server: the
API (list, detail, chart data, actions equal to the CLI's), the guard (token, origin,
Host), and the command itself."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import socket
import subprocess
import tomllib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sesguard.aws.held import HeldJobs
from sesguard.aws.store import PartnerStore
from sesguard.core.jobs import parse_job
from sesguard.core.partners import Counters, hour_floor, utcnow
from sesguard.ops import operations
from sesguard.ops.console import server
from tests.conftest import SESGUARD, cli, drain_queue, one_line_error, sent_emails

ROOT = Path(__file__).resolve().parents[2]
CONSOLE_DIR = ROOT / "sesguard" / "ops" / "console"
EVIL_REASON = '<img src=x onerror="window.__pwned=1"> <b>bold</b> & "quoted"'


class Api:
    """An HTTP client of one running console, sending what its own pages send."""

    def __init__(self, console: server.Console, session: aiohttp.ClientSession) -> None:
        self.console = console
        self.session = session
        self.origin = console.url.rstrip("/")

    def headers(self, **extra: str) -> dict[str, str]:
        return {
            server.TOKEN_HEADER: self.console.guard.token,
            "Origin": self.origin,
            "Sec-Fetch-Site": "same-origin",
            **extra,
        }

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"headers": self.headers() if headers is None else headers}
        if body is not None:
            kwargs["json"] = body
        if data is not None:
            kwargs["data"] = data
        async with self.session.request(method, self.origin + path, **kwargs) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    async def get(self, path: str) -> Any:
        status, data = await self.call("GET", path)
        assert status == 200, (status, data)
        return data

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        return await self.call("POST", path, body)


@pytest.fixture
async def api(ready, clients, settings) -> AsyncIterator[Api]:
    # No sender caches a status in these tests: releasing held jobs needs no settle time.
    quick = settings.model_copy(update={"gate_cache_seconds": 0})
    console = await server.start(clients, quick, port=0)
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(console, session)
    finally:
        await console.close()


async def add(clients, settings, pid: str, min_volume: int = 200) -> None:
    await operations.add_partner(
        clients, settings, pid, f"ops@{pid}.example.com", min_volume=min_volume
    )


async def hold(clients, settings, pid: str, n: int) -> None:
    held = HeldJobs.from_clients(clients, settings)
    for i in range(n):
        job = {
            "job_id": f"{pid}-held-{i}",
            "partner_id": pid,
            "from": f"news@{pid}.example.com",
            "to": ["ana@example.org"],
            "subject": "s",
            "text": "t",
        }
        assert await held.hold(parse_job(job))


# ---- reads -------------------------------------------------------------------------------


async def test_partners_lists_every_partner_of_the_index_with_levels(
    api, clients, settings, store
) -> None:
    now = utcnow()
    await add(clients, settings, "warner", min_volume=50)
    await store.add_counts("warner", now, Counters(sent=100, hard_bounces=3))  # 3% >= 2.5%
    await add(clients, settings, "quiet")
    await store.add_counts("quiet", now, Counters(sent=10, hard_bounces=5))  # < min volume
    await add(clients, settings, "stopped")
    await operations.pause(clients, settings, "stopped", "list audit", notify=False)
    await hold(clients, settings, "stopped", 2)
    await store.add_counts("ghost", now, Counters(sent=4))  # traffic, no profile
    clients.calls.discard(("dynamodb", "Scan"))

    data = await api.get("/api/partners")
    rows = {r["partner_id"]: r for r in data["partners"]}
    assert data["windows"] == [24, 168]
    assert list(rows) == ["quiet", "stopped", "warner", "ghost"]  # as `partners list`
    assert ("dynamodb", "Scan") not in clients.calls  # the sparse index, never a scan

    warner = rows["warner"]
    assert (warner["status"], warner["level"], warner["verdict"]) == ("active", "warn", "warn")
    assert warner["verdict_level"] == "warn"
    day = warner["windows"][0]
    assert (day["hours"], day["sent"], day["judged_sends"], day["hard_bounces"]) == (
        24,
        100,
        100,
        3,
    )
    assert day["bounce_rate"] == pytest.approx(0.03)
    assert (day["bounce_level"], day["complaint_level"]) == ("warn", "ok")
    quiet = rows["quiet"]["windows"][0]
    assert (rows["quiet"]["level"], quiet["bounce_level"], quiet["bounce_rate"]) == (
        "ok",
        "low",
        0.5,
    )
    stopped = rows["stopped"]
    assert (stopped["status"], stopped["level"], stopped["held_jobs"]) == ("paused", "paused", 2)
    assert stopped["paused_reason"] == "list audit" and stopped["paused_by"] == "operator"
    # Paused by the operator, while the policy has nothing against it: the row is paused,
    # the policy's own verdict stays ok (the partner page shows both, each in its colour).
    assert (stopped["verdict"], stopped["verdict_level"]) == ("ok", "ok")
    assert stopped["windows"][0]["bounce_level"] == "none"
    assert (rows["ghost"]["status"], rows["ghost"]["registered"]) == ("unregistered", False)
    assert rows["ghost"]["sent_total"] == 4

    # The same partners, statuses and held jobs as the CLI's `partners list --json`.
    listed = json.loads(cli("partners", "list", "--json").out)
    assert [(p["partner_id"], p["status"], p["held_jobs"]) for p in listed] == [
        (r["partner_id"], r["status"], r["held_jobs"]) for r in data["partners"]
    ]


async def test_partner_detail_chart_series_for_known_buckets(api, clients, settings, store) -> None:
    now = utcnow()
    await add(clients, settings, "acme", min_volume=50)
    await store.add_counts("acme", now, Counters(sent=100, hard_bounces=10, delivered=90))
    five = now - timedelta(hours=5)
    await store.add_counts(
        "acme", five, Counters(sent=50, suppressed=10, hard_bounces=1, complaints=1)
    )
    thirty = now - timedelta(hours=30)
    await store.add_counts("acme", thirty, Counters(sent=200, hard_bounces=2))
    await store.add_counts("acme", now - timedelta(hours=200), Counters(sent=999))  # > 7 days

    detail = await api.get("/api/partners/acme")
    s = detail["series"]
    assert len(s["hours"]) == 168 and s["rolling_hours"] == 24
    for key in ("sent", "judged_sends", "hard_bounces", "complaints", "bounce_rate"):
        assert len(s[key]) == 168, key
    last = s["hours"].index(hour_floor(now).isoformat())
    # Positions found from the answer's own hours: no race with the clock's hour.
    at_five = s["hours"].index(hour_floor(five).isoformat())
    at_thirty = s["hours"].index(hour_floor(thirty).isoformat())
    assert last - at_five == 5 and last - at_thirty == 30
    assert s["hours"][-1] >= hour_floor(now).isoformat()

    assert (s["sent"][at_five], s["judged_sends"][at_five]) == (50, 40)
    assert (s["hard_bounces"][at_five], s["complaints"][at_five]) == (1, 1)
    assert s["bounce_rate"][at_five] == pytest.approx(1 / 40)  # over judged sends
    assert s["complaint_rate"][at_five] == pytest.approx(1 / 40)
    assert s["sent"][last] == 100 and s["bounce_rate"][last] == pytest.approx(0.1)
    assert s["sent"][at_thirty] == 200
    assert sum(s["sent"]) == 350  # the bucket 200 hours back is outside the charts
    others = set(range(168)) - {last, at_five, at_thirty}
    assert all(s["sent"][i] == 0 and s["bounce_rate"][i] is None for i in others)

    # The rolling 24 h rate as the detector judged it at the end of each hour.
    assert s["bounce_rate_rolling"][last] == pytest.approx(11 / 140)
    assert s["complaint_rate_rolling"][last] == pytest.approx(1 / 140)
    assert s["bounce_rate_rolling"][at_thirty] == pytest.approx(2 / 200)
    assert s["bounce_rate_rolling"][at_thirty + 23] == pytest.approx(2 / 200)
    assert s["bounce_rate_rolling"][at_thirty + 24] is None  # 0 judged sends < min volume
    assert s["bounce_rate_rolling"][at_five] is None  # 40 judged sends < min volume 50

    # The verdict in words: the text `partners show` prints, from the same report.
    partner = detail["partner"]
    assert partner["verdict"] == "pause" and partner["level"] == partner["verdict_level"] == "over"
    assert partner["verdict_reason"].startswith("bounce rate 7.86% exceeds limit 5.00%")
    # Read a moment apart: the rate sent this hour (sent / time into the hour) may differ.
    this_hour = re.compile(r"sending [0-9.]+/s this hour")
    shown = cli("partners", "show", "acme").out.rstrip("\n")
    assert this_hour.sub("~", detail["text"]) == this_hour.sub("~", shown)
    assert detail["events"] == []

    # Pause and resume: markers at the hour they happened.
    assert (await api.post("/api/partners/acme/pause", {"reason": "audit"}))[0] == 200
    events = (await api.get("/api/partners/acme"))["events"]
    assert [(e["type"], e["marker"], e["actor"], e["reason"]) for e in events] == [
        ("Partner Paused", "paused", "operator", "audit")
    ]
    assert events[0]["index"] in (166, 167)  # this hour (or the last, if it just turned)
    assert (await api.post("/api/partners/acme/resume", {"held": "keep"}))[0] == 200
    events = (await api.get("/api/partners/acme"))["events"]
    # The lifecycle history keeps both (the profile alone would only know the resume).
    assert [(e["type"], e["marker"]) for e in events] == [
        ("Partner Paused", "paused"),
        ("Partner Resumed", "resumed"),
    ]


async def test_unknown_and_invalid_partners(api) -> None:
    assert await api.call("GET", "/api/partners/ghost") == (
        404,
        {"error": "no partner ghost (and no traffic under that id)"},
    )
    status, data = await api.call("GET", "/api/partners/bad%20id")
    assert status == 400 and "invalid partner id" in data["error"]
    status, _ = await api.call("GET", "/partners/bad%20id")  # the page too
    assert status == 404


# ---- actions: the CLI's code, the CLI's results ----------------------------------------


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    """A `partners show --json` without what differs between twins (id, contact, times)."""
    drop = {"partner_id", "contact_email", "paused_at", "resumed_at"}
    return {k: v for k, v in report.items() if k not in drop}


async def _show(clients: Any, settings: Any, pid: str) -> dict[str, Any]:
    """What `partners show --json` prints (its own function, in this process: faster)."""
    report = await operations.partner_report(
        PartnerStore.from_settings(clients.dynamodb, settings), settings, pid
    )
    assert report is not None
    return report


async def _twins(clients: Any, settings: Any) -> bool:
    """Partner "web" (changed through the console) and "term" (through the CLI) agree."""
    web = await _show(clients, settings, "web")
    term = await _show(clients, settings, "term")
    assert _comparable(web) == _comparable(term)
    return True


async def test_actions_do_what_the_cli_does(api, clients, settings, moto_endpoint) -> None:
    for pid in ("web", "term"):
        await add(clients, settings, pid)
        await hold(clients, settings, pid, 3)

    # pause, with a notice quoting the reason
    status, paused = await api.post("/api/partners/web/pause", {"reason": "list audit"})
    term = cli("partners", "pause", "term", "--reason", "list audit")
    assert status == 200 and term.code == 0, (paused, term.err)
    assert paused["lines"] == ["paused partner web"] and term.out == "paused partner term\n"
    assert paused["paused"] and paused["notice_sent"]
    assert await _twins(clients, settings)
    notices = [m["destinations"]["ToAddresses"] for m in sent_emails(moto_endpoint)]
    assert sorted(notices) == [["ops@term.example.com"], ["ops@web.example.com"]]
    again = await api.post("/api/partners/web/pause", {"reason": "again"})
    assert again[1]["lines"] == ["partner web was already paused"]
    assert cli("partners", "pause", "term").out == "partner term was already paused\n"

    # set limits
    limits = {"bounce_limit": "0.04", "complaint_limit": "0.002", "min_volume": "50"}
    status, changed = await api.post("/api/partners/web/limits", limits)
    term = cli(
        "partners", "set", "term", "--bounce-limit", "0.04", "--complaint-limit", "0.002",
        "--min-volume", "50",
    )  # fmt: skip
    assert status == 200 and term.code == 0
    assert changed["lines"] == ["updated partner web"] and term.out == "updated partner term\n"
    assert changed["limits"] == {
        "bounce_rate": 0.04,
        "complaint_rate": 0.002,
        "min_volume": 50,
        "warn_ratio": 0.5,
    }
    assert await _twins(clients, settings)

    # resume, replaying the held jobs in the order they were held
    status, resumed = await api.post("/api/partners/web/resume", {"held": "replay"})
    term = cli("partners", "resume", "term", "--replay", SESGUARD_GATE_CACHE_SECONDS="0")
    assert status == 200 and term.code == 0, (resumed, term.err)
    assert resumed["lines"] == ["resumed partner web", "replayed 3 held jobs"]
    assert term.out.splitlines() == [
        "resumed partner term",
        "releasing held jobs (about 1 s)...",
        "replayed 3 held jobs",
    ]
    assert await _twins(clients, settings)
    url = (await clients.sqs.get_queue_url(QueueName=settings.send_queue))["QueueUrl"]
    queued = [b["job_id"] for b in await drain_queue(clients, url)]
    assert sorted(queued) == sorted(f"{p}-held-{i}" for p in ("web", "term") for i in range(3))
    assert [j for j in queued if j.startswith("web")] == [f"web-held-{i}" for i in range(3)]

    # resume keeping held jobs, and discarding them
    for pid in ("web", "term"):
        await operations.pause(clients, settings, pid, notify=False)
        await hold(clients, settings, pid, 2)
    _, kept = await api.post("/api/partners/web/resume", {})
    term = cli("partners", "resume", "term")
    assert kept["lines"] == [
        "resumed partner web",
        "2 jobs remain held: run `sesguard partners resume web --replay` to send them"
        " or --discard to drop them",
    ]
    assert term.out.replace("term", "web") == "\n".join(kept["lines"]) + "\n"
    _, dropped = await api.post("/api/partners/web/resume", {"held": "discard"})
    term = cli("partners", "resume", "term", "--discard", SESGUARD_GATE_CACHE_SECONDS="0")
    assert dropped["lines"] == ["partner web was not paused", "discarded 2 held jobs"]
    assert "discarded 2 held jobs" in term.out
    assert await _twins(clients, settings)
    assert (await _show(clients, settings, "web"))["held_jobs"] == 0


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("ghost/pause", {"reason": "x"}, 404, "no partner ghost"),
        ("ghost/resume", {}, 404, "no partner ghost"),
        ("ghost/limits", {"min_volume": "3"}, 404, "no partner ghost: add it first"),
        ("_unattributed/pause", {}, 400, "is reserved"),
        ("acme/pause", {"reason": "x" * 1001}, 400, "at most 1000"),
        ("acme/pause", {"reason": "   "}, 400, "give a reason"),
        ("acme/pause", {"reason": 5}, 400, "the reason must be text"),
        ("acme/pause", {"notify": "yes"}, 400, "notify must be true or false"),
        ("acme/pause", {"surprise": 1}, 400, "unknown field 'surprise'"),
        ("acme/pause", [1], 400, "must be a JSON object"),
        ("acme/resume", {"held": "later"}, 400, "choose one of keep, replay, discard"),
        ("acme/limits", {}, 400, "nothing to change"),
        ("acme/limits", {"bounce_limit": "0"}, 400, "0 is outside [1e-09, 1]"),
        ("acme/limits", {"bounce_limit": "1e-320"}, 400, "outside [1e-09, 1]"),
        ("acme/limits", {"complaint_limit": "nan"}, 400, "not a finite number"),
        ("acme/limits", {"complaint_limit": True}, 400, "not a number"),
        ("acme/limits", {"min_volume": "2.5"}, 400, "not a whole number"),
        ("acme/limits", {"warn_ratio": 1}, 400, "warn ratio must be below 1"),
        ("acme/limits", {"bounce_limit": "0." + "1" * 39}, 400, "39 significant digits"),
        ("acme/limits", {"max_rate": "0"}, 400, "a max rate of 0 is outside [0.001, 10000]"),
        ("acme/limits", {"max_rate": -1}, 400, "outside [0.001, 10000] sends/s"),
        ("acme/limits", {"max_rate": "fast"}, 400, "a max rate is a number of sends/s or none"),
        ("acme/limits", {"max_rate": False}, 400, "not a number"),
        ("acme/limits", {"daily_quota": "2.5"}, 400, "a daily quota is a whole number"),
        ("acme/limits", {"daily_quota": 2.5}, 400, "a daily quota is a whole number"),
        ("acme/limits", {"daily_quota": -1}, 400, "a daily quota is a whole number"),
        ("acme/limits", {"daily_quota": 10**10}, 400, "outside [0, 1000000000]"),
    ],
)
async def test_bad_actions_are_refused_with_the_clis_words(
    api, clients, settings, path, body, status, needle
) -> None:
    await add(clients, settings, "acme")
    got, data = await api.post(f"/api/partners/{path}", body)
    assert got == status and needle in data["error"], data
    shown = await _show(clients, settings, "acme")
    assert shown["status"] == "active"
    assert (shown["throttle"]["max_rate"], shown["throttle"]["daily_quota"]) == (None, None)


async def test_the_throttle_through_the_api_is_the_clis(api, clients, settings) -> None:
    """The limits form's two throttle fields: numbers as text (or JSON numbers), "none"
    to remove a cap; the answer and the partner's row carry the caps with their use."""
    await add(clients, settings, "web")
    assert cli("partners", "add", "term", "--contact", "ops@term.example.com").code == 0
    status, data = await api.post(
        "/api/partners/web/limits", {"max_rate": "2.5", "daily_quota": 300}
    )
    assert status == 200 and data["lines"] == ["updated partner web"], data
    assert data["throttle"] == {"max_rate": 2.5, "daily_quota": 300}
    term = cli("partners", "set", "term", "--max-rate", "2.5", "--daily-quota", "300")
    assert term.out.replace("term", "web") == "\n".join(data["lines"]) + "\n"
    assert await _twins(clients, settings)

    row = (await api.get("/api/partners/web"))["partner"]
    assert row["throttle"]["max_rate"] == 2.5 and row["throttle"]["quota_used"] == 0
    listed = {p["partner_id"]: p for p in (await api.get("/api/partners"))["partners"]}
    assert listed["web"]["throttle"]["daily_quota"] == 300
    assert "daily quota  0 of 300 today (UTC)" in (await api.get("/api/partners/web"))["text"]

    status, data = await api.post("/api/partners/web/limits", {"max_rate": "none"})
    assert status == 200 and data["throttle"] == {"max_rate": None, "daily_quota": 300}


async def test_a_body_that_is_not_json_is_refused(api, clients, settings) -> None:
    await add(clients, settings, "acme")
    headers = api.headers(**{"Content-Type": "application/json"})
    status, data = await api.call("POST", "/api/partners/acme/pause", headers=headers, data=b"{")
    assert status == 400 and data["error"] == "the request body must be a JSON object"
    big = b'{"reason": "' + b"x" * (server.MAX_BODY + 1) + b'"}'
    status, _ = await api.call("POST", "/api/partners/acme/pause", headers=headers, data=big)
    assert status == 413
    assert (await _show(clients, settings, "acme"))["status"] == "active"


# ---- the guard ------------------------------------------------------------------------


async def test_every_api_request_needs_the_token(api, clients, settings) -> None:
    await add(clients, settings, "acme")
    no_token = {k: v for k, v in api.headers().items() if k != server.TOKEN_HEADER}
    wrong = api.headers(**{server.TOKEN_HEADER: api.console.guard.token[:-1]})
    for headers in (no_token, wrong):
        status, data = await api.call("GET", "/api/partners", headers=headers)
        assert status == 403 and "X-Sesguard-Token" in data["error"]
        status, _ = await api.call("POST", "/api/partners/acme/pause", {}, headers=headers)
        assert status == 403
    assert api.console.guard.refused == 4
    assert (await _show(clients, settings, "acme"))["status"] == "active"
    # The token is in the page this server serves, and only there.
    status, page = await api.call("GET", "/", headers={})
    assert status == 200
    assert f'name="sesguard-token" content="{api.console.guard.token}"' in page


async def test_a_cross_origin_change_is_refused(api, clients, settings) -> None:
    await add(clients, settings, "acme")
    evil = "http://evil.example"
    token = {server.TOKEN_HEADER: api.console.guard.token}
    port = api.console.guard.port
    refusals = [
        # (headers, what the refusal names)
        ({**token, "Origin": evil, "Sec-Fetch-Site": "cross-site"}, "Sec-Fetch-Site"),
        ({**token, "Origin": evil}, "Origin 'http://evil.example'"),
        ({**token, "Origin": f"http://127.0.0.1:{port + 1}"}, "is not this console"),
        ({**token, "Origin": "null"}, "Origin 'null'"),
        (token, "Origin None"),  # no Origin at all
        (api.headers(**{"Sec-Fetch-Site": "same-site"}), "Sec-Fetch-Site: same-site"),
    ]
    for headers, needle in refusals:
        status, data = await api.call("POST", "/api/partners/acme/pause", {}, headers=headers)
        assert status == 403 and needle in data["error"], (headers, data)
    # A form post (text/plain) from the right origin with the token: still not JSON.
    form = api.headers(**{"Content-Type": "text/plain"})
    status, data = await api.call("POST", "/api/partners/acme/pause", headers=form, data=b"{}")
    assert status == 403 and "application/json" in data["error"]
    # A CORS preflight is never granted.
    preflight = {
        "Origin": evil,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-sesguard-token",
    }
    status, _ = await api.call("OPTIONS", "/api/partners/acme/pause", headers=preflight)
    assert status == 403
    assert api.console.guard.refused == len(refusals) + 2
    assert (await _show(clients, settings, "acme"))["status"] == "active"
    # localhost is the same console.
    local = api.headers(Origin=f"http://localhost:{port}", Host=f"localhost:{port}")
    status, data = await api.call("POST", "/api/partners/acme/pause", {}, headers=local)
    assert status == 200 and data["paused"]


async def test_a_foreign_host_header_is_refused_dns_rebinding(api, clients, settings) -> None:
    await add(clients, settings, "acme")
    port = api.console.guard.port
    for host in (f"evil.example:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}", f"[::1]:{port}"):
        headers = api.headers(Host=host, Origin=f"http://{host}")
        for method, path in (("GET", "/"), ("GET", "/api/partners")):
            status, _ = await api.call(method, path, headers=headers)
            assert status == 403, (host, path)
        status, data = await api.call("POST", "/api/partners/acme/pause", {}, headers=headers)
        assert status == 403 and "Host" in data["error"]
    assert (await _show(clients, settings, "acme"))["status"] == "active"


async def test_responses_forbid_inline_script_framing_and_caching(api) -> None:
    for path in ("/", "/partners/acme", "/static/partner.js", "/api/partners", "/nope"):
        async with api.session.get(api.origin + path, headers=api.headers()) as resp:
            csp = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp, path
            assert "frame-ancestors 'none'" in csp and "require-trusted-types-for" in csp
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert resp.headers["Cache-Control"] == "no-store"
            assert resp.headers["Cross-Origin-Resource-Policy"] == "same-origin"
    async with api.session.get(api.origin + "/static/") as resp:
        assert resp.status in (403, 404)  # no directory listing


async def test_it_listens_on_loopback_only(api) -> None:
    port = api.console.guard.port
    assert api.console.runner.addresses == [("127.0.0.1", port)]
    others = {
        info[4][0]
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        if info[4][0] != "127.0.0.1"
    } | {"127.0.0.2"}
    for address in others:
        with socket.socket() as sock, pytest.raises(OSError):
            sock.settimeout(2)
            sock.connect((address, port))


# ---- escaping, mail content, the pages and their files -----------------------------------


async def test_partner_text_comes_back_as_data_never_in_a_page(api, clients, settings) -> None:
    await add(clients, settings, "acme")
    status, _ = await api.post("/api/partners/acme/pause", {"reason": EVIL_REASON})
    assert status == 200
    detail = await api.get("/api/partners/acme")
    assert detail["partner"]["paused_reason"] == EVIL_REASON  # as stored: JSON escapes it
    assert detail["events"][0]["reason"] == EVIL_REASON
    for path in ("/", "/partners/acme"):
        status, page = await api.call("GET", path, headers={})
        assert status == 200 and "onerror" not in page and "acme" not in page
    # The pages build the DOM from text only (the browser test checks the rendering).
    for script in (CONSOLE_DIR / "static").glob("*.js"):
        code = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in code, (script.name, sink)


async def test_no_mail_content_in_any_answer(api, clients, settings) -> None:
    await add(clients, settings, "acme")
    held = HeldJobs.from_clients(clients, settings)
    secret = "confidential-body-text"
    job = {
        "job_id": "j1",
        "partner_id": "acme",
        "from": "news@acme.example.com",
        "to": ["private-recipient@example.org"],
        "subject": "secret-subject",
        "text": secret,
    }
    await operations.pause(clients, settings, "acme", notify=False)
    assert await held.hold(parse_job(job))
    answers = json.dumps([await api.get("/api/partners"), await api.get("/api/partners/acme")])
    assert '"held_jobs": 1' in answers or '"held_jobs":1' in answers
    for content in (secret, "secret-subject", "private-recipient"):
        assert content not in answers


def test_vendored_chartjs_is_the_published_file_and_is_packaged() -> None:
    vendor = CONSOLE_DIR / "static" / "vendor" / "chart.js"
    recorded = re.search(
        r"sha256 of chart.umd.min.js: ([0-9a-f]{64})", (vendor / "VERSION").read_text()
    )
    assert recorded
    digest = hashlib.sha256((vendor / "chart.umd.min.js").read_bytes()).hexdigest()
    assert digest == recorded.group(1)
    assert "MIT License" in (vendor / "LICENSE.md").read_text()
    # Every file the console serves is in the package data (so a wheel has it).
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["sesguard.ops.console"]
    files = [p for p in CONSOLE_DIR.rglob("*") if p.is_file() and p.suffix != ".py"]
    files = [p for p in files if "__pycache__" not in p.parts]
    assert len(files) >= 9
    for path in files:
        relative = path.relative_to(CONSOLE_DIR)
        assert any(relative.match(g) for g in globs), relative


# ---- the command ------------------------------------------------------------------------


def test_console_command_refusals(moto_endpoint) -> None:
    one_line_error(cli("console", "--port", "70000"), 2, "outside [0, 65535]")
    one_line_error(cli("console", "--port", "x"), 2, "not a port number")
    one_line_error(cli("console", "--host", "0.0.0.0"), 2, "unrecognized arguments")
    one_line_error(cli("console"), 1, "run `sesguard bootstrap`")  # no table yet


def test_console_command_serves_until_sigterm(moto_endpoint) -> None:
    import urllib.request

    assert cli("bootstrap").code == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        one_line_error(cli("console", "--port", busy), 1, "cannot listen on 127.0.0.1")

    proc = subprocess.Popen(
        [SESGUARD, "console", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.match(r"sesguard console: (http://127\.0\.0\.1:\d+/)$", first.strip())
        assert match, first
        with urllib.request.urlopen(match.group(1), timeout=10) as resp:
            assert resp.status == 200 and b"sesguard-token" in resp.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
