"""The upstream connection's reading of a response, whatever the reads it arrives in."""

from __future__ import annotations

import asyncio

import pytest

from lectr.settings.config import UpstreamSettings
from lectr.providers.base import parse_origin
from lectr.proxy.busypoll import BusyPoller
from lectr.proxy.pool import UpstreamPools
from lectr.proxy.upstream import UpstreamConnection

EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
        b"Transfer-Encoding: chunked\r\nX-Request-Id: req_1\r\n\r\n")
BODY = b"7\r\n{\"a\":1}\r\n0\r\n\r\n"


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


class Transport:
    def __init__(self) -> None:
        self.aborted = False

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool: return self.aborted

    def abort(self) -> None:
        self.aborted = True


def receive(pieces: list[bytes], *, then: list[bytes] = (), close: bool = False):
    """Feed ``pieces`` as one response's reads; then, with no request outstanding, ``then``."""
    async def run():
        pools = UpstreamPools(UpstreamSettings(), BusyPoller(asyncio.get_running_loop(), 0))
        conn = UpstreamConnection(pools.pool(parse_origin("http://127.0.0.1:9/v1")))
        transport = Transport()
        conn.connection_made(transport)
        exchange = Exchange()
        conn.start(exchange, b"GET / HTTP/1.1\r\n\r\n", head_only=False)
        for piece in pieces:
            conn.data_received(piece)
        for piece in then:
            conn.data_received(piece)
        if close:
            conn.connection_lost(None)
        return exchange, conn, transport
    return asyncio.run(run())


@pytest.mark.parametrize("response", [HEAD + BODY, EARLY_HINTS + HEAD + BODY], ids=["plain", "after 103"])
def test_a_response_split_anywhere_reads_the_same(response):
    for cut in range(1, len(response)):
        for pieces in ([response[:cut], response[cut:]], [response[i:i + cut] for i in range(0, len(response), cut)]):
            exchange, _, _ = receive(pieces)
            assert exchange.failed is None and exchange.done, (cut, pieces)
            assert exchange.status == 200
            assert exchange.head.relay == b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" \
                b"Transfer-Encoding: chunked\r\nX-Request-Id: req_1\r\n"
            assert exchange.head.chunked and not exchange.head.has_length
            assert exchange.head.content_type == "application/json"
            assert exchange.body == b'{"a":1}'


def test_bytes_after_a_response_are_never_relayed_to_the_next_request():
    # The start of a second response in the same read as the first one's end (and stray bytes
    # on an idle connection): a provider could otherwise forge the next request's response.
    extra = b"HTTP/1.1 200 OK\r\nContent-Length: 60\r\n"
    for pieces, then in ([[HEAD + BODY + extra], []], [[HEAD + BODY], [extra]]):
        exchange, conn, transport = receive(pieces, then=then)
        assert exchange.done and exchange.body == b'{"a":1}'
        assert transport.aborted and not conn.alive, "the connection is dropped, not pooled"


def test_a_chunked_body_cut_short_is_a_failure_whatever_the_transfer_encoding_fields():
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\ntransfer-encoding: Chunked\r\n\r\n"
    exchange, _, _ = receive([head + b"10\r\npartial"], close=True)
    assert exchange.head.chunked
    assert exchange.failed is not None and not exchange.done


def test_a_body_ended_by_the_close_is_whole_when_chunked_is_not_the_last_coding():
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"
    exchange, _, _ = receive([head + b"all of it"], close=True)
    assert not exchange.head.chunked and not exchange.head.has_length
    assert exchange.done and exchange.failed is None and exchange.body == b"all of it"


def test_a_switch_of_protocols_is_a_502_not_a_hang():
    exchange, conn, transport = receive([b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                         b"Connection: upgrade\r\n\r\n"])
    assert exchange.failed is not None and exchange.failed.status == 502
    assert transport.aborted and not conn.alive
