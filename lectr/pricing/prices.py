"""Model prices (cold path): ``model_pricing`` in memory, costs, and seeding (from genai-prices).

An operator's rows (negotiated prices) win over seeded ones; a model with no row stays unpriced.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from datetime import UTC, datetime, time
from decimal import Decimal
from importlib import resources
from typing import TYPE_CHECKING

import orjson

# The price rules are part of this module's surface too (rows.py and the API import them from here).
from lectr.pricing.rules import (EPOCH, PriceRow, PriceTier, PricingError, SeedRow, compute_cost, parse_price,
                               tiers_from_json, tiers_to_json)

__all__ = ["EPOCH", "PriceRow", "PriceTier", "PricingError", "PricingTable", "SeedRow", "add_operator_price",
           "compute_cost", "downgrade_rows", "ensure_seeded", "list_prices", "load_pricing", "normalize_model",
           "seed_downgrades", "seed_pricing", "tiers_from_json", "tiers_to_json"]
from lectr.providers.gemini import MODEL_NAMESPACE
from lectr.providers.registry import PROVIDER_NAMES, PROVIDERS

if TYPE_CHECKING:
    import asyncpg

# Whose rows price a model a provider has none for (Azure: OpenAI's, the same models under the
# same names, of which genai-prices lists few for Azure); each provider module says its own.
_FALLBACK_PROVIDER = {p.name: p.price_fallback for p in PROVIDERS.values() if p.price_fallback}
# Version suffixes that pin a snapshot of a family: -2024-08-06, -20241022, @20250514, -0125 (MMDD),
# -001 (Gemini's stable versions), -latest. MMDD is checked as a date so -4096, -8192 stay names.
_SNAPSHOT = re.compile(r"(?:[-@](?:\d{4}-\d{2}-\d{2}|20\d{6})|-(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
                       r"|-0\d\d|-latest)$")
# Dated previews (gemini-2.5-flash-preview-05-20, ...-preview-09-2025): try the undated preview,
# which may be priced apart from the family, before the family itself.
_PREVIEW_SNAPSHOT = re.compile(r"-preview-(?:\d{2}-\d{2}|\d{2}-\d{4})$")
_MEMO_MAX = 10_000
_MISSING = object()
_SEED_LOCK = 0x4C454355  # advisory lock so several starting processes seed once


def normalize_model(model: str) -> str:
    """The key a model name is matched by: lower case, without Gemini's ``models/`` prefix."""
    name = model.strip().lower()
    return name[len(MODEL_NAMESPACE):] if name.startswith(MODEL_NAMESPACE) else name


def _name_candidates(name: str) -> list[str]:
    """The name itself, then the family it is a snapshot of (most specific first)."""
    preview = _PREVIEW_SNAPSHOT.search(name)
    snapshot = preview or _SNAPSHOT.search(name)
    if not snapshot or snapshot.start() == 0:
        return [name]
    family = name[:snapshot.start()]
    names = [name, family + "-preview", family] if preview else [name, family]
    if not name.endswith("-latest"):
        # Some families are listed only as "-latest" (claude-3-opus-latest prices claude-3-opus-20240229).
        names.append(family + "-latest")
    return names


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


