"""Alert settings over the API and the CLI, against ``lectr serve``, and the scheduled delivery job
sending a new anomaly end to end (SMTP on aiosmtpd, webhook on a loopback receiver)."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
import requests as http

from tests.alert_servers import ThreadedReceiver, start_smtp
from tests.conftest import create_org, lectr_env, start_lectr, stop_lectr
from tests.understand_contract import insert_anomaly


@pytest.fixture(scope="module")
def smtp():
    sink = start_smtp()
    yield sink
    sink.controller.stop()


@pytest.fixture(scope="module")
def receiver():
    r = ThreadedReceiver()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def site(database_url, mock, smtp, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("alerts-api")
    env = lectr_env(database_url, mock, tmp, LECTR_SMTP_URL=smtp.url(), LECTR_ALERT_FROM="lectr@alerts.test",
                    LECTR_ALERT_INTERVAL="0.2", LECTR_DASHBOARD_URL="https://lectr.example.com",
                    LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE="1")  # the receiver is on loopback
    keys = {"alpha": create_org(env, "alpha"), "beta": create_org(env, "beta")}
    server = start_lectr(env, tmp / "serve.log")
    server.extra.update(keys=keys, api=f"http://127.0.0.1:{env['LECTR_ADMIN_PORT']}", database_url=database_url)
    yield server
    stop_lectr(server)


def call(site, method: str, path: str, org: str = "alpha", **kwargs):
    return http.request(method, site.extra["api"] + path, headers={"X-Lectr-Key": site.extra["keys"][org]}, **kwargs)


def test_settings_need_an_org_key(site):
    for method in ("GET", "PUT"):
        response = http.request(method, site.extra["api"] + "/api/v1/alert-settings", json={})
        assert response.status_code == 401 and set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_put_and_get_settings_and_one_org_never_sees_another(site, receiver):
    empty = call(site, "GET", "/api/v1/alert-settings").json()
    assert empty == {"email_recipients": [], "email_enabled": True, "webhook_url": None, "webhook_enabled": True,
                     "email_configured": True}
    put = call(site, "PUT", "/api/v1/alert-settings",
               json={"email_recipients": ["oncall@alpha.test", " lead@alpha.test "], "webhook_url": receiver.url})
    assert put.status_code == 200, put.text
    assert put.json()["email_recipients"] == ["oncall@alpha.test", "lead@alpha.test"]
    assert call(site, "GET", "/api/v1/alert-settings").json()["webhook_url"] == receiver.url
    beta = call(site, "GET", "/api/v1/alert-settings", org="beta").json()
    assert beta["email_recipients"] == [] and beta["webhook_url"] is None
    # a partial PUT keeps the other fields
    call(site, "PUT", "/api/v1/alert-settings", org="beta", json={"email_recipients": ["b@beta.test"]})
    assert call(site, "GET", "/api/v1/alert-settings").json()["email_recipients"] == ["oncall@alpha.test",
                                                                                     "lead@alpha.test"]


@pytest.mark.parametrize("body, param, named", [
    ({"email_recipients": ["ok@alpha.test", "not-an-address"]}, "email_recipients", "not-an-address"),
    ({"email_recipients": "a@alpha.test"}, "email_recipients", "list"),
    ({"webhook_url": "http://hooks.example.com/x"}, "webhook_url", "https"),
    ({"webhook_url": "https://hooks.example.com/x?token=1"}, "webhook_url", "query"),
    ({"webhook_enabled": "yes"}, "webhook_enabled", "true or false"),
    ({"colour": "red"}, "colour", "unknown field"),
])
def test_bad_settings_get_one_clear_400(site, body, param, named):
    before = call(site, "GET", "/api/v1/alert-settings").json()
    response = call(site, "PUT", "/api/v1/alert-settings", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and named in error["message"]
    assert call(site, "GET", "/api/v1/alert-settings").json() == before  # nothing stored


def test_not_json_is_a_400(site):
    response = call(site, "PUT", "/api/v1/alert-settings", data=b"[1,2")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def test_send_test_alert_answers_per_channel(site, smtp, receiver):
    call(site, "PUT", "/api/v1/alert-settings", json={"email_recipients": ["oncall@alpha.test"],
                                                      "webhook_url": receiver.url})
    before_mail, before_hook = len(smtp.messages), len(receiver.received)
    response = call(site, "POST", "/api/v1/alert-settings/test")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True and [(r["channel"], r["ok"]) for r in body["results"]] == [("email", True),
                                                                                         ("webhook", True)]
    assert len(smtp.messages) == before_mail + 1 and len(receiver.received) == before_hook + 1
    assert receiver.received[-1]["test"] is True


def test_test_alert_without_channels_is_a_400(site):
    call(site, "PUT", "/api/v1/alert-settings", org="beta", json={"email_recipients": [], "webhook_url": None})
    response = call(site, "POST", "/api/v1/alert-settings/test", org="beta")
    assert response.status_code == 400 and response.json()["error"]["code"] == "no_alert_channels"


def test_a_new_anomaly_is_delivered_by_the_running_server(site, smtp, receiver):
    call(site, "PUT", "/api/v1/alert-settings", json={"email_recipients": ["oncall@alpha.test"],
                                                      "webhook_url": receiver.url})
    before_mail, before_hook = len(smtp.messages), len(receiver.received)
    anomaly = asyncio.run(_insert(site.extra["database_url"], "alpha"))
    deadline = time.monotonic() + 20
    while len(smtp.messages) < before_mail + 1 or len(receiver.received) < before_hook + 1:
        assert time.monotonic() < deadline, "the alert was not delivered"
        time.sleep(0.05)
    hook = receiver.received[-1]
    assert hook["id"] == anomaly and hook["text"].startswith("Lectr alert for alpha: p95 latency up (feature search)")
    assert hook["url"] == f"https://lectr.example.com/dashboard/anomalies?anomaly={anomaly}"
    _, mail = smtp.messages[-1]
    assert mail["From"] == "lectr@alerts.test" and "4.18 s" in mail.get_content()
    # once recorded as sent, the job's later turns leave the deliveries alone
    while asyncio.run(_statuses(site.extra["database_url"], anomaly)) != ["sent", "sent"]:
        assert time.monotonic() < deadline, "the deliveries were not recorded as sent"
        time.sleep(0.05)
    # a later anomaly is delivered by a later turn; the first one was not sent again meanwhile
    second = asyncio.run(_insert(site.extra["database_url"], "alpha", feature="chat"))
    while not any(h["id"] == second for h in receiver.received):
        assert time.monotonic() < deadline + 10, "the second alert was not delivered"
        time.sleep(0.05)
    assert [h["id"] for h in receiver.received[before_hook:]].count(anomaly) == 1
    assert sum(f"anomaly={anomaly}" in m.get_content() for _, m in smtp.messages[before_mail:]) == 1


async def _statuses(url: str, anomaly: int) -> list:
    conn = await asyncpg.connect(url)
    try:
        return [r["status"] for r in await conn.fetch(
            "SELECT status FROM alert_deliveries WHERE anomaly_id = $1 ORDER BY id", anomaly)]
    finally:
        await conn.close()


async def _insert(url: str, org: str, feature: str = "search") -> int:
    conn = await asyncpg.connect(url)
    try:
        org_id = await conn.fetchval("SELECT id FROM organizations WHERE name = $1", org)
        return await insert_anomaly(conn, org_id, metric="p95_latency", feature=feature, current=4180.0,
                                    mean=1210.0, std=230.0, sigma=12.9)
    finally:
        await conn.close()


def test_cli_sets_shows_and_tests_alerts(site, smtp, receiver):
    out = site.cli("alerts", "set", "beta", "--email", "x@beta.test,y@beta.test", "--webhook", receiver.url).stdout
    assert "x@beta.test, y@beta.test" in out and receiver.url in out
    assert call(site, "GET", "/api/v1/alert-settings", org="beta").json()["email_recipients"] == ["x@beta.test",
                                                                                                 "y@beta.test"]
    shown = site.cli("alerts", "show", "beta").stdout
    assert "x@beta.test" in shown
    before = len(receiver.received)
    tested = site.cli("alerts", "test", "beta")
    assert tested.stdout.count("sent") == 3 and len(receiver.received) == before + 1
    bad = site.cli("alerts", "set", "beta", "--email", "nobody", check=False)
    assert bad.returncode == 1 and "'nobody'" in bad.stderr and bad.stderr.startswith("lectr: error:")
    missing = site.cli("alerts", "show", "no-such-org", check=False)
    assert missing.returncode == 1 and "no org named" in missing.stderr
    assert site.cli("alerts", "set", "beta", "--webhook", "").stdout.count("webhook: -") == 1


def test_a_restarted_server_never_resends_a_delivered_alert(site, smtp, receiver, tmp_path):
    call(site, "PUT", "/api/v1/alert-settings", json={"email_recipients": ["oncall@alpha.test"],
                                                      "webhook_url": receiver.url})
    first = asyncio.run(_insert(site.extra["database_url"], "alpha", feature="restart-1"))
    deadline = time.monotonic() + 20
    while asyncio.run(_statuses(site.extra["database_url"], first)) != ["sent", "sent"]:
        assert time.monotonic() < deadline, "the first alert was not delivered"
        time.sleep(0.05)
    assert stop_lectr(site) == 0
    restarted = start_lectr(site.env, tmp_path / "restarted.log")
    site.proc = restarted.proc  # the fixture stops this one
    second = asyncio.run(_insert(site.extra["database_url"], "alpha", feature="restart-2"))
    while not any(h["id"] == second for h in receiver.received):
        assert time.monotonic() < deadline + 20, "the restarted server delivered nothing"
        time.sleep(0.05)
    assert [h["id"] for h in receiver.received].count(first) == 1
    assert sum(f"anomaly={first}" in m.get_content() for _, m in smtp.messages) == 1
