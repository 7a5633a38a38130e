"""Usage from response bytes: provider-reported usage in JSON and streams, measured counts, and never raising."""

import gzip
import zlib

import brotli
import orjson
import pytest

from lectr.devtools.mock_provider import stream_events
from lectr.recording.tokens import TokenCounter
from lectr.recording.usage import NO_USAGE, Usage, extract_usage

SSE = "text/event-stream"
JSON = "application/json"


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def extract(counter, chunks, *, provider="openai", model="gpt-4o-mini", stream=False, status_code=200,
            content_type=JSON, content_encoding=None) -> Usage:
    return extract_usage(provider=provider, model=model, stream=stream, status_code=status_code,
                         content_type=content_type, content_encoding=content_encoding, chunks=chunks, counter=counter)


def sse(*docs) -> list[bytes]:
    """One SSE event per doc (a dict, or raw bytes for the data), then ``[DONE]``."""
    events = [b"data: " + (d if isinstance(d, bytes) else orjson.dumps(d)) + b"\n\n" for d in docs]
    return events + [b"data: [DONE]\n\n"]


def chunk(content=None, *, usage=None, finish=None, **extra) -> dict:
    delta = {} if content is None else {"content": content}
    doc = {"id": "c1", "object": "chat.completion.chunk", "model": "m",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": usage}
    doc.update(extra)
    return doc


COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 120, "completion_tokens": 45, "total_tokens": 165,
              "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 30, "audio_tokens": 0}},
}
COMPLETION_USAGE = Usage(120, 45, 64, 30, "provider")


def test_json_usage_with_cached_and_reasoning_details(counter):
    assert extract(counter, [orjson.dumps(COMPLETION)]) == COMPLETION_USAGE


def test_json_body_split_across_chunks(counter):
    body = orjson.dumps(COMPLETION)
    assert extract(counter, [body[:7], body[7:50], body[50:]]) == COMPLETION_USAGE


def test_json_usage_with_null_details(counter):
    body = {"usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                      "prompt_tokens_details": None, "completion_tokens_details": None}}
    assert extract(counter, [orjson.dumps(body)]) == Usage(10, 5, None, None, "provider")


def test_anthropic_native_and_responses_api_names(counter):
    anthropic = {"type": "message", "usage": {"input_tokens": 11, "output_tokens": 7}}
    assert extract(counter, [orjson.dumps(anthropic)], provider="anthropic") == Usage(11, 7, None, None, "provider")
    responses = {"object": "response", "usage": {"input_tokens": 20, "output_tokens": 9, "total_tokens": 29,
                                                 "input_tokens_details": {"cached_tokens": 4},
                                                 "output_tokens_details": {"reasoning_tokens": 3}}}
    assert extract(counter, [orjson.dumps(responses)]) == Usage(20, 9, 4, 3, "provider")


def test_json_without_usage_is_none(counter):
    assert extract(counter, [orjson.dumps({"object": "list", "data": []})]) is NO_USAGE


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize("encoding,compress", [
    ("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", raw_deflate),
    ("br", brotli.compress), ("identity", lambda b: b), ("GZIP", gzip.compress),
])
def test_compressed_json_bodies(counter, encoding, compress):
    body = compress(orjson.dumps(COMPLETION))
    assert extract(counter, [body[:10], body[10:]], content_encoding=encoding) == COMPLETION_USAGE


def test_stacked_encodings_are_undone_in_reverse(counter):
    body = brotli.compress(gzip.compress(orjson.dumps(COMPLETION)))
    assert extract(counter, [body], content_encoding="gzip, br") == COMPLETION_USAGE


@pytest.mark.parametrize("encoding,compress", [("gzip", gzip.compress), ("br", brotli.compress)])
def test_compressed_stream(counter, encoding, compress):
    body = compress(b"".join(stream_events("gpt-4o-mini", 5, include_usage=True)))
    usage = extract(counter, [body], stream=True, content_type=SSE, content_encoding=encoding)
    assert usage == Usage(12, 5, None, None, "provider")


def test_openai_stream_with_include_usage_final_chunk(counter):
    events = stream_events("gpt-4o-mini", 7, include_usage=True)
    assert orjson.loads(events[-2][6:])["choices"] == []  # the usage chunk really has no choices
    assert extract(counter, events, stream=True, content_type=SSE) == Usage(12, 7, None, None, "provider")


def test_stream_usage_with_details(counter):
    events = sse(chunk("Hel"), chunk("lo", finish="stop"),
                 {"choices": [], "usage": COMPLETION["usage"]})
    assert extract(counter, events, stream=True, content_type=SSE) == COMPLETION_USAGE


def test_sse_event_split_across_chunk_boundaries(counter):
    body = b"".join(stream_events("gpt-4o-mini", 4, include_usage=True))
    pieces = [body[i:i + 13] for i in range(0, len(body), 13)]
    assert extract(counter, pieces, stream=True, content_type=SSE) == Usage(12, 4, None, None, "provider")


def test_crlf_event_separators(counter):
    body = b"".join(stream_events("gpt-4o-mini", 3, include_usage=True)).replace(b"\n", b"\r\n")
    assert extract(counter, [body], stream=True, content_type=SSE) == Usage(12, 3, None, None, "provider")


def test_groq_stream_with_x_groq_usage_only(counter):
    groq_usage = {"queue_time": 0.01, "prompt_tokens": 33, "prompt_time": 0.002, "completion_tokens": 2,
                  "completion_time": 0.004, "total_tokens": 35, "total_time": 0.006}
    events = sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "x_groq": {"id": "req_1"}},
                 {"choices": [{"index": 0, "delta": {"content": "Hi"}}]},
                 {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                  "x_groq": {"id": "req_1", "usage": groq_usage}})
    usage = extract(counter, events, provider="groq", model="llama-3.3-70b-versatile", stream=True, content_type=SSE)
    assert usage == Usage(33, 2, None, None, "provider")


