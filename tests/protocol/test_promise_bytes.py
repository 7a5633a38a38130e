""""You get the provider's status, headers and bytes unchanged": compared as raw bytes.

Each case reads the mock's response twice from real sockets — once asked directly, once through a
running ``lectr serve`` — and compares every byte: status line with its reason phrase, header
names in their case and order, chunk framing, the (compressed) body. The mock sends no ``Date``,
so two identical requests get identical bytes.
"""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import PROVIDER_PREFIXES
from tests.rawhttp import exchange

PROVIDER_KEY = "sk-bytes-test-key"
AZURE_VERSION = "2024-10-21"
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-sonnet-20241022", "groq": "llama-3.3-70b-versatile",
          "gemini": "gemini-2.5-flash", "azure": "prod-gpt4o"}

VARIANTS = {
    "plain": {},
    "gzip": {"x-mock-gzip": "1"},
    "chunked": {"x-mock-chunked": "1"},
    "gzip-chunked": {"x-mock-gzip": "1", "x-mock-chunked": "1"},
    "mixed-case-head": {"x-mock-header-case": "1"},
    "odd-reason": {"x-mock-reason": "Fine By Me"},
    "400": {"x-mock-status": "400"},
    "401": {"x-mock-status": "401"},
    "404": {"x-mock-status": "404"},
    "418-own-reason": {"x-mock-status": "418", "x-mock-reason": "I'm A Teapot"},
    "429": {"x-mock-status": "429"},
    "500": {"x-mock-status": "500"},
    "503": {"x-mock-status": "503", "x-mock-header-case": "1"},
    "stream": {"stream": "1"},
    "stream-usage": {"stream": "usage"},
    "stream-mixed-case": {"stream": "1", "x-mock-header-case": "1", "x-mock-chunks": "6"},
}


@pytest.fixture(scope="module")
def server(module_lectr_factory, mock):
    env = module_lectr_factory.env()
    from tests.conftest import create_org, run_cli

    key = create_org(env, "bytes-co")
    run_cli(env, "org", "azure", "bytes-co", "--endpoint", mock.url("/azure-resource"), "--api-version", AZURE_VERSION)
    server = module_lectr_factory.start(env=env)
    server.extra["key"] = key
    return server


def _direct_target(provider: str) -> str:
    if provider == "azure":
        return f"/azure-resource/openai/deployments/{MODELS['azure']}/chat/completions?api-version={AZURE_VERSION}"
    return f"{PROVIDER_PREFIXES[provider]}/chat/completions"


def _body(provider: str, variant: dict) -> bytes:
    doc = {"model": MODELS[provider], "messages": [{"role": "user", "content": "hi"}]}
    if "stream" in variant:
        doc["stream"] = True
        if variant["stream"] == "usage":
            doc["stream_options"] = {"include_usage": True}
    return orjson.dumps(doc)


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
@pytest.mark.parametrize("provider", MODELS, ids=list(MODELS))
def test_response_bytes_are_the_providers_bytes(server, mock, provider, variant):
    scripted = VARIANTS[variant]
    common = [("Content-Type", "application/json"), ("Accept-Encoding", "gzip"),
              *((k, v) for k, v in scripted.items() if k.startswith("x-mock-"))]
    auth = ("api-key", PROVIDER_KEY) if provider == "azure" else \
        ("x-api-key", PROVIDER_KEY) if provider == "anthropic" else ("Authorization", f"Bearer {PROVIDER_KEY}")
    body = _body(provider, scripted)
    direct = exchange(mock.port, "POST", _direct_target(provider), [*common, auth], body)
    lectr_headers = [*common, ("Authorization", f"Bearer {PROVIDER_KEY}"), ("X-Lectr-Key", server.extra["key"])]
    if provider == "azure":
        lectr_headers.append(("X-Lectr-Provider", "azure"))
    seen_before = mock.received
    proxied = exchange(server.port, "POST", "/v1/chat/completions", lectr_headers, body)
    assert mock.received == seen_before + 1, "the proxied request must reach the mock exactly once"
    if provider == "azure":
        assert mock.last().target == _direct_target("azure")
    assert proxied.status_line == direct.status_line
    assert proxied.head == direct.head  # the provider's Transfer-Encoding line too, in its place
    assert proxied.raw[len(proxied.head):] == direct.raw[len(direct.head):]  # chunk framing too
    assert proxied.raw == direct.raw
    if "x-mock-gzip" in scripted:
        assert proxied.raw[len(proxied.head):].lstrip(b"0123456789abcdef\r\n")[:2] == b"\x1f\x8b"


def test_models_list_bytes_are_the_providers_bytes(server, mock):
    headers = [("Authorization", f"Bearer {PROVIDER_KEY}"), ("x-mock-header-case", "1"), ("x-mock-reason", "Here You Go")]
    direct = exchange(mock.port, "GET", f"{PROVIDER_PREFIXES['openai']}/models", headers)
    proxied = exchange(server.port, "GET", "/v1/models", [*headers, ("X-Lectr-Key", server.extra["key"])])
    assert direct.status_line == b"HTTP/1.1 200 Here You Go"
    assert proxied.raw == direct.raw
