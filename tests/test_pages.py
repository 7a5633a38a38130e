"""The dashboard's pages and charts, rendered without a server: content, escaping, formatters."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import jinja2
import pytest
from markupsafe import Markup

from lectr.dashboard import charts, pages
from lectr.dashboard.pages import (change_tone, coverage_notes, fmt_change, fmt_int, fmt_ms, fmt_pct, fmt_usd,
                             health_status, render_failures, render_login, render_overview, render_requests)

XSS = "<script>alert(1)</script>"
PERIODS = [("last_24h", "Last 24 hours"), ("last_7d", "Last 7 days"), ("last_30d", "Last 30 days")]
END = datetime(2025, 5, 1, 15, 0, tzinfo=timezone.utc)


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def sample_points(n: int = 24, bucket: int = 3600) -> list[dict]:
    points = []
    for i in range(n):
        requests = 400 + (i * 37) % 260 + (180 if 9 <= i % 24 <= 17 else 0)
        errors = (i * 7) % 11 if i % 5 else 0
        points.append({
            "start": iso(END - timedelta(seconds=bucket * (n - i))),
            "requests": requests,
            "errors": errors,
            "cost_usd": round(requests * 0.0091, 4),
            "latency_p95_ms": None if i in (5, 6) else 900 + (i * 53) % 700,
        })
    return points


def totals(**over) -> dict:
    base = {
        "requests": 14_388, "errors": 212, "error_rate": 212 / 14_388, "cost_usd": 131.0724,
        "prompt_tokens": 6_120_455, "completion_tokens": 1_804_337, "total_tokens": 7_924_792,
        "latency_avg_ms": 812.4, "latency_p50_ms": 640.0, "latency_p95_ms": 1_384.0, "latency_p99_ms": 2_911.5,
        "ttfb_avg_ms": 231.0, "ttfb_p95_ms": 604.2, "measured_requests": 37, "partial_cost_requests": 37,
        "unpriced_requests": 5,
    }
    base.update(over)
    return base


def sample_summary(**over) -> dict:
    points = sample_points()
    summary = {
        "period": "last_24h",
        "window": {"start": iso(END - timedelta(days=1)), "end": iso(END)},
        "previous_window": {"start": iso(END - timedelta(days=2)), "end": iso(END - timedelta(days=1))},
        "computed_at": iso(END - timedelta(seconds=21)),
        "totals": totals(),
        "previous": totals(requests=12_840, errors=96, error_rate=96 / 12_840, cost_usd=118.5, total_tokens=7_001_200,
                           prompt_tokens=5_400_000, completion_tokens=1_601_200, latency_avg_ms=790.0,
                           latency_p95_ms=1_220.0, measured_requests=0, partial_cost_requests=0, unpriced_requests=0),
        "series": {"bucket_seconds": 3600, "points": points},
        "models": [
            {"model": "gpt-4o-mini", "provider": "openai", "requests": 8_210, "errors": 61, "cost_usd": 12.4172,
             "latency_avg_ms": 642.0, "latency_p95_ms": 1_190.0, "tokens": 4_400_120},
            {"model": "claude-3-5-sonnet-latest", "provider": "anthropic", "requests": 3_902, "errors": 140,
             "cost_usd": 104.33, "latency_avg_ms": 1_380.0, "latency_p95_ms": 2_740.0, "tokens": 2_600_000},
            {"model": "llama-3.3-70b-versatile", "provider": "groq", "requests": 2_271, "errors": 11,
             "cost_usd": 14.3252, "latency_avg_ms": 301.0, "latency_p95_ms": 522.0, "tokens": 924_672},
            {"model": None, "provider": "openai", "requests": 5, "errors": 0, "cost_usd": 0.0,
             "latency_avg_ms": None, "latency_p95_ms": None, "tokens": 0},
        ],
        "providers": [
            {"provider": "openai", "requests": 8_215, "errors": 61, "error_rate": 61 / 8_215, "cost_usd": 12.4172,
             "previous_cost_usd": 10.02, "latency_p95_ms": 1_190.0},
            {"provider": "anthropic", "requests": 3_902, "errors": 140, "error_rate": 140 / 3_902,
             "cost_usd": 104.33, "previous_cost_usd": 101.4, "latency_p95_ms": 2_740.0},
            {"provider": "groq", "requests": 2_271, "errors": 11, "error_rate": 0.0048, "cost_usd": 14.3252,
             "previous_cost_usd": 0.0, "latency_p95_ms": 522.0},
            {"provider": "gemini", "requests": 40, "errors": 9, "error_rate": 0.225, "cost_usd": 0.0042,
             "previous_cost_usd": 0.0061, "latency_p95_ms": 3_901.0},
        ],
        "features": [
            {"feature": "chat", "requests": 9_001, "errors": 120, "error_rate": 120 / 9_001, "cost_usd": 88.1,
             "latency_avg_ms": 900.0, "latency_p95_ms": 1_500.0, "tokens": 5_000_000},
            {"feature": "untagged", "requests": 4_000, "errors": 80, "error_rate": 0.02, "cost_usd": 30.0,
             "latency_avg_ms": 700.0, "latency_p95_ms": 1_100.0, "tokens": 2_000_000},
            {"feature": XSS, "requests": 1_387, "errors": 12, "error_rate": 12 / 1_387, "cost_usd": 12.9724,
             "latency_avg_ms": 412.0, "latency_p95_ms": 811.0, "tokens": 924_792},
        ],
        "dropped_events": 0,
    }
    summary.update(over)
    return summary


def common(active: str, **over) -> dict:
    ctx = {
        "org_name": "acme", "active": active, "period": "last_24h", "periods": PERIODS,
        "csrf_token": "csrf-123", "dropped_events": 0, "refresh_seconds": 60,
        "computed_at": iso(END - timedelta(seconds=21)),
    }
    ctx.update(over)
    return ctx


def overview_ctx(**over) -> dict:
    ctx = common("overview", summary=sample_summary(), provider_filter=None,
                 providers_available=["anthropic", "gemini", "groq", "openai"])
    ctx.update(over)
    return ctx


def sample_rows() -> list[dict]:
    def row(i, **over):
        base = {
            "id": 1000 + i, "created_at": iso(END - timedelta(minutes=3 * i)), "provider": "openai",
            "model": "gpt-4o-mini", "feature": "chat", "task": "generation", "status_code": 200,
            "error_type": None, "error_origin": None, "stream": False, "latency_ms": 812.0, "ttfb_ms": 240.0,
            "prompt_tokens": 12, "completion_tokens": 9, "token_source": "provider", "cost_usd": 0.0000072,
            "cost_partial": False,
        }
        base.update(over)
        return base

    return [
        row(0),
        row(1, stream=True, prompt_tokens=None, completion_tokens=388, token_source="measured", cost_usd=0.000233,
            cost_partial=True, latency_ms=4_120.0, ttfb_ms=380.0),
        row(2, provider="anthropic", model="claude-3-5-sonnet-latest", status_code=529, error_type="overloaded_error",
            error_origin="provider", token_source="none", prompt_tokens=None, completion_tokens=None, cost_usd=None,
            feature="untagged", task=None),
        row(3, model="mystery-model", cost_usd=None, feature=XSS, status_code=429, error_type="rate_limit_exceeded",
            error_origin="provider"),
        row(4, status_code=None, error_type="client_disconnected", error_origin="client", token_source="none",
            prompt_tokens=None, completion_tokens=None, cost_usd=None, ttfb_ms=None),
        row(5, status_code=504, error_type="upstream_timeout", error_origin="lectr", token_source="none",
            prompt_tokens=None, completion_tokens=None, cost_usd=None, model=None),
    ]


def requests_ctx(**over) -> dict:
    ctx = common("requests", rows=sample_rows(), providers_available=["anthropic", "openai"],
                 filters={"provider": "openai", "model": None, "feature": "chat & more", "task": None,
                          "status": "5xx", "since": "2025-05-01T10:00", "until": None},
                 next_cursor="MjAyNS0wNS0wMVQxNDo1NzowMFo=|1000")
    ctx.update(over)
    return ctx


def failures_ctx(**over) -> dict:
    ctx = common("failures", rows=[r for r in sample_rows() if r["error_type"]])
    ctx.update(over)
    return ctx


def all_pages() -> dict[str, str]:
    return {
        "login": render_login(error="That key is not valid.", csrf_token="csrf-123"),
        "overview": render_overview(overview_ctx(dropped_events=3)),
        "overview_empty": render_overview(overview_ctx(summary=None, computed_at=None)),
        "requests": render_requests(requests_ctx()),
        "requests_empty": render_requests(requests_ctx(rows=[], next_cursor=None)),
        "failures": render_failures(failures_ctx()),
        "failures_empty": render_failures(failures_ctx(rows=[])),
    }


def text_of(html: str) -> str:
    """The visible text, tags removed and whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# ---------------------------------------------------------------------------------------------
