"""Partner notices: what a paused partner's contact is told, and sending it through SES."""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sesguard.core.partners import Profile, check_contact
from sesguard.core.policy import Finding
from sesguard.logging import get_logger

if TYPE_CHECKING:
    from types_aiobotocore_sesv2 import SESV2Client

log = get_logger(__name__)


@dataclass(frozen=True)
class Notice:
    to: str
    subject: str
    text: str
    html: str


def compose_pause_notice(
    profile: Profile, reason: str, at: datetime, finding: Finding | None = None
) -> Notice:
    """Plain words: what happened, the numbers behind it, and what happens to their mail."""
    pid = profile.partner_id
    subject = f"Sending paused for {pid}"
    lines = [f"Sending for partner {pid} was paused at {at:%Y-%m-%d %H:%M} UTC.", ""]
    if finding is not None:
        metric = finding.metric.replace("_", " ")
        window = (
            f"Window: the last {finding.window_hours} hours, {finding.judged_sends} messages sent"
        )
        if finding.suppressed:  # the rates leave them out, as SES does (docs/semantics.md)
            window += (
                f" (not counting {finding.suppressed} to addresses on the suppression list,"
                " which SES never attempts)"
            )
        lines += [
            f"Reason: {metric} {finding.rate:.2%} is above the limit of {finding.limit:.2%}",
            window + ".",
        ]
    else:
        lines.append(f"Reason: {reason}")
    lines += [
        "",
        "New messages are held, not dropped. They will be sent when sending resumes,",
        "or discarded if you ask us to. Please clean your recipient list and contact us.",
    ]
    text = "\n".join(lines) + "\n"
    body = "".join(f"<p>{html.escape(line)}</p>" if line else "" for line in lines)
    return Notice(profile.contact_email, subject, text, f"<html><body>{body}</body></html>")


async def send_notice(sesv2: SESV2Client, notice: Notice, from_address: str | None) -> str | None:
    """Send through SES; returns the MessageId, or None when no sender address is configured.

    The contact is checked again here, as `partners add --contact` checks it: the table
    may hold an address no check ever saw (written directly, or by an older version), and
    one with CR/LF in it must never reach SES. InvalidContact is raised without sending;
    its message names the bad characters by code point, never echoes them raw."""
    to = check_contact(notice.to)
    if not from_address:
        log.warning("notice_not_sent", reason="SESGUARD_NOTIFY_FROM is not set", to=to)
        return None
    params: dict[str, Any] = {
        "FromEmailAddress": from_address,
        "Destination": {"ToAddresses": [to]},
        "Content": {
            "Simple": {
                "Subject": {"Data": notice.subject, "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": notice.text, "Charset": "UTF-8"},
                    "Html": {"Data": notice.html, "Charset": "UTF-8"},
                },
            }
        },
        "EmailTags": [{"Name": "sesguard", "Value": "notice"}],
    }
    resp = await sesv2.send_email(**params)
    return str(resp.get("MessageId", ""))
