"""The anomaly job against real Postgres: a month of a synthetic trace written as request_rollups,
replayed hour by hour with ``lectr jobs run anomalies``; each anomaly recorded once, resolved
when it ends, nothing recorded twice on a re-run or by two processes at once.

request_rollups rows are written directly (the job's input); see ``tests/rollup_fixtures.py``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime

import asyncpg
import pytest

from lectr.platform import db

from lectr.api import orgs
from lectr.analysis.anomaly_model import AnomalyKey, KnownAnomaly, evaluate
from lectr.jobs import anomalies as job
from tests.conftest import run_cli
from tests.rollup_fixtures import generate_with_histograms, insert_rollups, trace_rows

SEED = 1


def _iso(hour: int) -> str:
    return datetime.fromtimestamp(hour * 3600, UTC).isoformat()


def _run(coro):
    return asyncio.run(coro)


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url)


@pytest.fixture(scope="module")
def world(database_url, tmp_path_factory):
    """Three orgs with a month of trace traffic as rollups; the first has a p95 threshold."""
    trace, hists = generate_with_histograms(SEED, n_orgs=2)

    async def setup():
        pool = await db.open_pool(database_url)  # migrates
        async with pool.acquire() as conn:
            ids = {}
            for trace_org in trace.org_ids:
                ids[trace_org], _ = await orgs.create_org(conn, f"trace-{trace_org}")
            await orgs.create_org(conn, "quiet")  # no traffic: never evaluated, never fails
            await insert_rollups(conn, trace_rows(trace, hists, ids))
            p95s = sorted(h.latency_p95_ms for h in trace.series[(trace.org_ids[0], None)].hours
                          if h.latency_p95_ms is not None and h.requests >= 10)
            threshold = round(p95s[int(len(p95s) * 0.985)])
            await orgs.set_p95_threshold(conn, ids[trace.org_ids[0]], threshold)
        await pool.close()
        return ids, threshold

    ids, threshold = _run(setup())
    env = {k: v for k, v in os.environ.items() if not k.startswith("LECTR_")}
    env.update(LECTR_DATABASE_URL=database_url, LECTR_DATA_DIR=str(tmp_path_factory.mktemp("data")))
    return {"trace": trace, "ids": ids, "threshold": threshold, "env": env, "url": database_url}


def simulate(trace, first: int, last: int, thresholds: dict[int, float]) -> dict:
    """What the pure detector decides over hours first..last, kept as the job keeps it:
    ``{(org, feature, metric, direction, window_start): [window_end, resolved_hour]}``."""
    records: dict = {}
    open_: dict = {}
    for org in trace.org_ids:
        scopes = trace.scopes(org)
        for h in range(first, last + 1):
            known = [KnownAnomaly(AnomalyKey(org, k[1], k[2], k[3]), k[4], r[0], resolved=r[1] is not None)
                     for k, r in records.items()
                     if k[0] == org and (r[1] is None or r[0] >= h - 8)]
            ev = evaluate(scopes, h, known=known, p95_threshold_ms=thresholds.get(org))
            for d in ev.opened:
                k = d.key
                rec = (org, k.feature, k.metric, k.direction, d.window_start)
                records[rec] = [d.window_end, None]
                open_[k] = rec
            for d in ev.ongoing:
                records[open_[d.key]][0] = max(records[open_[d.key]][0], d.window_end)
            for key in ev.resolved:
                records[open_.pop(key)][1] = h + 1
    return records


async def _recorded(url: str, ids: dict[int, int]) -> dict:
    back = {v: k for k, v in ids.items()}
    conn = await _connect(url)
    try:
        rows = await conn.fetch("SELECT * FROM anomalies ORDER BY id")
    finally:
        await conn.close()
    out = {}
    for r in rows:
        key = (back[r["org_id"]], r["feature"], job.FROM_COLUMN.get(r["metric"], r["metric"]), r["direction"],
               job.hour_number(r["window_start"]))
        assert key not in out, f"recorded twice: {key}"
        out[key] = [job.hour_number(r["window_end"]),
                    None if r["resolved_at"] is None else job.hour_number(r["resolved_at"]), dict(r)]
    return out


def test_rollups_give_the_detector_the_traces_series(world):
    trace, ids = world["trace"], world["ids"]
    org = trace.org_ids[0]
    at_hour = trace.start_hour + 20 * 24 + 13

    async def load():
        conn = await _connect(world["url"])
        try:
            return await job.load_scopes(conn, ids[org], at_hour - job.HISTORY_HOURS + 1, at_hour)
        finally:
            await conn.close()

    scopes = {s.feature: s for s in _run(load())}
    assert set(scopes) == {f for (o, f) in trace.series if o == org}
    for feature, got in scopes.items():
        want = trace.series[(org, feature)]
        assert got.start_hour == max(want.start_hour, at_hour - job.HISTORY_HOURS + 1)
        offset = got.start_hour - want.start_hour
        for k, h in enumerate(got.hours):
            w = want.hours[offset + k]
            assert (h.requests, h.errors, dict(h.models)) == (w.requests, w.errors, dict(w.models))
            assert h.latency_p95_ms == w.latency_p95_ms
            assert h.cost_usd == pytest.approx(w.cost_usd, rel=1e-9, abs=1e-9)
            assert h.cost_sq_usd == pytest.approx(w.cost_sq_usd, rel=1e-9, abs=1e-12)


def test_a_month_replayed_hour_by_hour_records_each_anomaly_once(world):
    trace, ids = world["trace"], world["ids"]
    first, last = trace.start_hour, trace.start_hour + trace.hours - 1
    # --from/--to: each hour boundary in turn, as the live job would have run at each
    out = run_cli(world["env"], "jobs", "run", "anomalies", "--from", _iso(first + 1), "--to", _iso(last + 1))
    assert f"for {trace.hours} hours" in out.stdout
    recorded = _run(_recorded(world["url"], ids))
    expected = simulate(trace, first, last, {trace.org_ids[0]: world["threshold"]})
    assert {k: v[:2] for k, v in recorded.items()} == expected
    assert any(k[2] == "latency_threshold" for k in recorded)

    # every injected deviation of 3σ or more is found, with its baseline and deviation, and
    # resolved once it is over
    found = 0
    big = [i for i in trace.injections if i.size_sigma >= 3.0]
    for inj in big:
        hits = [(k, v) for k, v in recorded.items()
                if k[0] == inj.org_id and k[1] in (None, inj.feature) and k[2] == inj.metric
                and k[3] == inj.direction and k[4] < inj.end_hour and v[0] > inj.start_hour]
        if not hits:
            continue
        found += 1
        hits.sort(key=lambda kv: (kv[0][1] or "", kv[0][4]))
        for (a, _), (b, _) in zip(hits, hits[1:]):
            if a[1] != b[1]:
                continue
            assert a[4] < b[4] and recorded[a][0] <= b[4], hits  # episodes, never two at once
        # (an incident the detector sees pause — a quiet night in a drift of days — is two episodes,
        # as the pure detector decides: the equality above holds the job to exactly that)
        (_, (window_end, resolved, row)) = hits[-1]
        assert row["baseline_mean"] is not None and row["baseline_std"] > 0
        assert abs(row["deviation_sigma"]) >= 2.0
        assert row["deviation_sigma"] == pytest.approx(
            (row["current_value"] - row["baseline_mean"]) / row["baseline_std"], rel=1e-6)
        if inj.end_hour + 24 <= last:
            assert resolved is not None and inj.start_hour < resolved <= inj.end_hour + 24, (inj, resolved)
    # the detector's own recall on this trace (its quality is lectr/bench/anomaly_quality.py's
    # business; 16 of 18 here: two 4-hour, 3σ error blips of a few errors each are below its thresholds)
    assert found >= 0.8 * len(big), (found, len(big))
    world["month"] = recorded


def test_running_an_hour_again_records_nothing_twice(world):
    trace, ids = world["trace"], world["ids"]
    before = world.get("month") or pytest.skip("needs the month replay")
    inj = next(i for i in trace.injections if i.size_sigma >= 3.0)
    for hour in (inj.start_hour + 2, inj.end_hour + 1, trace.start_hour + trace.hours - 1):
        # as the live job does: several runs during the next hour, each evaluating this one
        for minutes in ("05", "35"):
            run_cli(world["env"], "jobs", "run", "anomalies", "--at", _iso(hour + 1).replace(":00:00", f":{minutes}:00"))
    after = _run(_recorded(world["url"], ids))
    assert {k: v[:2] for k, v in after.items()} == {k: v[:2] for k, v in before.items()}
    assert [v[2]["current_value"] for v in after.values()] == [v[2]["current_value"] for v in before.values()]


def test_two_processes_replaying_at_once_record_each_anomaly_once(world):
    trace, ids = world["trace"], world["ids"]
    _run(_wipe(world["url"]))
    first = trace.start_hour + 9 * 24
    last = first + 5 * 24 - 1
    command = [sys.executable, "-m", "lectr", "jobs", "run", "anomalies", "--from", _iso(first + 1),
               "--to", _iso(last + 1)]
    procs = [subprocess.Popen(command, env=world["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    recorded = _run(_recorded(world["url"], ids))
    expected = simulate(trace, first, last, {trace.org_ids[0]: world["threshold"]})
    assert expected and {k: v[:2] for k, v in recorded.items()} == expected


async def _wipe(url: str) -> None:
    conn = await _connect(url)
    try:
        await conn.execute("DELETE FROM anomalies")
    finally:
        await conn.close()


def test_the_scheduled_job_evaluates_the_last_complete_hour(world):
    """Without --at the job runs for now; the trace lies in the past, so nothing is opened."""
    out = run_cli(world["env"], "jobs", "run", "anomalies")
    assert out.stdout.strip() == "Ran anomalies."
    bad = run_cli(world["env"], "jobs", "run", "anomalies", "--at", "yesterday", check=False)
    assert bad.returncode == 1 and "ISO 8601" in bad.stderr and "\n" not in bad.stderr.strip()
    bad = run_cli(world["env"], "jobs", "run", "aggregator", "--at", "2026-01-01T00:00:00Z", check=False)
    assert bad.returncode == 1 and "not aggregator" in bad.stderr


def test_a_row_folded_into_an_old_hour_is_seen_through_the_cache(world):
    """The scheduled job keeps hourly p95s between runs; a late row changes its hour's."""
    from lectr.analysis import histogram as hg
    from tests.rollup_fixtures import rollup_row

    end = 500_000

    async def scenario():
        conn = await _connect(world["url"])
        try:
            org, _ = await orgs.create_org(conn, "late-rows")
            rows = [rollup_row(org, job.hour_time(h), "f", model="m", requests=50,
                               latency_buckets=hg.build([100.0] * 50)) for h in range(end - 10, end + 1)]
            await insert_rollups(conn, rows)
            cache = job.HourCache()
            before = await job.load_scopes(conn, org, end - 20, end, cache)
            late = rollup_row(org, job.hour_time(end - 5), "f", model="m2", requests=50,
                              latency_buckets=hg.build([5000.0] * 50))
            await insert_rollups(conn, [late])
            cached = await job.load_scopes(conn, org, end - 20, end, cache)
            fresh = await job.load_scopes(conn, org, end - 20, end)
            return before, cached, fresh
        finally:
            await conn.close()

    before, cached, fresh = _run(scenario())
    assert cached == fresh and cached != before
    [org_scope] = [s for s in cached if s.feature is None]
    assert org_scope.hours[end - 5 - org_scope.start_hour].latency_p95_ms > 4000


