"""The dashboard aggregator: ``request_logs`` → one ``dashboard_summaries`` row per org per period.

Each period (last 24 hours, 7 days, 30 days) is compared with the period of equal length
before it. A handful of grouped queries cover every org at once; the rows are assembled here
and upserted together, so the dashboard reads one row per page and never aggregates on load.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import asyncpg
import orjson

from lectr.analysis import histogram
from lectr.jobs.rollups import KEY, MEASURES, merged_histogram, rollup_select, run_rollups

log = logging.getLogger(__name__)
# The aggregator runs on a proxy worker's event loop: it yields after this many orgs' worth of
# assembly, so a request never waits behind more than about a millisecond of it.
_ORGS_PER_SLICE = 25


@dataclass(frozen=True, slots=True)
class Period:
    name: str
    length: timedelta
    bucket: timedelta  # width of one point of the time series


PERIODS = (
    Period("last_24h", timedelta(hours=24), timedelta(hours=1)),
    Period("last_7d", timedelta(days=7), timedelta(hours=6)),
    Period("last_30d", timedelta(days=30), timedelta(days=1)),
)
PERIOD_NAMES = tuple(p.name for p in PERIODS)

# Every bucket starts on a whole hour (or day) in UTC, so chart ticks fall on whole hours and days.
BUCKET_ORIGIN = datetime(2000, 1, 1, tzinfo=timezone.utc)
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)

# Figures come from request_rollups_daily for the whole days of a window, request_rollups for
# its other whole hours and request_logs for the part-hours at its edges, so every count and sum
# is what a scan of the raw rows gives, at the cost of at most four part-hours of raw rows.
# $1 previous start, $2 start, $3 now; each window [lo, hi) is cut at H1 = lo's next whole hour,
# D1 = lo's next whole day, D2 = hi's day and H2 = hi's hour: raw [lo, H1) and [H2, hi), hours
# [H1, D1) and [D2, H2), days [D1, D2). Previous window: $4 H1, $5 H2, $8 D1, $9 D2; current:
# $6 H1, $7 H2, $10 D1, $11 D2 (D1 = D2 = H2 when no whole day is read).
_COLUMNS = ", ".join(KEY + MEASURES)
_DAY_COLUMNS = _COLUMNS.replace("hour", "day AS hour", 1)
_SOURCE = f"""
WITH src AS (
    SELECT {_COLUMNS}, false AS current FROM request_rollups WHERE hour >= $4 AND hour < $8
    UNION ALL
    SELECT {_COLUMNS}, false FROM request_rollups WHERE hour >= $9 AND hour < $5
    UNION ALL
    SELECT {_COLUMNS}, true FROM request_rollups WHERE hour >= $6 AND hour < $10
    UNION ALL
    SELECT {_COLUMNS}, true FROM request_rollups WHERE hour >= $11 AND hour < $7
    UNION ALL
    SELECT {_DAY_COLUMNS}, false FROM request_rollups_daily WHERE day >= $8 AND day < $9
    UNION ALL
    SELECT {_DAY_COLUMNS}, true FROM request_rollups_daily WHERE day >= $10 AND day < $11
    UNION ALL
    SELECT *, false FROM ({rollup_select("request_logs l WHERE l.created_at >= $1 AND l.created_at < $2 "
                                         "AND (l.created_at < $4 OR l.created_at >= $5)")}) previous_edges
    UNION ALL
    SELECT *, true FROM ({rollup_select("request_logs l WHERE l.created_at >= $2 AND l.created_at < $3 "
                                        "AND (l.created_at < $6 OR l.created_at >= $7)")}) current_edges
)"""


# Each period's source rows are first merged into one row per org, window, feature, provider,
# model and chart bucket (the finest grain any figure needs); every figure is then grouped from
# those few rows, so the histograms of the many rollup rows are added up once, not once a figure.
_STAGE = "lectr_aggregator_stage"
_MERGE_MEMORY = "256MB"
_STAGE_TABLE = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (
    org_id bigint, current boolean, feature text, provider text, model_used text, bucket timestamptz,
    requests bigint, errors bigint, cost_usd numeric, prompt_tokens bigint, completion_tokens bigint,
    latency_ms_sum float8, latency_buckets int[], ttfb_count bigint, ttfb_ms_sum float8, ttfb_buckets int[],
    measured_requests bigint, partial_cost_requests bigint, unpriced_requests bigint, unread_requests bigint,
    provider_fault_errors bigint, connection_errors bigint, lectr_fault_errors bigint);
TRUNCATE {_STAGE}"""
_STAGE_SUMS = ("requests", "errors", "cost_usd", "prompt_tokens", "completion_tokens", "latency_ms_sum",
               "latency_buckets", "ttfb_count", "ttfb_ms_sum", "ttfb_buckets", "measured_requests",
               "partial_cost_requests", "unpriced_requests", "unread_requests", "provider_fault_errors",
               "connection_errors", "lectr_fault_errors")


