"""Two ``lectr serve`` instances on one Postgres run the understanding jobs together: each anomaly
is recorded once and alerted once (one mail per recipient, one webhook call), however many turns
of the rollups, anomaly and alert jobs both instances take.

The history is written into ``request_logs`` as rows that arrive late (as a replayed spool brings
them): eight quiet days of a feature, then one hour in which half its requests failed. Each
instance's cold process folds them into the rollups, evaluates the last complete hour and
delivers to a real SMTP server (aiosmtpd) and a real webhook receiver on loopback.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from lectr.platform import partitions
from lectr.recording.rows import COLUMNS
from tests.alert_servers import ThreadedReceiver, start_smtp
from tests.conftest import create_org, lectr_env, run_cli, start_lectr, stop_lectr

ORG = "two-instances-understand"
FEATURE = "checkout"
PER_HOUR = 120
QUIET_TURNS_S = 4.0  # both instances take about a dozen turns of every job in this time


def _row(at: datetime, org_id: int, *, failed: bool, latency_ms: float) -> tuple:
    values = dict(created_at=at, org_id=org_id, provider="openai", model="gpt-4o-mini", model_used="gpt-4o-mini",
                  feature=FEATURE, task="classification", status_code=500 if failed else 200,
                  error_type="upstream_error" if failed else None, error_origin="provider" if failed else None,
                  stream=False, latency_ms=latency_ms, ttfb_ms=latency_ms / 2, overhead_us=80,
                  prompt_tokens=None if failed else 300, completion_tokens=None if failed else 20,
                  cached_tokens=None, reasoning_tokens=None, token_source="none" if failed else "provider",
                  cost_usd=None, cost_partial=False, pricing_id=None, provider_unknown=False, rule_id=None,
                  bytes_in=900, bytes_out=600, usage_note=None)
    return tuple(values[c] for c in COLUMNS)


async def _write_history(url: str, org_id: int, last_hour: datetime) -> None:
    """Eight quiet days (about 1% errors, steady latency), then ``last_hour`` with half failing."""
    rows = []
    for h in range(8 * 24, 0, -1):
        start = last_hour - timedelta(hours=h)
        for i in range(PER_HOUR):
            rows.append(_row(start + timedelta(seconds=i * 3600 / PER_HOUR), org_id, failed=(i + h) % 90 == 0,
                             latency_ms=400 + (i * 37 + h * 11) % 200))
    for i in range(PER_HOUR):
        rows.append(_row(last_hour + timedelta(seconds=i * 3600 / PER_HOUR), org_id, failed=i % 2 == 0,
                         latency_ms=400 + (i * 37) % 200))
    conn = await asyncpg.connect(url)
    try:
        await partitions.ensure_partitions(conn)  # the old days land in the default partition
        await conn.copy_records_to_table("request_logs", records=rows, columns=COLUMNS)
    finally:
        await conn.close()


async def _anomalies(url: str, org_id: int) -> list:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch("SELECT id, feature, metric, direction, window_start, window_end FROM anomalies "
                                "WHERE org_id = $1 ORDER BY id", org_id)
    finally:
        await conn.close()


async def _org_id(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT id FROM organizations WHERE name = $1", ORG)
    finally:
        await conn.close()


@pytest.fixture()
def servers():
    smtp, hook = start_smtp(), ThreadedReceiver()
    yield smtp, hook
    hook.stop()
    smtp.controller.stop()


def test_two_instances_record_and_alert_each_anomaly_once(database_url, mock, tmp_path, servers):
    smtp, hook = servers
    jobs = dict(LECTR_ROLLUP_INTERVAL="0.3", LECTR_ANOMALY_INTERVAL="0.3", LECTR_ALERT_INTERVAL="0.2",
                LECTR_SMTP_URL=smtp.url(), LECTR_ALERT_FROM="lectr@alerts.test",
                LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE="1")
    envs = [lectr_env(database_url, mock, tmp_path / name, **jobs) for name in ("a", "b")]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    create_org(envs[0], ORG)
    run_cli(envs[0], "alerts", "set", ORG, "--email", "oncall@two.test,lead@two.test", "--webhook", hook.url)
    org_id = asyncio.run(_org_id(database_url))
    last_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    asyncio.run(_write_history(database_url, org_id, last_hour))

    instances = [start_lectr(env, tmp_path / f"{name}.log") for env, name in zip(envs, ("a", "b"))]
    try:
        deadline = time.monotonic() + 60
        while not any(call.get("org_id") == org_id or ORG in call.get("text", "") for call in hook.received):
            assert time.monotonic() < deadline, "no alert was delivered:\n" + instances[0].log_text()[-3000:]
            time.sleep(0.1)
        time.sleep(QUIET_TURNS_S)  # an absence: let both instances take many more turns of every job

        anomalies = asyncio.run(_anomalies(database_url, org_id))
        error_rate = [a for a in anomalies if a["metric"] == "error_rate" and a["direction"] == "up"]
        assert error_rate, anomalies
        assert all(a["window_end"] >= last_hour for a in error_rate)
        # once: no two rows for one (scope, metric, direction) opened over the same hour
        keys = [(a["feature"], a["metric"], a["direction"], a["window_start"]) for a in anomalies]
        assert len(keys) == len(set(keys)), anomalies

        ours = [call for call in hook.received if ORG in call.get("text", "")]
        assert sorted(call["id"] for call in ours) == sorted(a["id"] for a in anomalies)
        mails = [rcpts for rcpts, msg in smtp.messages if ORG in msg["Subject"]]
        assert sorted(r for rcpts in mails for r in rcpts) == sorted(
            ["oncall@two.test", "lead@two.test"] * len(anomalies))
    finally:
        codes = [stop_lectr(server) for server in instances]
    assert codes == [0, 0]
