"""The dashboard aggregator, reading rollups, gives the figures a scan of the raw rows gives."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import asyncpg
import orjson
import pytest

from lectr.platform import db, partitions
from lectr.analysis import histogram
from lectr.jobs.aggregator import BUCKET_ORIGIN, PERIODS, run_aggregator
from lectr.recording.rows import COLUMNS
from tests.e2e.test_rollups import random_row

# Percentiles come from histograms: within MAX_RELATIVE_ERROR of percentile_cont for values of
# 1 ms and more (and within 0.5 ms below that).
_REL = histogram.MAX_RELATIVE_ERROR + 1e-9
_ERROR = "(status_code >= 400 OR error_type IS NOT NULL)"

# What the aggregator computed from raw rows before rollups, kept here as the reference.
_TOTALS = f"""
SELECT org_id, created_at >= $2 AS current, count(*) AS requests, count(*) FILTER (WHERE {_ERROR}) AS errors,
       coalesce(sum(cost_usd), 0)::float8 AS cost_usd, coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens, avg(latency_ms) AS latency_avg_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS latency_p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS latency_p95_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS latency_p99_ms,
       avg(ttfb_ms) AS ttfb_avg_ms, percentile_cont(0.95) WITHIN GROUP (ORDER BY ttfb_ms) AS ttfb_p95_ms,
       count(*) FILTER (WHERE token_source = 'measured') AS measured_requests,
       count(*) FILTER (WHERE cost_partial) AS partial_cost_requests,
       count(*) FILTER (WHERE cost_usd IS NULL AND (token_source <> 'none' OR status_code BETWEEN 200 AND 399))
           AS unpriced_requests,
       count(*) FILTER (WHERE usage_note IS NOT NULL) AS unread_requests
FROM request_logs WHERE created_at >= $1 AND created_at < $3 GROUP BY org_id, current"""

_BY = """
SELECT org_id, {key} AS key, count(*) AS requests, count(*) FILTER (WHERE {error}) AS errors,
       coalesce(sum(cost_usd), 0)::float8 AS cost_usd,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS latency_p95_ms
FROM request_logs WHERE created_at >= $1 AND created_at < $2 GROUP BY 1, 2"""

_EXACT = ("requests", "errors", "prompt_tokens", "completion_tokens", "measured_requests", "partial_cost_requests",
          "unpriced_requests", "unread_requests")


def close(got, want, *, rel=1e-9) -> bool:
    if want is None:
        return got is None
    return got == pytest.approx(want, rel=rel, abs=0.5 if rel > 1e-9 else 1e-9)


@pytest.fixture()
async def conn(database_url):
    connection = await asyncpg.connect(database_url)
    await db.migrate(connection)
    await partitions.ensure_partitions(connection)
    yield connection
    await connection.execute("TRUNCATE request_logs")
    await connection.close()


@pytest.mark.parametrize("seed, aligned", [(11, False), (12, False), (13, True)])
async def test_aggregator_figures_from_rollups_match_the_raw_rows(conn, seed, aligned):
    rng = random.Random(seed)
    org_ids = []
    for i in range(3):
        org_ids.append(await conn.fetchval("INSERT INTO organizations (name) VALUES ($1) RETURNING id",
                                           f"agg-{seed}-{i}"))
    # Not on a whole hour, so every window has part-hours at both edges.
    now = datetime.now(timezone.utc).replace(second=17, microsecond=250_000) - timedelta(minutes=rng.randrange(60))
    if aligned:  # a run exactly at midnight: whole days and hours only, no part-hours
        now = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for batch in range(6):
        rows = [random_row(rng, org_ids, now - timedelta(seconds=rng.randrange(int(60.5 * 86400))))
                for _ in range(400)]
        await conn.copy_records_to_table("request_logs", records=rows, columns=COLUMNS)
        if batch == 2:
            await run_aggregator(conn, now)  # rollups made midway; later rows land in old hours too
    await run_aggregator(conn, now)
    summaries = {(r["org_id"], r["period"]): orjson.loads(r["data"]) for r in await conn.fetch(
        "SELECT org_id, period, data FROM dashboard_summaries WHERE org_id = ANY($1)", org_ids)}
    checked = 0
    for period in PERIODS:
        start, previous_start = now - period.length, now - 2 * period.length
        raw = {(r["org_id"], r["current"]): r for r in await conn.fetch(_TOTALS, previous_start, start, now)}
        for org_id in org_ids:
            summary = summaries[(org_id, period.name)]
            for current, part in ((True, "totals"), (False, "previous")):
                want, got = raw[(org_id, current)], summary[part]
                for key in _EXACT:
                    assert got[key] == want[key], (period.name, part, key)
                for key in ("cost_usd", "latency_avg_ms", "ttfb_avg_ms"):
                    assert close(got[key], want[key]), (period.name, part, key)
                for key in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "ttfb_p95_ms"):
                    assert close(got[key], want[key], rel=_REL), (period.name, part, key, got[key], want[key])
                checked += 1
        for name, key, field in (
                ("features", "feature", lambda e: e["feature"]),
                ("models", "coalesce(model_used, model, '') || ' @ ' || provider",
                 lambda e: f"{e['model'] or ''} @ {e['provider']}"),
                ("providers", "provider", lambda e: e["provider"])):
            raw = {(r["org_id"], r["key"]): r for r in await conn.fetch(_BY.format(key=key, error=_ERROR), start, now)}
            for org_id in org_ids:
                entries = {field(e): e for e in summaries[(org_id, period.name)][name] if e["requests"]}
                assert entries.keys() == {k for o, k in raw if o == org_id}
                for value, entry in entries.items():
                    want = raw[(org_id, value)]
                    assert (entry["requests"], entry["errors"]) == (want["requests"], want["errors"])
                    assert close(entry["cost_usd"], want["cost_usd"])
                    assert close(entry["latency_p95_ms"], want["latency_p95_ms"], rel=_REL), (name, value)
                    checked += 1
        bin_key = f"date_bin('{int(period.bucket.total_seconds())} seconds'::interval, created_at, '{BUCKET_ORIGIN}')"
        raw = {(r["org_id"], r["key"]): r for r in await conn.fetch(_BY.format(key=bin_key, error=_ERROR), start, now)}
        for org_id in org_ids:
            for point in summaries[(org_id, period.name)]["series"]["points"]:
                want = raw.get((org_id, datetime.fromisoformat(point["start"])))
                assert point["requests"] == (want["requests"] if want else 0)
                if want:
                    assert point["errors"] == want["errors"] and close(point["cost_usd"], want["cost_usd"])
                    assert close(point["latency_p95_ms"], want["latency_p95_ms"], rel=_REL)
                    checked += 1
    assert checked > 100
