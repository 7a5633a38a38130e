"""The dashboard aggregator: the rollups (and the raw rows at a window's edges) → one ``dashboard_summaries`` row per org per period.

Each period (last 24 hours, 7 days, 30 days) is compared with the period of equal length
before it. A handful of grouped queries cover every org at once; the rows are assembled here
and upserted together, so the dashboard reads one row per page and never aggregates on load.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone

import asyncpg
import orjson

from lectr.analysis import histogram
from lectr.analysis.summary import PERIOD_NAMES, PERIODS, Period  # noqa: F401 -- the one summary shape
from lectr.jobs.rollups import merged_histogram, run_rollups
from lectr.jobs.windows import BUCKET_ORIGIN, HOUR, LEVELS, Edges, bucket_ceil, bucket_floor, source

log = logging.getLogger(__name__)
# The aggregator runs in the cold process, beside the admin listener: it yields after this many
# orgs' worth of assembly, so an API or dashboard request never waits long behind it.
_ORGS_PER_SLICE = 25

# Each period's source rows are merged into the stage: one row per org, window, feature, provider
# and model (a combination), from the coarsest levels; and one per org and chart point of the
# current window (``point``), from the levels its points allow. Totals, models, providers and
# features are grouped from the few combinations. The cost of a merged histogram is mostly per
# source row (187 sums for each), so each grouping reads as few rows as its figures allow.
_STAGE = "lectr_aggregator_stage"
_MERGE_MEMORY = "256MB"
_STAGE_TABLE = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (
    org_id bigint, current boolean, point boolean, feature text, provider text, model_used text, bucket timestamptz,
    requests bigint, errors bigint, cost_usd numeric, prompt_tokens bigint, completion_tokens bigint,
    latency_ms_sum float8, latency_buckets int[], ttfb_count bigint, ttfb_ms_sum float8,
    measured_requests bigint, partial_cost_requests bigint, unpriced_requests bigint, unread_requests bigint,
    provider_fault_errors bigint, connection_errors bigint, lectr_fault_errors bigint, ttfb_buckets int[]);
TRUNCATE {_STAGE}"""
_STAGE_SUMS = ("requests", "errors", "cost_usd", "prompt_tokens", "completion_tokens", "latency_ms_sum",
               "latency_buckets", "ttfb_count", "ttfb_ms_sum", "measured_requests",
               "partial_cost_requests", "unpriced_requests", "unread_requests", "provider_fault_errors",
               "connection_errors", "lectr_fault_errors")
# Time to first byte only feeds the totals: the combinations carry its histogram, the points not.
_COMBINATION_SUMS = _STAGE_SUMS + ("ttfb_buckets",)


def _summed(columns: tuple[str, ...]) -> str:
    return ", ".join(merged_histogram(c) if c.endswith("_buckets") else f"sum({c})" for c in columns)


def _fill_stage(combinations: list[tuple[bool, datetime, datetime, tuple]],
                points: list[tuple[bool, datetime, datetime, tuple]], bucket: timedelta, edges: Edges,
                present: datetime) -> tuple[str, list]:
    """The statement filling the stage with the combinations of ``combinations`` and the chart
    points of ``points``, and its arguments."""
    args: list = [bucket, BUCKET_ORIGIN]
    by_combination = source(combinations, ("org_id", "feature", "provider", "model_used") + _COMBINATION_SUMS,
                             args, edges, present)
    by_point = source(points, ("org_id", "hour") + _STAGE_SUMS, args, edges, present)
    return f"""
INSERT INTO {_STAGE} (org_id, current, point, feature, provider, model_used, bucket, {', '.join(_COMBINATION_SUMS)})
SELECT org_id, current, false, feature, provider, model_used, NULL, {_summed(_COMBINATION_SUMS)}
FROM (
    {by_combination}
) src
GROUP BY org_id, current, feature, provider, model_used
UNION ALL
SELECT org_id, true, true, NULL, NULL, NULL, date_bin($1, hour, $2), {_summed(_STAGE_SUMS)}, NULL
FROM (
    {by_point}
) src
GROUP BY org_id, date_bin($1, hour, $2)""", args


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
FROM {_STAGE} WHERE NOT point
GROUP BY org_id, current"""

_MODELS = f"""
SELECT org_id, nullif(model_used, '') AS model, provider, sum(requests)::bigint AS requests,
       sum(errors)::bigint AS errors,
       coalesce(sum(cost_usd), 0)::float8 AS cost_usd, {_LATENCY},
       coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint AS tokens,
       sum(unpriced_requests)::bigint AS unpriced_requests
FROM {_STAGE} WHERE NOT point AND current
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
FROM {_STAGE} WHERE NOT point
GROUP BY org_id, provider, current"""

_FEATURES = f"""
SELECT org_id, feature, sum(requests)::bigint AS requests,
       sum(errors)::bigint AS errors,
       coalesce(sum(cost_usd), 0)::float8 AS cost_usd, {_LATENCY},
       coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint AS tokens,
       sum(unpriced_requests)::bigint AS unpriced_requests
