"""Anthropic: its OpenAI-compatible endpoint, and its native API on the same base URL.

The key goes as ``x-api-key``, Anthropic's native header, which every Anthropic endpoint
accepts (the compatibility layer also takes ``Authorization``, the native API does not).
The native API's paths (Messages, Message Batches, token counting, the legacy Text
Completions) exist at no other provider, and a batch names its models only inside
``requests[].params``: the path alone says where such a request goes.

Its usage has its own shape: ``input_tokens``/``output_tokens`` (read as OpenAI's Responses API
names are), the input in ``message_start``'s ``message.usage``, and the cache reads and writes
reported beside the input rather than inside it.
"""

from lectr.providers.base import Provider

# The prompt tokens read from the cache and written to it, reported beside ``input_tokens``.
CACHE_READ_FIELD = "cache_read_input_tokens"
CACHE_WRITE_FIELD = "cache_creation_input_tokens"


def total_input_tokens(input_tokens: int, cache_read_tokens: int, cache_write_tokens: int) -> int:
    """All the input tokens of an Anthropic request, as prices apply to them.

    Anthropic's ``input_tokens`` counts only the tokens after the last cache breakpoint; the ones
    read from the cache (``cache_read_input_tokens``) and written to it
    (``cache_creation_input_tokens``) are reported beside it, not inside it as OpenAI does.
    """
    return input_tokens + cache_read_tokens + cache_write_tokens


ANTHROPIC = Provider(
    name="anthropic",
    default_base_url="https://api.anthropic.com/v1",
    auth_header=b"x-api-key",
    native_paths=(b"messages", b"complete"),  # messages, messages/batches[/…], messages/count_tokens
    credential_headers=frozenset({b"x-api-key"}),
    base_url_help="Base URL for Anthropic's OpenAI-compatible API.",
    model_prefixes=("claude-",),
    usage_holder="message",  # a native stream's message_start holds the input's usage
    genai_prices_id="anthropic",
    total_input_tokens=total_input_tokens,
)
