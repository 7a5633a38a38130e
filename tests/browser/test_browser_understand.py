"""The anomaly feed, recommendation cards and settings page in a real browser (headless Chromium
through Playwright) against ``lectr serve``. Screenshots go to ``test-artifacts/``.
Anomalies and recommendations are inserted directly as the pages' input.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import asyncpg
import pytest

from tests.alert_servers import ThreadedReceiver
from tests.conftest import create_org, lectr_env, start_lectr, stop_lectr
from tests.browser.test_browser import ARTIFACTS, CHROMIUM
from tests.understand_contract import insert_anomaly, insert_recommendation

DOCS = Path(__file__).resolve().parents[2] / "docs"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"no Chromium at {CHROMIUM}: install Debian's chromium to run browser tests")

# A week of hourly traffic for feature "checkout": a daily cycle, then two hours of a cost spike.
_TRAFFIC = """
INSERT INTO request_logs (created_at, org_id, provider, model, model_used, feature, status_code, error_origin,
                          stream, latency_ms, overhead_us, token_source, cost_usd, bytes_in, bytes_out)
SELECT h + make_interval(secs => n * 60), $1, 'openai', 'gpt-4o', 'gpt-4o', 'checkout',
       CASE WHEN n % 29 = 0 THEN 500 ELSE 200 END, CASE WHEN n % 29 = 0 THEN 'provider' END, false,
       600 + 40 * n, 300, 'provider',
       CASE WHEN h >= date_trunc('hour', now()) - interval '2 hours' THEN 0.09 ELSE 0.02 END, 100, 400
FROM generate_series(date_trunc('hour', now()) - interval '7 days', date_trunc('hour', now()) - interval '1 hour',
                     interval '1 hour') AS h,
     generate_series(1, 4 + (3 * (1 + sin(extract(hour FROM h) / 24.0 * 2 * pi())))::int) AS n
