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
from lectr.jobs.rollups import merged_histogram

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


async def run_anomalies(conn: asyncpg.Connection, *, at: datetime | None = None,
                        cache: HourCache | None = None) -> dict[str, int]:
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
    org_ids = [org["id"] for org in org_rows]
    # Every org's data in a few set-based reads, not a round of queries per org.
    scopes = await load_all_scopes(conn, org_ids, start, at_hour, cache)
    known = await load_all_known(conn, org_ids, at)
    counts = {"opened": 0, "ongoing": 0, "resolved": 0}
    for org in org_rows:
        result = evaluate(scopes[org["id"]], at_hour, known=known.get(org["id"], []),
                          p95_threshold_ms=org["p95_threshold_ms"])
        for decision in result.opened:
            counts["opened"] += await _open(conn, decision, at)
        for decision in result.ongoing:
            counts["ongoing"] += await _continue(conn, decision, at)
        for key in result.resolved:
            counts["resolved"] += await _resolve(conn, key, at)
    return counts


def scheduled_run():
    """The scheduled job's ``run(conn)``: ``run_anomalies`` now, with p95s kept between runs."""
    cache = HourCache()
    return lambda conn: run_anomalies(conn, cache=cache)


async def run_range(conn: asyncpg.Connection, start: datetime, end: datetime) -> int:
    """Evaluate each hour boundary from ``start`` to ``end`` (inclusive) in turn, each in its own
    transaction under ``ANOMALY_LOCK``; return the number of evaluations (a backtest)."""
    at = datetime.fromtimestamp(hour_number(start) * 3600, UTC)
    if at < start:
        at += timedelta(hours=1)
    done, cache = 0, HourCache()
    while at <= end:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", ANOMALY_LOCK)
            await run_anomalies(conn, at=at, cache=cache)
        done += 1
        at += timedelta(hours=1)
    return done


class HourCache:
    """Each org's hours already read, ``{org: {hour: (signature, {scope: HourStats})}}``.

    Reading an hour's figures and merging its latency histograms for the p95s is most of a run's
    cost, and an hour changes only when rows are added to it; the signature (rows and requests
    of the hour, summed by the database on each run) says when, so an hour folded in late is
    read again. Kept by the scheduled job across runs and by a backtest across its hours.
    """

    def __init__(self) -> None:
        self.orgs: dict[int, dict[int, tuple[tuple[int, int], dict[str | None, HourStats]]]] = {}


async def load_scopes(conn: asyncpg.Connection, org_id: int, start: int, end: int,
                      cache: HourCache | None = None) -> list[ScopeSeries]:
    """The org's series (as a whole, then each feature) for hours ``start..end`` from its rollups."""
    return (await load_all_scopes(conn, [org_id], start, end, cache))[org_id]


# Hours as hours since the epoch; the pairs (org, hour) of $1 and $2, with $3..$4 their range.
_HOUR_NUMBER = "extract(epoch FROM r.hour)::bigint / 3600"
_PAIRS = """{table} r JOIN unnest($1::bigint[], $2::timestamptz[]) AS s(org_id, hour)
  ON r.org_id = s.org_id AND r.hour = s.hour
WHERE r.hour >= $3 AND r.hour <= $4  -- an index range, whatever plan the pairs get"""


def _org_hours(table: str) -> str:
    """The FROM clause reading the org-hours of ``_pairs``'s arguments from ``table``."""
    return _PAIRS.format(table=table)


def _pairs(org_hours) -> tuple:
    """The arguments of ``_org_hours``: org ids, hours, first and last hour."""
    return ([org_id for org_id, _ in org_hours], [hour_time(h) for _, h in org_hours],
            hour_time(min(h for _, h in org_hours)), hour_time(max(h for _, h in org_hours)))


async def load_all_scopes(conn: asyncpg.Connection, org_ids: list[int], start: int, end: int,
                          cache: HourCache | None = None) -> dict[int, list[ScopeSeries]]:
    """``{org: its series}`` (as ``load_scopes``) for every org in ``org_ids``: one query for the
    signatures of all their hours, then the figures and p95s of the hours not in ``cache``."""
    signatures = await conn.fetch(f"""
        SELECT r.org_id, {_HOUR_NUMBER} AS hour, count(*) AS n, sum(r.requests)::bigint AS requests
        FROM request_rollups r WHERE r.org_id = ANY($1::bigint[]) AND r.hour >= $2 AND r.hour <= $3
        GROUP BY r.org_id, r.hour""", org_ids, hour_time(start), hour_time(end))
    known = {org_id: cache.orgs.setdefault(org_id, {}) if cache is not None else {} for org_id in org_ids}
    hours: dict[int, dict[int, dict[str | None, HourStats]]] = {org_id: {} for org_id in org_ids}
    stale: list[tuple[int, int, tuple[int, int]]] = []
    for r in signatures:
        signature = (r["n"], r["requests"])
        seen = known[r["org_id"]].get(r["hour"])
        if seen is not None and seen[0] == signature:
            hours[r["org_id"]][r["hour"]] = seen[1]
        else:
            stale.append((r["org_id"], r["hour"], signature))
    if stale:
        fresh = await _read_hours(conn, {(org_id, hour): signature for org_id, hour, signature in stale})
        for org_id, hour, signature in stale:
            hours[org_id][hour] = fresh.get((org_id, hour), {})
            known[org_id][hour] = (signature, hours[org_id][hour])
    for org_id in org_ids:  # keep what this run read, nothing older
        for hour in [h for h in known[org_id] if h not in hours[org_id]]:
            del known[org_id][hour]
    return {org_id: _series(org_id, hours[org_id], start, end) for org_id in org_ids}


