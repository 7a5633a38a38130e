"""Anthropic through its OpenAI-compatible endpoint.

The key goes as ``x-api-key``, Anthropic's native header, which every Anthropic endpoint
accepts (the compatibility layer also takes ``Authorization``, the native API does not).
"""

from lectr.providers.base import Provider

ANTHROPIC = Provider(
    name="anthropic",
    default_base_url="https://api.anthropic.com/v1",
    auth_header=b"x-api-key",
)
