"""One client connection: the socket, the HTTP/1.1 parser, keep-alive, pipelining and limits.

Parser callbacks only record what they are given and hand finished requests to a
``RequestCycle``; they never await or do I/O. Requests pipelined on one connection are
answered strictly in order, one cycle at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Callable

import httptools

from lectr.proxy import responses as R
from lectr.proxy.flow import FlowControl
from lectr.proxy.handler import FixedResponse, RequestCycle
from lectr.proxy.headers import ClientHeaders

if TYPE_CHECKING:
    from lectr.proxy.server import ProxyContext

log = logging.getLogger(__name__)

# Connection phases, for the one deadline each connection carries.
IDLE, READING, BUSY = 0, 1, 2
# Past this many unanswered pipelined requests, stop reading from the client.
MAX_PIPELINE = 16
# Bytes of framing (request line, CRLFs, colons) beyond what the header limit counts.
_STALL_SLACK = 1024


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing and answer with an error."""

    def __init__(self, response: tuple, detail: object = None, *, status: int | None = None) -> None:
        super().__init__(response[1])
        self.response = response
        self.detail = detail


class ProxyProtocol(asyncio.Protocol):
    """The proxy's side of one client TCP connection."""

    __slots__ = (
        # global
        "ctx", "loop", "limits", "poller", "max_header_bytes",
        # per connection
        "transport", "flow", "parser", "cycles", "active", "closing", "phase", "deadline",
        "timer", "peer_gone", "tunnel", "held",
        # per request, while it is being parsed
        "_url", "_headers", "_head", "_header_bytes", "_progress", "_stalled", "_body", "_body_bytes",
    )

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.limits = ctx.limits
        self.poller = ctx.poller
        self.max_header_bytes = ctx.limits.max_header_bytes

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
        self.tunnel: Callable[[bytes], None] | None = None  # after upgrade_to_tunnel
        self.held: bytearray | None = None  # bytes after a WebSocket upgrade request, unparsed

        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head: ClientHeaders | None = None
        self._header_bytes = 0
        self._progress = False  # the parser handed something over during the current read
        self._stalled = 0  # bytes read since it last did
        self._body: list[bytes] = []
        self._body_bytes = 0

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.flow = FlowControl(transport)
        self.ctx.connections.add(self)
        self._set_deadline(IDLE, self.limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.peer_gone = True
        self.closing = True
        self.ctx.connections.discard(self)
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
        self._progress = False
        try:
            self.parser.feed_data(data)
            if self._progress:
                self._stalled = 0
            else:
                self._count_stalled(len(data))
        except httptools.HttpParserUpgrade as exc:
            if self.held is not None:  # a WebSocket upgrade, handed to its cycle
                self.held += data[exc.args[0]:]
            else:
                self._fail(R.BAD_REQUEST, "protocol upgrades are not supported")
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._fail(cause.response, cause.detail)
            else:
                # An exception in our own callback is our bug, not the client's.
                log.error("parser callback failed", exc_info=cause or exc)
                self._fail(R.INTERNAL_ERROR, None)
        except httptools.HttpParserError as exc:
            self._fail(R.BAD_REQUEST, _parser_reason(exc))
        except _Reject as exc:
            self._fail(exc.response, exc.detail)

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._progress = True
        self._body = []
        self._body_bytes = 0
        if self.phase == IDLE:
            self._set_deadline(READING, self.limits.header_timeout)

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
        if headers.content_length is not None:
            limit = self.limits.max_body_bytes
            if int(headers.content_length) > limit:  # httptools has already validated it
                raise _Reject(R.BODY_TOO_LARGE, limit)
        if headers.expect is not None and headers.expects_continue() and self.parser.get_http_version() == "1.1":
            # The client waits for our go-ahead before sending the body.
            self.transport.write(R.CONTINUE_100)

    def on_body(self, body: bytes) -> None:
        self._progress = True
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            raise _Reject(R.BODY_TOO_LARGE, self.limits.max_body_bytes)
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._progress = True
        parser = self.parser
        if parser.should_upgrade() and parser.get_method() == b"GET" and _asks_for_websocket(self._headers):
            # Hold what follows until the cycle has answered: after a 101 it is tunnel bytes.
            self.held = bytearray()
            self.flow.pause_reading()
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        cycle = RequestCycle(
            self.ctx, self, parser.get_method(), self._url, self._head, body,
            keep_alive=parser.should_keep_alive() and not self.ctx.draining,
            http11=parser.get_http_version() == "1.1",
        )
        self._body = []
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
        if (self.tunnel is not None or self.held is not None) and not self.cycles:
            # A tunnel's end is the connection's end; so is a declined upgrade's, since the
            # parser stopped at the upgrade request.
            self.tunnel = self.held = None
            self.closing = True
        if self.closing:
            if not self.cycles:
                self.transport.close()
                return
        if self.cycles:
            self._run_next()
            return
        self.flow.resume_reading()
        self._set_deadline(IDLE, self.limits.idle_timeout)

    def _fail(self, response: tuple, detail: object) -> None:
        """Answer a request that cannot be parsed or accepted, after those before it; then close."""
        status, message, type_, code = response
        if "{}" in message:
            message = message.format(detail)
        self.closing = True
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

    # Upgrade seam (a minimal stand-in for the one the protocol branch adds, same names).
    def upgrade_to_tunnel(self, on_data: Callable[[bytes], None]) -> None:
        """Make this connection a raw byte tunnel, once the active cycle has written a 101.

        Bytes the client sent after the request's head go to ``on_data`` at once, and every
        later read goes to it unparsed. The client going away cancels the cycle; the cycle
        finishing closes the connection. Raises RuntimeError when no upgrade request waits.
        """
        held = self.held
        if held is None or self.active is None:
            raise RuntimeError("no upgrade request is waiting on this connection")
        self.held = None
        self.tunnel = on_data
        self.flow.resume_reading()
        if held:
            on_data(bytes(held))

    @property
    def upgrade_requested(self) -> bool:
        """True while the active cycle's request asked to upgrade to WebSocket and awaits a decision."""
        return self.held is not None

    def shutdown(self) -> None:
        """Planned stop: close now if idle, otherwise after the response in progress."""
        self.closing = True
        if self.active is None and not self.cycles and self.transport is not None:
            self.transport.close()

    # -- limits and deadlines ------------------------------------------------------------------

    def _count_stalled(self, n: int) -> None:
        # httptools hands a header (or trailer) over only once its line ends, and keeps it until
        # then: without this, a field that never ends would grow in memory as long as bytes
        # come. Reads that complete nothing are counted; past the header limit (with room for
        # the line breaks it does not count) the request is refused.
        self._stalled += n
        if self._stalled > self.max_header_bytes + _STALL_SLACK:
            raise _Reject(R.HEADERS_TOO_LARGE, self.max_header_bytes)

    def _count_header_bytes(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.max_header_bytes:
            raise _Reject(R.HEADERS_TOO_LARGE, self.max_header_bytes)

    def _set_deadline(self, phase: int, seconds: float) -> None:
        # One deadline per connection that moves; the timer re-arms itself when it fires early,
        # so a busy keep-alive connection does not create a timer per request.
        self.phase = phase
        self.deadline = self.loop.time() + seconds
        if self.timer is None:
            self.timer = self.loop.call_at(self.deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        self.timer = None
        if self.peer_gone or self.phase == BUSY:
            return
        now = self.loop.time()
        if now < self.deadline:
            self.timer = self.loop.call_at(self.deadline, self._on_deadline)
        elif self.phase == READING:
            self._fail(R.REQUEST_TIMEOUT, None)
        else:
            self.transport.close()


def _asks_for_websocket(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() == b"upgrade" and b"websocket" in value.lower() for name, value in headers)


def _parser_reason(exc: httptools.HttpParserError) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]
