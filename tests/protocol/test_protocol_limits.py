"""The client side of the proxy connection under hostile or unusual input (issue 12, issue 11 §2):
chunk sizes, repeated X-Lectr-* headers, Host and version, upgrades. Raw sockets against the
in-process harness; h11 judges every response. Deadlines are in test_protocol_deadlines.py.
"""

from __future__ import annotations

import socket
import time

import orjson
import pytest

from lectr.snapshot.directory import Directory, Org
from lectr.snapshot.keys import hash_key, new_org_key
from lectr.proxy import upgrades
from tests.httpcheck import connect, exchange, is_closed, read_replies, request

CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'


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


def test_the_http2_prior_knowledge_preface_is_505(harness):
    with connect(harness.port) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00")
        [reply] = read_replies(sock, ["GET"])
        assert reply.status == 505
        assert is_closed(sock)


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


# -- the pure pieces ----------------------------------------------------------------------------

def test_client_headers_name_the_first_repeated_lectr_header():
    from lectr.proxy.headers import ClientHeaders
    assert ClientHeaders([(b"X-Lectr-Key", b"a"), (b"Host", b"x")]).repeated is None
    assert ClientHeaders([(b"X-Lectr-Key", b""), (b"x-lectr-KEY", b"b")]).repeated == b"x-lectr-key"
    assert ClientHeaders([(b"X-Lectr-Task", b"a"), (b"X-Lectr-Feature", b"f"), (b"x-lectr-feature", b"g"),
                          (b"X-Lectr-Task", b"b")]).repeated == b"x-lectr-feature"
    assert ClientHeaders([(b"X-Lectr-Provider-Key-Groq", b"1"), (b"x-lectr-provider-key-groq", b"2")]).repeated \
        == b"x-lectr-provider-key-groq"
    two_hosts = ClientHeaders([(b"Host", b"a"), (b"HOST", b"b"), (b"Transfer-Encoding", b"chunked")])
    assert (two_hosts.hosts, two_hosts.chunked, two_hosts.forward) == (2, True, [])


@pytest.mark.parametrize("line,size", [
    (b"0", 0), (b"1a", 26), (b"0000000000000000000000000001", 1), (b"ffffffffffffffff", 2**64 - 1),
    (b"1" + b"0" * 16, 2**64), (b"f4240;name=value", 1_000_000), (b"A \t", 10), (b"X-Trailer: 1", 0),
])
def test_chunk_size_lines(line, size):
    from lectr.proxy.framing import chunk_size
    assert chunk_size(line) == size
