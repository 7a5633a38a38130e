"""HTTP/1.1 on the proxy listener, over raw sockets, with h11 judging every response."""

from __future__ import annotations

import time

import orjson

from tests.httpcheck import connect, exchange, is_closed, read_replies, request

CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'


def chat(h, extra: dict[str, str] | None = None, body: bytes = CHAT) -> bytes:
    headers = {"X-Lectr-Key": h.key, "Authorization": "Bearer sk-test", "Content-Type": "application/json"}
    headers.update(extra or {})
    return request("POST", "/v1/chat/completions", headers, body)


def test_health_endpoints(harness):
    replies = exchange(harness.port, request("GET", "/healthz") + request("GET", "/readyz"), ["GET", "GET"])
    assert [r.status for r in replies] == [200, 200]
    assert orjson.loads(replies[1].body) == {"status": "ok"}


def test_head_has_no_body(harness):
    [reply] = exchange(harness.port, request("HEAD", "/healthz"), ["HEAD"])
    assert reply.status == 200 and reply.body == b""
    assert reply.headers["content-length"] == "15"


def test_keep_alive_serves_many_requests_on_one_connection(harness):
    with connect(harness.port) as sock:
        for _ in range(5):
            sock.sendall(chat(harness))
            [reply] = read_replies(sock, ["POST"])
            assert reply.status == 200
            assert orjson.loads(reply.body)["model"] == "gpt-4o-mini"
        assert not is_closed(sock, timeout=0.2)


def test_pipelined_requests_are_answered_in_order(harness):
    # The first is slow upstream, the second local: the answers must still come in order.
    slow = chat(harness, {"x-mock-delay-ms": "200"}, b'{"model":"gpt-4o","messages":[]}')
    fast = chat(harness, body=b'{"model":"gpt-4.1-mini","messages":[]}')
    replies = exchange(harness.port, slow + request("GET", "/healthz") + fast, ["POST", "GET", "POST"])
    assert [r.status for r in replies] == [200, 200, 200]
    assert orjson.loads(replies[0].body)["model"] == "gpt-4o"
    assert replies[1].body == b'{"status":"ok"}'
    assert orjson.loads(replies[2].body)["model"] == "gpt-4.1-mini"


def test_chunked_upload_is_forwarded_whole(harness):
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: lectr\r\nX-Lectr-Key: {harness.key}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"chunked upload"}]}'
    parts = [body[:10], body[10:40], body[40:]]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    [reply] = exchange(harness.port, head + framed, ["POST"])
    assert reply.status == 200
    seen = harness.mock.last()
    assert seen.body == body
    assert seen.header("content-length") == str(len(body))
    assert seen.header("transfer-encoding") is None


def test_expect_100_continue(harness):
    with connect(harness.port) as sock:
        head = chat(harness, {"Expect": "100-continue"}).split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        sock.sendall(head)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(CHAT)
        [reply] = read_replies(sock, ["POST"])
        assert reply.status == 200
    assert harness.mock.last().header("expect") is None


def test_body_over_the_limit_is_413_without_reading_it(harness):
    with connect(harness.port) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: lectr\r\nContent-Length: 5000000\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        [reply] = read_replies(sock, ["POST"])
        assert reply.status == 413
        assert orjson.loads(reply.body)["error"]["code"] == "request_too_large"
        assert is_closed(sock)


def test_chunked_body_over_the_limit_is_413(harness):
    chunk = b"x" * 400_000
    raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: lectr\r\nTransfer-Encoding: chunked\r\n\r\n"
           + b"%x\r\n%s\r\n" % (len(chunk), chunk) * 3 + b"0\r\n\r\n")
    with connect(harness.port) as sock:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # Lectr may close before reading it all; the reply is already there
        [reply] = read_replies(sock, ["POST"])
    assert reply.status == 413


def test_headers_over_the_limit_are_431(harness):
    [reply] = exchange(harness.port, request("GET", "/v1/models", {"X-Big": "a" * 10_000}))
    assert reply.status == 431
    assert orjson.loads(reply.body)["error"]["code"] == "headers_too_large"


