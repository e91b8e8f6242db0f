"""Log lines never carry mail bodies or credentials; notices name the numbers."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import structlog

from sesguard.core.partners import Limits, Profile
from sesguard.core.policy import Finding, Level
from sesguard.domain.notice import compose_pause_notice
from sesguard.logging import configure_logging, get_logger


def test_json_log_lines_redact_bodies_and_credentials() -> None:
    out = io.StringIO()
    configure_logging("json", "INFO", stream=out)
    try:
        get_logger("t").info(
            "job_sent",
            partner_id="acme",
            text="Dear Ana, your password is...",
            html="<p>secret</p>",
            aws_secret_access_key="AKIA/SECRET",
            job={"subject": "s", "body": "the body"},
        )
    finally:
        structlog.reset_defaults()
    line = json.loads(out.getvalue().strip())
    assert line["event"] == "job_sent" and line["partner_id"] == "acme"
    assert line["level"] == "info" and "timestamp" in line
    assert line["text"] == line["html"] == line["aws_secret_access_key"] == "[redacted]"
    assert line["job"] == {"subject": "s", "body": "[redacted]"}
    assert "Dear Ana" not in out.getvalue() and "AKIA/SECRET" not in out.getvalue()


def test_pause_notice_names_rate_limit_window_and_volume() -> None:
    profile = Profile("acme", "ops@acme.example.com", Limits())
    finding = Finding(Level.PAUSE, "bounce_rate", 24, 0.0825, 0.05, 400)
    notice = compose_pause_notice(
        profile,
        "ignored when a finding is given",
        datetime(2026, 11, 29, 9, 5, tzinfo=UTC),
        finding,
    )
    assert notice.to == "ops@acme.example.com"
    assert notice.subject == "Sending paused for acme"
    for text in (notice.text, notice.html):
        assert "8.25%" in text and "5.00%" in text
        assert "24 hours" in text and "400 messages" in text
        assert "held, not dropped" in text
    assert "<p>" in notice.html
    operator = compose_pause_notice(profile, "list audit <now>", datetime.now(UTC))
    assert "Reason: list audit <now>" in operator.text
    assert "list audit &lt;now&gt;" in operator.html  # escaped in HTML


def test_pause_notice_counts_judged_sends_and_says_what_it_left_out() -> None:
    profile = Profile("acme", "ops@acme.example.com", Limits())
    # 500 sent, 100 of them to suppressed addresses: 400 judged, 33 hard bounces = 8.25%
    finding = Finding(Level.PAUSE, "bounce_rate", 24, 0.0825, 0.05, 500, suppressed=100)
    assert finding.judged_sends == 400
    assert finding.reason.endswith("(400 sent, not counting 100 suppressed)")
    notice = compose_pause_notice(profile, "", datetime(2026, 11, 29, tzinfo=UTC), finding)
    assert "400 messages sent (not counting 100 to addresses on the suppression list" in (
        notice.text
    )
