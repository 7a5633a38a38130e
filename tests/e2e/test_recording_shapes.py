"""Every response shape recorded right, end to end: ``lectr serve`` → mock provider → request_logs on Postgres."""

from __future__ import annotations

import gzip
import http.client
import threading
import time
import urllib.request

import orjson
import pytest
import zstandard

from lectr.recording.tokens import TokenCounter
from tests.conftest import create_org, lectr_env, sdk_client, start_lectr, stop_lectr
from tests.e2e.test_recording import query, wait_for_rows

SSE = b"text/event-stream"
WEATHER_ARGS = '{"location": "Paris, France", "unit": "celsius"}'
WORDS = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "eiusmod",
         "tempor", "incididunt", "labore", "magna", "aliqua"]


def sse(*docs: dict) -> list[bytes]:
    return [b"data: " + orjson.dumps(d) + b"\n\n" for d in docs] + [b"data: [DONE]\n\n"]


def chunk(delta: dict, *, finish: str | None = None, model: str = "gpt-4o-mini-2024-07-18") -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1767225600, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def completion(model: str, usage: dict | None, content: str = "Hi") -> bytes:
    doc = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1767225600, "model": model,
           "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}
    if usage is not None:
        doc["usage"] = usage
    return orjson.dumps(doc)


@pytest.fixture(scope="module")
def server(database_url, mock, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shapes")
    env = lectr_env(database_url, mock, tmp, LECTR_FLUSH_INTERVAL="0.2", LECTR_UPSTREAM_READ_TIMEOUT="20")
    key = create_org(env, "shapes")
    lectr = start_lectr(env, tmp / "serve.log")
    lectr.extra["key"] = key
    yield lectr
    stop_lectr(lectr)


def sdk(server, feature: str, reply: str):
    return sdk_client(server.base_url, api_key="sk-shapes", timeout=60,
                      **{"X-Lectr-Key": server.extra["key"], "X-Lectr-Feature": feature, "x-mock-reply": reply})


def post(server, path: str, body: dict, feature: str, reply: str, **headers: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("POST", path, orjson.dumps(body), {
            "Content-Type": "application/json", "X-Lectr-Key": server.extra["key"], "X-Lectr-Feature": feature,
            "x-mock-reply": reply, "Accept-Encoding": "gzip, deflate, br, zstd", **headers})
        response = conn.getresponse()
        data = response.read()
        assert response.status == 200, data[:200]
        return data
    finally:
        conn.close()


def one_row(database_url, feature: str):
    [row] = wait_for_rows(database_url, f"feature = '{feature}'", 1)
    return row


def test_streamed_tool_calls_without_usage_are_measured(server, mock, database_url):
    docs = [chunk({"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]})]
    docs += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": WEATHER_ARGS[i:i + 9]}}]})
             for i in range(0, len(WEATHER_ARGS), 9)]
    docs.append(chunk({}, finish="tool_calls"))
    mock.add_reply("tool-stream", sse(*docs), content_type=SSE)
    calls = {}
    for part in sdk(server, "tool-stream", "tool-stream").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "weather?"}], stream=True):
        for call in part.choices[0].delta.tool_calls or []:
            calls[call.function.name or "args"] = call.function.arguments
    row = one_row(database_url, "tool-stream")
    expected = TokenCounter().count("get_weather" + WEATHER_ARGS, "gpt-4o-mini", "openai")
    assert (row["token_source"], row["prompt_tokens"], row["completion_tokens"]) == ("measured", None, expected)
    assert row["cost_partial"] is True and row["cost_usd"] > 0 and row["usage_note"] is None
    assert (row["model"], row["model_used"]) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")


def test_a_long_streams_usage_at_its_end_is_recorded(server, mock, database_url):
    docs = [chunk({"content": WORDS[i % len(WORDS)] + " "}) for i in range(30_000)]
    docs.append({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18",
                 "choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 30_000, "total_tokens": 30_050}})
    events = sse(*docs)
    assert sum(map(len, events)) > 5_000_000  # past the 4 MiB capture limit
    mock.add_reply("long-stream", events, content_type=SSE)
    parts = list(sdk(server, "long-stream", "long-stream").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "go on"}], stream=True,
        stream_options={"include_usage": True}))
    assert parts[-1].usage.completion_tokens == 30_000  # relayed intact
    row = one_row(database_url, "long-stream")
    assert (row["token_source"], row["prompt_tokens"], row["completion_tokens"]) == ("provider", 50, 30_000)
    # gpt-4o-mini: $0.15 in, $0.60 out per million tokens.
    assert float(row["cost_usd"]) == pytest.approx((50 * 0.15 + 30_000 * 0.6) / 1e6)
    assert row["usage_note"] is None and row["bytes_out"] > 5_000_000


