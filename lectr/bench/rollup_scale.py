"""Rollup scale: the dashboard aggregator and the anomaly job do not grow with raw rows.

Fills ``request_logs`` server-side (generate_series) with N rows spread over 30 days for 200
orgs (each org: three features, each with its model and task; about 2% provider errors;
lognormal latencies), one statement per day (each writes one daily partition, in time order),
brings the rollups up to date (the one-off catch-up), and times

- one dashboard aggregator run (``run_aggregator``: all orgs, all three periods), and
- one anomaly job run (``run_anomalies`` for every org at the last complete hour, as the
  scheduled job runs it, under its lock): the first after a start, which reads every hour of
  the 240 (the p95s as the rollups job stored them, migration 010), and a steady-state one (the next run of the same process, whose p95s
  are kept between runs); the part of each spent in the detector itself (``evaluate``) is shown,

then empties the tables, fills the next size over the same 30 days and times them again. The rollups
have one row per org, hour and feature whatever N is, so the times should stay flat.

    python -m lectr.bench.rollup_scale                       # 1M then 10M rows, embedded Postgres
    python -m lectr.bench.rollup_scale --sizes 100000 1000000 --database-url postgresql://...

Heavy: the 10M-row step writes about 4 GB and takes several minutes (fill and catch-up).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg

from lectr.platform import db, partitions
from lectr.jobs.aggregator import run_aggregator
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
    SELECT (g - 1)::float8 / $4 AS u_time, random() AS u_cost, random() < 0.02 AS failed, org_id, k,
           CASE WHEN org_id % 4 = 0 THEN 'anthropic' ELSE 'openai' END AS provider,
           (ARRAY['chat', 'search', 'classify'])[k + 1] AS feature,
           (ARRAY['generation', NULL, 'classification'])[k + 1] AS task,
           CASE WHEN org_id % 4 = 0 THEN (ARRAY['claude-sonnet-4', 'claude-haiku-4', 'claude-haiku-4'])[k + 1]
                ELSE (ARRAY['gpt-4o', 'gpt-4o-mini', 'gpt-4o-mini'])[k + 1] END AS model,
           exp(6.5 + 0.6 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random())) AS latency,
           (200 + random() * 1800)::int AS prompt, (20 + random() * 400)::int AS completion
    FROM (SELECT g, $1 + floor(random() * $2)::int AS org_id, floor(random() * 3)::int AS k
          FROM generate_series(1, $4) g) f
) s"""


class _Clock:
    """Wall time of a step, and its CPU time: this process's plus, when the database server runs
    on this machine (the embedded one), the connection's server process's (Linux ``/proc``). On
    a machine shared with other work the CPU time is the figure that does not depend on the load.
    """

    def __init__(self, conn: asyncpg.Connection, server_is_local: bool) -> None:
        self._stat = Path(f"/proc/{conn.get_server_pid()}/stat") if server_is_local else None

    def _cpu(self) -> float | None:
        if self._stat is None:
            return None
        try:
            fields = self._stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        own = os.times()
        return own.user + own.system + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def measure(self, make) -> tuple[float, float | None]:
        cpu, started = self._cpu(), time.perf_counter()
        await make()
        wall, cpu_after = time.perf_counter() - started, self._cpu()
        return wall, (None if cpu is None or cpu_after is None else cpu_after - cpu)


def _median(runs: list[tuple[float, float | None]]) -> tuple[float, float | None]:
    cpus = [c for _, c in runs if c is not None]
    return statistics.median(w for w, _ in runs), (statistics.median(cpus) if cpus else None)


def _shown(run: tuple[float, float | None]) -> str:
    wall, cpu = run
    return f"{wall:.2f} s" + ("" if cpu is None else f" (CPU {cpu:.2f} s)")


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


async def _anomaly_run(conn: asyncpg.Connection, clock: _Clock, at: datetime,
                       cache: anomalies.HourCache) -> tuple[float, float | None, float]:
    """(wall s, CPU s, of which wall s in the detector) of one anomaly job run at ``at``, as the
    scheduled job runs it (its lock, its p95s kept in ``cache`` between runs)."""
    detector = _DetectorClock()
    anomalies.evaluate = detector

    async def run() -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", anomalies.ANOMALY_LOCK)
            await anomalies.run_anomalies(conn, at=at, cache=cache)

    try:
        wall, cpu = await clock.measure(run)
        return wall, cpu, detector.seconds
    finally:
        anomalies.evaluate = detector._evaluate


