"""The small interface every provider module fills in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote


@dataclass(frozen=True, slots=True)
class AzureTarget:
    """An org's Azure OpenAI resource: where its deployments live and which API version to ask for."""

    endpoint: str
    api_version: str


def join_url(base: str, rest: str, query: str) -> str:
    """``base`` + ``/rest`` + ``?query``; ``base`` has no trailing slash (config strips it)."""
    url = f"{base}/{rest}"
    return f"{url}?{query}" if query else url


def bearer_token(authorization: bytes) -> bytes:
    """The credential inside ``Authorization: Bearer K``; any other scheme is passed on whole."""
    if authorization[:7].lower() == b"bearer ":
        return authorization[7:].strip()
    return authorization


def quote_path_segment(value: str) -> str:
    """Percent-encode ``value`` for use as one path segment (a model or deployment name)."""
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class Provider:
    """How Lectr reaches one provider.

    ``auth_header`` is the header the provider wants the key in; ``None`` means the client's
    ``Authorization`` header goes through as it is.
    """

    name: str
    default_base_url: str
    auth_header: bytes | None = None
    build_url: Callable[..., str] | None = None

    def url(self, base: str, rest: str, query: str, model: str | None, azure: AzureTarget | None) -> str:
        """The upstream URL for ``/v1/<rest>?<query>``."""
        if self.build_url is not None:
            return self.build_url(base, rest, query, model, azure)
        return join_url(base, rest, query)

    def auth(self, authorization: bytes) -> tuple[bytes, bytes]:
        """The header (name, value) that carries the client's key to this provider."""
        if self.auth_header is None:
            return b"Authorization", authorization
        return self.auth_header, bearer_token(authorization)
