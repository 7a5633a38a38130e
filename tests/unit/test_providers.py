"""Unit tests: each provider module owns its quirks, and a new OpenAI-compatible one is one module."""

from __future__ import annotations

import pytest

from lectr.settings.config import VARIABLES, Settings
from lectr.recording.tokens import CL100K_BASE, encoding_name
from lectr.recording.usage import usage_from_mapping
from lectr.pricing.seed import genai_price_rows
from lectr.providers.registry import DEFAULT_UPSTREAMS, PROVIDER_NAMES, PROVIDERS, ModelRegistry


@pytest.mark.parametrize("model", ["mistral-large-latest", "mistral-small-2503", "codestral-latest",
                                   "magistral-medium-2506", "ministral-8b-latest", "pixtral-12b-2409",
                                   "open-mistral-nemo", "devstral-small-2507", "Mistral-Medium-Latest"])
def test_mistral_models_are_detected(model):
    assert ModelRegistry().detect(model) == "mistral"


def test_mistral_is_a_provider_with_its_base_url_variable():
    assert "mistral" in PROVIDER_NAMES
    assert DEFAULT_UPSTREAMS["mistral"] == "https://api.mistral.ai/v1"
    assert VARIABLES["LECTR_UPSTREAM_MISTRAL"][0] == "https://api.mistral.ai/v1"
    assert PROVIDERS["mistral"].auth(b"Bearer k") == (b"Authorization", b"Bearer k")
    assert encoding_name("mistral-large-latest", "mistral") == CL100K_BASE


def test_mistral_base_url_comes_from_the_environment():
    settings = Settings.from_env({"LECTR_UPSTREAM_MISTRAL": "http://127.0.0.1:9/mistral/v1"})
    assert settings.upstreams.base_urls["mistral"] == "http://127.0.0.1:9/mistral/v1"


def test_mistral_is_priced_from_the_seed():
    rows = [r for r in genai_price_rows() if r.provider == "mistral"]
    assert any(r.model.startswith("mistral-") for r in rows)


def test_usage_quirks_belong_to_their_provider():
    # Gemini's thinking tokens are billed as output; no other provider's counts are changed.
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 40}
    assert usage_from_mapping(usage, "gemini").completion_tokens == 30
    assert usage_from_mapping(usage, "mistral").completion_tokens == 5
    assert usage_from_mapping(usage, "openai").completion_tokens == 5


def test_every_provider_module_says_where_its_prices_are():
    assert {p.genai_prices_id for p in PROVIDERS.values()} >= {"openai", "google", "mistral"}
    assert PROVIDERS["azure"].price_fallback == "openai"
