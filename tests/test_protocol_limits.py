"""The client side of the proxy connection under hostile or unusual input (issue 12, issue 11 §2).

Raw sockets against the in-process harness, and against a real ``lectr serve`` where the
deadlines come from LECTR_* variables; h11 judges every response.
"""

from __future__ import annotations

import asyncio
import socket
import time

import orjson
import pytest

from lectr.config import ProxyLimits
from lectr.directory import Directory, Org
from lectr.keys import hash_key, new_org_key
from lectr.proxy import upgrades
from lectr.proxy.flow import FlowControl
from tests.conftest import ProxyHarness, create_org, lectr_env, start_lectr, stop_lectr
from tests.httpcheck import connect, exchange, is_closed, read_replies, request

CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
HEADER_TIMEOUT, IDLE_TIMEOUT = 2.0, 6.0


def error_code(reply) -> str:
    error = orjson.loads(reply.body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error["code"]


def nothing_more(sock: socket.socket, wait: float = 0.3) -> bool:
    """True when no further byte arrives within ``wait`` s (and the connection is still open)."""
    sock.settimeout(wait)
    try:
        return sock.recv(65536) is None
    except socket.timeout:
        return True


# -- deadlines on a real `lectr serve` (12.1) -------------------------------------------------

@pytest.fixture(scope="module")
def served(database_url, mock, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limits")
    env = lectr_env(database_url, mock, tmp, LECTR_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
                    LECTR_IDLE_TIMEOUT=str(IDLE_TIMEOUT))
    create_org(env, "limits")
    server = start_lectr(env, tmp / "serve.log")
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


# -- chunk sizes (12.6), on the in-process harness (body limit 1,000,000 bytes) ---------------

CHUNKED_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: lectr\r\nX-Lectr-Key: %s\r\n" \
               b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("size_line", [
    b"ffffffffffffffff", b"FFFFFFFFFFFFFFFF", b"fffffffffffffffff", b"1" + b"0" * 40,
    b"f4241", b"0" * 60 + b"ffffffffffffffff", b"0" * 60 + b"f4241", b"ffffffffffffffff;ext=1",
])
def test_a_chunk_larger_than_the_body_limit_is_refused_at_once(harness, size_line):
    before = len(harness.mock.requests)
    with connect(harness.port) as sock:
        sock.sendall(CHUNKED_HEAD % harness.key.encode() + size_line + b"\r\n" + b"{" * 10)
        [reply] = read_replies(sock, ["POST"])
        assert reply.status in (400, 413), reply.status  # never 408: nothing waits for the bytes
        assert is_closed(sock)
    assert len(harness.mock.requests) == before


def test_a_chunk_size_line_split_over_reads_is_refused_too(harness):
    with connect(harness.port) as sock:
        sock.sendall(CHUNKED_HEAD % harness.key.encode() + b"ffff")
        time.sleep(0.05)
        sock.sendall(b"ffff")
        time.sleep(0.05)
        sock.sendall(b"ffffffff\r")
        time.sleep(0.05)
        sock.sendall(b"\nabc")
        [reply] = read_replies(sock, ["POST"])
        assert reply.status == 413


def test_chunks_that_together_pass_the_limit_are_413_when_the_last_is_announced(harness):
    first = b"x" * 600_000
    with connect(harness.port) as sock:
        sock.sendall(CHUNKED_HEAD % harness.key.encode() + b"%x\r\n%s\r\n" % (len(first), first) + b"7a120\r\n")
        [reply] = read_replies(sock, ["POST"])
        assert reply.status == 413


def test_chunks_within_the_limit_with_leading_zeros_are_forwarded(harness):
    parts = [CHAT[:20], CHAT[20:]]
    body = b"".join(b"%s%x\r\n%s\r\n" % (b"0" * 30, len(p), p) for p in parts) + b"0\r\n\r\n"
    [reply] = exchange(harness.port, CHUNKED_HEAD % harness.key.encode() + body, ["POST"])
    assert reply.status == 200
    assert harness.mock.last().body == CHAT


# -- repeated X-Lectr-* headers (12.9) ---------------------------------------------------------

