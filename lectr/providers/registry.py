"""Which provider serves a model: the registry of model-name patterns.

Detection never blocks a request. An unknown model goes to OpenAI and the event says so
(``provider_unknown``); ``X-Lectr-Provider`` overrides detection, and Azure is reached only
through that header because its deployment names are chosen by each org.
"""

from __future__ import annotations

from lectr.providers.anthropic import ANTHROPIC
from lectr.providers.azure import AZURE
from lectr.providers.base import Provider
from lectr.providers.gemini import GEMINI
from lectr.providers.groq import GROQ
from lectr.providers.openai import OPENAI

PROVIDERS: dict[str, Provider] = {p.name: p for p in (OPENAI, ANTHROPIC, GROQ, GEMINI, AZURE)}
PROVIDER_NAMES = tuple(PROVIDERS)
# Providers with one global base URL (Azure's is per org, so it has none).
UPSTREAM_PROVIDERS = ("openai", "anthropic", "groq", "gemini")
DEFAULT_UPSTREAMS = {name: PROVIDERS[name].default_base_url for name in UPSTREAM_PROVIDERS}
DEFAULT_PROVIDER = "openai"

# Native paths, longest first so a more specific prefix of one provider wins.
_NATIVE_PATHS: tuple[tuple[bytes, str], ...] = tuple(sorted(
    ((path, p.name) for p in PROVIDERS.values() for path in p.native_paths), key=lambda e: -len(e[0])))
_NATIVE_STARTS = tuple(path for path, _ in _NATIVE_PATHS)
# Every provider-specific credential header; each contains "api-key", which a cheap test relies on.
CREDENTIAL_HEADERS = frozenset().union(*(p.credential_headers for p in PROVIDERS.values()))
assert all(b"api-key" in name for name in CREDENTIAL_HEADERS)


def provider_for_path(rest: bytes) -> str | None:
    """The provider whose native API ``/v1/<rest>`` belongs to (``messages/batches/b1`` → anthropic)."""
    if not rest.startswith(_NATIVE_STARTS):
        return None
    for path, name in _NATIVE_PATHS:
        if rest.startswith(path) and (len(rest) == len(path) or rest[len(path)] == 0x2F):  # "/"
            return name
    return None


def may_hold_credentials(forward: list[bytes]) -> bool:
    """Whether the forwarded header parts (CRLF, name, ": ", value, …) may name a credential header."""
    return b"api-key" in b"\n".join(forward[1::4]).lower()


def credentials_for(provider: Provider, forward: list[bytes]) -> tuple[list[bytes], bool]:
    """``forward`` without the credential headers of other providers, and whether it holds one of
    ``provider``'s own (then that key, as the client sent it, is the one the provider gets)."""
    kept: list[bytes] = []
    own = False
    for i in range(0, len(forward), 4):
        name = forward[i + 1].lower()
        if name in CREDENTIAL_HEADERS:
            if name not in provider.credential_headers:
                continue
            own = True
        kept += forward[i:i + 4]
    return kept, own

# Checked in this order, so the more specific families come first: Groq's open-weight ids
# (``openai/gpt-oss-120b``, ``whisper-large-v3``, ``gemma2-9b-it``) would otherwise be taken
# for OpenAI or Gemini models.
_PREFIXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("groq", (
        "openai/gpt-oss", "meta-llama/", "qwen/", "moonshotai/", "groq/", "deepseek-r1-distill",
        "llama-", "llama3-", "mixtral-", "gemma2-", "whisper-large", "distil-whisper",
        "playai-", "allam-", "compound-",
    )),
    ("anthropic", ("claude-",)),
    ("gemini", (
        "gemini-", "gemma-", "learnlm-", "imagen-", "veo-", "lyria-", "text-embedding-004",
    )),
    ("openai", (
        "gpt-", "chatgpt-", "o1", "o3", "o4-", "text-embedding-", "text-moderation-",
        "omni-moderation-", "tts-", "whisper-", "dall-e-", "sora-", "computer-use-",
        "codex-", "davinci-", "babbage-", "ft:", "chat-latest", "daybreak-",
    )),
)
# Suffixes only Groq uses on its legacy ids (``llama-3.3-70b-versatile``, ``llama3-70b-8192``).
_GROQ_SUFFIXES = ("-versatile", "-instant", "-8192", "-32768")

_MEMO_LIMIT = 4096


def _detect_uncached(model: str) -> str | None:
    name = model.lower()
    if name.startswith("models/"):  # Gemini's own spelling of a model id
        name = name[7:]
    for provider, prefixes in _PREFIXES:
        if name.startswith(prefixes):
            if provider == "openai" and name[:1] == "o" and not _is_o_series(name):
                continue
            return provider
    if name.endswith(_GROQ_SUFFIXES):
        return "groq"
    return None


def _is_o_series(name: str) -> bool:
    # "o1", "o3-mini", "o4-mini-2025-04-16" — but not "omni-…" or "ollama-…".
    if not name.startswith(("o1", "o3", "o4")):
        return True
    return len(name) == 2 or name[2] == "-"


class ModelRegistry:
    """Maps a model name to a provider name; remembers answers, since apps use few models."""

    __slots__ = ("_memo",)

    def __init__(self) -> None:
        self._memo: dict[str, str | None] = {}

    def detect(self, model: str) -> str | None:
        """The provider serving ``model``, or None when no pattern knows it."""
        try:
            return self._memo[model]
        except KeyError:
            pass
        provider = _detect_uncached(model)
        if len(self._memo) < _MEMO_LIMIT:  # bounded: model names come from clients
            self._memo[model] = provider
        return provider
