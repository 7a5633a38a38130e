"""Alert delivery end to end: real PostgreSQL, an aiosmtpd SMTP server and an aiohttp webhook
receiver on loopback; the delivery job as scheduled (in a transaction under its advisory lock)."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from lectr.platform import db
from lectr.alerts import outbox
from lectr.settings.alerts import AlertConfig, parse_smtp_url
from lectr.alerts.job import AlertJob, Backoff, send_test_alerts
from lectr.alerts.settings import AlertSettings, SettingsError, get_settings, put_settings
from lectr.jobs.registry import ALERTS_LOCK
from lectr.api.orgs import create_org
from tests.alert_servers import SMTP_PASSWORD, WebhookReceiver, start_smtp
from tests.understand_contract import insert_anomaly

DASHBOARD = "https://lectr.example.com"
_names = itertools.count()


@pytest.fixture(scope="module")
def smtp():
    sink = start_smtp()
    yield sink
    sink.controller.stop()


@pytest.fixture
async def pool(database_url):
    pool = await db.open_pool(database_url, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        # each test counts its own sends: what an earlier test left queued is set aside
        await conn.execute("UPDATE alert_deliveries SET status = 'failed' WHERE status = 'pending'")
    yield pool
    await pool.close()


@pytest.fixture
async def hook():
    receiver = await WebhookReceiver().start()
    yield receiver
    await receiver.stop()


async def new_org(pool, **settings) -> int:
    async with pool.acquire() as conn:
        org_id, _ = await create_org(conn, f"org-{next(_names)}")
        if settings:
            # Stored as where internal receivers are allowed (the receivers here are on loopback);
            # each test's AlertConfig says whether delivery allows them.
            await put_settings(conn, org_id, AlertSettings(**settings), allow_private=True)
    return org_id


def config(smtp, password: str = SMTP_PASSWORD, *, allow_private: bool = True) -> AlertConfig:
    # The receivers here listen on loopback, which an operator must allow (not the default).
    return AlertConfig(smtp=parse_smtp_url(smtp.url(password)), sender="alerts@lectr.test", dashboard_url=DASHBOARD,
                       allow_private_webhooks=allow_private)


async def run_job(pool, job: AlertJob) -> dict:
    """One scheduled turn: a transaction holding the job's advisory lock, as the scheduler runs it."""
    async with pool.acquire() as conn, conn.transaction():
        assert await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", ALERTS_LOCK)
        return await job.run(conn)


async def deliveries(pool, anomaly_id: int) -> list:
    async with pool.acquire() as conn:
        return await conn.fetch("SELECT * FROM alert_deliveries WHERE anomaly_id = $1 ORDER BY channel, target",
                                anomaly_id)


