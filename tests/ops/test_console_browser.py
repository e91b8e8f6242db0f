"""The console's pages in a real browser: Debian's chromium, headless, driven by Playwright
(never a downloaded browser), after a demo-sized run of the real sender and worker.

Screenshots of every page are written to .artifacts/console/, or to the directory
SESGUARD_CONSOLE_SHOTS names (the path is printed); console-docs.png there is the
picture docs/console.png is made from."""

from __future__ import annotations

import asyncio
import io
import os
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sesguard.aws.held import HeldJobs
from sesguard.aws.store import PartnerStore
from sesguard.cli.services import demo_services
from sesguard.core.partners import Counters, utcnow
from sesguard.local.demo import run_demo
from sesguard.ops import operations
from sesguard.ops.console import server
from sesguard.ops.report import partner_text
from tests.ops.test_console_api import EVIL_REASON, add, hold

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # A DNS-rebinding attacker's name, resolved to the console's address.
    "--host-resolver-rules=MAP rebind.example 127.0.0.1",
]
ARTIFACTS = Path(
    os.environ.get("SESGUARD_CONSOLE_SHOTS")
    or Path(__file__).resolve().parents[2] / ".artifacts" / "console"
)
GREEN, RED = "rgb(46, 125, 50)", "rgb(183, 28, 28)"  # console.css: --ok, --over / --paused


def need_browser() -> None:
    """Skip where the browser is missing on a developer's machine; CI must have it."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[dev]')")
    if missing:
        message = "the console's browser test needs " + " and ".join(missing)
        if os.environ.get("SESGUARD_CI") == "1":
            pytest.fail(message)
        pytest.skip(message)


EVIL_PAGE = """<!doctype html>
<title>another site</title>
<h1>A page on another site, trying to pause bakery through the operator's browser</h1>
<pre id="out">running</pre>
<iframe name="sink" width="400" height="80"></iframe>
<form id="form" method="POST" action="TARGET/api/partners/bakery/pause" enctype="text/plain"
  target="sink"><input name='{"reason": "evil", "x": "' value='"}'></form>
