"""Google Gemini through its OpenAI-compatible endpoint, which takes ``Authorization: Bearer``.

Gemini's quirks: it spells model ids ``models/gemini-…`` too; it bills thinking tokens as
output but leaves them out of ``completion_tokens`` (only ``total_tokens`` has them); genai-prices
lists it as ``google``; its tokeniser is not public (cl100k_base approximates it).
"""

from lectr.providers.base import Provider

MODEL_PREFIXES = ("gemini-", "gemma-", "learnlm-", "imagen-", "veo-", "lyria-", "text-embedding-004")
# Gemini's own spelling of a model id; the name after it is what detection and prices match.
MODEL_NAMESPACE = "models/"


def gemini_billed_completion(prompt: int | None, completion: int | None, total: int | None) -> int | None:
    """Gemini's billed output tokens, given its reported prompt, completion and total."""
    # Gemini bills thinking tokens as output but leaves them out of completion_tokens (only total has them).
    if prompt is None or total is None or total <= prompt + (completion or 0):
        return completion
    return total - prompt


GEMINI = Provider(
    name="gemini",
    default_base_url="https://generativelanguage.googleapis.com/v1beta/openai",
    base_url_help="Base URL for Gemini's OpenAI-compatible API.",
    credential_headers=frozenset({b"x-goog-api-key"}),  # Google's native API-key header
    model_prefixes=MODEL_PREFIXES,
    billed_completion=gemini_billed_completion,
    genai_prices_id="google",
)
