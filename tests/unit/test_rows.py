"""Rows from events: every column, its type, and the shortcuts the row builder takes kept honest."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from lectr.devtools.mock_provider import completion_body, stream_events
from lectr.proxy.event import RequestEvent
from lectr.recording.rows import COLUMNS, RowBuilder
from lectr.recording.usage import Usage, _count, _first_count, gemini_billed_completion, usage_from_mapping
from lectr.pricing.prices import EPOCH, PriceRow, PricingTable

MINI = PriceRow(1, "openai", "gpt-4o-mini", Decimal("0.15"), Decimal("0.6"), Decimal("0.075"), EPOCH, "seed")
NOON = datetime(2026, 3, 10, 12, tzinfo=UTC)
MINI_FROM_NOON = PriceRow(2, "openai", "gpt-4o-mini", Decimal("0.1"), Decimal("0.4"), None, NOON, "operator")


def event(body: bytes | list[bytes] | None = None, *, created_at: float = 1_773_140_000.25, model="gpt-4o-mini",
          provider="openai", t_first_byte: float | None = 10.0625, overhead_s: float = 67e-6, stream=False,
          content_type="application/json", content_encoding=None, status=200) -> RequestEvent:
    chunks = [body] if isinstance(body, bytes) else body
    return RequestEvent(7, created_at, provider, "requested", model, "search", "task", status, None, None, stream,
                        10.0, t_first_byte, 10.25, overhead_s, False, 3, 120, 456, content_type, content_encoding,
                        chunks)


def columns(row: tuple) -> dict:
    return dict(zip(COLUMNS, row, strict=True))


def test_a_json_completion_row_column_by_column():
    row, measure = RowBuilder(PricingTable([MINI])).build(event(completion_body("gpt-4o-mini", 1000, 500)))
    assert measure is None
    assert columns(row) == {
        "created_at": datetime.fromtimestamp(1_773_140_000.25, UTC), "org_id": 7, "provider": "openai",
        "model": "requested", "model_used": "gpt-4o-mini", "feature": "search", "task": "task", "status_code": 200,
        "error_type": None, "error_origin": None, "stream": False, "latency_ms": 250.0, "ttfb_ms": 62.5,
        "overhead_us": 67, "prompt_tokens": 1000, "completion_tokens": 500, "cached_tokens": 0,
        "reasoning_tokens": 0, "token_source": "provider", "cost_usd": Decimal("0.00045"), "cost_partial": False,
        "pricing_id": 1, "provider_unknown": False, "rule_id": 3, "bytes_in": 120, "bytes_out": 456, "usage_note": None}
    assert row[0].tzinfo is UTC and type(row[COLUMNS.index("cost_usd")]) is Decimal


@pytest.mark.parametrize("t_first_byte", [10.0625, None, 10.0000001])
def test_latency_and_ttfb_are_the_events_own(t_first_byte):
    """The row builder computes them from the fields; they must stay what RequestEvent says they are."""
    e = event(completion_body("gpt-4o-mini"), t_first_byte=t_first_byte)
    row = columns(RowBuilder(PricingTable([])).build(e)[0])
    assert (row["latency_ms"], row["ttfb_ms"]) == (e.latency_ms, e.ttfb_ms)


def test_overhead_is_clamped_to_the_column():
    row = columns(RowBuilder(PricingTable([])).build(event(overhead_s=1e6))[0])
    assert row["overhead_us"] == 2**31 - 1 and row["token_source"] == "none"


def test_compressed_body_gives_the_same_row_as_plain():
    builder = RowBuilder(PricingTable([MINI]))
    plain = completion_body("gpt-4o-mini", 33, 5)
    assert builder.build(event(gzip.compress(plain), content_encoding="gzip")) == builder.build(event(plain))


def test_a_price_starting_at_noon_prices_the_afternoon_only():
    builder = RowBuilder(PricingTable([MINI, MINI_FROM_NOON]))
    body = completion_body("gpt-4o-mini", 1000, 0)
    morning, afternoon = NOON.timestamp() - 1e-6, NOON.timestamp()
    assert columns(builder.build(event(body, created_at=morning))[0])["pricing_id"] == 1
    assert columns(builder.build(event(body, created_at=afternoon))[0])["pricing_id"] == 2
    dated = columns(builder.build(event(body, created_at=afternoon, model="gpt-4o-mini-2024-07-18"))[0])
    assert dated["pricing_id"] == 2


def test_unpriced_and_errored_rows():
    builder = RowBuilder(PricingTable([MINI]))
    unpriced = columns(builder.build(event(completion_body("x"), model="no-such-model"))[0])
    assert (unpriced["token_source"], unpriced["cost_usd"], unpriced["pricing_id"]) == ("provider", None, None)
    failed = columns(builder.build(event(completion_body("gpt-4o-mini"), status=500))[0])
    assert (failed["token_source"], failed["prompt_tokens"], failed["cost_partial"]) == ("none", None, False)


def test_a_stream_without_usage_asks_to_be_measured_and_the_next_row_does_not():
    builder = RowBuilder(PricingTable([MINI]))
    streamed = event(stream_events("gpt-4o-mini", 3, include_usage=False), stream=True,
                     content_type="text/event-stream")
    _, measure = builder.build(streamed)
    row = builder.counted(measure, 1_000_000)  # the row is built once, when its count is known
    assert measure is not None and measure[0] == "o200k_base" and columns(row)["token_source"] == "measured"
    counted = columns(row)
    assert (counted["completion_tokens"], counted["cost_usd"], counted["cost_partial"]) == \
        (1_000_000, Decimal("0.6"), True)
    assert builder.build(event(completion_body("gpt-4o-mini")))[1] is None


class Count(int):
    """An int that is not exactly ``int``, to send the usage parser down its general path."""


class Details(dict):
    pass


ODD_USAGES = [
    {"prompt_tokens": True, "input_tokens": 4, "completion_tokens": False, "output_tokens": 2},
    {"prompt_tokens": -1, "input_tokens": 4, "completion_tokens": 2.0, "output_tokens": -3},
    {"prompt_tokens": Count(5), "completion_tokens": Count(6)},
    {"prompt_tokens": 5, "prompt_tokens_details": Details(cached_tokens=2),
     "completion_tokens_details": [1], "output_tokens_details": {"reasoning_tokens": 1}},
    {"prompt_tokens_details": {"cached_tokens": -2}, "input_tokens_details": {"cached_tokens": 3}},
    {"prompt_tokens_details": None, "completion_tokens_details": {"reasoning_tokens": None}},
    {"prompt_tokens": "7", "completion_tokens": None, "total_tokens": 9},
    {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 105},
    {}, [], None,
]


@pytest.mark.parametrize("usage", ODD_USAGES)
@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_the_usual_case_shortcut_agrees_with_the_general_search(usage, provider):
    """``usage_from_mapping`` as it was before the shortcut for plain ints, by the general helpers."""
    expected = None
    if isinstance(usage, dict):
        prompt = _first_count(usage, ("prompt_tokens",), ("input_tokens",))
        completion = _first_count(usage, ("completion_tokens",), ("output_tokens",))
        cached = _first_count(usage, ("prompt_tokens_details", "cached_tokens"),
                              ("input_tokens_details", "cached_tokens"))
        reasoning = _first_count(usage, ("completion_tokens_details", "reasoning_tokens"),
                                 ("output_tokens_details", "reasoning_tokens"))
        if provider == "gemini":
            completion = gemini_billed_completion(prompt, completion, _count(usage, "total_tokens"))
        if (prompt, completion, cached, reasoning) != (None, None, None, None):
            expected = Usage(prompt, completion, cached, reasoning, "provider")
    found = usage_from_mapping(usage, provider)
    assert found == expected and type(found) is type(expected)
    if found is not None:
        assert [type(v) for v in found] == [type(v) for v in expected]


def test_rows_of_json_bodies_take_the_same_usage_as_extract_usage():
    body = orjson.dumps({"usage": {"prompt_tokens": 3, "input_tokens": 9, "completion_tokens": True,
                                   "output_tokens": 4}})
    row = columns(RowBuilder(PricingTable([])).build(event(body))[0])
    assert (row["prompt_tokens"], row["completion_tokens"]) == (3, 4)
