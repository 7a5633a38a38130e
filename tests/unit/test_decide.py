"""Unit tests: Auth · Detect · Route as one pure function over data, without sockets."""

from __future__ import annotations

import pytest

from lectr.snapshot.directory import Org, Snapshot
from lectr.snapshot.keys import hash_key
from lectr.providers.base import AzureTarget, parse_origin
from lectr.providers.registry import DEFAULT_UPSTREAMS, ModelRegistry
from lectr.proxy import responses as R
from lectr.proxy.decide import Decision, RequestFacts, Routes, decide
from lectr.proxy.headers import ClientHeaders

KEY = b"lc_key_decide_decide_decide_decide"
ACME = Org(1, "acme")
AZURE = AzureTarget("https://acme.openai.azure.com", "2024-10-21")
SNAPSHOT = Snapshot({hash_key(KEY): ACME}, azure_by_org={ACME.id: AZURE})
ROUTES = Routes({name: parse_origin(url) for name, url in DEFAULT_UPSTREAMS.items()}, ModelRegistry().detect)


def facts(model: str | None = "gpt-4o-mini", *, path: bytes = b"/v1/chat/completions", query: bytes = b"",
          key: bytes | None = KEY, provider: bytes | None = None, authorization: bytes | None = b"Bearer sk-1",
          extra: tuple = (), method: bytes = b"POST", upgrade: bool = False) -> RequestFacts:
    raw = [(b"Content-Type", b"application/json"), *extra]
    if key is not None:
        raw.append((b"X-Lectr-Key", key))
    if provider is not None:
        raw.append((b"X-Lectr-Provider", provider))
    if authorization is not None:
        raw.append((b"Authorization", authorization))
    body = b'{"model": "%s", "messages": []}' % model.encode() if model is not None else b""
    return RequestFacts(method, path, query, ClientHeaders(raw), body, upgrade)


def forwarded_names(decision: Decision) -> list[bytes]:
    return [name.lower() for name in decision.forward[1::4]]


@pytest.mark.parametrize("model,provider,host,target,auth", [
    ("gpt-4o-mini", "openai", b"api.openai.com", b"/v1/chat/completions", (b"Authorization", b"Bearer sk-1")),
    ("claude-sonnet-4-5", "anthropic", b"api.anthropic.com", b"/v1/chat/completions", (b"x-api-key", b"sk-1")),
    ("llama-3.3-70b-versatile", "groq", b"api.groq.com", b"/openai/v1/chat/completions",
     (b"Authorization", b"Bearer sk-1")),
    ("gemini-2.5-flash", "gemini", b"generativelanguage.googleapis.com", b"/v1beta/openai/chat/completions",
     (b"Authorization", b"Bearer sk-1")),
    ("mistral-large-latest", "mistral", b"api.mistral.ai", b"/v1/chat/completions", (b"Authorization", b"Bearer sk-1")),
])
def test_every_detected_provider_is_routed_with_its_auth(model, provider, host, target, auth):
    decision = decide(facts(model), SNAPSHOT, ROUTES)
    assert decision.refusal is None and decision.org is ACME
    assert (decision.provider, decision.provider_unknown, decision.model) == (provider, False, model)
    assert (decision.origin.host_header, decision.target, decision.auth) == (host, target, auth)
    assert (decision.rule, decision.fallbacks, decision.limit) == (None, (), None)


def test_the_query_goes_with_the_target():
    decision = decide(facts(path=b"/v1/models", query=b"limit=2", model=None), SNAPSHOT, ROUTES)
    assert decision.target == b"/v1/models?limit=2"


def test_an_unknown_model_goes_to_openai_marked_unknown():
    decision = decide(facts("mystery-model"), SNAPSHOT, ROUTES)
    assert (decision.refusal, decision.provider, decision.provider_unknown) == (None, "openai", True)
    no_model = decide(facts(None), SNAPSHOT, ROUTES)
    assert (no_model.provider, no_model.provider_unknown) == ("openai", True)


def test_a_valid_override_wins_over_detection():
    decision = decide(facts("gpt-4o", provider=b" Groq "), SNAPSHOT, ROUTES)
    assert (decision.provider, decision.provider_unknown, decision.invalid_provider) == ("groq", False, None)
    assert decide(facts("gpt-4o", provider=b"mistral"), SNAPSHOT, ROUTES).provider == "mistral"


