"""Usage, the served model and the usage note for every response shape a provider sends (pure logic)."""

import gzip
import zlib
from datetime import datetime, timezone
from decimal import Decimal

import brotli
import orjson
import pytest
import zstandard

from lectr.proxy.event import CAPTURE_TAIL_BYTES, RequestEvent
from lectr.recording.rows import COLUMNS, RowBuilder
from lectr.recording.tokens import TokenCounter
from lectr.recording.usage import NO_USAGE, Usage, extract_usage, response_values
from lectr.pricing.prices import PriceRow, PricingTable

SSE = "text/event-stream"
JSON = "application/json"
WEATHER_ARGS = '{"location": "Paris, France", "unit": "celsius"}'


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def sse(*docs) -> list[bytes]:
    return [b"data: " + orjson.dumps(d) + b"\n\n" for d in docs] + [b"data: [DONE]\n\n"]


def named_sse(*events: tuple[str, dict]) -> list[bytes]:
    """Anthropic's native stream: an ``event:`` line and a ``data:`` line per event."""
    return [b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(doc)) for name, doc in events]


def chunk(*deltas: dict, finish: str | None = None, model: str = "gpt-4o-mini") -> dict:
    return {"id": "c1", "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": i, "delta": d, "finish_reason": finish} for i, d in enumerate(deltas)]}


def pieces(text: str, size: int = 7) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def tool_call(name: str | None = None, arguments: str = "", *, index: int = 0) -> dict:
    function = {"arguments": arguments} if name is None else {"name": name, "arguments": arguments}
    call = {"index": index, "function": function}
    if name is not None:
        call.update(id=f"call_{name}", type="function")
    return {"tool_calls": [call]}


# Streams with no usage chunk, and everything the model generated in them, in order.
ONE_TOOL_CALL = ([chunk({"role": "assistant", "content": None, **tool_call("get_weather")})]
                 + [chunk(tool_call(arguments=p)) for p in pieces(WEATHER_ARGS)]
                 + [chunk({}, finish="tool_calls")], "get_weather" + WEATHER_ARGS)
TWO_CHOICES = ([chunk(tool_call("get_weather"), tool_call("get_time"))]
               + [chunk(tool_call(arguments=p), tool_call(arguments=q))
                  for p, q in zip(pieces(WEATHER_ARGS), pieces('{"zone": "Europe/Paris"}' + " " * 30))]
               + [chunk({}, {}, finish="tool_calls")], None)
FUNCTION_CALL = ([chunk({"role": "assistant", "function_call": {"name": "get_weather", "arguments": ""}})]
                 + [chunk({"function_call": {"arguments": p}}) for p in pieces(WEATHER_ARGS)]
                 + [chunk({}, finish="function_call")], "get_weather" + WEATHER_ARGS)
REFUSAL = ([chunk({"role": "assistant", "refusal": ""})]
           + [chunk({"refusal": p}) for p in pieces("I'm sorry, I can't help with that request.")]
           + [chunk({}, finish="stop")], "I'm sorry, I can't help with that request.")
REASONING = ([chunk({"reasoning_content": p}) for p in pieces("First, consider the weather in Paris.")]
             + [chunk({"content": p}) for p in pieces("It is sunny.")], "First, consider the weather in Paris."
             "It is sunny.")
OPENROUTER_REASONING = ([chunk({"reasoning": "Think it through. "}), chunk({"content": "Yes."})],
                        "Think it through. Yes.")
CONTENT_PARTS = ([chunk({"content": [{"type": "text", "text": "Bonjour"}, {"type": "text", "text": " Paris"}]})],
                 "Bonjour Paris")
RESPONSES_API = ([{"type": "response.output_text.delta", "delta": "Hello"},
                  {"type": "response.output_text.delta", "delta": " there"},
                  {"type": "response.function_call_arguments.delta", "delta": WEATHER_ARGS}],
                 "Hello there" + WEATHER_ARGS)


def two_choices_text() -> str:
    texts = ["get_weather", "get_time"]
    for p, q in zip(pieces(WEATHER_ARGS), pieces('{"zone": "Europe/Paris"}' + " " * 30)):
        texts += [p, q]
    return "".join(texts)


