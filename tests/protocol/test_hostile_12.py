"""Issue 12, attacked again with new variants of each kind, over raw sockets against a real
``lectr serve`` whose every provider is a raw-logging upstream (tests/rawupstream.py)."""

from __future__ import annotations

import socket
import struct
import time

import orjson
import pytest

from lectr.proxy import framing
from tests.conftest import PROVIDER_PREFIXES, create_org, lectr_env, start_lectr, stop_lectr, wait_for
from tests.httpcheck import connect, exchange, is_closed, read_replies
from tests.rawupstream import RESET, RawUpstream, json_reply

HEADER_TIMEOUT, IDLE_TIMEOUT = 2.0, 6.0


CHUNKED_REPLY = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTRANSFER-encoding:  chunked \r\n"
                 b"X-After: 1\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n")


BIG_BODY = b'{"choices":[{"message":{"content":"' + b"x" * 8_000_000 + b'"}}]}'
BIG_REPLY = json_reply(BIG_BODY)


def behave(request):
    scripted = request.header(b"x-test")
    if scripted == b"chunked":
        return CHUNKED_REPLY
    if scripted == b"reset":
        return RESET
    if scripted == b"big":
        return BIG_REPLY
    if scripted == b"partial-head-reset":
        return partial_head_then_reset
    return json_reply()


def partial_head_then_reset(sock):
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: appl")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.fixture(scope="module")
def upstream():
    with RawUpstream(behave) as up:
        yield up


@pytest.fixture(scope="module")
def served(database_url, mock, tmp_path_factory, upstream):
    tmp = tmp_path_factory.mktemp("hostile")
    env = lectr_env(database_url, mock, tmp, LECTR_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
                    LECTR_IDLE_TIMEOUT=str(IDLE_TIMEOUT), LECTR_UPSTREAM_READ_TIMEOUT="5",
                    LECTR_MAX_BODY_BYTES="100000",
                    **{f"LECTR_UPSTREAM_{p.upper()}": upstream.url(prefix) for p, prefix in PROVIDER_PREFIXES.items()})
    key = create_org(env, "hostile")
    server = start_lectr(env, tmp / "serve.log")
    server.extra["key"] = key
    yield server
    stop_lectr(server)


