"""WebSocket upgrades (OpenAI's Realtime API) relayed as a tunnel after the provider's 101.

A real aiohttp WebSocket server plays the provider and a real aiohttp WebSocket client the
app, through ``lectr serve``; raw sockets check the bytes on the wire.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import threading

import aiohttp
import orjson
import pytest
from aiohttp import web

from lectr.settings.config import ProxyLimits
from lectr.recording.websocket import realtime_usage
from tests.conftest import PROVIDER_PREFIXES, ProxyHarness, create_org, lectr_env, start_lectr, stop_lectr
from tests.httpcheck import connect
from tests.rawupstream import RawUpstream, json_reply
from tests.e2e.test_recording import wait_for_rows

MODEL = "gpt-4o-realtime-preview"


def usage(n: int) -> dict:
    return {"total_tokens": 30 + n, "input_tokens": 10 + n, "output_tokens": 20,
            "input_token_details": {"cached_tokens": 2, "text_tokens": 10 + n, "audio_tokens": 0},
            "output_token_details": {"text_tokens": 20, "audio_tokens": 0}}


class RealtimeMock:
    """A Realtime-like WebSocket server on its own loop and thread: one ``response.done`` per message."""

    def __init__(self) -> None:
        self.port = 0
        self.seen: list[dict] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append({"path": request.path_qs, "headers": dict(request.headers)})
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "session.created", "session": {"model": request.query.get("model")}})
        n = 0
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            if msg.data == "bye":
                break
            n += 1
            await ws.send_json({"type": "response.output_text.delta", "delta": msg.data.upper() * 50})
            await ws.send_json({"type": "response.done", "response": {"id": f"resp_{n}", "usage": usage(n)}})
        await ws.close()
        return ws

    def start(self) -> RealtimeMock:
        def run() -> None:
            asyncio.set_event_loop(self._loop)
            app = web.Application()
            app.router.add_get("/openai/v1/realtime", self._handle)
            self._runner = web.AppRunner(app)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            self._ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def url(self, prefix: str) -> str:
        return f"http://127.0.0.1:{self.port}{prefix}"


@pytest.fixture(scope="module")
def realtime():
    server = RealtimeMock().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tunnel_server(database_url, realtime, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tunnel")
    env = lectr_env(database_url, realtime, tmp, LECTR_FLUSH_INTERVAL="0.2")
    key = create_org(env, "realtime")
    server = start_lectr(env, tmp / "serve.log")
    server.extra["key"] = key
    yield server
    stop_lectr(server)


async def session(port: int, key: str, feature: str, compress: int, messages: list[str]) -> list[dict]:
    received: list[dict] = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"http://127.0.0.1:{port}/v1/realtime?model={MODEL}", compress=compress,
                                   headers={"X-Lectr-Key": key, "Authorization": "Bearer sk-realtime",
                                            "X-Lectr-Feature": feature, "OpenAI-Beta": "realtime=v1"}) as ws:
            received.append(await ws.receive_json(timeout=10))
            for text in messages:
                await ws.send_str(text)
                received.append(await ws.receive_json(timeout=10))
                received.append(await ws.receive_json(timeout=10))
            await ws.send_str("bye")
            closing = await ws.receive(timeout=10)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    return received


@pytest.mark.parametrize("compress", [0, 15], ids=["plain", "permessage-deflate"])
def test_a_realtime_session_is_relayed_and_recorded_with_its_usage(tunnel_server, realtime, database_url, compress):
    feature = f"realtime-{compress}"
    received = asyncio.run(session(tunnel_server.port, tunnel_server.extra["key"], feature, compress,
                                   ["hello", "again", "third"]))
    assert received[0] == {"type": "session.created", "session": {"model": MODEL}}
    assert [r["type"] for r in received[1:]] == ["response.output_text.delta", "response.done"] * 3
    assert received[1]["delta"] == "HELLO" * 50
    seen = realtime.seen[-1]
    assert seen["path"] == f"/openai/v1/realtime?model={MODEL}"
    assert seen["headers"]["Authorization"] == "Bearer sk-realtime"
    assert not any(name.lower().startswith("x-lectr-") for name in seen["headers"])
    if compress:
        assert "permessage-deflate" in seen["headers"].get("Sec-WebSocket-Extensions", "")
    [row] = wait_for_rows(database_url, f"feature = '{feature}'", 1)
    assert (row["status_code"], row["error_type"], row["provider"], row["model"]) == (101, None, "openai", MODEL)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (11 + 12 + 13, 60, 6)
    assert row["token_source"] == "provider" and not row["provider_unknown"]
    assert row["bytes_in"] > 0 and row["bytes_out"] > 0


# -- raw sockets: the bytes on the wire, and exactly one response --------------------------------

def _accept(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85").digest())


def _frame(payload: bytes, *, mask: bool) -> bytes:
    head = bytes([0x81, (0x80 if mask else 0) | len(payload)])  # FIN + text, short payloads only
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


SERVER_FRAMES = _frame(b'{"type":"session.created"}', mask=False)
DONE_FRAME = _frame(b'{"type":"response.done","response":{"usage":{"input_tokens":7,"output_tokens":5}}}',
                    mask=False)
HOLD_CLOSED = threading.Event()  # set when a "hold" tunnel saw the client's close reach it


def realtime_behaviour(request):
    if request.header(b"upgrade") is None:
        return json_reply()
    key = request.header(b"sec-websocket-key")
    if b"hold=1" in request.target:
        def hold(sock) -> None:  # 101, then wait for the other side to close
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + _accept(key) + b"\r\n\r\n")
            while sock.recv(65536):
                pass
            HOLD_CLOSED.set()
        return hold

    def tunnel(sock) -> None:
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + _accept(key) + b"\r\nX-Provider: raw\r\n\r\n" + SERVER_FRAMES)
        data = b""
        while len(data) < 2 + 4 + 5:  # the client's one masked 5-byte frame
            chunk = sock.recv(65536)
            if not chunk:
                return
            data += chunk
        payload = bytes(c ^ data[2 + i % 4] for i, c in enumerate(data[6:11]))
        sock.sendall(_frame(payload.upper(), mask=False) + DONE_FRAME)
    return tunnel


@pytest.fixture(scope="module")
def raw_proxied():
    upstream = RawUpstream(realtime_behaviour).start()
    harness = ProxyHarness(upstream, ProxyLimits(max_body_bytes=1_000_000, max_header_bytes=8192,
                                                 header_timeout=5.0, idle_timeout=5.0))
    harness.start()
    yield harness, upstream
    harness.stop()
    upstream.stop()


def upgrade_request(harness, path: str = f"/v1/realtime?model={MODEL}") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: lectr\r\nX-Lectr-Key: {harness.key}\r\n"
            "Authorization: Bearer sk-test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode()


def read_until_closed(sock) -> bytes:
    data = b""
    sock.settimeout(10)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def test_the_tunnel_relays_bytes_both_ways_and_answers_once(raw_proxied):
    harness, upstream = raw_proxied
    harness.events()
    with connect(harness.port) as sock:
        # The client's first frame follows its request at once, before the 101.
        sock.sendall(upgrade_request(harness) + _frame(b"hello", mask=True))
        data = read_until_closed(sock)
    head, _, frames = data.partition(b"\r\n\r\n")
    assert head == (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + _accept(b"dGhlIHNhbXBsZSBub25jZQ==") + b"\r\nX-Provider: raw")
    assert frames == SERVER_FRAMES + _frame(b"HELLO", mask=False) + DONE_FRAME  # and nothing after
    [seen] = [r for r in upstream.requests if r.header(b"upgrade")]
    assert seen.target == (PROVIDER_PREFIXES["openai"] + f"/realtime?model={MODEL}").encode()
    assert (seen.header(b"connection"), seen.header(b"upgrade")) == (b"Upgrade", b"websocket")
    assert seen.header(b"sec-websocket-key") == b"dGhlIHNhbXBsZSBub25jZQ=="
    assert b"x-lectr" not in seen.raw.lower()
    [event] = harness.events()
    assert (event.status_code, event.error_type, event.model, event.provider) == (101, None, MODEL, "openai")
    assert event.bytes_out == len(frames) and event.bytes_in == 2 + 4 + 5
    assert b"".join(event.response_chunks) == frames
    assert realtime_usage(event.response_chunks, event.content_encoding) == (7, 5, 0, None, "provider")


def test_a_client_closing_ends_the_tunnel_without_an_error(raw_proxied):
    harness, _ = raw_proxied
    harness.events()
    HOLD_CLOSED.clear()
    with connect(harness.port) as sock:
        sock.sendall(upgrade_request(harness, f"/v1/realtime?model={MODEL}&hold=1"))
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 101 ")
    assert HOLD_CLOSED.wait(10)  # the provider's side was closed too
    [event] = harness.events()
    assert (event.status_code, event.error_type, event.error_origin) == (101, None, None)


def test_a_declined_upgrade_gets_the_providers_answer_once(raw_proxied):
    harness, upstream = raw_proxied
    upstream.behave = lambda req: json_reply(b'{"error":"no"}', b"403 Forbidden")
    try:
        with connect(harness.port) as sock:
            sock.sendall(upgrade_request(harness))
            data = read_until_closed(sock)
    finally:
        upstream.behave = realtime_behaviour
    assert data.startswith(b"HTTP/1.1 403 Forbidden\r\n") and data.endswith(b'{"error":"no"}')
    assert data.count(b"HTTP/1.1") == 1


def test_the_pool_serves_plain_requests_after_tunnels(raw_proxied):
    harness, _ = raw_proxied
    for _ in range(3):
        with connect(harness.port) as sock:
            sock.sendall(upgrade_request(harness) + _frame(b"hello", mask=True))
            assert read_until_closed(sock).startswith(b"HTTP/1.1 101 ")

    async def pool_state():
        [pool] = harness._pools._pools.values()
        return pool.open, len(pool.idle)

    # A switched connection left the pool: it holds no slot, and none of the idle ones is it.
    open_count, idle = harness.call(pool_state)
    assert open_count == idle
    with connect(harness.port) as sock:
        sock.sendall(f"GET /v1/models HTTP/1.1\r\nHost: lectr\r\nX-Lectr-Key: {harness.key}\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