@pytest.mark.parametrize("docs,generated", [ONE_TOOL_CALL, TWO_CHOICES, FUNCTION_CALL, REFUSAL, REASONING,
                                            OPENROUTER_REASONING, CONTENT_PARTS, RESPONSES_API],
                         ids=["tool_call", "tool_calls_in_two_choices", "function_call", "refusal", "reasoning",
                              "openrouter_reasoning", "content_parts", "responses_api"])
def test_everything_generated_in_a_stream_is_measured(counter, docs, generated):
    generated = generated if generated is not None else two_choices_text()
    usage = extract_usage(provider="openai", model="gpt-4o-mini", stream=True, status_code=200, content_type=SSE,
                          content_encoding=None, chunks=sse(*docs), counter=counter)
    assert usage == Usage(None, counter.count(generated, "gpt-4o-mini", "openai"), None, None, "measured")
    assert usage.completion_tokens >= 2


# -- every encoding a client can negotiate ------------------------------------------------------

COMPLETION = orjson.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 120, "completion_tokens": 45, "total_tokens": 165,
              "prompt_tokens_details": {"cached_tokens": 64}, "completion_tokens_details": {"reasoning_tokens": 30}},
})


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def zstd_streamed(data: bytes) -> bytes:
    """Two frames without a content size, as a streaming compressor writes them."""
    packer = zstandard.ZstdCompressor(write_content_size=False)
    half = len(data) // 2
    return packer.compress(data[:half]) + packer.compress(data[half:])


CODINGS = [
    ("gzip", lambda b: gzip.compress(b)),
    ("x-gzip", lambda b: gzip.compress(b)),
    ("deflate", zlib.compress),
    ("deflate", raw_deflate),
    ("br", brotli.compress),
    ("zstd", zstd),
    ("zstd", zstd_streamed),
    ("ZSTD", zstd),
    ("identity", lambda b: b),
    ("gzip, br", lambda b: brotli.compress(gzip.compress(b))),
    ("deflate,zstd", lambda b: zstd(zlib.compress(b))),
    ("zstd, gzip", lambda b: gzip.compress(zstd(b))),
    ("identity, zstd", zstd),
]


@pytest.mark.parametrize("encoding,encode", CODINGS)
def test_json_usage_is_read_in_every_coding(counter, encoding, encode):
    body = encode(COMPLETION)
    usage, note, served, _ = response_values("openai", "gpt-4o-mini", False, 200, JSON, encoding,
                                             [body[:5], body[5:]], None, counter)
    assert (tuple(usage), note, served) == ((120, 45, 64, 30, "provider"), None, "gpt-4o-mini-2024-07-18")


@pytest.mark.parametrize("encoding", ["zstd", "br", "zstd, gzip"])
def test_stream_usage_is_read_in_every_coding(counter, encoding):
    events = b"".join(sse(chunk({"content": "Hi"}), {"choices": [], "usage": {"prompt_tokens": 9,
                                                                             "completion_tokens": 2}}))
    encode = dict(CODINGS)[encoding]
    usage = extract_usage(provider="openai", model="gpt-4o-mini", stream=True, status_code=200, content_type=SSE,
                          content_encoding=encoding, chunks=[encode(events)], counter=counter)
    assert usage == Usage(9, 2, None, None, "provider")


@pytest.mark.parametrize("encoding,body", [
    ("compress", COMPLETION), ("exi", COMPLETION), ("zstd", COMPLETION), ("gzip", b"\x1f\x8b garbage"),
    ("br, gzip", gzip.compress(COMPLETION)), ("snappy", zstd(COMPLETION)),
])
def test_a_body_that_cannot_be_decoded_says_so(counter, encoding, body):
    assert response_values("openai", "gpt-4o-mini", False, 200, JSON, encoding, [body], None, counter) == \
        (NO_USAGE, "undecodable", None, None)


# -- Anthropic's native API --------------------------------------------------------------------

