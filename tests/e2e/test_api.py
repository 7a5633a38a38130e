"""The management API over real HTTP against ``lectr serve`` and real Postgres."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import asyncpg
import jsonschema
import openai
import pytest
import requests as http
from openapi_spec_validator import validate

from lectr.admin import make_admin_app
from lectr.api.openapi import ENDPOINTS
from tests.conftest import create_org, lectr_env, sdk_client, start_lectr, stop_lectr, wait_for

SECRET = "operator-secret-for-tests"


@pytest.fixture(scope="module")
def admin(database_url, mock, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    env = lectr_env(database_url, mock, tmp, LECTR_ADMIN_SECRET=SECRET, LECTR_FLUSH_INTERVAL="0.1",
                    LECTR_AGGREGATE_INTERVAL="3600")
    keys = {"alpha": create_org(env, "alpha"), "beta": create_org(env, "beta")}
    server = start_lectr(env, tmp / "serve.log")
    server.extra.update(keys=keys, api=f"http://127.0.0.1:{env['LECTR_ADMIN_PORT']}")
    send_traffic(server, keys)
    server.cli("jobs", "run", "aggregator")
    yield server
    stop_lectr(server)


def send_traffic(server, keys) -> None:
    alpha = sdk_client(server.base_url, **{"X-Lectr-Key": keys["alpha"]})
    for _ in range(5):
        alpha.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                      extra_headers={"X-Lectr-Feature": "search"})
    alpha.chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError):
        alpha.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}],
                                      extra_headers={"x-mock-status": "429", "X-Lectr-Feature": "search"})
    beta = sdk_client(server.base_url, **{"X-Lectr-Key": keys["beta"]})
    beta.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "x"}],
                                 extra_headers={"X-Lectr-Feature": "beta-only"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = http.get(server.extra["api"] + "/api/v1/requests", headers={"X-Lectr-Key": keys["alpha"]}).json()
        if len(got["requests"]) == 7:
            return
        time.sleep(0.1)
    raise AssertionError("traffic was not recorded")


def get(server, path: str, org: str = "alpha", **params):
    return http.get(server.extra["api"] + path, params=params, headers={"X-Lectr-Key": server.extra["keys"][org]})


def op(server, method: str, path: str, secret: str = SECRET, **kwargs):
    return http.request(method, server.extra["api"] + path, headers={"Authorization": f"Bearer {secret}"}, **kwargs)


def test_org_endpoints_need_a_valid_key(admin):
    for headers in ({}, {"X-Lectr-Key": "lc_key_wrong"}):
        response = http.get(admin.extra["api"] + "/api/v1/summary", headers=headers)
        assert response.status_code == 401
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_summary_counts_the_orgs_own_traffic(admin):
    data = get(admin, "/api/v1/summary").json()
    totals = data["summary"]["totals"]
    assert (totals["requests"], totals["errors"]) == (7, 1)
    assert totals["cost_usd"] > 0 and totals["latency_p95_ms"] > 0
    assert data["summary"]["previous"]["requests"] == 0
    features = {f["feature"]: f["requests"] for f in data["summary"]["features"]}
    assert features == {"search": 6, "untagged": 1}
    assert sum(p["requests"] for p in data["summary"]["series"]["points"]) == 7
    assert len(data["summary"]["series"]["points"]) in (24, 25)  # whole hours; a partial one at each end


def test_one_org_never_sees_anothers_data(admin):
    alpha = get(admin, "/api/v1/requests", limit=200).json()["requests"]
    beta = get(admin, "/api/v1/requests", org="beta", limit=200).json()["requests"]
    assert {r["feature"] for r in beta} == {"beta-only"} and len(beta) == 1
    assert "beta-only" not in {r["feature"] for r in alpha}
    assert get(admin, "/api/v1/summary", org="beta").json()["summary"]["totals"]["requests"] == 1
    assert [m["provider"] for m in get(admin, "/api/v1/models", org="beta").json()["models"]] == ["gemini"]


def test_models_providers_features(admin):
    models = get(admin, "/api/v1/models").json()["models"]
    assert {(m["model"], m["provider"]) for m in models} == {("gpt-4o-mini", "openai"), ("gpt-4o", "openai"),
                                                            ("claude-haiku-4-5", "anthropic")}
    only = get(admin, "/api/v1/models", provider="anthropic").json()["models"]
    assert [m["model"] for m in only] == ["claude-haiku-4-5"]
    providers = {p["provider"]: p for p in get(admin, "/api/v1/providers").json()["providers"]}
    assert providers["openai"]["requests"] == 6 and providers["openai"]["error_rate"] == pytest.approx(1 / 6)
    assert providers["anthropic"]["error_rate"] == 0
    assert {f["feature"] for f in get(admin, "/api/v1/features").json()["features"]} == {"search", "untagged"}


def test_requests_pagination_is_complete_and_ordered(admin):
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = get(admin, "/api/v1/requests", **params).json()
        seen.extend(page["requests"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 7 and len({r["id"] for r in seen}) == 7
    keys = [(r["created_at"], r["id"]) for r in seen]
    assert keys == sorted(keys, reverse=True)


@pytest.mark.parametrize("params,expected", [
    ({"provider": "anthropic"}, 1), ({"status": "4xx"}, 1), ({"status": "error"}, 1), ({"status": "200"}, 6),
    ({"feature": "search"}, 6), ({"model": "gpt-4o-mini"}, 5), ({"since": "2099-01-01T00:00:00Z"}, 0),
    ({"until": "2000-01-01T00:00:00Z"}, 0),
])
def test_requests_filters(admin, params, expected):
    assert len(get(admin, "/api/v1/requests", limit=200, **params).json()["requests"]) == expected


@pytest.mark.parametrize("params,name", [({"provider": "bogus"}, "provider"), ({"status": "teapot"}, "status"),
                                         ({"since": "yesterday"}, "since"), ({"limit": "0"}, "limit"),
                                         ({"cursor": "!!!"}, "cursor"), ({"period": "forever"}, "period")])
def test_bad_parameters_are_400_naming_the_parameter(admin, params, name):
    path = "/api/v1/summary" if "period" in params else "/api/v1/requests"
    response = get(admin, path, **params)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(name)


def test_failures(admin):
    [failure] = get(admin, "/api/v1/failures").json()["failures"]
    assert (failure["status_code"], failure["error_origin"]) == (429, "provider")


def test_operator_api_needs_the_secret(admin):
    assert op(admin, "GET", "/api/v1/orgs", secret="nope").status_code == 401
    assert http.get(admin.extra["api"] + "/api/v1/orgs").status_code == 401
    assert get(admin, "/api/v1/orgs").status_code == 401  # an org key is not the operator's secret


def test_operator_manages_orgs_like_the_cli(admin):
    created = op(admin, "POST", "/api/v1/orgs", json={"name": "gamma"})
    assert created.status_code == 201
    org_id, key = created.json()["id"], created.json()["key"]
    assert key.startswith("lc_key_")
    assert "gamma" in admin.cli("org", "list").stdout  # the CLI sees what the API did
    assert op(admin, "POST", "/api/v1/orgs", json={"name": "gamma"}).status_code == 400
    assert op(admin, "PATCH", f"/api/v1/orgs/{org_id}", json={"name": "gamma-2"}).json()["name"] == "gamma-2"
    azure = op(admin, "PUT", f"/api/v1/orgs/{org_id}/azure",
               json={"endpoint": "https://gamma.openai.azure.com", "api_version": "2024-10-21"})
    assert azure.status_code == 200
    assert op(admin, "PUT", f"/api/v1/orgs/{org_id}/azure",
              json={"endpoint": "nope", "api_version": "2024-10-21"}).status_code == 400
    proxy = lambda k: _proxy_status(admin, k)  # noqa: E731
    wait_for(lambda: proxy(key) == 200, timeout=5, message="the new org's key to work")
    rotated = op(admin, "POST", f"/api/v1/orgs/{org_id}/keys").json()["key"]
    assert rotated != key
    # README: running servers refuse the old key within two seconds (through the proxy).
    wait_for(lambda: proxy(key) == 401, timeout=2.0, interval=0.02, message="the old key to be refused")
    assert proxy(rotated) == 200
    listed = {o["name"]: o for o in op(admin, "GET", "/api/v1/orgs").json()["orgs"]}
    assert listed["gamma-2"]["azure"]["endpoint"] == "https://gamma.openai.azure.com"
    assert key not in str(listed) and rotated not in str(listed)
    assert op(admin, "DELETE", f"/api/v1/orgs/{org_id}").status_code == 204
    assert op(admin, "DELETE", f"/api/v1/orgs/{org_id}").status_code == 404


def test_operator_adds_a_price_that_wins(admin, database_url):
    added = op(admin, "POST", "/api/v1/pricing", json={"provider": "openai", "model": "gpt-4o-mini",
                                                       "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.2})
    assert added.status_code == 201
    rows = op(admin, "GET", "/api/v1/pricing", params={"model": "gpt-4o-mini"}).json()["prices"]
    assert {"operator", "seed"} <= {r["source"] for r in rows}
    bad = op(admin, "POST", "/api/v1/pricing", json={"provider": "nowhere", "model": "m",
                                                     "input_usd_per_mtok": 1, "output_usd_per_mtok": 1})
    assert bad.status_code == 400
    # It wins: a request sent now is priced by the operator's row (12 prompt and 9 completion
    # tokens from the mock at 0.1 and 0.2 USD per million).
    probe = op(admin, "POST", "/api/v1/orgs", json={"name": "price-probe"}).json()
    wait_for(lambda: _proxy_status(admin, probe["key"]) == 200, timeout=5)
    row = wait_for(lambda: _operator_priced_row(admin, database_url, probe, added.json()["id"]), timeout=10,
                   message="a request priced by the operator's row")
    assert row["pricing_id"] == added.json()["id"]
    assert row["cost_usd"] == Decimal("0.0000030000")


def _proxy_status(server, key: str) -> int:
    try:
        sdk_client(server.base_url, **{"X-Lectr-Key": key}).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        return 200
    except openai.APIStatusError as exc:
        return exc.status_code


def _operator_priced_row(server, database_url: str, org: dict, pricing_id: int):
    """Send one request for the org; return its row once one is priced by ``pricing_id``."""
    assert _proxy_status(server, org["key"]) == 200
    org_id = org["id"]

    async def fetch():
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchrow("SELECT pricing_id, cost_usd FROM request_logs WHERE org_id = $1 "
                                       "AND pricing_id = $2 LIMIT 1", org_id, pricing_id)
        finally:
            await conn.close()
    return asyncio.run(fetch())


def test_openapi_document_matches_the_routes_and_responses(admin):
    doc = http.get(admin.extra["api"] + "/api/openapi.json").json()
    validate(doc)
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    app = make_admin_app(state=None)  # routes only; no request is served
    live = {(r.method, r.resource.canonical) for r in app.router.routes()
            if r.resource is not None and r.resource.canonical.startswith("/api/v1")}
    assert documented == live
    for path in ("/api/v1/summary", "/api/v1/models", "/api/v1/providers", "/api/v1/features",
                 "/api/v1/requests", "/api/v1/failures"):
        schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        jsonschema.validate(get(admin, path).json(), schema, cls=jsonschema.Draft202012Validator)
    schema = doc["paths"]["/api/v1/orgs"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.validate(op(admin, "GET", "/api/v1/orgs").json(), schema, cls=jsonschema.Draft202012Validator)
    assert len(ENDPOINTS) == len(documented)


def test_dropped_events_reach_the_summary(admin, database_url):
    import asyncio

    import asyncpg

    async def insert() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            org_id = await conn.fetchval("SELECT id FROM organizations WHERE name = 'alpha'")
            await conn.execute("INSERT INTO event_drops (minute, org_id, reason, count) "
                               "VALUES (date_trunc('minute', now()), $1, 'ring_full', 3)", org_id)
        finally:
            await conn.close()
    asyncio.run(insert())
    admin.cli("jobs", "run", "aggregator")
    assert get(admin, "/api/v1/summary").json()["summary"]["dropped_events"] == 3
    assert get(admin, "/api/v1/summary", org="beta").json()["summary"]["dropped_events"] == 0


def test_login_form_needs_its_csrf_token(admin):
    session = http.Session()
    page = session.get(admin.extra["api"] + "/login")
    assert page.status_code == 200 and "lectr_login_csrf" in session.cookies
    forged = session.post(admin.extra["api"] + "/login", data={"key": admin.extra["keys"]["alpha"],
                                                               "csrf_token": "forged"}, allow_redirects=False)
    assert forged.status_code == 400 and "lectr_session" not in session.cookies
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    ok = session.post(admin.extra["api"] + "/login", data={"key": admin.extra["keys"]["alpha"], "csrf_token": token},
                      allow_redirects=False)
    assert ok.status_code == 303 and ok.headers["Location"] == "/dashboard"
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and admin.extra["keys"]["alpha"] not in cookie
    # Logging out needs the session's CSRF token too.
    assert session.post(admin.extra["api"] + "/logout", data={"csrf_token": "forged"},
                        allow_redirects=False).status_code == 403


def test_repeated_failed_logins_are_slowed_then_refused():
    from lectr.dashboard.routes import LoginThrottle

    throttle = LoginThrottle()
    delays = []
    for _ in range(LoginThrottle.LOCKOUT_FAILURES):
        delays.append(throttle.begin("10.0.0.1")[1])
    assert delays[:LoginThrottle.FREE_FAILURES] == [0.0] * LoginThrottle.FREE_FAILURES
    assert delays[LoginThrottle.FREE_FAILURES:] == sorted(delays[LoginThrottle.FREE_FAILURES:])
    assert max(delays) == LoginThrottle.MAX_DELAY
    assert throttle.locked("10.0.0.1") and not throttle.locked("10.0.0.2")
    assert throttle.begin("10.0.0.1") is None
    mark, _ = throttle.begin("10.0.0.2")
    throttle.succeeded("10.0.0.2", mark)  # takes back only its own attempt
    assert throttle.delay("10.0.0.2") == 0.0 and throttle.locked("10.0.0.1")


# -- every path, query and body field: bad input is a 400 naming it, never a 500 ------------------

@pytest.mark.parametrize("method,path,body", [
    ("PATCH", "/api/v1/orgs/99999999999999999999", {"name": "x"}),
    ("DELETE", "/api/v1/orgs/9223372036854775808", None),
    ("POST", "/api/v1/orgs/99999999999999999999/keys", None),
    ("PUT", "/api/v1/orgs/99999999999999999999/azure", {"endpoint": "https://a.openai.azure.com",
                                                         "api_version": "2024-10-21"}),
    ("DELETE", "/api/v1/orgs/%C2%B2", None),  # "²" is a digit to str.isdigit(), not to int()
    ("DELETE", "/api/v1/orgs/-1", None),
    ("POST", "/api/v1/orgs", {"name": "nul\u0000name"}),
    ("POST", "/api/v1/orgs", {"name": "line\nbreak"}),
    ("POST", "/api/v1/orgs", {"name": 12}),
    ("PATCH", "/api/v1/orgs/1", {"name": "a\u0000"}),
    ("PUT", "/api/v1/orgs/1/azure", {"endpoint": "https://a\u0000.openai.azure.com", "api_version": "2024-10-21"}),
    ("PUT", "/api/v1/orgs/1/azure", {"endpoint": "https://x y.openai.azure.com", "api_version": "2024-10-21"}),
    ("PUT", "/api/v1/orgs/1/azure", {"endpoint": "https://a.openai.azure.com", "api_version": "2024\u0000"}),
    ("POST", "/api/v1/pricing", {"provider": "openai", "model": "m\u0000", "input_usd_per_mtok": 1,
                                 "output_usd_per_mtok": 1}),
    ("POST", "/api/v1/pricing", {"provider": "openai", "model": "m-note", "input_usd_per_mtok": 1,
                                 "output_usd_per_mtok": 1, "note": "n\u0000"}),
    ("POST", "/api/v1/pricing", {"provider": "openai", "model": "m-note2", "input_usd_per_mtok": 1,
                                 "output_usd_per_mtok": 1, "note": 5}),
    ("POST", "/api/v1/pricing", {"provider": "openai", "model": "m-time", "input_usd_per_mtok": 1,
                                 "output_usd_per_mtok": 1, "effective_from": 5}),
    ("GET", "/api/v1/pricing?model=a%00b", None),
    ("GET", "/api/v1/pricing?limit=%C2%B2", None),
])
def test_operator_bad_input_of_every_kind_is_400(admin, method, path, body):
    response = op(admin, method, path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("query", [
    {"model": "a\u0000b"}, {"feature": "\u0000"}, {"task": "x\u0000"}, {"limit": "\u00b2"},
    {"status": "\u00b2\u00b2\u00b2"}, {"since": "0001-01-01T00:00:00+05:00"},
    {"cursor": "MjAyNi0xMS0zMFQwNjowMDowMCswMDowMHw5OTk5OTk5OTk5OTk5OTk5OTk5OTk5"},  # an id past bigint
])
def test_org_bad_query_of_every_kind_is_400(admin, query):
    response = get(admin, "/api/v1/requests", **query)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] in {*query, "cursor"}
    assert get(admin, "/api/v1/summary", period="last_24h\u0000").status_code == 400


@pytest.mark.parametrize("method,path,body", [
    ("PUT", "/api/v1/orgs/1/azure", {"endpoint": "nope"}),
    ("PUT", "/api/v1/orgs/abc/azure", {"endpoint": "nope"}),
    ("POST", "/api/v1/orgs", {"nme": 1}),
    ("POST", "/api/v1/orgs", "not json"),
    ("PATCH", "/api/v1/orgs/99999999999999999999", {}),
    ("POST", "/api/v1/pricing", {"provider": "nobody"}),
    ("GET", "/api/v1/pricing?limit=0", None),
    ("DELETE", "/api/v1/orgs/xyz", None),
])
def test_auth_is_checked_before_the_input(admin, method, path, body):
    for secret in ("wrong", None):
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        kwargs = {"data": body} if isinstance(body, str) else {"json": body}
        response = http.request(method, admin.extra["api"] + path, headers=headers, **kwargs)
        assert response.status_code == 401, (secret, response.text)
    response = http.get(admin.extra["api"] + "/api/v1/models", params={"provider": "nobody"})
    assert response.status_code == 401


@pytest.mark.parametrize("header", [f"bearer {SECRET}", f"BEARER {SECRET}", f"BeArEr  {SECRET} "])
def test_the_bearer_scheme_is_case_insensitive(admin, header):
    response = http.get(admin.extra["api"] + "/api/v1/orgs", headers={"Authorization": header})
    assert response.status_code == 200, response.text
    assert http.get(admin.extra["api"] + "/api/v1/orgs",
                    headers={"Authorization": f"Basic {SECRET}"}).status_code == 401


@pytest.mark.parametrize("header", ["Authorization", "X-Lectr-Key", "X-Anything"])
def test_an_over_long_header_is_refused_and_its_value_never_logged(admin, header):
    import socket

    secret = f"SeCrEt-{header}-9f8e7d6c5b4a"
    port = int(admin.env["LECTR_ADMIN_PORT"])
    for request in (
        f"GET /api/v1/summary HTTP/1.1\r\nHost: x\r\n{header}: Bearer {secret}{'Z' * 9000}\r\n\r\n".encode(),
        f"GET /api/v1/summary?{secret}{'Z' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        f"GET /api/v1/summary HTTP/1.1\r\nHost: x\r\n{header}\x01: {secret}\r\n\r\n".encode(),
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(request)
            reply = conn.recv(4096)
        assert reply.split(b" ")[1] in (b"400", b"431"), reply
    assert http.get(admin.extra["api"] + "/healthz").status_code == 200  # and the listener is fine
    log = admin.log_text()
    assert "SeCrEt" not in log and "Traceback" not in log
    assert "refused a malformed request" in log


@pytest.mark.parametrize("path", ["/api/v1/requests?model=a%00b", "/api/v1/requests?limit=%C2%B2",
                                  "/api/v1/failures?period=nope", "/api/v1/pricing?model=%00",
                                  "/api/v1/orgs?limit=0", "/api/v1/models?provider=%00"])
def test_an_unauthenticated_caller_gets_401_whatever_the_query(admin, path):
    assert http.get(admin.extra["api"] + path).status_code == 401
