""""An org only ever sees its own data", on every org endpoint and dashboard page.

The endpoints come from the OpenAPI document the running server serves, and the pages from the
admin application's router, so an endpoint or page added later is covered without editing this
file. Each org sends traffic with its own model, provider and feature names; every endpoint and
page, asked with one org's key or session, must show that org's names and none of the other's.
"""

from __future__ import annotations

import re

import pytest
import requests as http

from lectr.admin import make_admin_app
from tests.conftest import sdk_client, wait_for
from tests.rollup_fixtures import seed_understanding

SECRET = "isolation-operator-secret"
# Names only one org's traffic carries: in API replies (JSON) and on pages (which may list
# every provider name in a filter, so only model and feature names mark an org there).
JSON_MARKS = {"alpha": {"gpt-4.1-mini-2025-04-14", "alpha-feat-ypsilon", "openai"}, "beta": {"gemini", "beta-feat-zeta"}}
PAGE_MARKS = {"alpha": {"gpt-4.1-mini-2025-04-14", "alpha-feat-ypsilon"}, "beta": {"gemini-2.5-flash", "beta-feat-zeta"}}
SENT = {"alpha": 4, "beta": 3}
PUBLIC = {"/", "/favicon.ico", "/login", "/static/lectr.css", "/metrics", "/healthz", "/api/openapi.json"}


@pytest.fixture(scope="module")
def site(module_lectr_factory):
    server = module_lectr_factory.start(("alpha", "beta"), LECTR_ADMIN_SECRET=SECRET, LECTR_FLUSH_INTERVAL="0.1",
                                        LECTR_AGGREGATE_INTERVAL="3600")
    keys = server.extra["keys"]
    alpha = sdk_client(server.base_url, **{"X-Lectr-Key": keys["alpha"], "X-Lectr-Feature": "alpha-feat-ypsilon"})
    beta = sdk_client(server.base_url, **{"X-Lectr-Key": keys["beta"], "X-Lectr-Feature": "beta-feat-zeta"})
    for client, model, n in ((alpha, "gpt-4.1-mini-2025-04-14", 3), (beta, "gemini-2.5-flash", 2)):
        for _ in range(n):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
        with pytest.raises(Exception):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}],
                                           extra_headers={"x-mock-status": "500"})
    for org, count in SENT.items():
        wait_for(lambda: len(api_get(server, "/api/v1/requests", key=keys[org]).json()["requests"]) == count,
                 timeout=15, message=f"{org}'s {count} rows")
    server.cli("jobs", "run", "aggregator")
    # anomalies and recommendations as their jobs write them, so their endpoints have rows to show
    seed_understanding(module_lectr_factory.database_url, {
        "alpha": ("alpha-feat-ypsilon", "openai", "gpt-4.1-mini-2025-04-14"),
        "beta": ("beta-feat-zeta", "gemini", "gemini-2.5-flash")})
    for org, feature in (("alpha", "alpha-feat-ypsilon"), ("beta", "beta-feat-zeta")):
        assert http.put(server.extra["api"] + "/api/v1/alert-settings", headers={"X-Lectr-Key": keys[org]},
                        json={"email_recipients": [f"oncall@{feature}.test"]}).status_code == 200
    server.extra["sessions"] = {org: log_in(server, key) for org, key in keys.items()}
    doc = http.get(server.extra["api"] + "/api/openapi.json").json()
    server.extra["endpoints"] = [(method.upper(), path, op["tags"][0])
                                 for path, ops in doc["paths"].items() for method, op in ops.items()]
    return server


def _fill(path: str, value: str) -> str:
    """The path with every parameter ({org_id}, {anomaly_id}, ...) set to ``value``."""
    return re.sub(r"\{[a-z_]+\}", value, path)


def api_get(server, path: str, key: str | None = None, session: http.Session | None = None):
    return (session or http).get(server.extra["api"] + path, headers={"X-Lectr-Key": key} if key else {},
                                 allow_redirects=False)


def log_in(server, key: str) -> http.Session:
    session = http.Session()
    page = session.get(server.extra["api"] + "/login")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    reply = session.post(server.extra["api"] + "/login", data={"key": key, "csrf_token": token}, allow_redirects=False)
    assert reply.status_code == 303
    return session


def org_endpoints(server) -> list[str]:
    return [path for method, path, tag in server.extra["endpoints"] if tag == "org" and method == "GET"]


def operator_endpoints(server) -> list[tuple[str, str]]:
    return [(method, path) for method, path, tag in server.extra["endpoints"] if tag == "operator"]


def pages() -> list[str]:
    """Every GET page of the admin application that is not public and not the JSON API."""
    app = make_admin_app(state=None)
    return sorted({r.resource.canonical for r in app.router.routes()
                   if r.method == "GET" and r.resource is not None and r.resource.canonical not in PUBLIC
                   and not r.resource.canonical.startswith("/api/")})