<script>
(async () => {
  const target = "TARGET";
  const path = target + "/api/partners/bakery/pause";
  const body = JSON.stringify({reason: "evil"});
  const out = [];
  try {
    const r = await fetch(path, {method: "POST", mode: "no-cors",
      headers: {"Content-Type": "text/plain"}, body});
    out.push("no-cors post: sent, answer unreadable (" + r.type + ")");
  } catch (e) { out.push("no-cors post: failed"); }
  try {
    const r = await fetch(path, {method: "POST",
      headers: {"Content-Type": "application/json", "X-Sesguard-Token": "guessed"}, body});
    out.push("cors post: " + r.status);
  } catch (e) { out.push("cors post: blocked"); }
  try {
    const r = await fetch(target + "/api/partners");
    out.push("read partners: " + r.status);
  } catch (e) { out.push("read partners: blocked"); }
  document.getElementById("form").submit();
  document.getElementById("out").textContent = out.join("\\n");
  document.title = "done";
})();
</script>
"""


async def _evil_site(target: str) -> tuple[web.AppRunner, str]:
    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=EVIL_PAGE.replace("TARGET", target), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}/"


async def _status(clients: Any, settings: Any, pid: str) -> dict[str, Any]:
    report = await operations.partner_report(
        PartnerStore.from_settings(clients.dynamodb, settings), settings, pid
    )
    assert report is not None
    return report


async def _colour(locator: Any, prop: str) -> str:
    return str(await locator.evaluate(f"(e) => getComputedStyle(e).{prop}"))


async def test_console_in_chromium(moto_endpoint, clients, settings) -> None:
    need_browser()
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=30_000)  # a loaded machine is slow, never wrong
    await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {ARTIFACTS}")

    # A demo-sized run: the real sender and worker pause the two bad partners.
    results = await run_demo(180, moto_endpoint, demo_services(), out=io.StringIO())
    assert results["problems"] == []
    statuses = {p["partner_id"]: p["status"] for p in results["partners"]}
    assert statuses == {"bakery": "active", "gadgets": "paused", "newsletter": "paused"}
    # florist: paused by the operator while the policy has nothing against it (one send,
    # too few to judge), one held job; stray: mail under an id without a profile.
    store = PartnerStore.from_settings(clients.dynamodb, settings)
    await add(clients, settings, "florist")
    await store.add_counts("florist", utcnow(), Counters(sent=1, hard_bounces=1, complaints=1))
    await operations.pause(clients, settings, "florist", "list audit", notify=False)
    await hold(clients, settings, "florist", 1)
    await store.add_counts("stray", utcnow(), Counters(sent=2))
    # bakery has a throttle, 120 of its 500 sends of today taken.
    await operations.set_partner(clients, settings, "bakery", max_rate="5", daily_quota="500")
    assert await store.take_quota("bakery", 500, n=120)

    quick = settings.model_copy(update={"gate_cache_seconds": 0})
    console = await server.start(clients, quick, port=0)
    evil_runner, evil_url = await _evil_site(console.url.rstrip("/"))
    errors: list[str] = []
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1200, "height": 900})
            # Chromium logs every 404 answer as an error: the unknown partner's is expected.
            missing = "/api/partners/nobody"
            page.on(
                "console",
                lambda m: (
                    errors.append(f"{m.text} ({m.location.get('url')})")
                    if m.type == "error" and not m.location.get("url", "").endswith(missing)
                    else None
                ),
            )
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            # ---- the partners page: three paused partners (and by whom), sortable,
            # filterable
            await page.goto(console.url)
            rows = page.locator("#partners tbody tr")
            await expect(rows).to_have_count(5)
            for pid, by in (
                ("gadgets", "policy"),
                ("newsletter", "policy"),
                ("florist", "operator"),
            ):
                row = page.locator(f'tr[data-partner="{pid}"]')
                await expect(row).to_have_class(re.compile(r"\blevel-paused\b"))
                await expect(row.locator(".badge")).to_have_text(f"paused ({by})")
            await expect(page.locator('tr[data-partner="bakery"] .badge')).to_have_text("active")
            await expect(page.locator('tr[data-partner="stray"] .badge')).to_have_text(
                "unregistered"
            )
            await expect(page.locator("#counts")).to_have_text("5 partners, 3 paused")
            gadgets_bounce = page.locator('tr[data-partner="gadgets"] td.num').first
            await expect(gadgets_bounce).to_have_class(re.compile(r"\bcell-over\b"))
            florist_bounce = page.locator('tr[data-partner="florist"] td.num').first
            await expect(florist_bounce).to_have_attribute(
                "title", re.compile(r"^1 of 1 judged send; .*fewer than 200 judged sends$")
            )
            # The throttle columns: this hour's sends/s and today's sends, against the caps.
            bakery_cells = page.locator('tr[data-partner="bakery"] td')
            await expect(bakery_cells.last).to_have_text("120 / 500")
            await expect(bakery_cells.nth(-2)).to_have_text(re.compile(r"^[0-9.]+ / 5$"))
            gadgets_cells = page.locator('tr[data-partner="gadgets"] td')
            await expect(gadgets_cells.last).to_have_text("0 / \u2013")  # no quota
            await page.screenshot(path=ARTIFACTS / "partners.png", full_page=True)

            await page.select_option("#status-filter", "paused")
            await expect(rows).to_have_count(3)
            await page.select_option("#status-filter", "")
            await page.click('th[data-key="partner_id"]')
            await expect(rows.first).to_have_attribute("data-partner", "bakery")
            await page.click('th[data-key="partner_id"]')
            await expect(rows.first).to_have_attribute("data-partner", "stray")

            # ---- a partner id nobody knows: that, and no charts, forms or actions
            await page.goto(console.url + "partners/nobody")
            await expect(page.locator("body")).to_have_attribute("data-loaded", "true")
            await expect(page.locator("#missing")).to_be_visible()
            await expect(page.locator("#missing")).to_contain_text("No such partner")
            await expect(page.locator("#status")).to_have_text("no such partner")
            await expect(page.locator("#actions")).to_be_hidden()
            await expect(page.locator("#detail")).to_be_hidden()
            assert await page.locator("canvas:visible, form:visible, #verdict:visible").count() == 0
            await expect(page.locator("#error")).to_be_hidden()
            await page.screenshot(path=ARTIFACTS / "partner-unknown.png", full_page=True)

            # ---- mail under an id without a profile: its numbers, and nothing to act on
            await page.goto(console.url + "partners/stray")
            await expect(page.locator("body")).to_have_attribute("data-loaded", "true")
            await expect(page.locator("#status")).to_have_text("unregistered")
            await expect(page.locator('#verdict [data-kind="unregistered"]')).to_contain_text(
                "Not registered"
            )
            await expect(page.locator("#actions")).to_be_hidden()
            await expect(page.locator("#chart-volume")).to_be_visible()
            await page.screenshot(path=ARTIFACTS / "partner-stray.png", full_page=True)

            # ---- paused by the operator: said so in red, the policy's verdict in green
            await page.goto(console.url + "partners/florist")
            await expect(page.locator("body")).to_have_attribute("data-loaded", "true")
            await expect(page.locator("#status")).to_have_text("paused (operator)")
            paused_line = page.locator('#verdict [data-kind="paused"]')
            await expect(paused_line).to_have_text("Paused by the operator: list audit")
            assert await _colour(paused_line, "borderLeftColor") == RED
            policy_line = page.locator('#verdict [data-kind="policy"]')
            await expect(policy_line).to_have_text("policy verdict now: ok")
            assert await _colour(policy_line, "borderLeftColor") == GREEN
            assert await _colour(policy_line.locator("strong"), "color") == GREEN
            # one of each, in the singular
            facts = page.locator("#facts")
            await expect(facts).to_contain_text("1 sent, 1 judged, 1 hard bounce (100.00%)")
            await expect(facts).to_contain_text("1 complaint (100.000%)")
            await expect(facts).not_to_contain_text("1 complaints")
            await page.click("#resume-button")
            await expect(page.locator("#confirm-text")).to_have_text(
                "Resume partner florist? 1 held job stays held."
            )
            await page.click("#confirm-cancel")
            await page.screenshot(path=ARTIFACTS / "partner-florist.png", full_page=True)

            # ---- a paused partner's page: its charts and its verdict in words
            await page.goto(console.url)
            await page.click('a[href="/partners/gadgets"]')
            await expect(page.locator("body")).to_have_attribute("data-loaded", "true")
            await expect(page.locator("#status")).to_have_text("paused (policy)")
            paused_line = page.locator('#verdict [data-kind="paused"]')
            await expect(paused_line).to_contain_text("Paused by the policy: bounce rate")
            policy_line = page.locator('#verdict [data-kind="policy"]')
            await expect(policy_line).to_contain_text("policy verdict now: pause: bounce rate")
            assert await _colour(policy_line, "borderLeftColor") == RED
            report = await _status(clients, settings, "gadgets")
            assert await page.locator("#show-text").text_content() == partner_text(report)
            charts = await page.evaluate(
                """() => {
                  const get = (id) => Chart.getChart(document.getElementById(id));
                  const bounce = get("chart-bounce"), volume = get("chart-volume");
                  const values = (c, i) => c.data.datasets[i].data.filter((v) => v !== null);
                  return {
                    hours: bounce.data.labels.length,
                    maxBounce: Math.max(...values(bounce, 0)),
                    limit: bounce.data.datasets[2].data[0],
                    warn: bounce.data.datasets[3].data[0],
                    sent: values(volume, 0).reduce((a, b) => a + b, 0),
                    markers: bounce.options.plugins.sesguardMarkers.markers.map((m) => m.marker),
                  };
                }"""
            )
            assert charts["hours"] == 168
            assert charts["maxBounce"] > 0.05  # above the demo's 5% limit
            assert (charts["limit"], charts["warn"]) == (0.05, 0.025)
            assert charts["sent"] == report["totals"]["sent"]
            assert charts["markers"] == ["paused"]
            await page.screenshot(path=ARTIFACTS / "partner-gadgets.png", full_page=True)
            await page.select_option("#range", "24")
            labels = await page.evaluate(
                "Chart.getChart(document.getElementById('chart-volume')).data.labels.length"
            )
            assert labels == 24
            # docs/console.png: the top of this page, as wide as the README shows it
            await page.set_viewport_size({"width": 1000, "height": 1200})
            await page.screenshot(path=ARTIFACTS / "console-docs.png")
            await page.set_viewport_size({"width": 1200, "height": 900})

            # ---- pause and resume a partner through the page, each confirmed first
            await page.goto(console.url + "partners/bakery")
            await expect(page.locator("body")).to_have_attribute("data-loaded", "true")
            await expect(page.locator("#actions")).to_be_visible()
            # The limits as they are, in percent like the rest of the page, units shown.
            for field, value in (
                ("bounce_limit", "5"),
                ("complaint_limit", "0.1"),
                ("min_volume", "40"),
                ("warn_ratio", "50"),
                ("max_rate", "5"),
                ("daily_quota", "500"),
            ):
                await expect(page.locator(f"#{field}")).to_have_value(value)
            units = await page.locator("#limits-form .unit").all_text_contents()
            assert units == [
                "%",
                "%",
                "judged sends",
                "% of the limit",
                "sends/s",
                "sends per UTC day",
            ]
            await expect(page.locator("#facts")).to_contain_text("warn at 50% of a limit")
            await expect(page.locator("#facts")).to_contain_text("120 of 500 today (UTC)")
            await expect(page.locator("#facts")).to_contain_text(
                re.compile(r"5 sends/s \(sending [0-9.]+/s this hour, [0-9.]+/s last hour\)")
            )
            await page.screenshot(path=ARTIFACTS / "partner-bakery-throttle.png", full_page=True)
            await page.fill("#pause-reason", EVIL_REASON)
            await page.click("#pause-button")
            dialog = page.locator("#confirm")
            await expect(dialog).to_be_visible()
            await expect(page.locator("#confirm-text")).to_contain_text(EVIL_REASON)
            await page.click("#confirm-cancel")
            await expect(dialog).to_be_hidden()
            assert (await _status(clients, settings, "bakery"))["status"] == "active"

            await page.click("#pause-button")
            await page.click("#confirm-ok")
            await expect(page.locator("#status")).to_have_text("paused (operator)")
            # The outcome is said where the operator looks (above the forms, on screen)
            # and announced (a live region).
            status = page.get_by_role("status")
            await expect(status).to_have_text("paused partner bakery")
            await expect(page.locator("#result")).to_have_text("paused partner bakery")
            await expect(page.locator("#result")).to_be_in_viewport()
            result_box = await page.locator("#result").bounding_box()
            form_box = await page.locator("#resume-form").bounding_box()
            assert result_box and form_box and result_box["y"] < form_box["y"]
            await page.screenshot(path=ARTIFACTS / "partner-bakery-after-pause.png")
            bakery = await _status(clients, settings, "bakery")
            assert (bakery["paused_reason"], bakery["paused_by"]) == (EVIL_REASON, "operator")
            # The reason is shown as text, never as markup.
            await expect(page.locator("#events .reason")).to_have_text(f": {EVIL_REASON}")
            await expect(page.locator("#facts")).to_contain_text(EVIL_REASON)
            await expect(page.locator('#verdict [data-kind="paused"]')).to_have_text(
                f"Paused by the operator: {EVIL_REASON}"
            )
            assert await page.locator("main img, main b, dialog img").count() == 0
            assert await page.evaluate("window.__pwned") is None
            markers = await page.evaluate(
                "Chart.getChart(document.getElementById('chart-volume'))"
                ".options.plugins.sesguardMarkers.markers.map((m) => m.marker)"
            )
            assert markers == ["paused"]
            await page.screenshot(path=ARTIFACTS / "partner-bakery-paused.png", full_page=True)

            # resume's safe default, as on the command line: held jobs stay held
            await expect(page.locator('#resume-form input[value="keep"]')).to_be_checked()
            await page.click("#resume-button")
            await expect(page.locator("#confirm-text")).to_contain_text("Resume partner bakery")
            await page.click("#confirm-ok")
            await expect(page.locator("#status")).to_have_text("active")
            await expect(page.locator("#result")).to_have_text("resumed partner bakery")
            assert (await _status(clients, settings, "bakery"))["status"] == "active"
            await page.screenshot(path=ARTIFACTS / "partner-bakery-resumed.png", full_page=True)

            # ---- resume with replay: the held jobs go back on the send queue
            # The demo's newsletter jobs may all have been sent before its pause (the
            # worker's lag decides), so three more are held the way the sender holds them.
            await hold(clients, settings, "newsletter", 3)
            held = await HeldJobs.from_clients(clients, settings).count("newsletter")
            assert held >= 3
            await page.goto(console.url + "partners/newsletter")
            await expect(page.locator("body")).to_have_attribute("data-loaded", "true")
            await page.check('#resume-form input[value="replay"]')
            await page.click("#resume-button")
            await page.click("#confirm-ok")
            await expect(page.locator("#result")).to_have_text(
                f"resumed partner newsletter\nreplayed {held} held jobs"
            )
            assert await HeldJobs.from_clients(clients, settings).count("newsletter") == 0
            # Limits: only the fields changed are sent, percentages as the API's fractions.
            await page.click("#limits-button")
            await expect(page.locator("#result")).to_have_text(
                "nothing to change: change at least one field"
            )
            await expect(page.locator("#confirm")).to_be_hidden()
            await page.fill("#bounce_limit", "150")
            await page.click("#limits-button")
            await expect(page.locator("#result")).to_have_text(
                "bounce limit: 150 is not a percentage above 0, at most 100 (5 = 5%)"
            )
            await page.fill("#bounce_limit", "4")
            await page.fill("#min_volume", "80")
            await page.fill("#warn_ratio", "60")
            await page.click("#limits-button")
            await expect(page.locator("#confirm-text")).to_have_text(
                "Set limits of partner newsletter?\n\nbounce limit: 5% → 4%\n"
                "min volume: 40 → 80\nwarn level: 50% → 60% of the limit"
            )
            await page.click("#confirm-ok")
            await expect(page.locator("#result")).to_have_text("updated partner newsletter")
            report = await _status(clients, settings, "newsletter")
            assert report["limits"] == {
                "bounce_rate": 0.04,
                "complaint_rate": 0.001,
                "min_volume": 80,
                "warn_ratio": 0.6,
            }
            for field, value in (("bounce_limit", "4"), ("min_volume", "80"), ("warn_ratio", "60")):
                await expect(page.locator(f"#{field}")).to_have_value(value)
            await expect(page.locator("#facts")).to_contain_text("bounce 4.00%")
            # The throttle: empty fields are no cap; a value the API refuses says why in
            # the CLI's words; emptying a field removes the cap.
            for field in ("max_rate", "daily_quota"):
                await expect(page.locator(f"#{field}")).to_have_value("")
                await expect(page.locator(f"#{field}")).to_have_attribute("placeholder", "no cap")
            await expect(page.locator("#facts")).to_contain_text("daily quota")
            await page.fill("#max_rate", "0")
            await page.click("#limits-button")
            await page.click("#confirm-ok")
            await expect(page.locator("#result")).to_have_text(
                "a max rate of 0 is outside [0.001, 10000] sends/s (none: no cap)"
            )
            # Chromium logs the API's 400 as an error: this one was asked for.
            for _ in range(50):
                asked = [e for e in errors if "status of 400" in e and "newsletter/limits" in e]
                if asked:
                    break
                await asyncio.sleep(0.1)
            assert len(asked) == 1, errors
            errors.remove(asked[0])
            await page.fill("#max_rate", "2.5")
            await page.fill("#daily_quota", "1000")
            await page.click("#limits-button")
            await expect(page.locator("#confirm-text")).to_have_text(
                "Set limits of partner newsletter?\n\nmax rate: no cap → 2.5 sends/s\n"
                "daily quota: no cap → 1000 sends per UTC day"
            )
            await page.click("#confirm-ok")
            await expect(page.locator("#result")).to_have_text("updated partner newsletter")
            throttle = (await _status(clients, settings, "newsletter"))["throttle"]
            assert (throttle["max_rate"], throttle["daily_quota"]) == (2.5, 1000)
            await expect(page.locator("#max_rate")).to_have_value("2.5")
            await expect(page.locator("#facts")).to_contain_text("0 of 1000 today (UTC)")
            await page.fill("#max_rate", "")
            await page.click("#limits-button")
            await expect(page.locator("#confirm-text")).to_have_text(
                "Set limits of partner newsletter?\n\nmax rate: 2.5 sends/s → no cap"
            )
            await page.click("#confirm-ok")
            await expect(page.locator("#result")).to_have_text("updated partner newsletter")
            throttle = (await _status(clients, settings, "newsletter"))["throttle"]
            assert (throttle["max_rate"], throttle["daily_quota"]) == (None, 1000)
            await expect(page.locator("#max_rate")).to_have_value("")
            await page.screenshot(path=ARTIFACTS / "partner-newsletter.png", full_page=True)
            assert errors == []  # no script error, no CSP violation on the console's pages

            # ---- another site cannot act through the operator's browser
            refused = console.guard.refused
            evil = await browser.new_page()
            await evil.goto(evil_url)
            await expect(evil).to_have_title("done")
            # the no-cors POST, the CORS preflight, the read and the form post all reached
            # the console and were refused:
            for _ in range(300):
                if console.guard.refused - refused >= 4:
                    break
                await asyncio.sleep(0.1)
            assert console.guard.refused - refused >= 4
            out = await evil.locator("#out").text_content()
            assert "cors post: blocked" in (out or "") and "read partners: blocked" in (out or "")
            await evil.screenshot(path=ARTIFACTS / "cross-origin.png")
            assert (await _status(clients, settings, "bakery"))["status"] == "active"

            # ---- DNS rebinding: another name for 127.0.0.1 is not this console
            rebound = console.url.replace("127.0.0.1", "rebind.example")
            response = await evil.goto(rebound)
            assert response is not None and response.status == 403
            api = await evil.goto(rebound + "api/partners")
            assert api is not None and api.status == 403
            await browser.close()
    finally:
        await evil_runner.cleanup()
        await console.close()
