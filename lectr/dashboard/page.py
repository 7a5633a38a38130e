"""What every dashboard page handler shares: the session's org (or a redirect to log in), the
context every template gets, the CSRF-checked form, and the HTML response with its security
headers. The handlers are in ``routes.py`` (log in, overview, requests, failures) and
``understand_pages.py`` (anomalies, recommendations, settings); ``routes.py`` registers them all.
"""

from __future__ import annotations

import secrets

from aiohttp import web

from lectr.analysis.summary import DEFAULT_PERIOD, PERIODS
from lectr.api.auth import SESSION_COOKIE, Caller, org_caller
from lectr.api.errors import ApiError
from lectr.api.state import STATE
from lectr.api.understand_queries import open_anomaly_count

PERIOD_LABELS = [(p.name, p.label) for p in PERIODS]
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def html_page(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", headers=SECURITY_HEADERS)


async def page_caller(request: web.Request) -> Caller:
    """The session's org for a page; no valid session sends the browser to the login page."""
    if not request.cookies.get(SESSION_COOKIE):
        raise web.HTTPSeeOther("/login")
    try:
        return await org_caller(request)
    except ApiError:
        raise web.HTTPSeeOther("/login") from None


async def page_context(request: web.Request, caller: Caller, active: str, *, period: str = DEFAULT_PERIOD.name,
                       summary: dict | None = None, computed_at=None, **values) -> dict:
    """What every dashboard page's template gets — the org, the navigation (``active`` page, open
    anomaly count, ``period`` carried along), the session's CSRF token, the refresh interval, the
    period's ``summary`` (None: not computed, or a page without one), its freshness and dropped
    events — plus the page's own ``values``."""
    async with request.app[STATE].pool.acquire() as conn:
        open_anomalies = await open_anomaly_count(conn, caller.org_id)
    return {"org_name": caller.org_name, "active": active, "period": period, "periods": PERIOD_LABELS,
            "open_anomalies": open_anomalies,
            "csrf_token": request["session"].csrf_token,
            "summary": summary, "dropped_events": int((summary or {}).get("dropped_events", 0)),
            "refresh_seconds": request.app[STATE].refresh_seconds,
            "computed_at": computed_at.isoformat() if computed_at else None, **values}


async def posted_form(request: web.Request) -> dict:
    """The posted form, once its CSRF token matches the session's; 403 otherwise."""
    form = await request.post()
    if not secrets.compare_digest(str(form.get("csrf_token", "")), request["session"].csrf_token):
        raise web.HTTPForbidden(text="invalid CSRF token")
    return form
