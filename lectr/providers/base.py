"""The small interface every provider module fills in, and how an upstream is addressed."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable
from urllib.parse import quote, urlsplit


@dataclass(frozen=True, slots=True)
class AzureTarget:
    """An org's Azure OpenAI resource: where its deployments live and which API version to ask for."""

    endpoint: str
    api_version: str


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an upstream lives: scheme, host and port, the path it is mounted at, its Host header."""

    scheme: str
    host: str
    port: int
    path: bytes  # without a trailing slash: b"/v1", b"/openai/v1", b""
    host_header: bytes
    key: str = field(init=False, compare=False, repr=False)  # which connection pool serves it

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.scheme}://{self.host}:{self.port}")

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


@lru_cache(maxsize=1024)
def parse_origin(url: str) -> Origin:
    """``https://api.openai.com/v1`` → Origin(https, api.openai.com, 443, b"/v1", b"api.openai.com")."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    default_port = 443 if parts.scheme == "https" else 80
    port = parts.port or default_port
    host_header = parts.hostname if port == default_port else f"{parts.hostname}:{port}"
    if ":" in parts.hostname:  # IPv6 literal
        host_header = f"[{parts.hostname}]" if port == default_port else f"[{parts.hostname}]:{port}"
    return Origin(parts.scheme, parts.hostname, port, parts.path.rstrip("/").encode(), host_header.encode("idna"))


def bearer_token(authorization: bytes) -> bytes:
    """The credential inside ``Authorization: Bearer K``; any other scheme is passed on whole."""
    if authorization[:7].lower() == b"bearer ":
        return authorization[7:].strip()
    return authorization


def quote_path_segment(value: str) -> str:
    """Percent-encode ``value`` for use as one path segment (a model or deployment name)."""
    return quote(value, safe="")


Route = tuple[Origin, bytes]

# tiktoken's encodings, by name: OpenAI's current models use o200k_base, its older ones
# cl100k_base, which is also the stated approximation for every other provider's tokeniser.
O200K_BASE = "o200k_base"
CL100K_BASE = "cl100k_base"


def approximate_encoding(model: str | None) -> str:
    """cl100k_base: a provider's own tokeniser is not public, so its counts are approximated."""
    return CL100K_BASE


class PathRefused(ValueError):
    """A request path (or a name that becomes a path segment) Lectr will not forward: 400.

    ``str(exc)`` says why, for the error message.
    """


def deployment_segment(name: str) -> bytes:
    """``name`` (an Azure deployment: the request's model) as one path segment.

    Raises ``PathRefused`` for a name that might not stay one segment under the deployments
    path once a server decodes it (once or twice): ``.``, ``..``, or one holding ``/``, ``\\``
    or ``%``. Azure's deployment names are letters, digits, ``-``, ``_`` and ``.``.
    """
    if name in (".", "..") or "/" in name or "\\" in name or "%" in name:
        raise PathRefused(f"{name[:100]!r} is not a deployment name")
    return quote_path_segment(name).encode()


@dataclass(frozen=True, slots=True)
class Provider:
    """How Lectr reaches one provider, and how its answers are read: everything about it.

    ``auth_header`` is the header the provider wants the key in; ``None`` means the client's
    ``Authorization`` header goes through as it is. ``build_route`` replaces the plain
    ``<base>/<rest>?<query>`` for providers that address requests differently (Azure).

    Detection: a model whose lower-cased name starts with one of ``model_prefixes`` (or ends
    with one of ``model_suffixes``) is this provider's, unless ``claims_model`` says no;
    providers are tried by ``detect_rank``.
    Usage (cold path): ``usage_holder`` names the object a stream chunk nests its usage in
    when the chunk has none at the top; ``billed_completion(prompt, completion, total)`` turns
    reported counts into billed output tokens. Prices: ``price_fallback`` is the provider whose
    rows price a model this one has none for; ``genai_prices_id`` is its id in genai-prices.
    ``encoding(model)`` names the tiktoken encoding that counts (or approximates) its tokens.
    """

    name: str
    default_base_url: str
    auth_header: bytes | None = None
    build_route: Callable[[bytes, bytes, str | None, AzureTarget | None], Route] | None = None
    # Paths under /v1/ that only this provider serves (``b"messages"`` covers ``messages`` and
    # ``messages/...``): requests to them go here whatever their body holds.
    native_paths: tuple[bytes, ...] = ()
    # Request headers (lower-cased) that carry a key for this provider and no other. Lectr
    # forwards them to this provider only, so a key never reaches a provider it was not for.
    credential_headers: frozenset[bytes] = frozenset()
    base_url_help: str = ""  # the LECTR_UPSTREAM_<NAME> description; empty: no global base URL
    model_prefixes: tuple[str, ...] = ()
    model_suffixes: tuple[str, ...] = ()
    claims_model: Callable[[str], bool] | None = None
    # Patterns are tried by rank, lowest first: a provider whose ids imitate others' goes before
    # them, one whose prefixes are broad (OpenAI's "text-embedding-") after the rest.
    detect_rank: int = 1
    usage_holder: str | None = None
    billed_completion: Callable[[int | None, int | None, int | None], int | None] | None = None
    # (input, cache read, cache write) → all input tokens, for one whose input leaves the cache out.
    total_input_tokens: Callable[[int, int, int], int] | None = None
    price_fallback: str | None = None
    genai_prices_id: str | None = None
    encoding: Callable[[str | None], str] = approximate_encoding

    def route(self, base: Origin | None, rest: bytes, query: bytes, model: str | None,
              azure: AzureTarget | None) -> Route:
        """The origin and request target for ``/v1/<rest>?<query>``."""
        if self.build_route is not None:
            return self.build_route(rest, query, model, azure)
        target = base.path + b"/" + rest
        return base, (target + b"?" + query if query else target)

    def auth(self, authorization: bytes) -> tuple[bytes, bytes]:
        """The header (name, value) that carries the client's key to this provider."""
        if self.auth_header is None:
            return b"Authorization", authorization
        return self.auth_header, bearer_token(authorization)
