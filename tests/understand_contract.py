"""Rows of ``anomalies`` and ``recommendations`` (migration 007), inserted directly as the input
of the alert and page tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import asyncpg
import orjson

async def insert_anomaly(conn: asyncpg.Connection, org_id: int, *, metric: str = "cost", feature: str | None = None,
                         direction: str = "up", hours_ago: int = 1, length: int = 1, current: float = 12.5,
                         mean: float | None = 3.2, std: float | None = 0.9, sigma: float | None = 10.3,
                         detail: dict | None = None, resolved: bool = False) -> int:
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours_ago - 1)
    return await conn.fetchval("""
        INSERT INTO anomalies (org_id, feature, metric, direction, window_start, window_end, current_value,
                               baseline_mean, baseline_std, deviation_sigma, detail, resolved_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, CASE WHEN $12 THEN now() END)
        RETURNING id""", org_id, feature, metric, direction, end - timedelta(hours=length), end, current, mean, std,
        sigma, orjson.dumps(detail or {}).decode(), resolved)


async def insert_recommendation(conn: asyncpg.Connection, org_id: int, *, feature: str = "classify",
                                current: str = "gpt-4o", suggested: str = "gpt-4o-mini",
                                saving: float | None = 412.5) -> int:
    signals = {"requests": 18_402, "avg_prompt_tokens": 412.0, "avg_completion_tokens": 6.2,
               "error_rate": 0.004, "p95_latency_ms": 812.0, "task": "classification"}
    return await conn.fetchval("""
        INSERT INTO recommendations (org_id, feature, provider, current_model, suggested_model, aggressiveness,
                                     confidence, reason, signals, monthly_saving_usd)
        VALUES ($1, $2, 'openai', $3, $4, 'aggressive', 'high',
                'Declared task classification: short answers that a smaller model handles as well.', $5::jsonb, $6)
        RETURNING id""", org_id, feature, current, suggested, orjson.dumps(signals).decode(), saving)


def seed_orgs(database_url: str, features: dict[str, str]) -> None:
    """For each org name, an open anomaly and a recommendation on ``features[name]`` (for tests that
    check every page and endpoint shows an org its own rows and no other's)."""
    import asyncio

    async def run() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            for name, feature in features.items():
                org_id = await conn.fetchval("SELECT id FROM organizations WHERE name = $1", name)
                await insert_anomaly(conn, org_id, feature=feature)
                await insert_recommendation(conn, org_id, feature=feature)
        finally:
            await conn.close()

    asyncio.run(run())
