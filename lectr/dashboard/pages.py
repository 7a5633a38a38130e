"""Server-rendered dashboard pages: Jinja templates (their pure formatters: ``formats.py``).

Only rendering lives here. The handlers (sessions, CSRF, queries) build a context dict and call
one ``render_*`` function, which returns a complete HTML document. Every page is self-contained:
one same-origin stylesheet (``/static/lectr.css``), inline SVG charts, no JavaScript, nothing
fetched from anywhere else.
"""

from __future__ import annotations

from typing import Any

import jinja2

from lectr.analysis.summary import PERIODS
from lectr.dashboard import charts
from lectr.dashboard.charts import share_bar_svg
from lectr.dashboard.formats import (DASH, change_tone, coverage_notes, datetime_local, fmt_bucket, fmt_change, fmt_cost,
                               fmt_datetime, fmt_int, fmt_ms, fmt_pct, fmt_time, fmt_usd, health_status)

__all__ = [
    "render_login", "render_overview", "render_requests", "render_failures", "render_bad_period",
    "fmt_ms", "fmt_usd", "fmt_cost", "fmt_int", "fmt_pct", "fmt_change", "change_tone",
    "fmt_time", "fmt_datetime", "health_status", "coverage_notes",
]

_env: jinja2.Environment | None = None

PERIOD_PHRASES = {p.name: p.phrase for p in PERIODS}

ORIGIN_LABELS = {"lectr": "Lectr", "provider": "Provider", "client": "Client hung up"}

HEALTH_LABELS = {"ok": "OK", "degraded": "Degraded", "failing": "Failing", "idle": "No traffic"}

MEASURED_HINT = "counted by Lectr with tiktoken; the provider did not report usage"
PROVIDER_HINT = "reported by the provider"
PARTIAL_HINT = "completion only — the prompt is never read"
USAGE_NOTE_HINTS = {
    "undecodable": "the response's content-encoding could not be read, so its usage is unknown",
    "truncated": "the response outgrew the capture limit; only its start and end were counted (a lower bound)",
    "not_counted": "the tokeniser's queue was full or it was away; recorded without a count",
}

# The charts sit three across on a laptop and one per row on a phone: both about 350 CSS px wide,
# so a 420-unit viewBox keeps their 12-unit text at a readable 10 px either way.
CHART_WIDTH, CHART_HEIGHT = 420, 200

REQUEST_FILTERS = ("provider", "model", "feature", "task", "status", "since", "until")


def _period_phrase(period: str, periods: list) -> str:
    if period in PERIOD_PHRASES:
        return PERIOD_PHRASES[period]
    for value, label in periods:
        if value == period:
            text = str(label)
            return text[5:].lower() if text.lower().startswith("last ") else text.lower()
    return "period"


def _query(**params: Any) -> dict[str, str]:
    """Query parameters without the empty ones, for the ``urlencode`` filter."""
    return {k: str(v) for k, v in params.items() if v is not None and v != ""}


# ---------------------------------------------------------------------------------------------
# Environment and rendering
# ---------------------------------------------------------------------------------------------

def _environment() -> jinja2.Environment:
    global _env
    if _env is None:
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("lectr.dashboard", "templates"),
            autoescape=jinja2.select_autoescape(["html"]),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(
            fmt_ms=fmt_ms, fmt_usd=fmt_usd, fmt_cost=fmt_cost, fmt_int=fmt_int, fmt_pct=fmt_pct, fmt_change=fmt_change,
            fmt_time=fmt_time, fmt_datetime=fmt_datetime, datetime_local=datetime_local,
            fmt_bucket=fmt_bucket,
        )
        env.globals.update(
            change_tone=change_tone, health_status=health_status, coverage_notes=coverage_notes,
            share_bar=share_bar_svg, ORIGIN_LABELS=ORIGIN_LABELS, HEALTH_LABELS=HEALTH_LABELS,
            MEASURED_HINT=MEASURED_HINT, PROVIDER_HINT=PROVIDER_HINT, PARTIAL_HINT=PARTIAL_HINT,
            USAGE_NOTE_HINTS=USAGE_NOTE_HINTS,
        )
        _env = env
    return _env


def _render(template: str, ctx: dict) -> str:
    return _environment().get_template(template).render(**ctx)


def _dashboard_ctx(ctx: dict, keep: dict[str, str] | None = None) -> dict:
    """The caller's context plus what every dashboard page derives from it.

    ``keep``: query parameters the period switcher carries over (e.g. the provider filter).
    """
    out = dict(ctx)
    out["period_phrase"] = _period_phrase(ctx["period"], ctx["periods"])
    out["period_links"] = [(value, label, {"period": value, **(keep or {})}) for value, label in ctx["periods"]]
    return out


def render_login(*, error: str | None, csrf_token: str) -> str:
    """The sign-in page: one password field for the org key, posted to ``/login``."""
    return _render("login.html", {"error": error, "csrf_token": csrf_token})


def render_overview(ctx: dict) -> str:
    """The overview: stat cards, charts, models, providers and features for one period."""
    out = _dashboard_ctx(ctx, _query(provider=ctx["provider_filter"]))
    summary = ctx["summary"]
    out["charts"] = None
    if summary is not None:
        series = summary["series"]
        points = series["points"]
        bucket = series.get("bucket_seconds")
        size = {"width": CHART_WIDTH, "height": CHART_HEIGHT, "bucket_seconds": bucket}
        out["charts"] = {
            "requests": charts.time_series_svg(points, "requests", title="Requests", unit="requests",
                                               secondary_key="errors", **size),
            "latency": charts.time_series_svg(points, "latency_p95_ms", title="p95 latency", unit="ms",
                                              kind="line", **size),
            "cost": charts.time_series_svg(points, "cost_usd", title="Cost", unit="usd", **size),
        }
        out["model_total_requests"] = sum(int(m.get("requests") or 0) for m in summary["models"])
    return _render("overview.html", out)


def render_requests(ctx: dict) -> str:
    """The request log: a filter form, one row per request, and a link to the next page.

    Besides the common keys: ``rows``, ``filters``, ``providers_available``, ``next_cursor`` and,
    optionally, ``filter_error`` (shown as an alert when the query's filters could not be parsed).
    """
    filters = ctx["filters"]
    kept = _query(**{k: filters.get(k) for k in REQUEST_FILTERS})
    out = _dashboard_ctx(ctx, kept)
    out["next_params"] = (_query(cursor=ctx["next_cursor"], period=ctx["period"], **kept)
                          if ctx["next_cursor"] else None)
    out["any_filter"] = bool(kept)
    out.setdefault("filter_error", None)   # optional: a message when the query's filters were invalid
    return _render("requests.html", out)


def render_failures(ctx: dict) -> str:
    """Recent failed requests."""
    return _render("failures.html", _dashboard_ctx(ctx))


def render_bad_period(*, given: str, path: str, periods: list) -> str:
    """The 400 page for a ``period`` the dashboard (like the API) does not accept."""
    return _render("bad_period.html", {"given": given, "path": path, "periods": periods})