FROM {_STAGE} WHERE NOT point AND current
GROUP BY org_id, feature"""

_SERIES = f"""
SELECT org_id, bucket, requests, errors, coalesce(cost_usd, 0)::float8 AS cost_usd, latency_buckets
FROM {_STAGE} WHERE point AND current"""

_WHOLE_POINTS = """
SELECT org_id, start AS bucket, requests, errors, cost_usd::float8, latency_p95_ms FROM rollup_points
WHERE bucket_hours = $1 AND start >= $2 AND start < $3"""

_DROPS = """
SELECT org_id, sum(count)::bigint AS dropped FROM event_drops
WHERE minute >= $1 AND minute < $2 GROUP BY org_id"""

# One statement for every summary of a run (arrays of org ids, periods and JSON texts).
_UPSERT = """
INSERT INTO dashboard_summaries (org_id, period, computed_at, data)
SELECT org_id, period, $3, data::jsonb FROM unnest($1::bigint[], $2::text[], $4::text[]) AS s(org_id, period, data)
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


async def summarize_period(conn: asyncpg.Connection, period: Period, now: datetime, org_ids: list[int],
                           edges: Edges | None = None) -> dict[int, dict]:
    """The summary of ``period`` ending at ``now`` for every org in ``org_ids``; ``edges`` shares
    the raw part-hours a run reads between its periods."""
    start, previous_start = now - period.length, now - 2 * period.length
    edges = edges if edges is not None else Edges()
    present = max(now, datetime.now(timezone.utc))

    async def fetch(query: str) -> list[dict]:
        return [_with_percentiles(r) for r in await conn.fetch(query)]

    # The combinations (with time to first byte) come from every level. The chart's whole points
    # are the rollups job's (rollup_points); the part-points at either end are merged here, from
    # levels no longer than a point (a window within two points is all part-points).
    windows = [(False, previous_start, start, LEVELS), (True, start, now, LEVELS)]
    chart_levels = tuple(level for level in LEVELS if period.bucket % level[0] == timedelta(0))
    whole_start, whole_end = bucket_ceil(start, period.bucket), bucket_floor(now, period.bucket)
    if whole_start >= whole_end:
        whole_start = whole_end = start
    parts = [(True, start, whole_start, chart_levels), (True, whole_end, now, chart_levels)]
    fill, fill_args = _fill_stage(windows, parts, period.bucket, edges, present)
    await conn.execute(_STAGE_TABLE)
    async with conn.transaction():
        # Room to merge the histograms in memory (a hash per group) rather than sort wide rows on disk.
        await conn.execute(f"SET LOCAL work_mem = '{_MERGE_MEMORY}'")
        await edges.store(conn)
        await conn.execute(fill, *fill_args)
        totals = {(r["org_id"], r["current"]): r for r in await fetch(_TOTALS)}
        models, providers, features = await fetch(_MODELS), await fetch(_PROVIDERS), await fetch(_FEATURES)
        series = [dict(r, latency_p95_ms=histogram.quantile(r["latency_buckets"], 0.95))  # a point shows its p95
                  for r in await conn.fetch(_SERIES)]
        series += await conn.fetch(_WHOLE_POINTS, period.bucket // HOUR, whole_start, whole_end)
    by_org: dict[int, dict] = {org_id: {
        "period": period.name, "computed_at": _iso(now),
        "window": {"start": _iso(start), "end": _iso(now)},
        "previous_window": {"start": _iso(previous_start), "end": _iso(start)},
        "totals": _totals(totals.get((org_id, True))), "previous": _totals(totals.get((org_id, False))),
        "models": [], "providers": [], "features": [], "dropped_events": 0,
        "series": {"bucket_seconds": int(period.bucket.total_seconds()), "points": []},
    } for org_id in org_ids}

    for r in models:
        if r["org_id"] in by_org:
            by_org[r["org_id"]]["models"].append({k: r[k] for k in (
                "model", "provider", "requests", "errors", "cost_usd", "latency_avg_ms", "latency_p95_ms", "tokens",
                "unpriced_requests")})
    _add_providers(by_org, providers)
    for r in features:
        if r["org_id"] in by_org:
            entry = {k: r[k] for k in ("feature", "requests", "errors", "cost_usd", "latency_avg_ms",
                                       "latency_p95_ms", "tokens", "unpriced_requests")}
            entry["error_rate"] = _rate(r["errors"], r["requests"])
            by_org[r["org_id"]]["features"].append(entry)
    await _add_series(by_org, series, start, now, period.bucket)
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
    at = bucket_floor(start, bucket)  # the whole hour (or day) it falls in
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
    edges = Edges()
    for period in PERIODS:
        summaries = await summarize_period(conn, period, now, org_ids, edges)
        for n, (org_id, summary) in enumerate(summaries.items(), 1):
            rows.append((org_id, period.name, orjson.dumps(summary).decode()))
            if n % _ORGS_PER_SLICE == 0:
                await asyncio.sleep(0)
    org_ids, periods, texts = zip(*rows) if rows else ((), (), ())
    await conn.execute(_UPSERT, list(org_ids), list(periods), now, list(texts))
    log.debug("aggregator wrote %d summaries", len(rows))
    return len(rows)