async def _read_hours(conn: asyncpg.Connection, org_hours: dict[tuple[int, int], tuple[int, int]]
                      ) -> dict[tuple[int, int], dict[str | None, HourStats]]:
    """``{(org, hour): {scope: its HourStats}}`` of those org-hours (``{(org, hour): its
    signature}``), the org as a whole (scope None) and each feature."""
    pairs = _pairs(org_hours)
    rows = await conn.fetch(f"""
        SELECT r.org_id, {_HOUR_NUMBER} AS hour, r.feature, r.model_used, sum(r.requests)::bigint AS requests,
               sum(r.errors_provider + r.errors_lectr + r.errors_client)::bigint AS errors,
               sum(r.cost_usd)::float8 AS cost, sum(r.cost_sq_usd) AS cost_sq
        FROM {_org_hours("request_rollups")}
        GROUP BY r.org_id, r.hour, r.feature, r.model_used""", *pairs)
    # (org, hour) -> scope -> [requests, errors, cost, cost², {model: requests}]
    acc: dict[tuple[int, int], dict[str | None, list]] = {}
    for r in rows:
        hour = acc.setdefault((r["org_id"], r["hour"]), {})
        for scope in (None, r["feature"]):
            h = hour.get(scope)
            if h is None:
                h = hour[scope] = [0, 0, 0.0, 0.0, {}]
            h[0] += r["requests"]
            h[1] += r["errors"]
            h[2] += r["cost"]
            h[3] += r["cost_sq"]
            if r["requests"]:
                h[4][r["model_used"]] = h[4].get(r["model_used"], 0) + r["requests"]
    p95s = await _stored_p95s(conn, pairs, org_hours)
    missing = [key for key in org_hours if key not in p95s]
    if missing:  # stored by no rollups run yet, or the hour changed since: merged here
        p95s.update(await _read_p95s(conn, _pairs(missing)))
    return {key: {scope: HourStats(requests=h[0], errors=h[1], cost_usd=h[2],
                                   latency_p95_ms=p95s.get(key, {}).get(scope), models=h[4], cost_sq_usd=h[3])
                  for scope, h in scopes.items()}
            for key, scopes in acc.items()}


def _series(org_id: int, hours: dict[int, dict[str | None, HourStats]], start: int, end: int) -> list[ScopeSeries]:
    empty = HourStats(cost_sq_usd=0.0)  # an hour without requests: every sum is exactly 0
    out = []
    for scope in sorted({scope for hour in hours.values() for scope in hour} | {None},
                        key=lambda s: (s is not None, s or "")):
        # A scope's series starts with its first rows: the hours before it existed are no data,
        # not hours of zero traffic (which would make any new feature look like a surge).
        first_seen = next((h for h in range(start, end + 1) if scope in hours.get(h, {})), end)
        out.append(ScopeSeries(org_id, scope, first_seen,
                               [hours.get(hour, {}).get(scope, empty) for hour in range(first_seen, end + 1)]))
    return out


# The latency histograms of the given org-hours merged per feature and for the org as a whole
# (the feature NULL; ``whole`` tells it from a feature that is NULL) in the database.
_MERGED_LATENCY = f"""
SELECT r.org_id, {_HOUR_NUMBER} AS hour, r.feature, GROUPING(r.feature) = 1 AS whole,
       {merged_histogram("latency_buckets")} AS counts
FROM {_org_hours("request_rollups")}
GROUP BY GROUPING SETS ((r.org_id, r.hour, r.feature), (r.org_id, r.hour))"""


