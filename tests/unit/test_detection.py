"""Unit tests: which provider a model name goes to."""

import pytest

from lectr.providers.registry import ModelRegistry

KNOWN = {
    "openai": ["gpt-4o", "gpt-4o-mini-2024-07-18", "gpt-4.1-nano", "gpt-5", "gpt-5.4-mini", "o1", "o3-mini",
               "o4-mini", "o1-preview", "chatgpt-4o-latest", "text-embedding-3-small", "omni-moderation-latest",
               "tts-1", "whisper-1", "dall-e-3", "gpt-image-1", "ft:gpt-4o-mini:acme::abc123", "davinci-002",
               "computer-use-preview", "codex-mini-latest", "GPT-4o"],
    "anthropic": ["claude-3-5-sonnet-20241022", "claude-3-opus-latest", "claude-sonnet-4-5", "claude-haiku-4-5-20251001",
                  "claude-opus-4-1"],
    "groq": ["llama-3.1-70b-versatile", "llama-3.3-70b-versatile", "llama-3.1-8b-instant", "llama3-70b-8192",
             "mixtral-8x7b-32768", "gemma2-9b-it", "openai/gpt-oss-120b", "meta-llama/llama-4-scout-17b-16e-instruct",
             "qwen/qwen3-32b", "moonshotai/kimi-k2-instruct", "deepseek-r1-distill-llama-70b", "whisper-large-v3",
             "groq/compound", "some-model-versatile"],
    "gemini": ["gemini-1.5-pro", "gemini-2.5-flash", "gemini-3.1-flash-lite", "gemma-3-27b-it",
               "models/gemini-2.0-flash", "gemini-embedding-001", "imagen-4.0-generate-001"],
}


@pytest.mark.parametrize("provider,model", [(p, m) for p, ms in KNOWN.items() for m in ms])
def test_known_models(provider, model):
    assert ModelRegistry().detect(model) == provider


@pytest.mark.parametrize("model", ["mystery-model", "omni-thing", "ollama-7b", "my-deployment", "", "o", "o5x"])
def test_unknown_models_are_none(model):
    assert ModelRegistry().detect(model) is None


def test_answers_are_remembered_but_bounded():
    registry = ModelRegistry()
    for i in range(5000):
        registry.detect(f"random-{i}")
    assert len(registry._memo) <= 4096
    assert registry.detect("gpt-4o") == "openai"


def test_spec_examples():
    registry = ModelRegistry()
    assert [registry.detect(m) for m in ("gpt-4o", "claude-3-5-sonnet-20241022", "llama-3.1-70b-versatile",
                                         "gemini-1.5-pro")] == ["openai", "anthropic", "groq", "gemini"]
