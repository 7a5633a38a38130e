"""Issue 11 tried again as a demanding new user: more response shapes of each kind, end to end.

``lectr serve`` → mock provider (scripted replies) → ``request_logs`` on Postgres; the openai SDK
or a plain HTTP client as the application.
"""

from __future__ import annotations

import http.client

import orjson
import pytest

from lectr.recording.tokens import TokenCounter
from lectr.recording.usage import response_values
from tests.conftest import create_org, lectr_env, sdk_client, start_lectr, stop_lectr
from tests.e2e.test_recording import wait_for_rows

SSE = b"text/event-stream"
CAPTURE = 65536  # a small capture limit, so "longer than the capture" stays quick to send


def sse(*docs: dict, sep: bytes = b"\n\n") -> list[bytes]:
    return [b"data: " + orjson.dumps(d) + sep for d in docs] + [b"data: [DONE]" + sep]


@pytest.fixture(scope="module")
def server(database_url, mock, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("newuser")
    env = lectr_env(database_url, mock, tmp, LECTR_FLUSH_INTERVAL="0.2", LECTR_CAPTURE_MAX_BYTES=str(CAPTURE))
    key = create_org(env, "newuser")
    lectr = start_lectr(env, tmp / "serve.log")
    lectr.extra["key"] = key
    yield lectr
    stop_lectr(lectr)


def post(server, path: str, body: dict, feature: str, reply: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("POST", path, orjson.dumps(body), {
            "Content-Type": "application/json", "X-Lectr-Key": server.extra["key"], "X-Lectr-Feature": feature,
            "x-mock-reply": reply, "Accept-Encoding": "gzip, deflate, br, zstd"})
        response = conn.getresponse()
        data = response.read()
        assert response.status == 200, data[:200]
        return data
    finally:
        conn.close()


def one_row(database_url, feature: str):
    [row] = wait_for_rows(database_url, f"feature = '{feature}'", 1)
    return row


def test_a_legacy_completions_stream_without_usage_is_measured(server, mock, database_url):
    # /v1/completions streams choices[].text, not choices[].delta.
    texts = ["Once upon", " a time", " there was", " a gateway."]
    docs = [{"id": "cmpl-1", "object": "text_completion", "created": 1767225600, "model": "gpt-3.5-turbo-instruct",
             "choices": [{"text": t, "index": 0, "logprobs": None, "finish_reason": None}]} for t in texts]
    mock.add_reply("legacy-stream", sse(*docs), content_type=SSE)
    client = sdk_client(server.base_url, **{"X-Lectr-Key": server.extra["key"], "X-Lectr-Feature": "legacy-stream",
                                            "x-mock-reply": "legacy-stream"})
    got = "".join(part.choices[0].text for part in client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Tell a story", stream=True))
    assert got == "".join(texts)
    row = one_row(database_url, "legacy-stream")
    expected = TokenCounter().count("".join(texts), "gpt-3.5-turbo-instruct", "openai")
    assert (row["token_source"], row["completion_tokens"]) == ("measured", expected)
    assert row["cost_partial"] is True and row["cost_usd"] > 0


@pytest.mark.parametrize("shape", ["json", "sse"])
def test_a_body_with_a_byte_order_mark_keeps_its_usage(server, mock, database_url, shape):
    usage = {"prompt_tokens": 41, "completion_tokens": 7, "total_tokens": 48}
    if shape == "json":
        doc = {"id": "c", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18", "usage": usage,
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}]}
        mock.add_reply("bom-json", [b"\xef\xbb\xbf" + orjson.dumps(doc)])
    else:
        doc = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18", "choices": [],
               "usage": usage}
        mock.add_reply("bom-sse", [b"\xef\xbb\xbf" + b"".join(sse(doc))], content_type=SSE)
    post(server, "/v1/chat/completions", {"model": "gpt-4o-mini", "stream": shape == "sse"}, f"bom-{shape}",
         f"bom-{shape}")
    row = one_row(database_url, f"bom-{shape}")
    assert (row["token_source"], row["prompt_tokens"], row["completion_tokens"]) == ("provider", 41, 7)


def test_a_long_json_body_with_its_usage_before_the_content_is_priced(server, mock, database_url):
    # Some servers write usage first; the body outgrows the capture, so only its head has it.
    doc = {"id": "c", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
           "usage": {"prompt_tokens": 70, "completion_tokens": 9000, "total_tokens": 9070},
           "choices": [{"index": 0, "message": {"role": "assistant", "content": "word " * 40_000},
                        "finish_reason": "stop"}]}
    body = orjson.dumps(doc)
    assert len(body) > 2 * CAPTURE
    mock.add_reply("usage-first", [body[i:i + 16384] for i in range(0, len(body), 16384)])
    post(server, "/v1/chat/completions", {"model": "gpt-4o-mini"}, "usage-first", "usage-first")
    row = one_row(database_url, "usage-first")
    assert (row["token_source"], row["prompt_tokens"], row["completion_tokens"]) == ("provider", 70, 9000)
    assert float(row["cost_usd"]) == pytest.approx((70 * 0.15 + 9000 * 0.6) / 1e6)
    assert row["usage_note"] is None


