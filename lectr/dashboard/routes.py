"""The web dashboard's handlers: log in with the org key, read summaries, page through requests.

The key is posted once to open a session and never appears in a URL or a page; the session
cookie is HttpOnly and SameSite=Strict; every form carries a CSRF token; repeated failed
logins from one address are slowed down, then refused for a while.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import defaultdict, deque
from importlib import resources

from aiohttp import web

from lectr.api import sessions

from lectr.dashboard import pages, understand_pages
from lectr.api.auth import SESSION_COOKIE
from lectr.api.errors import ApiError
from lectr.api.queries import RequestFilters, fetch_summary, list_failures, list_requests, parse_period
from lectr.api.state import STATE
from lectr.dashboard.page import PERIOD_LABELS, SECURITY_HEADERS, html_page, page_caller, page_context
from lectr.providers.registry import PROVIDER_NAMES

CSRF_COOKIE = "lectr_login_csrf"


class LoginThrottle:
    """Failed logins per client address: free at first, then slower, then refused for a while.

    An attempt is counted as a failure *before* its key is checked (``begin``), and only its
    own mark is taken back if the key was valid (``succeeded``): so a burst of parallel guesses
    is refused once the limit is reached rather than all evaluated at once, and a login with
    one's own valid key does not erase the failures of the guesses around it.
    """

    FREE_FAILURES = 3
    WINDOW_SECONDS = 900.0
    LOCKOUT_FAILURES = 20
    MAX_DELAY = 8.0
    MAX_ADDRESSES = 10_000

    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, address: str) -> deque[float]:
        failures = self._failures[address]
        cutoff = time.monotonic() - self.WINDOW_SECONDS
        while failures and failures[0] < cutoff:
            failures.popleft()
        return failures

    def locked(self, address: str) -> bool:
        return len(self._recent(address)) >= self.LOCKOUT_FAILURES

    def delay(self, address: str) -> float:
        """Seconds to wait before checking this address's next attempt."""
        extra = len(self._recent(address)) - self.FREE_FAILURES
        return 0.0 if extra < 0 else min(self.MAX_DELAY, 0.25 * 2 ** extra)

    def begin(self, address: str) -> tuple[float, float] | None:
        """Count an attempt as failed until it proves otherwise; return (its mark, seconds to wait
        before checking it), or None when the address is locked out."""
        if self.locked(address):
            return None
        wait = self.delay(address)
        mark = time.monotonic()
        self._recent(address).append(mark)
        if len(self._failures) > self.MAX_ADDRESSES:  # bound memory under a spray of addresses
            self._failures.pop(next(iter(self._failures)))
        return mark, wait

    def succeeded(self, address: str, mark: float) -> None:
        """Take back this attempt's mark, and only it: other attempts' failures stay counted."""
        failures = self._failures.get(address)
        if failures is not None:
            try:
                failures.remove(mark)
            except ValueError:
                pass  # already outside the window
            if not failures:
                del self._failures[address]


THROTTLE = web.AppKey("login_throttle", LoginThrottle)


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


async def login_page(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    response = html_page(pages.render_login(error=error, csrf_token=token), status)
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="Strict", secure=request.secure, path="/login")
    return response


async def login(request: web.Request) -> web.StreamResponse:
    throttle, address = request.app[THROTTLE], _client(request)
    form = await request.post()
    if not secrets.compare_digest(str(form.get("csrf_token", "")), request.cookies.get(CSRF_COOKIE, "")) \
            or not request.cookies.get(CSRF_COOKIE):
        return await login_page(request, "The form expired; please try again.", 400)
    attempt = throttle.begin(address)  # counted before anything is checked or awaited
    if attempt is None:
        return await login_page(request, "Too many failed attempts; try again in a few minutes.", 429)
    mark, wait = attempt
    if wait:
        await asyncio.sleep(wait)
    state = request.app[STATE]
    async with state.pool.acquire() as conn:
        opened = await sessions.open_session(conn, str(form.get("key", "")), state.session_hours)
    if opened is None:
        return await login_page(request, "That org key is not valid.", 401)
    throttle.succeeded(address, mark)
    token, _ = opened
    response = web.HTTPSeeOther("/dashboard")
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Strict", secure=request.secure, path="/",
                        max_age=int(state.session_hours * 3600))
    response.del_cookie(CSRF_COOKIE, path="/login")
    raise response  # returning an HTTPException is deprecated in aiohttp


