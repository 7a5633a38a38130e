"""Streams without usage: measured by the shared tokeniser process, or honestly left unmeasured."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from decimal import Decimal

from lectr.devtools.mock_provider import stream_events
from lectr.events.record import RequestEvent
from lectr.events.ring import EventRing
from lectr.events.rows import COLUMNS, RowBuilder
from lectr.events.tokenizer_service import TokenizerClient, TokenizerProcess
from lectr.events.tokens import TokenCounter
from lectr.events.writer import EventWriter
from lectr.metrics import Metrics
from lectr.pricing import PriceRow, PricingTable

PRICE = PriceRow(1, "openai", "gpt-4o-mini", Decimal("0.15"), Decimal("0.6"), None,
                 datetime(2020, 1, 1, tzinfo=timezone.utc), "seed")


def stream_event(chunks: int = 5) -> RequestEvent:
    now = time.perf_counter()
    return RequestEvent(1, time.time(), "openai", "gpt-4o-mini", "gpt-4o-mini", "chat", None, 200, None, None, True,
                        now, now, now, 0.0001, False, None, 10, 100, "text/event-stream", None,
                        stream_events("gpt-4o-mini", chunks, include_usage=False))


def column(row: tuple, name: str):
    return row[COLUMNS.index(name)]


async def test_the_tokeniser_process_counts_a_batch():
    process = TokenizerProcess()
    await process.start()
    client = TokenizerClient(process.path)
    try:
        texts = [("o200k_base", "Hello from the mock"), ("cl100k_base", "hello world"), ("o200k_base", "")]
        assert await client.count(texts) == [TokenCounter().count("Hello from the mock", "gpt-4o", "openai"), 2, 0]
    finally:
        client.close()
        await process.stop()


async def test_writer_measures_streams_and_prices_them_partially():
    process = TokenizerProcess()
    await process.start()
    writer = EventWriter(EventRing(10), pool=None, rows=RowBuilder(PricingTable([PRICE])), spool=None,
                         metrics=Metrics(EventRing(1)), tokenizer=TokenizerClient(process.path))
    try:
        [row] = await writer._build([stream_event(5)])
    finally:
        writer.tokenizer.close()
        await process.stop()
    assert (column(row, "token_source"), column(row, "prompt_tokens")) == ("measured", None)
    assert column(row, "completion_tokens") == 5  # "Hello from the mock provider" in o200k_base
    assert column(row, "cost_partial") is True and column(row, "cost_usd") == Decimal("0.000003")


async def test_without_a_tokeniser_the_row_says_none_rather_than_guessing(tmp_path):
    writer = EventWriter(EventRing(10), pool=None, rows=RowBuilder(PricingTable([PRICE])), spool=None,
                         metrics=Metrics(EventRing(1)), tokenizer=TokenizerClient(str(tmp_path / "nobody.sock")))
    [row] = await writer._build([stream_event(3)])
    assert (column(row, "token_source"), column(row, "completion_tokens"), column(row, "cost_usd")) == \
        ("none", None, None)

