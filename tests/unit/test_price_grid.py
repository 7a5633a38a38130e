"""Cost correctness as a test over data: every seeded price row, priced by Lectr over a grid of
usages, costs what ``genai_prices.calc_price`` says for the same usage.

Tolerance: both sides compute in Decimal (28 significant digits) from the same decimal prices and
integer counts. Lectr sums count x price and divides once by 10^6; genai-prices divides each term.
Each product is exact, so the two differ only in the last of 28 digits of a few quotients: far
below 1e-15 USD for any cost in the grid. ``request_logs.cost_usd`` keeps 10 decimals, so any
difference this test lets through (1e-12) could never show in a recorded cost.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import genai_prices
import pytest

from lectr.pricing.seed import genai_price_rows
from lectr.pricing.prices import PriceRow, PricingTable, compute_cost

TOLERANCE = Decimal("1e-12")
_GENAI_PROVIDER = {"gemini": "google"}


class GridUsage:
    """One request's tokens, in the whole-input terms genai-prices uses."""

    def __init__(self, total_input: int, output: int, cached: int = 0, written: int = 0, reasoning: int = 0):
        self.total_input, self.output, self.cached, self.written, self.reasoning = (
            total_input, output, cached, written, reasoning)

    def lectr_prompt(self, provider: str) -> int:
        """The prompt count the provider reports: Anthropic's leaves cache reads and writes out."""
        if provider == "anthropic":
            return self.total_input - self.cached - self.written
        return self.total_input

    def genai(self) -> genai_prices.Usage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a key the model does not price is fine
            return genai_prices.Usage(input_tokens=self.total_input, output_tokens=self.output,
                                      cache_read_tokens=self.cached, cache_write_tokens=self.written,
                                      output_reasoning_tokens=self.reasoning)

    def __repr__(self) -> str:
        return (f"input={self.total_input} output={self.output} cached={self.cached} "
                f"written={self.written} reasoning={self.reasoning}")