def _summed(columns: tuple[str, ...]) -> str:
    return ", ".join(merged_histogram(c) if c.endswith("_buckets") else f"sum({c})" for c in columns)


_FILL_STAGE = f"""{_SOURCE}
INSERT INTO {_STAGE}
SELECT org_id, current, feature, provider, model_used, CASE WHEN current THEN date_bin($12, hour, $13) END,
       {_summed(_STAGE_SUMS)}
FROM src GROUP BY 1, 2, 3, 4, 5, 6"""

_LATENCY = f"""
    sum(latency_ms_sum) / nullif(sum(requests), 0) AS latency_avg_ms,
    {merged_histogram("latency_buckets")} AS latency_buckets"""

_TOTALS = f"""
SELECT org_id, current,
       sum(requests)::bigint AS requests,
       sum(errors)::bigint AS errors,
       coalesce(sum(cost_usd), 0)::float8 AS cost_usd,
       coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens,
       {_LATENCY},
       sum(ttfb_ms_sum) / nullif(sum(ttfb_count), 0) AS ttfb_avg_ms,
       {merged_histogram("ttfb_buckets")} AS ttfb_buckets,
       sum(measured_requests)::bigint AS measured_requests,
       sum(partial_cost_requests)::bigint AS partial_cost_requests,
       sum(unpriced_requests)::bigint AS unpriced_requests,
       sum(unread_requests)::bigint AS unread_requests
FROM {_STAGE}
GROUP BY org_id, current"""

_MODELS = f"""
SELECT org_id, nullif(model_used, '') AS model, provider, sum(requests)::bigint AS requests,
       sum(errors)::bigint AS errors,
       coalesce(sum(cost_usd), 0)::float8 AS cost_usd, {_LATENCY},
       coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint AS tokens,
       sum(unpriced_requests)::bigint AS unpriced_requests
FROM {_STAGE} WHERE current
GROUP BY org_id, model_used, provider"""

_PROVIDERS = f"""
SELECT org_id, provider, current, sum(requests)::bigint AS requests,
       sum(errors)::bigint AS errors,
       coalesce(sum(cost_usd), 0)::float8 AS cost_usd,
       {merged_histogram("latency_buckets")} AS latency_buckets,
       sum(unpriced_requests)::bigint AS unpriced_requests,
       sum(provider_fault_errors)::bigint AS provider_errors,
       sum(connection_errors)::bigint AS connection_errors,
       sum(lectr_fault_errors)::bigint AS lectr_errors
FROM {_STAGE}
GROUP BY org_id, provider, current"""

_FEATURES = f"""
SELECT org_id, feature, sum(requests)::bigint AS requests,
       sum(errors)::bigint AS errors,
       coalesce(sum(cost_usd), 0)::float8 AS cost_usd, {_LATENCY},
       coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint AS tokens,
       sum(unpriced_requests)::bigint AS unpriced_requests
FROM {_STAGE} WHERE current
GROUP BY org_id, feature"""

_SERIES = f"""
SELECT org_id, bucket, sum(requests)::bigint AS requests,
       sum(errors)::bigint AS errors,
       coalesce(sum(cost_usd), 0)::float8 AS cost_usd,
       {merged_histogram("latency_buckets")} AS latency_buckets
FROM {_STAGE} WHERE current
GROUP BY org_id, bucket"""

_DROPS = """
SELECT org_id, sum(count)::bigint AS dropped FROM event_drops
WHERE minute >= $1 AND minute < $2 GROUP BY org_id"""

_UPSERT = """
INSERT INTO dashboard_summaries (org_id, period, computed_at, data) VALUES ($1, $2, $3, $4::jsonb)
ON CONFLICT (org_id, period) DO UPDATE SET computed_at = EXCLUDED.computed_at, data = EXCLUDED.data"""

_TOTAL_KEYS = ("requests", "errors", "cost_usd", "prompt_tokens", "completion_tokens", "latency_avg_ms",
               "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "ttfb_avg_ms", "ttfb_p95_ms",
               "measured_requests", "partial_cost_requests", "unpriced_requests", "unread_requests")