async def logout(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(SESSION_COOKIE)
    form = await request.post()
    if token:
        async with request.app[STATE].pool.acquire() as conn:
            session = await sessions.lookup(conn, token)
            if session is None or not secrets.compare_digest(str(form.get("csrf_token", "")), session.csrf_token):
                raise web.HTTPForbidden(text="invalid CSRF token")
            await sessions.close_session(conn, token)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


def _period(request: web.Request) -> str:
    """The page's period, checked as the API checks it: an unknown one is a 400 page listing
    the accepted values, never silently another period."""
    try:
        return parse_period(request.query)
    except ApiError:
        body = pages.render_bad_period(given=request.query.get("period", ""), path=request.path,
                                       periods=PERIOD_LABELS)
        raise web.HTTPBadRequest(text=body, content_type="text/html", headers=SECURITY_HEADERS) from None


async def overview(request: web.Request) -> web.Response:
    caller = await page_caller(request)
    period = _period(request)
    provider = request.query.get("provider") or None
    if provider not in PROVIDER_NAMES:
        provider = None
    async with request.app[STATE].pool.acquire() as conn:
        computed_at, summary = await fetch_summary(conn, caller.org_id, period)
    available = sorted({m["provider"] for m in (summary or {}).get("models", [])})
    if summary is not None and provider:
        summary = {**summary, "models": [m for m in summary["models"] if m["provider"] == provider]}
    ctx = await page_context(request, caller, "overview", period=period, summary=summary, computed_at=computed_at,
                             provider_filter=provider, providers_available=available)
    return html_page(pages.render_overview(ctx))


async def requests_page(request: web.Request) -> web.Response:
    caller = await page_caller(request)
    period = _period(request)
    try:
        filters = RequestFilters.from_query(request.query)
        error = None
    except ApiError as exc:
        filters, error = RequestFilters(), exc.message
    state = request.app[STATE]
    async with state.pool.acquire() as conn:
        computed_at, summary = await fetch_summary(conn, caller.org_id, period)
        try:
            rows, next_cursor = await list_requests(conn, caller.org_id, filters,
                                                    cursor=request.query.get("cursor"), limit=50)
        except ApiError:
            rows, next_cursor = await list_requests(conn, caller.org_id, filters, cursor=None, limit=50)
    ctx = await page_context(request, caller, "requests", period=period, summary=summary, computed_at=computed_at,
                             rows=[_row(r) for r in rows], filters=filters.as_dict(),
                             providers_available=list(PROVIDER_NAMES), next_cursor=next_cursor, filter_error=error)
    return html_page(pages.render_requests(ctx))


async def failures_page(request: web.Request) -> web.Response:
    caller = await page_caller(request)
    period = _period(request)
    async with request.app[STATE].pool.acquire() as conn:
        computed_at, summary = await fetch_summary(conn, caller.org_id, period)
        rows = await list_failures(conn, caller.org_id, period, 100)
    ctx = await page_context(request, caller, "failures", period=period, summary=summary, computed_at=computed_at,
                             rows=[_row(r) for r in rows])
    return html_page(pages.render_failures(ctx))


def _row(r: dict) -> dict:
    row = dict(r)
    row["created_at"] = r["created_at"].isoformat()
    row["cost_usd"] = float(r["cost_usd"]) if r["cost_usd"] is not None else None
    return row


async def stylesheet(request: web.Request) -> web.Response:
    css = resources.files("lectr.dashboard").joinpath("static", "lectr.css").read_bytes()
    return web.Response(body=css, content_type="text/css", headers={"Cache-Control": "max-age=300"})


async def favicon(request: web.Request) -> web.Response:
    """No icon, said without a 404 in every browser's console (pages also link ``data:,``)."""
    return web.Response(status=204, headers={"Cache-Control": "max-age=86400"})


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/dashboard")


def add_dashboard_routes(app: web.Application) -> None:
    """Every dashboard page, one table: log in and out, the "see it" pages, the "understand it" pages."""
    app[THROTTLE] = LoginThrottle()
    app.router.add_routes([
        web.get("/", home),
        web.get("/login", login_page),
        web.post("/login", login),
        web.post("/logout", logout),
        web.get("/dashboard", overview),
        web.get("/dashboard/requests", requests_page),
        web.get("/dashboard/failures", failures_page),
        web.get("/dashboard/anomalies", understand_pages.anomalies_page),
        web.get("/dashboard/recommendations", understand_pages.recommendations_page),
        web.post("/dashboard/recommendations/{id}/dismiss", understand_pages.dismiss),
        web.get("/dashboard/settings", understand_pages.settings_page),
        web.post("/dashboard/settings/alerts", understand_pages.save_alerts),
        web.post("/dashboard/settings/threshold", understand_pages.save_threshold),
        web.post("/dashboard/settings/azure", understand_pages.save_azure),
        web.post("/dashboard/settings/test-alert", understand_pages.test_alert),
        web.get("/static/lectr.css", stylesheet),
        web.get("/favicon.ico", favicon),
    ])
