"""The upstream connection's reading of a response, whatever the reads it arrives in."""

from __future__ import annotations

import asyncio

import pytest

from lectr.config import UpstreamSettings
from lectr.providers.base import parse_origin
from lectr.proxy.busypoll import BusyPoller
from lectr.proxy.upstream import UpstreamConnection, UpstreamPools

EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
        b"Transfer-Encoding: chunked\r\nX-Request-Id: req_1\r\n\r\n")
BODY = b"7\r\n{\"a\":1}\r\n0\r\n\r\n"


class Transport:
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool: return False


class Exchange:
    def __init__(self) -> None:
        self.status, self.head, self.body, self.done, self.failed = None, None, b"", False, None

    def upstream_head(self, status, head) -> None:
        self.status, self.head = status, head

    def upstream_body(self, chunk: bytes) -> None:
        self.body += chunk

    def upstream_done(self) -> None:
        self.done = True

    def upstream_failed(self, error, *, retryable: bool) -> None:
        self.failed = error

    def flush(self) -> None: ...


def receive(pieces: list[bytes]) -> Exchange:
    async def run() -> Exchange:
        pools = UpstreamPools(UpstreamSettings(), BusyPoller(asyncio.get_running_loop(), 0))
        conn = UpstreamConnection(pools.pool(parse_origin("http://127.0.0.1:9/v1")))
        conn.connection_made(Transport())
        exchange = Exchange()
        conn.start(exchange, b"GET / HTTP/1.1\r\n\r\n", head_only=False)
        for piece in pieces:
            conn.data_received(piece)
        return exchange
    return asyncio.run(run())


@pytest.mark.parametrize("response", [HEAD + BODY, EARLY_HINTS + HEAD + BODY], ids=["plain", "after 103"])
def test_a_response_split_anywhere_reads_the_same(response):
    for cut in range(1, len(response)):
        for pieces in ([response[:cut], response[cut:]], [response[i:i + cut] for i in range(0, len(response), cut)]):
            exchange = receive(pieces)
            assert exchange.failed is None and exchange.done, (cut, pieces)
            assert exchange.status == 200
            assert exchange.head.relay == b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-Id: req_1\r\n"
            assert exchange.head.chunked and not exchange.head.has_length
            assert exchange.head.content_type == "application/json"
            assert exchange.body == b'{"a":1}'
