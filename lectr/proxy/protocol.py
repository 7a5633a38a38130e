"""One client connection: the socket, the HTTP/1.1 parser, keep-alive, pipelining and limits.

The hot path in three files, read in this order: this one (a client connection), then
``handler.py`` (one request cycle: decide, forward, relay, record), then ``upstream.py`` (a
connection to the provider). Each leans on a few helpers that do one thing: here
``connection_limits.py`` (size limits and the connection's deadline) and ``upgrades.py``
(upgrade requests).

Parser callbacks only record what they are given and hand finished requests to a
``RequestCycle``; they never await or do I/O. Requests pipelined on one connection are
answered strictly in order, one cycle at a time.

Deadlines (``connection_limits.py``), one moving timer per connection: a request must arrive
whole within the header timeout (else 408), an idle keep-alive connection is closed after the
idle timeout, a client that stops taking a response is cut after the client write timeout.

Upgrade requests (h2c ignored, WebSocket handed to its cycle with a tunnel seam, CONNECT
refused) are decided in ``upgrades.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Callable

import httptools

from lectr.proxy import responses as R
from lectr.proxy.connection_limits import BUSY, IDLE, READING, ConnectionLimits, _Reject
from lectr.proxy.flow import FlowControl
from lectr.proxy.framing import header_name, later_minor_as_http11, parser_reason
from lectr.proxy.handler import RequestCycle
from lectr.proxy.headers import ClientHeaders
from lectr.proxy.own_answers import FixedResponse
from lectr.proxy.upgrades import UpgradeSupport

if TYPE_CHECKING:
    from lectr.proxy.context import ProxyContext

log = logging.getLogger(__name__)

# Past this many unanswered pipelined requests, stop reading from the client.
MAX_PIPELINE = 16


class ProxyProtocol(ConnectionLimits, UpgradeSupport, asyncio.Protocol):
    """The proxy's side of one client TCP connection."""

    __slots__ = (
        # global
        "ctx", "loop", "limits", "poller", "max_header_bytes", "_shortest",
        # per connection
        "transport", "flow", "parser", "cycles", "active", "closing", "phase", "deadline",
        "timer", "timer_at", "peer_gone", "fresh", "tunnel", "held", "upgrading",
        # per request, while it is being parsed
        "_url", "_headers", "_head", "_header_bytes", "_progress", "_stalled", "_body", "_body_bytes",
        "in_message", "read_since", "_http11", "_upgrade", "_chunk_open", "_chunk_at", "_new_chunk", "_tail",
    )

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.limits = ctx.limits
        self.poller = ctx.poller
        self.max_header_bytes = ctx.limits.max_header_bytes
        # The timer never sleeps past the shortest deadline a request could be given, so a
        # deadline moved earlier (a request starting on an idle connection) needs no new timer.
        self._shortest = min(ctx.limits.header_timeout, ctx.limits.idle_timeout)

        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.cycles: deque[RequestCycle | FixedResponse] = deque()
        self.active: RequestCycle | FixedResponse | None = None
        self.closing = False
        self.peer_gone = False
        self.phase = IDLE
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.fresh = True  # no request has begun on this connection yet
        self.tunnel: Callable[[bytes], None] | None = None  # after upgrade_to_tunnel
        self.held: bytearray | None = None  # bytes after a WebSocket upgrade request, unparsed
        self.upgrading: RequestCycle | None = None  # the cycle of that request

        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head: ClientHeaders | None = None
        self._header_bytes = 0
        self._progress = False  # the parser handed something over during the current read
        self._stalled = 0  # bytes read since it last did
        self._body: list[bytes] = []
        self._body_bytes = 0
        self.in_message = False  # between a request's first byte and its last
        self.read_since = 0.0  # when the current request's clock started
        self._http11 = True
        self._upgrade: tuple | None = None  # the head of a request that asked to upgrade
        self._chunk_open = False  # inside a chunk's data (chunked request bodies only)
        self._chunk_at = 0  # body bytes before the open chunk
        self._new_chunk = False  # a chunk began during the current read
        self._tail = b""  # the current line's bytes from earlier reads (chunked bodies only)

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.flow = FlowControl(transport, self.loop, self.limits.client_write_timeout, self._on_write_timeout)
        self.ctx.connections.add(self)
        # The first request's clock starts now: a connection opened to send nothing, or to send
        # a byte at a time, holds its slot for the header timeout at most.
        self.read_since = self.loop.time()
        self._set_deadline(IDLE, self.read_since + self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.peer_gone = True
        self.closing = True
        self.ctx.connection_closed(self)
        self.cycles.clear()
        if self.flow is not None:
            self.flow.release()
        if self.active is not None:
            # Cancelling the cycle drops its upstream connection and records the hang-up.
            self.active.cancel()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def data_received(self, data: bytes) -> None:
        self.poller.kick()
        if self.tunnel is not None:
            self.tunnel(data)
            return
        if self.closing:
            return
        if self.held is not None:  # a WebSocket upgrade awaits its cycle's decision
            self.held += data
            return
        while data:
            self._progress = False
            self._new_chunk = False
            try:
                self.parser.feed_data(data)
                if self._progress:
                    self._stalled = 0
                else:
                    self._count_stalled(len(data))
                if self._head is not None and self._head.chunked and self.in_message:
                    self._watch_chunk_size(data)
                data = b""
            except httptools.HttpParserUpgrade as exc:
                data = self._upgraded(data[exc.args[0]:])
            except httptools.HttpParserCallbackError as exc:
                cause = exc.__context__
                if isinstance(cause, _Reject):
                    self._fail(cause.response, cause.detail)
                else:
                    # An exception in our own callback is our bug, not the client's.
                    log.error("parser callback failed", exc_info=cause or exc)
                    self._fail(R.INTERNAL_ERROR, None)
                return
            except httptools.HttpParserError as exc:
                reason = parser_reason(exc)
                if reason == "Invalid HTTP version":  # llhttp knows 0.9, 1.0, 1.1 and 2.0 only
                    data = later_minor_as_http11(data, self.parser.get_method(), self._url)
                    if data is not None:  # HTTP/1.2 and the like: read as HTTP/1.1 by a new parser
                        self.parser = httptools.HttpRequestParser(self)
                        self.fresh = True  # the request keeps the clock it started
                        continue
                    self._fail(R.VERSION_NOT_SUPPORTED, "unknown version")
                elif reason == "Pause on PRI/Upgrade":  # HTTP/2 with prior knowledge
                    self._fail(R.VERSION_NOT_SUPPORTED, "HTTP/2")
                else:
                    self._fail(R.BAD_REQUEST, reason)
                return
            except _Reject as exc:
                self._fail(exc.response, exc.detail)
                return

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head = None
        self._header_bytes = 0
        self._progress = True
        self._body = []
        self._body_bytes = 0
        self._tail = b""
        self._chunk_open = False
        self.in_message = True
        if self.fresh:
            self.fresh = False  # the first request's clock started with the connection
        else:
            self.read_since = self.loop.time()
        when = self.read_since + self.limits.header_timeout
        if self.timer is not None and when >= self.timer_at:
            # _set_deadline's usual case, inline (it runs per request): the armed timer fires
            # first and re-arms itself for the moved deadline.
            self.phase = READING
            self.deadline = when
        else:
            self._set_deadline(READING, when)

    def on_url(self, url: bytes) -> None:
        self._progress = True
        self._url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        # Counted here rather than in a helper: this runs for every header of every request.
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.max_header_bytes:
            raise _Reject(R.HEADERS_TOO_LARGE, self.max_header_bytes)
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._progress = True
        self._head = headers = ClientHeaders(self._headers)
        version = self.parser.get_http_version()
        self._http11 = version == "1.1"
        if version[0] != "1":
            raise _Reject(R.VERSION_NOT_SUPPORTED, "HTTP/" + version)
        if headers.hosts != 1 and (headers.hosts or version == "1.1"):
            # RFC 9112 §3.2: exactly one Host in HTTP/1.1; never two, whatever the version.
            raise _Reject(R.BAD_HOST, "no Host header" if not headers.hosts else "more than one Host header")
        if headers.repeated is not None:
            raise _Reject(R.REPEATED_LECTR_HEADER, header_name(headers.repeated))
        if headers.content_length is not None:
            limit = self.limits.max_body_bytes
            if int(headers.content_length) > limit:  # httptools has already validated it
                raise _Reject(R.BODY_TOO_LARGE, limit)
        if headers.expect is not None and headers.expects_continue() and version == "1.1" \
                and not self.parser.should_upgrade():  # an upgrade is decided (and parsed) later
            # The client waits for our go-ahead before sending the body.
            self.transport.write(R.CONTINUE_100)

    def on_chunk_header(self) -> None:
        self._chunk_open = True
        self._new_chunk = True
        self._chunk_at = self._body_bytes

    def on_chunk_complete(self) -> None:
        self._chunk_open = False

    def on_body(self, body: bytes) -> None:
        self._progress = True
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            raise _Reject(R.BODY_TOO_LARGE, self.limits.max_body_bytes)
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._progress = True
        self.in_message = False
        self.phase = BUSY
        parser = self.parser
        if parser.should_upgrade():
            # httptools stops at the head of an upgrade request and skips its body; what to do
            # with it is decided in ``_upgraded``, where the bytes after the head are known.
            self._upgrade = (parser.get_method(), self._url, parser.get_http_version(), self._headers,
                             self._head, parser.should_keep_alive())
            return
        if self.closing and self.ctx.draining:
            return  # pipelined behind the last request a draining connection answers: not forwarded
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        cycle = RequestCycle(
            self.ctx, self, parser.get_method(), self._url, self._head, body,
            parser.should_keep_alive() and not self.ctx.draining,  # keep_alive
            self._http11,
        )
        self._body = []
        if self.ctx.draining:
            self.closing = True  # answered with Connection: close; nothing after it is read
        self._enqueue(cycle)

    # -- requests in order -----------------------------------------------------------------

    def _enqueue(self, cycle: RequestCycle | FixedResponse) -> None:
        if self.active is None and not self.cycles:
            self.phase = BUSY
            self.active = cycle
            cycle.start()
            return
        self.cycles.append(cycle)
        if len(self.cycles) > MAX_PIPELINE:
            self.flow.pause_reading()
        if self.active is None:
            self._run_next()

    def _run_next(self) -> None:
        cycle = self.cycles.popleft()
        self.phase = BUSY
        self.active = cycle
        cycle.start()

    def cycle_done(self, cycle: RequestCycle | FixedResponse) -> None:
        """Called by the cycle when its response is complete (or abandoned)."""
        if cycle is not self.active:
            return
        self.active = None
        if self.peer_gone:
            return
        if self.tunnel is not None:  # a tunnel's end is the connection's end
            self.tunnel = None
            self.closing = True
            self.transport.close()
            return
        if self.closing:
            if not self.cycles:
                self.transport.close()
                return
        if self.cycles:
            self._run_next()
            return
        now = self.loop.time()
        if self.flow.read_paused and self.in_message:
            self.read_since = now  # its clock stood still while Lectr was not reading
        if self.held is not None:
            # The upgrade was declined (no 101): what followed the request is the next request.
            self.loop.call_soon(self._parse_held)
        else:
            self.flow.resume_reading()
        if self.in_message:
            self._set_deadline(READING, self.read_since + self.limits.header_timeout)
        else:
            when = now + self.limits.idle_timeout
            if self.timer is not None and when >= self.timer_at:  # as in on_message_begin
                self.phase = IDLE
                self.deadline = when
            else:
                self._set_deadline(IDLE, when)

    def _fail(self, response: tuple, detail: object) -> None:
        """Answer a request that cannot be parsed or accepted, after those before it; then close."""
        status, message, type_, code = response
        if "{}" in message:
            message = message.format(detail)
        self.closing = True
        self.in_message = False
        self.phase = BUSY
        self.flow.pause_reading()
        self._enqueue(FixedResponse(self, R.error_response(status, message, type_, code, close=True)))

    # -- writing, for the cycles -------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.peer_gone:
            self.transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        if not self.peer_gone:
            self.transport.writelines(parts)

    def finish_response(self, keep_alive: bool) -> None:
        """Called by a cycle once its response is fully written."""
        if not keep_alive:
            self.closing = True

    def abort(self) -> None:
        """Drop the connection: the response cannot be completed and must not look complete."""
        self.closing = True
        if self.transport is not None and not self.peer_gone:
            self.transport.abort()

    def shutdown(self) -> None:
        """Planned stop: close now if idle, otherwise after the response in progress; a request
        still arriving is read whole and answered with ``Connection: close`` first."""
        if self.active is None and not self.cycles:
            if self.in_message:
                return  # its last byte makes it a request in flight (see on_message_complete)
            self.closing = True
            if self.transport is not None:
                self.transport.close()
            return
        self.closing = True
