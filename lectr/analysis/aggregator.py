"""The dashboard aggregator: ``request_logs`` → one ``dashboard_summaries`` row per org per period.

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

from lectr.analysis.summary import (ERROR_CONDITION, FEATURE_ROW, MODEL_ROW, PERIOD_NAMES, PERIODS,  # noqa: F401
                                   TOTALS, Period)

log = logging.getLogger(__name__)
# The aggregator runs on the cold process's event loop, beside the admin listener: it yields
# after this many orgs' worth of assembly, so an API call never waits long behind it.
_ORGS_PER_SLICE = 25



_ERROR = ERROR_CONDITION
# Cost unknown, not zero: tokens were counted (or the provider answered) but no price was found.
_UNPRICED = "(cost_usd IS NULL AND (token_source <> 'none' OR status_code BETWEEN 200 AND 399))"
# A provider's health counts only what the provider caused: its 5xx, 408 and 429 answers and
# streams it broke off. A client's 4xx (bad request, unknown model, wrong key), Lectr's own
# refusals and connections Lectr could not make are counted apart.
_CONNECTION = "(error_origin = 'lectr' AND error_type IN ('upstream_unreachable', 'upstream_timeout'))"
_PROVIDER_FAULT = ("(error_origin = 'provider' AND NOT (status_code BETWEEN 400 AND 499 "
                   "AND status_code NOT IN (408, 429)))")
_LECTR_FAULT = f"(error_origin = 'lectr' AND NOT {_CONNECTION})"
# Every bucket starts on a whole hour (or day) in UTC, so chart ticks fall on whole hours and days.
BUCKET_ORIGIN = datetime(2000, 1, 1, tzinfo=timezone.utc)
_LATENCY = """
    avg(latency_ms) AS latency_avg_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS latency_p95_ms"""

_TOTALS = f"""
SELECT org_id, created_at >= $2 AS current,
       count(*) AS requests,
       count(*) FILTER (WHERE {_ERROR}) AS errors,
       coalesce(sum(cost_usd), 0)::float8 AS cost_usd,
       coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens,
       {_LATENCY},
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS latency_p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS latency_p99_ms,
       avg(ttfb_ms) AS ttfb_avg_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY ttfb_ms) AS ttfb_p95_ms,
       count(*) FILTER (WHERE token_source = 'measured') AS measured_requests,
       count(*) FILTER (WHERE cost_partial) AS partial_cost_requests,
       count(*) FILTER (WHERE {_UNPRICED}) AS unpriced_requests,
       count(*) FILTER (WHERE usage_note IS NOT NULL) AS unread_requests
FROM request_logs WHERE created_at >= $1 AND created_at < $3
GROUP BY org_id, current"""

_MODELS = f"""
SELECT org_id, model_used AS model, provider, count(*) AS requests,
       count(*) FILTER (WHERE {_ERROR}) AS errors,
       coalesce(sum(cost_usd), 0)::float8 AS cost_usd, {_LATENCY},
       coalesce(sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)), 0)::bigint AS tokens,
       count(*) FILTER (WHERE {_UNPRICED}) AS unpriced_requests
FROM request_logs WHERE created_at >= $1 AND created_at < $2
GROUP BY org_id, model_used, provider"""

_PROVIDERS = f"""
SELECT org_id, provider, created_at >= $2 AS current, count(*) AS requests,
       count(*) FILTER (WHERE {_ERROR}) AS errors,
       coalesce(sum(cost_usd), 0)::float8 AS cost_usd,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS latency_p95_ms,
       count(*) FILTER (WHERE {_UNPRICED}) AS unpriced_requests,
       count(*) FILTER (WHERE {_PROVIDER_FAULT}) AS provider_errors,
       count(*) FILTER (WHERE {_CONNECTION}) AS connection_errors,
       count(*) FILTER (WHERE {_LECTR_FAULT}) AS lectr_errors
FROM request_logs WHERE created_at >= $1 AND created_at < $3
GROUP BY org_id, provider, current"""

_FEATURES = f"""
SELECT org_id, feature, count(*) AS requests,
       count(*) FILTER (WHERE {_ERROR}) AS errors,
       coalesce(sum(cost_usd), 0)::float8 AS cost_usd, {_LATENCY},
       coalesce(sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)), 0)::bigint AS tokens,
       count(*) FILTER (WHERE {_UNPRICED}) AS unpriced_requests
FROM request_logs WHERE created_at >= $1 AND created_at < $2
GROUP BY org_id, feature"""

_SERIES = f"""
SELECT org_id, date_bin($3, created_at, $4) AS bucket, count(*) AS requests,
       count(*) FILTER (WHERE {_ERROR}) AS errors,
       coalesce(sum(cost_usd), 0)::float8 AS cost_usd,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS latency_p95_ms
FROM request_logs WHERE created_at >= $1 AND created_at < $2
GROUP BY org_id, bucket"""

_DROPS = """
SELECT org_id, sum(count)::bigint AS dropped FROM event_drops
WHERE minute >= $1 AND minute < $2 GROUP BY org_id"""

_UPSERT = """
INSERT INTO dashboard_summaries (org_id, period, computed_at, data) VALUES ($1, $2, $3, $4::jsonb)
ON CONFLICT (org_id, period) DO UPDATE SET computed_at = EXCLUDED.computed_at, data = EXCLUDED.data"""

# Read from the totals query; total_tokens and error_rate are derived from them.
_TOTAL_KEYS = tuple(k for k in TOTALS.names if k not in ("total_tokens", "error_rate"))


def _totals(row: asyncpg.Record | None) -> dict:
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


async def summarize_period(conn: asyncpg.Connection, period: Period, now: datetime,
                           org_ids: list[int]) -> dict[int, dict]:
    """The summary of ``period`` ending at ``now`` for every org in ``org_ids``."""
    start, previous_start = now - period.length, now - 2 * period.length
    totals = {(r["org_id"], r["current"]): r for r in await conn.fetch(_TOTALS, previous_start, start, now)}
    by_org: dict[int, dict] = {org_id: {
        "period": period.name, "computed_at": _iso(now),
        "window": {"start": _iso(start), "end": _iso(now)},
        "previous_window": {"start": _iso(previous_start), "end": _iso(start)},
        "totals": _totals(totals.get((org_id, True))), "previous": _totals(totals.get((org_id, False))),
        "models": [], "providers": [], "features": [], "dropped_events": 0,
        "series": {"bucket_seconds": int(period.bucket.total_seconds()), "points": []},
    } for org_id in org_ids}

    for r in await conn.fetch(_MODELS, start, now):
        if r["org_id"] in by_org:
            by_org[r["org_id"]]["models"].append({k: r[k] for k in MODEL_ROW.names})
    _add_providers(by_org, await conn.fetch(_PROVIDERS, previous_start, start, now))
    for r in await conn.fetch(_FEATURES, start, now):
        if r["org_id"] in by_org:
            entry = {k: r[k] for k in FEATURE_ROW.names if k != "error_rate"}
            entry["error_rate"] = _rate(r["errors"], r["requests"])
            by_org[r["org_id"]]["features"].append(entry)
    await _add_series(by_org, await conn.fetch(_SERIES, start, now, period.bucket, BUCKET_ORIGIN), start, now,
                      period.bucket)
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
    """Recompute every org's summaries; returns the number of rows written."""
    now = now or datetime.now(timezone.utc)
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
