"""Google Gemini through its OpenAI-compatible endpoint, which takes ``Authorization: Bearer``."""

from lectr.providers.base import Provider

GEMINI = Provider(
    name="gemini",
    default_base_url="https://generativelanguage.googleapis.com/v1beta/openai",
    credential_headers=frozenset({b"x-goog-api-key"}),  # Google's native API-key header
)