class PricingTable:
    """Every price row, indexed for ``lookup``; immutable, so a reload builds a new table."""

    def __init__(self, rows: Iterable[PriceRow]) -> None:
        # (provider, name) -> (operator rows, seed rows), each sorted by effective_from.
        self._by_key: dict[tuple[str, str], tuple[list[PriceRow], list[PriceRow]]] = {}
        # Proleptic ordinals (date.toordinal) of the UTC days on which some price starts mid-day.
        self._change_days: set[int] = set()
        self._count = 0
        for row in sorted(rows, key=lambda r: r.effective_from):
            operator, seed = self._by_key.setdefault((row.provider, normalize_model(row.model)), ([], []))
            (operator if row.source == "operator" else seed).append(row)
            start = row.effective_from.astimezone(UTC)
            if start.time() != time(0):
                # A price that starts mid-day: lookups on that day cannot share one memo entry.
                self._change_days.add(start.toordinal())
            self._count += 1
        self._memo: dict[tuple[str, str, int], PriceRow | None] = {}

    def __len__(self) -> int:
        return self._count

    def lookup(self, provider: str, model: str | None, at: datetime) -> PriceRow | None:
        """The row pricing ``model`` on ``provider`` at ``at``, or None when no row applies."""
        return self.lookup_utc(provider, model, _utc(at).astimezone(UTC))

    def lookup_utc(self, provider: str, model: str | None, at: datetime) -> PriceRow | None:
        """``lookup`` for an ``at`` already in UTC (as every row's ``created_at`` is): no zone arithmetic."""
        if not model:
            return None
        day = at.toordinal()
        if day in self._change_days:
            return self._resolve(provider, model, at)
        key = (provider, model, day)
        found = self._memo.get(key, _MISSING)
        if found is _MISSING:
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()  # the working set is small; a rare refill is cheaper than LRU
            # Memoized per day: no row starts mid-day on this day, so the whole day resolves alike.
            found = self._memo[key] = self._resolve(provider, model, at)
        return found

    def _resolve(self, provider: str, model: str, at: datetime) -> PriceRow | None:
        names = _name_candidates(normalize_model(model))
        for prov in filter(None, (provider, _FALLBACK_PROVIDER.get(provider))):
            for name in names:
                row = self._pick((prov, name), at)
                if row is not None:
                    return row
        return None

    def _pick(self, key: tuple[str, str], at: datetime) -> PriceRow | None:
        """Operator rows first; within a source, the latest one already in effect."""
        for rows in self._by_key.get(key, ()):
            for row in reversed(rows):
                if row.effective_from <= at:
                    return row
        return None


async def load_pricing(conn: asyncpg.Connection) -> PricingTable:
    """Every ``model_pricing`` row, as a table."""
    records = await conn.fetch("""
        SELECT id, provider, model, input_usd_per_mtok, output_usd_per_mtok,
               cached_input_usd_per_mtok, effective_from, source, cache_write_usd_per_mtok,
               reasoning_usd_per_mtok, tiers
        FROM model_pricing""")
    return PricingTable(PriceRow(*r[:10], tiers_from_json(r[10])) for r in records)


async def seed_pricing(conn: asyncpg.Connection) -> int:
    """Upsert the genai-prices rows as source 'seed' (operator rows untouched); return rows written."""
    from lectr.pricing.seed import rows_from_child

    rows = [(*r[:-1], tiers_to_json(r.tiers)) for r in await rows_from_child()]
    return await _upsert(conn, rows, 9, """
        INSERT INTO model_pricing (provider, model, input_usd_per_mtok, output_usd_per_mtok,
                                   cached_input_usd_per_mtok, effective_from, source, note,
                                   cache_write_usd_per_mtok, tiers)
        SELECT p, m, i, o, c, e, 'seed', n, w, tj::jsonb
        FROM unnest($1::text[], $2::text[], $3::numeric[], $4::numeric[], $5::numeric[],
                    $6::timestamptz[], $7::text[], $8::numeric[], $9::text[]) AS t(p, m, i, o, c, e, n, w, tj)
        ON CONFLICT (provider, model, source, effective_from) DO UPDATE SET
            input_usd_per_mtok = EXCLUDED.input_usd_per_mtok,
            output_usd_per_mtok = EXCLUDED.output_usd_per_mtok,
            cached_input_usd_per_mtok = EXCLUDED.cached_input_usd_per_mtok,
            cache_write_usd_per_mtok = EXCLUDED.cache_write_usd_per_mtok,
            tiers = EXCLUDED.tiers,
            note = EXCLUDED.note""")


async def _upsert(conn: asyncpg.Connection, rows: list[tuple], width: int, sql: str) -> int:
    """Run one INSERT ... SELECT FROM unnest($1..$width) for all rows; return rows written."""
    columns = [list(c) for c in zip(*rows)] if rows else [[]] * width
    status = await conn.execute(sql, *columns)
    return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <n>"


# -- operator prices ------------------------------------------------------------------------

