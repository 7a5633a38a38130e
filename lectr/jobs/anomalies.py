"""The anomaly job: hourly rollups → ``anomaly_model.evaluate`` → rows of ``anomalies``.

Every ``LECTR_ANOMALY_INTERVAL`` seconds one process (advisory lock ``ANOMALY_LOCK``) evaluates
the last complete hour for each org with rollups: the org as a whole and each feature, from
``anomaly_model.HISTORY_HOURS`` hours of ``request_rollups``. What the detector decides is
persisted so that one anomaly is one row, whatever the number of runs, workers or machines:

- opened → ``INSERT ... ON CONFLICT DO NOTHING`` (unique on org, metric, feature, window start,
  and at most one open row per org, metric, feature, direction);
- ongoing → the open row's ``window_end`` (never moved back), current value and baseline;
- resolved → ``resolved_at``.

``run_anomalies(conn, at=T)`` evaluates as if the time were ``T`` (``lectr jobs run anomalies
--at T``), so a month can be replayed hour by hour and gives what the live job would have.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from lectr.analysis import histogram as hg
from lectr.analysis.anomaly_model import (HISTORY_HOURS, AnomalyDecision, AnomalyKey, HourStats, KnownAnomaly,
                                          ScopeSeries, evaluate)

ANOMALY_LOCK = 0x4C43414E  # "LCAN"
# The detector's metric names → the column's (the contract's) names.
TO_COLUMN = {"latency_p95": "p95_latency"}
FROM_COLUMN = {v: k for k, v in TO_COLUMN.items()}
# Resolved anomalies this recent still matter: a new one of the same kind only counts later hours.
_RECENT_HOURS = 8


def hour_number(ts: datetime) -> int:
    """Hours since the epoch of the hour holding ``ts``."""
    return int(ts.timestamp()) // 3600


def hour_time(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * 3600, UTC)


def evaluated_hour(at: datetime) -> int:
    """The last hour complete at ``at`` (hours since the epoch)."""
    return hour_number(at) - 1


async def run_anomalies(conn: asyncpg.Connection, *, at: datetime | None = None) -> dict[str, int]:
    """Evaluate every org for the last hour complete at ``at`` (default now); counts of what changed.

    The caller holds ``ANOMALY_LOCK`` (the scheduler or the CLI do).
    """
    at = at or datetime.now(UTC)
    at_hour = evaluated_hour(at)
    start = at_hour - HISTORY_HOURS + 1
    org_rows = await conn.fetch("""
        SELECT o.id, o.p95_threshold_ms FROM organizations o
        WHERE EXISTS (SELECT 1 FROM request_rollups r
                      WHERE r.org_id = o.id AND r.hour >= $1 AND r.hour <= $2)
        ORDER BY o.id""", hour_time(start), hour_time(at_hour))
    counts = {"opened": 0, "ongoing": 0, "resolved": 0}
    for org in org_rows:
        scopes = await load_scopes(conn, org["id"], start, at_hour)
        known = await load_known(conn, org["id"], at_hour)
        result = evaluate(scopes, at_hour, known=known, p95_threshold_ms=org["p95_threshold_ms"])
        for decision in result.opened:
            counts["opened"] += await _open(conn, decision, at)
        for decision in result.ongoing:
            counts["ongoing"] += await _continue(conn, decision)
        for key in result.resolved:
            counts["resolved"] += await _resolve(conn, key, at)
    return counts


async def run_range(conn: asyncpg.Connection, start: datetime, end: datetime) -> int:
    """Evaluate each hour boundary from ``start`` to ``end`` (inclusive) in turn, each in its own
    transaction under ``ANOMALY_LOCK``; return the number of evaluations (a backtest)."""
    at = datetime.fromtimestamp(hour_number(start) * 3600, UTC)
    if at < start:
        at += timedelta(hours=1)
    done = 0
    while at <= end:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", ANOMALY_LOCK)
            await run_anomalies(conn, at=at)
        done += 1
        at += timedelta(hours=1)
    return done


async def load_scopes(conn: asyncpg.Connection, org_id: int, start: int, end: int) -> list[ScopeSeries]:
    """The org's series (as a whole, then each feature) for hours ``start..end`` from its rollups."""
    rows = await conn.fetch("""
        SELECT hour, feature, model_used, requests,
               errors_provider + errors_lectr + errors_client AS errors,
               cost_usd::float8 AS cost, cost_sq_usd, latency_buckets
        FROM request_rollups WHERE org_id = $1 AND hour >= $2 AND hour <= $3""",
                            org_id, hour_time(start), hour_time(end))
    n = end - start + 1
    # scope -> per hour [requests, errors, cost, cost², {bucket: count}, {model: requests}]
    acc: dict[str | None, list[list | None]] = {None: [None] * n}
    for r in rows:
        k = hour_number(r["hour"]) - start
        for scope in (None, r["feature"]):
            hours = acc.get(scope)
            if hours is None:
                hours = acc[scope] = [None] * n
            h = hours[k]
            if h is None:
                h = hours[k] = [0, 0, 0.0, 0.0, {}, {}]
            h[0] += r["requests"]
            h[1] += r["errors"]
            h[2] += r["cost"]
            h[3] += r["cost_sq_usd"]
            buckets = h[4]
            for i, c in enumerate(r["latency_buckets"]):
                if c:
                    buckets[i] = buckets.get(i, 0) + c
            if r["requests"]:
                h[5][r["model_used"]] = h[5].get(r["model_used"], 0) + r["requests"]
    out = []
    for scope in sorted(acc, key=lambda s: (s is not None, s or "")):
        out.append(ScopeSeries(org_id, scope, start, [_hour_stats(h) for h in acc[scope]]))
    return out


