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

from lectr.directory import Org
from lectr.events.record import RequestEvent
from lectr.keys import hash_key
from lectr.providers.registry import DEFAULT_PROVIDER, PROVIDERS
from lectr.proxy import responses as R
from lectr.proxy.body import read_body_facts
from lectr.proxy.headers import ClientHeaders, response_head
from lectr.proxy.upstream import OriginPool, UpstreamError

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
_RETRY = object()  # an exchange's outcome: try once more on a fresh connection
_BODYLESS_METHODS = (b"GET", b"HEAD", b"DELETE", b"OPTIONS")


def _upstream_request(method: bytes, target: bytes, host: bytes, forward: list[tuple[bytes, bytes]],
                      auth: tuple[bytes, bytes] | None, body: bytes) -> bytes:
    """The whole upstream request as one byte string: one write, one syscall."""
    parts = [method, b" ", target, b" HTTP/1.1\r\nHost: ", host, b"\r\n"]
    for name, value in forward:
        parts += (name, b": ", value, b"\r\n")
    if auth is not None:
        parts += (auth[0], b": ", auth[1], b"\r\n")
    if body or method not in _BODYLESS_METHODS:
        parts.append(b"Content-Length: %d\r\n" % len(body))
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


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
        "bytes_out", "captured", "capture_left", "content_type", "content_encoding", "chunked", "done",
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
        self.chunked = False
        self.done: asyncio.Future | None = None

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
        origin, target = provider.route(self.ctx.origins.get(self.provider), path[4:], query, facts.model, org.azure)

        # Forward.
        auth = provider.auth(headers.authorization) if headers.authorization is not None else None
        request = _upstream_request(self.method, target, origin.host_header, headers.forward, auth, self.body)
        await self._exchange(self.ctx.upstream.pool(origin), request)

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

    async def _exchange(self, pool: OriginPool, request: bytes) -> None:
        """Send the request on a pooled connection and wait while the response is relayed."""
        flow = self.conn.flow
        self.t_upstream = time.perf_counter()
        for attempt in (1, 2):
            try:
                upstream = await pool.acquire()
            except UpstreamError as exc:
                self._upstream_error(exc)
                return
            self.done = self.ctx.loop.create_future()
            flow.follow(upstream)
            try:
                upstream.start(self, request, head_only=self.method == b"HEAD")
                outcome = await self.done
            except BaseException:  # the client went away (cancelled): the connection is half-used
                pool.discard(upstream)
                raise
            finally:
                flow.unfollow()
            if outcome is None:
                return
            pool.discard(upstream)
            # A kept-alive connection the provider had just closed: nothing was processed, so
            # the request goes again, once, on a fresh connection.
            if outcome is _RETRY and attempt == 1:
                continue
            self._upstream_error(outcome if isinstance(outcome, UpstreamError)
                                 else UpstreamError(502, "the provider closed the connection"))
            return

    def _upstream_error(self, exc: UpstreamError) -> None:
        self.t_upstream_done = time.perf_counter()
        self.error_type = "upstream_timeout" if exc.status == 504 else "upstream_unreachable"
        self.error_origin = "lectr"
        self._reply_error(R.UPSTREAM_TIMEOUT if exc.status == 504 else R.UPSTREAM_UNREACHABLE, exc.reason)

    # -- the upstream response, pushed by the upstream connection's parser -------------------

    def upstream_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """Write the provider's status and headers to the client, framed for this connection."""
        self.status = status
        if status >= 400:
            self.error_type, self.error_origin = f"http_{status}", "provider"
        lines, has_length, content_type, content_encoding = response_head(headers)
        self.content_type, self.content_encoding = content_type, content_encoding
        bodyless = self.method == b"HEAD" or status in (204, 304)
        self.chunked = not has_length and not bodyless and self.http11
        # Without a length or chunking (an HTTP/1.0 client) only closing can end the body.
        self.keep_alive = self.keep_alive and (has_length or self.chunked or bodyless)
        if self.chunked:
            lines.append(_CHUNKED)
        if not self.keep_alive:
            lines.append(_CLOSE)
        lines.append(_CRLF)
        self.conn.write(R.status_line(status, reason.decode("latin-1")) + b"".join(lines))
        self.t_first_byte = time.perf_counter()

    def upstream_body(self, chunk: bytes) -> None:
        if self.chunked:
            self.conn.writelines([b"%x\r\n" % len(chunk), chunk, _CRLF])
        else:
            self.conn.write(chunk)
        self._capture(chunk)

    def upstream_done(self) -> None:
        if self.chunked:
            self.conn.write(_LAST_CHUNK)
        self.t_upstream_done = time.perf_counter()
        self.conn.finish_response(self.keep_alive)
        if not self.done.done():
            self.done.set_result(None)

    def upstream_failed(self, error: UpstreamError, *, retryable: bool) -> None:
        if self.done.done():
            return
        if self.t_first_byte is None:
            self.done.set_result(_RETRY if retryable else error)
            return
        # Too late for an error response: cut the connection so the client cannot take a
        # truncated body for a whole one.
        self.error_type = "upstream_timeout" if error.status == 504 else "upstream_interrupted"
        self.error_origin = "provider"
        self.t_upstream_done = time.perf_counter()
        self.conn.abort()
        self.done.set_result(None)

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