def anthropic_stream(usage_start: dict, usage_end: dict) -> list[bytes]:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
               "content": [], "stop_reason": None, "usage": usage_start}
    return named_sse(
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hello there"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage_end}),
        ("message_stop", {"type": "message_stop"}),
    )


# Counts stay in Anthropic's terms (input_tokens leaves the cache reads and writes out), as
# compute_cost expects them: (prompt, completion, cached reads, cache writes).
@pytest.mark.parametrize("usage_start,usage_end,expected", [
    ({"input_tokens": 31, "output_tokens": 1}, {"output_tokens": 17}, (31, 17, None, None)),
    ({"input_tokens": 31, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1},
     {"output_tokens": 17}, (31, 17, 0, 0)),
    ({"input_tokens": 5, "cache_creation_input_tokens": 6, "cache_read_input_tokens": 20, "output_tokens": 1},
     {"output_tokens": 17}, (5, 17, 20, 6)),
    # Newer streams repeat the whole usage, cumulative, in message_delta.
    ({"input_tokens": 31, "output_tokens": 1},
     {"input_tokens": 31, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 0, "output_tokens": 17},
     (31, 17, 0, 2)),
])
def test_anthropic_native_stream_usage(counter, usage_start, usage_end, expected):
    usage, note, served, written = response_values("anthropic", "claude-sonnet-4-5", True, 200, SSE, None,
                                                   anthropic_stream(usage_start, usage_end), None, counter)
    prompt, completion, cached, writes = expected
    assert (tuple(usage), note, served, written) == \
        ((prompt, completion, cached, None, "provider"), None, "claude-sonnet-4-5-20250929", writes)


@pytest.mark.parametrize("usage,expected", [
    ({"input_tokens": 31, "output_tokens": 17}, (31, 17, None, None)),
    ({"input_tokens": 10, "cache_creation_input_tokens": 4, "cache_read_input_tokens": 100, "output_tokens": 7},
     (10, 7, 100, 4)),
    ({"input_tokens": 10, "cache_creation_input_tokens": None, "cache_read_input_tokens": 3, "output_tokens": 7},
     (10, 7, 3, None)),
])
def test_anthropic_native_json_usage(counter, usage, expected):
    body = orjson.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022",
                         "content": [{"type": "text", "text": "Hi"}], "usage": usage})
    usage, note, served, written = response_values("anthropic", "claude-3-5-haiku-latest", False, 200, JSON, None,
                                                   [body], None, counter)
    prompt, completion, cached, writes = expected
    assert (tuple(usage), written, served) == \
        ((prompt, completion, cached, None, "provider"), writes, "claude-3-5-haiku-20241022")


def test_anthropic_cache_reads_and_writes_are_priced_as_such():
    since = datetime(2024, 1, 1, tzinfo=timezone.utc)
    haiku = PriceRow(9, "anthropic", "claude-3-5-haiku", Decimal("0.8"), Decimal("4"), Decimal("0.08"), since, "seed",
                     cache_write_per_mtok=Decimal("1"))
    body = orjson.dumps({"model": "claude-3-5-haiku-20241022", "usage": {
        "input_tokens": 10, "cache_creation_input_tokens": 1000, "cache_read_input_tokens": 2000, "output_tokens": 7}})
    row = columns(RowBuilder(PricingTable([haiku])).build(
        event([body], model="claude-3-5-haiku-latest", provider="anthropic"))[0])
    assert (row["prompt_tokens"], row["cached_tokens"], row["pricing_id"]) == (10, 2000, 9)
    # 10 input at $0.80, 2,000 cache reads at $0.08, 1,000 cache writes at $1, 7 output at $4 per million.
    assert row["cost_usd"] == (Decimal(10 * 0.8 + 2000 * 0.08 + 1000 * 1 + 7 * 4) / 1_000_000).quantize(
        row["cost_usd"])


# -- the model that served the request ----------------------------------------------------------

