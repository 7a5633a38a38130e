"""Auth · Detect · Route · Forward · Log, for one request.

A ``RequestCycle`` owns one parsed request: it authenticates the org key against the
in-memory directory, detects the provider, builds the upstream URL and headers, relays the
provider's response byte for byte, and appends one event to the ring. No database, no disk,
no waiting on anything but the client and the provider.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import aiohttp

from lectr.directory import Org
from lectr.events.record import RequestEvent
from lectr.keys import hash_key
from lectr.providers.registry import DEFAULT_PROVIDER, PROVIDERS
from lectr.proxy import responses as R
from lectr.proxy.body import read_body_facts
from lectr.proxy.headers import ClientHeaders, response_head_fields
from lectr.proxy.upstream import UpstreamError

if TYPE_CHECKING:
    from lectr.proxy.protocol import ProxyProtocol
    from lectr.proxy.server import ProxyContext

log = logging.getLogger(__name__)

_CHUNKED = b"transfer-encoding: chunked\r\n"
_CLOSE = b"connection: close\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CRLF = b"\r\n"
_HEALTH_OK = b'{"status":"ok"}'
_NOT_READY = b'{"status":"starting"}'
_DRAINING = b'{"status":"draining"}'


class FixedResponse:
    """A response decided while parsing (400, 408, 413, 431): written in turn, then close."""

    __slots__ = ("conn", "data")

    def __init__(self, conn: ProxyProtocol, data: bytes) -> None:
        self.conn = conn
        self.data = data

    async def run(self) -> None:
        self.conn.write(self.data)
        self.conn.finish_response(keep_alive=False)


class RequestCycle:
    """One request, from its parsed head and body to its event."""

    __slots__ = (
        "ctx", "conn", "method", "url", "raw_headers", "body", "keep_alive", "http11",
        "t_start", "org", "provider", "model", "feature", "task", "stream", "provider_unknown",
        "status", "error_type", "error_origin", "t_first_byte", "t_upstream", "t_upstream_done",
        "bytes_out", "captured", "capture_left", "content_type", "content_encoding",
    )

    def __init__(self, ctx: ProxyContext, conn: ProxyProtocol, method: bytes, url: bytes,
                 raw_headers: list[tuple[bytes, bytes]], body: bytes, *,
                 keep_alive: bool, http11: bool) -> None:
        self.ctx = ctx
        self.conn = conn
        self.method = method
        self.url = url
        self.raw_headers = raw_headers
        self.body = body
        self.keep_alive = keep_alive
        self.http11 = http11
        self.t_start = time.perf_counter()
        self.org: Org | None = None
        self.provider = DEFAULT_PROVIDER
        self.model: str | None = None
        self.feature = ""
        self.task: str | None = None
        self.stream = False
        self.provider_unknown = False
        self.status = 0
        self.error_type: str | None = None
        self.error_origin: str | None = None
        self.t_first_byte: float | None = None
        self.t_upstream = 0.0
        self.t_upstream_done = 0.0
        self.bytes_out = 0
        self.captured: list[bytes] | None = []
        self.capture_left = ctx.limits.capture_max_bytes
        self.content_type: str | None = None
        self.content_encoding: str | None = None

    async def run(self) -> None:
        try:
            await self._handle()
        except asyncio.CancelledError:
            # The client went away (or shutdown ran out of time): the upstream request is
            # cancelled with us. Record what happened, then let the cancellation through.
            if self.status == 0 or self.error_type is None:
                self.error_type, self.error_origin = "client_disconnected", "client"
                self.status = self.status or 499
            self._log_event()
            raise
        except Exception:
            log.exception("internal error while handling a request")
            self.error_type, self.error_origin = "internal_error", "lectr"
            if self.status == 0:
                self._reply_error(R.INTERNAL_ERROR, close=True)
            else:
                self.conn.abort()
            self._log_event()
            return
        self._log_event()

    # -- the steps -------------------------------------------------------------------------

    async def _handle(self) -> None:
        path, _, query = self.url.partition(b"?")
        if not path.startswith(b"/v1/"):
            self._reply_local(path)
            return
        headers = ClientHeaders(self.raw_headers)

        # Auth: a dict lookup by key hash; the provider never sees a rejected request.
        if not headers.lectr_key:
            self._reply_error(R.MISSING_KEY)
            return
        org = self.ctx.directory.current.orgs_by_key_hash.get(hash_key(headers.lectr_key))
        if org is None:
            self._reply_error(R.INVALID_KEY)
            return
        self.org = org
        self.feature = headers.feature_tag()
        self.task = headers.task_tag()

        # Detect.
        facts = read_body_facts(self.body, headers.content_type)
        self.model = facts.model
        self.stream = facts.stream
        self.provider = self._choose_provider(headers.provider, facts.model)

        # Route.
        if self.provider == "azure" and org.azure is None:
            self.error_type, self.error_origin = "azure_not_configured", "lectr"
            self._reply_error(R.AZURE_NOT_CONFIGURED)
            return
        provider = PROVIDERS[self.provider]
        rest = path[4:].decode("latin-1")
        url = provider.url(self.ctx.base_urls.get(self.provider, ""), rest, query.decode("latin-1"),
                           facts.model, org.azure)

        # Forward.
        forward = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers.forward]
        if headers.authorization is not None:
            name, value = provider.auth(headers.authorization)
            forward.append((name.decode("latin-1"), value.decode("latin-1")))
        self.t_upstream = time.perf_counter()
        try:
            response = await self.ctx.upstream.send(self.method.decode("latin-1"), url, forward, self.body)
        except UpstreamError as exc:
            self.error_type = "upstream_timeout" if exc.status == 504 else "upstream_unreachable"
            self.error_origin = "lectr"
            template = R.UPSTREAM_TIMEOUT if exc.status == 504 else R.UPSTREAM_UNREACHABLE
            self.t_upstream_done = time.perf_counter()
            self._reply_error(template, exc.reason)
            return
        async with response:
            await self._relay(response)

    def _choose_provider(self, override: bytes | None, model: str | None) -> str:
        if override is not None:
            name = override.decode("latin-1").strip().lower()
            if name in PROVIDERS:
                return name
            self.ctx.note_invalid_provider(name)
            return DEFAULT_PROVIDER
        if model:
            detected = self.ctx.registry.detect(model)
            if detected is not None:
                return detected
            self.provider_unknown = True
        return DEFAULT_PROVIDER

    async def _relay(self, response: aiohttp.ClientResponse) -> None:
        """Write the provider's status, headers and body to the client, as they arrive."""
        conn = self.conn
        status = self.status = response.status
        if status >= 400:
            self.error_type, self.error_origin = f"http_{status}", "provider"
        lines, has_length = response_head_fields(response.raw_headers)
        self.content_type = response.headers.get("Content-Type")
        self.content_encoding = response.headers.get("Content-Encoding")
        bodyless = self.method == b"HEAD" or status in (204, 304) or status < 200
        chunked = not has_length and not bodyless and self.http11
        # Without a length or chunking (an HTTP/1.0 client) only closing can end the body.
        keep_alive = self.keep_alive and (has_length or chunked or bodyless)
        if chunked:
            lines.append(_CHUNKED)
        if not keep_alive:
            lines.append(_CLOSE)
        lines.append(_CRLF)
        conn.write(R.status_line(status, response.reason) + b"".join(lines))
        self.t_first_byte = time.perf_counter()

        if not bodyless:
            flow = conn.flow
            try:
                async for chunk in response.content.iter_any():
                    if chunked:
                        conn.writelines([b"%x\r\n" % len(chunk), chunk, _CRLF])
                    else:
                        conn.write(chunk)
                    self._capture(chunk)
                    if flow.write_paused:
                        await flow.drain()  # the client is slow: stop reading the provider
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                # Too late for an error response: cut the connection so the client
                # cannot take a truncated body for a whole one.
                self.error_type = "upstream_timeout" if isinstance(exc, asyncio.TimeoutError) \
                    else "upstream_interrupted"
                self.error_origin = "provider"
                self.t_upstream_done = time.perf_counter()
                conn.abort()
                return
            if chunked:
                conn.write(_LAST_CHUNK)
        self.t_upstream_done = time.perf_counter()
        conn.finish_response(keep_alive)

    def _capture(self, chunk: bytes) -> None:
        self.bytes_out += len(chunk)
        captured = self.captured
        if captured is not None:
            self.capture_left -= len(chunk)
            if self.capture_left >= 0:
                captured.append(chunk)
            else:
                self.captured = None  # too big to keep; the cold path records it without usage

    # -- Lectr's own answers ---------------------------------------------------------------

    def _reply_local(self, path: bytes) -> None:
        head = self.method == b"HEAD"
        if path == b"/healthz":
            self._write_own(R.json_response(200, _HEALTH_OK, close=not self.keep_alive, head=head))
        elif path == b"/readyz":
            if self.ctx.draining:
                self._write_own(R.json_response(503, _DRAINING, close=not self.keep_alive, head=head))
            elif not self.ctx.directory.loaded:
                self._write_own(R.json_response(503, _NOT_READY, close=not self.keep_alive, head=head))
            else:
                self._write_own(R.json_response(200, _HEALTH_OK, close=not self.keep_alive, head=head))
        else:
            self._reply_error(R.NOT_FOUND)

    def _reply_error(self, template: tuple, detail: object = None, *, close: bool = False) -> None:
        status, message, type_, code = template
        if "{}" in message:
            message = message.format(detail)
        self.status = status
        if self.error_type is None:
            self.error_type, self.error_origin = code, "lectr"
        close = close or not self.keep_alive
        self._write_own(R.error_response(status, message, type_, code, close=close), keep_alive=not close)

    def _write_own(self, data: bytes, keep_alive: bool | None = None) -> None:
        self.conn.write(data)
        self.t_first_byte = time.perf_counter()
        self.conn.finish_response(self.keep_alive if keep_alive is None else keep_alive)

    # -- Log -------------------------------------------------------------------------------

    def _log_event(self) -> None:
        org = self.org
        if org is None:
            return  # no org, no record: unauthenticated traffic belongs to nobody
        t_end = time.perf_counter()
        upstream = (self.t_upstream_done - self.t_upstream) if self.t_upstream and self.t_upstream_done else 0.0
        self.ctx.ring.append(RequestEvent(
            org.id, time.time(), self.provider, self.model, self.model, self.feature, self.task,
            self.status, self.error_type, self.error_origin, self.stream,
            self.t_start, self.t_first_byte, t_end, max(0.0, (t_end - self.t_start) - upstream),
            self.provider_unknown, None, len(self.body), self.bytes_out,
            self.content_type, self.content_encoding, self.captured,
        ))