# Formatters
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, text", [
    (None, "—"), (0, "0.0 ms"), (4.24, "4.2 ms"), (9.96, "10 ms"), (812.4, "812 ms"), (999.4, "999 ms"),
    (999.6, "1.00 s"), (1384, "1.38 s"), (12_420, "12.4 s"), (184_000, "184 s"), (float("nan"), "—"),
])
def test_fmt_ms(value, text):
    assert fmt_ms(value) == text


@pytest.mark.parametrize("value, text", [
    (None, "—"), (0, "$0.00"), (142, "$142.00"), (1234.5, "$1,234.50"), (0.0042, "$0.0042"),
    (0.5, "$0.50"), (0.123456, "$0.1235"), (0.00001234, "$0.00001234"), (0.999, "$0.999"), (0.9999, "$0.9999"),
    (0.99996, "$1.00"), (-2.5, "-$2.50"),
])
def test_fmt_usd(value, text):
    assert fmt_usd(value) == text


@pytest.mark.parametrize("value, text", [(None, "—"), (0, "0"), (7, "7"), (1234567, "1,234,567"), (12.6, "13")])
def test_fmt_int(value, text):
    assert fmt_int(value) == text


@pytest.mark.parametrize("value, text", [
    (None, "—"), (0, "0%"), (0.0042, "0.42%"), (0.042, "4.2%"), (0.375, "37.5%"), (1, "100%"), (0.01, "1%"),
])
def test_fmt_pct(value, text):
    assert fmt_pct(value) == text


