"""A small HTTP/1.1 load generator: keep-alive connections, one request in flight on each.

Written on a raw uvloop protocol with pre-built request bytes and httptools response
parsing, so that it is far faster than what it measures (the report shows its direct rate).
Every run is bounded both in requests and in seconds.

For streams it can also note when each piece of the body arrives: one ``perf_counter()`` per
socket read that carries body bytes, so the gaps between a stream's chunks cost next to nothing
to measure.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import httptools

STUCK_GRACE = 15.0  # seconds past a run's deadline before unanswered requests count as errors


@dataclass
class RunResult:
    """What one run measured; times are in seconds.

    ``latencies`` and ``ttfb`` (time to the first body byte) hold one value per completed
    request; ``gaps`` holds the time between consecutive body arrivals within a response
    (only when chunk tracking was asked for).
    """

    latencies: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    sent: int = 0
    errors: int = 0  # connections lost, refused or stuck past the deadline
    statuses: dict[int, int] = field(default_factory=dict)
    wall: float = 0.0
    client_cpu: float = 0.0  # CPU seconds the load generator itself used

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall if self.wall else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)


class _Client(asyncio.Protocol):
    """One keep-alive connection; ``send`` writes a request and waits for its whole response."""

    def __init__(self, track_chunks: bool = False) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future | None = None
        self.first_body: float | None = None
        self.track_chunks = track_chunks
        self.arrivals: list[float] = []  # one time per socket read with body bytes (when tracking)
        self._read_at = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.track_chunks:
            self._read_at = time.perf_counter()
        self.parser.feed_data(data)

    def connection_lost(self, exc) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("connection lost"))

    def on_body(self, body: bytes) -> None:
        if self.track_chunks:
            if not self.arrivals or self.arrivals[-1] != self._read_at:
                self.arrivals.append(self._read_at)
            if self.first_body is None:
                self.first_body = self._read_at
        elif self.first_body is None:
            self.first_body = time.perf_counter()

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(self.parser.get_status_code())

    async def send(self, payload: bytes) -> tuple[int, float | None]:
        self.done = asyncio.get_running_loop().create_future()
        self.first_body = None
        self.arrivals = []
        self.transport.write(payload)
        status = await self.done
        return status, self.first_body

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_connections(host: str, port: int, count: int, *, deadline: float,
                           track_chunks: bool = False) -> list[_Client]:
    """Open up to ``count`` connections one after the other, stopping at ``deadline`` (perf_counter)."""
    loop = asyncio.get_running_loop()
    clients = []
    while len(clients) < count and time.perf_counter() < deadline:
        timeout = max(0.1, deadline - time.perf_counter())
        _, client = await asyncio.wait_for(loop.create_connection(lambda: _Client(track_chunks), host, port),
                                           timeout)
        clients.append(client)
    return clients


def _record(result: RunResult, client: _Client, started: float, status: int, first: float | None) -> None:
    result.latencies.append(time.perf_counter() - started)
    if first is not None:
        result.ttfb.append(first - started)
    if client.track_chunks:
        arrivals = client.arrivals
        result.gaps.extend(b - a for a, b in itertools.pairwise(arrivals))
    result.statuses[status] = result.statuses.get(status, 0) + 1


async def _send_one(result: RunResult, client: _Client, payload: bytes) -> bool:
    """One timed request on ``client``, recorded in ``result``; False when the connection failed."""
    result.sent += 1
    started = time.perf_counter()
    try:
        status, first = await client.send(payload)
    except ConnectionError:
        result.errors += 1
        return False
    _record(result, client, started, status, first)
    return True


async def _timed(result: RunResult, workers, deadline: float) -> RunResult:
    """Run ``workers``; any request still unanswered ``STUCK_GRACE`` seconds past ``deadline`` is an error."""
    cpu_started, started = time.process_time(), time.perf_counter()
    gathered = asyncio.gather(*workers)
    gathered.add_done_callback(lambda f: f.cancelled() or f.exception())  # no "never retrieved" on Ctrl-C
    try:
        await asyncio.wait_for(gathered, deadline - started + STUCK_GRACE)
    except TimeoutError:
        result.errors += result.sent - len(result.latencies) - result.errors
    result.wall = time.perf_counter() - started
    result.client_cpu = time.process_time() - cpu_started
    return result


async def drive(clients: list[_Client], payload: bytes, *, requests: int, deadline: float) -> RunResult:
    """Send ``payload`` over ``clients``, one request in flight per connection, until ``requests``
    have been sent or ``deadline`` (a ``perf_counter`` time) has passed."""
    result = RunResult()
    remaining = requests

    async def worker(client: _Client) -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            if not await _send_one(result, client, payload):
                return

    return await _timed(result, [worker(c) for c in clients], deadline)


async def request_each(clients: list[_Client], payload: bytes, *, concurrency: int, deadline: float) -> RunResult:
    """Send exactly one request on every connection, ``concurrency`` at a time, until ``deadline``."""
    result = RunResult()
    pending = list(reversed(clients))

    async def worker() -> None:
        while pending and time.perf_counter() < deadline:
            await _send_one(result, pending.pop(), payload)

    return await _timed(result, [worker() for _ in range(min(concurrency, len(clients)))], deadline)


async def run_load(host: str, port: int, payload: bytes, *, concurrency: int, requests: int,
                   max_seconds: float, track_chunks: bool = False) -> RunResult:
    """Send ``requests`` copies of ``payload`` over ``concurrency`` connections, or stop at ``max_seconds``."""
    deadline = time.perf_counter() + max_seconds
    clients = await open_connections(host, port, concurrency, deadline=deadline, track_chunks=track_chunks)
    try:
        return await drive(clients, payload, requests=requests, deadline=deadline)
    finally:
        for client in clients:
            client.close()


def post_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The bytes of one keep-alive POST with a JSON body."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
