"""Google Gemini through its OpenAI-compatible endpoint, which takes ``Authorization: Bearer``."""

from lectr.providers.base import Provider

GEMINI = Provider(
    name="gemini",
    default_base_url="https://generativelanguage.googleapis.com/v1beta/openai",
)