@pytest.mark.parametrize("content_type", [b"application/json", b"text/plain", b"application/octet-stream"])
def test_a_stream_sent_under_another_content_type_is_read_as_a_stream(server, mock, database_url, content_type):
    # Self-hosted OpenAI-compatible servers send SSE with a generic or wrong content type.
    feature = "mislabelled-" + content_type.decode().replace("/", "-")
    docs = [{"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18",
             "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]},
            {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18", "choices": [],
             "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}]
    mock.add_reply(feature, [b": keep-alive\r\n\r\n", *sse(*docs, sep=b"\r\n\r\n")], content_type=content_type)
    post(server, "/v1/chat/completions", {"model": "gpt-4o-mini", "stream": False}, feature, feature)
    row = one_row(database_url, feature)
    assert (row["token_source"], row["prompt_tokens"], row["completion_tokens"]) == ("provider", 12, 3)


def test_anthropic_cache_reads_through_the_openai_compatible_route_are_priced_once(server, mock, database_url):
    # Anthropic's OpenAI-compatible endpoint counts cache reads inside prompt_tokens (as OpenAI
    # does); the native Messages API reports them beside input_tokens. Both must cost the same.
    compat = {"id": "c", "object": "chat.completion", "model": "claude-sonnet-4-20250514",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 131, "completion_tokens": 17, "total_tokens": 148,
                        "prompt_tokens_details": {"cached_tokens": 100}}}
    native = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
              "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn",
              "usage": {"input_tokens": 31, "cache_read_input_tokens": 100, "output_tokens": 17}}
    mock.add_reply("anthropic-compat", [orjson.dumps(compat)])
    mock.add_reply("anthropic-native", [orjson.dumps(native)])
    post(server, "/v1/chat/completions", {"model": "claude-sonnet-4-0"}, "anthropic-compat", "anthropic-compat")
    post(server, "/v1/messages", {"model": "claude-sonnet-4-0", "max_tokens": 20}, "anthropic-native",
         "anthropic-native")
    compat_row, native_row = one_row(database_url, "anthropic-compat"), one_row(database_url, "anthropic-native")
    # claude-sonnet-4: $3 input, $0.30 cache read, $15 output per million tokens.
    expected = (31 * 3 + 100 * 0.3 + 17 * 15) / 1e6
    assert float(native_row["cost_usd"]) == pytest.approx(expected)
    assert float(compat_row["cost_usd"]) == pytest.approx(expected)
    assert compat_row["cached_tokens"] == 100 and compat_row["model_used"] == "claude-sonnet-4-20250514"


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n"])
def test_a_usage_chunk_cut_by_the_capture_boundary_is_still_read(sep):
    # The head ends where the capture limit fell, anywhere; the tail carries on from there.
    docs = [{"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18",
             "choices": [{"index": 0, "delta": {"content": "word "}, "finish_reason": None}]} for _ in range(500)]
    docs.append({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18", "choices": [],
                 "usage": {"prompt_tokens": 50, "completion_tokens": 500, "total_tokens": 550}})
    raw = b"".join(sse(*docs, sep=sep))
    start = raw.rindex(b"data: ", 0, raw.rindex(b'"usage"'))
    for cut in range(start - 3, len(raw) - 10, 7):
        usage = response_values("openai", "gpt-4o-mini", True, 200, "text/event-stream", None, [raw[:cut]],
                                [raw[cut:]], TokenCounter())[0]
        assert usage[:2] == (50, 500) and usage[4] == "provider", cut


def test_a_usage_object_cut_by_the_capture_boundary_of_a_json_body_is_still_read():
    body = orjson.dumps({"id": "c", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
                         "choices": [{"index": 0, "message": {"content": "word " * 20_000}}],
                         "usage": {"prompt_tokens": 5, "completion_tokens": 20_000, "total_tokens": 20_005}})
    start = body.rindex(b'"usage"')
    for cut in range(start - 2, len(body) - 1, 5):
        usage = response_values("openai", "gpt-4o-mini", False, 200, "application/json", None, [body[:cut]],
                                [body[cut:]], TokenCounter())[0]
        assert usage[:2] == (5, 20_000), cut


def _cell(html: str, testid: str) -> str:
    start = html.index(f'data-testid="{testid}"')
    return html[start:html.index("</article>", start)] if "stat-" in testid else html[start:]


def test_a_period_whose_requests_were_all_unpriced_shows_no_zero_cost_on_the_overview():
    from lectr.dashboard.pages import render_overview
    from tests.unit.test_pages import overview_ctx, sample_summary, totals

    summary = sample_summary(
        totals=totals(cost_usd=0.0, unpriced_requests=7),
        previous=totals(cost_usd=0.0, unpriced_requests=4),
        providers=[{"provider": "openai", "requests": 7, "errors": 0, "error_rate": 0.0, "cost_usd": 0.0,
                    "previous_cost_usd": 0.0, "latency_p95_ms": 900.0, "unpriced_requests": 7,
                    "previous_unpriced_requests": 4}])
    html = render_overview(overview_ctx(summary=summary))
    card = _cell(html, "stat-cost")
    assert "$0.00" not in card and "unpriced" in card and "nothing in previous" not in card
    table = html[html.index('data-testid="cost-table"'):]
    table = table[:table.index("</table>")]
    assert "$0.00" not in table and "new" not in table
    assert "7 unpriced" in table and "4 unpriced" in table


def test_a_body_coded_twice_in_two_content_encoding_lines_keeps_its_usage(server, mock, database_url):
    # Two Content-Encoding lines are one list (RFC 9110 §5.3): gzip applied first, then br.
    import gzip

    import brotli

    doc = {"id": "c", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 33, "completion_tokens": 5, "total_tokens": 38}}
    body = brotli.compress(gzip.compress(orjson.dumps(doc)))
    mock.add_reply("two-codings", [body], headers=(b"Content-Encoding: gzip", b"Content-Encoding: br"))
    assert post(server, "/v1/chat/completions", {"model": "gpt-4o-mini"}, "two-codings", "two-codings") == body
    row = one_row(database_url, "two-codings")
    assert (row["token_source"], row["prompt_tokens"], row["completion_tokens"]) == ("provider", 33, 5)
    assert row["usage_note"] is None
