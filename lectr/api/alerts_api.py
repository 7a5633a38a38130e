"""Org-scoped alert settings: where the org's anomaly alerts go, and a "send test alert" action.

An org only ever reads and writes its own settings (the org comes from its key or session).
"""

from __future__ import annotations

import orjson
from aiohttp import web

from lectr.alerts.settings import AlertSettings, SettingsError, get_settings, put_settings
from lectr.api.auth import org_caller
from lectr.api.errors import ApiError
from lectr.api.org_api import json
from lectr.api.state import STATE

_FIELDS = ("email_recipients", "email_enabled", "webhook_url", "webhook_enabled")


def _settings_body(settings: AlertSettings, request: web.Request) -> dict:
    return {**settings.as_dict(), "email_configured": request.app[STATE].alerts.smtp is not None}


async def _json_object(request: web.Request) -> dict:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "The body must be a JSON object.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object.")
    return body


def merge_settings(current: AlertSettings, body: dict) -> AlertSettings:
    """``current`` with the fields ``body`` gives; unknown fields and wrong types are a 400."""
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise ApiError(400, "invalid_parameter", f"{unknown[0]}: unknown field; expected {', '.join(_FIELDS)}",
                       param=unknown[0])
    for name in ("email_enabled", "webhook_enabled"):
        if name in body and not isinstance(body[name], bool):
            raise ApiError(400, "invalid_parameter", f"{name}: must be true or false", param=name)
    if "webhook_url" in body and body["webhook_url"] is not None and not isinstance(body["webhook_url"], str):
        raise ApiError(400, "invalid_parameter", "webhook_url: must be a URL or null", param="webhook_url")
    recipients = body.get("email_recipients", list(current.email_recipients))
    if not isinstance(recipients, list):
        raise ApiError(400, "invalid_parameter", "email_recipients: must be a list of addresses",
                       param="email_recipients")
    return AlertSettings(tuple(recipients), body.get("email_enabled", current.email_enabled),
                         body.get("webhook_url", current.webhook_url),
                         body.get("webhook_enabled", current.webhook_enabled))


async def get_alert_settings(request: web.Request) -> web.Response:
    caller = await org_caller(request)
    async with request.app[STATE].pool.acquire() as conn:
        settings = await get_settings(conn, caller.org_id)
    return json(_settings_body(settings, request))


async def put_alert_settings(request: web.Request) -> web.Response:
    caller = await org_caller(request)
    body = await _json_object(request)
    async with request.app[STATE].pool.acquire() as conn, conn.transaction():
        try:
            stored = await put_settings(conn, caller.org_id, merge_settings(await get_settings(conn, caller.org_id),
                                                                            body),
                                        allow_private=request.app[STATE].alerts.allow_private_webhooks)
        except SettingsError as exc:
            raise ApiError(400, "invalid_parameter", str(exc), param=exc.field) from None
    return json(_settings_body(stored, request))


async def test_alert_settings(request: web.Request) -> web.Response:
    from lectr.alerts.job import send_test_alerts

    caller = await org_caller(request)
    async with request.app[STATE].pool.acquire() as conn:
        results = await send_test_alerts(conn, caller.org_id, request.app[STATE].alerts)
    if not results:
        raise ApiError(400, "no_alert_channels", "No alert channel is configured: set email_recipients or "
                                                 "webhook_url with PUT /api/v1/alert-settings first.")
    return json({"results": results, "ok": all(r["ok"] for r in results)})
