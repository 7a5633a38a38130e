"""Upstream HTTP/1.1: one keep-alive connection to a provider, on a raw uvloop protocol.

The third file of the hot path, after ``protocol.py`` (the client's connection) and
``handler.py`` (the request cycle); the pools these connections live in are ``pool.py``.
Why not aiohttp's client: measured on this path it was about half of Lectr's CPU per request
(header dictionaries, str/bytes round trips, a task per read). Here a request goes out as one
prebuilt byte string, the response is parsed by httptools, and its head and body are pushed
to the waiting ``Exchange`` from the parser's callbacks, so relaying a chunk costs no task
switch and no queue. Read timeouts, stale keep-alive connections and safe retries are handled
here (TLS and pool limits in ``pool.py``); nothing decompresses, nothing adds a header.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

import httptools

from lectr.proxy.headers import ResponseHead, parse_response_head

if TYPE_CHECKING:
    from lectr.providers.base import Origin
    from lectr.proxy.busypoll import BusyPoller

log = logging.getLogger(__name__)


class UpstreamError(Exception):
    """The provider could not be reached (502) or did not answer in time (504)."""

    def __init__(self, status: int, reason: str, *, sent: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.sent = sent  # the request may have reached the provider, which then failed it


class _Unrequested(Exception):
    """The provider sent a response nobody asked for: the connection cannot be trusted."""


class Exchange(Protocol):
    """The receiving end of one upstream response (the request cycle)."""

    def upstream_head(self, status: int, head: ResponseHead) -> None: ...
    def upstream_body(self, chunk: bytes) -> None: ...
    def upstream_done(self) -> None: ...
    def upstream_failed(self, error: UpstreamError, *, retryable: bool) -> None: ...
    def upstream_switched(self, head: bytes, rest: bytes, transport: asyncio.Transport) -> None: ...
    def flush(self) -> None: ...


class OwningPool(Protocol):
    """What a connection needs from the pool it belongs to (``pool.OriginPool``)."""

    origin: Origin
    loop: asyncio.AbstractEventLoop
    poller: BusyPoller
    read_timeout: float

    def release(self, conn: UpstreamConnection) -> None: ...
    def forget(self, conn: UpstreamConnection) -> None: ...
    def detach(self, conn: UpstreamConnection) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an origin, carrying one exchange at a time."""

    __slots__ = ("pool", "loop", "poller", "transport", "parser", "exchange", "alive", "retired", "reused", "received",
                 "idle_since", "head_only", "idempotent", "upgrade", "written", "paused", "_head", "_in_head", "_framed",
                 "deadline", "timer")

    def __init__(self, pool: OwningPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.poller = pool.poller
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.alive = False
        self.retired = False
        self.reused = False
        self.received = 0
        self.idle_since = 0.0
        self.head_only = False
        self.idempotent = False  # the exchange's method may be sent twice (RFC 9110 §9.2.2)
        self.upgrade = False  # the exchange asked to switch to WebSocket: a 101 ends HTTP here
        self.written = False  # some of the exchange's request may have reached the provider
        self.paused = False  # not read for back-pressure: the read deadline does not run
        self._head: list[bytes] = []  # the reads holding the response head, while it is incomplete
        self._in_head = False
        self._framed = True  # the response has a Content-Length or is chunked
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.alive = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.exchange is not None:
            if not self._in_head and self.received and not self._framed:
                self._finish()  # a body delimited by the close: complete, and not reusable
            else:
                self._fail(self._closed_error(), retryable=self.received == 0)
        else:
            self.pool.forget(self)  # closed while idle in the pool

    def data_received(self, data: bytes) -> None:
        self.poller.kick()
        if self._in_head:
            self._head.append(data)
        self.received += len(data)
        self.deadline = self.loop.time() + self.pool.read_timeout
        exchange = self.exchange
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Unrequested):
                log.warning("%s sent a response with no request outstanding; dropping the connection",
                            self.pool.origin.key)
            else:
                log.error("relaying a response failed", exc_info=exc.__context__ or exc)  # our bug, not theirs
            self._fail(UpstreamError(502, "Lectr failed relaying the response"), retryable=False)
            self.transport.abort()
        except (httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
            if self.retired and self.exchange is None and self.upgrade:
                return  # switched to a tunnel in on_headers_complete: the parser is done with it
            if isinstance(exc, httptools.HttpParserUpgrade):
                # 101 Switching Protocols to a request that did not ask for it: relayed to no one.
                self._fail(UpstreamError(502, "the provider switched protocols"), retryable=False)
            else:
                self._fail(UpstreamError(502, f"malformed response from the provider ({exc})"), retryable=False)
            self.transport.abort()
        if exchange is not None:
            exchange.flush()  # what this read produced goes to the client in one write

    # -- sending -----------------------------------------------------------------------------

    def start(self, exchange: Exchange, request: bytes, head_only: bool, idempotent: bool = False,
              upgrade: bool = False) -> None:
        """Send ``request`` (complete bytes) and deliver its response to ``exchange``.

        If the connection fails before any response byte, ``exchange.upstream_failed`` says
        whether sending the request again is safe: only when none of it can have reached the
        provider, or its method is idempotent (RFC 9110 §9.2.2). With ``upgrade``, a 101 answer
        hands the connection to ``exchange.upstream_switched`` and it leaves the pool for good.
        """
        if not self.alive or self.transport.is_closing():  # closed before a byte was sent
            self.alive = False
            exchange.upstream_failed(UpstreamError(502, "the provider closed the connection"), retryable=True)
            return
        self.exchange = exchange
        self.head_only = head_only
        self.idempotent = idempotent
        self.upgrade = upgrade
        self.written = False
        self.received = 0
        self._head = []
        self._in_head = True
        self.deadline = self.loop.time() + self.pool.read_timeout
        if self.timer is None:
            self.timer = self.loop.call_at(self.deadline, self._on_deadline)
        self.transport.write(request)
        # A write that fails at once (the provider reset the connection while it sat idle)
        # closes the transport before returning, with nothing handed to the kernel. Otherwise
        # the provider may have read the request, whatever happens next.
        self.written = not self.transport.is_closing()

    def pause_reading(self) -> None:
        """Stop reading for back-pressure; the read deadline stops with it (the wait is not the provider's)."""
        if self.alive:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read again, with the whole read timeout ahead from now."""
        if self.alive:
            self.paused = False
            self.deadline = self.loop.time() + self.pool.read_timeout
            if self.timer is None and self.exchange is not None:
                self.timer = self.loop.call_at(self.deadline, self._on_deadline)
            self.transport.resume_reading()

    # -- httptools callbacks ---------------------------------------------------------------------

    # No on_status or on_header: the head is read whole from its bytes when it is complete,
    # rather than with a Python call per field (a provider's response carries twenty or so).

    def on_message_begin(self) -> None:
        if self.exchange is None:
            # Bytes after the end of the last response (or on an idle connection): relaying
            # them to the next request would let the provider forge that request's response.
            raise _Unrequested()

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        raw = self._head[0] if len(self._head) == 1 else b"".join(self._head)
        end = raw.index(b"\r\n\r\n")  # the parser insists on CRLF, so a complete head has one
        if status == 101 and self.upgrade:
            self._switch(raw[:end + 4], raw[end + 4:])
            return
        if 100 <= status < 200:
            # An interim response (103 Early Hints): dropped; the real head follows it.
            self._head = [raw[end + 4:]]
            return
        self._in_head = False
        self._head = []
        head = parse_response_head(raw[:end + 2])
        self._framed = head.has_length or head.chunked
        self.exchange.upstream_head(status, head)
        if self.head_only:
            # HEAD: httptools cannot be told there is no body, so finish here and retire the
            # connection instead of risking a parser waiting for bytes that never come.
            self.alive = False
            self._finish()
            self.transport.close()

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.upstream_body(body)

    def _switch(self, head: bytes, rest: bytes) -> None:
        # The provider accepted the upgrade: from here on the connection carries WebSocket
        # frames, not HTTP. It leaves the pool (never to be reused) and its transport goes to
        # the exchange, which relays the head unchanged and tunnels what follows.
        exchange, self.exchange = self.exchange, None
        self._in_head = False
        self._head = []
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.pool.detach(self)
        exchange.upstream_switched(head, rest, self.transport)

    def on_message_complete(self) -> None:
        if self._in_head or self.exchange is None:
            return  # the end of an interim response, or of a HEAD already finished
        if not self.parser.should_keep_alive():
            self.alive = False
        self._finish()

    # -- ending ------------------------------------------------------------------------------------

    def _finish(self) -> None:
        exchange, self.exchange = self.exchange, None
        self.pool.release(self)
        exchange.upstream_done()

    def _closed_error(self) -> UpstreamError:
        if self.received == 0 and self.written and not self.idempotent:
            return UpstreamError(502, "the provider closed the connection after the request was sent; "
                                      "it was not sent again because the provider may have processed it",
                                 sent=True)
        return UpstreamError(502, "the provider closed the connection")

    def _fail(self, error: UpstreamError, *, retryable: bool) -> None:
        exchange, self.exchange = self.exchange, None
        self.alive = False
        if exchange is not None:
            # A second try only on a kept-alive connection (the provider closing it while idle
            # is the usual cause), and only when the first cannot have been processed.
            retryable = retryable and self.reused and (not self.written or self.idempotent)
            exchange.upstream_failed(error, retryable=retryable)

    def abandon(self) -> None:
        """The client went away mid-exchange: drop the connection, it cannot be reused."""
        self.exchange = None
        self.alive = False
        if self.transport is not None:
            self.transport.abort()

    def _on_deadline(self) -> None:
        self.timer = None
        if self.exchange is None or not self.alive or self.paused:
            return  # paused: resume_reading sets a new deadline and timer
        now = self.loop.time()
        if now < self.deadline:
            self.timer = self.loop.call_at(self.deadline, self._on_deadline)
            return
        self._fail(UpstreamError(504, f"no data for {self.pool.read_timeout:.0f} s"), retryable=False)
        self.transport.abort()
