"""Pricing: lookups and costs in memory, seed data checked against an independent price list,
and seeding/operator prices against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import itertools
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from lectr.platform import db
from lectr.pricing.seed import genai_price_rows, rows_from_child
from lectr.pricing.prices import (
    EPOCH, PriceRow, PriceTier, PricingError, PricingTable, add_operator_price, compute_cost, downgrade_rows,
    ensure_seeded, list_prices, load_pricing, seed_downgrades, seed_pricing)

# An independent price list (LiteLLM's), the rows of the models cross-checked below; its header cites it.
MODEL_PRICES_CSV = Path(__file__).resolve().parents[1] / "data" / "model_prices.csv"
DOWNGRADES_CSV = Path(__file__).resolve().parents[2] / "lectr" / "seeds" / "model_downgrades.csv"
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
_ids = itertools.count(1)


def row(provider="openai", model="gpt-4o", inp="2.5", out="10", cached=None, *,
        start=EPOCH, source="seed") -> PriceRow:
    return PriceRow(next(_ids), provider, model, Decimal(inp), Decimal(out),
                    None if cached is None else Decimal(cached), start, source)


# -- lookup ---------------------------------------------------------------------------------

def test_operator_row_wins_over_seed_row():
    seed, operator = row(), row(inp="2", source="operator")
    table = PricingTable([seed, operator])
    assert table.lookup("openai", "gpt-4o", NOW) is operator
    assert len(table) == 2


def test_operator_row_not_yet_in_effect_leaves_the_seed_row():
    seed = row()
    later = row(inp="1", source="operator", start=NOW + timedelta(days=30))
    table = PricingTable([seed, later])
    assert table.lookup("openai", "gpt-4o", NOW) is seed
    assert table.lookup("openai", "gpt-4o", NOW + timedelta(days=31)) is later


def test_latest_effective_row_wins_and_future_rows_wait():
    old, cut, future = (row(inp="10", start=EPOCH), row(inp="2", start=datetime(2025, 6, 10, tzinfo=UTC)),
                        row(inp="1", start=datetime(2027, 1, 1, tzinfo=UTC)))
    table = PricingTable([future, cut, old])
    assert table.lookup("openai", "gpt-4o", datetime(2025, 6, 9, 23, tzinfo=UTC)) is old
    assert table.lookup("openai", "gpt-4o", datetime(2025, 6, 10, tzinfo=UTC)) is cut
    assert table.lookup("openai", "gpt-4o", NOW) is cut
    assert table.lookup("openai", "gpt-4o", datetime(2027, 1, 2, tzinfo=UTC)) is future


def test_a_price_starting_mid_day_is_not_hidden_by_the_per_day_memo():
    seed = row()
    noon = row(inp="1", source="operator", start=datetime(2026, 6, 1, 12, tzinfo=UTC))
    table = PricingTable([seed, noon])
    assert table.lookup("openai", "gpt-4o", datetime(2026, 6, 1, 9, tzinfo=UTC)) is seed
    assert table.lookup("openai", "gpt-4o", datetime(2026, 6, 1, 15, tzinfo=UTC)) is noon


def test_naive_times_are_utc():
    cut = row(start=datetime(2025, 6, 10, tzinfo=UTC))
    table = PricingTable([cut])
    assert table.lookup("openai", "gpt-4o", datetime(2025, 6, 10, 1)) is cut
    assert table.lookup("openai", "gpt-4o", datetime(2025, 6, 9, 23)) is None


@pytest.mark.parametrize("model,family", [
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
    ("claude-sonnet-4@20250514", "claude-sonnet-4"),
    ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
    ("gpt-4-1106", "gpt-4"),
    ("claude-3-opus-latest", "claude-3-opus"),
    ("claude-3-opus-20240229", "claude-3-opus-latest"),  # a family listed only as -latest
    ("gemini-2.0-flash-001", "gemini-2.0-flash"),
    ("gemini-2.5-flash-preview-09-2025", "gemini-2.5-flash"),
])
def test_dated_names_fall_back_to_their_family(model, family):
    provider = "gemini" if model.startswith("gemini") else "openai"
    family_row = row(provider, family)
    assert PricingTable([family_row]).lookup(provider, model, NOW) is family_row


def test_a_dated_name_with_its_own_row_uses_it():
    family, dated = row(model="gpt-4o"), row(model="gpt-4o-2024-05-13", inp="5", out="15")
    table = PricingTable([family, dated])
    assert table.lookup("openai", "gpt-4o-2024-05-13", NOW) is dated
    assert table.lookup("openai", "gpt-4o-2024-08-06", NOW) is family


def test_a_dated_preview_prefers_the_undated_preview_then_the_family():
    preview = row("gemini", "gemini-2.5-flash-preview", "0.15", "0.6")
    family = row("gemini", "gemini-2.5-flash", "0.3", "2.5")
    table = PricingTable([preview, family])
    assert table.lookup("gemini", "gemini-2.5-flash-preview-05-20", NOW) is preview
    assert PricingTable([family]).lookup("gemini", "gemini-2.5-flash-preview-05-20", NOW) is family


def test_numbers_that_are_not_dates_are_part_of_the_name():
    assert PricingTable([row("groq", "llama3-70b")]).lookup("groq", "llama3-70b-8192", NOW) is None
    assert PricingTable([row(model="gpt-4")]).lookup("openai", "gpt-4-1399", NOW) is None


def test_azure_falls_back_to_openai_only_without_a_row_of_its_own():
    openai_4o, openai_turbo, azure_turbo = (row("openai", "gpt-4o"), row("openai", "gpt-4-turbo", "10", "30"),
                                            row("azure", "gpt-4-turbo", "11", "33"))
    table = PricingTable([openai_4o, openai_turbo, azure_turbo])
    assert table.lookup("azure", "gpt-4o", NOW) is openai_4o
    assert table.lookup("azure", "gpt-4o-2024-08-06", NOW) is openai_4o
    assert table.lookup("azure", "gpt-4-turbo", NOW) is azure_turbo
    assert table.lookup("groq", "gpt-4o", NOW) is None  # only Azure borrows OpenAI's prices


def test_names_match_case_insensitively_and_without_models_prefix():
    flash = row("gemini", "gemini-2.5-flash")
    table = PricingTable([flash, row(model="GPT-4o-Mini", source="operator")])
    assert table.lookup("gemini", "models/gemini-2.5-flash", NOW) is flash
    assert table.lookup("gemini", "Gemini-2.5-Flash", NOW) is flash
    assert table.lookup("openai", "gpt-4o-mini", NOW).model == "GPT-4o-Mini"


@pytest.mark.parametrize("provider,model", [("openai", "gpt-unknown"), ("openai", None), ("openai", ""),
                                            ("anthropic", "gpt-4o"), ("gemini", "-2024-08-06")])
def test_unknown_is_none(provider, model):
    assert PricingTable([row()]).lookup(provider, model, NOW) is None


def test_lookups_are_memoized_per_day():
    table = PricingTable([row()])
    first = table.lookup("openai", "gpt-4o-2024-08-06", NOW)
    assert table.lookup("openai", "gpt-4o-2024-08-06", NOW + timedelta(hours=3)) is first
    assert len(table._memo) == 1


@pytest.mark.parametrize("at", [
    datetime(2026, 6, 1, 11, 59, 59, 999999, tzinfo=UTC), datetime(2026, 6, 1, 12, tzinfo=UTC),
    datetime(2026, 5, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(2026, 6, 2, tzinfo=UTC),
    datetime(2026, 6, 1, 7, tzinfo=timezone(timedelta(hours=-5))), datetime(2026, 6, 1, 13),
])
def test_lookup_utc_agrees_with_lookup_around_a_mid_day_change(at):
    seed, noon = row(), row(inp="1", source="operator", start=datetime(2026, 6, 1, 12, tzinfo=UTC))
    table = PricingTable([seed, noon])
    expected = noon if at.replace(tzinfo=at.tzinfo or UTC) >= noon.effective_from else seed
    assert table.lookup("openai", "gpt-4o", at) is expected
    utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    assert table.lookup_utc("openai", "gpt-4o", utc) is expected


# -- cost -----------------------------------------------------------------------------------

def test_cost_of_prompt_and_completion():
    cost, partial = compute_cost(row(inp="2.5", out="10"), prompt_tokens=1000, completion_tokens=500,
                                 cached_tokens=None)
    assert (cost, partial) == (Decimal("0.0075"), False)


def test_cached_tokens_are_part_of_the_prompt_at_the_cached_price():
    cost, partial = compute_cost(row(inp="2.5", out="10", cached="1.25"), prompt_tokens=1000,
                                 completion_tokens=500, cached_tokens=400)
    assert cost == Decimal("600") * Decimal("2.5") / 10**6 + Decimal("400") * Decimal("1.25") / 10**6 \
        + Decimal("500") * 10 / 10**6
    assert partial is False


def test_cached_tokens_without_a_cached_price_pay_the_input_price():
    cost, _ = compute_cost(row(inp="2", out="8"), prompt_tokens=1000, completion_tokens=0, cached_tokens=400)
    assert cost == Decimal("0.002")


def test_completion_only_is_partial():
    assert compute_cost(row(inp="2.5", out="10"), prompt_tokens=None, completion_tokens=1000,
                        cached_tokens=None) == (Decimal("0.01"), True)


@pytest.mark.parametrize("cached,billed_cached", [(-5, 0), (0, 0), (None, 0), (400, 400), (1500, 1000)])
def test_cached_tokens_are_clamped_to_the_prompt(cached, billed_cached):
    cost, _ = compute_cost(row(inp="2", out="8", cached="1"), prompt_tokens=1000, completion_tokens=None,
                           cached_tokens=cached)
    assert cost == (Decimal(1000 - billed_cached) * 2 + Decimal(billed_cached)) / 10**6


def test_cost_keeps_the_exponent_decimal_arithmetic_gives_it():
    cost, _ = compute_cost(row(inp="1E+1", out="2.50"), prompt_tokens=100_000, completion_tokens=None,
                           cached_tokens=0)
    assert str(cost) == "1"  # (0 + 100000 * 1E+1) / 1E+6, exactly as Decimal(0) + ... always gave


def test_no_tokens_no_cost():
    assert compute_cost(row(), prompt_tokens=None, completion_tokens=None, cached_tokens=None) == (None, False)


# -- seed data ------------------------------------------------------------------------------

def test_seed_rows_cover_lectrs_providers_with_dated_aliases():
    rows = genai_price_rows()
    keys = [(r.provider, r.model, r.effective_from) for r in rows]
    assert len(keys) == len(set(keys))
    assert {r.provider for r in rows} == {"openai", "anthropic", "groq", "gemini", "azure", "mistral"}
    names = {(r.provider, r.model) for r in rows}
    assert {("openai", "gpt-4o-2024-08-06"), ("openai", "gpt-4o"), ("gemini", "gemini-2.5-flash"),
            ("groq", "openai/gpt-oss-120b")} <= names
    assert all(r.note.startswith("genai-prices ") for r in rows)
    # o3's price cut of 2025-06-10 is its own period.
    o3 = sorted((r.effective_from, r.input_per_mtok) for r in rows if r.provider == "openai" and r.model == "o3")
    assert o3 == [(EPOCH, Decimal("10")), (datetime(2025, 6, 10, tzinfo=UTC), Decimal("2"))]


def test_seed_rows_skip_models_not_priced_by_tokens():
    names = {(r.provider, r.model) for r in genai_price_rows()}
    assert ("openai", "whisper-1") not in names
    assert ("openai", "tts-1") not in names


def test_seed_rows_price_models_with_only_an_input_price():
    rows = {(r.provider, r.model): r for r in genai_price_rows()}
    embedding = rows[("openai", "text-embedding-3-small")]
    assert (embedding.input_per_mtok, embedding.output_per_mtok) == (Decimal("0.02"), 0)


def _reference_prices() -> dict[tuple[str, str], dict[str, str]]:
    lines = [ln for ln in MODEL_PRICES_CSV.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return {(r["provider"], r["model"]): r for r in csv.DictReader(lines)}


# Well-known models present in both lists. Left out because the sources genuinely differ:
# - anthropic/claude-3-5-haiku-latest: LiteLLM 1/5, genai-prices 0.8/4 (Anthropic's list price;
#   LiteLLM itself has 0.8/4 for claude-3-5-haiku-20241022).
# - gemini/gemini-1.5-pro: LiteLLM 3.5/10.5 (before Google's Oct 2024 cut), genai-prices 1.25/5.
# - azure/gpt-4-turbo: LiteLLM 11/33 for Azure; genai-prices has no Azure row, so OpenAI's 10/30.
# - azure/text-embedding-3-small: LiteLLM 0.022 for Azure; genai-prices 0.02, OpenAI's price.
# Not priced by Lectr at all (so not compared): gemma/gemini-1.5-flash-8b (free tier, no prices),
# claude-mythos-5 (only -5-2 in genai-prices), gemini-3.1-flash-lite-preview (matched by prefix
# only in genai-prices).
CROSS_CHECKED = [
    ("openai", "gpt-4o"), ("openai", "gpt-4o-2024-08-06"), ("openai", "gpt-4o-2024-05-13"),
    ("openai", "gpt-4o-mini"), ("openai", "gpt-4.1"), ("openai", "gpt-4.1-mini"), ("openai", "gpt-4.1-nano"),
    ("openai", "gpt-5"), ("openai", "gpt-5-mini"), ("openai", "gpt-5-nano"), ("openai", "gpt-5.6-sol"),
    ("openai", "o3"), ("openai", "o4-mini"),
    ("anthropic", "claude-sonnet-4-5"), ("anthropic", "claude-sonnet-4-5-20250929"),
    ("anthropic", "claude-haiku-4-5"), ("anthropic", "claude-opus-4-5"), ("anthropic", "claude-opus-4-1"),
    ("anthropic", "claude-3-5-sonnet-20241022"), ("anthropic", "claude-3-7-sonnet-20250219"),
    ("gemini", "gemini-2.5-pro"), ("gemini", "gemini-2.5-flash"), ("gemini", "gemini-2.5-flash-lite"),
    ("groq", "openai/gpt-oss-120b"), ("groq", "openai/gpt-oss-20b"), ("groq", "llama-3.3-70b-versatile"),
    ("groq", "llama-3.1-8b-instant"), ("azure", "gpt-4o"), ("azure", "gpt-4.1-mini"), ("azure", "o3"),
    ("openai", "text-embedding-3-small"), ("openai", "text-embedding-3-large"), ("gemini", "gemini-embedding-001"),
]
# After the price changes both lists know (gpt-5.6's cuts of summer 2026), before the 2027 rises
# genai-prices announces and the list does not have yet.
CROSS_CHECK_AT = datetime(2026, 11, 1, tzinfo=UTC)


# The list's notes give cache-write prices and long-context tiers: "cache_write=3.75/Mtok",
# "above_200k_tokens in/out=2.5/15".
_CACHE_WRITE_NOTE = re.compile(r"\bcache_write=([\d.]+)/Mtok")
_TIER_NOTE = re.compile(r"\babove_(\d+)k_tokens in/out=([\d.]+)/([\d.]+)")


@pytest.fixture(scope="module")
def seed_table() -> PricingTable:
    return PricingTable(PriceRow(i, r.provider, r.model, r.input_per_mtok, r.output_per_mtok,
                                 r.cached_input_per_mtok, r.effective_from, "seed", r.cache_write_per_mtok,
                                 None, r.tiers)
                        for i, r in enumerate(genai_price_rows(), 1))


def _same(found: Decimal | None, expected: str) -> bool:
    return found is not None and abs(found - Decimal(expected)) < Decimal("1e-9")


@pytest.mark.parametrize("provider,model", CROSS_CHECKED)
def test_seed_prices_agree_with_an_independent_list(seed_table, provider, model):
    reference = _reference_prices()
    assert (provider, model) in reference, f"{provider}/{model} is no longer in {MODEL_PRICES_CSV.name}"
    found = seed_table.lookup(provider, model, CROSS_CHECK_AT)
    assert found is not None, f"no seed price for {provider}/{model}"
    expected = reference[(provider, model)]
    assert _same(found.input_per_mtok, expected["input_usd_per_mtok"])
    assert _same(found.output_per_mtok, expected["output_usd_per_mtok"])
    if expected["cached_input_usd_per_mtok"]:
        assert _same(found.cached_input_per_mtok, expected["cached_input_usd_per_mtok"])
    if cache_write := _CACHE_WRITE_NOTE.search(expected["source_note"]):
        assert _same(found.cache_write_per_mtok, cache_write[1])
    if tier := _TIER_NOTE.search(expected["source_note"]):
        start, tier_in, tier_out = int(tier[1]) * 1000, tier[2], tier[3]
        above = [t for t in found.tiers if t.start == start]
        assert above, f"{provider}/{model} has no tier above {start} tokens"
        assert _same(above[0].input_per_mtok, tier_in) and _same(above[0].output_per_mtok, tier_out)


# -- database -------------------------------------------------------------------------------

@pytest.fixture
async def conn(database_url):
    connection = await asyncpg.connect(database_url)
    await db.migrate(connection)
    yield connection
    await connection.close()


async def test_seed_pricing_writes_every_row_once_and_is_idempotent(conn):
    written = await seed_pricing(conn)
    assert written == len(genai_price_rows()) > 100
    assert await seed_pricing(conn) == written
    assert await conn.fetchval("SELECT count(*) FROM model_pricing WHERE source = 'seed'") == written


async def test_seed_pricing_corrects_changed_prices_and_leaves_operator_rows(conn):
    await seed_pricing(conn)
    operator_id = await add_operator_price(conn, provider="openai", model="gpt-4o-mini",
                                           input_per_mtok="0.1", output_per_mtok="0.5")
    await conn.execute("UPDATE model_pricing SET input_usd_per_mtok = 99 "
                       "WHERE provider = 'openai' AND model = 'gpt-4o' AND source = 'seed'")
    await seed_pricing(conn)
    assert await conn.fetchval("SELECT input_usd_per_mtok FROM model_pricing "
                               "WHERE provider = 'openai' AND model = 'gpt-4o' AND source = 'seed'") == Decimal("2.5")
    assert await conn.fetchval("SELECT input_usd_per_mtok FROM model_pricing WHERE id = $1",
                               operator_id) == Decimal("0.1")


async def test_operator_price_wins_once_loaded(conn):
    await seed_pricing(conn)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    price_id = await add_operator_price(conn, provider="anthropic", model="claude-sonnet-4-5",
                                        input_per_mtok=Decimal("2.4"), output_per_mtok=12,
                                        cached_input_per_mtok="0.24", effective_from=start, note="contract 7")
    table = await load_pricing(conn)
    assert len(table) == await conn.fetchval("SELECT count(*) FROM model_pricing")
    found = table.lookup("anthropic", "claude-sonnet-4-5", NOW)
    assert (found.id, found.source, found.input_per_mtok, found.output_per_mtok, found.cached_input_per_mtok) == (
        price_id, "operator", Decimal("2.4"), Decimal("12"), Decimal("0.24"))
    before = table.lookup("anthropic", "claude-sonnet-4-5", start - timedelta(days=1))
    assert (before.source, before.input_per_mtok) == ("seed", Decimal("3"))


async def test_operator_price_starts_now_by_default(conn):
    price_id = await add_operator_price(conn, provider="groq", model="llama-3.1-8b-instant",
                                        input_per_mtok=0.04, output_per_mtok=0.07)
    starts, created = await conn.fetchrow("SELECT effective_from, created_at FROM model_pricing WHERE id = $1",
                                          price_id)
    assert starts == created
    table = await load_pricing(conn)
    assert table.lookup("groq", "llama-3.1-8b-instant", starts + timedelta(seconds=1)).id == price_id


@pytest.mark.parametrize("kwargs,message", [
    ({"provider": "bedrock"}, "unknown provider 'bedrock'"),
    ({"model": " "}, "model must not be empty"),
    ({"input_per_mtok": -1}, "input price must be a non-negative number"),
    ({"output_per_mtok": "ten"}, "output price must be a number"),
    ({"cached_input_per_mtok": float("nan")}, "cached input price must be a non-negative number"),
    ({"cache_write_per_mtok": "x"}, "cache write price must be a number"),
    ({"reasoning_per_mtok": -2}, "reasoning price must be a non-negative number"),
    ({"tiers": {"start": 1}}, "tiers must be an array"),
    ({"tiers": [{"start": "200k"}]}, "start must be a non-negative integer"),
    ({"tiers": [{"start": 1, "input": 2}]}, "unknown tier field 'input'"),
    ({"tiers": [{"start": 1, "output_usd_per_mtok": -1}]}, "tier output_usd_per_mtok must be a non-negative"),
    ({"tiers": [{"start": 5}, {"start": 5}]}, "two tiers start at the same"),
])
async def test_operator_price_is_validated(conn, kwargs, message):
    args = {"provider": "openai", "model": "gpt-4o", "input_per_mtok": 1, "output_per_mtok": 2, **kwargs}
    with pytest.raises(PricingError, match=message):
        await add_operator_price(conn, **args)


async def test_seeded_rows_load_back_with_every_price_rule(conn):
    await seed_pricing(conn)
    table = await load_pricing(conn)
    for seeded in genai_price_rows():
        found = table.lookup(seeded.provider, seeded.model, seeded.effective_from)
        if found.source == "operator":
            continue  # another test's
        assert (found.input_per_mtok, found.output_per_mtok, found.cached_input_per_mtok, found.cache_write_per_mtok,
                found.tiers) == (seeded.input_per_mtok, seeded.output_per_mtok, seeded.cached_input_per_mtok,
                                 seeded.cache_write_per_mtok, seeded.tiers), seeded


async def test_operator_price_expresses_cache_writes_reasoning_and_tiers(conn):
    price_id = await add_operator_price(
        conn, provider="anthropic", model="claude-opus-4-5", input_per_mtok=4, output_per_mtok=20,
        cached_input_per_mtok="0.4", cache_write_per_mtok=5, reasoning_per_mtok=30,
        tiers=[{"start": 200_000, "input_usd_per_mtok": 8, "reasoning_usd_per_mtok": "45"}],
        effective_from=datetime(2026, 3, 1, tzinfo=UTC))
    found = (await load_pricing(conn)).lookup("anthropic", "claude-opus-4-5", NOW)
    assert found.id == price_id
    assert (found.cache_write_per_mtok, found.reasoning_per_mtok) == (Decimal(5), Decimal(30))
    assert found.tiers == (PriceTier(200_000, input_per_mtok=Decimal(8), reasoning_per_mtok=Decimal(45)),)
    # Below the tier: 1,000 in, 1,000 read, 1,000 written; 500 out of which 200 reasoning.
    cost, _ = compute_cost(found, prompt_tokens=1_000, completion_tokens=500, cached_tokens=1_000,
                           cache_write_tokens=1_000, reasoning_tokens=200)
    assert cost == (1_000 * 4 + 1_000 * Decimal("0.4") + 1_000 * 5 + 300 * 20 + 200 * 30) / Decimal(10**6)
    # Above it (Anthropic's input leaves the cache out, so 199,000 + 2,000 is past 200k).
    cost, _ = compute_cost(found, prompt_tokens=199_000, completion_tokens=500, cached_tokens=1_000,
                           cache_write_tokens=1_000, reasoning_tokens=200)
    assert cost == (199_000 * 8 + 1_000 * Decimal("0.4") + 1_000 * 5 + 300 * 20 + 200 * 45) / Decimal(10**6)
    listed = await list_prices(conn, provider="anthropic", model="claude-opus-4-5")
    assert listed[0]["tiers"] == [{"start": 200_000, "input_usd_per_mtok": 8, "reasoning_usd_per_mtok": 45}]


async def test_operator_price_twice_at_one_start_is_an_error(conn):
    start = datetime(2026, 2, 1, tzinfo=UTC)
    await add_operator_price(conn, provider="openai", model="o3", input_per_mtok=1, output_per_mtok=4,
                             effective_from=start)
    with pytest.raises(PricingError, match="already starts"):
        await add_operator_price(conn, provider="openai", model="o3", input_per_mtok=1, output_per_mtok=4,
                                 effective_from=start)


async def test_seed_downgrades_writes_every_data_row_of_the_csv(conn):
    lines = [ln for ln in DOWNGRADES_CSV.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    data_rows = lines[1:]  # after the header
    assert await seed_downgrades(conn) == len(data_rows) == len(downgrade_rows())
    assert await seed_downgrades(conn) == len(data_rows)
    assert await conn.fetchval("SELECT count(*) FROM model_downgrades") == len(data_rows)
    assert await conn.fetchval("SELECT to_model FROM model_downgrades WHERE provider = 'openai' "
                               "AND from_model = 'gpt-4o' AND aggressiveness = 'moderate'") == "gpt-4o-mini"


async def test_ensure_seeded_fills_empty_tables_only(conn):
    await conn.execute("DELETE FROM model_pricing WHERE source = 'seed'")
    await conn.execute("DELETE FROM model_downgrades")
    await ensure_seeded(conn)
    seeded = await conn.fetchval("SELECT count(*) FROM model_pricing WHERE source = 'seed'")
    assert seeded == len(genai_price_rows())
    assert await conn.fetchval("SELECT count(*) FROM model_downgrades") == len(downgrade_rows())

    await conn.execute("DELETE FROM model_pricing WHERE source = 'seed' AND model = 'gpt-4o'")
    await conn.execute("DELETE FROM model_downgrades WHERE from_model = 'gpt-4o'")
    await ensure_seeded(conn)  # not empty: an operator's deletions stand
    assert await conn.fetchval("SELECT count(*) FROM model_pricing WHERE source = 'seed'") < seeded
    assert not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM model_downgrades WHERE from_model = 'gpt-4o')")


async def test_the_child_process_gives_the_same_rows_and_the_server_never_imports_genai_prices():
    import sys

    assert await rows_from_child() == genai_price_rows()
    probe = ("import asyncio, sys; from lectr.pricing.seed import rows_from_child; "
             "rows = asyncio.run(rows_from_child()); "
             "print(len(rows), any(m.startswith('genai_prices') for m in sys.modules))")
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", probe, stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate()
    count, imported = out.split()
    assert int(count) > 100 and imported == b"False"
