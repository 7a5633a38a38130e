"""What the anomaly pages read: hourly series from the rollups, counts and lists per org, and the
inline chart. Real PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from lectr.platform import db, partitions
from lectr.api import understand_queries as q
from lectr.dashboard.anomaly_chart import anomaly_chart_svg
from lectr.jobs.rollups import run_rollups
from lectr.api.orgs import create_org
from tests.understand_contract import insert_anomaly, insert_recommendation

HOUR = datetime(2026, 1, 5, 10, tzinfo=timezone.utc)


@pytest.fixture
async def conn(database_url):
    pool = await db.open_pool(database_url, min_size=1, max_size=1)
    async with pool.acquire() as conn:
        await partitions.ensure_partitions(conn)
        yield conn
    await pool.close()


async def _log(conn, org_id, at, *, latency=100.0, error=None, model="gpt-4o", feature="chat", cost=0.01):
    await conn.execute("""
        INSERT INTO request_logs (created_at, org_id, provider, model, model_used, feature, status_code, error_origin,
                                  stream, latency_ms, overhead_us, token_source, cost_usd, bytes_in, bytes_out)
        VALUES ($1, $2, 'openai', $3, $3, $4, $5, $6, false, $7, 1, 'provider', $8, 1, 1)""",
        at, org_id, model, feature, 500 if error else 200, error, latency, cost)


async def test_hourly_series_from_request_logs(conn):
    org_id, _ = await create_org(conn, "series")
    other, _ = await create_org(conn, "series-other")
    for i in range(10):  # hour 1: ten requests, latencies 100..1000, one provider error, one client hang-up
        await _log(conn, org_id, HOUR + timedelta(hours=1, minutes=i), latency=100.0 * (i + 1),
                   error="provider" if i == 0 else ("client" if i == 1 else None),
                   model="gpt-4.1" if i < 4 else "gpt-4o")
    await _log(conn, org_id, HOUR + timedelta(hours=2), feature="other", cost=0.5)
    await _log(conn, other, HOUR + timedelta(hours=1), cost=9.0)  # another org's row is never counted
    await _log(conn, org_id, HOUR + timedelta(hours=3))  # past the range

    await run_rollups(conn)  # the pages read the rollups, as the dashboard does

    start, end = HOUR, HOUR + timedelta(hours=3)
    requests = await q.hourly_series(conn, org_id, None, "requests", start, end)
    assert requests == [(HOUR, 0.0), (HOUR + timedelta(hours=1), 10.0), (HOUR + timedelta(hours=2), 1.0)]
    assert [v for _, v in await q.hourly_series(conn, org_id, "chat", "requests", start, end)] == [0.0, 10.0, 0.0]
    cost = [v for _, v in await q.hourly_series(conn, org_id, None, "cost", start, end)]
    assert cost == pytest.approx([0.0, 0.1, 0.5])
    errors = [v for _, v in await q.hourly_series(conn, org_id, "chat", "error_rate", start, end)]
    assert errors[0] is None and errors[1] == pytest.approx(0.1)  # the client's hang-up is not an error rate
    p95 = [v for _, v in await q.hourly_series(conn, org_id, "chat", "p95_latency", start, end)]
    # percentile_cont over 100..1000 is 955; the rollups' histogram gives it within 3.7%
    assert p95[0] is None and p95[1] == pytest.approx(955.0, rel=0.037)
    drift = [v for _, v in await q.hourly_series(conn, org_id, "chat", "model_drift", start, end, model="gpt-4.1")]
    assert drift[1] == pytest.approx(0.4)


async def test_a_long_range_is_cut_to_eight_days(conn):
    org_id, _ = await create_org(conn, "long")
    series = await q.hourly_series(conn, org_id, None, "requests", HOUR - timedelta(days=90), HOUR)
    assert len(series) == q.CHART_HOURS + 24 and series[-1][0] == HOUR - timedelta(hours=1)


async def test_anomalies_and_recommendations_stay_in_their_org(conn):
    a, _ = await create_org(conn, "lists-a")
    b, _ = await create_org(conn, "lists-b")
    opened = await insert_anomaly(conn, a)
    resolved = await insert_anomaly(conn, a, metric="requests", resolved=True)
    theirs = await insert_anomaly(conn, b)
    assert await q.open_anomaly_count(conn, a) == 1
    assert [r["id"] for r in await q.list_anomalies(conn, a)] == [opened, resolved]  # open first
    assert await q.list_anomalies(conn, a, anomaly_id=theirs) == []
    rec = await insert_recommendation(conn, b)
    assert await q.dismiss_recommendation(conn, a, rec) is False  # not a's to dismiss
    assert await q.dismiss_recommendation(conn, b, rec) is True
    assert await q.list_recommendations(conn, b) == []


def test_chart_marks_the_window_and_escapes_its_label():
    points = [(HOUR + timedelta(hours=i), float(i % 5)) for i in range(48)]
    points[10] = (points[10][0], None)  # a gap splits the line
    svg = str(anomaly_chart_svg(points, window_start=HOUR + timedelta(hours=40), window_end=HOUR + timedelta(hours=42),
                                baseline_mean=2.0, baseline_std=1.0, label="<cost> & more"))
    assert svg.count("<polyline") == 2 and 'data-testid="anomaly-window"' in svg and 'class="band"' in svg
    assert "<cost>" not in svg and "&lt;cost&gt; &amp; more" in svg
    assert "<script" not in svg
    empty = str(anomaly_chart_svg([], window_start=HOUR, window_end=HOUR, baseline_mean=None, baseline_std=None,
                                  label="x"))
    assert "No hourly data" in empty
