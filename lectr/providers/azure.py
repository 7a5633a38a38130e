"""Azure OpenAI: one endpoint per org, the model chosen by the deployment in the path.

``/v1/chat/completions`` with model ``M`` becomes
``<endpoint>/openai/deployments/M/chat/completions?api-version=<version>``, and the key
goes in the ``api-key`` header, as Azure's key authentication expects. Azure serves OpenAI's
models under the same names, so OpenAI's prices and tokenisers stand in where Azure has none.
Deployment names are each org's own: Azure is never detected from a model, only chosen by
``X-Lectr-Provider``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from lectr.providers.base import AzureTarget, Provider, Route, deployment_segment, parse_origin
from lectr.providers.openai import openai_encoding


def _with_api_version(query: bytes, api_version: str) -> bytes:
    # The org's configured version wins over one the client sent: it is what the
    # deployment was set up for, and Azure rejects a request carrying two.
    pairs = [(k, v) for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True) if k != "api-version"]
    pairs.append(("api-version", api_version))
    return urlencode(pairs).encode("latin-1")


def azure_route(rest: bytes, query: bytes, model: str | None, azure: AzureTarget | None) -> Route:
    """The deployment's path for ``rest``; without a model (``GET /v1/models``) the resource's.

    ``rest`` has no dot segments left (``lectr.proxy.paths``); a model that is not a plain
    deployment name raises ``PathRefused``.
    """
    assert azure is not None, "Azure requests are refused before routing when no endpoint is configured"
    origin = parse_origin(azure.endpoint)
    if model:
        path = origin.path + b"/openai/deployments/" + deployment_segment(model) + b"/" + rest
    else:
        path = origin.path + b"/openai/" + rest
    return origin, path + b"?" + _with_api_version(query, azure.api_version)


AZURE = Provider(name="azure", default_base_url="", auth_header=b"api-key", build_route=azure_route,
                 credential_headers=frozenset({b"api-key"}), price_fallback="openai", genai_prices_id="azure",
                 encoding=openai_encoding)
