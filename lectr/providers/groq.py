"""Groq: OpenAI-compatible under ``/openai/v1``; keys go as ``Authorization: Bearer gsk_...``.

Groq serves open-weight models, whose ids look like other providers' (``openai/gpt-oss-120b``,
``whisper-large-v3``, ``gemma2-9b-it``): the registry checks Groq's patterns first. Its streams
report usage on the last chunk under ``x_groq.usage`` rather than at the top.
"""

from lectr.providers.base import Provider

MODEL_PREFIXES = (
    "openai/gpt-oss", "meta-llama/", "qwen/", "moonshotai/", "groq/", "deepseek-r1-distill",
    "llama-", "llama3-", "mixtral-", "gemma2-", "whisper-large", "distil-whisper",
    "playai-", "allam-", "compound-",
)
# Suffixes only Groq uses on its legacy ids (``llama-3.3-70b-versatile``, ``llama3-70b-8192``).
MODEL_SUFFIXES = ("-versatile", "-instant", "-8192", "-32768")

GROQ = Provider(
    name="groq",
    default_base_url="https://api.groq.com/openai/v1",
    base_url_help="Base URL for Groq.",
    model_prefixes=MODEL_PREFIXES,
    model_suffixes=MODEL_SUFFIXES,
    detect_rank=0,  # its open-weight ids would otherwise be taken for OpenAI's or Gemini's
    usage_holder="x_groq",
    genai_prices_id="groq",
)