def test_stored_hourly_p95s_are_read_while_their_hour_is_unchanged(world):
    """A fresh job reads each hour's p95s from rollup_hour_p95 (the rollups job's) instead of
    merging the hour's histograms, but only while the hour's rollups are those they came from."""
    from lectr.analysis import histogram as hg
    from tests.rollup_fixtures import rollup_row

    end = 600_000

    async def scenario():
        conn = await _connect(world["url"])
        try:
            org, _ = await orgs.create_org(conn, "stored-p95")
            await insert_rollups(conn, [rollup_row(org, job.hour_time(h), "f", model="m", requests=50,
                                                   latency_buckets=hg.build([100.0] * 50))
                                        for h in range(end - 3, end + 1)])
            merged = await job.load_scopes(conn, org, end - 3, end)
            # Stand-ins that merging could never give, stored with each hour's signature (1 rollup row, 50 requests).
            await conn.executemany(
                "INSERT INTO rollup_hour_p95 VALUES ($1, $2, 1, 50, 1234.0, '{f}', '{4321.0}')",
                [(org, job.hour_time(h)) for h in range(end - 3, end + 1)])
            stored = await job.load_scopes(conn, org, end - 3, end)
            await conn.execute("UPDATE rollup_hour_p95 SET requests = 49 WHERE org_id = $1 AND hour = $2",
                               org, job.hour_time(end))
            changed = await job.load_scopes(conn, org, end - 3, end)
            return merged, stored, changed
        finally:
            await conn.close()

    merged, stored, changed = _run(scenario())
    p95s = {s.feature: [h.latency_p95_ms for h in s.hours] for s in merged}
    assert p95s[None] == p95s["f"] and all(90 < p < 110 for p in p95s[None])
    assert {s.feature: [h.latency_p95_ms for h in s.hours] for s in stored} == {None: [1234.0] * 4, "f": [4321.0] * 4}
    assert {s.feature: [h.latency_p95_ms for h in s.hours] for s in changed} == {
        None: [1234.0] * 3 + p95s[None][-1:], "f": [4321.0] * 3 + p95s["f"][-1:]}