def _totals(row: dict | None) -> dict:
    values = {k: (row[k] if row is not None else None) for k in _TOTAL_KEYS}
    for key in ("requests", "errors", "prompt_tokens", "completion_tokens", "measured_requests",
                "partial_cost_requests", "unpriced_requests", "unread_requests"):
        values[key] = int(values[key] or 0)
    values["cost_usd"] = float(values["cost_usd"] or 0.0)
    values["total_tokens"] = values["prompt_tokens"] + values["completion_tokens"]
    values["error_rate"] = values["errors"] / values["requests"] if values["requests"] else 0.0
    return values


def _rate(errors: int, requests: int) -> float:
    return errors / requests if requests else 0.0


def _iso(at: datetime) -> str:
    return at.isoformat()


def _floor_hour(at: datetime) -> datetime:
    return BUCKET_ORIGIN + (at - BUCKET_ORIGIN) // _HOUR * _HOUR


def _ceil_hour(at: datetime) -> datetime:
    floor = _floor_hour(at)
    return floor if floor == at else floor + _HOUR


def _floor_day(at: datetime) -> datetime:
    return BUCKET_ORIGIN + (at - BUCKET_ORIGIN) // _DAY * _DAY


def _cuts(lo: datetime, hi: datetime, whole_days: bool) -> tuple[datetime, datetime, datetime, datetime]:
    """``(H1, H2, D1, D2)`` of the window [lo, hi) (see _SOURCE); D1 = D2 = H2 without days."""
    h1, h2 = _ceil_hour(lo), _floor_hour(hi)
    d1, d2 = _floor_day(lo), _floor_day(hi)
    if d1 != lo:
        d1 += _DAY
    if not whole_days or d1 >= d2 or h1 > h2:
        d1 = d2 = h2
    return h1, h2, d1, d2


def _with_percentiles(row: asyncpg.Record) -> dict:
    """A row as a dict, its merged histograms read as the percentiles the dashboard shows (ms)."""
    values = dict(row)
    counts = values.pop("latency_buckets", None)
    if counts is not None:
        values["latency_p50_ms"], values["latency_p95_ms"], values["latency_p99_ms"] = histogram.quantiles(
            counts, (0.5, 0.95, 0.99))
    counts = values.pop("ttfb_buckets", None)
    if counts is not None:
        values["ttfb_p95_ms"] = histogram.quantile(counts, 0.95)
    return values


async def summarize_period(conn: asyncpg.Connection, period: Period, now: datetime,
                           org_ids: list[int]) -> dict[int, dict]:
    """The summary of ``period`` ending at ``now`` for every org in ``org_ids``."""
    start, previous_start = now - period.length, now - 2 * period.length

    async def fetch(query: str) -> list[dict]:
        return [_with_percentiles(r) for r in await conn.fetch(query)]

    # The previous window feeds no chart: whole days serve it; the current one's chart buckets
    # shorter than a day need its hours.
    ph1, ph2, pd1, pd2 = _cuts(previous_start, start, True)
    ch1, ch2, cd1, cd2 = _cuts(start, now, period.bucket % _DAY == timedelta(0))
    await conn.execute(_STAGE_TABLE)
    async with conn.transaction():
        # Room to merge the histograms in memory (a hash per group) rather than sort wide rows on disk.
        await conn.execute(f"SET LOCAL work_mem = '{_MERGE_MEMORY}'")
        await conn.execute(_FILL_STAGE, previous_start, start, now, ph1, ph2, ch1, ch2, pd1, pd2, cd1, cd2,
                           period.bucket, BUCKET_ORIGIN)
    totals = {(r["org_id"], r["current"]): r for r in await fetch(_TOTALS)}
    by_org: dict[int, dict] = {org_id: {
        "period": period.name, "computed_at": _iso(now),
        "window": {"start": _iso(start), "end": _iso(now)},
        "previous_window": {"start": _iso(previous_start), "end": _iso(start)},
        "totals": _totals(totals.get((org_id, True))), "previous": _totals(totals.get((org_id, False))),
        "models": [], "providers": [], "features": [], "dropped_events": 0,
        "series": {"bucket_seconds": int(period.bucket.total_seconds()), "points": []},
    } for org_id in org_ids}

    for r in await fetch(_MODELS):
        if r["org_id"] in by_org:
            by_org[r["org_id"]]["models"].append({k: r[k] for k in (
                "model", "provider", "requests", "errors", "cost_usd", "latency_avg_ms", "latency_p95_ms", "tokens",
                "unpriced_requests")})
    _add_providers(by_org, await fetch(_PROVIDERS))
    for r in await fetch(_FEATURES):
        if r["org_id"] in by_org:
            entry = {k: r[k] for k in ("feature", "requests", "errors", "cost_usd", "latency_avg_ms",
                                       "latency_p95_ms", "tokens", "unpriced_requests")}
            entry["error_rate"] = _rate(r["errors"], r["requests"])
            by_org[r["org_id"]]["features"].append(entry)
    await _add_series(by_org, await fetch(_SERIES), start, now, period.bucket)
    for r in await conn.fetch(_DROPS, start, now):
        if r["org_id"] in by_org:
            by_org[r["org_id"]]["dropped_events"] = int(r["dropped"])

    for summary in by_org.values():
        for key in ("models", "features"):
            summary[key].sort(key=lambda e: (-e["cost_usd"], -e["requests"]))
        summary["providers"].sort(key=lambda e: (-e["cost_usd"], -e["requests"]))
    return by_org


