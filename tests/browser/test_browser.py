"""The dashboard in a real browser: headless Chromium driven by Playwright against ``lectr serve``.

Screenshots of every page are saved under ``test-artifacts/``. Where no Chromium exists the
tests skip and say so (``.ci/run`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import openai
import pytest
import requests

from tests.conftest import create_org, lectr_env, sdk_client, start_lectr, stop_lectr, wait_for

CHROMIUM = os.environ.get("LECTR_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"no Chromium at {CHROMIUM}: install Debian's chromium to run browser tests")


@pytest.fixture(scope="module")
def site(database_url, mock, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    env = lectr_env(database_url, mock, tmp, LECTR_FLUSH_INTERVAL="0.1", LECTR_AGGREGATE_INTERVAL="3600")
    key = create_org(env, "browser-co")
    server = start_lectr(env, tmp / "serve.log")
    server.extra.update(key=key, admin=f"http://127.0.0.1:{env['LECTR_ADMIN_PORT']}")
    yield server
    stop_lectr(server)


@pytest.fixture(scope="module")
def browser(site):
    # Playwright's sync API runs an event loop of its own: set up the site (whose database
    # fixture uses asyncio.run) before it starts, and tear it down after it stops.
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


def send_traffic(site) -> None:
    client = sdk_client(site.base_url, **{"X-Lectr-Key": site.extra["key"]})
    for _ in range(4):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"X-Lectr-Feature": "chat"})
    for _ in range(2):
        client.chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": "x"}])
    list(client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                        stream=True, extra_headers={"X-Lectr-Feature": "chat"}))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"x-mock-status": "500"})
    wait_for(lambda: len(requests.get(site.extra["admin"] + "/api/v1/requests",
                                      headers={"X-Lectr-Key": site.extra["key"]}).json()["requests"]) >= 8,
             timeout=15, message="the 8 requests to be recorded")
    site.cli("jobs", "run", "aggregator")


def log_in(page, site) -> None:
    page.goto(site.extra["admin"] + "/dashboard")
    assert page.url.endswith("/login")  # no session: sent to log in
    page.fill("input[name=key]", site.extra["key"])
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard")


def test_wrong_key_is_refused(page, site):
    page.goto(site.extra["admin"] + "/login")
    page.fill("input[name=key]", "lc_key_not-the-right-one")
    page.click("button[type=submit]")
    assert "not valid" in page.inner_text("[role=alert]")
    page.screenshot(path=str(ARTIFACTS / "login-refused.png"))


def test_log_in_see_traffic_filter_and_log_out(page, site):
    send_traffic(site)
    log_in(page, site)
    assert site.extra["key"] not in page.content() and site.extra["key"] not in page.url
    cookie = next(c for c in page.context.cookies() if c["name"] == "lectr_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    assert "8" in page.inner_text("[data-testid=stat-requests]")
    models = page.inner_text("[data-testid=model-table]")
    assert "gpt-4o-mini" in models and "claude-haiku-4-5" in models
    assert "untagged" in page.inner_text("body")
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

    page.select_option("[data-testid=provider-filter]", "anthropic")
    page.click("[data-testid=provider-filter-form] button")
    page.wait_for_url("**provider=anthropic**")
    models = page.inner_text("[data-testid=model-table]")
    assert "claude-haiku-4-5" in models and "gpt-4o-mini" not in models

    page.click("[data-testid=nav-requests]")
    page.wait_for_url("**/dashboard/requests**")
    table = page.inner_text("[data-testid=requests-table]")
    assert table.count("gpt-4o-mini") == 5 and "claude-haiku-4-5" in table
    assert "measured" in table.lower()  # the stream without usage was counted by Lectr
    page.screenshot(path=str(ARTIFACTS / "requests.png"), full_page=True)

    page.click("[data-testid=nav-failures]")
    page.wait_for_url("**/dashboard/failures**")
    assert "500" in page.inner_text("body")
    page.screenshot(path=str(ARTIFACTS / "failures.png"), full_page=True)

    page.click("[data-testid=logout]")
    page.wait_for_url("**/login")
    page.goto(site.extra["admin"] + "/dashboard")
    assert page.url.endswith("/login")


def test_requests_filter_by_provider(page, site):
    log_in(page, site)
    page.goto(site.extra["admin"] + "/dashboard/requests")
    page.select_option("select[name=provider]", "anthropic")
    page.click("[data-testid=requests-filter] button[type=submit]")
    page.wait_for_url("**provider=anthropic**")
    table = page.inner_text("[data-testid=requests-table]")
    assert "claude-haiku-4-5" in table and "gpt-4o-mini" not in table


def test_phone_layout(browser, site):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    log_in(page, site)
    page.screenshot(path=str(ARTIFACTS / "overview-phone.png"), full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400  # nothing pushes the page sideways on a phone
    context.close()


_CLIPPED = """() => {
  // Every cell of every table must be visible on the page: inside the viewport, and not hidden
  // by an ancestor that clips (overflow other than visible) where it extends past that ancestor.
  const vw = document.documentElement.clientWidth, problems = [];
  for (const cell of document.querySelectorAll('table td, table th')) {
    const r = cell.getBoundingClientRect();
    if (r.width === 0 || getComputedStyle(cell).display === 'none' || cell.closest('thead')) continue;
    if (r.left < -0.5 || r.right > vw + 0.5) problems.push(`${cell.textContent.trim().slice(0, 30)} at ${r.left}..${r.right}`);
    for (let a = cell.parentElement; a; a = a.parentElement) {
      if (getComputedStyle(a).overflowX === 'visible') continue;
      const ar = a.getBoundingClientRect();
      if (r.right > ar.right + 0.5 || r.left < ar.left - 0.5) problems.push(`${cell.textContent.trim().slice(0, 30)} clipped by ${a.className}`);
    }
  }
  return {problems, scrollWidth: document.documentElement.scrollWidth, vw,
          tables: document.querySelectorAll('table').length};
}"""


def test_tables_are_whole_at_a_390_px_phone_width(browser, site):
    send_traffic(site)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    favicon_requests = []
    page.on("request", lambda r: favicon_requests.append(r.url) if "favicon" in r.url else None)
    log_in(page, site)
    for path in ("/dashboard", "/dashboard/requests", "/dashboard/failures"):
        page.goto(site.extra["admin"] + path)
        found = page.evaluate(_CLIPPED)
        assert found["tables"] > 0, path
        assert found["problems"] == [] and found["scrollWidth"] <= found["vw"], (path, found)
        page.screenshot(path=str(ARTIFACTS / f"phone-{path.strip('/').replace('/', '-')}.png"), full_page=True)
    assert favicon_requests == []  # pages say they have no icon: no request for a missing /favicon.ico
    context.close()
