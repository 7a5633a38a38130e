"""Seed prices from genai-prices, computed in a child process.

genai-prices' data takes about 26 MB once imported, and an imported module stays for the life
of the process: a worker that seeded the first time it started would carry it for good. So a
child (``python -m lectr.price_seed``) reads it and prints the rows, and the server keeps only them.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, time
from decimal import Decimal

import orjson

from lectr.pricing import EPOCH, SeedRow

CHILD_TIMEOUT_SECONDS = 120.0
# genai-prices provider id -> Lectr's provider name, for the providers Lectr serves.
_GENAI_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "groq": "groq", "azure": "azure",
                    "google": "gemini"}


def _base(price) -> Decimal | None:
    """A flat price, or a tiered price's base (the tier below any long-context threshold)."""
    return getattr(price, "base", price)


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
        input_price, output_price = _base(price.input_mtok), _base(price.output_mtok)
        if input_price is None or output_price is None:
            continue  # not priced by tokens both ways (images, audio, embeddings)
        yield SeedRow(provider, name, input_price, output_price, _base(price.cache_read_mtok), start, note)


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
        # Ids before aliases, and a name belongs to the first model claiming it, so an alias never
        # mixes its price periods into another model's own name.
        names = [(m.id.lower(), m) for m in source.models]
        names += [(alias, m) for m in source.models for alias in _exact_aliases(m.match)]
        claimed: set[str] = set()
        for name, model in names:
            if name in claimed:
                continue
            claimed.add(name)
            for row in _model_rows(provider, name, model, note):
                rows.setdefault((row.provider, row.model, row.effective_from), row)
    return list(rows.values())


async def rows_from_child() -> list[SeedRow]:
    """``genai_price_rows()``, from a child process, so this one never imports genai-prices."""
    # -P: the working directory is not searched, so a stray lectr/ there cannot stand in.
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-P", "-m", "lectr.price_seed", stdout=asyncio.subprocess.PIPE,
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
        return [SeedRow(provider, model, Decimal(i), Decimal(o), None if c is None else Decimal(c),
                        datetime.fromisoformat(start), note)
                for provider, model, i, o, c, start, note in orjson.loads(out)]
    except (ValueError, TypeError) as exc:  # orjson's decode error is a ValueError
        raise RuntimeError(f"unexpected output from the genai-prices reader: {exc}") from None


def main() -> None:
    rows = [(r.provider, r.model, str(r.input_per_mtok), str(r.output_per_mtok),
             None if r.cached_input_per_mtok is None else str(r.cached_input_per_mtok),
             r.effective_from.isoformat(), r.note) for r in genai_price_rows()]
    sys.stdout.buffer.write(orjson.dumps(rows))


if __name__ == "__main__":
    main()
