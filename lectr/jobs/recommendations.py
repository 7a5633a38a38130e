"""The recommendation job: 30 days of rollups per (org, feature, model) → ``recommendations`` rows.

Daily (``LECTR_RECOMMEND_INTERVAL``), one process at a time (advisory lock ``RECOMMEND_LOCK``).
For each org and each feature with at least ``LECTR_RECOMMEND_MIN_REQUESTS`` requests in the
window, each (provider, ``model_used``) it uses becomes a ``recommend_model.ModelUsage``; the
pure rules (``lectr.analysis.recommend_model.recommend``) decide against the ``model_downgrades``
ladder and the current prices. Persisted, one row per (org, feature, current model):

- a recommendation → inserted ``open``, or an open row updated; a ``dismissed`` row stays
  dismissed (and keeps the signals it was dismissed with) until ``changed_materially`` says its
  signals moved, then it opens again; an ``applied`` row is left alone;
- no recommendation any more (e.g. the feature started sending ``reasoning``) → an open row is
  deleted; dismissed and applied rows are kept as the record of a decision.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from lectr.analysis import histogram as hg
from lectr.analysis import recommend_model as rm
from lectr.pricing.prices import PricingTable, _name_candidates, load_pricing, normalize_model

RECOMMEND_LOCK = 0x4C435243  # "LCRC"


class _Prices(Mapping):
    """``(provider, model)`` → ``rm.Price`` at ``at``, read from the pricing table on demand."""

    def __init__(self, table: PricingTable, at: datetime) -> None:
        self._table, self._at = table, at

    def __getitem__(self, key: tuple[str, str]) -> rm.Price:
        row = self._table.lookup(key[0], key[1], self._at)
        if row is None:
            raise KeyError(key)
        cached = row.cached_input_per_mtok
        return rm.Price(float(row.input_per_mtok), float(row.output_per_mtok),
                        None if cached is None else float(cached))

    def __iter__(self) -> Iterator:
        return iter(())

    def __len__(self) -> int:
        return 0


def model_names(model: str) -> list[str]:
    """The names a model is known by in the ladder: itself, then the family of a dated snapshot."""
    return _name_candidates(normalize_model(model))


async def load_usages(conn: asyncpg.Connection, org_id: int, since: datetime, until: datetime,
                      min_feature_requests: int) -> list[rm.ModelUsage]:
    """One ``ModelUsage`` per (feature, provider, model) of the org's rollups in ``[since, until)``,
    for features with at least ``min_feature_requests`` requests."""
    rows = await conn.fetch("""
        WITH busy AS (
            SELECT feature FROM request_rollups WHERE org_id = $1 AND hour >= $2 AND hour < $3
            GROUP BY feature HAVING sum(requests) >= $4)
        SELECT r.feature, r.provider, r.model_used, r.task, r.requests,
               r.errors_provider + r.errors_lectr + r.errors_client AS errors,
               r.cost_usd::float8 AS cost, r.unpriced_requests, r.prompt_tokens, r.completion_tokens,
               r.cached_tokens, r.latency_buckets
        FROM request_rollups r JOIN busy USING (feature)
        WHERE r.org_id = $1 AND r.hour >= $2 AND r.hour < $3 AND r.model_used <> ''""",
                            org_id, since, until, min_feature_requests)
    acc: dict[tuple[str, str, str], dict] = {}
    for r in rows:
        a = acc.setdefault((r["feature"], r["provider"], r["model_used"]), {
            "requests": 0, "errors": 0, "cost": 0.0, "unpriced": 0, "prompt": 0, "completion": 0,
            "cached": 0, "tasks": {}, "buckets": hg.empty()})
        a["requests"] += r["requests"]
        a["errors"] += r["errors"]
        a["cost"] += r["cost"]
        a["unpriced"] += r["unpriced_requests"]
        a["prompt"] += r["prompt_tokens"]
        a["completion"] += r["completion_tokens"]
        a["cached"] += r["cached_tokens"]
        if r["task"]:
            a["tasks"][r["task"]] = a["tasks"].get(r["task"], 0) + r["requests"]
        buckets = a["buckets"]
        for i, c in enumerate(r["latency_buckets"]):
            if c:
                buckets[i] += c
    usages = []
    for (feature, provider, model), a in sorted(acc.items()):
        n = a["requests"]
        if n <= 0:
            continue
        usages.append(rm.ModelUsage(
            org_id=org_id, feature=feature, provider=provider, model=model, requests=n,
            avg_prompt_tokens=a["prompt"] / n, avg_completion_tokens=a["completion"] / n,
            error_rate=a["errors"] / n, p95_latency_ms=hg.quantile(a["buckets"], 0.95),
            # a partly unpriced window would understate what the traffic costs: price it instead
            cost_usd=a["cost"] if a["unpriced"] == 0 else None,
            task_shares={t: c / n for t, c in a["tasks"].items()}, avg_cached_tokens=a["cached"] / n))
    return usages


async def load_downgrades(conn: asyncpg.Connection) -> dict[tuple[str, str], dict[str, str]]:
    rows = await conn.fetch("SELECT provider, from_model, to_model, aggressiveness FROM model_downgrades")
    return rm.index_downgrades(rm.Downgrade(*r) for r in rows)


def _comparable(signals: Mapping, suggested_model: str, confidence: str) -> dict:
    return {**signals, "suggested_model": suggested_model, "confidence": confidence}


async def run_recommendations(conn: asyncpg.Connection, *, min_requests: int = 500,
                              at: datetime | None = None, window_days: int = 30) -> dict[str, int]:
    """Recompute every org's recommendations from the ``window_days`` before ``at`` (default now).

    The caller holds ``RECOMMEND_LOCK``. Returns counts: opened, updated, reopened, kept dismissed,
    withdrawn.
    """
    at = at or datetime.now(UTC)
    until = at.replace(minute=0, second=0, microsecond=0)
    since = until - timedelta(days=window_days)
    policy = rm.Policy(min_requests=min_requests, window_days=float(window_days))
    counts = dict.fromkeys(("opened", "updated", "reopened", "kept_dismissed", "withdrawn"), 0)
    org_ids = [r["org_id"] for r in await conn.fetch(
        "SELECT DISTINCT org_id FROM request_rollups WHERE hour >= $1 AND hour < $2", since, until)]
    if not org_ids:
        return counts
    prices = _Prices(await load_pricing(conn), at)
    downgrades = await load_downgrades(conn)
    for org_id in org_ids:
        existing = {(r["feature"], r["current_model"]): r for r in await conn.fetch(
            "SELECT id, feature, current_model, suggested_model, confidence, state, signals::text AS signals "
            "FROM recommendations WHERE org_id = $1", org_id)}
        seen = set()
        for usage in await load_usages(conn, org_id, since, until, min_requests):
            result = rm.recommend(usage, downgrades, prices, policy, model_names=model_names)
            key = (usage.feature, usage.model)
            if not isinstance(result, rm.Recommendation):
                continue
            seen.add(key)
            counts[await _upsert(conn, result, existing.get(key))] += 1
        for key, row in existing.items():
            if key not in seen and row["state"] == "open":
                await conn.execute("DELETE FROM recommendations WHERE id = $1", row["id"])
                counts["withdrawn"] += 1
    return counts


async def _upsert(conn: asyncpg.Connection, rec: rm.Recommendation, row) -> str:
    values = (rec.org_id, rec.feature, rec.provider, rec.current_model, rec.suggested_model, rec.aggressiveness,
              rec.confidence, rec.reason, orjson.dumps(rec.signals).decode(), rec.estimated_monthly_saving_usd)
    if row is None:
        await conn.execute("""
            INSERT INTO recommendations (org_id, feature, provider, current_model, suggested_model, aggressiveness,
                                         confidence, reason, signals, monthly_saving_usd)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10)
            ON CONFLICT (org_id, feature, current_model) DO NOTHING""", *values)
        return "opened"
    if row["state"] == "applied":
        return "updated"  # the routing rule decides from here; nothing to refresh
    outcome = "updated"
    if row["state"] == "dismissed":
        old = _comparable(orjson.loads(row["signals"]), row["suggested_model"], row["confidence"])
        if not rm.changed_materially(old, _comparable(rec.signals, rec.suggested_model, rec.confidence)):
            return "kept_dismissed"
        outcome = "reopened"
    await conn.execute("""
        UPDATE recommendations SET provider = $3, suggested_model = $5, aggressiveness = $6, confidence = $7,
                                   reason = $8, signals = $9::jsonb, monthly_saving_usd = $10, state = 'open',
                                   updated_at = now()
        WHERE org_id = $1 AND feature = $2 AND current_model = $4""", *values)
    return outcome
