"""What the anomaly and recommendation pages read: one org's rows, always filtered by its id.

The tables come from migration 007; until it is applied these reads answer "none" rather than
fail, so the rest of the dashboard keeps working.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
import orjson

from lectr.analysis import histogram

CHART_HOURS = 7 * 24
FEED_LIMIT = 50
CHARTS_PER_PAGE = 12  # each chart reads up to a week of one scope: keep a page's cost bounded


async def _has(conn: asyncpg.Connection, table: str) -> bool:
    return await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)


def _decoded(row) -> dict:
    out = dict(row)
    for key in ("detail", "signals"):
        if isinstance(out.get(key), str):
            out[key] = orjson.loads(out[key])
    return out


async def open_anomaly_count(conn: asyncpg.Connection, org_id: int) -> int:
    """Open anomalies of the org, for the navigation's badge."""
    if not await _has(conn, "anomalies"):
        return 0
    return await conn.fetchval("SELECT count(*) FROM anomalies WHERE org_id = $1 AND resolved_at IS NULL", org_id)


async def list_anomalies(conn: asyncpg.Connection, org_id: int, *, anomaly_id: int | None = None,
                         limit: int = FEED_LIMIT) -> list[dict]:
    """The org's anomalies, open ones first, newest first (or just ``anomaly_id``)."""
    if not await _has(conn, "anomalies"):
        return []
    rows = await conn.fetch("""
        SELECT * FROM anomalies WHERE org_id = $1 AND ($2::bigint IS NULL OR id = $2)
        ORDER BY resolved_at IS NOT NULL, opened_at DESC, id DESC LIMIT $3""", org_id, anomaly_id, limit)
    return [_decoded(r) for r in rows]


async def list_recommendations(conn: asyncpg.Connection, org_id: int, *, state: str = "open") -> list[dict]:
    if not await _has(conn, "recommendations"):
        return []
    rows = await conn.fetch("""
        SELECT * FROM recommendations WHERE org_id = $1 AND state = $2
        ORDER BY monthly_saving_usd DESC NULLS LAST, feature, id LIMIT 100""", org_id, state)
    return [_decoded(r) for r in rows]


async def dismiss_recommendation(conn: asyncpg.Connection, org_id: int, recommendation_id: int) -> bool:
    """Dismiss one of the org's open recommendations; False when it has none with that id."""
    if not await _has(conn, "recommendations"):
        return False
    status = await conn.execute("""
        UPDATE recommendations SET state = 'dismissed', updated_at = now()
        WHERE id = $1 AND org_id = $2 AND state = 'open'""", recommendation_id, org_id)
    return status.endswith(" 1")


def _metric_expression(metric: str, rollups: bool) -> str:
    """SQL for one hour's value of ``metric`` (model drift: the share of model $5)."""
    if rollups:
        return {
            "requests": "sum(requests)::float8",
            "cost": "sum(cost_usd)::float8",
            "error_rate": "sum(errors_provider + errors_lectr)::float8 / nullif(sum(requests), 0)",
            "model_drift": "sum(requests) FILTER (WHERE model_used = $5)::float8 / nullif(sum(requests), 0)",
        }.get(metric, "NULL")
    return {
        "requests": "count(*)::float8",
        "cost": "coalesce(sum(cost_usd), 0)::float8",
        "error_rate": "(count(*) FILTER (WHERE error_origin IN ('provider', 'lectr')))::float8 / count(*)",
        "model_drift": "(count(*) FILTER (WHERE coalesce(model_used, model) = $5))::float8 / count(*)",
        "p95_latency": "percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)",
        "latency_p95": "percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)",
        "latency_threshold": "percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)",
    }.get(metric, "NULL")


_LATENCY = ("p95_latency", "latency_p95", "latency_threshold")


async def hourly_series(conn: asyncpg.Connection, org_id: int, feature: str | None, metric: str,
                        start: datetime, end: datetime, *, model: str | None = None) -> list[tuple[datetime, float | None]]:
    """(hour, value) for each hour in [start, end) of the org (``feature`` None) or one feature.

    Read from ``request_rollups`` when it exists (migration 006), else from ``request_logs``
    grouped by hour; either way bounded by the range, at most ``CHART_HOURS`` hours.
    """
    if (end - start) > timedelta(hours=CHART_HOURS + 24):
        start = end - timedelta(hours=CHART_HOURS + 24)
    rollups = await _has(conn, "request_rollups")
    if rollups and metric in _LATENCY:
        rows = await conn.fetch("""
            SELECT hour, array_agg(latency_buckets) AS buckets FROM request_rollups
            WHERE org_id = $1 AND hour >= $2 AND hour < $3 AND ($4::text IS NULL OR feature = $4)
            GROUP BY hour""", org_id, start, end, feature)
        values = {r["hour"]: histogram.quantile(histogram.merge(*r["buckets"]), 0.95) for r in rows}
    else:
        table, hour = ("request_rollups", "hour") if rollups else ("request_logs", "date_trunc('hour', created_at, 'UTC')")
        column = "hour" if rollups else "created_at"
        rows = await conn.fetch(f"""
            SELECT {hour} AS hour, {_metric_expression(metric, rollups)} AS value FROM {table}
            WHERE org_id = $1 AND {column} >= $2 AND {column} < $3 AND ($4::text IS NULL OR feature = $4)
              AND ($5::text IS NULL OR true)
            GROUP BY 1""", org_id, start, end, feature, model)
        values = {r["hour"]: r["value"] for r in rows}
    out = []
    t = start
    while t < end:
        value = values.get(t)
        if value is None and metric in ("requests", "cost"):
            value = 0.0
        out.append((t, value))
        t += timedelta(hours=1)
    return out