async def _stored_p95s(conn: asyncpg.Connection, pairs: tuple, signatures: dict[tuple[int, int], tuple[int, int]]
                       ) -> dict[tuple[int, int], dict[str | None, float | None]]:
    """``{(org, hour): {scope: p95 ms}}`` as the rollups job stored them (``rollup_hour_p95``) for
    the org-hours ``pairs`` whose rollups still have the ``signatures`` (rows, requests) they were
    computed from; an org-hour without such a row is left out."""
    out: dict[tuple[int, int], dict[str | None, float | None]] = {}
    for r in await conn.fetch(f"""
            SELECT r.org_id, {_HOUR_NUMBER} AS hour, r.rollup_rows, r.requests, r.p95_ms, r.features, r.feature_p95_ms
            FROM {_org_hours("rollup_hour_p95")}""", *pairs):
        key = (r["org_id"], r["hour"])
        if signatures.get(key) == (r["rollup_rows"], r["requests"]):
            scopes = out[key] = dict(zip(r["features"], r["feature_p95_ms"]))
            scopes[None] = r["p95_ms"]
    return out


async def _read_p95s(conn: asyncpg.Connection, pairs: tuple) -> dict[tuple[int, int], dict[str | None, float | None]]:
    """``{(org, hour): {scope: p95 ms}}`` from the merged latency histograms of the org-hours
    ``pairs`` (as ``_pairs`` builds them)."""
    out: dict[tuple[int, int], dict[str | None, float | None]] = {}
    for r in await conn.fetch(_MERGED_LATENCY, *pairs):
        scope = None if r["whole"] else r["feature"]
        out.setdefault((r["org_id"], r["hour"]), {})[scope] = hg.quantile(r["counts"], 0.95, spread=True)
    return out


async def load_known(conn: asyncpg.Connection, org_id: int, at: datetime) -> list[KnownAnomaly]:
    """The org's anomalies as they stood before the hour evaluated at ``at`` was first evaluated:
    open then, or resolved within the longest window before it.

    Evaluations of that hour (every run during the next hour does one; so does a second process,
    or a replay of a range already run) thus all start from the same state and decide alike: what
    one of them opened is opened again (a conflict: nothing written), not judged as a held
    anomaly, and nothing resolved by a later hour is reopened by an earlier one.
    """
    return (await load_all_known(conn, [org_id], at)).get(org_id, [])


async def load_all_known(conn: asyncpg.Connection, org_ids: list[int], at: datetime) -> dict[int, list[KnownAnomaly]]:
    """``{org: its known anomalies}`` (as ``load_known``) for every org in ``org_ids``, in one query."""
    at_hour = evaluated_hour(at)
    before = hour_time(at_hour + 1)  # evaluations of hour h run during hour h + 1
    rows = await conn.fetch("""
        SELECT org_id, feature, metric, direction, window_start, window_end, resolved_at < $2 AS resolved
        FROM anomalies
        WHERE org_id = ANY($1::bigint[]) AND opened_at < $2
          AND (resolved_at IS NULL OR resolved_at >= $2 OR window_end >= $3)""",
                            org_ids, before, hour_time(at_hour - _RECENT_HOURS))
    known: dict[int, list[KnownAnomaly]] = {}
    for r in rows:
        known.setdefault(r["org_id"], []).append(KnownAnomaly(
            AnomalyKey(r["org_id"], r["feature"], FROM_COLUMN.get(r["metric"], r["metric"]), r["direction"]),
            hour_number(r["window_start"]), hour_number(r["window_end"]), resolved=bool(r["resolved"])))
    return known


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


async def _continue(conn: asyncpg.Connection, d: AnomalyDecision, at: datetime) -> int:
    k = d.key
    # Only the latest hour's evaluation moves the figures: an earlier hour evaluated again
    # (a replay, a second process) leaves them as they are.
    status = await conn.execute("""
        UPDATE anomalies SET window_end = $5, current_value = $6, baseline_mean = $7,
                             baseline_std = $8, deviation_sigma = $9, detail = $10::jsonb
        WHERE org_id = $1 AND coalesce(feature, '') = coalesce($2, '') AND metric = $3 AND direction = $4
          AND resolved_at IS NULL AND opened_at <= $11 AND window_end <= $5""",
                                k.org_id, k.feature, TO_COLUMN.get(k.metric, k.metric), k.direction,
                                hour_time(d.window_end), float(d.current), _finite(d.baseline_mean),
                                _finite(d.baseline_std), _finite(d.deviation_sigma), _detail(d), at)
    return int(status.split()[-1])


async def _resolve(conn: asyncpg.Connection, k: AnomalyKey, at: datetime) -> int:
    status = await conn.execute("""
        UPDATE anomalies SET resolved_at = $5
        WHERE org_id = $1 AND coalesce(feature, '') = coalesce($2, '') AND metric = $3 AND direction = $4
          AND resolved_at IS NULL AND opened_at <= $5""",
                                k.org_id, k.feature, TO_COLUMN.get(k.metric, k.metric), k.direction, at)
    return int(status.split()[-1])
