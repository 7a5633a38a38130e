"""A small HTTP/1.1 load generator: keep-alive connections, one request in flight on each.

Written on a raw uvloop protocol with pre-built request bytes and httptools response
parsing, so that it is far faster than what it measures (the report shows its direct rate).
Every run is bounded both in requests and in seconds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httptools


@dataclass
class RunResult:
    """Latencies (seconds) of the completed requests of one run, and its wall time."""

    latencies: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    wall: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall if self.wall else 0.0


class _Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future | None = None
        self.first_body: float | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("connection lost"))

    def on_body(self, body: bytes) -> None:
        if self.first_body is None:
            self.first_body = time.perf_counter()

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(self.parser.get_status_code())

    async def send(self, payload: bytes) -> tuple[int, float | None]:
        self.done = asyncio.get_running_loop().create_future()
        self.first_body = None
        self.transport.write(payload)
        status = await self.done
        return status, self.first_body


async def run_load(host: str, port: int, payload: bytes, *, concurrency: int, requests: int,
                   max_seconds: float) -> RunResult:
    """Send ``requests`` copies of ``payload`` over ``concurrency`` connections, or stop at ``max_seconds``."""
    loop = asyncio.get_running_loop()
    result = RunResult()
    remaining = requests
    clients = []
    for _ in range(concurrency):
        _, client = await loop.create_connection(_Client, host, port)
        clients.append(client)
    deadline = time.perf_counter() + max_seconds

    async def worker(client: _Client) -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            started = time.perf_counter()
            try:
                status, first = await client.send(payload)
            except ConnectionError:
                result.errors += 1
                return
            ended = time.perf_counter()
            result.latencies.append(ended - started)
            if first is not None:
                result.ttfb.append(first - started)
            result.statuses[status] = result.statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    result.wall = time.perf_counter() - started
    for client in clients:
        client.transport.close()
    return result


def post_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The bytes of one keep-alive POST with a JSON body."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
