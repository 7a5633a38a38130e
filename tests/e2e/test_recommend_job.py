"""The recommendation job against real Postgres, seeded prices and the seeded downgrade ladder:
rollups in, one recommendation per (org, feature, current model) out, through
``lectr jobs run recommendations --at``.

request_rollups rows are written directly (the job's input); see ``tests/rollup_fixtures.py``.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest

from lectr.platform import db

from lectr.api import orgs
from lectr.api import understand_api
from lectr.pricing.prices import ensure_seeded, load_pricing
from tests.conftest import run_cli
from tests.rollup_fixtures import insert_rollups, rollup_row

AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def _run(coro):
    return asyncio.run(coro)


async def _with_conn(url, fn):
    conn = await asyncpg.connect(url)
    try:
        return await fn(conn)
    finally:
        await conn.close()


def usage_rows(org_id: int, feature: str, *, model: str, provider: str = "openai", tasks: dict[str, int],
               prompt: int, completion: int, prices=None, days: int = 30, end: datetime = AT) -> list[dict]:
    """One row per day and task over the ``days`` before ``end``; ``tasks`` gives requests per day.
    With ``prices`` (a price row) the cost is recorded as those prices make it; else unpriced."""
    rows = []
    hour = end.replace(minute=0) - timedelta(hours=1)
    for day in range(days):
        at = hour - timedelta(days=day)
        for task, n in tasks.items():
            cost = 0.0
            if prices is not None:
                cost = n * (prompt * float(prices.input_per_mtok) + completion * float(prices.output_per_mtok)) / 1e6
            rows.append(rollup_row(org_id, at, feature, model=model, provider=provider, task=task, requests=n,
                                   errors=0, cost_usd=round(cost, 10), unpriced=0 if prices is not None else n,
                                   prompt_tokens=n * prompt, completion_tokens=n * completion))
    return rows


@pytest.fixture(scope="module")
def world(database_url, tmp_path_factory):
    async def setup():
        pool = await db.open_pool(database_url)
        async with pool.acquire() as conn:
            await ensure_seeded(conn)
            table = await load_pricing(conn)
            alpha, _ = await orgs.create_org(conn, "alpha")
            beta, _ = await orgs.create_org(conn, "beta")
            gpt41 = table.lookup("openai", "gpt-4.1-2025-04-14", AT)
            rows = (
                usage_rows(alpha, "tagger", model="gpt-4.1-2025-04-14", tasks={"classification": 20},
                           prompt=2000, completion=5, prices=gpt41)
                + usage_rows(alpha, "mystery", model="gpt-4.1", tasks={"": 20}, prompt=300, completion=20,
                             prices=gpt41)
                + usage_rows(alpha, "thinker", model="gpt-4.1", tasks={"classification": 18, "reasoning": 2},
                             prompt=300, completion=5, prices=gpt41)
                + usage_rows(alpha, "digest", model="claude-sonnet-4-5", provider="anthropic",
                             tasks={"summarisation": 20}, prompt=4000, completion=300)
                + usage_rows(alpha, "tiny", model="gpt-4.1", tasks={"classification": 3}, prompt=2000,
                             completion=5, prices=gpt41)
                + usage_rows(beta, "tagger", model="gpt-4.1", tasks={"classification": 20}, prompt=2000,
                             completion=5, prices=gpt41))
            await insert_rollups(conn, rows)
            ladder = {(r["provider"], r["to_model"]) for r in await conn.fetch("SELECT * FROM model_downgrades")}
        await pool.close()
        return {"alpha": alpha, "beta": beta, "table": table, "ladder": ladder}

    w = _run(setup())
    env = {k: v for k, v in os.environ.items() if not k.startswith("LECTR_")}
    env.update(LECTR_DATABASE_URL=database_url, LECTR_DATA_DIR=str(tmp_path_factory.mktemp("data")))
    w.update(env=env, url=database_url)
    return w


def run_job(world) -> str:
    return run_cli(world["env"], "jobs", "run", "recommendations", "--at", AT.isoformat()).stdout


def recommendations(world, org: str = "alpha", state: str = "all") -> dict[str, dict]:
    rows = _run(_with_conn(world["url"], lambda c: understand_api.list_recommendations(c, world[org], state)))
    return {r["feature"]: r for r in rows}


def test_task_first_heuristics_reasoning_and_volume(world):
    run_job(world)
    recs = recommendations(world)
    tagger = recs["tagger"]  # declared classification: high confidence, aggressive, via the family
    assert (tagger["provider"], tagger["current_model"], tagger["suggested_model"]) == (
        "openai", "gpt-4.1-2025-04-14", "gpt-4.1-nano")
    assert (tagger["confidence"], tagger["aggressiveness"], tagger["state"]) == ("high", "aggressive", "open")
    assert tagger["signals"]["dominant_task"] == "classification" and tagger["signals"]["requests"] == 600
    mystery = recs["mystery"]  # no task, short completions: heuristics, medium, one step gentler
    assert (mystery["confidence"], mystery["aggressiveness"], mystery["suggested_model"]) == (
        "medium", "moderate", "gpt-4.1-mini")
    assert mystery["signals"]["task_source"] == "heuristic"
    assert "thinker" not in recs  # any reasoning: never downgraded
    assert "tiny" not in recs  # 90 requests: under LECTR_RECOMMEND_MIN_REQUESTS
    digest = recs["digest"]  # summarisation: moderate, within Anthropic
    assert (digest["provider"], digest["suggested_model"], digest["confidence"]) == (
        "anthropic", "claude-haiku-4-5", "high")
    for r in recs.values():  # never across providers: every target is on the ladder of its provider
        assert (r["provider"], r["suggested_model"]) in world["ladder"]


def test_monthly_saving_comes_from_the_seeded_prices(world):
    run_job(world)
    tagger = recommendations(world)["tagger"]
    table = world["table"]
    current, target = table.lookup("openai", "gpt-4.1", AT), table.lookup("openai", "gpt-4.1-nano", AT)
    assert current is not None and target is not None
    prompt, completion = 600 * 2000, 600 * 5

    def cost(p):
        return (prompt * float(p.input_per_mtok) + completion * float(p.output_per_mtok)) / 1e6

    assert float(tagger["monthly_saving_usd"]) == pytest.approx(cost(current) - cost(target), abs=0.011)
    assert float(tagger["monthly_saving_usd"]) > 0
    # unpriced current cost: priced at the current model's prices instead
    digest = recommendations(world)["digest"]
    assert digest["monthly_saving_usd"] is None or float(digest["monthly_saving_usd"]) > 0


def test_one_row_per_org_feature_and_model_however_often_it_runs(world):
    run_job(world)
    run_job(world)
    count = _run(_with_conn(world["url"], lambda c: c.fetchval(
        "SELECT count(*) FROM recommendations WHERE org_id = $1", world["alpha"])))
    assert count == 3
    assert set(recommendations(world, "beta")) == {"tagger"}


def test_a_dismissed_recommendation_stays_dismissed_until_its_signals_change(world):
    run_job(world)
    tagger = recommendations(world)["tagger"]
    _run(_with_conn(world["url"], lambda c: understand_api.dismiss_recommendation(c, world["alpha"], tagger["id"])))
    run_job(world)
    assert recommendations(world)["tagger"]["state"] == "dismissed"
    assert "tagger" not in recommendations(world, state="open")
    # the same traffic again in the window: requests double, a material change
    more = usage_rows(world["alpha"], "tagger", model="gpt-4.1-2025-04-14", tasks={"classification": 20},
                      prompt=2000, completion=5, prices=world["table"].lookup("openai", "gpt-4.1", AT),
                      end=AT - timedelta(hours=2))  # other hours of the same days
    _run(_with_conn(world["url"], lambda c: insert_rollups(c, more)))
    run_job(world)
    again = recommendations(world)["tagger"]
    assert again["state"] == "open" and again["id"] == tagger["id"] and again["signals"]["requests"] == 1200


def test_a_feature_that_starts_reasoning_loses_its_recommendation(world):
    run_job(world)
    assert "mystery" in recommendations(world, state="open")
    rows = usage_rows(world["alpha"], "mystery", model="gpt-4.1", tasks={"reasoning": 1}, prompt=300,
                      completion=20, days=1)
    _run(_with_conn(world["url"], lambda c: insert_rollups(c, rows)))
    out = run_job(world)
    assert "withdrawn 1" in out
    assert "mystery" not in recommendations(world)


def test_signals_are_stored_as_json(world):
    run_job(world)
    raw = _run(_with_conn(world["url"], lambda c: c.fetchval(
        "SELECT signals::text FROM recommendations WHERE org_id = $1 AND feature = 'tagger'", world["alpha"])))
    signals = orjson.loads(raw)
    assert {"requests", "avg_prompt_tokens", "avg_completion_tokens", "error_rate", "p95_latency_ms",
            "cost_usd", "dominant_task", "dominant_task_share"} <= set(signals)