def test_a_header_that_never_ends_is_431_before_it_fills_memory(harness):
    # httptools keeps a header value until its line ends; Lectr stops reading it at the limit.
    with connect(harness.port) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: lectr\r\nX-Endless: ")
        try:
            for _ in range(64):
                sock.sendall(b"a" * 4096)
                time.sleep(0.002)
        except OSError:
            pass  # the server answered and closed while we were still sending
        [reply] = read_replies(sock, ["POST"])
        assert reply.status == 431
        assert is_closed(sock)


def test_a_trailer_that_never_ends_is_431_too(harness):
    with connect(harness.port) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: lectr\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"2\r\n{}\r\n0\r\nX-Trailer: ")
        try:
            for _ in range(64):
                sock.sendall(b"a" * 4096)
                time.sleep(0.002)
        except OSError:
            pass
        [reply] = read_replies(sock, ["POST"])
        assert reply.status == 431
        assert is_closed(sock)


def test_content_length_with_transfer_encoding_is_400_and_closes(harness):
    raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: lectr\r\nContent-Length: 5\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    with connect(harness.port) as sock:
        sock.sendall(raw)
        [reply] = read_replies(sock, ["POST"])
        assert reply.status == 400
        assert reply.headers["connection"] == "close"
        assert is_closed(sock)


def test_duplicate_content_length_is_400(harness):
    raw = b"POST /v1/x HTTP/1.1\r\nHost: lectr\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"
    [reply] = exchange(harness.port, raw, ["POST"])
    assert reply.status == 400


def test_malformed_request_is_400_and_closes(harness):
    with connect(harness.port) as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        [reply] = read_replies(sock, ["GET"])
        assert reply.status == 400
        assert orjson.loads(reply.body)["error"]["type"] == "invalid_request_error"
        assert is_closed(sock)


def test_error_after_pipelined_request_comes_after_its_answer(harness):
    raw = chat(harness, {"x-mock-delay-ms": "100"}) + b"GARBAGE\r\n\r\n"
    replies = exchange(harness.port, raw, ["POST", "GET"])
    assert [r.status for r in replies] == [200, 400]


def test_unknown_path_is_404_in_openai_shape(harness):
    [reply] = exchange(harness.port, request("GET", "/admin"))
    assert reply.status == 404
    error = orjson.loads(reply.body)["error"]
    assert set(error) == {"message", "type", "param", "code"}


def test_http_10_gets_an_answer_and_a_close(harness):
    with connect(harness.port) as sock:
        sock.sendall(request("GET", "/healthz", version="1.0"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close" in data.lower()


def test_idle_connection_is_closed_after_the_idle_timeout(harness):
    with connect(harness.port) as sock:
        sock.sendall(request("GET", "/healthz"))
        read_replies(sock, ["GET"])
        started = time.monotonic()
        assert is_closed(sock, timeout=5)
        assert time.monotonic() - started >= 1.0  # LECTR_IDLE_TIMEOUT is 1.5 s in the harness


def test_slow_request_head_gets_408(harness):
    with connect(harness.port) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: lectr\r\n")  # and then nothing
        [reply] = read_replies(sock, ["POST"])
        assert reply.status == 408
        assert is_closed(sock)


def test_missing_and_unknown_keys_are_401_and_never_reach_the_provider(harness):
    before = len(harness.mock.requests)
    received = harness.mock.received
    for headers, code in (({}, "missing_lectr_key"), ({"X-Lectr-Key": "lc_key_nope"}, "invalid_lectr_key")):
        [reply] = exchange(harness.port, request("POST", "/v1/chat/completions", headers, CHAT), ["POST"])
        assert reply.status == 401
        assert orjson.loads(reply.body)["error"]["code"] == code
    assert len(harness.mock.requests) == before
    assert harness.mock.received == received  # a counter that only grows, unlike the capped deque