def usage_grid(row: PriceRow) -> list[GridUsage]:
    """Small usages; cached, cache-write and reasoning tokens; at and just past each tier's start."""
    grid = [GridUsage(0, 0), GridUsage(1, 1), GridUsage(1_000, 500), GridUsage(1_000, 500, cached=400),
            GridUsage(1_000, 500, cached=100, written=300), GridUsage(1_000, 500, reasoning=200),
            GridUsage(2_000, 700, cached=500, written=500, reasoning=300), GridUsage(0, 1_000, reasoning=1_000),
            GridUsage(1_000, 0, cached=1_000)]
    for tier in row.tiers:
        for total in (tier.start, tier.start + 1, tier.start + 50_000):
            grid += [GridUsage(total, 1_000), GridUsage(total, 2_000, cached=total // 2, written=1_000, reasoning=500)]
    return grid


def seed_table() -> tuple[list[PriceRow], PricingTable]:
    rows = [PriceRow(i, r.provider, r.model, r.input_per_mtok, r.output_per_mtok, r.cached_input_per_mtok,
                     r.effective_from, "seed", r.cache_write_per_mtok, None, r.tiers)
            for i, r in enumerate(genai_price_rows(), 1)]
    return rows, PricingTable(rows)


def in_period(row: PriceRow) -> datetime:
    """An instant inside the row's price period (genai-prices starts a period at its UTC date)."""
    return row.effective_from + timedelta(hours=12)


def mismatches(rows: list[PriceRow], table: PricingTable) -> tuple[int, list[str]]:
    """(usages compared, what differs) for every seed row that is the one its name looks up to."""
    compared, wrong = 0, []
    for row in rows:
        at = in_period(row)
        found = table.lookup(row.provider, row.model, at)
        if found is None or found.source == "operator":
            continue  # an operator's price is theirs, not genai-prices'
        assert found is row, f"{row.provider}/{row.model} at {at} looked up {found}"
        for usage in usage_grid(row):
            cost, _ = compute_cost(row, prompt_tokens=usage.lectr_prompt(row.provider),
                                   completion_tokens=usage.output, cached_tokens=usage.cached,
                                   reasoning_tokens=usage.reasoning, cache_write_tokens=usage.written)
            expected = genai_prices.calc_price(
                usage.genai(), row.model, provider_id=_GENAI_PROVIDER.get(row.provider, row.provider),
                genai_request_timestamp=at).total_price
            compared += 1
            if abs(cost - expected) > TOLERANCE:
                wrong.append(f"{row.provider}/{row.model} from {row.effective_from:%Y-%m-%d} {usage}: "
                             f"Lectr {cost}, genai-prices {expected}")
    return compared, wrong


def test_every_seeded_price_costs_what_genai_prices_says_over_a_grid_of_usages():
    rows, table = seed_table()
    compared, wrong = mismatches(rows, table)
    assert not wrong, f"{len(wrong)} of {compared} costs differ:\n" + "\n".join(wrong[:20])
    assert compared > 4_000
    # The grid reached past real tiers of every kind of price that has them.
    tiered = {(r.provider, r.model) for r in rows if r.tiers}
    assert {("gemini", "gemini-2.5-pro"), ("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-5.4")} <= tiered
    assert any(r.cache_write_per_mtok is not None for r in rows if r.provider == "anthropic")


def test_rows_an_operator_overrode_are_left_out_and_priced_by_the_operator():
    rows, _ = seed_table()
    operator = PriceRow(len(rows) + 1, "gemini", "gemini-2.5-pro", Decimal("1"), Decimal("2"), None,
                        datetime(1970, 1, 1, tzinfo=UTC), "operator")
    table = PricingTable([*rows, operator])
    compared, wrong = mismatches(rows, table)
    assert not wrong
    assert compared < mismatches(rows, PricingTable(rows))[0]
    cost, _ = compute_cost(table.lookup("gemini", "gemini-2.5-pro", datetime(2026, 1, 1, tzinfo=UTC)),
                           prompt_tokens=250_000, completion_tokens=1_000, cached_tokens=None)
    assert cost == Decimal("0.252")


# -- the examples of the issue, each one of the kinds above -----------------------------------

AT = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def table() -> PricingTable:
    return seed_table()[1]


def cost_of(table, provider, model, **tokens):
    row = table.lookup(provider, model, AT)
    assert row is not None, f"{provider}/{model} is not priced"
    tokens.setdefault("cached_tokens", None)
    return compute_cost(row, **tokens)


def test_gemini_2_5_pro_above_200k_prompt_tokens_pays_the_long_context_price_on_every_token(table):
    assert cost_of(table, "gemini", "gemini-2.5-pro", prompt_tokens=250_000, completion_tokens=1_000) == (
        Decimal("0.64"), False)
    # At the threshold itself the base price still applies (genai-prices: above, not at).
    assert cost_of(table, "gemini", "gemini-2.5-pro", prompt_tokens=200_000, completion_tokens=1_000) == (
        Decimal("0.26"), False)


def test_cached_tokens_count_toward_the_tier_and_pay_the_tiers_cached_price(table):
    cost, _ = cost_of(table, "gemini", "gemini-2.5-pro", prompt_tokens=250_000, completion_tokens=0,
                      cached_tokens=100_000)
    assert cost == (150_000 * Decimal("2.5") + 100_000 * Decimal("0.25")) / 10**6


def test_anthropic_cache_reads_and_writes_are_beside_its_input_tokens(table):
    # claude-sonnet-4-5: input 3, cache read 0.3, cache write 3.75, output 15 (per million).
    cost, partial = cost_of(table, "anthropic", "claude-sonnet-4-5", prompt_tokens=1_000, completion_tokens=100,
                            cached_tokens=10_000, cache_write_tokens=2_000)
    assert (cost, partial) == ((1_000 * 3 + 10_000 * Decimal("0.3") + 2_000 * Decimal("3.75") + 100 * 15) / 10**6,
                               False)
    # ... and they count toward its 200k tier: 150k + 40k read + 20k written is above it.
    cost, _ = cost_of(table, "anthropic", "claude-sonnet-4-5", prompt_tokens=150_000, completion_tokens=0,
                      cached_tokens=40_000, cache_write_tokens=20_000)
    assert cost == (150_000 * 6 + 40_000 * Decimal("0.6") + 20_000 * Decimal("7.5")) / 10**6


def test_openai_cache_writes_are_part_of_its_prompt_tokens(table):
    row = table.lookup("openai", "gpt-4o", AT)
    cost, _ = compute_cost(row, prompt_tokens=1_000, completion_tokens=0, cached_tokens=400, cache_write_tokens=0)
    assert cost == (600 * Decimal("2.5") + 400 * Decimal("1.25")) / 10**6


@pytest.mark.parametrize("provider,model,price", [
    ("openai", "text-embedding-3-small", "0.02"), ("openai", "text-embedding-3-large", "0.13"),
    ("azure", "text-embedding-3-small", "0.02"), ("gemini", "gemini-embedding-001", "0.15"),
])
def test_embedding_models_are_priced_by_their_input_tokens(table, provider, model, price):
    assert cost_of(table, provider, model, prompt_tokens=10_000, completion_tokens=None) == (
        10_000 * Decimal(price) / 10**6, False)


def test_a_dated_snapshot_priced_apart_uses_its_own_row_not_its_familys(table):
    snapshot = cost_of(table, "openai", "gpt-4o-2024-05-13", prompt_tokens=1_000, completion_tokens=1_000)
    family = cost_of(table, "openai", "gpt-4o", prompt_tokens=1_000, completion_tokens=1_000)
    assert snapshot == (Decimal("0.02"), False) and family == (Decimal("0.0125"), False)
    assert table.lookup("azure", "gpt-4o-2024-05-13", AT).model == "gpt-4o-2024-05-13"
    # A snapshot genai-prices names nowhere falls back to its family.
    assert table.lookup("openai", "gpt-4o-2031-01-01", AT).model == "gpt-4o"