def _hour_stats(h: list | None) -> HourStats:
    if h is None:
        return HourStats()
    p95 = None
    if h[4]:
        counts = hg.empty()
        for i, c in h[4].items():
            counts[i] = c
        p95 = hg.quantile(counts, 0.95, spread=True)
    return HourStats(requests=h[0], errors=h[1], cost_usd=h[2], latency_p95_ms=p95, models=h[5], cost_sq_usd=h[3])


async def load_known(conn: asyncpg.Connection, org_id: int, at_hour: int) -> list[KnownAnomaly]:
    """The org's open anomalies, and those resolved within the longest window before ``at_hour``."""
    rows = await conn.fetch("""
        SELECT feature, metric, direction, window_start, window_end, resolved_at FROM anomalies
        WHERE org_id = $1 AND window_start <= $2
          AND (resolved_at IS NULL OR window_end >= $3)""",
                            org_id, hour_time(at_hour), hour_time(at_hour - _RECENT_HOURS))
    return [KnownAnomaly(AnomalyKey(org_id, r["feature"], FROM_COLUMN.get(r["metric"], r["metric"]), r["direction"]),
                         hour_number(r["window_start"]), hour_number(r["window_end"]),
                         resolved=r["resolved_at"] is not None)
            for r in rows]


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value or value in (float("inf"), float("-inf")) else value


def _detail(d: AnomalyDecision) -> str:
    return orjson.dumps(d.detail, option=orjson.OPT_NON_STR_KEYS, default=str).decode()


async def _open(conn: asyncpg.Connection, d: AnomalyDecision, at: datetime) -> int:
    k = d.key
    row_id = await conn.fetchval("""
        INSERT INTO anomalies (org_id, feature, metric, direction, window_start, window_end, current_value,
                               baseline_mean, baseline_std, deviation_sigma, detail, opened_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12)
        ON CONFLICT DO NOTHING RETURNING id""",
                                 k.org_id, k.feature, TO_COLUMN.get(k.metric, k.metric), k.direction,
                                 hour_time(d.window_start), hour_time(d.window_end), float(d.current),
                                 _finite(d.baseline_mean), _finite(d.baseline_std), _finite(d.deviation_sigma),
                                 _detail(d), at)
    return 1 if row_id is not None else 0


async def _continue(conn: asyncpg.Connection, d: AnomalyDecision) -> int:
    k = d.key
    status = await conn.execute("""
        UPDATE anomalies SET window_end = greatest(window_end, $5), current_value = $6, baseline_mean = $7,
                             baseline_std = $8, deviation_sigma = $9, detail = $10::jsonb
        WHERE org_id = $1 AND coalesce(feature, '') = coalesce($2, '') AND metric = $3 AND direction = $4
          AND resolved_at IS NULL""",
                                k.org_id, k.feature, TO_COLUMN.get(k.metric, k.metric), k.direction,
                                hour_time(d.window_end), float(d.current), _finite(d.baseline_mean),
                                _finite(d.baseline_std), _finite(d.deviation_sigma), _detail(d))
    return int(status.split()[-1])


async def _resolve(conn: asyncpg.Connection, k: AnomalyKey, at: datetime) -> int:
    status = await conn.execute("""
        UPDATE anomalies SET resolved_at = $5
        WHERE org_id = $1 AND coalesce(feature, '') = coalesce($2, '') AND metric = $3 AND direction = $4
          AND resolved_at IS NULL""", k.org_id, k.feature, TO_COLUMN.get(k.metric, k.metric), k.direction, at)
    return int(status.split()[-1])