@pytest.mark.parametrize("first,second", [
    ("X-Lectr-Key: lc_key_bogus", "X-Lectr-Key: {key}"),
    ("X-Lectr-Key: {key}", "x-lectr-key: {key}"),
    ("X-Lectr-Key: {key}", "X-LECTR-KEY: lc_key_bogus"),
    ("X-Lectr-Feature: a", "X-Lectr-Feature: b"),
    ("x-lectr-task: generation", "X-Lectr-Task: reasoning"),
    ("X-Lectr-Provider: openai", "X-Lectr-Provider: groq"),
    ("X-Lectr-Feature:", "x-Lectr-feature: chat"),
    ("X-Lectr-Something: 1", "x-lectr-something: 2"),
])
def test_a_repeated_lectr_header_is_400_never_forwarded_and_never_recorded(harness, first, second):
    harness.events()
    before = len(harness.mock.requests)
    lines = [first.format(key=harness.key), second.format(key=harness.key)]
    if "key" not in first.lower():
        lines.insert(0, f"X-Lectr-Key: {harness.key}")
    raw = ("POST /v1/chat/completions HTTP/1.1\r\nHost: lectr\r\n" + "\r\n".join(lines) +
           f"\r\nContent-Type: application/json\r\nContent-Length: {len(CHAT)}\r\n\r\n").encode() + CHAT
    [reply] = exchange(harness.port, raw, ["POST"])
    assert reply.status == 400 and error_code(reply) == "repeated_lectr_header"
    assert len(harness.mock.requests) == before
    assert harness.events() == []


def test_two_valid_keys_of_different_orgs_bill_neither(harness):
    other = new_org_key()
    saved = harness.directory.current
    harness.directory.replace(Directory({hash_key(harness.key): harness.org,
                                         hash_key(other): Org(8, "other", None)}))
    try:
        harness.events()
        [reply] = exchange(harness.port, request("POST", "/v1/chat/completions", {
            "X-Lectr-Key": harness.key, "x-lectr-KEY": other, "Content-Type": "application/json"}, CHAT), ["POST"])
        assert reply.status == 400
        assert harness.events() == []
    finally:
        harness.directory.replace(saved)


# -- Host and HTTP version (12, should fix) ----------------------------------------------------

def raw_request(version: str, hosts: list[str], key: str) -> bytes:
    lines = [f"POST /v1/chat/completions HTTP/{version}", *(f"Host: {h}" for h in hosts),
             f"X-Lectr-Key: {key}", "Content-Type: application/json", f"Content-Length: {len(CHAT)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + CHAT


@pytest.mark.parametrize("version,hosts,status", [
    ("1.1", [], 400), ("1.1", ["lectr", "lectr"], 400), ("1.1", ["a", "b"], 400), ("1.0", ["a", "b"], 400),
    ("2.0", ["lectr"], 505), ("0.9", ["lectr"], 505), ("3.0", ["lectr"], 505),
])
def test_host_and_version_errors_are_refused_and_never_forwarded(harness, version, hosts, status):
    before = len(harness.mock.requests)
    with connect(harness.port) as sock:
        sock.sendall(raw_request(version, hosts, harness.key))
        [reply] = read_replies(sock, ["POST"])
        assert reply.status == status
        error_code(reply)
        assert is_closed(sock)
    assert len(harness.mock.requests) == before


def test_http_10_without_host_is_still_served(harness):
    with connect(harness.port) as sock:
        sock.sendall(raw_request("1.0", [], harness.key))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")


# -- upgrades: one answer per request (issue 11 §2) -------------------------------------------

H2C = {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c", "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"}


def test_an_h2c_upgrade_is_ignored_and_answered_once_in_http11(harness):
    with connect(harness.port) as sock:
        sock.sendall(request("POST", "/v1/chat/completions",
                             {"X-Lectr-Key": harness.key, "Content-Type": "application/json", **H2C}, CHAT))
        [reply] = read_replies(sock, ["POST"])
        assert reply.status == 200 and orjson.loads(reply.body)["model"] == "gpt-4o-mini"
        assert nothing_more(sock), "a second response was written"
        seen = harness.mock.last()
        assert seen.body == CHAT
        assert {"upgrade", "http2-settings"}.isdisjoint(n.lower() for n in seen.header_names())
        # The connection stays usable for the next request.
        sock.sendall(request("GET", "/healthz", H2C) + request("GET", "/healthz"))
        assert [r.status for r in read_replies(sock, ["GET", "GET"])] == [200, 200]
        assert nothing_more(sock)


def test_h2c_with_a_chunked_body_and_expect_continue(harness):
    head = (CHUNKED_HEAD % harness.key.encode())[:-2] + \
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMA\r\nExpect: 100-continue\r\n\r\n"
    with connect(harness.port) as sock:
        sock.sendall(head)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(CHAT), CHAT))
        [reply] = read_replies(sock, ["POST"])
        assert reply.status == 200
        assert nothing_more(sock)
    assert harness.mock.last().body == CHAT