@pytest.mark.parametrize("current, previous, mode, text", [
    (112, 100, "relative", "▲ 12%"), (96.6, 100, "relative", "▼ 3.4%"), (5, 0, "relative", "new"),
    (0, 0, "relative", "no change"), (100, 100, "relative", "no change"), (None, 10, "relative", "—"),
    (800, None, "relative", "new"), (0.032, 0.02, "points", "▲ 1.2 pp"), (0.01, 0.02, "points", "▼ 1 pp"),
    (0.0, 0.0, "points", "no change"), (2500, 100, "relative", "▲ 2,400%"),
])
def test_fmt_change(current, previous, mode, text):
    assert fmt_change(current, previous, mode) == text


def test_change_tone():
    assert change_tone(120, 100, "bad") == "bad"
    assert change_tone(80, 100, "bad") == "good"
    assert change_tone(120, 100, "good") == "good"
    assert change_tone(120, 100) == "neutral"
    assert change_tone(5, 0, "bad") == "neutral"          # "new": nothing to judge against
    assert change_tone(100.04, 100, "bad") == "neutral"    # rounds to no change
    assert change_tone(0.05, 0.01, "bad", "points") == "bad"


def test_health_status_thresholds():
    assert health_status(0.0, 10) == "ok"
    assert health_status(0.0099, 10) == "ok"
    assert health_status(0.01, 10) == "degraded"
    assert health_status(0.0499, 10) == "degraded"
    assert health_status(0.05, 10) == "failing"
    assert health_status(0.0, 0) == "idle"


def test_coverage_notes():
    notes = coverage_notes(totals())
    assert notes[0].startswith("37 streamed requests have measured token counts")
    assert any("5 requests use models with no known price, so cost undercounts" in n for n in notes)
    assert coverage_notes(totals(measured_requests=0, partial_cost_requests=0, unpriced_requests=0)) == []
    assert "1 request uses a model with no known price" in coverage_notes(totals(unpriced_requests=1))[-1]


# ---------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------