def test_the_tables_are_what_the_readme_lists(site):
    # A guard on the derivation itself: if it found nothing, every test below would pass.
    assert set(org_endpoints(site)) >= {"/api/v1/summary", "/api/v1/models", "/api/v1/providers",
                                        "/api/v1/features", "/api/v1/requests", "/api/v1/failures"}
    assert len(operator_endpoints(site)) >= 8
    assert {"/dashboard", "/dashboard/requests", "/dashboard/failures"} <= set(pages())


def _assert_only_own(text: str, org: str, marks: dict[str, set[str]], where: str) -> None:
    other = "beta" if org == "alpha" else "alpha"
    assert any(m in text for m in marks[org]), f"{where} as {org} shows none of {org}'s own data"
    leaked = [m for m in marks[other] if m in text]
    assert not leaked, f"{where} as {org} shows {other}'s {leaked}"


@pytest.mark.parametrize("auth", ["key", "session"])
@pytest.mark.parametrize("org", ["alpha", "beta"])
def test_every_org_endpoint_shows_only_the_callers_data(site, org, auth):
    for path in org_endpoints(site):
        if auth == "key":
            reply = api_get(site, path, key=site.extra["keys"][org])
        else:
            reply = api_get(site, path, session=site.extra["sessions"][org])
        assert reply.status_code == 200, (path, reply.text)
        _assert_only_own(reply.text, org, JSON_MARKS, f"{path} ({auth})")
    for auth_kw in ({"key": site.extra["keys"][org]}, {"session": site.extra["sessions"][org]}):
        totals = api_get(site, "/api/v1/summary", **auth_kw).json()["summary"]["totals"]
        assert totals["requests"] == SENT[org]
        rows = api_get(site, "/api/v1/requests", **auth_kw).json()["requests"]
        assert len(rows) == SENT[org]


@pytest.mark.parametrize("org", ["alpha", "beta"])
def test_every_dashboard_page_shows_only_the_sessions_org(site, org):
    for path in pages():
        reply = site.extra["sessions"][org].get(site.extra["api"] + path)  # "/" redirects to its page
        assert reply.status_code == 200, (path, reply.status_code)
        _assert_only_own(reply.text, org, PAGE_MARKS, path)


def test_every_endpoint_refuses_a_caller_without_credentials(site):
    for method, path, _ in site.extra["endpoints"]:
        # Credentials are checked first: a bad body or org id must not get a caller past, or
        # tell them anything but 401.
        for org_id, body in (("1", {"data": b"{}"}), ("1", {"data": b"not json"}), ("x", {"data": b"[]"})):
            reply = http.request(method, site.extra["api"] + _fill(path, org_id), **body)
            assert reply.status_code == 401, (method, path, org_id, body, reply.status_code)
            assert set(reply.json()["error"]) >= {"message", "type", "code"}
        wrong_key = http.request(method, site.extra["api"] + _fill(path, "1"), json={},
                                 headers={"X-Lectr-Key": "lc_key_not-a-key"})
        assert wrong_key.status_code == 401, (method, path, wrong_key.status_code)
    for path in pages():
        reply = http.get(site.extra["api"] + path, allow_redirects=False)
        assert reply.status_code == 303 and reply.headers["Location"] == "/login", path


def test_every_operator_endpoint_refuses_a_wrong_secret_and_org_credentials(site):
    for method, path in operator_endpoints(site):
        url = site.extra["api"] + _fill(path, "1")
        for headers in ({"Authorization": "Bearer not-the-secret"}, {"Authorization": SECRET},
                        {"X-Lectr-Key": site.extra["keys"]["alpha"]}):
            for data in (b"{}", b"not json"):
                reply = http.request(method, url, data=data, headers=headers)
                assert reply.status_code == 401, (method, path, headers, data, reply.status_code)
        cookies = site.extra["sessions"]["alpha"].cookies
        assert http.request(method, url, json={}, cookies=cookies).status_code == 401, (method, path, "session")


def test_every_operator_endpoint_is_403_when_no_secret_is_configured(site, module_lectr_factory):
    closed = module_lectr_factory.start()  # the same database, no LECTR_ADMIN_SECRET
    for method, path in operator_endpoints(site):
        for headers in ({}, {"Authorization": f"Bearer {SECRET}"}, {"Authorization": "Bearer "}):
            reply = http.request(method, closed.extra["api"] + _fill(path, "1"), data=b"{}",
                                 headers=headers)
            assert reply.status_code == 403, (method, path, headers, reply.status_code)
            assert reply.json()["error"]["code"] == "operator_api_disabled"
