"""The rollups job: ``request_logs`` → ``request_rollups``, one row per org, UTC hour, feature,
task, provider and model, recomputed whole for every org-hour a write has touched; and
``request_rollups_6h`` and ``request_rollups_daily``, the same per six-hour block and per UTC day,
re-merged from the hours for every block and day touched.

How it stays current (migration 006): statement triggers on ``request_logs`` append the
``(org_id, hour)`` pairs each INSERT/COPY, UPDATE or DELETE touched to ``rollup_dirty``, in the
writer's own transaction. A run, under an advisory lock so one runs at a time anywhere:

1. ``DELETE FROM rollup_dirty RETURNING`` — takes exactly the marks committed so far;
2. deletes and re-inserts the rollups of those org-hours from ``request_logs`` (a later
   statement, so under READ COMMITTED it sees at least every row whose mark it took), re-merges
   their six-hour blocks and days, and stores their latency p95s (``rollup_hour_p95``) and the
   dashboard's chart points of their hours, blocks and days (``rollup_points``).

A row that commits late — a spool replayed after an outage with hours-old ``created_at``, a slow
worker's flush, writers committing out of id order — carries its mark with it, so its hour is
recomputed by the next run; nothing depends on ids or clocks. A mark committed during a run stays
for the next one; recomputing an org-hour twice gives the same rows.
"""

from __future__ import annotations

import logging

import asyncpg

from lectr.analysis import histogram

log = logging.getLogger(__name__)

ROLLUPS_LOCK = 0x4C43524C  # "LCRL": one rollups run at a time, across workers and machines

# What the dashboard counts (shared with lectr.jobs.aggregator).
ERROR = "(status_code >= 400 OR error_type IS NOT NULL)"
# Cost unknown, not zero: tokens were counted (or the provider answered) but no price was found.
UNPRICED = "(cost_usd IS NULL AND (token_source <> 'none' OR status_code BETWEEN 200 AND 399))"
# A provider's health counts only what the provider caused: its 5xx, 408 and 429 answers and
# streams it broke off. A client's 4xx (bad request, unknown model, wrong key), Lectr's own
# refusals and connections Lectr could not make are counted apart.
CONNECTION = "(error_origin = 'lectr' AND error_type IN ('upstream_unreachable', 'upstream_timeout'))"
PROVIDER_FAULT = ("(error_origin = 'provider' AND NOT (status_code BETWEEN 400 AND 499 "
                  "AND status_code NOT IN (408, 429)))")
LECTR_FAULT = f"(error_origin = 'lectr' AND NOT {CONNECTION})"

# Columns of request_rollups after the key, in the order ROLLUP_SELECT produces them.
MEASURES = ("requests", "errors_provider", "errors_lectr", "errors_client", "cost_usd", "cost_sq_usd",
            "partial_cost_requests", "unpriced_requests", "prompt_tokens", "completion_tokens", "cached_tokens",
            "reasoning_tokens", "measured_requests", "latency_ms_sum", "latency_buckets", "ttfb_count",
            "ttfb_ms_sum", "ttfb_buckets", "bytes_in", "bytes_out", "errors", "provider_fault_errors",
            "connection_errors", "lectr_fault_errors", "unread_requests")
KEY = ("org_id", "hour", "feature", "task", "provider", "model_used")


def _counts(indexes: str) -> str:
    """Bucket counts (an int[] of ``histogram.BUCKETS``) from an int[] of bucket indexes."""
    return f"lectr_histogram({indexes}, {histogram.BUCKETS})"