def test_every_page_is_a_complete_offline_document():
    for name, html in all_pages().items():
        assert html.lstrip().lower().startswith("<!doctype html>"), name
        assert html.rstrip().endswith("</html>"), name
        assert '<link rel="stylesheet" href="/static/lectr.css">' in html, name
        assert "http://" not in html and "https://" not in html, name
        assert "<script" not in html.replace("&lt;script", ""), name   # no JavaScript at all
        for url in re.findall(r'(?:href|src|action)="([^"]*)"', html):
            assert not url.startswith("//"), (name, url)


def test_login_page():
    html = render_login(error=None, csrf_token="tok&1")
    assert '<form method="post" action="/login"' in html
    assert 'type="password"' in html and 'name="key"' in html and 'autocomplete="off"' in html
    assert 'placeholder="lc_key_…"' in html
    assert '<label for="key">Org key</label>' in html
    assert 'name="csrf_token" value="tok&amp;1"' in html
    assert "never stored in the page or the URL" in html
    assert 'role="alert"' not in html
    assert "http-equiv=\"refresh\"" not in html
    assert "/logout" not in html                      # no nav when signed out

    html = render_login(error=XSS, csrf_token="t")
    assert 'role="alert"' in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html and XSS not in html


def test_overview_content():
    html = render_overview(overview_ctx())
    text = text_of(html)
    assert '<meta http-equiv="refresh" content="60">' in html
    assert "updated 14:59:39 UTC" in text
    for testid in ("stat-requests", "stat-cost", "stat-tokens", "stat-latency-avg", "stat-latency-p95",
                   "stat-error-rate", "model-table", "provider-filter", "cost-table", "health-table",
                   "feature-table", "chart-requests", "chart-latency", "chart-cost"):
        assert f'data-testid="{testid}"' in html, testid
    assert "14,388" in text and "$131.07" in text and "7,924,792" in text
    assert "812 ms" in text and "1.38 s" in text and "1.5%" in text
    assert "▲ 12% vs previous 24 hours" in text                 # requests 14,388 vs 12,840
    assert 'chg-neutral">▲ 12%' in html                        # more requests is neither good nor bad
    assert 'chg-bad">▲ 13%' in html                            # p95 1,384 vs 1,220: worse
    assert "37 streamed requests have measured token counts" in text
    assert "5 requests use models with no known price, so cost undercounts" in text
    # Model table, provider cost and health.
    assert "claude-3-5-sonnet-latest" in html and "$104.33" in text and "$0.0042" in text
    assert "status-ok" in html and "status-degraded" in html and "status-failing" in html
    # Features: untagged explained, names escaped.
    assert '<em class="untagged">untagged</em>' in html and "(no X-Lectr-Feature header)" in text
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # Nav and logout.
    assert 'href="/dashboard?period=last_24h" data-testid="nav-overview" aria-current="page"' in html
    assert 'href="/dashboard/requests?period=last_24h"' in html and 'href="/dashboard/failures?period=last_24h"' in html
    assert '<form method="post" action="/logout"' in html and 'name="csrf_token" value="csrf-123"' in html
    assert 'data-testid="org-name">acme<' in html
    assert "<svg" in html and 'role="img"' in html


def test_overview_provider_filter_and_period_links():
    html = render_overview(overview_ctx(provider_filter="groq", period="last_7d"))
    assert '<option value="groq" selected>groq</option>' in html
    assert '<option value="" selected>' not in html
    assert 'href="?period=last_30d&amp;provider=groq"' in html
    assert 'href="?period=last_7d&amp;provider=groq" aria-current="true"' in html
    assert "vs previous 7 days" in text_of(html)
    html = render_overview(overview_ctx())
    assert '<option value="" selected>All providers</option>' in html
    assert 'href="?period=last_30d"' in html


def test_overview_empty_state():
    html = render_overview(overview_ctx(summary=None, computed_at=None))
    text = text_of(html)
    assert "No summary yet — send requests through the proxy; the aggregator runs every minute." in text
    assert "not computed yet" in text
    assert "model-table" not in html


def test_drop_banner_only_when_events_were_dropped():
    assert 'data-testid="drop-banner"' not in render_overview(overview_ctx())
    for html in (render_overview(overview_ctx(dropped_events=1_234)),
                 render_requests(requests_ctx(dropped_events=1_234)),
                 render_failures(failures_ctx(dropped_events=1_234))):
        assert 'data-testid="drop-banner"' in html and 'role="alert"' in html
        assert "1,234 events could not be recorded in this period; figures below undercount." in text_of(html)


