"""Rollup scale: the dashboard aggregator and the anomaly job do not grow with raw rows.

Fills ``request_logs`` server-side (generate_series) with N rows spread over 30 days for 200
orgs (each org: three features, each with its model and task; about 2% provider errors;
lognormal latencies), one statement per day (each writes one daily partition, in time order),
brings the rollups up to date (the one-off catch-up), and times

- one dashboard aggregator run (``run_aggregator``: all orgs, all three periods), and
- one anomaly job run (``run_anomalies`` for every org at the last complete hour, as the
  scheduled job runs it, under its lock): the first after a start, which reads every hourly
  p95 of the 240 hours, and a steady-state one (the next run of the same process, whose p95s
  are kept between runs); the part of each spent in the detector itself (``evaluate``) is shown,

then grows the table to the next size over the same 30 days and times them again. The rollups
have one row per org, hour and feature whatever N is, so the times should stay flat.

    python -m lectr.bench.rollup_scale                       # 1M then 10M rows, embedded Postgres
    python -m lectr.bench.rollup_scale --sizes 100000 1000000 --database-url postgresql://...

Heavy: the 10M-row step writes about 4 GB and takes several minutes (fill and catch-up).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg

from lectr import db, partitions
from lectr.analysis.aggregator import run_aggregator
from lectr.jobs import anomalies
from lectr.jobs.rollups import run_rollups

_DAYS = 30

# One org's three features, each with its model and task; orgs whose id is a multiple of 4 use
# Anthropic. $1 first id, $2 orgs, $3 start, $4 rows, $5 length (at most a day: one partition).
_FILL = """
INSERT INTO request_logs (created_at, org_id, provider, model, model_used, feature, task, status_code, error_type,
                          error_origin, stream, latency_ms, ttfb_ms, overhead_us, prompt_tokens, completion_tokens,
                          cached_tokens, reasoning_tokens, token_source, cost_usd, cost_partial, bytes_in, bytes_out)
SELECT $3::timestamptz + u_time * $5::interval, org_id, provider, model, model, feature, task,
       CASE WHEN failed THEN 500 ELSE 200 END, CASE WHEN failed THEN 'upstream_error' END,
       CASE WHEN failed THEN 'provider' END, k = 0, latency, latency * 0.3, 150, prompt, completion, 0, 0,
       'provider', CASE WHEN u_cost < 0.01 THEN NULL ELSE (prompt * 0.15 + completion * 0.6) / 1e6 END, false,
       prompt * 4, completion * 4 + 400
