"""A client connection's limits while it reads, and its one moving deadline.

Subordinate to ``protocol.py`` (read that first): ``ProxyProtocol`` inherits these methods and
keeps their state in its slots. Sizes: a header section past ``max_header_bytes`` (also when
its lines never end) is 431; a chunked body whose declared chunk size would pass the body limit
is 413 before the chunk arrives. Deadlines, one moving timer per connection: a request must
arrive whole (head and body) within the header timeout, counted from the connection's opening
for its first request and from the first byte of each later one, else 408 (a connection that
sent nothing is closed without an answer); between requests an idle keep-alive connection is
closed after the idle timeout; a client that stops taking a response is cut after the client
write timeout (``flow.py`` runs that clock; ``_on_write_timeout`` acts on it).
"""

from __future__ import annotations

from lectr.proxy import responses as R
from lectr.proxy.framing import chunk_size
from lectr.proxy.handler import RequestCycle

# Connection phases, for the one deadline each connection carries.
IDLE, READING, BUSY = 0, 1, 2
# Bytes of framing (request line, CRLFs, colons) beyond what the header limit counts.
_STALL_SLACK = 1024


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing and answer with an error (caught in protocol.py)."""

    def __init__(self, response: tuple, detail: object = None, *, status: int | None = None) -> None:
        super().__init__(response[1])
        self.response = response
        self.detail = detail


class ConnectionLimits:
    """``ProxyProtocol``'s size limits and deadlines (a mixin: the state lives in its slots)."""

    __slots__ = ()

    def _watch_chunk_size(self, data: bytes) -> None:
        # httptools does not tell a chunk's declared size, and waits for all of it: a size of
        # 2^64-1 would hold the request open until the header timeout. When a chunk began in
        # this read and is still open, its size line ends just before the chunk's bytes at the
        # end of this read; its value is checked against what the body limit leaves.
        if self._chunk_open and self._new_chunk:
            lf = len(data) - (self._body_bytes - self._chunk_at) - 1
            if lf >= 0 and data[lf] == 10:  # b"\n"; else the chunk's data is complete already
                start = data.rfind(b"\n", 0, lf) + 1
                line = data[start:lf] if start else self._tail + data[:lf]
                if chunk_size(line) > self.limits.max_body_bytes - self._chunk_at:
                    raise _Reject(R.BODY_TOO_LARGE, self.limits.max_body_bytes)
        # A size line can arrive over several reads: keep the part after the last line break.
        if self._chunk_open:
            self._tail = b""
        else:
            lf = data.rfind(b"\n")
            self._tail = data[lf + 1:] if lf >= 0 else self._tail + data

    def _on_write_timeout(self) -> None:
        # The client has taken nothing for the client write timeout: its fault, recorded so.
        if self.peer_gone:
            return
        self.closing = True
        self.cycles.clear()
        active = self.active
        if isinstance(active, RequestCycle):
            active.client_write_timeout()
        self.abort()

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

    def _set_deadline(self, phase: int, when: float) -> None:
        # One deadline per connection that moves; the timer re-arms itself when it fires early,
        # so a busy keep-alive connection does not create a timer per request. A deadline
        # earlier than the armed timer (only possible when settings make it so) re-arms it.
        self.phase = phase
        self.deadline = when
        timer = self.timer
        if timer is None or when < self.timer_at:
            if timer is not None:
                timer.cancel()
            self._arm(when)

    def _arm(self, when: float) -> None:
        when = min(when, self.loop.time() + self._shortest)
        self.timer_at = when
        self.timer = self.loop.call_at(when, self._on_deadline)

    def _on_deadline(self) -> None:
        self.timer = None
        if self.peer_gone or self.closing or self.phase == BUSY:
            return
        if self.phase == READING and self.flow.read_paused:
            return  # Lectr stopped reading (pipelined requests queued): cycle_done restarts the clock
        if self.loop.time() < self.deadline:
            self._arm(self.deadline)
        elif self.phase == READING:
            self._fail(R.REQUEST_TIMEOUT, None)
        else:
            self.transport.close()