def test_overview_new_and_no_previous():
    summary = sample_summary(previous=totals(requests=0, errors=0, error_rate=0.0, cost_usd=0.0, total_tokens=0,
                                             latency_avg_ms=None, latency_p95_ms=None))
    text = text_of(render_overview(overview_ctx(summary=summary)))
    assert "new nothing in previous 24 hours" in text
    assert "▲" not in text.split("Models")[0]


def test_requests_page():
    html = render_requests(requests_ctx())
    text = text_of(html)
    assert 'data-testid="requests-table"' in html and 'aria-current="page"' in html
    assert 'data-request-id="1001"' in html
    assert "12 → 9" in text and "— → 388" in text
    assert 'class="tag tag-measured" title="counted by Lectr with tiktoken; the provider did not report usage"' in html
    assert 'title="reported by the provider">provider</span>' in html
    assert 'class="tag tag-partial" title="completion only — the prompt is never read"' in html
    assert 'data-testid="stream-marker"' in html
    assert "$0.000233" in text and "$0.0000072" in text
    assert 'class="badge badge-server">529<' in html and 'class="badge badge-client">429<' in html
    assert 'class="badge badge-ok">200<' in html
    assert XSS not in html and "&lt;script&gt;" in html
    # Filter form keeps the current values.
    assert '<option value="openai" selected>openai</option>' in html
    assert 'name="status" type="text" value="5xx"' in html
    assert 'name="feature" type="text" value="chat &amp; more"' in html
    assert 'name="since" type="datetime-local" value="2025-05-01T10:00"' in html
    # Next page link: cursor plus the filters, properly encoded.
    href = re.search(r'href="([^"]*)" rel="next"', html).group(1).replace("&amp;", "&")
    assert urlsplit(href).path == "/dashboard/requests"
    qs = parse_qs(urlsplit(href).query)
    assert qs == {"cursor": ["MjAyNS0wNS0wMVQxNDo1NzowMFo=|1000"], "period": ["last_24h"], "provider": ["openai"],
                  "feature": ["chat & more"], "status": ["5xx"], "since": ["2025-05-01T10:00"]}
    assert "Next page →" in text


def test_requests_filter_error():
    assert 'data-testid="filter-error"' not in render_requests(requests_ctx())
    html = render_requests(requests_ctx(filter_error="since: must be an ISO 8601 time <x>"))
    assert 'role="alert" data-testid="filter-error">since: must be an ISO 8601 time &lt;x&gt;' in html


def test_requests_empty_and_last_page():
    html = render_requests(requests_ctx(rows=[], next_cursor=None))
    assert 'data-testid="requests-empty"' in html and "No requests match these filters" in text_of(html)
    assert 'rel="next"' not in html
    unfiltered = {k: None for k in ("provider", "model", "feature", "task", "status", "since", "until")}
    html = render_requests(requests_ctx(rows=[], next_cursor=None, filters=unfiltered))
    assert "No requests in this period" in text_of(html)
    assert '<option value="" selected>All providers</option>' in html


def test_failures_page():
    html = render_failures(failures_ctx())
    text = text_of(html)
    assert 'data-testid="failures-table"' in html
    assert "overloaded_error" in text and "upstream_timeout" in text and "client_disconnected" in text
    assert '<span class="origin origin-provider">Provider</span>' in html
    assert '<span class="origin origin-lectr">Lectr</span>' in html
    assert '<span class="origin origin-client">Client hung up</span>' in html
    assert XSS not in html
    html = render_failures(failures_ctx(rows=[]))
    assert "No failures in this period." in text_of(html)


def test_missing_context_keys_raise():
    ctx = overview_ctx()
    del ctx["org_name"]
    with pytest.raises((jinja2.UndefinedError, KeyError)):
        render_overview(ctx)
    rows = sample_rows()
    del rows[0]["ttfb_ms"]
    with pytest.raises(jinja2.UndefinedError):
        render_requests(requests_ctx(rows=rows))


