"""No request is sent twice unless it cannot have been processed (RFC 9110 §9.2.2).

A raw-socket provider answers the first request on each connection and, for every later one
on the same (kept-alive) connection, reads the request whole and then resets the connection.
"""

from __future__ import annotations

import orjson
import pytest

from lectr.settings.config import ProxyLimits
from tests.conftest import ProxyHarness
from tests.httpcheck import connect, read_replies, request
from tests.rawupstream import RESET, RawUpstream, json_reply

IDEMPOTENT = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]
NOT_IDEMPOTENT = ["POST", "PATCH"]


def reset_on_reuse(req):
    return json_reply() if req.index_on_connection == 0 else RESET


@pytest.fixture()
def proxied():
    upstream = RawUpstream(reset_on_reuse).start()
    harness = ProxyHarness(upstream, ProxyLimits(max_body_bytes=1_000_000, max_header_bytes=8192,
                                                 header_timeout=5.0, idle_timeout=5.0))
    harness.start()
    yield harness, upstream
    harness.stop()
    upstream.stop()


def send(harness, sock, method: str, target: str, body: bytes = b""):
    headers = {"X-Lectr-Key": harness.key, "Authorization": "Bearer sk-test"}
    if body:
        headers["Content-Type"] = "application/json"
    sock.sendall(request(method, target, headers, body))
    [reply] = read_replies(sock, [method])
    return reply


def warm_up(harness, sock) -> None:
    # One answered request leaves the upstream connection in Lectr's pool, to be reused next.
    assert send(harness, sock, "GET", "/v1/models?warm=1").status == 200
    harness.events()


@pytest.mark.parametrize("method", NOT_IDEMPOTENT)
def test_a_request_the_provider_read_and_then_reset_is_not_sent_again(proxied, method):
    harness, upstream = proxied
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"once {method}"}]})
    with connect(harness.port) as sock:
        warm_up(harness, sock)
        reply = send(harness, sock, method, "/v1/chat/completions", body)
    assert reply.status == 502
    error = orjson.loads(reply.body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "upstream_closed"
    assert upstream.bodies().count(body) == 1  # the provider saw it exactly once
    [event] = harness.events()
    assert (event.status_code, event.error_type, event.error_origin) == (502, "upstream_closed", "provider")


@pytest.mark.parametrize("method", IDEMPOTENT)
def test_an_idempotent_request_is_retried_once_on_a_new_connection(proxied, method):
    harness, upstream = proxied
    target = f"/v1/files/probe-{method.lower()}"
    with connect(harness.port) as sock:
        warm_up(harness, sock)
        reply = send(harness, sock, method, target)
    assert reply.status == 200
    seen = [r for r in upstream.requests if r.target.endswith(target[3:].encode())]
    assert [(r.method.decode(), r.index_on_connection) for r in seen] == [(method, 1), (method, 0)]
    assert seen[0].connection != seen[1].connection
    [event] = harness.events()
    assert event.status_code == 200 and event.error_type is None


def test_an_idempotent_request_is_retried_only_once(proxied):
    harness, upstream = proxied
    upstream.behave = lambda req: RESET if b"always" in req.target else json_reply()
    with connect(harness.port) as sock:
        warm_up(harness, sock)
        reply = send(harness, sock, "GET", "/v1/files/always")
    assert reply.status == 502
    assert sum(b"always" in r.target for r in upstream.requests) == 2


class _Exchange:
    def __init__(self) -> None:
        self.failures: list[tuple[int, bool]] = []

    def upstream_head(self, status, head) -> None: ...
    def upstream_body(self, chunk) -> None: ...
    def upstream_done(self) -> None: ...
    def flush(self) -> None: ...

    def upstream_failed(self, error, *, retryable: bool) -> None:
        self.failures.append((error.status, retryable, error.sent))


@pytest.mark.parametrize("method", NOT_IDEMPOTENT + IDEMPOTENT)
def test_a_request_whose_write_failed_at_once_may_be_sent_again(method):
    # The provider reset an idle kept-alive connection before Lectr noticed: the write fails
    # with nothing handed to the kernel, so even a POST cannot have been processed.
    import asyncio
    import socket
    import select
    import struct

    import uvloop

    from lectr.settings.config import UpstreamSettings
    from lectr.providers.base import parse_origin
    from lectr.proxy.busypoll import BusyPoller
    from lectr.proxy.pool import OriginPool

    async def run():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        loop = asyncio.get_running_loop()
        origin = parse_origin("http://127.0.0.1:%d/v1" % listener.getsockname()[1])
        pool = OriginPool(origin, UpstreamSettings(), loop, None, BusyPoller(loop, 0))
        conn = await pool.acquire()
        accepted, _ = listener.accept()
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        accepted.close()
        # Wait, with the loop blocked, until the reset has arrived: the loop has not seen it.
        select.select([conn.transport.get_extra_info("socket").fileno()], [], [], 5)
        conn.reused = True
        exchange = _Exchange()
        conn.start(exchange, method.encode() + b" /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
                   head_only=False, idempotent=method in IDEMPOTENT)
        for _ in range(100):
            if exchange.failures:
                break
            await asyncio.sleep(0.01)
        listener.close()
        return exchange.failures

    assert uvloop.run(run()) == [(502, True, False)]
