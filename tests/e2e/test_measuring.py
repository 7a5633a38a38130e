"""Streams without usage: measured by the shared tokeniser process, or honestly left unmeasured."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from lectr.devtools.mock_provider import completion_body, stream_events
from lectr.proxy.event import RequestEvent
from lectr.proxy.ring import EventRing
from lectr.recording.rows import COLUMNS, RowBuilder
from lectr.recording import writer as writer_module
from lectr.recording.tokenizer_service import SLICE_CHARS, TokenizerClient, TokenizerProcess, count_tokens
from lectr.recording.tokens import TokenCounter
from lectr.recording.writer import EventWriter
from lectr.platform.metrics import Metrics
from lectr.pricing.prices import PriceRow, PricingTable

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


async def built_and_measured(writer: EventWriter, events: list[RequestEvent]) -> tuple[list[tuple], list[tuple]]:
    """The rows a flush writes at once, and those it writes once the queued streams are counted."""
    at_once = await writer._build(events)
    await writer.measure_waiting()
    return at_once, await writer._build([])


async def test_writer_measures_streams_and_prices_them_partially():
    process = TokenizerProcess()
    await process.start()
    writer = EventWriter(EventRing(10), pool=None, rows=RowBuilder(PricingTable([PRICE])), spool=None,
                         metrics=Metrics(EventRing(1)), tokenizer=TokenizerClient(process.path))
    try:
        at_once, [row] = await built_and_measured(writer, [stream_event(5)])
    finally:
        writer.tokenizer.close()
        await process.stop()
    assert at_once == []
    assert (column(row, "token_source"), column(row, "prompt_tokens")) == ("measured", None)
    assert column(row, "completion_tokens") == 5  # "Hello from the mock provider" in o200k_base
    assert column(row, "cost_partial") is True and column(row, "cost_usd") == Decimal("0.000003")
    assert column(row, "usage_note") is None


async def test_without_a_tokeniser_the_row_says_none_rather_than_guessing(tmp_path):
    metrics = Metrics(EventRing(1))
    writer = EventWriter(EventRing(10), pool=None, rows=RowBuilder(PricingTable([PRICE])), spool=None,
                         metrics=metrics, tokenizer=TokenizerClient(str(tmp_path / "nobody.sock")))
    _, [row] = await built_and_measured(writer, [stream_event(3)])
    assert (column(row, "token_source"), column(row, "completion_tokens"), column(row, "cost_usd")) == \
        ("none", None, None)
    assert column(row, "usage_note") == "not_counted"
    assert metrics.registry.get_sample_value("lectr_unmeasured_events_total",
                                             {"reason": "tokenizer_unavailable"}) == 1


class StuckTokenizer:
    """A tokeniser that never answers: nothing but the streams it holds may wait for it."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()

    async def count(self, items):
        self.asked.set()
        await asyncio.Event().wait()


def plain_event() -> RequestEvent:
    now = time.perf_counter()
    return RequestEvent(1, time.time(), "openai", "gpt-4o-mini", "gpt-4o-mini", "chat", None, 200, None, None,
                        False, now, now, now, 0.0001, False, None, 10, 100, "application/json", None,
                        [completion_body("gpt-4o-mini")])


async def test_rows_needing_no_count_never_wait_for_the_tokeniser():
    tokenizer = StuckTokenizer()
    writer = EventWriter(EventRing(10), pool=None, rows=RowBuilder(PricingTable([PRICE])), spool=None,
                         metrics=Metrics(EventRing(1)), tokenizer=tokenizer)
    writer._background.start(writer._measure_loop(), "measurer")
    try:
        rows = await writer._build([stream_event(50), plain_event(), stream_event(50), plain_event()])
        await asyncio.wait_for(tokenizer.asked.wait(), 5)
        assert [column(row, "token_source") for row in rows] == ["provider", "provider"]
        assert len(writer._to_measure) == 2  # the two streams, still being counted
        assert await writer._build([plain_event()]) != []  # and the next batch does not wait either
    finally:
        await writer._background.stop()


