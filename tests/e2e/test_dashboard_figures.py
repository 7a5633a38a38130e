"""What the overview says about cost and provider health, from real traffic through ``lectr serve``."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

import openai
import pytest
import requests as http

from tests.conftest import create_org, free_port, lectr_env, sdk_client, start_lectr, stop_lectr


@pytest.fixture(scope="module")
def site(database_url, mock, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("figures")
    # Groq's upstream is a closed port: its requests fail to connect (Lectr's 502).
    env = lectr_env(database_url, mock, tmp, LECTR_FLUSH_INTERVAL="0.1", LECTR_AGGREGATE_INTERVAL="3600",
                    LECTR_UPSTREAM_GROQ=f"http://127.0.0.1:{free_port()}/openai/v1")
    key = create_org(env, "figures-co")
    server = start_lectr(env, tmp / "serve.log")
    admin = f"http://127.0.0.1:{env['LECTR_ADMIN_PORT']}"
    client = sdk_client(server.base_url, **{"X-Lectr-Key": key})

    def chat(model: str, *, fails: type[Exception] | None = None, **headers: str) -> None:
        if fails is None:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}],
                                           extra_headers=headers)
            return
        with pytest.raises(fails):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}],
                                           extra_headers=headers)

    for _ in range(3):
        chat("gpt-4o-mini")                                   # priced
    for _ in range(4):
        chat("gpt-lectr-unpriced-test")                       # tokens, but no price known
    chat("gpt-4o-mini", fails=openai.NotFoundError, **{"x-mock-status": "404"})      # the client's 404
    chat("gpt-4o", fails=openai.InternalServerError, **{"x-mock-status": "500"})     # the provider's 500
    chat("gpt-4o", fails=openai.BadRequestError, **{"X-Lectr-Provider": "azure"})    # Lectr: no Azure endpoint
    chat("llama-3.3-70b-versatile", fails=openai.APIStatusError)                     # Lectr could not connect
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = http.get(admin + "/api/v1/requests", headers={"X-Lectr-Key": key}).json()["requests"]
        if len(rows) == 11:
            break
        time.sleep(0.1)
    assert len(rows) == 11
    server.cli("jobs", "run", "aggregator")
    server.extra.update(key=key, admin=admin)
    yield server
    stop_lectr(server)


def _overview(site, path: str = "/dashboard", **params) -> http.Response:
    session = http.Session()
    page = session.get(site.extra["admin"] + "/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    session.post(site.extra["admin"] + "/login", data={"key": site.extra["key"], "csrf_token": token})
    return session.get(site.extra["admin"] + path, params=params)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_unpriced_requests_are_shown_as_unpriced_with_their_count(site):
    summary = http.get(site.extra["admin"] + "/api/v1/summary", headers={"X-Lectr-Key": site.extra["key"]}).json()
    assert summary["summary"]["totals"]["unpriced_requests"] == 4
    openai_row = next(p for p in summary["summary"]["providers"] if p["provider"] == "openai")
    assert openai_row["unpriced_requests"] == 4 and openai_row["cost_usd"] > 0
    text = _text(_overview(site).text)
    assert "+ 4 unpriced" in text  # the cost card, and the openai row of cost by provider
    assert re.search(r"openai \$[0-9.]+ \+ 4 unpriced", text), text
    model = next(m for m in summary["summary"]["models"] if m["model"] == "gpt-lectr-unpriced-test")
    assert model["unpriced_requests"] == 4
    assert re.search(r"gpt-lectr-unpriced-test openai 4 .*? 4 unpriced", text)
    requests_page = _overview(site, "/dashboard/requests").text
    assert requests_page.count('data-testid="unpriced-marker"') == 4  # the same rows, said the same way


def test_provider_health_counts_only_what_the_provider_caused(site):
    providers = {p["provider"]: p for p in http.get(site.extra["admin"] + "/api/v1/providers",
                                                     headers={"X-Lectr-Key": site.extra["key"]}).json()["providers"]}
    # openai: 9 requests, 1 the provider's (500), 1 the client's (404).
    assert providers["openai"]["provider_errors"] == 1 and providers["openai"]["client_errors"] == 1
    assert providers["azure"]["provider_errors"] == 0 and providers["azure"]["lectr_errors"] == 1
    assert providers["groq"]["provider_errors"] == 0 and providers["groq"]["connection_errors"] == 1
    html = _overview(site).text
    status = {p: re.search(rf'data-testid="health-{p}"><span class="dot" aria-hidden="true"></span>([^<]+)<',
                           html).group(1) for p in ("openai", "azure", "groq")}
    assert status["azure"] != "Failing" and status["groq"] != "Failing"
    assert "1 Lectr" in _text(html) and "1 connection" in _text(html) and "1 client" in _text(html)


@pytest.mark.parametrize("period", ["7d", "last_week", "LAST_7D"])
def test_an_unknown_period_is_a_400_page_as_in_the_api(site, period):
    page = _overview(site, period=period)
    assert page.status_code == 400 and "last_7d" in page.text and "Unknown period" in page.text
    api = http.get(site.extra["admin"] + "/api/v1/summary", params={"period": period},
                   headers={"X-Lectr-Key": site.extra["key"]})
    assert api.status_code == 400
    assert _overview(site, period="last_7d").status_code == 200


def test_chart_ticks_fall_on_whole_hours_and_days(site):
    for period, pattern in (("last_24h", r"^(00|04|08|12|16|20):00$"), ("last_7d", r"^[A-Z][a-z]{2} \d\d$")):
        html = _overview(site, period=period).text
        chart = html.split('data-testid="chart-requests"')[1].split("</svg>")[0]
        labels = re.findall(r'y="\d+(?:\.\d+)?" text-anchor="(?:middle|end)">([^<]+)<', chart)
        ticks = [t for t in labels if not re.fullmatch(r"[\d.,]+k?", t)]
        assert ticks and all(re.match(pattern, t) for t in ticks), (period, ticks)
        if period == "last_7d":  # one label per day, none skipped
            # Each label's date among the days around the window: read with a made-up year, "Feb 29"
            # is no date in a common year, and "Feb 28", "Mar 01" are two days apart in a leap one.
            today = datetime.now(timezone.utc).date()
            dates = {f"{d:%b %d}": d for d in (today - timedelta(days=k) for k in range(-1, 10))}
            days = [dates.get(t) for t in ticks]
            assert None not in days, ticks
            assert len(ticks) >= 7 and all((b - a).days == 1 for a, b in zip(days, days[1:])), ticks


def test_the_favicon_is_never_missing(site):
    assert '<link rel="icon" href="data:,">' in _overview(site).text
    assert http.get(site.extra["admin"] + "/favicon.ico").status_code in (200, 204)