async def test_an_anomaly_is_mailed_and_posted_once(pool, smtp, hook, database_url):
    org = await new_org(pool, email_recipients=("oncall@acme.test", "lead@acme.test"), webhook_url=hook.url)
    async with pool.acquire() as conn:
        anomaly = await insert_anomaly(conn, org, metric="error_rate", feature="checkout", current=0.142, mean=0.004,
                                       std=0.002, sigma=6.2, length=2)
        name = await conn.fetchval("SELECT name FROM organizations WHERE id = $1", org)
    before = len(smtp.messages)
    counts = await run_job(pool, AlertJob(config(smtp)))
    assert counts == {"queued": 3, "sent": 3, "retrying": 0, "failed": 0}

    mails = smtp.messages[before:]
    assert sorted(r for rcpts, _ in mails for r in rcpts) == ["lead@acme.test", "oncall@acme.test"]
    _, msg = mails[0]
    body = msg.get_content()
    assert msg["From"] == "alerts@lectr.test" and "Error rate up" in msg["Subject"] and name in msg["Subject"]
    for part in ("What:      Error rate up", f"Where:     {name}, feature checkout", "UTC", "Current:   14.2%",
                 "Baseline:  0.4% ± 0.2 pp", "Deviation: +6.2σ",
                 f"{DASHBOARD}/dashboard/anomalies?anomaly={anomaly}"):
        assert part in body, part
    assert msg["Message-ID"].startswith("<lectr-alert-")

    [(status, headers, payload)] = hook.calls
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert payload["id"] == anomaly and payload["metric"] == "error_rate" and payload["feature"] == "checkout"
    assert payload["direction"] == "up" and payload["current_value"] == 0.142 and payload["baseline_std"] == 0.002
    assert payload["text"].startswith(f"Lectr alert for {name}: Error rate up (feature checkout)")
    assert "14.2%" in payload["text"] and f"anomaly={anomaly}" in payload["text"]
    assert headers["X-Lectr-Delivery"] == payload["delivery_id"]

    rows = await deliveries(pool, anomaly)
    assert [(r["channel"], r["status"], r["attempts"]) for r in rows] == [
        ("email", "sent", 1), ("email", "sent", 1), ("webhook", "sent", 1)]
    assert all(r["sent_at"] is not None and r["last_error"] is None for r in rows)

    # later runs, and a restart (a new job on a new pool), send nothing again
    assert (await run_job(pool, AlertJob(config(smtp))))["sent"] == 0
    restarted = await db.open_pool(database_url, min_size=1, max_size=1)
    try:
        assert await run_job(restarted, AlertJob(config(smtp))) == {"queued": 0, "sent": 0, "retrying": 0,
                                                                      "failed": 0}
    finally:
        await restarted.close()
    assert len(smtp.messages) == before + 2 and len(hook.calls) == 1


async def test_enqueue_is_idempotent_across_processes(pool, hook):
    org = await new_org(pool, email_recipients=("a@acme.test",), webhook_url=hook.url)
    async with pool.acquire() as conn:
        anomaly = await insert_anomaly(conn, org)

    async def enqueue() -> int:
        async with pool.acquire() as conn:
            return await outbox.enqueue(conn)

    added = await asyncio.gather(*(enqueue() for _ in range(4)))
    assert sum(added) == 2
    assert await enqueue() == 0
    rows = await deliveries(pool, anomaly)
    assert [(r["channel"], r["target"]) for r in rows] == [("email", "a@acme.test"), ("webhook", hook.url)]


async def test_old_or_unconfigured_anomalies_are_not_alerted(pool, hook):
    quiet = await new_org(pool)  # no channels: nothing to queue
    loud = await new_org(pool, webhook_url=hook.url)
    async with pool.acquire() as conn:
        await insert_anomaly(conn, quiet)
        old = await insert_anomaly(conn, loud, hours_ago=30)  # a replayed month, or before alerts were set up
        await outbox.enqueue(conn)
    assert await deliveries(pool, old) == []


async def test_a_failing_receiver_is_retried_with_backoff_and_served_once(pool, smtp):
    hook = await WebhookReceiver(fail_first=2).start()
    try:
        org = await new_org(pool, webhook_url=hook.url)
        async with pool.acquire() as conn:
            anomaly = await insert_anomaly(conn, org, metric="requests", direction="down", current=120, mean=1840,
                                           std=95, sigma=-18.1)
        job = AlertJob(config(smtp), backoff=Backoff(base=0.5, cap=10, max_attempts=5))
        assert (await run_job(pool, job))["retrying"] == 1
        [row] = await deliveries(pool, anomaly)
        assert (row["status"], row["attempts"]) == ("pending", 1) and "HTTP 500" in row["last_error"]
        first_gap = (row["next_attempt_at"] - await clock(pool)).total_seconds()
        assert 0 < first_gap <= 0.5
        assert (await run_job(pool, job))["retrying"] == 0  # not due yet: no attempt
        assert len(hook.calls) == 1

        await run_until(pool, job, lambda: len(hook.calls) >= 2)
        [row] = await deliveries(pool, anomaly)
        assert (row["status"], row["attempts"]) == ("pending", 2)
        assert 0.5 < (row["next_attempt_at"] - await clock(pool)).total_seconds() <= 1.0  # doubled

        await run_until(pool, job, lambda: len(hook.calls) >= 3)
        [row] = await deliveries(pool, anomaly)
        assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 3, None)
        for _ in range(3):
            await run_job(pool, job)
        assert [c[0] for c in hook.calls] == [500, 500, 200] and len(hook.received) == 1
        assert hook.received[0]["text"].startswith("Lectr alert for") and "Requests per hour down" in \
            hook.received[0]["text"]
    finally:
        await hook.stop()