def test_a_long_stream_without_usage_is_counted_as_far_as_kept_and_marked(server, mock, database_url):
    mock.add_reply("long-bare", sse(*[chunk({"content": "word "}) for _ in range(30_000)]), content_type=SSE)
    post(server, "/v1/chat/completions", {"model": "gpt-4o-mini", "stream": True}, "long-bare", "long-bare")
    row = one_row(database_url, "long-bare")
    assert (row["token_source"], row["usage_note"], row["cost_partial"]) == ("measured", "truncated", True)
    assert 0 < row["completion_tokens"] < 30_000


def test_a_long_json_bodys_usage_is_recorded(server, mock, database_url):
    body = completion("gpt-4o-mini-2024-07-18", {"prompt_tokens": 40, "completion_tokens": 1_200_000},
                      content="word " * 1_200_000)
    assert len(body) > 5_000_000
    mock.add_reply("long-json", [body[i:i + 16384] for i in range(0, len(body), 16384)])
    post(server, "/v1/chat/completions", {"model": "gpt-4o-mini"}, "long-json", "long-json")
    row = one_row(database_url, "long-json")
    assert (row["token_source"], row["prompt_tokens"], row["completion_tokens"]) == ("provider", 40, 1_200_000)
    assert (row["model_used"], row["usage_note"]) == ("gpt-4o-mini-2024-07-18", None)


def zstd_frames(data: bytes) -> bytes:
    packer = zstandard.ZstdCompressor(write_content_size=False)
    return packer.compress(data[:100]) + packer.compress(data[100:])


@pytest.mark.parametrize("name,encoding,encode", [
    ("zstd", "zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
    ("zstd-frames", "zstd", zstd_frames),
    ("stacked", "gzip, zstd", lambda b: zstandard.ZstdCompressor().compress(gzip.compress(b, mtime=0))),
    ("x-gzip", "x-gzip", lambda b: gzip.compress(b, mtime=0)),
])
def test_json_bodies_in_every_coding_are_recorded(server, mock, database_url, name, encoding, encode):
    body = completion("gpt-4o-mini-2024-07-18", {"prompt_tokens": 21, "completion_tokens": 8})
    mock.add_reply(f"coding-{name}", [encode(body)], headers=(b"content-encoding: " + encoding.encode(),))
    # Raw HTTP: the SDK's client cannot read zstd; the bytes must arrive exactly as the provider sent them.
    assert post(server, "/v1/chat/completions", {"model": "gpt-4o-mini"}, f"coding-{name}",
                f"coding-{name}") == encode(body)
    row = one_row(database_url, f"coding-{name}")
    assert (row["token_source"], row["prompt_tokens"], row["completion_tokens"]) == ("provider", 21, 8)
    assert row["cost_usd"] > 0 and row["usage_note"] is None


def test_a_body_in_an_unreadable_coding_is_counted_and_marked(server, mock, database_url):
    body = completion("gpt-4o-mini", {"prompt_tokens": 21, "completion_tokens": 8})
    mock.add_reply("coding-unknown", [b"\x1f\x9d" + body], headers=(b"content-encoding: compress",))
    post(server, "/v1/chat/completions", {"model": "gpt-4o-mini"}, "coding-unknown", "coding-unknown")
    row = one_row(database_url, "coding-unknown")
    assert (row["token_source"], row["usage_note"], row["cost_usd"]) == ("none", "undecodable", None)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.env['LECTR_ADMIN_PORT']}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert 'lectr_undecodable_responses_total{encoding="compress"} 1.0' in metrics


