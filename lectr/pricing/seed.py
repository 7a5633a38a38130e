"""Seed prices from genai-prices, computed in a child process.

genai-prices' data takes about 26 MB once imported, and an imported module stays for the life
of the process: a worker that seeded the first time it started would carry it for good. So a
child (``python -m lectr.pricing.seed``) reads it and prints the rows, and the server keeps only them.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, time
from decimal import Decimal

import orjson

from lectr.pricing.rules import EPOCH, PriceTier, SeedRow, tiers_from_json, tiers_to_json
from lectr.providers.registry import PROVIDERS

CHILD_TIMEOUT_SECONDS = 120.0
# genai-prices provider id -> Lectr's provider name, for the providers Lectr serves (each
# provider module says its genai-prices id).
_GENAI_PROVIDERS = {p.genai_prices_id: p.name for p in PROVIDERS.values() if p.genai_prices_id}


# genai-prices' price keys -> PriceTier's fields. Only token prices Lectr has counts for: the
# one-hour cache write, audio, image and per-search prices need counts no usage Lectr reads has.
_PRICE_FIELDS = {"input_mtok": "input_per_mtok", "output_mtok": "output_per_mtok",
                 "cache_read_mtok": "cached_input_per_mtok", "cache_write_mtok": "cache_write_per_mtok"}


def _base(price) -> Decimal | None:
    """A flat price, or a tiered price's base (the tier below any long-context threshold)."""
    return getattr(price, "base", price)


def _tiers(price) -> tuple[PriceTier, ...]:
    """A genai-prices ModelPrice's long-context tiers, merged across its prices by start.

    genai-prices tiers each price on its own (all by the request's whole input); above a start,
    a price keeps its highest tier at or below it, and a price not tiered there stays the row's own.
    """
    tiered = {field: getattr(price, key).tiers for key, field in _PRICE_FIELDS.items()
              if getattr(getattr(price, key), "tiers", None)}
    starts = sorted({tier.start for tiers in tiered.values() for tier in tiers})
    return tuple(PriceTier(start, **{field: _price_at(tiers, start) for field, tiers in tiered.items()})
                 for start in starts)


def _price_at(tiers, start: int) -> Decimal | None:
    """The price of the highest of ``tiers`` starting at or below ``start``; None: the base price."""
    below = [tier for tier in tiers if tier.start <= start]
    return max(below, key=lambda tier: tier.start).price if below else None


def _periods(model) -> Iterator[tuple[datetime, object]]:
    """(effective_from, ModelPrice) for each price period of a genai-prices model."""
    from genai_prices.types import StartDateConstraint

    if not isinstance(model.prices, list):
        yield EPOCH, model.prices
        return
    for i, conditional in enumerate(model.prices):
        if i == 0:
            # genai-prices falls back to the first price when none applies: it holds since ever.
            yield EPOCH, conditional.prices
        elif isinstance(conditional.constraint, StartDateConstraint):
            yield datetime.combine(conditional.constraint.start_date, time(0), UTC), conditional.prices
        # Other conditions (no constraint after the first, time of day) do not fit a dated row.


def _exact_aliases(clause) -> Iterator[str]:
    """Names a match clause accepts exactly: its ``equals``, also inside ``or``."""
    from genai_prices.types import ClauseEquals, ClauseOr

    if isinstance(clause, ClauseEquals):
        yield clause.equals.lower()
    elif isinstance(clause, ClauseOr):
        for inner in clause.or_:
            yield from _exact_aliases(inner)


def _model_rows(provider: str, name: str, model, note: str) -> Iterator[SeedRow]:
    for start, price in _periods(model):
        input_price = _base(price.input_mtok)
        if input_price is None:
            continue  # not priced by tokens (speech by the hour, text to speech by the character)
        # No output price: nothing to pay for output (embeddings have only an input price).
        output_price = _base(price.output_mtok) or Decimal(0)
        yield SeedRow(provider, name, input_price, output_price, _base(price.cache_read_mtok), start, note,
                      _base(price.cache_write_mtok), _tiers(price))


def genai_price_rows() -> list[SeedRow]:
    """Seed rows for Lectr's providers: each model's id and exact aliases, one row per price period."""
    import genai_prices
    from genai_prices import data

    note = f"genai-prices {genai_prices.__version__}"
    rows: dict[tuple[str, str, datetime], SeedRow] = {}  # one per key, or the upsert would fail
    for source in data.providers:
        provider = _GENAI_PROVIDERS.get(source.id)
        if provider is None:
            continue
        # Every id and exact alias, priced by the model genai-prices itself matches the name to
        # (its first match in list order), so a name is never priced apart from genai-prices.
        names = dict.fromkeys([m.id.lower() for m in source.models]
                              + [alias for m in source.models for alias in _exact_aliases(m.match)])
        for name in names:
            model = source.find_model(name)
            if model is None:
                continue
            for row in _model_rows(provider, name, model, note):
                rows.setdefault((row.provider, row.model, row.effective_from), row)
    return list(rows.values())


async def rows_from_child() -> list[SeedRow]:
    """``genai_price_rows()``, from a child process, so this one never imports genai-prices."""
    # -P: the working directory is not searched, so a stray lectr/ there cannot stand in.
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-P", "-m", "lectr.pricing.seed", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(child.communicate(), CHILD_TIMEOUT_SECONDS)
    except TimeoutError:
        child.kill()
        await child.wait()
        raise RuntimeError(f"reading genai-prices took over {CHILD_TIMEOUT_SECONDS:.0f} s") from None
    if child.returncode:
        raise RuntimeError(f"could not read genai-prices: {err.decode(errors='replace').strip()[-500:]}")
    try:
        return [SeedRow(provider, model, Decimal(i), Decimal(o), _decimal(c), datetime.fromisoformat(start), note,
                        _decimal(w), tiers_from_json(tiers))
                for provider, model, i, o, c, start, note, w, tiers in orjson.loads(out)]
    except (ValueError, TypeError) as exc:  # orjson's decode error is a ValueError
        raise RuntimeError(f"unexpected output from the genai-prices reader: {exc}") from None


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def main() -> None:
    rows = [(r.provider, r.model, str(r.input_per_mtok), str(r.output_per_mtok), _text(r.cached_input_per_mtok),
             r.effective_from.isoformat(), r.note, _text(r.cache_write_per_mtok), tiers_to_json(r.tiers))
            for r in genai_price_rows()]
    sys.stdout.buffer.write(orjson.dumps(rows))


if __name__ == "__main__":
    main()