def rollup_select(source: str) -> str:
    """A SELECT of request_rollups rows (KEY + MEASURES) grouped by org, UTC hour and dimensions,
    over ``source``: what follows FROM, with ``request_logs`` aliased ``l`` (and a WHERE if any)."""
    latency = histogram.sql_bucket_expression("latency_ms")
    ttfb = histogram.sql_bucket_expression("ttfb_ms")
    return f"""
SELECT {', '.join(KEY)}, requests, errors_provider, errors_lectr, errors_client, cost_usd, cost_sq_usd,
       partial_cost_requests, unpriced_requests, prompt_tokens, completion_tokens, cached_tokens,
       reasoning_tokens, measured_requests, latency_ms_sum, {_counts('latency_indexes')} AS latency_buckets,
       ttfb_count, ttfb_ms_sum, {_counts('ttfb_indexes')} AS ttfb_buckets, bytes_in, bytes_out, errors,
       provider_fault_errors, connection_errors, lectr_fault_errors, unread_requests
FROM (
    SELECT l.org_id, date_trunc('hour', l.created_at, 'UTC') AS hour, feature, coalesce(task, '') AS task, provider,
           coalesce(model_used, model, '') AS model_used,
           count(*) AS requests,
           count(*) FILTER (WHERE error_origin = 'provider') AS errors_provider,
           count(*) FILTER (WHERE error_origin = 'lectr') AS errors_lectr,
           count(*) FILTER (WHERE error_origin = 'client') AS errors_client,
           coalesce(sum(cost_usd), 0) AS cost_usd,
           coalesce(sum(cost_usd::float8 * cost_usd::float8), 0) AS cost_sq_usd,
           count(*) FILTER (WHERE cost_partial) AS partial_cost_requests,
           count(*) FILTER (WHERE {UNPRICED}) AS unpriced_requests,
           coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
           coalesce(sum(completion_tokens), 0) AS completion_tokens,
           coalesce(sum(cached_tokens), 0) AS cached_tokens,
           coalesce(sum(reasoning_tokens), 0) AS reasoning_tokens,
           count(*) FILTER (WHERE token_source = 'measured') AS measured_requests,
           sum(latency_ms) AS latency_ms_sum,
           array_agg({latency}) AS latency_indexes,
           count(ttfb_ms) AS ttfb_count,
           coalesce(sum(ttfb_ms), 0) AS ttfb_ms_sum,
           coalesce(array_agg({ttfb}) FILTER (WHERE ttfb_ms IS NOT NULL), '{{}}') AS ttfb_indexes,
           sum(bytes_in) AS bytes_in, sum(bytes_out) AS bytes_out,
           count(*) FILTER (WHERE {ERROR}) AS errors,
           count(*) FILTER (WHERE {PROVIDER_FAULT}) AS provider_fault_errors,
           count(*) FILTER (WHERE {CONNECTION}) AS connection_errors,
           count(*) FILTER (WHERE {LECTR_FAULT}) AS lectr_fault_errors,
           count(*) FILTER (WHERE usage_note IS NOT NULL) AS unread_requests
    FROM {source}
    GROUP BY 1, 2, 3, 4, 5, 6
) grouped"""


# The org-hours to recompute; only orgs that exist get rollups (a deleted org's rows go with it).
_TAKE = """
CREATE TEMP TABLE IF NOT EXISTS rollup_todo (org_id bigint NOT NULL, hour timestamptz NOT NULL) ON COMMIT DELETE ROWS;
TRUNCATE rollup_todo;
WITH taken AS (DELETE FROM rollup_dirty RETURNING org_id, hour)
INSERT INTO rollup_todo SELECT DISTINCT org_id, hour FROM taken"""

_CLEAR = """
DELETE FROM request_rollups r USING rollup_todo t WHERE r.org_id = t.org_id AND r.hour = t.hour"""

_RECOMPUTE = f"""
INSERT INTO request_rollups ({', '.join(KEY + MEASURES)})
{rollup_select('''rollup_todo t JOIN organizations o ON o.id = t.org_id
    JOIN request_logs l ON l.org_id = t.org_id AND l.created_at >= t.hour AND l.created_at < t.hour + interval '1 hour' ''')}"""

# A catch-up (many org-hours: the first run over old rows, a long outage) joins on the hour
# itself, so the raw rows are read once and matched set-based rather than probed per org-hour.
_CATCH_UP_HOURS = 2000
_RECOMPUTE_MANY = f"""
INSERT INTO request_rollups ({', '.join(KEY + MEASURES)})
{rollup_select('''rollup_todo t JOIN organizations o ON o.id = t.org_id
    JOIN request_logs l ON l.org_id = t.org_id AND date_trunc('hour', l.created_at, 'UTC') = t.hour
     AND l.created_at >= t.hour AND l.created_at < t.hour + interval '1 hour' ''')}"""


def merged_histogram(column: str) -> str:
    """The element-wise sum of an int[] histogram column over a group (a bigint[] of BUCKETS)."""
    return "ARRAY[" + ", ".join(f"sum({column}[{i}])" for i in range(1, histogram.BUCKETS + 1)) + "]::bigint[]"


