"""Azure OpenAI: one endpoint per org, the model chosen by the deployment in the path.

``/v1/chat/completions`` with model ``M`` becomes
``<endpoint>/openai/deployments/M/chat/completions?api-version=<version>``, and the key
goes in the ``api-key`` header, as Azure's key authentication expects.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from lectr.providers.base import AzureTarget, Provider, quote_path_segment


def _with_api_version(query: str, api_version: str) -> str:
    # The org's configured version wins over one the client sent: it is what the
    # deployment was set up for, and Azure rejects a request carrying two.
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "api-version"]
    pairs.append(("api-version", api_version))
    return urlencode(pairs)


def azure_url(base: str, rest: str, query: str, model: str | None, azure: AzureTarget | None) -> str:
    """The deployment URL for ``rest``; without a model (``GET /v1/models``) the resource-level one."""
    assert azure is not None, "Azure requests are refused before routing when no endpoint is configured"
    endpoint = azure.endpoint.rstrip("/")
    if model:
        path = f"{endpoint}/openai/deployments/{quote_path_segment(model)}/{rest}"
    else:
        path = f"{endpoint}/openai/{rest}"
    return f"{path}?{_with_api_version(query, azure.api_version)}"


AZURE = Provider(name="azure", default_base_url="", auth_header=b"api-key", build_url=azure_url)
