"""Client-side deadlines (issue 12.1, 12.4): header, idle and client write timeouts, each on its
own clock. Raw sockets against a real ``lectr serve`` whose deadlines come from LECTR_*
variables, and the in-process harness for the write deadline's event.
"""

from __future__ import annotations

import asyncio
import socket
import time

import asyncpg
import orjson
import pytest

from lectr.settings.config import ProxyLimits
from lectr.proxy.flow import FlowControl
from tests.conftest import ProxyHarness, create_org, lectr_env, start_lectr, stop_lectr
from tests.httpcheck import connect, exchange, is_closed, read_replies, request

HEADER_TIMEOUT, IDLE_TIMEOUT = 2.0, 6.0


def error_code(reply) -> str:
    error = orjson.loads(reply.body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error["code"]


# -- deadlines on a real `lectr serve` (12.1) -------------------------------------------------

@pytest.fixture(scope="module")
def served(database_url, mock, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limits")
    env = lectr_env(database_url, mock, tmp, LECTR_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
                    LECTR_IDLE_TIMEOUT=str(IDLE_TIMEOUT), LECTR_CLIENT_WRITE_TIMEOUT="1",
                    LECTR_UPSTREAM_READ_TIMEOUT="30", LECTR_FLUSH_INTERVAL="0.2")
    key = create_org(env, "limits")
    server = start_lectr(env, tmp / "serve.log")
    server.extra["key"] = key
    yield server
    stop_lectr(server)


def trickle(sock: socket.socket, data: bytes, every: float = 0.5) -> float:
    """Send ``data`` a byte at a time until the server answers; seconds from the first byte."""
    started = time.monotonic()
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        sock.settimeout(every)
        try:
            if sock.recv(1, socket.MSG_PEEK):
                break
        except socket.timeout:
            continue
    return time.monotonic() - started


SLOW_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: lectr\r\nX-Lectr-Feature: " + b"a" * 40


def test_a_head_sent_a_byte_at_a_time_gets_408_at_the_header_timeout(served):
    with connect(served.port) as sock:
        elapsed = trickle(sock, SLOW_HEAD)
        [reply] = read_replies(sock, ["POST"])
        assert reply.status == 408 and error_code(reply) == "request_timeout"
        assert is_closed(sock)
    assert HEADER_TIMEOUT - 0.5 <= elapsed < IDLE_TIMEOUT - 1, f"408 after {elapsed:.1f}s, not before the idle timeout"


def test_a_later_keep_alive_request_gets_its_own_header_timeout(served):
    with connect(served.port) as sock:
        sock.sendall(request("GET", "/healthz"))
        assert read_replies(sock, ["GET"])[0].status == 200
        elapsed = trickle(sock, SLOW_HEAD)
        [reply] = read_replies(sock, ["POST"])
        assert reply.status == 408
    assert HEADER_TIMEOUT - 0.5 <= elapsed < IDLE_TIMEOUT - 1, f"408 after {elapsed:.1f}s, not before the idle timeout"


def test_a_hundred_slow_connections_are_all_let_go_at_the_header_timeout(served):
    socks = [connect(served.port) for _ in range(100)]
    try:
        started = time.monotonic()
        for i, sock in enumerate(socks):
            # Half send part of a head, half send nothing at all.
            if i % 2:
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHo")
        for i, sock in enumerate(socks):
            sock.settimeout(IDLE_TIMEOUT)
            data = b""
            try:
                while chunk := sock.recv(65536):
                    data += chunk
            except ConnectionResetError:
                pass
            assert data.startswith(b"HTTP/1.1 408 ") if i % 2 else data == b""
        elapsed = time.monotonic() - started
        assert elapsed < IDLE_TIMEOUT - 1, f"connections held for {elapsed:.1f}s, past the header timeout"
    finally:
        for sock in socks:
            sock.close()
    [reply] = exchange(served.port, request("GET", "/healthz"))
    assert reply.status == 200


def test_an_idle_keep_alive_connection_lasts_the_idle_timeout_not_the_header_one(served):
    with connect(served.port) as sock:
        sock.sendall(request("GET", "/healthz"))
        read_replies(sock, ["GET"])
        idle_since = time.monotonic()
        assert not is_closed(sock, timeout=HEADER_TIMEOUT + 1)
        assert is_closed(sock, timeout=IDLE_TIMEOUT)
        assert time.monotonic() - idle_since >= IDLE_TIMEOUT - 0.5


def test_a_body_sent_too_slowly_is_408_at_the_header_timeout(served):
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: lectr\r\nContent-Length: 100\r\n\r\n"
    with connect(served.port) as sock:
        sock.sendall(head)
        elapsed = trickle(sock, b"x" * 100)
        [reply] = read_replies(sock, ["POST"])
        assert reply.status == 408
    assert elapsed < IDLE_TIMEOUT - 1


# -- client write deadline (12.4, the client's half) ------------------------------------------

def slow_reader(port: int, key: str) -> socket.socket:
    """A client that asks for a long stream and never reads it, with a small receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    body = b'{"model":"gpt-4o-mini","stream":true,"messages":[]}'
    sock.sendall(request("POST", "/v1/chat/completions", {"X-Lectr-Key": key, "x-mock-chunks": "100000"}, body))
    return sock


def read_until_cut(sock: socket.socket) -> None:
    sock.settimeout(10)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass  # cut, as it should be


def test_a_served_client_that_stops_reading_is_recorded_as_its_fault(served, database_url):
    async def rows():
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetch("SELECT status_code, error_type, error_origin FROM request_logs "
                                    "WHERE error_type = 'client_write_timeout'")
        finally:
            await conn.close()

    with slow_reader(served.port, served.extra["key"]) as sock:
        deadline = time.monotonic() + 20
        while not (found := asyncio.run(rows())) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [tuple(r) for r in found] == [(200, "client_write_timeout", "client")]
        read_until_cut(sock)


@pytest.fixture
def slow_reader_harness(mock):
    h = ProxyHarness(mock, ProxyLimits(max_body_bytes=1_000_000, max_header_bytes=8192, header_timeout=5.0,
                                       idle_timeout=5.0, client_write_timeout=0.5))
    h.start()
    yield h
    h.stop()


def test_a_client_that_stops_reading_is_cut_and_recorded_as_its_fault(slow_reader_harness):
    h = slow_reader_harness
    with slow_reader(h.port, h.key) as sock:
        deadline = time.monotonic() + 10
        while not (events := h.events()) and time.monotonic() < deadline:
            time.sleep(0.05)
        [event] = events
        assert (event.error_type, event.error_origin) == ("client_write_timeout", "client")
        assert event.status_code == 200  # the provider's answer was fine
        read_until_cut(sock)


class _Reader:
    """The upstream side of the flow-control contract: it only notes what it is told."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


def test_the_write_deadline_counts_one_uninterrupted_pause_only():
    async def run() -> None:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        upstream = _Reader()
        flow = FlowControl(_Reader(), loop, 0.2, lambda: fired.append(loop.time()))
        flow.follow(upstream)
        for _ in range(4):  # paused longer than the deadline in total, but draining in between
            flow.pause_writing()
            assert flow.paused_since > 0
            await asyncio.sleep(0.1)
            flow.resume_writing()
            assert flow.paused_since == 0.0
        assert fired == []
        assert upstream.calls == ["pause", "resume"] * 4
        flow.pause_writing()
        paused = flow.paused_since
        while not fired:
            await asyncio.sleep(0.02)
        assert fired[0] - paused >= 0.2 - 0.005
        flow.release()
        assert flow.paused_since == 0.0

    asyncio.run(run())


def test_the_client_write_timeout_is_configured_from_the_environment():
    from lectr.settings.config import ConfigError, Settings
    assert Settings.from_env({}).limits.client_write_timeout == 60.0
    assert Settings.from_env({"LECTR_CLIENT_WRITE_TIMEOUT": "2.5"}).limits.client_write_timeout == 2.5
    with pytest.raises(ConfigError):
        Settings.from_env({"LECTR_CLIENT_WRITE_TIMEOUT": "0"})