async def test_a_receiver_that_never_answers_ok_is_given_up_after_the_last_attempt(pool, smtp):
    hook = await WebhookReceiver(fail_first=100).start()
    try:
        org = await new_org(pool, webhook_url=hook.url)
        async with pool.acquire() as conn:
            anomaly = await insert_anomaly(conn, org)
        job = AlertJob(config(smtp), backoff=Backoff(base=0.01, cap=0.01, max_attempts=3))
        await run_until(pool, job, lambda: len(hook.calls) >= 3)
        [row] = await deliveries(pool, anomaly)
        assert (row["status"], row["attempts"]) == ("failed", 3)
        await run_job(pool, job)
        assert len(hook.calls) == 3
    finally:
        await hook.stop()


async def test_a_webhook_to_an_internal_address_is_refused_once_and_not_retried(pool, smtp, hook, caplog):
    org = await new_org(pool, email_recipients=("a@acme.test",), webhook_url=hook.url)  # loopback
    async with pool.acquire() as conn:
        anomaly = await insert_anomaly(conn, org)
    job = AlertJob(config(smtp, allow_private=False), backoff=Backoff(base=0.01, cap=0.01, max_attempts=5))
    with caplog.at_level(logging.WARNING, logger="lectr.alerts.job"):
        counts = await run_job(pool, job)
    assert (counts["sent"], counts["failed"], counts["retrying"]) == (1, 1, 0)  # the mail still goes
    rows = {r["channel"]: r for r in await deliveries(pool, anomaly)}
    webhook = rows["webhook"]
    assert (webhook["status"], webhook["attempts"]) == ("failed", 1)
    assert "refused" in webhook["last_error"] and "loopback" in webhook["last_error"]
    assert "LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE=1" in webhook["last_error"] and "secret-path" not in webhook["last_error"]
    assert "giving up" in caplog.text
    for _ in range(3):
        await run_job(pool, job)
    assert hook.calls == [] and (await deliveries(pool, anomaly))[1]["attempts"] == 1


async def test_the_test_alert_reports_a_refused_webhook(pool, smtp, hook):
    org = await new_org(pool, webhook_url=hook.url)
    async with pool.acquire() as conn:
        [refused] = await send_test_alerts(conn, org, config(smtp, allow_private=False))
    assert refused["ok"] is False and "refused" in refused["error"] and "loopback" in refused["error"]
    assert hook.calls == []


async def test_one_failing_channel_does_not_hold_back_the_others(pool, hook):
    dead = AlertConfig(smtp=parse_smtp_url("smtp://127.0.0.1:1"), sender="alerts@lectr.test", dashboard_url=DASHBOARD,
                       allow_private_webhooks=True)
    org = await new_org(pool, email_recipients=("a@acme.test",), webhook_url=hook.url)
    async with pool.acquire() as conn:
        anomaly = await insert_anomaly(conn, org)
    counts = await run_job(pool, AlertJob(dead))
    assert counts["sent"] == 1 and counts["retrying"] == 1
    rows = {r["channel"]: r for r in await deliveries(pool, anomaly)}
    assert rows["webhook"]["status"] == "sent" and rows["email"]["status"] == "pending"
    assert "127.0.0.1:1" in rows["email"]["last_error"]


