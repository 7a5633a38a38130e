"""Upstream connections: one aiohttp pool per provider origin, and the errors they can end in."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from yarl import URL

from lectr.config import UpstreamSettings

log = logging.getLogger(__name__)

# aiohttp adds these on its own; a proxy must not (the provider sees the client's headers
# and nothing else). Host and Content-Length it must set, and does.
SKIPPED_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


class UpstreamError(Exception):
    """The provider could not be reached (502) or did not answer in time (504)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def origin_of(url: str) -> str:
    """``scheme://host:port`` of an absolute URL, without parsing the rest."""
    scheme_end = url.find("://") + 3
    path_start = url.find("/", scheme_end)
    return url if path_start < 0 else url[:path_start]


class UpstreamPools:
    """Keep-alive connection pools, one ``ClientSession`` per upstream origin.

    Sessions never decompress, never keep cookies and never add headers of their own, so the
    bytes and headers that pass through are the provider's and the client's.
    """

    def __init__(self, settings: UpstreamSettings) -> None:
        self._settings = settings
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None,  # waiting for a free pooled connection is not a connect failure
            sock_connect=settings.connect_timeout,
            sock_read=settings.read_timeout,
        )

    def warm(self) -> None:
        """Create the sessions for the configured providers before the first request."""
        for base in self._settings.base_urls.values():
            self._session(origin_of(base))

    def _session(self, origin: str) -> aiohttp.ClientSession:
        session = self._sessions.get(origin)
        if session is None:
            connector = aiohttp.TCPConnector(
                limit=self._settings.pool_size,
                limit_per_host=self._settings.pool_size,
                keepalive_timeout=60.0,
                ttl_dns_cache=300,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=SKIPPED_AUTO_HEADERS,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                raise_for_status=False,
            )
            self._sessions[origin] = session
        return session

    async def send(self, method: str, url: str, headers: list[tuple[str, str]],
                   body: bytes) -> aiohttp.ClientResponse:
        """Send one request and return the response once its head has arrived."""
        session = self._session(origin_of(url))
        try:
            return await session.request(
                method,
                URL(url, encoded=True),  # the client's path and query, byte for byte
                headers=headers,
                data=body if body else None,
                allow_redirects=False,
            )
        except (aiohttp.ConnectionTimeoutError, aiohttp.ServerTimeoutError, asyncio.TimeoutError) as exc:
            raise UpstreamError(504, _describe(exc) or "timed out") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(502, _describe(exc) or type(exc).__name__) from None
        except OSError as exc:
            raise UpstreamError(502, exc.strerror or type(exc).__name__) from None

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


def _describe(exc: BaseException) -> str:
    # aiohttp's messages name host and port, never headers: safe to show a client.
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}"
    return str(exc)