"""


async def _seed(url: str) -> dict:
    conn = await asyncpg.connect(url)
    try:
        alpha = await conn.fetchval("SELECT id FROM organizations WHERE name = 'alpha'")
        beta = await conn.fetchval("SELECT id FROM organizations WHERE name = 'beta'")
        await conn.execute(_TRAFFIC, alpha)
        ids = {
            "cost": await insert_anomaly(conn, alpha, metric="cost", feature="checkout", length=2, current=0.54,
                                         mean=0.12, std=0.03, sigma=14.0,
                                         detail={"baseline": "same hour of day over the previous 7 days"}),
            "latency": await insert_anomaly(conn, alpha, metric="latency_threshold", current=2600.0, mean=None,
                                            std=None, sigma=None, detail={"threshold_ms": 2000}),
            "drift": await insert_anomaly(conn, alpha, metric="model_drift", feature="checkout", hours_ago=20,
                                          current=0.41, mean=0.0, std=0.01, sigma=41.0, resolved=True,
                                          detail={"model": "gpt-4.1", "new_model": True}),
            "beta": await insert_anomaly(conn, beta, metric="requests", feature="beta-secret-feature"),
            "rec": await insert_recommendation(conn, alpha),
            "rec2": await insert_recommendation(conn, alpha, feature="summarise", current="gpt-4.1",
                                                suggested="gpt-4.1-mini", saving=None),
            "beta_rec": await insert_recommendation(conn, beta, feature="beta-only"),
        }
        return ids
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def receiver():
    r = ThreadedReceiver()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def site(database_url, mock, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser-understand")
    # The anomaly job runs once at start, before the week of traffic is written; were it to run
    # again while the tests run, it would add its own anomalies of that traffic to the ones below.
    env = lectr_env(database_url, mock, tmp, LECTR_AGGREGATE_INTERVAL="3600", LECTR_ANOMALY_INTERVAL="86400",
                    LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE="1")  # the webhook receiver is on loopback
    keys = {"alpha": create_org(env, "alpha"), "beta": create_org(env, "beta")}
    server = start_lectr(env, tmp / "serve.log")  # it creates request_logs' partitions
    ids = asyncio.run(_seed(database_url))
    server.extra.update(keys=keys, ids=ids, admin=f"http://127.0.0.1:{env['LECTR_ADMIN_PORT']}")
    yield server
    stop_lectr(server)


@pytest.fixture(scope="module")
def browser(site):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        instance = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield instance
        instance.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def log_in(page, site, org: str = "alpha") -> None:
    page.goto(site.extra["admin"] + "/login")
    page.fill("input[name=key]", site.extra["keys"][org])
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard")


def test_anomaly_feed(page, site):
    log_in(page, site)
    assert page.inner_text("[data-testid=open-anomalies]") == "2"  # in the navigation, on every page
    page.click("[data-testid=nav-anomalies]")
    page.wait_for_url("**/dashboard/anomalies**")
    items = page.locator("[data-testid=anomaly]")
    assert items.count() == 3  # the other org's anomaly is not here
    assert "beta-secret-feature" not in page.content()
    cost = page.locator(f"[data-anomaly-id='{site.extra['ids']['cost']}']")
    text = cost.inner_text()
    assert "Cost per hour up" in text and "feature checkout" in text and "UTC" in text
    assert cost.locator("[data-testid=anomaly-current]").inner_text() == "$0.54/h"
    assert cost.locator("[data-testid=anomaly-baseline]").inner_text() == "$0.12/h ± $0.03/h"
    assert cost.locator("[data-testid=anomaly-sigma]").inner_text() == "+14.0σ"
    chart = cost.locator("svg[data-testid=anomaly-chart]")
    assert chart.count() == 1 and chart.locator("[data-testid=anomaly-window]").count() == 1
    assert chart.locator("polyline").count() >= 1  # a week of hourly values, read from request_logs
    threshold = page.locator(f"[data-anomaly-id='{site.extra['ids']['latency']}']").inner_text()
    assert "p95 latency over the 2.00 s threshold" in threshold and "whole org" in threshold
    drift = page.locator(f"[data-anomaly-id='{site.extra['ids']['drift']}']")
    assert "resolved" in drift.locator("[data-testid=anomaly-state]").inner_text()
    assert page.locator("[data-testid=anomaly]").first.get_attribute("data-anomaly-id") != str(site.extra["ids"]["drift"])
    page.screenshot(path=str(ARTIFACTS / "anomalies.png"), full_page=True)
    if os.environ.get("LECTR_UPDATE_SCREENSHOTS"):  # the README's screenshot, refreshed on request only
        shutil.copy(ARTIFACTS / "anomalies.png", DOCS / "anomalies.png")

    # the link an alert carries shows that one anomaly; another org's id shows nothing
    page.goto(site.extra["admin"] + f"/dashboard/anomalies?anomaly={site.extra['ids']['cost']}")
    assert page.locator("[data-testid=anomaly]").count() == 1
    page.goto(site.extra["admin"] + f"/dashboard/anomalies?anomaly={site.extra['ids']['beta']}")
    assert page.locator("[data-testid=anomaly]").count() == 0 and page.locator("[data-testid=anomalies-empty]").count() == 1


def test_recommendation_cards_and_dismiss(page, site):
    log_in(page, site)
    page.click("[data-testid=nav-recommendations]")
    page.wait_for_url("**/dashboard/recommendations**")
    cards = page.locator("[data-testid=recommendation]")
    assert cards.count() == 2 and "beta-only" not in page.content()
    first = cards.first
    assert first.locator("h2").inner_text() == "classify"
    assert first.locator("[data-testid=rec-models]").inner_text().startswith("gpt-4o → gpt-4o-mini")
    assert "high" in first.locator("[data-testid=rec-confidence]").inner_text()
    assert "$412.50" in first.locator("[data-testid=rec-saving]").inner_text()
    assert "classification" in first.locator("[data-testid=rec-reason]").inner_text()
    signals = first.locator("[data-testid=rec-signals]").inner_text()
    assert "18,402" in signals and "0.4%" in signals and "812 ms" in signals
    assert "no known price" in cards.nth(1).locator("[data-testid=rec-saving]").inner_text()
    page.screenshot(path=str(ARTIFACTS / "recommendations.png"), full_page=True)

    # another org's recommendation cannot be dismissed from this session, even with its token
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    other = page.request.post(site.extra["admin"] + f"/dashboard/recommendations/{site.extra['ids']['beta_rec']}/dismiss",
                              form={"csrf_token": token}, max_redirects=0)
    assert other.status == 404
    forged = page.request.post(site.extra["admin"] + f"/dashboard/recommendations/{site.extra['ids']['rec']}/dismiss",
                               form={"csrf_token": "forged"}, max_redirects=0)
    assert forged.status == 403

    first.locator("[data-testid=rec-dismiss]").click()
    page.wait_for_url("**dismissed=1")
    assert page.locator("[data-testid=dismissed-notice]").count() == 1
    assert page.locator("[data-testid=recommendation]").count() == 1 and "classify" not in \
        page.locator("[data-testid=recommendations]").inner_text()


def test_settings_page(page, site, receiver):
    log_in(page, site)
    page.click("[data-testid=nav-settings]")
    page.wait_for_url("**/dashboard/settings**")
    assert page.locator("[data-testid=send-test-alert]").is_disabled()  # nothing to send to yet

    page.fill("[data-testid=email-recipients]", "oncall@alpha.test, not-an-address")
    page.click("[data-testid=save-alerts]")
    assert "not-an-address" in page.inner_text("[data-testid=error-email_recipients]")
    assert page.input_value("[data-testid=email-recipients]") == "oncall@alpha.test, not-an-address"  # kept

    page.fill("[data-testid=email-recipients]", "oncall@alpha.test, lead@alpha.test")
    page.fill("[data-testid=webhook-url]", receiver.url)
    page.click("[data-testid=save-alerts]")
    page.wait_for_url("**saved=alerts")
    assert page.input_value("[data-testid=email-recipients]") == "oncall@alpha.test, lead@alpha.test"
    assert page.input_value("[data-testid=webhook-url]") == receiver.url

    page.fill("[data-testid=p95-threshold]", "fast")
    page.click("[data-testid=save-threshold]")
    assert "p95_threshold_ms" in page.inner_text("[data-testid=error-p95_threshold_ms]")
    page.fill("[data-testid=p95-threshold]", "2500")
    page.click("[data-testid=save-threshold]")
    page.wait_for_url("**saved=threshold")
    assert page.input_value("[data-testid=p95-threshold]") == "2500"

    page.fill("[data-testid=azure-endpoint]", "http://plain.example.com")
    page.click("[data-testid=save-azure]")
    assert "https" in page.inner_text("[data-testid=error-azure]")
    page.fill("[data-testid=azure-endpoint]", "https://acme.openai.azure.com/")
    page.fill("[data-testid=azure-api-version]", "2024-10-21")
    page.click("[data-testid=save-azure]")
    page.wait_for_url("**saved=azure")
    assert page.input_value("[data-testid=azure-endpoint]") == "https://acme.openai.azure.com"
    assert "acme.openai.azure.com" in site.cli("org", "list").stdout  # the same setting the CLI shows

    before = len(receiver.received)
    page.click("[data-testid=send-test-alert]")
    results = page.locator("[data-testid=test-result]")
    assert results.count() == 3
    texts = [results.nth(i).inner_text() for i in range(3)]
    assert any(t.startswith("webhook") and t.endswith("sent") for t in texts)
    assert all("failed" in t and "LECTR_SMTP_URL" in t for t in texts if t.startswith("email"))  # no SMTP here
    assert len(receiver.received) == before + 1
    page.screenshot(path=str(ARTIFACTS / "settings.png"), full_page=True)

    # the other org sees none of it
    page.context.clear_cookies()
    log_in(page, site, "beta")
    page.goto(site.extra["admin"] + "/dashboard/settings")
    assert page.input_value("[data-testid=email-recipients]") == ""
    assert page.input_value("[data-testid=webhook-url]") == "" and page.input_value("[data-testid=p95-threshold]") == ""


def test_pages_fit_a_phone(browser, site):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    log_in(page, site)
    for path in ("/dashboard/anomalies", "/dashboard/recommendations", "/dashboard/settings"):
        page.goto(site.extra["admin"] + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 400, path
        page.screenshot(path=str(ARTIFACTS / f"phone-{path.strip('/').replace('/', '-')}.png"), full_page=True)
    context.close()
