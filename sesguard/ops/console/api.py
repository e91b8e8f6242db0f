"""The console's JSON API: reads through sesguard.ops.operations, actions through
sesguard.ops.operations (the CLI's code), views from sesguard.ops.console.views.

    GET  /api/partners                   every partner of the sparse partners index
    GET  /api/partners/{id}              one partner: row, `partners show` text, hourly
                                         series over 7 days, lifecycle events
    POST /api/partners/{id}/pause        {"reason": str, "notify": bool}
    POST /api/partners/{id}/resume       {"held": "keep" | "replay" | "discard"}
    POST /api/partners/{id}/limits       {"bounce_limit", "complaint_limit", "min_volume",
                                          "warn_ratio", "max_rate", "daily_quota"}: each
                                          optional, as the CLI's options ("none": no cap)

Errors are {"error": one line}: 400 bad input, 404 no such partner, 502 AWS failed. The
guard in sesguard.ops.console.server has checked the token and origin before any handler runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from sesguard.aws.clients import Clients, not_implemented_message
from sesguard.aws.errors import answer_text
from sesguard.aws.lifecycle import partner_history
from sesguard.aws.store import PartnerNotFound, PartnerStore
from sesguard.core.partners import hours_back, utcnow
from sesguard.errors import Failed, Refused
from sesguard.logging import get_logger
from sesguard.ops import operations
from sesguard.ops.console import views
from sesguard.ops.report import partner_text
from sesguard.settings import Settings

log = get_logger(__name__)

CLIENTS: web.AppKey[Clients] = web.AppKey("clients", Clients)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
CHART_HOURS = 168  # 7 days of hour buckets

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", charset="utf-8"
    )


def error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


def _answers(handler: Handler) -> Handler:
    """Every failure becomes one JSON line with a status that says whose fault it is."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except PartnerNotFound as exc:
            return error(404, str(exc))
        except Refused as exc:
            return error(400, str(exc))
        except Failed as exc:
            return error(502, str(exc))
        except ClientError as exc:
            message = not_implemented_message(exc)
            if message is None:
                message = answer_text(exc)
            return error(502, message)
        except BotoCoreError as exc:
            return error(502, f"cannot reach AWS: {exc}")

    return wrapped


def _partner_id(request: web.Request, *, reserved_ok: bool = False) -> str:
    return operations.check_id(request.match_info["partner_id"], reserved_ok=reserved_ok)


async def _body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    """The JSON object of a request; an unknown field is refused, not ignored."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise Refused("the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise Refused("the request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Refused(f"unknown field {unknown[0]!r}")
    return body


@_answers
async def list_partners(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    store = PartnerStore.from_settings(request.app[CLIENTS].dynamodb, settings)
    reports = await operations.partner_reports(store, settings)
    return json_response(
        {
            "now": utcnow().isoformat(),
            "windows": list(settings.window_hours),
            "partners": [views.partner_row(r) for r in reports],
        }
    )


@_answers
async def show_partner(request: web.Request) -> web.StreamResponse:
    pid = _partner_id(request, reserved_ok=True)
    clients, settings = request.app[CLIENTS], request.app[SETTINGS]
    snapshot = await operations.partner_snapshot(_chart_store(clients, settings), settings, pid)
    if snapshot is None:
        raise PartnerNotFound(f"no partner {pid} (and no traffic under that id)")
    report, now, buckets = snapshot.report, snapshot.now, snapshot.state.buckets
    since = hours_back(now, CHART_HOURS)
    events = await partner_history(clients.dynamodb, settings.table, pid, since)
    profile = snapshot.state.profile
    return json_response(
        {
            "now": now.isoformat(),
            "partner": views.partner_row(report),
            "text": partner_text(report),
            "series": views.hourly_series(
                buckets,
                now,
                views.limits_of(report),
                CHART_HOURS,
                profile.rearm if profile else None,
            ),
            "events": views.event_rows(events, now, CHART_HOURS),
        }
    )


def _chart_store(clients: Clients, settings: Settings) -> PartnerStore:
    """The partner store, reading CHART_HOURS of buckets even where the longest window
    (what `partners show` judges) is shorter: one Query for the report and the charts."""
    hours = (*settings.window_hours, CHART_HOURS)
    return PartnerStore.from_settings(clients.dynamodb, settings, hours)


@_answers
async def pause_partner(request: web.Request) -> web.StreamResponse:
    pid = _partner_id(request)
    body = await _body(request, {"reason", "notify"})
    notify = body.get("notify", True)
    if not isinstance(notify, bool):
        raise Refused("notify must be true or false")
    result = await operations.pause(
        request.app[CLIENTS],
        request.app[SETTINGS],
        pid,
        body.get("reason", operations.DEFAULT_PAUSE_REASON),
        notify=notify,
    )
    log.warning("console_pause", partner_id=pid, paused=result.paused, notify=notify)
    return json_response(
        {
            "lines": result.lines(),
            "paused": result.paused,
            "notice_sent": result.notice_sent,
        }
    )


@_answers
async def resume_partner(request: web.Request) -> web.StreamResponse:
    pid = _partner_id(request)
    body = await _body(request, {"held"})
    action = operations.held_action(body.get("held", "keep"))
    clients, settings = request.app[CLIENTS], request.app[SETTINGS]
    resumed = await operations.resume(clients, settings, pid)
    released = await operations.release_held(clients, settings, pid, action)
    log.warning("console_resume", partner_id=pid, resumed=resumed.resumed, held=action.value)
    return json_response(
        {
            "lines": resumed.lines()
            + [f"warning: {w}" for w in resumed.warnings]
            + released.lines(),
            "resumed": resumed.resumed,
            "held": action.value,
            "replayed": released.replayed,
            "discarded": released.discarded,
            "remaining": released.remaining,
        }
    )


LIMIT_FIELDS = (
    "bounce_limit",
    "complaint_limit",
    "min_volume",
    "warn_ratio",
    "max_rate",
    "daily_quota",
)


@_answers
async def set_limits(request: web.Request) -> web.StreamResponse:
    pid = _partner_id(request)
    body = await _body(request, set(LIMIT_FIELDS))
    result = await operations.set_partner(
        request.app[CLIENTS],
        request.app[SETTINGS],
        pid,
        **{name: body.get(name) for name in LIMIT_FIELDS},
    )
    limits = result.profile.limits.as_json()
    throttle = result.profile.throttle.as_json()
    log.warning("console_set_limits", partner_id=pid, limits=limits, throttle=throttle)
    return json_response({"lines": result.lines(), "limits": limits, "throttle": throttle})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/partners", list_partners)
    app.router.add_get("/api/partners/{partner_id}", show_partner)
    app.router.add_post("/api/partners/{partner_id}/pause", pause_partner)
    app.router.add_post("/api/partners/{partner_id}/resume", resume_partner)
    app.router.add_post("/api/partners/{partner_id}/limits", set_limits)
