"""Alert webhooks: one JSON POST per alert (the anomaly's fields plus a ``text`` line, which is
what Slack's incoming webhooks display).

An org chooses its webhook URL, so a webhook is a request Lectr makes on a tenant's behalf: by
default it goes only to public (globally routable) addresses, never to loopback, link-local
(cloud metadata at 169.254.169.254), private or other internal ones. The check is made on the
addresses the connection will actually use, resolved at delivery time — a name that resolved to
a public address when it was saved and to an internal one now (DNS rebinding) is refused too.
An operator whose receivers are internal sets ``LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE=1``.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult

from lectr.alerts.addresses import ALLOW_PRIVATE_VARIABLE, address_kind, describe_target, literal_kind  # noqa: F401
from lectr.alerts.email import DeliveryError

TIMEOUT_SECONDS = 10.0


class WebhookRefused(DeliveryError):
    """The webhook's address is not a public one: refused before any connection, never retried."""

    permanent = True


def _refusal(url: str, what: str) -> WebhookRefused:
    return WebhookRefused(f"refused: {describe_target(url)} {what}; alerts go only to public addresses "
                          f"unless the operator sets {ALLOW_PRIVATE_VARIABLE}=1")


class PublicOnlyResolver(AbstractResolver):
    """Resolves through ``inner`` and keeps only public addresses — the ones the connection then
    uses, so nothing is connected to that was not checked. WebhookRefused when none is left."""

    def __init__(self, inner: AbstractResolver) -> None:
        self._inner = inner

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family=family)
        kept = [r for r in results if address_kind(r["host"]) is None]
        if not kept:
            kinds = sorted({address_kind(r["host"]) for r in results} - {None})
            raise WebhookRefused(f"resolves only to non-public addresses ({', '.join(kinds) or 'none'})")
        return kept

    async def close(self) -> None:
        await self._inner.close()


class WebhookClient:
    """Posts alert webhooks; an async context manager that owns one HTTP session.

    ``allow_private``: also deliver to loopback, private and other non-public addresses (the
    operator's ``LECTR_ALERT_WEBHOOK_ALLOW_PRIVATE``). ``resolver``: the DNS resolver underneath
    (default aiohttp's); tests give one that answers what they need.
    """

    def __init__(self, *, allow_private: bool = False, resolver: AbstractResolver | None = None,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self.allow_private = allow_private
        self.timeout = timeout
        self._given_resolver = resolver
        self._own_resolver: AbstractResolver | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "WebhookClient":
        if self._given_resolver is None:
            self._own_resolver = aiohttp.DefaultResolver()
        resolver = self._given_resolver or self._own_resolver
        if not self.allow_private:
            resolver = PublicOnlyResolver(resolver)
        # No proxy from the environment (trust_env is off): the address checked is the one reached.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver))
        return self

    async def __aexit__(self, *exc_info) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._own_resolver is not None:
            await self._own_resolver.close()
            self._own_resolver = None

    async def post(self, url: str, payload: dict, *, delivery_id: str | None = None) -> None:
        """POST ``payload`` as JSON; DeliveryError unless the receiver answers 2xx, WebhookRefused
        (before any connection) when the URL's address is not public and that is not allowed.

        ``delivery_id`` goes in ``X-Lectr-Delivery`` (and the body) so a receiver can drop a repeat.
        """
        assert self._session is not None, "use WebhookClient as an async context manager"
        if not self.allow_private:
            self._check_literal(url)  # an IP address in the URL never reaches the resolver
        headers = {"Content-Type": "application/json", "User-Agent": "Lectr-Alerts"}
        if delivery_id:
            headers["X-Lectr-Delivery"] = delivery_id
        try:
            async with self._session.post(url, data=orjson.dumps(payload), headers=headers, allow_redirects=False,
                                          timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                if response.status // 100 != 2:
                    raise DeliveryError(f"{describe_target(url)} answered HTTP {response.status}")
        except WebhookRefused as exc:
            raise _refusal(url, str(exc)) from None
        except asyncio.TimeoutError:
            raise DeliveryError(f"{describe_target(url)} did not answer within {self.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"{describe_target(url)}: {type(exc).__name__}") from None

    @staticmethod
    def _check_literal(url: str) -> None:
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:
            return  # aiohttp refuses the URL itself
        kind = literal_kind(host)
        if kind is not None:
            raise _refusal(url, f"is a {kind} address")