async def test_past_the_queues_bound_streams_are_recorded_at_once_uncounted(monkeypatch):
    monkeypatch.setattr(writer_module, "MEASURE_QUEUE_CHARS", 1000)
    metrics = Metrics(EventRing(1))
    writer = EventWriter(EventRing(10), pool=None, rows=RowBuilder(PricingTable([PRICE])), spool=None,
                         metrics=metrics, tokenizer=StuckTokenizer())
    text_chars = len("".join(["Hello", " from", " the", " mock", " provider", ".", " It", " streams", " words"]))
    per_stream = 9 * text_chars  # 81 words: 2 streams fit in 1,000 characters, not 3
    rows = await writer._build([stream_event(81) for _ in range(5)])
    assert len(writer._to_measure) == 2 and writer._measure_chars <= 1000 and per_stream * 2 <= 1000 < per_stream * 3
    assert [(column(r, "token_source"), column(r, "usage_note")) for r in rows] == [("none", "not_counted")] * 3
    assert metrics.registry.get_sample_value("lectr_unmeasured_events_total", {"reason": "queue_full"}) == 3


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_long_texts_are_counted_a_slice_at_a_time_to_the_same_count(encoding):
    counter = TokenCounter()
    text = " ".join(f"word{i % 977} and, then: more" for i in range(40_000))  # about 1 MB
    assert len(text) > 10 * SLICE_CHARS
    whole = len(counter.encoding(encoding).encode_ordinary(text))
    assert count_tokens(counter.encoding(encoding), text) == whole


def big_stream_event(chunks: int) -> RequestEvent:
    events = stream_events("gpt-4o-mini", chunks, include_usage=False)
    return stream_event(chunks)._replace(response_chunks=events, bytes_out=sum(map(len, events)))


async def test_big_responses_are_built_aside_and_measured_after_the_rest(monkeypatch):
    monkeypatch.setattr(writer_module, "BIG_RESPONSE_BYTES", 10_000)
    process = TokenizerProcess()
    await process.start()
    writer = EventWriter(EventRing(10), pool=None, rows=RowBuilder(PricingTable([PRICE])), spool=None,
                         metrics=Metrics(EventRing(1)), tokenizer=TokenizerClient(process.path))
    try:
        big = big_stream_event(900)
        assert big.bytes_out > 10_000
        at_once = await writer._build([big, plain_event(), big, plain_event()])
        assert [column(row, "token_source") for row in at_once] == ["provider", "provider"]
        assert len(writer._set_aside) == 2 and writer.unwritten == 2 + len(at_once)
        await writer.build_set_aside()
        await writer.measure_waiting()
        later = await writer._build([])
    finally:
        writer.tokenizer.close()
        await process.stop()
    expected = TokenCounter().count("".join(["Hello", " from", " the", " mock", " provider", ".", " It", " streams",
                                             " words"]) * 100, "gpt-4o-mini", "openai")
    assert [(column(r, "token_source"), column(r, "completion_tokens")) for r in later] == [("measured", expected)] * 2


async def test_a_streams_text_past_the_bound_is_counted_in_part_and_says_so(monkeypatch):
    monkeypatch.setattr(writer_module, "MEASURE_TEXT_CHARS", 100)
    process = TokenizerProcess()
    await process.start()
    writer = EventWriter(EventRing(10), pool=None, rows=RowBuilder(PricingTable([PRICE])), spool=None,
                         metrics=Metrics(EventRing(1)), tokenizer=TokenizerClient(process.path))
    try:
        _, [row] = await built_and_measured(writer, [stream_event(90)])
    finally:
        writer.tokenizer.close()
        await process.stop()
    first_100 = ("".join(["Hello", " from", " the", " mock", " provider", ".", " It", " streams", " words"]) * 3)[:100]
    assert (column(row, "token_source"), column(row, "usage_note")) == ("measured", "truncated")
    assert column(row, "completion_tokens") == TokenCounter().count(first_100, "gpt-4o-mini", "openai")