@pytest.mark.parametrize("chunks,stream", [
    ([COMPLETION], False),
    (sse(chunk({"content": "Hi"}, model="gpt-4o-mini-2024-07-18"), chunk({}, finish="stop", model="other")), True),
    (sse({"type": "response.created", "response": {"id": "r", "model": "gpt-4o-mini-2024-07-18"}}), True),
])
def test_the_served_model_is_read_from_the_response(counter, chunks, stream):
    served = response_values("openai", "gpt-4o-mini", stream, 200, SSE if stream else JSON, None, chunks, None,
                             counter)[2]
    assert served == "gpt-4o-mini-2024-07-18"


def event(chunks: list[bytes], *, model: str, stream: bool = False, tail: list[bytes] | None = None,
          provider: str = "openai", content_encoding: str | None = None) -> RequestEvent:
    return RequestEvent(7, 1_773_140_000.0, provider, model, model, "f", None, 200, None, None, stream, 10.0, 10.1,
                        10.2, 1e-5, False, None, 100, 1000, SSE if stream else JSON, content_encoding, chunks, tail)


def columns(row: tuple) -> dict:
    return dict(zip(COLUMNS, row, strict=True))


SINCE = datetime(2024, 1, 1, tzinfo=timezone.utc)
GPT_4O = PriceRow(1, "openai", "gpt-4o", Decimal("2.5"), Decimal("10"), None, SINCE, "seed")
GPT_4O_MAY = PriceRow(2, "openai", "gpt-4o-2024-05-13", Decimal("5"), Decimal("15"), None, SINCE, "seed")
MINI = PriceRow(3, "openai", "gpt-4o-mini", Decimal("0.15"), Decimal("0.6"), None, SINCE, "seed")


@pytest.mark.parametrize("served,pricing_id,cost", [
    ("gpt-4o-2024-05-13", 2, Decimal("0.000635")),  # the snapshot's own, higher price
    ("gpt-4o-2024-08-06", 1, Decimal("0.000340")),  # a snapshot without one: its family's
    ("renamed-by-a-proxy", 1, Decimal("0.000340")),  # a name Lectr cannot price: the requested model's
])
def test_rows_keep_the_requested_model_and_price_the_served_one(served, pricing_id, cost):
    body = orjson.dumps({"model": served, "usage": {"prompt_tokens": 100, "completion_tokens": 9}})
    row = columns(RowBuilder(PricingTable([GPT_4O, GPT_4O_MAY])).build(event([body], model="gpt-4o"))[0])
    assert (row["model"], row["model_used"], row["pricing_id"], row["cost_usd"]) == ("gpt-4o", served, pricing_id,
                                                                                     cost)


def test_a_response_naming_no_model_keeps_the_requested_one():
    body = orjson.dumps({"usage": {"prompt_tokens": 100, "completion_tokens": 9}})
    row = columns(RowBuilder(PricingTable([GPT_4O])).build(event([body], model="gpt-4o"))[0])
    assert (row["model"], row["model_used"], row["pricing_id"]) == ("gpt-4o", "gpt-4o", 1)


# -- bodies that outgrew the capture: head and tail ---------------------------------------------

def cut(parts: list[bytes], head_bytes: int) -> tuple[list[bytes], list[bytes]]:
    """Split a body as the proxy's capture does: whole parts up to ``head_bytes``, then the last
    ``CAPTURE_TAIL_BYTES`` or so."""
    head, kept = [], 0
    for i, part in enumerate(parts):
        if kept + len(part) > head_bytes:
            return head, [b"".join(parts[i:])[-CAPTURE_TAIL_BYTES:]]
        head.append(part)
        kept += len(part)
    raise AssertionError("the body fits")


def long_stream(chunks: int, *, usage: dict | None) -> list[bytes]:
    docs = [chunk({"content": "word "}, model="gpt-4o-mini-2024-07-18") for _ in range(chunks)]
    if usage is not None:
        docs.append({"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18",
                     "choices": [], "usage": usage})
    return sse(*docs)


def test_a_long_streams_usage_at_its_end_is_read(counter):
    head, tail = cut(long_stream(30_000, usage={"prompt_tokens": 50, "completion_tokens": 30_000}), 1_000_000)
    assert response_values("openai", "gpt-4o-mini", True, 200, SSE, None, head, tail, counter) == \
        ((50, 30_000, None, None, "provider"), None, "gpt-4o-mini-2024-07-18", None)


