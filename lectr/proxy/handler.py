"""Auth · Detect · Route · Forward · Log, for one request.

The second of the hot path's three files (``protocol.py`` → this → ``upstream.py``). A
``RequestCycle`` owns one parsed request. ``start`` asks ``decide`` (``decide.py``: Auth ·
Detect · Route against the in-memory snapshot) what the request will do, then carries it out:
answers a refusal, or builds the upstream request and sends it on an idle pooled connection
(``pool.py``), all without waiting; the upstream connection's parser then pushes
the response through the cycle to the client, and the cycle's last act is to append one
event to the ring. Only when no idle connection exists does a task wait for a new one. No
database, no disk, no waiting on anything but the client and the provider. Its helpers:
``own_answers.py`` (health checks and Lectr's errors) and ``cycle_tunnel.py`` (a WebSocket
session after the provider's 101).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from lectr.snapshot.directory import Org
from lectr.proxy.event import CAPTURE_TAIL_BYTES, RequestEvent
from lectr.providers.registry import DEFAULT_PROVIDER
from lectr.proxy import responses as R
from lectr.proxy.cycle_tunnel import TunnelCycle
from lectr.proxy.decide import decide_fields
from lectr.proxy.framing import ends_event_stream
from lectr.proxy.headers import UNTAGGED, ClientHeaders, ResponseHead, without_transfer_coding
from lectr.proxy.own_answers import OwnAnswers
from lectr.proxy.pool import OriginPool
from lectr.proxy.tunnel import Tunnel
from lectr.proxy.upstream import UpstreamConnection, UpstreamError

if TYPE_CHECKING:
    from lectr.proxy.connection import ClientConnection
    from lectr.proxy.context import ProxyContext

log = logging.getLogger(__name__)

_CHUNKED = b"transfer-encoding: chunked\r\n"
_CLOSE = b"connection: close\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CRLF = b"\r\n"
_BODYLESS_METHODS = (b"GET", b"HEAD", b"DELETE", b"OPTIONS")
# RFC 9110 §9.2.2: requests a client may repeat, so Lectr may too, when a kept-alive
# connection fails before any answer. Anything else is sent again only if none of it left.
IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
_new_tuple = tuple.__new__
# The tail is cut back to its last CAPTURE_TAIL_BYTES once it holds twice that: one join per
# CAPTURE_TAIL_BYTES relayed, rather than work on every chunk.
_TAIL_TRIM_AT = 2 * CAPTURE_TAIL_BYTES


def upstream_request(method: bytes, target: bytes, host: bytes, forward: list[bytes],
                     auth: tuple[bytes, bytes] | None, body: bytes) -> bytes:
    """The whole upstream request as one byte string: one write, one syscall.

    ``forward`` is ``ClientHeaders.forward``: the forwarded header lines' parts, in order.
    """
    parts = [method, b" ", target, b" HTTP/1.1\r\nHost: ", host]
    parts += forward
    if auth is not None:
        parts += (b"\r\n", auth[0], b": ", auth[1])
    if body or method not in _BODYLESS_METHODS:
        parts.append(b"\r\nContent-Length: %d\r\n\r\n" % len(body))
    else:
        parts.append(b"\r\n\r\n")
    parts.append(body)
    return b"".join(parts)



class RequestCycle(OwnAnswers, TunnelCycle):
    """One request, from its parsed head and body to its event."""

    __slots__ = (
        "ctx", "conn", "method", "url", "headers", "body", "keep_alive", "http11",
        "upgrade", "tunnel",  # a WebSocket upgrade request, and its tunnel after the 101
        "t_start", "org", "provider", "model", "feature", "task", "stream", "provider_unknown",
        "status", "error_type", "error_origin", "t_first_byte", "t_upstream", "t_upstream_done",
        "bytes_out", "captured", "capture_left", "tail", "tail_bytes", "content_type", "content_encoding",
        "chunked", "pool", "request", "upstream", "waiter", "attempts", "out", "finished",
    )

    def __init__(self, ctx: ProxyContext, conn: ClientConnection, method: bytes, url: bytes,
                 headers: ClientHeaders, body: bytes, keep_alive: bool, http11: bool) -> None:
        self.ctx = ctx
        self.conn = conn
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.http11 = http11
        self.t_start = time.perf_counter()
        self.org: Org | None = None
        self.provider = DEFAULT_PROVIDER
        self.model: str | None = None
        self.feature = UNTAGGED
        self.task: str | None = None  # X-Lectr-Task
        self.stream = False
        self.provider_unknown = False
        self.status = 0
        self.error_type: str | None = None
        self.error_origin: str | None = None
        self.t_first_byte: float | None = None
        self.t_upstream = 0.0
        self.t_upstream_done = 0.0
        self.bytes_out = 0
        self.captured: list[bytes] = []
        self.capture_left = ctx.limits.capture_max_bytes
        self.tail: list[bytes] | None = None  # the body's last bytes, once it outgrows the capture
        self.tail_bytes = 0
        self.content_type: str | None = None
        self.content_encoding: str | None = None
        self.chunked = False
        self.pool: OriginPool | None = None
        self.request = b""
        self.upstream: UpstreamConnection | None = None
        self.waiter: asyncio.Task | None = None  # only while a new upstream connection opens
        self.attempts = 0
        self.out: list[bytes] = []  # response bytes gathered during one upstream read
        self.finished = False
        self.upgrade = False  # a WebSocket upgrade request: tunnelled after the provider's 101
        self.tunnel: Tunnel | None = None

    # -- the steps -------------------------------------------------------------------------

    def start(self) -> None:
        """Take the request as far as it goes without waiting."""
        self.ctx.cycle_started(self)
        try:
            if self._prepare():
                self._send()
        except Exception:
            self._internal_error()

    def _prepare(self) -> bool:
        """Carry out the decision: True when there is a request to forward, False when answered."""
        path, _, query = self.url.partition(b"?")
        if not path.startswith(b"/v1/"):
            self._reply_local(path)
            return False
        ctx = self.ctx
        upgrade = self.method == b"GET" and self.conn.upgrade_requested
        decision = decide_fields(self.method, path, query, self.headers, self.body, upgrade,
                                 ctx.directory.current, ctx.routes)
        (org, refusal, detail, self.provider, self.provider_unknown, invalid_provider, self.model, self.stream,
         origin, target, forward, auth, _, _, _) = decision
        if org is not None:
            self.org = org
            headers = self.headers
            if headers.feature is not None:
                self.feature = headers.feature_tag()
            if headers.task is not None:
                self.task = headers.task_tag()
        if invalid_provider is not None:
            ctx.note_invalid_provider(invalid_provider)
        if refusal is not None:
            self._reply_error(refusal, detail)
            return False
        self.upgrade = upgrade
        self.request = upstream_request(self.method, target, origin.host_header, forward, auth, self.body)
        self.pool = ctx.upstream.pool(origin)
        return True

    # -- Forward -------------------------------------------------------------------------------

    def _send(self) -> None:
        self.attempts += 1
        if not self.t_upstream:
            self.t_upstream = time.perf_counter()
        upstream = self.pool.take_idle()
        if upstream is not None:
            self._exchange(upstream)  # the usual case: no task, no waiting
        else:
            self.waiter = self.ctx.spawn(self._connect_and_send())

    async def _connect_and_send(self) -> None:
        try:
            upstream = await self.pool.acquire()
        except UpstreamError as exc:
            self.waiter = None
            self._upstream_error(exc)
            return
        except Exception:
            self.waiter = None
            self._internal_error()
            return
        self.waiter = None
        self._exchange(upstream)

    def _exchange(self, upstream: UpstreamConnection) -> None:
        self.upstream = upstream
        self.conn.flow.follow(upstream)
        method = self.method
        # Positional: a call with keywords is not specialised by the interpreter (per request).
        upstream.start(self, self.request, method == b"HEAD", method in IDEMPOTENT_METHODS, self.upgrade)

    def _release_upstream(self, discard: bool) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            self.conn.flow.unfollow()
            if discard:
                self.pool.discard(upstream)

    def _upstream_error(self, exc: UpstreamError) -> None:
        self.t_upstream_done = time.perf_counter()
        if exc.sent:
            # The provider took the request and dropped the connection without a word: its
            # failure, and not Lectr's to repeat (it may have been processed and billed).
            self.error_type, self.error_origin = "upstream_closed", "provider"
            self._reply_error(R.UPSTREAM_CLOSED, exc.reason)
            return
        self.error_type = "upstream_timeout" if exc.status == 504 else "upstream_unreachable"
        self.error_origin = "lectr"
        self._reply_error(R.UPSTREAM_TIMEOUT if exc.status == 504 else R.UPSTREAM_UNREACHABLE, exc.reason)

    # -- the upstream response, pushed by the upstream connection's parser -------------------

    def upstream_head(self, status: int, head: ResponseHead) -> None:
        """The provider's status and headers, framed for the client's connection."""
        self.status = status
        if status >= 400:
            self.error_type, self.error_origin = f"http_{status}", "provider"
        self.content_type, self.content_encoding = head.content_type, head.content_encoding
        has_length = head.has_length
        bodyless = self.method == b"HEAD" or status in (204, 304)
        self.chunked = not has_length and not bodyless and self.http11
        # Without a length or chunking (an HTTP/1.0 client) only closing can end the body; a
        # draining proxy closes after this response, and says so while it still can.
        self.keep_alive = self.keep_alive and (has_length or self.chunked or bodyless) and not self.ctx.draining
        out = self.out
        if head.chunked:
            # The provider's own Transfer-Encoding line stays in its place when Lectr chunks too.
            out.append(head.relay if self.chunked else without_transfer_coding(head.relay))
        else:
            out.append(head.relay)
            if self.chunked:
                out.append(_CHUNKED)
        if not self.keep_alive:
            out.append(_CLOSE)
        out.append(_CRLF)
        self.t_first_byte = time.perf_counter()

    def upstream_body(self, chunk: bytes) -> None:
        if self.chunked:
            self.out += (b"%x\r\n" % len(chunk), chunk, _CRLF)
        else:
            self.out.append(chunk)
        self.bytes_out += len(chunk)
        self.capture_left -= len(chunk)
        if self.capture_left >= 0:
            self.captured.append(chunk)
        else:
            # Past the capture limit: keep the head and a bounded tail, where usage is reported.
            tail = self.tail
            if tail is None:
                tail = self.tail = []
            tail.append(chunk)
            self.tail_bytes += len(chunk)
            if self.tail_bytes > _TAIL_TRIM_AT:
                kept = b"".join(tail)[-CAPTURE_TAIL_BYTES:]
                tail[:] = (kept,)
                self.tail_bytes = len(kept)

    def flush(self) -> None:
        """Write what one upstream read produced, in one go (head and body share a syscall)."""
        if self.out:
            out, self.out = self.out, []
            self.conn.writelines(out)

    def upstream_done(self) -> None:
        if self.chunked:
            self.out.append(_LAST_CHUNK)
        self.flush()
        self.t_upstream_done = time.perf_counter()
        self.upstream = None  # back in its pool already
        self.conn.flow.unfollow()
        self.conn.finish_response(self.keep_alive)
        self._finish()

    def upstream_failed(self, error: UpstreamError, *, retryable: bool) -> None:
        self._release_upstream(discard=True)
        if self.t_first_byte is None:
            # A kept-alive connection the provider had just closed, and a request that cannot
            # have been processed (nothing of it sent, or an idempotent method): it goes once
            # more, on another connection.
            if retryable and self.attempts == 1:
                self._send()
            else:
                self._upstream_error(error)
            return
        # Too late for an error response: cut the connection so the client cannot take a
        # truncated body for a whole one.
        self.flush()
        self.error_type = "upstream_timeout" if error.status == 504 else "upstream_interrupted"
        self.error_origin = "provider"
        self.t_upstream_done = time.perf_counter()
        self.conn.abort()
        self._finish()

    # -- endings -----------------------------------------------------------------------------------

    def cancel(self) -> None:
        """The client went away: stop everything, record it."""
        if self.finished:
            return
        if self.tunnel is not None:
            self.tunnel.close()  # a client closing its WebSocket is how a tunnel ends: no error
            return
        self._stop_exchange()
        delivered = self.t_first_byte is not None and ends_event_stream(self.tail or self.captured)
        if (self.status == 0 or self.error_type is None) and not delivered:
            self.error_type, self.error_origin = "client_disconnected", "client"
            self.status = self.status or 499
        self._finish()

    def shutdown_cut(self) -> None:
        """The drain ran out of time (LECTR_SHUTDOWN_TIMEOUT): stop, and record it as Lectr's doing.

        Not answered yet: a 503 with ``Connection: close``. Mid-relay: the connection is cut, so
        the client cannot take the partial body for a whole one.
        """
        if self.finished:
            return
        if self.tunnel is not None:
            self.tunnel.close()
            return
        self._stop_exchange()
        self.error_type, self.error_origin = "shutdown_timeout", "lectr"
        if self.t_first_byte is None:
            self._reply_error(R.SHUTDOWN_TIMEOUT, close=True)
            return
        self.conn.abort()
        self._finish()

    def _stop_exchange(self) -> None:
        if self.upstream is not None or self.waiter is not None:
            self.t_upstream_done = time.perf_counter()  # the provider's part ends here, for the overhead
        self._release_upstream(discard=True)
        if self.waiter is not None:
            self.waiter.cancel()

    def client_write_timeout(self) -> None:
        """The client took no bytes for the client write timeout: stop, and record it as the client's."""
        if self.finished:
            return
        self.error_type, self.error_origin = "client_write_timeout", "client"
        self.status = self.status or 499
        self.cancel()

    def _internal_error(self) -> None:
        log.exception("internal error while handling a request")
        self._release_upstream(discard=True)
        self.error_type, self.error_origin = "internal_error", "lectr"
        if self.t_first_byte is None:
            self.status = 0
            self._reply_error(R.INTERNAL_ERROR, close=True)
        else:
            self.conn.abort()
            self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._log_event()
        self.ctx.cycle_finished(self)
        self.conn.cycle_done(self)

    # -- Log -------------------------------------------------------------------------------

    def _log_event(self) -> None:
        org = self.org
        if org is None:
            return  # no org, no record: unauthenticated traffic belongs to nobody
        if self.tunnel is not None:
            self._log_tunnel_event(org)
            return
        t_end = time.perf_counter()
        upstream = (self.t_upstream_done - self.t_upstream) if self.t_upstream and self.t_upstream_done else 0.0
        # tuple.__new__ rather than RequestEvent(...): the same tuple without a Python-level __new__.
        self.ctx.ring.append(_new_tuple(RequestEvent, (
            org.id, time.time(), self.provider, self.model, self.model, self.feature, self.task,
            self.status, self.error_type, self.error_origin, self.stream,
            self.t_start, self.t_first_byte, t_end, max(0.0, (t_end - self.t_start) - upstream),
            self.provider_unknown, None, len(self.body), self.bytes_out,
            self.content_type, self.content_encoding, self.captured, self.tail,
        )))