def test_gemini_repeated_usage_takes_the_last_not_the_sum(counter):
    events = sse(chunk("Hello", usage={"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}),
                 chunk(" there", usage={"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}),
                 chunk(None, finish="stop", usage={"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11}))
    usage = extract(counter, events, provider="gemini", model="gemini-2.5-flash", stream=True, content_type=SSE)
    assert usage == Usage(8, 3, None, None, "provider")


def test_a_later_null_usage_does_not_erase_an_earlier_one(counter):
    events = sse(chunk("Hi", usage={"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}),
                 chunk(None, finish="stop", usage=None), {"choices": [], "usage": {}})
    usage = extract(counter, events, provider="gemini", model="gemini-2.5-flash", stream=True, content_type=SSE)
    assert usage == Usage(4, 1, None, None, "provider")


def test_one_odd_chunk_does_not_spoil_the_stream(counter):
    events = sse(chunk("Hi"), {"choices": 5, "x_groq": 7, "usage": 3}, {"choices": [None, {"delta": None}]},
                 {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 1}})
    assert extract(counter, events, stream=True, content_type=SSE) == Usage(4, 1, None, None, "provider")


def test_gemini_thinking_tokens_billed_as_output(counter):
    thinking = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 115}
    events = sse(chunk("Answer", finish="stop", usage=thinking))
    streamed = extract(counter, events, provider="gemini", model="gemini-2.5-pro", stream=True, content_type=SSE)
    assert streamed == Usage(10, 105, None, None, "provider")
    body = [orjson.dumps({"choices": [], "usage": thinking})]
    assert extract(counter, body, provider="gemini") == Usage(10, 105, None, None, "provider")
    # Only Gemini: elsewhere a total that disagrees is not ours to reinterpret.
    assert extract(counter, body, provider="openai") == Usage(10, 5, None, None, "provider")


def test_gemini_consistent_total_is_left_alone(counter):
    body = [orjson.dumps({"usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})]
    assert extract(counter, body, provider="gemini") == Usage(10, 5, None, None, "provider")


def test_azure_stream_with_empty_choices_and_content_filter_chunks(counter):
    events = sse(
        {"id": "", "model": "", "object": "", "created": 0, "choices": [],
         "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False}}}]},
        chunk("Hello"),
        chunk(" world", finish="stop"),
        {"id": "c1", "choices": [{"index": 0, "finish_reason": None,
                                  "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 11},
                                  "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}}}]},
        {"id": "c1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}},
    )
    usage = extract(counter, events, provider="azure", model="prod-gpt4o", stream=True, content_type=SSE)
    assert usage == Usage(9, 2, None, None, "provider")


def test_azure_stream_without_usage_is_measured(counter):
    events = sse({"id": "", "choices": [], "prompt_filter_results": []},
                 chunk("Hello"), {"choices": [{"index": 0, "content_filter_results": {}}]}, chunk(" world"))
    usage = extract(counter, events, provider="azure", model="prod-gpt4o", stream=True, content_type=SSE)
    assert usage == Usage(None, counter.count("Hello world", "prod-gpt4o", "azure"), None, None, "measured")


def test_stream_without_usage_is_measured(counter):
    events = stream_events("gpt-4o-mini", 9, include_usage=False)
    text = "".join(orjson.loads(e[6:])["choices"][0]["delta"].get("content", "") for e in events[:-1])
    usage = extract(counter, events, stream=True, content_type=SSE)
    assert usage.prompt_tokens is None
    assert usage == Usage(None, counter.count(text, "gpt-4o-mini", "openai"), None, None, "measured")
    assert usage.completion_tokens > 0


def test_measured_counts_reasoning_and_refusal_strings(counter):
    events = sse({"choices": [{"index": 0, "delta": {"reasoning_content": "Think first. "}}]},
                 {"choices": [{"index": 0, "delta": {"content": "Then answer.", "refusal": None}}]},
                 {"choices": [{"index": 0, "delta": {"refusal": " I can't help with that."}}]})
    usage = extract(counter, events, provider="groq", model="qwen/qwen3-32b", stream=True, content_type=SSE)
    expected = counter.count("Think first. Then answer. I can't help with that.", "qwen/qwen3-32b", "groq")
    assert usage == Usage(None, expected, None, None, "measured")


def test_stream_flag_without_content_type_is_parsed_as_sse(counter):
    events = stream_events("gpt-4o-mini", 2, include_usage=True)
    assert extract(counter, events, stream=True, content_type=None) == Usage(12, 2, None, None, "provider")


def test_interrupted_stream_keeps_what_arrived(counter):
    body = b"".join(sse(chunk("Hello"), chunk(" world")))
    truncated = body[:body.index(b" world") + 3]  # cut inside the second event's JSON
    usage = extract(counter, [truncated], stream=True, content_type=SSE)
    assert usage == Usage(None, counter.count("Hello", "gpt-4o-mini", "openai"), None, None, "measured")


def test_interrupted_gzip_stream_keeps_what_arrived(counter):
    body = gzip.compress(b"".join(sse(chunk("Hello there, general"), chunk(" Kenobi"))))
    usage = extract(counter, [body[:-12]], stream=True, content_type=SSE, content_encoding="gzip")
    assert usage.source == "measured" and usage.completion_tokens > 0


def test_stream_with_only_empty_deltas_is_none(counter):
    events = sse(chunk(""), chunk(None, finish="stop"))
    assert extract(counter, events, stream=True, content_type=SSE) is NO_USAGE


@pytest.mark.parametrize("status_code", [400, 401, 429, 500, 503])
def test_error_status_is_none(counter, status_code):
    assert extract(counter, [orjson.dumps(COMPLETION)], status_code=status_code) is NO_USAGE


def test_uncaptured_or_empty_body_is_none(counter):
    assert extract(counter, None) is NO_USAGE
    assert extract(counter, []) is NO_USAGE
    assert extract(counter, [b"", b""]) is NO_USAGE
    assert extract(counter, None, stream=True, content_type=SSE) is NO_USAGE


@pytest.mark.parametrize("chunks,kwargs", [
    ([b"{not json"], {}),
    ([b"\x00\xff\xfe garbage \x89PNG"], {}),
    ([b"[1, 2, 3]"], {}),
    ([b'"a string"'], {}),
    ([b'{"usage": "lots"}'], {}),
    ([b'{"usage": {"prompt_tokens": "12", "completion_tokens": -1, "total_tokens": true}}'], {}),
    ([b'{"usage": {"prompt_tokens_details": [1], "completion_tokens_details": 7}}'], {}),
    ([b"\x00\xff\xfe garbage"], {"content_encoding": "gzip"}),
    ([b"\x00\xff\xfe garbage"], {"content_encoding": "deflate"}),
    ([b"\x00\xff\xfe garbage"], {"content_encoding": "br"}),
    ([orjson.dumps(COMPLETION)], {"content_encoding": "zstd"}),
    ([b"data: {broken\n\ndata: [1,2]\n\ndata: \"x\"\n\n: comment\n\nevent: ping\n\n"],
     {"stream": True, "content_type": SSE}),
    ([b'data: {"choices": "nope", "usage": [1]}\n\ndata: {"choices": [null, 3, {"delta": "x"}]}\n\n'],
     {"stream": True, "content_type": SSE}),
    ([b"\x00\xff\xfe\n\n\r\r\n garbage"], {"stream": True, "content_type": SSE}),
])
def test_malformed_bodies_are_none_without_raising(counter, chunks, kwargs):
    assert extract(counter, chunks, **kwargs) is NO_USAGE


def test_compression_bomb_is_none(counter, monkeypatch):
    import lectr.recording.encodings as usage_module

    monkeypatch.setattr(usage_module, "MAX_DECODED_BYTES", 1024)
    padded = dict(COMPLETION, padding="x" * 4096)
    for encoding, compress in (("gzip", gzip.compress), ("br", brotli.compress)):
        assert extract(counter, [compress(orjson.dumps(padded))], content_encoding=encoding) is NO_USAGE


def test_a_failing_tokeniser_costs_only_the_usage():
    class BrokenCounter(TokenCounter):
        def count(self, text, model, provider):
            raise RuntimeError("tokeniser broke")

    events = stream_events("gpt-4o-mini", 3, include_usage=False)
    assert extract(BrokenCounter(), events, stream=True, content_type=SSE) is NO_USAGE
