"""Rows of ``request_rollups`` for the anomaly and recommendation tests.

The table is migration 006's. The rows are the jobs' input, written directly: a
``tracegen`` trace (its exact per-feature histograms captured as it is generated), or hand-made
rows for the recommendation tests.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from lectr.analysis import histogram as hg
from lectr.analysis import tracegen

COLUMNS = ("org_id", "hour", "feature", "task", "provider", "model_used", "requests", "errors_provider",
           "errors_lectr", "errors_client", "cost_usd", "cost_sq_usd", "partial_cost_requests",
           "unpriced_requests", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens",
           "measured_requests", "latency_ms_sum", "latency_buckets", "ttfb_count", "ttfb_ms_sum", "ttfb_buckets",
           "bytes_in", "bytes_out")


def rollup_row(org_id: int, hour: datetime, feature: str, *, model: str, provider: str = "openai",
               task: str = "", requests: int, errors: int = 0, cost_usd: float = 0.0,
               cost_sq_usd: float | None = None, unpriced: int = 0, prompt_tokens: int = 0,
               completion_tokens: int = 0, cached_tokens: int = 0, latency_buckets: list[int] | None = None) -> dict:
    buckets = latency_buckets if latency_buckets is not None else hg.empty()
    return {"org_id": org_id, "hour": hour, "feature": feature, "task": task, "provider": provider,
            "model_used": model, "requests": requests, "errors_provider": errors, "errors_lectr": 0,
            "errors_client": 0, "cost_usd": cost_usd,
            "cost_sq_usd": cost_sq_usd if cost_sq_usd is not None else (cost_usd ** 2 / requests if requests else 0.0),
            "partial_cost_requests": 0, "unpriced_requests": unpriced, "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens, "cached_tokens": cached_tokens, "reasoning_tokens": 0,
            "measured_requests": 0, "latency_ms_sum": 0.0, "latency_buckets": buckets, "ttfb_count": 0,
            "ttfb_ms_sum": 0.0, "ttfb_buckets": hg.empty(), "bytes_in": 0, "bytes_out": 0}


# Columns migration 006 keeps beside the contract's, for the dashboard's figures: derived here
# from the contract's own so a row stays consistent with itself.
_DERIVED = {
    "errors": lambda r: r["errors_provider"] + r["errors_lectr"] + r["errors_client"],
    "provider_fault_errors": lambda r: r["errors_provider"],
    "connection_errors": lambda r: 0,
    "lectr_fault_errors": lambda r: r["errors_lectr"],
    "unread_requests": lambda r: 0,
}


async def insert_rollups(conn: asyncpg.Connection, rows: list[dict]) -> None:
    from decimal import Decimal
    present = {r["column_name"] for r in await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'request_rollups'")}
    derived = [c for c in _DERIVED if c in present]
    columns = list(COLUMNS) + derived
    records = [tuple(Decimal(repr(r[c])) if c == "cost_usd" else r[c] for c in COLUMNS)
               + tuple(_DERIVED[c](r) for c in derived) for r in rows]
    await conn.copy_records_to_table("request_rollups", records=records, columns=columns)


def generate_with_histograms(seed: int, **kwargs) -> tuple[tracegen.Trace, dict]:
    """A tracegen trace and each feature-hour's latency histogram, ``{(org, feature, hour): counts}``.

    The histograms are the generator's own (read off the org's running merge around each call), so
    rollups built from them give the detector exactly the trace's series.
    """
    hists: dict = {}
    original = tracegen._hour

    def spy(rng, org, f, hour, inj, org_hour):
        before = list(org_hour[3])
        stats = original(rng, org, f, hour, inj, org_hour)
        hists[(org.org_id, f.name, hour)] = [a - b for a, b in zip(org_hour[3], before)]
        return stats

    tracegen._hour = spy
    try:
        trace = tracegen.generate(seed, **kwargs)
    finally:
        tracegen._hour = original
    return trace, hists


def trace_rows(trace: tracegen.Trace, hists: dict, org_ids: dict[int, int]) -> list[dict]:
    """Rollup rows of a trace: per feature-hour, one row per model; the hour's errors, cost and
    histogram on its busiest model's row (the sums per feature and hour are what the detector reads)."""
    rows = []
    for (trace_org, feature), series in trace.series.items():
        if feature is None:
            continue
        for k, stats in enumerate(series.hours):
            if stats.requests == 0:
                continue
            hour = series.start_hour + k
            at = datetime.fromtimestamp(hour * 3600, UTC)
            models = sorted(stats.models.items(), key=lambda mc: (-mc[1], mc[0]))
            for i, (model, count) in enumerate(models):
                first = i == 0
                rows.append(rollup_row(
                    org_ids[trace_org], at, feature, model=model, requests=count,
                    errors=stats.errors if first else 0, cost_usd=round(stats.cost_usd, 10) if first else 0.0,
                    cost_sq_usd=stats.cost_sq_usd if first else 0.0,
                    latency_buckets=hists[(trace_org, feature, hour)] if first else hg.empty()))
    return rows


def seed_understanding(database_url: str, orgs: dict[str, tuple[str, str, str]]) -> None:
    """For each org name → (feature, provider, model): one anomaly and one open recommendation,
    as the jobs would write them, so endpoints listing them have each org's own rows to show."""
    import asyncio

    async def run() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            for name, (feature, provider, model) in orgs.items():
                org_id = await conn.fetchval("SELECT id FROM organizations WHERE name = $1", name)
                await conn.execute("""
                    INSERT INTO anomalies (org_id, feature, metric, direction, window_start, window_end,
                                           current_value, baseline_mean, baseline_std, deviation_sigma, detail)
                    VALUES ($1, $2, 'requests', 'up', date_trunc('hour', now()) - interval '2 hours',
                            date_trunc('hour', now()), 400, 100, 10, 30, '{"window_hours": 2}')""", org_id, feature)
                await conn.execute("""
                    INSERT INTO recommendations (org_id, feature, provider, current_model, suggested_model,
                                                 aggressiveness, confidence, reason, signals, monthly_saving_usd)
                    VALUES ($1, $2, $3, $4, $4 || '-smaller', 'moderate', 'high', 'declared task classification',
                            '{"requests": 600}', 1.5)""", org_id, feature, provider, model)
        finally:
            await conn.close()

    asyncio.run(run())
