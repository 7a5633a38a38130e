"""Alert webhooks: one JSON POST per alert (the anomaly's fields plus a ``text`` line, which is
what Slack's incoming webhooks display)."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from lectr.alerts.email import DeliveryError

TIMEOUT_SECONDS = 10.0


def describe_target(url: str) -> str:
    """The URL without its path: Slack-style webhook paths are secrets, and logs keep no secrets."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


async def post_webhook(session: aiohttp.ClientSession, url: str, payload: dict, *, delivery_id: str | None = None,
                       timeout: float = TIMEOUT_SECONDS) -> None:
    """POST ``payload`` as JSON; DeliveryError unless the receiver answers 2xx.

    ``delivery_id`` goes in ``X-Lectr-Delivery`` (and the body) so a receiver can drop a repeat.
    """
    headers = {"Content-Type": "application/json", "User-Agent": "Lectr-Alerts"}
    if delivery_id:
        headers["X-Lectr-Delivery"] = delivery_id
    try:
        async with session.post(url, data=orjson.dumps(payload), headers=headers, allow_redirects=False,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status // 100 != 2:
                raise DeliveryError(f"{describe_target(url)} answered HTTP {response.status}")
    except asyncio.TimeoutError:
        raise DeliveryError(f"{describe_target(url)} did not answer within {timeout:g} s") from None
    except aiohttp.ClientError as exc:
        raise DeliveryError(f"{describe_target(url)}: {type(exc).__name__}") from None
