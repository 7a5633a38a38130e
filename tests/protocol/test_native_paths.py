"""A provider's native paths go to that provider, and a key goes only to the provider it is for."""

from __future__ import annotations

import orjson
import pytest

from lectr.settings.config import ProxyLimits
from lectr.providers.registry import PROVIDERS, provider_for_path
from tests.conftest import PROVIDER_PREFIXES, ProxyHarness
from tests.httpcheck import exchange, request
from tests.rawupstream import RawUpstream

ANTHROPIC_KEY = "sk-ant-api03-secret-key-for-anthropic-only"
BATCH = orjson.dumps({"requests": [{"custom_id": "a", "params": {
    "model": "claude-3-5-haiku-20241022", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}}]})

NATIVE = [  # (method, path, body)
    ("POST", "/v1/messages", orjson.dumps({"model": "claude-3-5-haiku-20241022", "max_tokens": 5, "messages": []})),
    ("POST", "/v1/messages", orjson.dumps({"model": "gpt-4o", "max_tokens": 5, "messages": []})),  # body says OpenAI
    ("POST", "/v1/messages", b""),
    ("POST", "/v1/messages/batches", BATCH),
    ("GET", "/v1/messages/batches", b""),
    ("GET", "/v1/messages/batches/msgbatch_013Zva2CMHLNnXjNJJKqJ2EF", b""),
    ("GET", "/v1/messages/batches/msgbatch_013Zva2CMHLNnXjNJJKqJ2EF/results", b""),
    ("POST", "/v1/messages/batches/msgbatch_013Zva2CMHLNnXjNJJKqJ2EF/cancel", b""),
    ("DELETE", "/v1/messages/batches/msgbatch_013Zva2CMHLNnXjNJJKqJ2EF", b""),
    ("POST", "/v1/messages/count_tokens", orjson.dumps({"model": "claude-sonnet-4-5", "messages": []})),
    ("POST", "/v1/complete", orjson.dumps({"model": "claude-2.1", "prompt": "x", "max_tokens_to_sample": 5})),
    ("GET", "/v1/messages/batches?limit=20", b""),
]


@pytest.mark.parametrize("rest,expected", [
    (b"messages", "anthropic"), (b"messages/batches", "anthropic"), (b"messages/batches/x/results", "anthropic"),
    (b"messages/count_tokens", "anthropic"), (b"complete", "anthropic"), (b"messages/", "anthropic"),
    (b"messagesx", None), (b"completions", None), (b"chat/completions", None), (b"models", None),
    (b"responses", None), (b"threads/t/messages", None),
])
def test_native_paths_name_their_provider(rest, expected):
    assert provider_for_path(rest) == expected


def test_native_paths_are_declared_by_their_provider():
    assert PROVIDERS["anthropic"].native_paths
    assert not PROVIDERS["openai"].native_paths


@pytest.fixture(scope="module")
def proxied():
    upstream = RawUpstream().start()
    harness = ProxyHarness(upstream, ProxyLimits(max_body_bytes=1_000_000, max_header_bytes=8192,
                                                 header_timeout=5.0, idle_timeout=5.0))
    harness.start()
    yield harness, upstream
    harness.stop()
    upstream.stop()


def send(harness, upstream, method: str, path: str, body: bytes = b"", **headers: str):
    harness.events()
    before = len(upstream.requests)
    all_headers = {"X-Lectr-Key": harness.key, **headers}
    if body:
        all_headers["Content-Type"] = "application/json"
    [reply] = exchange(harness.port, request(method, path, all_headers, body), [method])
    assert reply.status == 200
    [seen] = upstream.requests[before:]
    [event] = harness.events()
    return seen, event


@pytest.mark.parametrize("method,path,body", NATIVE)
def test_anthropic_native_requests_reach_anthropic_with_their_key(proxied, method, path, body):
    harness, upstream = proxied
    seen, event = send(harness, upstream, method, path, body,
                       **{"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"})
    assert seen.target == (PROVIDER_PREFIXES["anthropic"] + path[3:]).encode()
    assert [v for k, v in seen.headers if k.lower() == b"x-api-key"] == [ANTHROPIC_KEY.encode()]
    assert (event.provider, event.provider_unknown) == ("anthropic", False)


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/v1/chat/completions", orjson.dumps({"model": "gpt-4o-mini", "messages": []})),
    ("POST", "/v1/chat/completions", orjson.dumps({"model": "llama-3.3-70b-versatile", "messages": []})),
    ("POST", "/v1/chat/completions", orjson.dumps({"model": "mystery", "messages": []})),
    ("GET", "/v1/models", b""),
    ("POST", "/v1/batches", orjson.dumps({"input_file_id": "file-1", "endpoint": "/v1/chat/completions"})),
])
@pytest.mark.parametrize("header", ["x-api-key", "X-Api-Key", "X-API-KEY", "api-key", "x-goog-api-key"])
def test_another_providers_key_header_never_reaches_openai_or_groq(proxied, method, path, body, header):
    harness, upstream = proxied
    seen, event = send(harness, upstream, method, path, body,
                       **{header: ANTHROPIC_KEY, "Authorization": "Bearer sk-openai"})
    assert event.provider in ("openai", "groq")
    assert ANTHROPIC_KEY.encode() not in seen.raw
    assert seen.header(b"authorization") == b"Bearer sk-openai"


def test_a_providers_own_key_header_is_the_one_it_gets(proxied):
    harness, upstream = proxied
    body = orjson.dumps({"model": "claude-3-5-haiku-20241022", "messages": []})
    seen, _ = send(harness, upstream, "POST", "/v1/chat/completions", body,
                   **{"x-api-key": ANTHROPIC_KEY, "Authorization": "Bearer sk-other"})
    assert [v for k, v in seen.headers if k.lower() == b"x-api-key"] == [ANTHROPIC_KEY.encode()]
    assert b"sk-other" not in seen.raw
    seen, _ = send(harness, upstream, "POST", "/v1/chat/completions",
                   orjson.dumps({"model": "gemini-2.5-flash", "messages": []}),
                   **{"x-goog-api-key": "AIza-gemini", "x-api-key": ANTHROPIC_KEY})
    assert seen.header(b"x-goog-api-key") == b"AIza-gemini" and ANTHROPIC_KEY.encode() not in seen.raw


@pytest.mark.parametrize("method,path,body,unknown", [
    ("GET", "/v1/models", b"", True),
    ("POST", "/v1/chat/completions", orjson.dumps({"messages": []}), True),
    ("POST", "/v1/chat/completions", b"not json", True),
    ("POST", "/v1/chat/completions", orjson.dumps({"model": "mystery", "messages": []}), True),
    ("POST", "/v1/chat/completions", orjson.dumps({"model": "gpt-4o", "messages": []}), False),
])
def test_the_default_provider_by_default_is_marked_unknown(proxied, method, path, body, unknown):
    harness, upstream = proxied
    seen, event = send(harness, upstream, method, path, body, Authorization="Bearer sk-x")
    assert seen.target.startswith(PROVIDER_PREFIXES["openai"].encode())
    assert (event.provider, event.provider_unknown) == ("openai", unknown)


def test_an_explicit_override_still_wins_over_a_native_path(proxied):
    harness, upstream = proxied
    seen, event = send(harness, upstream, "POST", "/v1/messages", b"{}",
                       **{"X-Lectr-Provider": "openai", "x-api-key": ANTHROPIC_KEY})
    assert event.provider == "openai" and ANTHROPIC_KEY.encode() not in seen.raw