def test_a_websocket_upgrade_not_taken_gets_one_answer_and_the_next_request_is_parsed(harness):
    ws = {"X-Lectr-Key": harness.key, "Connection": "Upgrade", "Upgrade": "websocket",
          "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    with connect(harness.port) as sock:
        sock.sendall(request("GET", "/v1/realtime?model=gpt-4o-realtime-preview", ws) + request("GET", "/healthz"))
        replies = read_replies(sock, ["GET", "GET"])
        assert len(replies) == 2 and replies[1].status == 200
        assert nothing_more(sock)


def test_connect_is_refused_once(harness):
    with connect(harness.port) as sock:
        sock.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
        [reply] = read_replies(sock, ["GET"])
        assert reply.status == 405
        assert is_closed(sock)


class _EchoTunnel:
    """A stand-in request cycle that takes the upgrade: 101, then echoes bytes upper-cased."""

    def __init__(self, ctx, conn, method, url, headers, body, *, keep_alive, http11) -> None:
        self.conn = conn

    def start(self) -> None:
        conn = self.conn
        assert conn.upgrade_requested
        conn.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        conn.upgrade_to_tunnel(lambda data: conn.write(data.upper()) if data != b"bye" else conn.cycle_done(self))

    def cancel(self) -> None:
        pass


def test_upgrade_to_tunnel_hands_over_every_byte_after_the_head(harness, monkeypatch):
    monkeypatch.setattr(upgrades, "RequestCycle", _EchoTunnel)
    with connect(harness.port) as sock:
        sock.sendall(b"GET /v1/realtime HTTP/1.1\r\nHost: lectr\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                     b"early bytes")
        data = b""
        while b"EARLY BYTES" not in data and (chunk := sock.recv(65536)):
            data += chunk
        assert data == b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" \
                       b"EARLY BYTES"
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")  # not parsed: tunnel bytes
        assert sock.recv(65536) == b"GET / HTTP/1.1\r\n\r\n"
        time.sleep(2)  # past the harness's header (1 s) and idle (1.5 s) timeouts: not theirs now
        sock.sendall(b"still")
        assert sock.recv(65536) == b"STILL"
        sock.sendall(b"bye")
        assert is_closed(sock)


# -- client write deadline (12.4, the client's half) ------------------------------------------

@pytest.fixture
def slow_reader_harness(mock):
    h = ProxyHarness(mock, ProxyLimits(max_body_bytes=1_000_000, max_header_bytes=8192, header_timeout=5.0,
                                       idle_timeout=5.0, client_write_timeout=0.5))
    h.start()
    yield h
    h.stop()


def test_a_client_that_stops_reading_is_cut_and_recorded_as_its_fault(slow_reader_harness):
    h = slow_reader_harness
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", h.port))
    try:
        body = b'{"model":"gpt-4o-mini","stream":true,"messages":[]}'
        sock.sendall(request("POST", "/v1/chat/completions",
                             {"X-Lectr-Key": h.key, "x-mock-chunks": "100000"}, body))
        deadline = time.monotonic() + 10
        while not (events := h.events()) and time.monotonic() < deadline:
            time.sleep(0.05)
        [event] = events
        assert (event.error_type, event.error_origin) == ("client_write_timeout", "client")
        assert event.status_code == 200  # the provider's answer was fine
        sock.settimeout(5)
        try:
            while sock.recv(1 << 20):
                pass
        except ConnectionResetError:
            pass  # cut, as it should be
    finally:
        sock.close()


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


def test_the_http2_prior_knowledge_preface_is_505(harness):
    with connect(harness.port) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00")
        [reply] = read_replies(sock, ["GET"])
        assert reply.status == 505
        assert is_closed(sock)


def test_the_client_write_timeout_is_configured_from_the_environment():
    from lectr.config import ConfigError, Settings
    assert Settings.from_env({}).limits.client_write_timeout == 60.0
    assert Settings.from_env({"LECTR_CLIENT_WRITE_TIMEOUT": "2.5"}).limits.client_write_timeout == 2.5
    with pytest.raises(ConfigError):
        Settings.from_env({"LECTR_CLIENT_WRITE_TIMEOUT": "0"})