def anthropic_events(model: str) -> list[bytes]:
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "usage": {"input_tokens": 31, "cache_creation_input_tokens": 0,
                                           "cache_read_input_tokens": 0, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hello! How can I help?"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": 17}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return [b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(doc)) for name, doc in events]


def test_anthropics_native_stream_is_recorded_with_its_prompt(server, mock, database_url):
    mock.add_reply("anthropic-stream", anthropic_events("claude-sonnet-4-5-20250929"), content_type=SSE)
    post(server, "/v1/messages", {"model": "claude-sonnet-4-5", "stream": True, "max_tokens": 64,
                                  "messages": [{"role": "user", "content": "hi"}]},
         "anthropic-stream", "anthropic-stream", **{"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"})
    row = one_row(database_url, "anthropic-stream")
    assert (row["provider"], row["token_source"], row["prompt_tokens"], row["completion_tokens"]) == \
        ("anthropic", "provider", 31, 17)
    assert (row["model"], row["model_used"], row["cost_partial"]) == \
        ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929", False)
    assert row["cost_usd"] > 0


def test_the_model_that_served_the_request_is_recorded(server, mock, database_url):
    mock.add_reply("served", [completion("gpt-4o-mini-2024-07-18", {"prompt_tokens": 12, "completion_tokens": 9})])
    reply = sdk(server, "served", "served").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert reply.model == "gpt-4o-mini-2024-07-18"
    row = one_row(database_url, "served")
    assert (row["model"], row["model_used"]) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert float(row["cost_usd"]) == pytest.approx((12 * 0.15 + 9 * 0.6) / 1e6)


def big_stream_text(seed: int, chunks: int) -> tuple[list[bytes], str]:
    pieces = [" " + " ".join(WORDS[(seed + i * 7 + j) % len(WORDS)] for j in range(150)) for i in range(chunks)]
    return sse(*[chunk({"content": p}) for p in pieces]), "".join(pieces)


def test_ordinary_rows_are_written_while_big_streams_are_still_being_counted(server, mock, database_url):
    """Issue 12: a burst of big streams without usage must not hold other events back."""
    texts = []
    for i in range(20):
        events, text = big_stream_text(i, 1200)  # about 1.4 MB of stream, 1.1 M characters to count, each
        mock.add_reply(f"big-{i}", events, content_type=SSE)
        texts.append(text)

    def big(i: int) -> None:
        post(server, "/v1/chat/completions", {"model": "gpt-4o-mini", "stream": True}, "burst-big", f"big-{i}")

    threads = [threading.Thread(target=big, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    mock.add_reply("ordinary", [completion("gpt-4o-mini", {"prompt_tokens": 12, "completion_tokens": 9})])
    client = sdk(server, "burst-ordinary", "ordinary")
    for _ in range(20):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])

    wait_for_rows(database_url, "feature = 'burst-ordinary'", 20, timeout=60)
    [[counted]] = query(database_url, "SELECT count(*) FROM request_logs WHERE feature = 'burst-big'")
    assert counted < 20, "the ordinary rows waited behind the counting of the big streams"

    rows = wait_for_rows(database_url, "feature = 'burst-big'", 20, timeout=120)
    assert {(r["token_source"], r["usage_note"]) for r in rows} == {("measured", None)}
    counter = TokenCounter()
    assert sorted(r["completion_tokens"] for r in rows) == \
        sorted(counter.count(text, "gpt-4o-mini", "openai") for text in texts)
    assert all(r["cost_partial"] for r in rows)
    # Everything written: nothing left counted as buffered once the rows are in.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.env['LECTR_ADMIN_PORT']}/metrics", timeout=5) as r:
            if "lectr_events_buffered 0.0" in r.read().decode():
                break
        time.sleep(0.1)
    else:
        raise AssertionError("events still counted as buffered")
