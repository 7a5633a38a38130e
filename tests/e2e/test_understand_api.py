"""Anomalies and recommendations over the API of a real ``lectr serve``, with two orgs: rollups
written for each, ``lectr jobs run anomalies`` run by the CLI, the rows read back over HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import jsonschema
import pytest
import requests as http

from lectr.analysis import histogram as hg
from tests.conftest import create_org, lectr_env, run_cli, start_lectr, stop_lectr
from tests.rollup_fixtures import insert_rollups, rollup_row

SECRET = "operator-secret-for-understand-tests"
# A fixed hour, whenever the tests run: the CLI evaluates it with --from/--to, and the server's own
# scheduled run (the real clock's last hour) finds no rollups near it to change what it recorded.
NOW = datetime(2026, 1, 14, 15, tzinfo=UTC)
LAST = NOW - timedelta(hours=1)  # the last complete hour: the surge, and the slow hour
DAYS = 10


def _run(coro):
    return asyncio.run(coro)


async def _with_conn(url, fn):
    conn = await asyncpg.connect(url)
    try:
        return await fn(conn)
    finally:
        await conn.close()


def traffic(org_id: int, feature: str) -> list[dict]:
    """Ten days of 100 requests an hour at ~300 ms; the last hour 400 requests at ~1.2 s."""
    rows = []
    for k in range(DAYS * 24, 0, -1):
        hour = NOW - timedelta(hours=k)
        surge = hour == LAST
        n = 400 if surge else 100 + (k * 7) % 9
        latency = 1200.0 if surge else 300.0
        buckets = hg.build(latency * (0.8 + 0.4 * i / n) for i in range(n))
        rows.append(rollup_row(org_id, hour, feature, model="gpt-4o", requests=n, errors=1,
                               cost_usd=n * 0.001, latency_buckets=buckets))
    return rows


@pytest.fixture(scope="module")
def server(database_url, mock, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("understand")
    env = lectr_env(database_url, mock, tmp, LECTR_ADMIN_SECRET=SECRET, LECTR_ANOMALY_INTERVAL="3600")
    keys = {"alpha": create_org(env, "alpha"), "beta": create_org(env, "beta")}

    async def setup(conn):
        ids = {r["name"]: r["id"] for r in await conn.fetch("SELECT id, name FROM organizations")}
        await insert_rollups(conn, traffic(ids["alpha"], "search") + traffic(ids["beta"], "chat"))
        for name, feature in (("alpha", "search"), ("beta", "chat")):
            for model, state in (("gpt-4o", "open"), ("gpt-4.1", "applied")):
                await conn.execute("""
                    INSERT INTO recommendations (org_id, feature, provider, current_model, suggested_model,
                        aggressiveness, confidence, reason, signals, monthly_saving_usd, state)
                    VALUES ($1, $2, 'openai', $3, $3 || '-mini', 'moderate', 'high', 'declared task', '{"requests": 600}',
                            12.5, $4)""", ids[name], feature, model, state)
        return ids

    ids = _run(_with_conn(database_url, setup))
    server = start_lectr(env, tmp / "serve.log")
    server.extra.update(keys=keys, ids=ids, api=f"http://127.0.0.1:{env['LECTR_ADMIN_PORT']}", url=database_url)
    out = run_cli(env, "org", "threshold", "alpha", "--p95-ms", "800")
    assert "800 ms" in out.stdout
    run_cli(env, "jobs", "run", "anomalies", "--from", (NOW - timedelta(hours=3)).isoformat(), "--to", NOW.isoformat())
    yield server
    stop_lectr(server)


def get(server, path: str, org: str = "alpha", **params):
    return http.get(server.extra["api"] + path, params=params, headers={"X-Lectr-Key": server.extra["keys"][org]})


def post(server, path: str, org: str = "alpha"):
    return http.post(server.extra["api"] + path, headers={"X-Lectr-Key": server.extra["keys"][org]})


def operator(server, method: str, path: str, **kwargs):
    return http.request(method, server.extra["api"] + path, headers={"Authorization": f"Bearer {SECRET}"}, **kwargs)


def schema(server, method: str, path: str) -> dict:
    doc = http.get(server.extra["api"] + "/api/openapi.json").json()
    return doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]


def check(server, method: str, path: str, response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    jsonschema.validate(body, schema(server, method, path), cls=jsonschema.Draft202012Validator)
    return body


def test_the_job_records_the_surge_and_the_slow_hour(server):
    rows = check(server, "get", "/api/v1/anomalies", get(server, "/api/v1/anomalies"))["anomalies"]
    kinds = {(r["feature"], r["metric"], r["direction"]) for r in rows}
    assert ("search", "requests", "up") in kinds and (None, "latency_threshold", "up") in kinds
    surge = next(r for r in rows if (r["feature"], r["metric"]) == ("search", "requests"))
    assert surge["state"] == "open" and surge["window_end"].startswith(NOW.isoformat()[:13])
    assert surge["deviation_sigma"] > 5 and surge["baseline_std"] > 0 and surge["current_value"] == 400
    threshold = next(r for r in rows if r["metric"] == "latency_threshold")
    assert threshold["detail"]["threshold_ms"] == 800 and threshold["current_value"] > 800
    # beta has no threshold: its surge is there, no latency_threshold
    beta = get(server, "/api/v1/anomalies", org="beta").json()["anomalies"]
    assert {r["metric"] for r in beta} >= {"requests"} and "latency_threshold" not in {r["metric"] for r in beta}
    assert {r["feature"] for r in beta} <= {"chat", None}


def test_filters_and_pages(server):
    all_rows = get(server, "/api/v1/anomalies").json()["anomalies"]
    assert len(all_rows) >= 2
    only = get(server, "/api/v1/anomalies", metric="requests", feature="search").json()["anomalies"]
    assert only and all((r["metric"], r["feature"]) == ("requests", "search") for r in only)
    assert get(server, "/api/v1/anomalies", state="resolved").json()["anomalies"] == [
        r for r in all_rows if r["state"] == "resolved"]
    assert get(server, "/api/v1/anomalies", state="open").json()["anomalies"] == [
        r for r in all_rows if r["state"] == "open"]
    assert get(server, "/api/v1/anomalies", until=(NOW - timedelta(days=2)).isoformat()).json()["anomalies"] == []
    assert get(server, "/api/v1/anomalies", since=(NOW - timedelta(hours=2)).isoformat()).json()["anomalies"]
    seen, cursor = [], None
    while True:
        page = get(server, "/api/v1/anomalies", limit=1, **({"cursor": cursor} if cursor else {})).json()
        seen += page["anomalies"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [r["id"] for r in seen] == [r["id"] for r in all_rows]


def test_acknowledge_keeps_the_first_time(server):
    row = get(server, "/api/v1/anomalies").json()["anomalies"][0]
    first = check(server, "post", "/api/v1/anomalies/{anomaly_id}/acknowledge",
                  post(server, f"/api/v1/anomalies/{row['id']}/acknowledge"))
    assert first["acknowledged_at"] is not None and first["id"] == row["id"]
    again = post(server, f"/api/v1/anomalies/{row['id']}/acknowledge").json()
    assert again["acknowledged_at"] == first["acknowledged_at"]


def test_recommendations_and_dismiss(server):
    recs = check(server, "get", "/api/v1/recommendations", get(server, "/api/v1/recommendations"))["recommendations"]
    assert [(r["feature"], r["current_model"], r["state"]) for r in recs] == [("search", "gpt-4o", "open")]
    everything = get(server, "/api/v1/recommendations", state="all").json()["recommendations"]
    assert {r["state"] for r in everything} == {"open", "applied"}
    dismissed = check(server, "post", "/api/v1/recommendations/{recommendation_id}/dismiss",
                      post(server, f"/api/v1/recommendations/{recs[0]['id']}/dismiss"))
    assert dismissed["state"] == "dismissed"
    assert get(server, "/api/v1/recommendations").json()["recommendations"] == []
    assert [r["id"] for r in get(server, "/api/v1/recommendations", state="dismissed").json()["recommendations"]] == [
        recs[0]["id"]]
    applied = next(r for r in everything if r["state"] == "applied")
    refused = post(server, f"/api/v1/recommendations/{applied['id']}/dismiss")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "already_applied"


def test_one_org_never_sees_or_changes_anothers(server):
    alpha_anomalies = get(server, "/api/v1/anomalies").json()["anomalies"]
    beta_anomalies = get(server, "/api/v1/anomalies", org="beta").json()["anomalies"]
    assert alpha_anomalies and beta_anomalies
    assert not {r["id"] for r in alpha_anomalies} & {r["id"] for r in beta_anomalies}
    assert all(r["feature"] != "search" for r in beta_anomalies)
    target = alpha_anomalies[-1]
    response = post(server, f"/api/v1/anomalies/{target['id']}/acknowledge", org="beta")
    assert response.status_code == 404 and set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert next(r for r in get(server, "/api/v1/anomalies").json()["anomalies"]
                if r["id"] == target["id"])["acknowledged_at"] == target["acknowledged_at"]
    alpha_recs = get(server, "/api/v1/recommendations", state="all").json()["recommendations"]
    beta_recs = get(server, "/api/v1/recommendations", org="beta", state="all").json()["recommendations"]
    assert {r["feature"] for r in beta_recs} == {"chat"} and {r["feature"] for r in alpha_recs} == {"search"}
    for rec in alpha_recs:
        assert post(server, f"/api/v1/recommendations/{rec['id']}/dismiss", org="beta").status_code == 404
    assert get(server, "/api/v1/recommendations", state="all").json()["recommendations"] == alpha_recs


@pytest.mark.parametrize("path,params", [
    ("/api/v1/anomalies", {"state": "closed"}), ("/api/v1/anomalies", {"metric": "latency"}),
    ("/api/v1/anomalies", {"since": "yesterday"}), ("/api/v1/anomalies", {"limit": "0"}),
    ("/api/v1/anomalies", {"cursor": "nope"}), ("/api/v1/anomalies", {"feature": "a\u0000b"}),
    ("/api/v1/recommendations", {"state": "gone"}),
])
def test_bad_parameters_are_400(server, path, params):
    response = get(server, path, **params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] in {*params, "cursor"}


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/v1/anomalies"), ("POST", "/api/v1/anomalies/1/acknowledge"),
    ("GET", "/api/v1/recommendations"), ("POST", "/api/v1/recommendations/1/dismiss"),
    ("POST", "/api/v1/anomalies/abc/acknowledge"), ("GET", "/api/v1/anomalies?state=nope"),
    ("PUT", "/api/v1/orgs/1/p95-threshold"),
])
def test_strangers_get_401_before_anything_else(server, method, path):
    for headers in ({}, {"X-Lectr-Key": "lc_key_wrong"}, {"Authorization": "Bearer wrong"}):
        assert http.request(method, server.extra["api"] + path, headers=headers, json={}).status_code == 401


def test_bad_ids_are_400_and_unknown_ones_404(server):
    assert post(server, "/api/v1/anomalies/abc/acknowledge").status_code == 400
    assert post(server, "/api/v1/anomalies/99999999/acknowledge").status_code == 404
    assert post(server, "/api/v1/recommendations/99999999999999999999/dismiss").status_code == 400


def test_operator_and_cli_set_the_threshold(server):
    alpha = server.extra["ids"]["alpha"]

    def stored():
        return _run(_with_conn(server.extra["url"], lambda c: c.fetchval(
            "SELECT p95_threshold_ms FROM organizations WHERE id = $1", alpha)))

    path = f"/api/v1/orgs/{alpha}/p95-threshold"
    assert operator(server, "PUT", path, json={"p95_threshold_ms": 1500}).json() == {
        "id": alpha, "p95_threshold_ms": 1500}
    assert stored() == 1500
    assert operator(server, "PUT", path, json={"p95_threshold_ms": None}).json()["p95_threshold_ms"] is None
    assert stored() is None
    for bad in ({"p95_threshold_ms": -5}, {"p95_threshold_ms": 1.5}, {"p95_threshold_ms": "900"},
                {"p95_threshold_ms": True}, {"threshold": 5}, [1]):
        response = operator(server, "PUT", path, json=bad)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"]["param"] == "p95_threshold_ms"
    assert operator(server, "PUT", "/api/v1/orgs/999999/p95-threshold",
                    json={"p95_threshold_ms": 5}).status_code == 404
    server.cli("org", "threshold", "alpha", "--p95-ms", "700")
    assert stored() == 700
    assert "none" in server.cli("org", "threshold", str(alpha), "--p95-ms", "none").stdout
    assert stored() is None
    bad = server.cli("org", "threshold", "alpha", "--p95-ms", "fast", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("lectr: error: p95 threshold")
    assert server.cli("org", "threshold", "nobody", "--p95-ms", "5", check=False).returncode == 1
    server.cli("org", "threshold", "alpha", "--p95-ms", "800")  # as the module set it


def test_the_new_endpoints_are_documented_for_orgs(server):
    doc = http.get(server.extra["api"] + "/api/openapi.json").json()
    for path, method in (("/api/v1/anomalies", "get"), ("/api/v1/anomalies/{anomaly_id}/acknowledge", "post"),
                         ("/api/v1/recommendations", "get"),
                         ("/api/v1/recommendations/{recommendation_id}/dismiss", "post")):
        assert doc["paths"][path][method]["security"] == [{"orgKey": []}, {"session": []}]
    assert doc["paths"]["/api/v1/orgs/{org_id}/p95-threshold"]["put"]["security"] == [{"adminSecret": []}]
