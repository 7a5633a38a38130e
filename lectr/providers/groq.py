"""Groq: OpenAI-compatible under ``/openai/v1``; keys go as ``Authorization: Bearer gsk_...``."""

from lectr.providers.base import Provider

GROQ = Provider(name="groq", default_base_url="https://api.groq.com/openai/v1")
