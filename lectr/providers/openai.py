"""OpenAI: the reference. Every other provider here speaks its wire format."""

from lectr.providers.base import Provider

OPENAI = Provider(name="openai", default_base_url="https://api.openai.com/v1")