_SUMMED = ", ".join(f"{merged_histogram(m)}::int[]" if m.endswith("_buckets") else f"sum({m})" for m in MEASURES)
# The coarser levels, each re-merged for every block a run touched from the level below it, already
# current: (table, its time column, the block a row of the level below falls in, block length,
# the level below and its time column). Six-hour blocks start at 00, 06, 12 and 18 UTC; four- and
# sixteen-day blocks count from 2000-01-01 UTC, so each holds whole blocks of the level below.
_COARSER = (("request_rollups_6h", "hour", "date_bin('6 hours', hour, '2000-01-01 00:00+00')", "6 hours",
            "request_rollups", "hour"),
           ("request_rollups_daily", "day", "date_trunc('day', hour, 'UTC')", "24 hours", "request_rollups_6h", "hour"),
           ("request_rollups_4d", "day", "date_bin('4 days', hour, '2000-01-01 00:00+00')", "4 days",
            "request_rollups_daily", "day"),
           ("request_rollups_16d", "day", "date_bin('16 days', hour, '2000-01-01 00:00+00')", "16 days",
            "request_rollups_4d", "day"))


def _remerge(table: str, column: str, block: str, length: str, below: str, below_column: str) -> str:
    return f"""
CREATE TEMP TABLE IF NOT EXISTS rollup_blocks (org_id bigint NOT NULL, start timestamptz NOT NULL) ON COMMIT DELETE ROWS;
TRUNCATE rollup_blocks;
INSERT INTO rollup_blocks SELECT DISTINCT org_id, {block} FROM rollup_todo;
ANALYZE rollup_blocks;  -- a handful of blocks: an index probe each, not a scan of the level below
DELETE FROM {table} r USING rollup_blocks t WHERE r.org_id = t.org_id AND r.{column} = t.start;
INSERT INTO {table} (org_id, {column}, feature, task, provider, model_used, {', '.join(MEASURES)})
SELECT r.org_id, t.start, feature, task, provider, model_used, {_SUMMED}
FROM rollup_blocks t JOIN {below} r
  ON r.org_id = t.org_id AND r.{below_column} >= t.start AND r.{below_column} < t.start + interval '{length}'
GROUP BY r.org_id, t.start, feature, task, provider, model_used;
TRUNCATE rollup_blocks"""


_REMERGE = [_remerge(*level) for level in _COARSER]

# Each recomputed org-hour's latency p95s (the org as a whole, each feature) for the anomaly
# detector, which would otherwise merge the histograms of every hour of its history again on
# each start (migration 010). The same merge and the same quantile as it does (exactly equal).
_P95_CLEAR = "DELETE FROM rollup_hour_p95 p USING rollup_todo t WHERE p.org_id = t.org_id AND p.hour = t.hour"
_P95_SOURCE = f"""
SELECT r.org_id, r.hour, r.feature, GROUPING(r.feature) = 1 AS whole, count(*) AS n,
       sum(r.requests)::bigint AS requests, sum(r.errors)::bigint AS errors, sum(r.cost_usd) AS cost_usd,
       {merged_histogram("latency_buckets")} AS counts
FROM rollup_todo t JOIN request_rollups r ON r.org_id = t.org_id AND r.hour = t.hour
GROUP BY GROUPING SETS ((r.org_id, r.hour, r.feature), (r.org_id, r.hour))"""
P95 = 0.95


async def _store_p95s(conn: asyncpg.Connection) -> list[tuple]:
    """Replace the rows of ``rollup_hour_p95`` of the org-hours in ``rollup_todo``; return the
    chart points of those hours (``rollup_points`` rows), merged here already."""
    await conn.execute(_P95_CLEAR)
    # (org, hour) -> [rollup rows, requests, whole p95, features, their p95s]
    hours: dict[tuple, list] = {}
    points = []
    # A cursor: a catch-up's merged histograms are read a batch at a time, never all at once.
    async for r in conn.cursor(_P95_SOURCE, prefetch=2000):
        h = hours.setdefault((r["org_id"], r["hour"]), [0, 0, None, [], []])
        p95 = histogram.quantile(r["counts"], P95, spread=True)
        if r["whole"]:
            h[0], h[1], h[2] = r["n"], r["requests"], p95
            points.append((r["org_id"], 1, r["hour"], r["requests"], r["errors"], r["cost_usd"],
                           histogram.quantile(r["counts"], P95)))
        else:
            h[3].append(r["feature"])
            h[4].append(p95)
    if hours:
        await conn.copy_records_to_table(
            "rollup_hour_p95", columns=("org_id", "hour", "rollup_rows", "requests", "p95_ms", "features",
                                        "feature_p95_ms"),
            records=[(org_id, hour, *h) for (org_id, hour), h in hours.items()])
    return points