def raw_post(key: str, target: str, model: str = "gpt-4o-mini", *, extra: str = "", body: bytes | None = None,
             method: str = "POST", version: str = "1.1") -> bytes:
    if body is None:
        body = orjson.dumps({"model": model, "messages": []})
    return (f"{method} {target} HTTP/{version}\r\nHost: lectr\r\nX-Lectr-Key: {key}\r\n"
            f"Authorization: Bearer sk-test\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def send(served, raw: bytes, methods=("POST",)):
    return exchange(served.port, raw, list(methods))


def code(reply) -> str:
    return orjson.loads(reply.body)["error"]["code"]


def forwarded_since(upstream, before):
    return upstream.requests[before:]


# -- paths (12.3) ---------------------------------------------------------------------------

ODD_PATHS = [
    "/v1/%u002e%u002e/escaped", "/v1/%U002E%U002E/x", "/v1/%c0%ae%c0%ae/escaped", "/v1/%C0%AE%C0%AE/x",
    "/v1/%e0%80%ae%e0%80%ae/x", "/v1/%c1%9c/x", "/v1/..%c0%af/x", "/v1/%2e%2",  "/v1/%zz/x", "/v1/a%/x",
    "/v1/%ef%bc%8e%ef%bc%8e/x",
]


@pytest.mark.parametrize("path", ODD_PATHS)
def test_odd_encodings_never_leave_the_base(served, upstream, path):
    before = len(upstream.requests)
    [reply] = send(served, raw_post(served.extra["key"], path))
    assert reply.status == 400, (path, reply.status)
    assert code(reply) == "invalid_path"
    assert not forwarded_since(upstream, before)


def test_raw_non_ascii_that_normalises_to_dots_is_refused(served, upstream):
    before = len(upstream.requests)
    raw = raw_post(served.extra["key"], "/v1/PLACEHOLDER/x").replace(b"PLACEHOLDER", "\uff0e\uff0e".encode())
    [reply] = send(served, raw)
    assert reply.status == 400
    assert not forwarded_since(upstream, before)


@pytest.mark.parametrize("target,expected", [
    ("/v1/chat/completions?next=../../x", b"/openai/v1/chat/completions?next=../../x"),
    ("/v1/chat/completions?p=%2e%2e%2f", b"/openai/v1/chat/completions?p=%2e%2e%2f"),
    ("/v1/./chat/completions", b"/openai/v1/chat/completions"),
])
def test_queries_are_left_alone_and_paths_resolved(served, upstream, target, expected):
    before = len(upstream.requests)
    [reply] = send(served, raw_post(served.extra["key"], target))
    assert reply.status == 200
    [seen] = forwarded_since(upstream, before)
    assert seen.target == expected


@pytest.mark.parametrize("target", [
    "http://evil.example/v1/chat/completions", "http://127.0.0.1:1/v1/chat/completions",
    "evil.example:443", "//evil.example/v1/chat/completions", "*",
])
def test_the_client_never_chooses_the_upstream_host(served, upstream, target):
    before = len(upstream.requests)
    replies = send(served, raw_post(served.extra["key"], target))
    assert replies[0].status >= 400
    for seen in forwarded_since(upstream, before):
        assert seen.target.startswith(b"/openai/v1/") and b"evil" not in seen.raw


def test_a_fragment_cannot_hide_dot_segments(served, upstream):
    before = len(upstream.requests)
    [reply] = send(served, raw_post(served.extra["key"], "/v1/x#/../../../escaped"))
    for seen in forwarded_since(upstream, before):
        assert seen.target.startswith(b"/openai/v1/")
    assert reply.status in (200, 400)


# -- repeated X-Lectr-* (12.9) ---------------------------------------------------------------

@pytest.mark.parametrize("extra", [
    "X-Lectr-Key: {key}\r\n", "x-lectr-key: {key}\r\n", "X-LECTR-KEY: {key}\r\n",
    "X-Lectr-Feature: a\r\nx-lectr-feature: a\r\n", "X-Lectr-Provider: openai\r\nX-Lectr-Provider: openai\r\n",
])
def test_a_repeated_lectr_header_in_any_case_is_400(served, upstream, extra):
    before = len(upstream.requests)
    [reply] = send(served, raw_post(served.extra["key"], "/v1/chat/completions",
                                    extra=extra.format(key=served.extra["key"])))
    assert reply.status == 400
    assert not forwarded_since(upstream, before)


def test_a_comma_joined_key_is_not_a_key(served, upstream):
    key = served.extra["key"]
    before = len(upstream.requests)
    raw = raw_post(key, "/v1/chat/completions").replace(f"X-Lectr-Key: {key}".encode(),
                                                        f"X-Lectr-Key: {key}, lc_key_other".encode())
    [reply] = send(served, raw)
    assert reply.status in (400, 401)
    assert not forwarded_since(upstream, before)


# -- Host and version (should fix) -------------------------------------------------------------

@pytest.mark.parametrize("version,host_lines,status", [
    ("1.1", "", 400), ("1.1", "Host: a\r\nhost: a\r\n", 400), ("1.1", "Host: a\r\nHOST: b\r\n", 400),
    ("1.0", "Host: a\r\nHost: a\r\n", 400), ("2.0", "Host: a\r\n", 505), ("3.0", "Host: a\r\n", 505),
    ("0.9", "Host: a\r\n", 505), ("1.2", "Host: a\r\n", 200), ("1.9", "Host: a\r\n", 200),
    ("1.2", "", 400), ("1.2", "Host: a\r\nHost: b\r\n", 400),
])
def test_host_and_version(served, upstream, version, host_lines, status):
    key = served.extra["key"]
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": []})
    raw = (f"POST /v1/chat/completions HTTP/{version}\r\n{host_lines}X-Lectr-Key: {key}\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    before = len(upstream.requests)
    with connect(served.port) as sock:
        sock.sendall(raw)
        data = b""
        sock.settimeout(5)
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                break
            data += more
    got = int(data.split(b" ", 2)[1])
    assert got == status, data
    if status == 200:  # a later 1.x minor is served as HTTP/1.1 (RFC 9110 §2.5), and forwarded so
        [seen] = forwarded_since(upstream, before)
        assert seen.raw.startswith(b"POST /openai/v1/chat/completions HTTP/1.1\r\n")
    else:
        assert not forwarded_since(upstream, before)


def test_a_later_minor_version_after_a_pipelined_request_is_served_as_11(served, upstream):
    key = served.extra["key"]
    raw = raw_post(key, "/v1/chat/completions") + raw_post(key, "/v1/chat/completions", version="1.2")
    replies = send(served, raw, ["POST", "POST"])
    assert [r.status for r in replies] == [200, 200], replies[-1].body


@pytest.mark.parametrize("data,url,expected", [
    (b"GET /a HTTP/1.2\r\nHost: x\r\n\r\n", b"/a", b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"),
    (b"x\r\n\r\n{}GET /b?c HTTP/1.9\r\n", b"/b?c", b"GET /b?c HTTP/1.1\r\n"),  # after a pipelined body
    (b"/a HTTP/1.2\r\n", b"/a", None),  # the line began in an earlier read
    (b"GET /abc HTTP/1.2\r\n", b"/a", None), (b"PUT /a HTTP/1.2\r\n", b"/a", None),
    (b"GET /a HTTP/2.2\r\n", b"/a", None), (b"GET /a HTTP/1.2", b"/a", None),
])
def test_later_minor_as_http11(data, url, expected):
    assert framing.later_minor_as_http11(data, b"GET", url) == expected


def test_http_09_is_refused(served, upstream):
    before = len(upstream.requests)
    with connect(served.port) as sock:
        sock.sendall(b"GET /v1/models\r\n\r\n")
        sock.settimeout(5)
        data = sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 4") or data.startswith(b"HTTP/1.1 505") or data == b""
    assert not forwarded_since(upstream, before)


# -- Anthropic native paths (12.8) --------------------------------------------------------------

@pytest.mark.parametrize("target,where", [
    ("/v1/messages?beta=true", b"/anthropic/v1/messages?beta=true"),
    ("/v1/messages/", b"/anthropic/v1/messages/"),
    ("/v1/messages/count_tokens", b"/anthropic/v1/messages/count_tokens"),
    ("/v1//messages/batches", None),
    ("/v1/./messages/batches", b"/anthropic/v1/messages/batches"),
    ("/v1/Messages", None),
])
def test_anthropic_native_paths_with_an_openai_model(served, upstream, target, where):
    before = len(upstream.requests)
    replies = send(served, raw_post(served.extra["key"], target, "gpt-4o", extra="x-api-key: sk-ant-secret\r\n"
                                    "anthropic-version: 2023-06-01\r\n"))
    for seen in forwarded_since(upstream, before):
        if where is not None:
            assert seen.target == where
        if not seen.target.startswith(b"/anthropic/"):
            assert b"sk-ant-secret" not in seen.raw, seen.raw
    assert replies


def test_x_api_key_with_a_gpt_model_never_reaches_openai(served, upstream):
    before = len(upstream.requests)
    [reply] = send(served, raw_post(served.extra["key"], "/v1/chat/completions", "gpt-4o",
                                    extra="x-api-key: sk-ant-secret\r\nX-Api-Key: sk-ant-secret2\r\n"))
    [seen] = forwarded_since(upstream, before)
    assert seen.target.startswith(b"/openai/")
    assert b"sk-ant-secret" not in seen.raw


# -- the provider's Transfer-Encoding line (issue 13's raw bytes) -------------------------------

def read_until_closed_or(sock, marker: bytes) -> bytes:
    data = b""
    sock.settimeout(10)
    while marker not in data:
        more = sock.recv(65536)
        if not more:
            break
        data += more
    return data


def test_a_chunked_head_keeps_the_providers_transfer_encoding_line_in_place(served):
    with connect(served.port) as sock:
        sock.sendall(raw_post(served.extra["key"], "/v1/chat/completions", extra="x-test: chunked\r\n"))
        data = read_until_closed_or(sock, b"0\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head + b"\r\n\r\n" == CHUNKED_REPLY[:CHUNKED_REPLY.index(b"\r\n\r\n") + 4]
    assert head.lower().count(b"transfer-encoding") == 1


def test_an_http10_client_gets_no_transfer_encoding_and_a_close_delimited_body(served):
    with connect(served.port) as sock:
        sock.sendall(raw_post(served.extra["key"], "/v1/chat/completions", extra="x-test: chunked\r\n",
                              version="1.0"))
        data = read_until_closed_or(sock, b"\x00never")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert head.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-After: 1")
    assert body == b'{"a":1}'


# -- no double send (12.2) -----------------------------------------------------------------------

def on_a_reused_connection(served, upstream, raw: bytes, method: str):
    """Send a plain request first (so Lectr has a kept-alive upstream connection), then ``raw``."""
    [ok] = send(served, raw_post(served.extra["key"], "/v1/chat/completions"))
    assert ok.status == 200
    before = len(upstream.requests)
    replies = send(served, raw, [method])
    return replies, forwarded_since(upstream, before)


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize("script", ["reset", "partial-head-reset"])
def test_a_non_idempotent_request_the_provider_read_is_sent_once(served, upstream, method, script):
    raw = raw_post(served.extra["key"], "/v1/chat/completions", method=method, extra=f"x-test: {script}\r\n")
    replies, seen = on_a_reused_connection(served, upstream, raw, method)
    assert len(seen) == 1, [r.connection for r in seen]
    assert replies[0].status == 502


@pytest.mark.parametrize("script", ["reset", "partial-head-reset"])
def test_a_get_is_retried_at_most_once(served, upstream, script):
    raw = (f"GET /v1/models HTTP/1.1\r\nHost: lectr\r\nX-Lectr-Key: {served.extra['key']}\r\n"
           f"x-test: {script}\r\n\r\n").encode()
    replies, seen = on_a_reused_connection(served, upstream, raw, "GET")
    assert replies[0].status == 502
    # After part of a response head the exchange has begun: no second try.
    assert len(seen) == (2 if script == "reset" else 1)


def test_expect_100_continue_post_reset_is_sent_once(served, upstream):
    key = served.extra["key"]
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": []})
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: lectr\r\nX-Lectr-Key: {key}\r\nx-test: reset\r\n"
            f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    [ok] = send(served, raw_post(key, "/v1/chat/completions"))
    before = len(upstream.requests)
    with connect(served.port) as sock:
        sock.sendall(head)
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 100")
        sock.sendall(body)
        [reply] = read_replies(sock, ["POST"])
    assert reply.status == 502
    assert len(forwarded_since(upstream, before)) == 1


# -- chunk sizes (12.6) ---------------------------------------------------------------------------

def chunked_head(key: str) -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: lectr\r\nX-Lectr-Key: {key}\r\n"
            f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()


def answer_to(served, raw: bytes, timeout: float = 5) -> bytes:
    """The first bytes Lectr answers ``raw`` with (b"" if it closes without a word)."""
    with connect(served.port) as sock:
        sock.sendall(raw)
        sock.settimeout(timeout)
        try:
            return sock.recv(65536)
        except ConnectionResetError:
            return b""


@pytest.mark.parametrize("size_line,status", [
    (b"0x10", b"400"), (b"-1", b"400"), (b"+10", b"400"), (b" 10", b"400"), (b"\t10", b"400"),
    (b"10 ;ext=1", b"400"), (b"1;" + b"e" * 20000, b"4"), (b"fffffffffffffffff", b"4"),
    (b"00000000000000000000000000000186a1", b"413"), (b"186A1", b"413"),
])
def test_odd_chunk_size_lines_get_an_answer_at_once(served, upstream, size_line, status):
    before = len(upstream.requests)
    got = answer_to(served, chunked_head(served.extra["key"]) + size_line + b"\r\n")
    assert got.startswith(b"HTTP/1.1 " + status), got[:80]
    assert not forwarded_since(upstream, before)


def test_a_trailer_section_larger_than_the_header_limit_is_refused(served, upstream):
    before = len(upstream.requests)
    raw = chunked_head(served.extra["key"]) + b"2\r\n{}\r\n0\r\n" + b"".join(
        b"X-T%d: %s\r\n" % (i, b"v" * 1000) for i in range(100))
    got = answer_to(served, raw)
    assert got.startswith(b"HTTP/1.1 431") or got.startswith(b"HTTP/1.1 400"), got[:80]
    assert not forwarded_since(upstream, before)


def test_many_tiny_chunks_past_the_body_limit_are_413(served, upstream):
    before = len(upstream.requests)
    raw = chunked_head(served.extra["key"]) + b"1\r\nx\r\n" * 100_001
    with connect(served.port) as sock:
        try:
            sock.sendall(raw)
        except OSError:
            pass
        sock.settimeout(10)
        got = sock.recv(65536)
    assert got.startswith(b"HTTP/1.1 413"), got[:80]
    assert not forwarded_since(upstream, before)


# -- deadlines (12.1), with an idle timeout shorter than the header timeout ------------------------

SHORT_IDLE, LONG_HEADER = 1.0, 3.0


@pytest.fixture(scope="module")
def short_idle(database_url, mock, tmp_path_factory, upstream):
    tmp = tmp_path_factory.mktemp("short-idle")
    env = lectr_env(database_url, mock, tmp, LECTR_HEADER_TIMEOUT=str(LONG_HEADER),
                    LECTR_IDLE_TIMEOUT=str(SHORT_IDLE),
                    **{f"LECTR_UPSTREAM_{p.upper()}": upstream.url(prefix) for p, prefix in PROVIDER_PREFIXES.items()})
    key = create_org(env, "short-idle")
    server = start_lectr(env, tmp / "serve.log")
    server.extra["key"] = key
    yield server
    stop_lectr(server)


def trickle_until_answered(sock, data: bytes, every: float = 0.4) -> tuple[float, bytes]:
    """Send ``data`` a byte every ``every`` s until Lectr answers or closes; (seconds, answer)."""
    started = time.monotonic()
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        sock.settimeout(every)
        try:
            got = sock.recv(65536)
            return time.monotonic() - started, got
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.monotonic() - started, b""
    sock.settimeout(LONG_HEADER * 2)
    try:
        return time.monotonic() - started, sock.recv(65536)
    except (ConnectionResetError, socket.timeout):
        return time.monotonic() - started, b""


SLOW = b"POST /v1/chat/completions HTTP/1.1\r\nHost: lectr\r\nX-Lectr-Feature: " + b"a" * 60


def test_a_third_keep_alive_request_sent_slowly_gets_408_at_the_header_timeout(short_idle):
    key = short_idle.extra["key"]
    with connect(short_idle.port) as sock:
        for _ in range(2):
            sock.sendall(raw_post(key, "/v1/chat/completions"))
            assert read_replies(sock, ["POST"])[0].status == 200
        elapsed, got = trickle_until_answered(sock, SLOW)
    assert got.startswith(b"HTTP/1.1 408"), (elapsed, got[:60])
    assert elapsed >= LONG_HEADER - 0.5


def test_pipelined_requests_then_a_slow_one_get_answers_then_408(short_idle):
    key = short_idle.extra["key"]
    with connect(short_idle.port) as sock:
        sock.sendall(raw_post(key, "/v1/chat/completions") * 2)
        assert [r.status for r in read_replies(sock, ["POST", "POST"])] == [200, 200]
        elapsed, got = trickle_until_answered(sock, SLOW)
    assert got.startswith(b"HTTP/1.1 408"), (elapsed, got[:60])


@pytest.mark.parametrize("body_framing", ["content-length", "chunked"])
def test_a_head_then_nothing_gets_408_at_the_header_timeout_not_a_silent_close(short_idle, body_framing):
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: lectr\r\n" + (
        b"Content-Length: 100\r\n\r\n" if body_framing == "content-length" else b"Transfer-Encoding: chunked\r\n\r\n")
    with connect(short_idle.port) as sock:
        started = time.monotonic()
        sock.sendall(head)
        sock.settimeout(LONG_HEADER * 3)
        got = sock.recv(65536)
    assert got.startswith(b"HTTP/1.1 408"), got[:60]
    assert time.monotonic() - started >= LONG_HEADER - 0.5


@pytest.mark.parametrize("body_framing", ["content-length", "chunked"])
def test_a_slow_body_gets_408_at_the_header_timeout(short_idle, body_framing):
    if body_framing == "content-length":
        head, body = b"POST /v1/chat/completions HTTP/1.1\r\nHost: lectr\r\nContent-Length: 100\r\n\r\n", b"x" * 100
    else:
        head, body = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: lectr\r\nTransfer-Encoding: chunked\r\n\r\n",
                      b"1\r\nx\r\n" * 50)
    with connect(short_idle.port) as sock:
        sock.sendall(head)
        elapsed, got = trickle_until_answered(sock, body)
    assert got.startswith(b"HTTP/1.1 408"), (elapsed, got[:60])


def test_an_idle_keep_alive_connection_closes_at_the_short_idle_timeout(short_idle):
    with connect(short_idle.port) as sock:
        sock.sendall(raw_post(short_idle.extra["key"], "/v1/chat/completions"))
        read_replies(sock, ["POST"])
        assert is_closed(sock, timeout=LONG_HEADER)


# -- the admin port's log (12.7) --------------------------------------------------------------------

SECRET = "sk-SECRETVALUE0123456789"
ADMIN_ATTACKS = {
    "long-name": f"GET /healthz HTTP/1.1\r\nHost: a\r\nX-{'n' * 9000}{SECRET}: 1\r\n\r\n",
    "long-value": f"GET /healthz HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {SECRET}{'v' * 9000}\r\n\r\n",
    "secret-first-long": f"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Lectr-Key: {SECRET}{'k' * 9000}\r\n\r\n",
    "many-headers": "GET /healthz HTTP/1.1\r\nHost: a\r\n" + "".join(f"X-{i}: {SECRET}\r\n" for i in range(300)) + "\r\n",
    "bad-request-line": f"GET /healthz?k={SECRET} HTTP/1.1 extra\r\nHost: a\r\n\r\n",
    "bad-method": f"G{SECRET}(T /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
    "long-target": f"GET /{SECRET}{'t' * 9000} HTTP/1.1\r\nHost: a\r\n\r\n",
    "no-colon": f"GET /healthz HTTP/1.1\r\nHost: a\r\nAuthorization Bearer {SECRET}\r\n\r\n",
    "bad-length": f"POST /api/v1/orgs HTTP/1.1\r\nHost: a\r\nContent-Length: {SECRET}\r\n\r\n",
    "bad-chunk": f"POST /api/v1/orgs HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{SECRET}\r\n",
    "nul-in-value": f"GET /healthz HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {SECRET}\x00x\r\n\r\n",
    "cr-in-value": f"GET /healthz HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {SECRET}\rx\r\n\r\n",
    "bad-version": f"GET /healthz HTTP/{SECRET}\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("attack", ADMIN_ATTACKS)
def test_the_admin_port_never_logs_a_refused_requests_bytes(served, attack):
    port = int(served.env["LECTR_ADMIN_PORT"])
    seen = len(served.log_text())
    with connect(port) as sock:
        try:
            sock.sendall(ADMIN_ATTACKS[attack].encode("latin-1"))
            sock.settimeout(5)
            sock.recv(65536)
        except OSError:
            pass
    with connect(port) as sock:  # the listener still serves (and the log has been written)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        assert read_replies(sock, ["GET"])[0].status == 200
    log = served.log_text()[seen:]
    assert SECRET not in log and SECRET[:12] not in log
    assert "Traceback" not in log


# -- operator API input (should fix) ------------------------------------------------------------------

ADMIN_SECRET = "op-secret-hostile"


@pytest.fixture(scope="module")
def operator(database_url, mock, tmp_path_factory, upstream):
    tmp = tmp_path_factory.mktemp("operator")
    env = lectr_env(database_url, mock, tmp, LECTR_ADMIN_SECRET=ADMIN_SECRET)
    key = create_org(env, "operator-co")
    server = start_lectr(env, tmp / "serve.log")
    server.extra["key"] = key
    yield server
    stop_lectr(server)


def admin_call(server, method: str, target: str, body: bytes = b"", auth: bytes | None = None,
               extra: bytes = b"") -> tuple[int, bytes]:
    port = int(server.env["LECTR_ADMIN_PORT"])
    auth = b"Bearer " + ADMIN_SECRET.encode() if auth is None else auth
    raw = (b"%s %s HTTP/1.1\r\nHost: a\r\nAuthorization: %s\r\nContent-Type: application/json\r\n%s"
           b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (method.encode(), target.encode("latin-1"), auth,
                                                                 extra, len(body), body))
    with connect(port) as sock:
        sock.sendall(raw)
        data = read_until_closed_or(sock, b"\x00never")
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), rest


@pytest.mark.parametrize("org_id", ["-1", "1.0", "1e3", "99999999999999999999", "\u0661".encode().decode("latin-1"),
                                    "%D9%A1", "0x1", "+1", "%201", "1%00", "0"])
def test_odd_operator_ids_are_400_or_404(operator, org_id):
    status, body = admin_call(operator, "PATCH", f"/api/v1/orgs/{org_id}", b'{"name": "x"}')
    assert status in (400, 404), (status, body)


@pytest.mark.parametrize("name", ['"a\\u0000b"', '"a\\u0001b"', '"a\\u007fb"', '"\\ud800"', '"a\\u2028b"',
                                  '"\\udfff\\ud800"'])
def test_odd_characters_in_an_org_name_are_400(operator, name):
    status, body = admin_call(operator, "POST", "/api/v1/orgs", b'{"name": %s}' % name.encode())
    assert status in (400, 201), (status, body)
    assert status == 400 or "\\u2028" in name


@pytest.mark.parametrize("field,value", [("endpoint", '"http://a\\u0000b"'), ("api_version", '"2024\\u0000"'),
                                         ("endpoint", '"\\ud800"'), ("api_version", '"\\ud800"')])
def test_odd_characters_in_azure_settings_are_400(operator, field, value):
    doc = {"endpoint": '"https://x.openai.azure.com"', "api_version": '"2024-10-21"', field: value}
    body = b"{" + b",".join(b'"%s": %s' % (k.encode(), v.encode()) for k, v in doc.items()) + b"}"
    status, reply = admin_call(operator, "PUT", "/api/v1/orgs/1/azure", body)
    assert status == 400, (status, reply)


@pytest.mark.parametrize("auth", [b"bearer " + ADMIN_SECRET.encode(), b"BEARER  " + ADMIN_SECRET.encode(),
                                  b"Bearer " + ADMIN_SECRET.encode() + b" "])
def test_bearer_in_any_case(operator, auth):
    status, _ = admin_call(operator, "GET", "/api/v1/orgs", auth=auth)
    assert status == 200


@pytest.mark.parametrize("auth", [b"Bearer \xff\xfe", b"Bearer caf\xc3\xa9", b"Basic \xff", b"\xff"])
def test_a_non_ascii_authorization_is_401_not_500(operator, auth):
    status, body = admin_call(operator, "GET", "/api/v1/orgs", auth=auth)
    assert status == 401, (status, body)


@pytest.mark.parametrize("target", ["/api/v1/requests?feature=%ff", "/api/v1/requests?feature=%00",
                                    "/api/v1/requests?model=%ed%a0%80", "/api/v1/requests?limit=%d9%a1",
                                    "/api/v1/requests?cursor=%00", "/api/v1/summary?period=%00"])
def test_odd_org_api_queries_are_400(operator, target):
    port = int(operator.env["LECTR_ADMIN_PORT"])
    raw = (f"GET {target} HTTP/1.1\r\nHost: a\r\nX-Lectr-Key: {operator.extra['key']}\r\n"
           f"Connection: close\r\n\r\n").encode()
    with connect(port) as sock:
        sock.sendall(raw)
        data = read_until_closed_or(sock, b"\x00never")
    status = int(data.split(b" ", 2)[1])
    assert status in (200, 400), data[:300]


@pytest.mark.parametrize("header", [b"X-Lectr-Key: \xff\xfe", b"Cookie: lectr_session=\xff\xfe"])
def test_a_non_utf8_org_credential_is_401_not_500(operator, header):
    port = int(operator.env["LECTR_ADMIN_PORT"])
    with connect(port) as sock:
        sock.sendall(b"GET /api/v1/summary HTTP/1.1\r\nHost: a\r\n%s\r\nConnection: close\r\n\r\n" % header)
        data = read_until_closed_or(sock, b"\x00never")
    assert data.startswith(b"HTTP/1.1 401"), data[:300]
    assert b"Traceback" not in operator.log_path.read_bytes()



# -- back-pressure (12.4): a large non-streamed body, a client paused past the read timeout --------

def test_a_client_paused_past_the_upstream_read_timeout_still_gets_a_whole_large_body(served):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", served.port))
    with sock:
        sock.sendall(raw_post(served.extra["key"], "/v1/chat/completions", extra="x-test: big\r\n"))
        sock.settimeout(10)
        data = sock.recv(4096)
        paused_until = time.monotonic() + 7  # past LECTR_UPSTREAM_READ_TIMEOUT=5
        while time.monotonic() < paused_until:
            time.sleep(0.5)  # the client not reading is the condition under test, not a wait for an event
        while len(data) < len(BIG_REPLY):
            more = sock.recv(1 << 20)
            if not more:
                break
            data += more
    assert data.endswith(BIG_BODY) and data.startswith(b"HTTP/1.1 200")


# -- NUL and control characters in every recorded string field ------------------------------------

def test_nul_and_control_characters_in_recorded_fields_lose_no_row(served, upstream, database_url):
    import asyncio

    import asyncpg
    key = served.extra["key"]
    marker = f"ctl-{time.monotonic_ns()}"
    models = [b'"gpt-4o-mini\\u0000x"', b'"gpt-\\u0001\\u001f\\u007f"', b'"\\ud800"', b'"\\udfff\\ud800x"',
              b'"gpt\\u0000"', b'"\\u0000"']
    sent = 0
    for model in models:
        for extra in (f"X-Lectr-Feature: {marker}\r\n", f"X-Lectr-Feature: {marker}\tx\r\nX-Lectr-Task: a\tb\r\n",
                      f"X-Lectr-Feature: {marker}\xff\x80\r\n"):
            body = b'{"model": %s, "messages": [], "user": "\\u0000"}' % model
            raw = raw_post(key, "/v1/chat/completions", body=body, extra="")
            raw = raw.replace(b"Content-Type", extra.encode("latin-1") + b"Content-Type", 1)
            [reply] = send(served, raw)
            assert reply.status == 200, reply.body
            sent += 1

    async def count() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval("SELECT count(*) FROM request_logs WHERE feature LIKE $1", marker + "%")
        finally:
            await conn.close()
    try:
        wait_for(lambda: asyncio.run(count()) == sent, timeout=20, message=f"{sent} rows")
    except AssertionError:
        raise AssertionError(f"{asyncio.run(count())} of {sent} rows") from None
    assert "Traceback" not in served.log_text()
