"""What a request costs: a price row's rules (input, output, cache reads and writes, reasoning,
long-context tiers) applied to its token counts, as genai-prices defines them. Pure; no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

import orjson

from lectr.providers.registry import PROVIDERS

_MTOK = Decimal(1_000_000)
_ZERO = Decimal(0)
_MAX_PRICE = Decimal(10) ** 8  # numeric(14, 6) holds less than this


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # effective_from of prices with no known start


class SeedRow(NamedTuple):
    """A row to seed from genai-prices."""

    provider: str
    model: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None
    effective_from: datetime
    note: str
    cache_write_per_mtok: Decimal | None = None
    tiers: tuple[PriceTier, ...] = ()


class PricingError(ValueError):
    """An operator's price was rejected; the message is one line, fit for a CLI or API reply."""


class PriceTier(NamedTuple):
    """Prices for requests whose whole input is above ``start`` tokens; None: the row's own price."""

    start: int
    input_per_mtok: Decimal | None = None
    output_per_mtok: Decimal | None = None
    cached_input_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    reasoning_per_mtok: Decimal | None = None


# PriceTier's price fields <-> the keys of a tier in ``model_pricing.tiers`` (named like the columns).
_TIER_KEYS = {"input_per_mtok": "input_usd_per_mtok", "output_per_mtok": "output_usd_per_mtok",
              "cached_input_per_mtok": "cached_input_usd_per_mtok",
              "cache_write_per_mtok": "cache_write_usd_per_mtok", "reasoning_per_mtok": "reasoning_usd_per_mtok"}


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One ``model_pricing`` row; prices are USD per million tokens.

    ``cached_input_per_mtok`` prices cache reads and ``cache_write_per_mtok`` cache writes (both
    input tokens; the input price when None); ``reasoning_per_mtok`` prices reasoning tokens (part
    of the completion; the output price when None). ``tiers``, by ascending start: long-context
    prices (see ``compute_cost``).
    """

    id: int
    provider: str
    model: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None
    effective_from: datetime
    source: str  # "seed" or "operator"
    cache_write_per_mtok: Decimal | None = None
    reasoning_per_mtok: Decimal | None = None
    tiers: tuple[PriceTier, ...] = ()


# Providers whose reported prompt count leaves cache reads and writes out: the whole input is theirs to say.
_TOTAL_INPUT = {name: p.total_input_tokens for name, p in PROVIDERS.items() if p.total_input_tokens}


def compute_cost(row: PriceRow, *, prompt_tokens: int | None, completion_tokens: int | None,
                 cached_tokens: int | None, reasoning_tokens: int | None = None,
                 cache_write_tokens: int | None = None) -> tuple[Decimal | None, bool]:
    """(cost in USD, partial) of one request's tokens at ``row``'s prices, as genai-prices computes it.

    Counts are as the provider reported them. ``prompt_tokens`` INCLUDES ``cached_tokens`` (cache
    reads) and ``cache_write_tokens`` for OpenAI, Azure, Gemini and Groq (their ``prompt_tokens``
    counts the whole input); for Anthropic it EXCLUDES them (its ``input_tokens`` is only what
    follows the last cache breakpoint, ``cache_read_input_tokens`` and
    ``cache_creation_input_tokens`` come apart), see ``lectr.providers.anthropic.total_input_tokens``.
    ``reasoning_tokens`` are part of ``completion_tokens`` for every provider.

    Cached tokens pay the cached price, cache writes the cache-write price, the rest of the input
    the input price; reasoning tokens the reasoning price and the rest of the completion the
    output price (each falls back to the input or output price when the row has none). Long
    context: when the whole input is above a tier's ``start``, the highest such tier prices every
    token of the request, input and output alike (genai-prices' threshold model).

    ``partial`` is True when one side's tokens are unknown and that side is priced above zero
    (an embedding's absent completion costs nothing, so its cost is complete). No tokens at all:
    (None, False). Negative counts are read as zero; parts are clamped to the whole they belong to.
    """
    if prompt_tokens is None and completion_tokens is None:
        return None, False
    input_price, output_price = row.input_per_mtok, row.output_per_mtok
    cached_price, write_price, reasoning_price = (row.cached_input_per_mtok, row.cache_write_per_mtok,
                                                  row.reasoning_per_mtok)
    cached = cached_tokens if cached_tokens is not None and cached_tokens > 0 else 0
    written = cache_write_tokens if cache_write_tokens is not None and cache_write_tokens > 0 else 0
    total_input = None
    if prompt_tokens is not None:
        total = _TOTAL_INPUT.get(row.provider)
        total_input = max(prompt_tokens, 0) if total is None else total(max(prompt_tokens, 0), cached, written)
        if row.tiers:
            for tier in reversed(row.tiers):
                if total_input > tier.start:
                    input_price = _or(tier.input_per_mtok, input_price)
                    output_price = _or(tier.output_per_mtok, output_price)
                    cached_price = _or(tier.cached_input_per_mtok, cached_price)
                    write_price = _or(tier.cache_write_per_mtok, write_price)
                    reasoning_price = _or(tier.reasoning_per_mtok, reasoning_price)
                    break
    # Terms of zero tokens are left out, so a cost keeps the exponent its nonzero terms give it.
    cost = _ZERO
    if total_input is not None:
        if cached > total_input:
            cached = total_input
        if written > total_input - cached:
            written = total_input - cached
        cost += (total_input - cached - written) * input_price
        if cached:
            cost += cached * (input_price if cached_price is None else cached_price)
        if written:
            cost += written * (input_price if write_price is None else write_price)
    if completion_tokens is not None:
        reasoning = reasoning_tokens if reasoning_tokens is not None and reasoning_tokens > 0 else 0
        if reasoning_price is None or not reasoning:
            cost += completion_tokens * output_price
        else:
            if reasoning > completion_tokens:
                reasoning = completion_tokens
            cost += (completion_tokens - reasoning) * output_price + reasoning * reasoning_price
    partial = ((prompt_tokens is None and _can_cost(row, "input_per_mtok"))
               or (completion_tokens is None and _can_cost(row, "output_per_mtok")))
    return cost / _MTOK, partial


def _or(price: Decimal | None, default: Decimal | None) -> Decimal | None:
    return default if price is None else price


def _can_cost(row: PriceRow, side: str) -> bool:
    """Whether tokens of one side (input or output) could cost anything under ``row``."""
    return bool(getattr(row, side)) or any(getattr(tier, side) for tier in row.tiers)


def tiers_to_json(tiers: Iterable[PriceTier]) -> str:
    """``tiers`` as ``model_pricing.tiers`` holds them: prices as strings, so they stay exact."""
    return orjson.dumps([{"start": t.start, **{key: str(getattr(t, field)) for field, key in _TIER_KEYS.items()
                                               if getattr(t, field) is not None}} for t in tiers]).decode()


def tiers_from_json(value: object) -> tuple[PriceTier, ...]:
    """``model_pricing.tiers`` (JSON text, as asyncpg returns jsonb, or a list) as ``PriceTier``s, by start.

    Raises PricingError when a tier is not ``{"start": int >= 0, <price key>: number, ...}`` with
    known keys, valid prices and distinct starts.
    """
    if value is None:
        return ()
    if isinstance(value, (str, bytes)):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise PricingError("tiers must be a JSON array") from None
    if not isinstance(value, list):
        raise PricingError("tiers must be an array of {start, <price>...} objects")
    tiers = []
    for item in value:
        if not isinstance(item, dict):
            raise PricingError("each tier must be an object")
        start = item.get("start")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise PricingError(f"a tier's start must be a non-negative integer (input tokens), got {start!r}")
        unknown = set(item) - {"start", *_TIER_KEYS.values()}
        if unknown:
            raise PricingError(f"unknown tier field {sorted(unknown)[0]!r}: expected start, "
                               f"{', '.join(_TIER_KEYS.values())}")
        tiers.append(PriceTier(start, **{field: parse_price(f"tier {key}", item.get(key), required=False)
                                         for field, key in _TIER_KEYS.items()}))
    tiers.sort(key=lambda t: t.start)
    if len({t.start for t in tiers}) != len(tiers):
        raise PricingError("two tiers start at the same number of tokens")
    return tuple(tiers)


def parse_price(name: str, value: object, *, required: bool = True) -> Decimal | None:
    """A price in USD per million tokens from a number or numeric string; PricingError if it is not one."""
    if value is None and not required:
        return None
    try:
        price = Decimal(str(value))  # via str: a float 0.1 means 0.1, not its binary expansion
    except (InvalidOperation, ValueError):
        raise PricingError(f"{name} must be a number, got {value!r}") from None
    if not price.is_finite() or price < 0 or price >= _MAX_PRICE:
        raise PricingError(f"{name} must be a non-negative number below {_MAX_PRICE}, got {value!r}")
    return price