async def test_a_delivery_that_cannot_be_sent_does_not_undo_the_others(pool, smtp, hook):
    org = await new_org(pool, webhook_url=hook.url)
    async with pool.acquire() as conn:
        anomaly = await insert_anomaly(conn, org)
        assert await outbox.enqueue(conn) == 1
        # a row no sender can use (written by hand, or by an older version): a header-breaking address
        await conn.execute("INSERT INTO alert_deliveries (org_id, anomaly_id, channel, target) "
                           "VALUES ($1, $2, 'email', 'a@x.test\nBcc: b@x.test')", org, anomaly)
    counts = await run_job(pool, AlertJob(config(smtp)))
    assert counts["sent"] == 1 and counts["retrying"] == 1
    rows = {r["channel"]: r for r in await deliveries(pool, anomaly)}
    assert rows["webhook"]["status"] == "sent" and rows["email"]["status"] == "pending"
    assert rows["email"]["last_error"].startswith("could not send")
    await run_job(pool, AlertJob(config(smtp)))
    assert len(hook.calls) == 1  # the webhook's send was committed, not repeated


async def test_the_smtp_password_is_never_logged_or_stored(pool, smtp, caplog):
    caplog.set_level(logging.DEBUG)
    org = await new_org(pool, email_recipients=("a@acme.test",))
    async with pool.acquire() as conn:
        anomaly = await insert_anomaly(conn, org)
    wrong = "Wr0ng-" + SMTP_PASSWORD
    await run_job(pool, AlertJob(config(smtp, password=wrong)))  # refused: the error is logged and stored
    [row] = await deliveries(pool, anomaly)
    assert row["status"] == "pending" and row["last_error"]
    logins = smtp.logins
    async with pool.acquire() as conn:
        await conn.execute("UPDATE alert_deliveries SET next_attempt_at = now() WHERE id = $1", row["id"])
    await run_job(pool, AlertJob(config(smtp)))  # now right: sent
    [row] = await deliveries(pool, anomaly)
    assert row["status"] == "sent" and smtp.logins == logins + 1
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT string_agg(coalesce(last_error, ''), ' ') FROM alert_deliveries")
    for secret in (SMTP_PASSWORD, wrong):
        assert secret not in caplog.text and secret not in (stored or "")
    assert "smtp://alerts@lectr.test@127.0.0.1" in caplog.text  # the server is named, without the password


async def test_send_test_alert_reports_each_channel(pool, smtp, hook):
    org = await new_org(pool, email_recipients=("t@acme.test",), webhook_url=hook.url)
    before = len(smtp.messages)
    async with pool.acquire() as conn:
        results = await send_test_alerts(conn, org, config(smtp))
    assert [(r["channel"], r["ok"]) for r in results] == [("email", True), ("webhook", True)]
    assert "[Lectr test]" in smtp.messages[before][1]["Subject"]
    assert hook.received[-1]["test"] is True and hook.received[-1]["text"].startswith("(test) Lectr alert")
    async with pool.acquire() as conn:
        failed = await send_test_alerts(conn, org, config(smtp, password="nope"))
    assert failed[0]["ok"] is False and "nope" not in failed[0]["error"]


async def clock(pool):
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT clock_timestamp()")


async def run_until(pool, job: AlertJob, done, timeout: float = 15.0) -> None:
    """Run the job turn after turn until ``done()`` (polling, as the scheduler would, faster)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done():
        assert loop.time() < deadline, "condition not reached"
        await run_job(pool, job)
        await asyncio.sleep(0.05)


async def test_an_internal_webhook_is_refused_when_set_unless_the_operator_allows_it(pool, hook):
    org = await new_org(pool)
    async with pool.acquire() as conn:
        with pytest.raises(SettingsError) as exc:
            await put_settings(conn, org, AlertSettings(webhook_url=hook.url))  # loopback
        assert exc.value.field == "webhook_url" and "a loopback address" in str(exc.value)
        assert (await get_settings(conn, org)).webhook_url is None  # nothing stored
        stored = await put_settings(conn, org, AlertSettings(webhook_url=hook.url), allow_private=True)
        assert stored.webhook_url == hook.url
