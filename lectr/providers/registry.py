"""Which provider serves a model: the registry of model-name patterns.

Detection never blocks a request. An unknown model goes to OpenAI and the event says so
(``provider_unknown``); ``X-Lectr-Provider`` overrides detection, and Azure is reached only
through that header because its deployment names are chosen by each org.
"""

from __future__ import annotations

from lectr.providers.anthropic import ANTHROPIC
from lectr.providers.azure import AZURE
from lectr.providers.base import Provider
from lectr.providers.gemini import GEMINI, MODEL_NAMESPACE
from lectr.providers.groq import GROQ
from lectr.providers.mistral import MISTRAL
from lectr.providers.openai import OPENAI

# Every provider, one line each, in the order the API and the dashboard list them.
PROVIDERS: dict[str, Provider] = {p.name: p for p in (
    OPENAI,
    ANTHROPIC,
    GROQ,
    GEMINI,
    AZURE,
    MISTRAL,
)}
PROVIDER_NAMES = tuple(PROVIDERS)
# Providers with one global base URL (Azure's is per org, so it has none).
UPSTREAM_PROVIDERS = tuple(name for name, p in PROVIDERS.items() if p.base_url_help)
DEFAULT_UPSTREAMS = {name: PROVIDERS[name].default_base_url for name in UPSTREAM_PROVIDERS}
DEFAULT_PROVIDER = "openai"
# Where each provider's stream chunks may nest their usage (Groq's x_groq, the Responses API's
# response, Anthropic's message): any chunk is looked through all of them, the top level first.
USAGE_HOLDERS: tuple[str, ...] = tuple(p.usage_holder for p in PROVIDERS.values() if p.usage_holder)

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

_BY_RANK = sorted(PROVIDERS.values(), key=lambda p: p.detect_rank)
_DETECTION = tuple((p.name, p.model_prefixes, p.claims_model) for p in _BY_RANK if p.model_prefixes)
_BY_SUFFIX = tuple((p.name, p.model_suffixes) for p in _BY_RANK if p.model_suffixes)

_MEMO_LIMIT = 4096


def _detect_uncached(model: str) -> str | None:
    name = model.lower()
    if name.startswith(MODEL_NAMESPACE):
        name = name[len(MODEL_NAMESPACE):]
    for provider, prefixes, claims in _DETECTION:
        if name.startswith(prefixes) and (claims is None or claims(name)):
            return provider
    for provider, suffixes in _BY_SUFFIX:
        if name.endswith(suffixes):
            return provider
    return None


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