def test_a_long_stream_without_usage_is_counted_as_far_as_kept_and_says_so(counter):
    head, tail = cut(long_stream(30_000, usage=None), 1_000_000)
    usage, note, _, _ = response_values("openai", "gpt-4o-mini", True, 200, SSE, None, head, tail, counter)
    assert usage[4] == "measured" and note == "truncated"
    assert 0 < usage[1] < 30_000  # a lower bound: the middle of the stream was not kept


def test_a_long_responses_api_stream_with_usage_in_a_huge_final_event(counter):
    text = "word " * 200_000
    docs = [{"type": "response.created", "response": {"model": "gpt-4.1-2025-04-14"}}]
    docs += [{"type": "response.output_text.delta", "delta": "word "} for _ in range(1000)]
    docs.append({"type": "response.completed", "response": {
        "model": "gpt-4.1-2025-04-14", "output": [{"content": [{"type": "output_text", "text": text}]}],
        "usage": {"input_tokens": 12, "output_tokens": 200_000, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 0}}, "metadata": {}}})
    head, tail = cut(sse(*docs), 50_000)
    assert response_values("openai", "gpt-4.1", True, 200, SSE, None, head, tail, counter) == \
        ((12, 200_000, 0, 0, "provider"), None, "gpt-4.1-2025-04-14", None)


@pytest.mark.parametrize("provider,usage,expected", [
    ("openai", {"prompt_tokens": 50, "completion_tokens": 30_000, "prompt_tokens_details": {"cached_tokens": 10}},
     (50, 30_000, 10, None)),
    ("anthropic", {"input_tokens": 50, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 5,
                   "output_tokens": 30_000}, (50, 30_000, 0, None)),
])
def test_a_long_json_bodys_usage_is_read_from_its_tail(counter, provider, usage, expected):
    body = orjson.dumps({"id": "x", "model": "gpt-4o-mini-2024-07-18",
                         "choices": [{"message": {"content": 'say "usage": {"prompt_tokens": 1} ' * 200_000}}],
                         "usage": usage, "system_fingerprint": "fp_1"})
    parts = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    head, tail = cut(parts, 1_000_000)
    assert response_values(provider, "gpt-4o-mini", False, 200, JSON, None, head, tail, counter)[:3] == \
        ((*expected, "provider"), None, "gpt-4o-mini-2024-07-18")


def test_a_long_json_body_whose_usage_is_lost_says_so(counter):
    body = orjson.dumps({"model": "m", "choices": [{"message": {"content": "x" * 2_000_000}}]})
    head, tail = cut([body[i:i + 65536] for i in range(0, len(body), 65536)], 1_000_000)
    assert response_values("openai", "m", False, 200, JSON, None, head, tail, counter) == \
        (NO_USAGE, "truncated", "m", None)


def test_rows_whose_usage_could_not_be_read_are_said_beside_the_unpriced_ones():
    from lectr.dashboard.pages import coverage_notes

    [note] = coverage_notes({"unread_requests": 3})
    assert note.startswith("3 requests have usage Lectr could not read in full")
    assert coverage_notes({"unread_requests": 0}) == []


def run_steps(steps) -> tuple[object, int]:
    pauses = 0
    try:
        while True:
            next(steps)
            pauses += 1
    except StopIteration as done:
        return done.value, pauses


@pytest.mark.parametrize("chunks,stream,min_pauses", [
    (long_stream(2000, usage=None), True, 5),
    (long_stream(2000, usage={"prompt_tokens": 5, "completion_tokens": 2000}), True, 5),
    ([COMPLETION], False, 0),
])
def test_building_in_steps_pauses_on_long_streams_and_builds_the_same_row(chunks, stream, min_pauses):
    builder = RowBuilder(PricingTable([MINI]))
    e = event(chunks, model="gpt-4o-mini", stream=stream)
    built, pauses = run_steps(builder.build_steps(e))
    assert pauses >= min_pauses and built == builder.build(e)