def test_environment_is_lazy_and_strict():
    env = pages._environment()
    assert env is pages._environment()
    assert env.undefined is jinja2.StrictUndefined
    assert env.autoescape("x.html") is True


def test_stylesheet_is_self_contained():
    from importlib.resources import files

    css = files("lectr.dashboard").joinpath("static/lectr.css").read_text()
    assert "@import" not in css and "url(" not in css and "http" not in css
    assert "@media" in css and "overflow-x: auto" in css


# ---------------------------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------------------------

def _check_svg(svg: str) -> None:
    assert isinstance(svg, Markup)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert 'role="img"' in svg and 'aria-label="' in svg and 'viewBox="0 0 ' in svg and 'width="100%"' in svg
    assert "http" not in svg and "href" not in svg and "<script" not in svg and "style=" not in svg


@pytest.mark.parametrize("kind, key, unit, secondary", [
    ("bar", "requests", "requests", "errors"), ("line", "latency_p95_ms", "ms", None), ("bar", "cost_usd", "usd", None),
])
def test_charts_empty_one_many(kind, key, unit, secondary):
    kw = dict(title="T", unit=unit, kind=kind, secondary_key=secondary)
    empty = charts.time_series_svg([], key, **kw)
    _check_svg(empty)
    assert "No data for this period" in empty and "<title>" not in empty

    one = charts.time_series_svg(sample_points(1), key, **kw)
    _check_svg(one)
    assert one.count("<title>") == 1

    many = charts.time_series_svg(sample_points(30, 86400), key, bucket_seconds=86400, **kw)
    _check_svg(many)
    assert many.count("<title>") == 30
    assert "Apr" in many                                       # daily buckets are labelled by date


def test_bar_chart_stacks_errors_and_tooltips():
    points = [{"start": "2025-05-01T10:00:00Z", "requests": 100, "errors": 25},
              {"start": "2025-05-01T11:00:00Z", "requests": 40, "errors": 0}]
    svg = charts.time_series_svg(points, "requests", title="Requests", unit="requests", secondary_key="errors")
    assert "<title>May 01 10:00 UTC: 100 requests, 25 errors</title>" in svg
    assert svg.count(f'fill="{charts.COLORS["errors"]}"') == 1
    assert ('aria-label="Requests: 2 buckets, total 140 requests, peak 100 requests at May 01 10:00 UTC, '
            '25 errors"') in svg
    assert ">10:00<" in svg and ">11:00<" in svg


def test_line_chart_gaps_for_null_values():
    pts = [{"start": f"2025-05-01T{h:02d}:00:00Z", "latency_p95_ms": v}
           for h, v in enumerate([800, 900, None, None, 1200, 1500, None, 700])]
    svg = charts.time_series_svg(pts, "latency_p95_ms", title="p95", unit="ms", kind="line")
    assert svg.count('fill="none" stroke=') == 2              # two segments: [0,1] and [4,5]; 7 is a lone dot
    assert svg.count("<circle") == 5
    assert "<title>May 01 02:00 UTC: no data</title>" in svg
    assert ">1.5 s<" in svg or ">1 s<" in svg


def test_chart_all_null_and_escaping():
    pts = [{"start": "2025-05-01T10:00:00Z", "cost_usd": None}]
    svg = charts.time_series_svg(pts, "cost_usd", title="<b>Cost</b>", unit="usd")
    _check_svg(svg)
    assert "No data for this period" in svg and "<b>" not in svg and "&lt;b&gt;" in svg


def test_chart_all_zero_values():
    pts = sample_points(3)
    for p in pts:
        p["cost_usd"] = 0.0
    svg = charts.time_series_svg(pts, "cost_usd", title="Cost", unit="usd")
    _check_svg(svg)
    assert ">$0.01<" in svg and svg.count("<title>") == 3


def test_chart_accepts_decimals():
    svg = charts.time_series_svg([{"start": "2025-05-01T10:00:00Z", "cost_usd": Decimal("1.25")}], "cost_usd",
                                 title="Cost", unit="usd")
    assert "<title>May 01 10:00 UTC: $1.25</title>" in svg


def test_share_bar():
    svg = charts.share_bar_svg(0.25, label="25% of requests")
    assert 'width="25.0"' in svg and 'aria-label="25% of requests"' in svg and "http" not in svg