async def _run(url: str, sizes: list[int], orgs: int, repeats: int, server_is_local: bool) -> list[dict]:
    conn = await asyncpg.connect(url, command_timeout=None)
    clock = _Clock(conn, server_is_local)
    await db.migrate(conn)
    now = datetime.now(timezone.utc)
    start = now - timedelta(days=_DAYS)
    first_day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    await partitions.ensure_partitions(conn, first_day.date(), days_ahead=_DAYS + 2)
    results = []
    for size in sorted(sizes):
        # Each size from empty tables, so every size's rollups are built by one catch-up alike (a
        # second catch-up over the same org-hours would leave half of each table dead rows).
        await conn.execute("TRUNCATE request_logs, organizations CASCADE")
        await conn.execute("INSERT INTO organizations (name) SELECT 'scale-' || g FROM generate_series(1, $1) g",
                           orgs)
        first = await conn.fetchval("SELECT min(id) FROM organizations")
        fill_started = time.perf_counter()
        # The 30 days before now, one day (one partition) per statement, rows in time order.
        cuts = [start] + [first_day + timedelta(days=d) for d in range(1, _DAYS + 1)] + [now]
        spans = [(lo, hi) for lo, hi in zip(cuts, cuts[1:]) if lo < hi]
        added, total = 0, size
        for lo, hi in spans:
            rows = round(total * (hi - start) / (now - start)) - added
            await conn.execute(_FILL, first, orgs, lo, rows, hi - lo)
            added += rows
        fill = time.perf_counter() - fill_started
        catch_up, _ = await clock.measure(lambda: run_rollups(conn))
        await conn.execute("VACUUM ANALYZE request_rollups, request_rollups_6h, request_rollups_daily")
        aggregator = _median([await clock.measure(lambda: run_aggregator(conn, datetime.now(timezone.utc)))
                              for _ in range(repeats)])
        await conn.execute("TRUNCATE anomalies CASCADE")
        cache = anomalies.HourCache()
        first_run = await _anomaly_run(conn, clock, now, cache)  # a fresh process: every hour's p95 read
        steady = [await _anomaly_run(conn, clock, now, cache) for _ in range(repeats)]
        anomaly = _median([(w, c) for w, c, _ in steady])
        detector = statistics.median(d for _, _, d in steady)
        result = dict(rows=await conn.fetchval("SELECT count(*) FROM request_logs"),
                      rollup_rows=await conn.fetchval("SELECT count(*) FROM request_rollups"),
                      six_hour_rows=await conn.fetchval("SELECT count(*) FROM request_rollups_6h"),
                      daily_rows=await conn.fetchval("SELECT count(*) FROM request_rollups_daily"),
                      fill_s=fill, catch_up_s=catch_up, aggregator_s=aggregator[0], aggregator_cpu_s=aggregator[1],
                      anomaly_s=anomaly[0], anomaly_cpu_s=anomaly[1], anomaly_detector_s=detector,
                      anomaly_first_s=first_run[0], anomaly_first_cpu_s=first_run[1],
                      anomaly_first_detector_s=first_run[2])
        results.append(result)
        print(f"{result['rows']:>11,} rows ({result['rollup_rows']:,} hourly, {result['six_hour_rows']:,} six-hour, "
              f"{result['daily_rows']:,} daily rollup rows): aggregator {_shown(aggregator)}; anomaly job "
              f"{_shown(anomaly)}, detector {detector:.2f} s of it; first anomaly run after a start "
              f"{_shown(first_run[:2])}, detector {first_run[2]:.2f} s; fill {fill:.0f} s, one-off catch-up "
              f"{catch_up:.0f} s", flush=True)
    await conn.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--orgs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each timed step (the median is shown)")
    parser.add_argument("--database-url", help="an empty database to fill (default: an embedded PostgreSQL)")
    parser.add_argument("--local-server", action="store_true",
                        help="with --database-url: its server runs on this machine, so its CPU time is shown too")
    args = parser.parse_args()
    if args.database_url:
        url = args.database_url
        asyncio.run(_run(url, args.sizes, args.orgs, args.repeats, server_is_local=args.local_server))
        return 0
    with tempfile.TemporaryDirectory(prefix="lectr-rollup-scale-") as tmp:
        url = db.start_embedded(Path(tmp), keep_running=True)
        try:
            asyncio.run(db.ensure_database(url))
            asyncio.run(_run(url, args.sizes, args.orgs, args.repeats, server_is_local=True))
        finally:  # before its directory goes
            db.stop_embedded(Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
