"""OpenAI: the reference. Every other provider here speaks its wire format.

What is OpenAI's own: its model families (and the o-series names that only look like others'),
the Responses API's usage under ``response.usage`` in stream events, and the tokeniser each of
its model families uses.
"""

from __future__ import annotations

import re

from lectr.providers.base import CL100K_BASE, O200K_BASE, Provider

MODEL_PREFIXES = (
    "gpt-", "chatgpt-", "o1", "o3", "o4-", "text-embedding-", "text-moderation-",
    "omni-moderation-", "tts-", "whisper-", "dall-e-", "sora-", "computer-use-",
    "codex-", "davinci-", "babbage-", "ft:", "chat-latest", "daybreak-",
)


def is_o_series(name: str) -> bool:
    """Whether a lower-case name the prefixes matched is OpenAI's: "o1", "o3-mini",
    "o4-mini-2025-04-16", but not "omni-…" or "ollama-…" (which only share a letter)."""
    if not name.startswith(("o1", "o3", "o4")):
        return True
    return len(name) == 2 or name[2] == "-"


# Older families on cl100k_base, exact for gpt-4/gpt-3.5 ("gpt-35" is Azure's spelling) and
# embeddings, an approximation for retired GPT-2/GPT-3 models. Checked before the o200k families so
# that "gpt-35" is not read as a later gpt-N; "gpt-4" must not be followed by "o" or ".".
_CL100K_MODEL = re.compile(r"gpt-4(?![0-9a-z.])|gpt-3|gpt-?2(?![0-9])|text-|code-"
                           r"|(?:davinci|curie|babbage|ada|cushman)(?![a-z])")
# Families on o200k_base: gpt-4o, gpt-4.1, gpt-4.5, gpt-5 and later, chatgpt-4o, o1/o3/o4...
_O200K_MODEL = re.compile(r"(?:gpt-(?:4o|4\.1|4\.5|[5-9]|[1-9]\d)|chatgpt-4o|o[1-9])(?![0-9a-z])")


def openai_encoding(model: str | None) -> str:
    """The tiktoken encoding of an OpenAI model (also Azure's, which serves the same models)."""
    name = _base_model_name(model or "")
    if _CL100K_MODEL.match(name):
        return CL100K_BASE
    if _O200K_MODEL.match(name):
        return O200K_BASE
    # Unknown names (Azure deployment names, new families) are most likely current models.
    return O200K_BASE


def _base_model_name(model: str) -> str:
    """``ft:gpt-4o-mini:org::id`` → ``gpt-4o-mini``; ``openai/gpt-4o`` → ``gpt-4o``; lower-cased."""
    name = model.strip().lower()
    if name.startswith("ft:"):
        name = name[3:].split(":", 1)[0]
    return name.rsplit("/", 1)[-1]


OPENAI = Provider(
    name="openai",
    default_base_url="https://api.openai.com/v1",
    base_url_help="Base URL for OpenAI.",
    model_prefixes=MODEL_PREFIXES,
    claims_model=is_o_series,
    detect_rank=2,  # "text-embedding-" and "whisper-" also begin other providers' ids
    # The Responses API's stream events (response.completed) carry the usage in their "response".
    usage_holder="response",
    genai_prices_id="openai",
    encoding=openai_encoding,
)