FROM (
    SELECT (g - 1)::float8 / $4 AS u_time, random() AS u_cost, random() < 0.02 AS failed, $1 + g % $2 AS org_id, k,
           CASE WHEN ($1 + g % $2) % 4 = 0 THEN 'anthropic' ELSE 'openai' END AS provider,
           (ARRAY['chat', 'search', 'classify'])[k + 1] AS feature,
           (ARRAY['generation', NULL, 'classification'])[k + 1] AS task,
           CASE WHEN ($1 + g % $2) % 4 = 0 THEN (ARRAY['claude-sonnet-4', 'claude-haiku-4', 'claude-haiku-4'])[k + 1]
                ELSE (ARRAY['gpt-4o', 'gpt-4o-mini', 'gpt-4o-mini'])[k + 1] END AS model,
           exp(6.5 + 0.6 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random())) AS latency,
           (200 + random() * 1800)::int AS prompt, (20 + random() * 400)::int AS completion
    FROM generate_series(1, $4) g, LATERAL (SELECT (g / 7) % 3 AS k) f
) s"""


async def _timed(make) -> float:
    started = time.perf_counter()
    await make()
    return time.perf_counter() - started


class _DetectorClock:
    """Seconds spent in the anomaly detector (``evaluate``) while installed in the job."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._evaluate = anomalies.evaluate

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self._evaluate(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started


async def _anomaly_run(conn: asyncpg.Connection, at: datetime, cache: anomalies.HourCache) -> tuple[float, float]:
    """(seconds, of which in the detector) of one anomaly job run at ``at``, as the job runs it."""
    clock = _DetectorClock()
    anomalies.evaluate = clock
    try:
        started = time.perf_counter()
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", anomalies.ANOMALY_LOCK)
            await anomalies.run_anomalies(conn, at=at, cache=cache)
        return time.perf_counter() - started, clock.seconds
    finally:
        anomalies.evaluate = clock._evaluate


async def _run(url: str, sizes: list[int], orgs: int, repeats: int) -> list[dict]:
    conn = await asyncpg.connect(url, command_timeout=None)
    await db.migrate(conn)
    now = datetime.now(timezone.utc)
    start = now - timedelta(days=_DAYS)
    first_day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    await partitions.ensure_partitions(conn, first_day.date(), days_ahead=_DAYS + 2)
    await conn.execute("TRUNCATE request_logs, organizations CASCADE")
    await conn.execute("INSERT INTO organizations (name) SELECT 'scale-' || g FROM generate_series(1, $1) g", orgs)
    first = await conn.fetchval("SELECT min(id) FROM organizations")
    results, written = [], 0
    for size in sorted(sizes):
        fill_started = time.perf_counter()
        # The 30 days before now, one day (one partition) per statement, rows in time order.
        cuts = [start] + [first_day + timedelta(days=d) for d in range(1, _DAYS + 1)] + [now]
        spans = [(lo, hi) for lo, hi in zip(cuts, cuts[1:]) if lo < hi]
        added, total = 0, size - written
        for lo, hi in spans:
            rows = round(total * (hi - start) / (now - start)) - added
            await conn.execute(_FILL, first, orgs, lo, rows, hi - lo)
            added += rows
        written = size
        fill = time.perf_counter() - fill_started
        catch_up = await _timed(lambda: run_rollups(conn))
        await conn.execute("VACUUM ANALYZE request_rollups, request_rollups_6h, request_rollups_daily")
        aggregator = [await _timed(lambda: run_aggregator(conn, datetime.now(timezone.utc))) for _ in range(repeats)]
        await conn.execute("TRUNCATE anomalies CASCADE")
        cache = anomalies.HourCache()
        first_run = await _anomaly_run(conn, now, cache)
        steady = [await _anomaly_run(conn, now, cache) for _ in range(repeats)]
        steady_s, detector_s = statistics.median(s for s, _ in steady), statistics.median(d for _, d in steady)
        result = dict(rows=await conn.fetchval("SELECT count(*) FROM request_logs"),
                      rollup_rows=await conn.fetchval("SELECT count(*) FROM request_rollups"),
                      six_hour_rows=await conn.fetchval("SELECT count(*) FROM request_rollups_6h"),
                      daily_rows=await conn.fetchval("SELECT count(*) FROM request_rollups_daily"),
                      fill_s=fill, catch_up_s=catch_up, aggregator_s=statistics.median(aggregator),
                      anomaly_first_s=first_run[0], anomaly_first_detector_s=first_run[1],
                      anomaly_s=steady_s, anomaly_detector_s=detector_s)
        results.append(result)
        print(f"{result['rows']:>11,} rows  {result['rollup_rows']:>9,} hourly / {result['six_hour_rows']:>7,} "
              f"six-hour / {result['daily_rows']:>6,} daily rollups  aggregator {result['aggregator_s']:.2f} s  "
              f"anomaly job {steady_s:.2f} s (detector {detector_s:.2f} s), first run after a start "
              f"{first_run[0]:.2f} s (detector {first_run[1]:.2f} s)  "
              f"(fill {fill:.0f} s, one-off catch-up {catch_up:.0f} s)", flush=True)
    await conn.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--orgs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each timed step (the median is shown)")
    parser.add_argument("--database-url", help="an empty database to fill (default: an embedded PostgreSQL)")
    args = parser.parse_args()
    if args.database_url:
        url = args.database_url
        asyncio.run(_run(url, args.sizes, args.orgs, args.repeats))
        return 0
    with tempfile.TemporaryDirectory(prefix="lectr-rollup-scale-") as tmp:
        url = db.start_embedded(Path(tmp), keep_running=True)
        try:
            asyncio.run(db.ensure_database(url))
            asyncio.run(_run(url, args.sizes, args.orgs, args.repeats))
        finally:  # before its directory goes
            db.stop_embedded(Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
