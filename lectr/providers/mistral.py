"""Mistral AI: OpenAI-compatible at ``https://api.mistral.ai/v1``; keys go as ``Authorization: Bearer``.

No quirk of its own: usage in OpenAI's shape, prices listed under ``mistral`` in genai-prices,
a tokeniser that is not tiktoken's (cl100k_base approximates it).
"""

from lectr.providers.base import Provider

MODEL_PREFIXES = ("mistral-", "codestral-", "magistral-", "ministral-", "pixtral-", "open-mistral-", "devstral-")

MISTRAL = Provider(
    name="mistral",
    default_base_url="https://api.mistral.ai/v1",
    base_url_help="Base URL for Mistral AI.",
    model_prefixes=MODEL_PREFIXES,
    genai_prices_id="mistral",
)
