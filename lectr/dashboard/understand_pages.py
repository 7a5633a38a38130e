"""Dashboard pages of "understand it": the anomaly feed, recommendation cards, and settings
(alert recipients, webhook, p95 threshold, Azure endpoint). Server-rendered like the others;
every form carries the session's CSRF token.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from aiohttp import web

from lectr.alerts import settings as alert_settings
from lectr.alerts.message import format_sigma, format_spread, format_value, format_window, what, where
from lectr.api import understand_queries as q
from lectr.dashboard.anomaly_chart import anomaly_chart_svg
from lectr.api.auth import Caller
from lectr.dashboard.page import html_page, page_caller, page_context, posted_form
from lectr.dashboard.pages import _render, fmt_ms, fmt_usd
from lectr.api.state import STATE
from lectr.api.orgs import OrgError, set_azure_for

SIGNAL_LABELS = {
    "requests": "Requests (30 days)", "avg_prompt_tokens": "Avg prompt tokens",
    "avg_completion_tokens": "Avg completion tokens", "error_rate": "Error rate", "p95_latency_ms": "p95 latency",
    "cost_usd": "Cost (30 days)", "task": "Declared task", "task_share": "Share with that task",
}


def _hour_ceil(t: datetime) -> datetime:
    floor = t.replace(minute=0, second=0, microsecond=0)
    return floor if floor == t else floor + timedelta(hours=1)


def _anomaly_view(a: dict) -> dict:
    metric = a["metric"]
    return {
        "id": a["id"], "what": what(a), "where": where(a), "metric": metric, "direction": a["direction"],
        "feature": a.get("feature"), "window": format_window(a["window_start"], a["window_end"]),
        "current": format_value(metric, a["current_value"]),
        "baseline": (f"{format_value(metric, a['baseline_mean'])} ± {format_spread(metric, a['baseline_std'])}"
                     if a.get("baseline_mean") is not None else "no baseline"),
        "sigma": format_sigma(a.get("deviation_sigma")), "open": a.get("resolved_at") is None,
        "opened_at": a["opened_at"], "resolved_at": a.get("resolved_at"),
        "baseline_note": (a.get("detail") or {}).get("baseline"), "chart": None,
    }


async def anomalies_page(request: web.Request) -> web.Response:
    caller = await page_caller(request)
    raw = request.query.get("anomaly", "")
    only = int(raw) if raw.isdigit() and len(raw) < 18 else None
    now = datetime.now(timezone.utc)
    async with request.app[STATE].pool.acquire() as conn:
        rows = await q.list_anomalies(conn, caller.org_id, anomaly_id=only)
        views = []
        for i, a in enumerate(rows):
            view = _anomaly_view(a)
            if i < q.CHARTS_PER_PAGE:
                end = _hour_ceil(min(now, a["window_end"] + timedelta(hours=6)))
                start = end - timedelta(hours=q.CHART_HOURS)
                series = await q.hourly_series(conn, caller.org_id, a.get("feature"), a["metric"], start, end,
                                               model=(a.get("detail") or {}).get("model"))
                view["chart"] = anomaly_chart_svg(
                    series, window_start=a["window_start"], window_end=a["window_end"],
                    baseline_mean=a.get("baseline_mean"), baseline_std=a.get("baseline_std"),
                    label=f"{view['what']}, {view['where']}, hourly over 7 days")
            views.append(view)
    ctx = await page_context(request, caller, "anomalies", anomalies=views, only=only)
    return html_page(_render("anomalies.html", ctx))


def _recommendation_view(r: dict) -> dict:
    signals = []
    for key, value in (r.get("signals") or {}).items():
        if isinstance(value, bool) or value is None:
            value = "—" if value is None else ("yes" if value else "no")
        elif key.endswith("_ms") and isinstance(value, (int, float)):
            value = fmt_ms(value)
        elif ("cost" in key or key.endswith("_usd")) and isinstance(value, (int, float)):
            value = fmt_usd(value)
        elif isinstance(value, float):
            value = f"{value:.1%}" if "rate" in key or "share" in key else f"{value:,.1f}"
        elif isinstance(value, int):
            value = f"{value:,d}"
        signals.append((SIGNAL_LABELS.get(key, key.replace("_", " ")), value))
    saving = r.get("monthly_saving_usd")
    return {**r, "signal_rows": signals, "saving": float(saving) if saving is not None else None}


async def recommendations_page(request: web.Request) -> web.Response:
    caller = await page_caller(request)
    async with request.app[STATE].pool.acquire() as conn:
        rows = await q.list_recommendations(conn, caller.org_id)
    ctx = await page_context(request, caller, "recommendations",
                             recommendations=[_recommendation_view(r) for r in rows],
                             dismissed=request.query.get("dismissed") == "1")
    return html_page(_render("recommendations.html", ctx))


async def dismiss(request: web.Request) -> web.StreamResponse:
    caller = await page_caller(request)
    await posted_form(request)
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPNotFound(text="no such recommendation")
    async with request.app[STATE].pool.acquire() as conn:
        if not await q.dismiss_recommendation(conn, caller.org_id, int(raw)):
            raise web.HTTPNotFound(text="no such recommendation")
    raise web.HTTPSeeOther("/dashboard/recommendations?dismissed=1")


async def _settings_page(request: web.Request, caller: Caller, *, status: int = 200, notice: str | None = None,
                         errors: dict | None = None, values: dict | None = None,
                         test_results: list | None = None) -> web.Response:
    async with request.app[STATE].pool.acquire() as conn:
        current = await alert_settings.get_settings(conn, caller.org_id)
        threshold = await alert_settings.get_threshold(conn, caller.org_id)
        azure = await conn.fetchrow("SELECT endpoint, api_version FROM azure_configs WHERE org_id = $1",
                                    caller.org_id)
    shown = {"email_recipients": ", ".join(current.email_recipients), "webhook_url": current.webhook_url or "",
             "p95_threshold_ms": "" if threshold is None else str(threshold),
             "azure_endpoint": azure["endpoint"] if azure else "",
             "azure_api_version": azure["api_version"] if azure else "2024-10-21"}
    shown.update(values or {})
    ctx = await page_context(request, caller, "settings", values=shown, errors=errors or {}, notice=notice,
                             test_results=test_results, email_configured=request.app[STATE].alerts.smtp is not None,
                             has_channels=bool(current.targets()))
    return html_page(_render("settings.html", ctx), status)


async def settings_page(request: web.Request) -> web.Response:
    caller = await page_caller(request)
    saved = request.query.get("saved")
    notice = {"alerts": "Alert channels saved.", "threshold": "p95 threshold saved.",
              "azure": "Azure endpoint saved."}.get(saved or "")
    return await _settings_page(request, caller, notice=notice)


async def save_alerts(request: web.Request) -> web.StreamResponse:
    caller = await page_caller(request)
    form = await posted_form(request)
    values = {"email_recipients": str(form.get("email_recipients", "")), "webhook_url": str(form.get("webhook_url", ""))}
    try:
        async with request.app[STATE].pool.acquire() as conn:
            current = await alert_settings.get_settings(conn, caller.org_id)
            await alert_settings.put_settings(conn, caller.org_id, alert_settings.AlertSettings(
                alert_settings.check_recipients(values["email_recipients"]), current.email_enabled,
                values["webhook_url"], current.webhook_enabled),
                allow_private=request.app[STATE].alerts.allow_private_webhooks)
    except alert_settings.SettingsError as exc:
        return await _settings_page(request, caller, status=400, errors={exc.field or "alerts": str(exc)},
                                    values=values)
    raise web.HTTPSeeOther("/dashboard/settings?saved=alerts")


async def save_threshold(request: web.Request) -> web.StreamResponse:
    caller = await page_caller(request)
    form = await posted_form(request)
    raw = str(form.get("p95_threshold_ms", ""))
    try:
        async with request.app[STATE].pool.acquire() as conn:
            await alert_settings.set_threshold(conn, caller.org_id, raw)
    except alert_settings.SettingsError as exc:
        return await _settings_page(request, caller, status=400, errors={"p95_threshold_ms": str(exc)},
                                    values={"p95_threshold_ms": raw})
    raise web.HTTPSeeOther("/dashboard/settings?saved=threshold")


async def save_azure(request: web.Request) -> web.StreamResponse:
    caller = await page_caller(request)
    form = await posted_form(request)
    values = {"azure_endpoint": str(form.get("azure_endpoint", "")),
              "azure_api_version": str(form.get("azure_api_version", ""))}
    try:
        async with request.app[STATE].pool.acquire() as conn:
            await set_azure_for(conn, caller.org_id, values["azure_endpoint"], values["azure_api_version"])
    except OrgError as exc:
        return await _settings_page(request, caller, status=400, errors={"azure": str(exc)}, values=values)
    raise web.HTTPSeeOther("/dashboard/settings?saved=azure")


async def test_alert(request: web.Request) -> web.Response:
    from lectr.alerts.job import send_test_alerts

    caller = await page_caller(request)
    await posted_form(request)
    async with request.app[STATE].pool.acquire() as conn:
        results = await send_test_alerts(conn, caller.org_id, request.app[STATE].alerts)
    if not results:
        return await _settings_page(request, caller, status=400,
                                    errors={"alerts": "Set a recipient or a webhook first."})
    return await _settings_page(request, caller, test_results=results)

