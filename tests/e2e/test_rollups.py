"""Hourly rollups stay equal to a full recomputation from ``request_logs``, whatever the writes."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import asyncpg
import pytest

from lectr.platform import db, partitions
from lectr.analysis import histogram
from lectr.proxy.ring import EventRing
from lectr.recording.rows import COLUMNS
from lectr.recording.spool import Spool
from lectr.recording.store import RowStore
from lectr.jobs import rollups
from lectr.jobs.rollups import run_rollups
from lectr.jobs.windows import bucket_floor
from lectr.platform.metrics import Metrics

# A fixed instant, whenever the tests run; the six hours before it cross midnight, so every run
# has rows in two days' partitions and an hourly update that moves rows from one day to another.
NOW = datetime(2026, 1, 14, 2, 30, tzinfo=timezone.utc)

# The recomputation the rollups must equal, written independently of the job's SQL: histograms
# are built here in Python from the raw values.
_EXPECTED = """
SELECT l.org_id, date_trunc('hour', l.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour, feature,
       coalesce(task, '') AS task, provider, coalesce(model_used, model, '') AS model_used,
       count(*) AS requests,
       sum(CASE WHEN error_origin = 'provider' THEN 1 ELSE 0 END) AS errors_provider,
       sum(CASE WHEN error_origin = 'lectr' THEN 1 ELSE 0 END) AS errors_lectr,
       sum(CASE WHEN error_origin = 'client' THEN 1 ELSE 0 END) AS errors_client,
       sum(coalesce(cost_usd, 0)) AS cost_usd, sum(coalesce(cost_usd, 0)::float8 ^ 2) AS cost_sq_usd,
       sum(CASE WHEN cost_partial THEN 1 ELSE 0 END) AS partial_cost_requests,
       sum(CASE WHEN cost_usd IS NULL AND (token_source <> 'none' OR status_code BETWEEN 200 AND 399)
           THEN 1 ELSE 0 END) AS unpriced_requests,
       sum(coalesce(prompt_tokens, 0)) AS prompt_tokens, sum(coalesce(completion_tokens, 0)) AS completion_tokens,
       sum(coalesce(cached_tokens, 0)) AS cached_tokens, sum(coalesce(reasoning_tokens, 0)) AS reasoning_tokens,
       sum(CASE WHEN token_source = 'measured' THEN 1 ELSE 0 END) AS measured_requests,
       sum(latency_ms) AS latency_ms_sum, array_agg(latency_ms) AS latencies,
       count(ttfb_ms) AS ttfb_count, coalesce(sum(ttfb_ms), 0) AS ttfb_ms_sum,
       array_remove(array_agg(ttfb_ms), NULL) AS ttfbs,
       sum(bytes_in) AS bytes_in, sum(bytes_out) AS bytes_out,
       sum(CASE WHEN status_code >= 400 OR error_type IS NOT NULL THEN 1 ELSE 0 END) AS errors,
       sum(CASE WHEN usage_note IS NOT NULL THEN 1 ELSE 0 END) AS unread_requests
FROM request_logs l JOIN organizations o ON o.id = l.org_id
GROUP BY 1, 2, 3, 4, 5, 6"""

_COMPARED = ("requests", "errors_provider", "errors_lectr", "errors_client", "cost_usd", "partial_cost_requests",
             "unpriced_requests", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens",
             "measured_requests", "ttfb_count", "bytes_in", "bytes_out", "errors", "unread_requests")
_KEY = ("org_id", "hour", "feature", "task", "provider", "model_used")


async def assert_rollups_match(conn: asyncpg.Connection) -> None:
    expected = {}
    for r in await conn.fetch(_EXPECTED):
        values = {k: r[k] for k in _COMPARED}
        values.update(latency_buckets=histogram.build(r["latencies"]), ttfb_buckets=histogram.build(r["ttfbs"]),
                      latency_ms_sum=r["latency_ms_sum"], ttfb_ms_sum=r["ttfb_ms_sum"], cost_sq_usd=r["cost_sq_usd"])
        expected[tuple(r[k] for k in _KEY)] = values
    actual = {}
    for r in await conn.fetch("SELECT * FROM request_rollups"):
        values = {k: r[k] for k in _COMPARED}
        values.update(latency_buckets=list(r["latency_buckets"]), ttfb_buckets=list(r["ttfb_buckets"]),
                      latency_ms_sum=r["latency_ms_sum"], ttfb_ms_sum=r["ttfb_ms_sum"], cost_sq_usd=r["cost_sq_usd"])
        actual[tuple(r[k] for k in _KEY)] = values
    # The six-hour and daily rows: the hours of each block and UTC day merged (here in Python).
    levels = []
    for table, column, block in (("request_rollups_6h", "hour", lambda h: h.replace(hour=h.hour // 6 * 6)),
                                 ("request_rollups_daily", "day", lambda h: h.replace(hour=0)),
                                 ("request_rollups_4d", "day", lambda h: bucket_floor(h, timedelta(days=4))),
                                 ("request_rollups_16d", "day", lambda h: bucket_floor(h, timedelta(days=16)))):
        expected_level: dict[tuple, dict] = {}
        for (org_id, hour, *dims), values in expected.items():
            merged = expected_level.setdefault((org_id, block(hour), *dims), {})
            for name, value in values.items():
                if name.endswith("_buckets"):
                    merged[name] = histogram.merge(merged.get(name, histogram.empty()), value)
                else:
                    merged[name] = merged.get(name, 0) + value
        actual_level = {}
        for r in await conn.fetch(f"SELECT * FROM {table}"):
            values = {k: r[k] for k in _COMPARED}
            values.update(latency_buckets=list(r["latency_buckets"]), ttfb_buckets=list(r["ttfb_buckets"]),
                          latency_ms_sum=r["latency_ms_sum"], ttfb_ms_sum=r["ttfb_ms_sum"],
                          cost_sq_usd=r["cost_sq_usd"])
            actual_level[(r["org_id"], r[column], *(r[k] for k in _KEY[2:]))] = values
        levels.append((expected_level, actual_level))
    for want_all, got_all in ((expected, actual), *levels):
        assert got_all.keys() == want_all.keys()
        for key, want in want_all.items():
            got = dict(got_all[key])
            want = dict(want)
            for name in ("latency_ms_sum", "ttfb_ms_sum", "cost_sq_usd"):  # float sums: order of addition differs
                assert got.pop(name) == pytest.approx(want.pop(name), rel=1e-9, abs=1e-12), (key, name)
            assert got == want, key
    # Each org-hour's stored p95s (the org as a whole, each feature): exactly the quantile the
    # anomaly detector reads from the hour's merged histograms.
    merged_hours: dict[tuple, dict] = {}
    for (org_id, hour, feature, *_), values in expected.items():
        scopes = merged_hours.setdefault((org_id, hour), {})
        for scope in (None, feature):
            scopes[scope] = histogram.merge(scopes.get(scope, histogram.empty()), values["latency_buckets"])
    want_p95s = {key: {scope: histogram.quantile(counts, 0.95, spread=True) for scope, counts in scopes.items()}
                 for key, scopes in merged_hours.items()}
    got_p95s = {}
    for r in await conn.fetch("SELECT * FROM rollup_hour_p95"):
        scopes = got_p95s[(r["org_id"], r["hour"])] = dict(zip(r["features"], r["feature_p95_ms"]))
        scopes[None] = r["p95_ms"]
    assert got_p95s == want_p95s
    # Each org's chart point of every hour, six-hour block and day: the aggregator's merge and quantile.
    merged_points: dict[tuple, list] = {}
    for (org_id, hour, *_), values in expected.items():
        for hours, start in ((1, hour), (6, hour.replace(hour=hour.hour // 6 * 6)), (24, hour.replace(hour=0))):
            point = merged_points.setdefault((org_id, hours, start), [0, 0, 0, histogram.empty()])
            point[0] += values["requests"]
            point[1] += values["errors"]
            point[2] += values["cost_usd"]
            point[3] = histogram.merge(point[3], values["latency_buckets"])
    want_points = {key: (requests, errors, cost, histogram.quantile(counts, 0.95))
                   for key, (requests, errors, cost, counts) in merged_points.items()}
    got_points = {(r["org_id"], r["bucket_hours"], r["start"]): (r["requests"], r["errors"], r["cost_usd"],
                                                                 r["latency_p95_ms"])
                  for r in await conn.fetch("SELECT * FROM rollup_points")}
    assert got_points == want_points


def random_row(rng: random.Random, org_ids: list[int], at: datetime) -> tuple:
    origin = rng.choice([None, None, None, "provider", "lectr", "client"])
    status = 200 if origin is None else {"provider": rng.choice([500, 429, 400]), "lectr": rng.choice([502, 400]),
                                         "client": rng.choice([401, 404])}[origin]
    error_type = None if origin is None else rng.choice(["upstream_unreachable", "upstream_timeout", "bad", None])
    model = rng.choice(["gpt-4o", "gpt-4o-mini", None])
    source = rng.choice(["provider", "measured", "none"])
    cost = rng.choice([None, Decimal(rng.randrange(0, 10**8)) / 10**10])
    ttfb = rng.choice([None, rng.lognormvariate(5, 1.5), 0.0])
    latency = rng.choice([rng.lognormvariate(6, 2), 0.4, 1.0, 10 ** (5 / 32)])  # incl. bucket edges
    values = dict(created_at=at, org_id=rng.choice(org_ids), provider=rng.choice(["openai", "anthropic", "groq"]),
                  model=model, model_used=rng.choice([model, model, "gpt-4.1", None]),
                  feature=rng.choice(["chat", "search", "untagged"]), task=rng.choice([None, "classification", "x"]),
                  status_code=status, error_type=error_type, error_origin=origin, stream=rng.random() < 0.3,
                  latency_ms=latency, ttfb_ms=ttfb, overhead_us=rng.randrange(1000),
                  prompt_tokens=rng.choice([None, rng.randrange(5000)]),
                  completion_tokens=rng.choice([None, rng.randrange(2000)]),
                  cached_tokens=rng.choice([None, rng.randrange(100)]),
                  reasoning_tokens=rng.choice([None, rng.randrange(100)]), token_source=source, cost_usd=cost,
                  cost_partial=rng.random() < 0.2, pricing_id=None, provider_unknown=False, rule_id=None,
                  bytes_in=rng.randrange(10**5), bytes_out=rng.randrange(10**6),
                  usage_note=rng.choice([None, None, "truncated", "undecodable"]))
    return tuple(values[c] for c in COLUMNS)


def random_time(rng: random.Random) -> datetime:
    if rng.random() < 0.2:  # late: days old, as a spool replayed after an outage brings them
        return NOW - timedelta(days=rng.randrange(2, 6), seconds=rng.randrange(86400))
    return NOW - timedelta(seconds=rng.randrange(6 * 3600))


@pytest.fixture()
async def conn(database_url):
    connection = await asyncpg.connect(database_url)
    await db.migrate(connection)
    await partitions.ensure_partitions(connection, NOW.date())
    for name in ("rollup-a", "rollup-b", "rollup-c"):
        await connection.execute("INSERT INTO organizations (name) VALUES ($1) ON CONFLICT DO NOTHING", name)
    yield connection
    await connection.execute("TRUNCATE request_logs, event_batches")
    await connection.close()


@pytest.mark.parametrize("seed, catch_up", [(1, False), (2, False), (3, False), (4, False), (5, False), (6, True)])
async def test_rollups_equal_a_full_recomputation_after_any_writes_replays_and_runs(conn, database_url, tmp_path,
                                                                                    monkeypatch, seed, catch_up):
    if catch_up:  # every run takes the set-based path a catch-up of many org-hours takes
        monkeypatch.setattr(rollups, "_CATCH_UP_HOURS", 0)
    rng = random.Random(seed)
    org_ids = [r["id"] for r in await conn.fetch("SELECT id FROM organizations ORDER BY id")]
    org_ids.append(max(org_ids) + 1000)  # rows of an org that does not exist get no rollups
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    spool = Spool(tmp_path, max_bytes=100_000_000)
    store = RowStore(pool, spool, EventRing(10), Metrics(EventRing(1)))
    other = await asyncpg.connect(database_url)
    pending = None  # a writer's transaction left open across job runs: it commits out of order
    try:
        for _ in range(40):
            step = rng.random()
            rows = [random_row(rng, org_ids, random_time(rng)) for _ in range(rng.randrange(1, 30))]
            if step < 0.3:
                await conn.copy_records_to_table("request_logs", records=rows, columns=COLUMNS)
            elif step < 0.45:
                spool.write(rows)
                if rng.random() < 0.5:
                    await store.replay()
            elif step < 0.6 and pending is None:
                pending = other.transaction()
                await pending.start()
                await other.copy_records_to_table("request_logs", records=rows, columns=COLUMNS)
            elif step < 0.7 and pending is not None:
                await (pending.commit() if rng.random() < 0.8 else pending.rollback())
                pending = None
            elif step < 0.75:
                await conn.execute("DELETE FROM request_logs WHERE org_id = $1 AND feature = $2",
                                   rng.choice(org_ids), rng.choice(["chat", "search"]))
            elif step < 0.8:
                await conn.execute("UPDATE request_logs SET created_at = created_at - interval '3 hours' "
                                   "WHERE org_id = $1 AND task IS NULL", rng.choice(org_ids))
            else:
                await run_rollups(conn)
                await assert_rollups_match(conn)
        if pending is not None:
            await pending.commit()
        await store.replay()
        await run_rollups(conn)
        await assert_rollups_match(conn)
        assert await run_rollups(conn) == 0  # nothing left to do: no run redoes old work
    finally:
        await other.close()
        await pool.close()


async def test_a_row_committed_after_a_run_started_is_folded_into_its_hour(conn, database_url):
    """A writer that committed after the job took the marks: its hour is recomputed next run."""
    [org_id] = [r["id"] for r in await conn.fetch("SELECT id FROM organizations ORDER BY id LIMIT 1")]
    rng = random.Random(7)
    old = NOW - timedelta(days=3)
    await conn.copy_records_to_table("request_logs", records=[random_row(rng, [org_id], old)], columns=COLUMNS)
    await run_rollups(conn)
    other = await asyncpg.connect(database_url)
    try:
        async with other.transaction():
            await other.copy_records_to_table("request_logs", records=[random_row(rng, [org_id], old)],
                                              columns=COLUMNS)
            await run_rollups(conn)  # sees neither the row nor its mark yet
        hour = old.replace(minute=0, second=0, microsecond=0)
        assert await conn.fetchval("SELECT sum(requests) FROM request_rollups WHERE org_id = $1 AND hour = $2",
                                   org_id, hour) == 1
        assert await run_rollups(conn) == 1
        assert await conn.fetchval("SELECT sum(requests) FROM request_rollups WHERE org_id = $1 AND hour = $2",
                                   org_id, hour) == 2
        await assert_rollups_match(conn)
    finally:
        await other.close()



def test_the_rollups_job_is_scheduled_every_rollup_interval_with_its_own_lock():
    from lectr.app import scheduled_jobs
    from lectr.settings.config import Settings

    jobs = {job.name: job for job in scheduled_jobs(Settings.from_env({"LECTR_ROLLUP_INTERVAL": "17"}))}
    assert jobs["rollups"].interval == 17.0 and jobs["rollups"].run is run_rollups
    assert len({job.lock_id for job in jobs.values()}) == len(jobs)
    assert {job.name: job.interval for job in scheduled_jobs(Settings.from_env({}))}["rollups"] == 60.0



async def test_lectr_jobs_run_rollups_brings_the_rollups_up_to_date(conn, database_url, tmp_path):
    import asyncio
    import os

    from tests.conftest import run_cli

    [org_id] = [r["id"] for r in await conn.fetch("SELECT id FROM organizations ORDER BY id LIMIT 1")]
    rng = random.Random(9)
    await conn.copy_records_to_table("request_logs", records=[random_row(rng, [org_id], random_time(rng))
                                                              for _ in range(20)], columns=COLUMNS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LECTR_")}
    env.update(LECTR_DATABASE_URL=database_url, LECTR_DATA_DIR=str(tmp_path / "data"))
    result = await asyncio.to_thread(run_cli, env, "jobs", "run", "rollups")
    assert "Ran rollups." in result.stdout
    assert await conn.fetchval("SELECT count(*) FROM rollup_dirty") == 0
    await assert_rollups_match(conn)
    assert await conn.fetchval("SELECT sum(requests) FROM request_rollups WHERE org_id = $1", org_id) == 20