def _add_providers(by_org: dict[int, dict], rows: list) -> None:
    merged: dict[tuple[int, str], dict] = {}
    for r in rows:
        if r["org_id"] not in by_org:
            continue
        entry = merged.setdefault((r["org_id"], r["provider"]), {
            "provider": r["provider"], "requests": 0, "errors": 0, "error_rate": 0.0, "cost_usd": 0.0,
            "previous_cost_usd": 0.0, "latency_p95_ms": None, "unpriced_requests": 0, "previous_unpriced_requests": 0,
            "provider_errors": 0, "provider_error_rate": 0.0, "connection_errors": 0, "lectr_errors": 0,
            "client_errors": 0})
        if r["current"]:
            entry.update(requests=r["requests"], errors=r["errors"], cost_usd=r["cost_usd"],
                         error_rate=_rate(r["errors"], r["requests"]), latency_p95_ms=r["latency_p95_ms"],
                         unpriced_requests=r["unpriced_requests"], provider_errors=r["provider_errors"],
                         provider_error_rate=_rate(r["provider_errors"], r["requests"]),
                         connection_errors=r["connection_errors"], lectr_errors=r["lectr_errors"],
                         client_errors=r["errors"] - r["provider_errors"] - r["connection_errors"]
                         - r["lectr_errors"])
        else:
            entry.update(previous_cost_usd=r["cost_usd"], previous_unpriced_requests=r["unpriced_requests"])
    for (org_id, _), entry in merged.items():
        if entry["requests"] or entry["previous_cost_usd"] or entry["previous_unpriced_requests"]:
            by_org[org_id]["providers"].append(entry)


async def _add_series(by_org: dict[int, dict], rows: list, start: datetime, end: datetime,
                      bucket: timedelta) -> None:
    found = {(r["org_id"], r["bucket"]): r for r in rows}
    edges = []
    at = BUCKET_ORIGIN + (start - BUCKET_ORIGIN) // bucket * bucket  # the whole hour (or day) it falls in
    while at < end:
        edges.append((at, _iso(at)))
        at += bucket
    for n, (org_id, summary) in enumerate(by_org.items(), 1):
        points = summary["series"]["points"]
        for edge, start_iso in edges:
            r = found.get((org_id, edge))
            if r is None:
                points.append({"start": start_iso, "requests": 0, "errors": 0, "cost_usd": 0.0,
                               "latency_p95_ms": None})
            else:
                points.append({"start": start_iso, "requests": r["requests"], "errors": r["errors"],
                               "cost_usd": r["cost_usd"], "latency_p95_ms": r["latency_p95_ms"]})
        if n % _ORGS_PER_SLICE == 0:
            await asyncio.sleep(0)


async def run_aggregator(conn: asyncpg.Connection, now: datetime | None = None) -> int:
    """Recompute every org's summaries; returns the number of rows written.

    Brings the hourly rollups up to date first, so the summaries are as fresh as the raw rows.
    """
    now = now or datetime.now(timezone.utc)
    await run_rollups(conn)
    org_ids = [r["id"] for r in await conn.fetch("SELECT id FROM organizations ORDER BY id")]
    rows = []
    for period in PERIODS:
        summaries = await summarize_period(conn, period, now, org_ids)
        for n, (org_id, summary) in enumerate(summaries.items(), 1):
            rows.append((org_id, period.name, now, orjson.dumps(summary).decode()))
            if n % _ORGS_PER_SLICE == 0:
                await asyncio.sleep(0)
    await conn.executemany(_UPSERT, rows)
    log.debug("aggregator wrote %d summaries", len(rows))
    return len(rows)