# Each recomputed hour's, six-hour block's and day's chart point per org (migration 011): the
# aggregator's merge and quantile of the bucket, stored so that it reads a whole point as a row.
# The hours' points come from the merge ``_store_p95s`` makes anyway; the blocks' and days' here.
_POINT_BUCKETS = f"""
CREATE TEMP TABLE IF NOT EXISTS rollup_point_todo (org_id bigint NOT NULL, bucket_hours int NOT NULL,
                                                   start timestamptz NOT NULL) ON COMMIT DELETE ROWS;
TRUNCATE rollup_point_todo;
INSERT INTO rollup_point_todo
SELECT DISTINCT org_id, 1, hour FROM rollup_todo
UNION ALL SELECT DISTINCT org_id, 6, {_COARSER[0][2]} FROM rollup_todo
UNION ALL SELECT DISTINCT org_id, 24, {_COARSER[1][2]} FROM rollup_todo;
DELETE FROM rollup_points p USING rollup_point_todo t
WHERE p.org_id = t.org_id AND p.bucket_hours = t.bucket_hours AND p.start = t.start;
ANALYZE rollup_point_todo"""
_POINT_SOURCE = " UNION ALL ".join(f"""
SELECT r.org_id, t.bucket_hours, t.start, sum(r.requests)::bigint AS requests, sum(r.errors)::bigint AS errors,
       sum(r.cost_usd) AS cost_usd, {merged_histogram("latency_buckets")} AS counts
FROM rollup_point_todo t JOIN {table} r ON r.org_id = t.org_id AND r.{column} = t.start
WHERE t.bucket_hours = {hours} GROUP BY r.org_id, t.bucket_hours, t.start""" for hours, table, column in (
    (6, "request_rollups_6h", "hour"), (24, "request_rollups_daily", "day")))


async def _store_points(conn: asyncpg.Connection, hour_points: list[tuple]) -> None:
    """Replace the chart points of every hour (``hour_points``), block and day of the org-hours
    in ``rollup_todo``."""
    await conn.execute(_POINT_BUCKETS)
    await _copy_points(conn, hour_points)
    points = []
    async for r in conn.cursor(_POINT_SOURCE, prefetch=2000):  # a catch-up's a batch at a time
        points.append((r["org_id"], r["bucket_hours"], r["start"], r["requests"], r["errors"], r["cost_usd"],
                       histogram.quantile(r["counts"], P95)))
        if len(points) == 2000:
            await _copy_points(conn, points)
    await _copy_points(conn, points)


async def _copy_points(conn: asyncpg.Connection, points: list[tuple]) -> None:
    if points:
        await conn.copy_records_to_table("rollup_points", records=points, columns=(
            "org_id", "bucket_hours", "start", "requests", "errors", "cost_usd", "latency_p95_ms"))
        points.clear()


async def run_rollups(conn: asyncpg.Connection) -> int:
    """Bring ``request_rollups`` up to date; returns the number of org-hours recomputed.

    Runs in its own transaction (a savepoint inside the caller's), waiting for ``ROLLUPS_LOCK``
    if another process is running it.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", ROLLUPS_LOCK)
        await conn.execute(_TAKE)
        hours = await conn.fetchval("SELECT count(*) FROM rollup_todo")
        if hours:
            catch_up = hours > _CATCH_UP_HOURS
            if catch_up:  # sort and merge in memory what fits, not in many passes on disk
                await conn.execute("SET LOCAL work_mem = '256MB'")
            await conn.execute("ANALYZE rollup_todo")
            await conn.execute(_CLEAR)
            await conn.execute(_RECOMPUTE_MANY if catch_up else _RECOMPUTE)
            for remerge in _REMERGE:
                await conn.execute(remerge)
            await _store_points(conn, await _store_p95s(conn))
            await conn.execute("TRUNCATE rollup_todo")
    log.debug("rollups recomputed %d org-hours", hours)
    return hours