def test_an_invalid_override_goes_to_openai_and_is_reported_for_the_log():
    decision = decide(facts("claude-sonnet-4-5", provider=b"Nope"), SNAPSHOT, ROUTES)
    assert (decision.refusal, decision.provider, decision.invalid_provider) == (None, "openai", "nope")
    assert decision.provider_unknown is False


@pytest.mark.parametrize("path", [b"/v1/messages", b"/v1/messages/batches/b1", b"/v1/messages/count_tokens",
                                  b"/v1/complete"])
def test_native_paths_go_to_their_provider_whatever_the_body_says(path):
    decision = decide(facts("gpt-4o", path=path), SNAPSHOT, ROUTES)
    assert (decision.provider, decision.target) == ("anthropic", path)


def test_azure_with_its_config_goes_to_the_deployment_with_its_key_header():
    decision = decide(facts("prod-gpt4o", provider=b"azure", query=b"api-version=1"), SNAPSHOT, ROUTES)
    assert decision.refusal is None and decision.provider == "azure"
    assert decision.origin.host_header == b"acme.openai.azure.com"
    assert decision.target == b"/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21"
    assert decision.auth == (b"api-key", b"sk-1")


def test_azure_without_config_is_refused_for_the_org():
    snapshot = SNAPSHOT.with_parts(azure_by_org={})
    decision = decide(facts("prod-gpt4o", provider=b"azure"), snapshot, ROUTES)
    assert (decision.refusal, decision.org, decision.provider, decision.model) == (
        R.AZURE_NOT_CONFIGURED, ACME, "azure", "prod-gpt4o")
    assert decision.origin is None


def test_a_model_that_cannot_be_a_deployment_name_is_refused():
    decision = decide(facts("../admin", provider=b"azure"), SNAPSHOT, ROUTES)
    assert decision.refusal == R.BAD_PATH and decision.org is ACME and decision.origin is None


@pytest.mark.parametrize("key,refusal", [(None, R.MISSING_KEY), (b"", R.MISSING_KEY), (b"lc_key_wrong", R.INVALID_KEY)])
def test_a_missing_or_unknown_key_is_refused_and_belongs_to_nobody(key, refusal):
    decision = decide(facts(key=key), SNAPSHOT, ROUTES)
    assert (decision.refusal, decision.org, decision.origin) == (refusal, None, None)


@pytest.mark.parametrize("path", [b"/v1/../admin", b"/v1/%2e%2e/x", b"/v1/a%2fb"])
def test_a_path_that_leaves_v1_is_refused_for_the_org(path):
    decision = decide(facts(path=path), SNAPSHOT, ROUTES)
    assert decision.refusal == R.BAD_PATH and decision.org is ACME and str(decision.detail)


def test_another_providers_key_header_never_leaves_and_the_providers_own_replaces_authorization():
    other = decide(facts("gpt-4o", extra=((b"x-api-key", b"anthropic-secret"),)), SNAPSHOT, ROUTES)
    assert b"x-api-key" not in forwarded_names(other) and other.auth == (b"Authorization", b"Bearer sk-1")
    own = decide(facts("claude-sonnet-4-5", extra=((b"x-api-key", b"anthropic-secret"),)), SNAPSHOT, ROUTES)
    assert forwarded_names(own).count(b"x-api-key") == 1 and own.auth is None


def test_a_websocket_upgrade_reads_its_model_from_the_query_and_forwards_the_upgrade():
    decision = decide(facts(None, method=b"GET", path=b"/v1/realtime", query=b"model=gpt-4o-realtime-preview",
                            upgrade=True), SNAPSHOT, ROUTES)
    assert (decision.provider, decision.model, decision.stream) == ("openai", "gpt-4o-realtime-preview", False)
    assert forwarded_names(decision)[-2:] == [b"connection", b"upgrade"]


def test_stream_is_read_from_the_body():
    f = facts()
    f = f._replace(body=b'{"model": "gpt-4o", "stream": true}')
    assert decide(f, SNAPSHOT, ROUTES).stream is True


def test_a_new_snapshot_answers_for_the_keys_it_holds_only():
    rotated = SNAPSHOT.with_parts(orgs_by_key_hash={hash_key(b"lc_key_new"): ACME})
    assert decide(facts(), SNAPSHOT, ROUTES).org is ACME
    assert decide(facts(), rotated, ROUTES).refusal == R.INVALID_KEY
    assert decide(facts(key=b"lc_key_new"), rotated, ROUTES).org is ACME