async def add_operator_price(conn: asyncpg.Connection, *, provider: str, model: str,
                             input_per_mtok: object, output_per_mtok: object,
                             cached_input_per_mtok: object = None, cache_write_per_mtok: object = None,
                             reasoning_per_mtok: object = None, tiers: object = None,
                             effective_from: datetime | None = None, note: str | None = None) -> int:
    """Record an operator's (negotiated) price, which wins over seeded ones; return its id.

    Prices are USD per million tokens (numbers or numeric strings); the optional ones fall back
    as ``compute_cost`` says. ``tiers``: a list of ``{"start": N, "input_usd_per_mtok": …, …}``
    (keys named like the columns; see ``tiers_from_json``). Raises PricingError, one line.
    """
    import asyncpg  # here, not at the top: importing pricing must not pull in the database driver

    if provider not in PROVIDER_NAMES:
        raise PricingError(f"unknown provider {provider!r}: expected one of {', '.join(PROVIDER_NAMES)}")
    model = (model or "").strip()
    if not model:
        raise PricingError("model must not be empty")
    prices = (parse_price("input price", input_per_mtok), parse_price("output price", output_per_mtok),
              parse_price("cached input price", cached_input_per_mtok, required=False),
              parse_price("cache write price", cache_write_per_mtok, required=False),
              parse_price("reasoning price", reasoning_per_mtok, required=False))
    tier_json = tiers_to_json(tiers_from_json(tiers))
    start = _utc(effective_from) if effective_from is not None else None
    try:
        return await conn.fetchval("""
            INSERT INTO model_pricing (provider, model, input_usd_per_mtok, output_usd_per_mtok,
                                       cached_input_usd_per_mtok, cache_write_usd_per_mtok,
                                       reasoning_usd_per_mtok, tiers, effective_from, source, note)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, COALESCE($9, now()), 'operator', $10)
            RETURNING id""", provider, model, *prices, tier_json, start, note)
    except asyncpg.UniqueViolationError:
        when = start.isoformat() if start else "this instant"
        raise PricingError(f"an operator price for {provider} {model} already starts at {when}") from None


# -- downgrades and first start -------------------------------------------------------------

def downgrade_rows() -> list[tuple[str, str, str, str]]:
    """(provider, from_model, to_model, aggressiveness) from ``seeds/model_downgrades.csv``."""
    text = resources.files("lectr").joinpath("seeds", "model_downgrades.csv").read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [(r["provider"], r["from_model"], r["to_model"], r["aggressiveness"])
            for r in csv.DictReader(lines)]


async def seed_downgrades(conn: asyncpg.Connection) -> int:
    """Upsert the shipped downgrade ladder into ``model_downgrades``; return rows written."""
    return await _upsert(conn, downgrade_rows(), 4, """
        INSERT INTO model_downgrades (provider, from_model, to_model, aggressiveness)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
        ON CONFLICT (provider, from_model, aggressiveness) DO UPDATE SET to_model = EXCLUDED.to_model""")


async def ensure_seeded(conn: asyncpg.Connection) -> None:
    """On first start, seed prices and downgrades if their tables have none."""
    async with conn.transaction():
        # Several processes may start at once; one seeds, the others then find the rows.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SEED_LOCK)
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM model_pricing WHERE source = 'seed')"):
            await seed_pricing(conn)
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM model_downgrades)"):
            await seed_downgrades(conn)


async def list_prices(conn: asyncpg.Connection, *, provider: str | None = None, model: str | None = None,
                      limit: int = 500) -> list[dict]:
    """``model_pricing`` rows, newest version first, optionally for one provider or model."""
    rows = await conn.fetch("""
        SELECT id, provider, model, input_usd_per_mtok, output_usd_per_mtok, cached_input_usd_per_mtok,
               cache_write_usd_per_mtok, reasoning_usd_per_mtok, tiers, effective_from, source, note
        FROM model_pricing
        WHERE ($1::text IS NULL OR provider = $1) AND ($2::text IS NULL OR model = $2)
        ORDER BY provider, model, effective_from DESC, source LIMIT $3""", provider, model, limit)
    # Tiers as objects with numeric prices, like the columns beside them.
    return [{**r, "tiers": [{"start": t["start"], **{k: Decimal(v) for k, v in t.items() if k != "start"}}
                            for t in orjson.loads(r["tiers"])]} for r in rows]
