"""The drain of a planned stop (SIGTERM), ordering by ordering.

Mostly on the in-process proxy: a scripted raw-socket provider holds each response where the
test wants it and ``ProxyServer.stop`` is started on the proxy's loop at that moment. What is
checked: what the client receives, what the event says, and that the drain ends for the right
reason (work done, or its deadline). Then ``lectr serve --workers 2`` under SIGTERM, and the
supervisor's exit status.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import threading

import orjson
import pytest

from lectr.settings.config import ProxyLimits, Settings
from lectr.platform.supervisor import COLD, Supervisor
from tests.conftest import ProxyHarness, sdk_client, wait_for
from tests.httpcheck import connect, is_closed, read_replies, request
from tests.rawupstream import RawUpstream, json_reply
from tests.e2e.test_promise_lifecycle import org_rows

SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
CHAT = orjson.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "x"}]})


def sse(data: bytes) -> bytes:
    """One SSE event as one chunk of a chunked body."""
    event = b"data: " + data + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def delta(text: str) -> bytes:
    return sse(orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}))


class Script:
    """The provider's side: each response is sent in parts, the next part once the test says."""

    def __init__(self, *parts: bytes) -> None:
        self.parts = parts
        self.gates = [threading.Event() for _ in parts]
        self.sent = [threading.Event() for _ in parts]

    def release(self, upto: int) -> None:
        for gate in self.gates[:upto + 1]:
            gate.set()

    def __call__(self, request):
        def run(sock: socket.socket) -> None:
            for part, gate, sent in zip(self.parts, self.gates, self.sent):
                if not gate.wait(30):
                    return
                try:
                    sock.sendall(part)
                except OSError:
                    return
                sent.set()
            # keep the connection open until Lectr is done with it
            sock.settimeout(30)
            try:
                while sock.recv(65536):
                    pass
            except OSError:
                pass
        return run


@pytest.fixture()
def proxy():
    made = []

    def make(script: Script) -> ProxyHarness:
        upstream = RawUpstream(script).start()
        harness = ProxyHarness(upstream, ProxyLimits(max_body_bytes=1_000_000, max_header_bytes=8192,
                                                     header_timeout=10.0, idle_timeout=30.0))
        harness.start()
        made.append((harness, upstream))
        return harness

    yield make
    for harness, upstream in made:
        harness.stop()
        upstream.stop()


def begin_drain(harness: ProxyHarness, timeout: float):
    """Start ``ProxyServer.stop(timeout)`` on the proxy's loop; return its future and once draining."""
    future = asyncio.run_coroutine_threadsafe(harness._server.stop(timeout), harness._loop)
    wait_for(lambda: harness._server.ctx.draining, timeout=5, message="the drain to begin")
    return future


def post(harness: ProxyHarness, body: bytes = CHAT) -> bytes:
    return request("POST", "/v1/chat/completions", {"X-Lectr-Key": harness.key, "Content-Type": "application/json"},
                   body)


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    """What the client receives until ``marker``, or until the connection ends (closed or cut)."""
    data = b""
    while marker not in data:
        try:
            more = sock.recv(65536)
        except ConnectionResetError:
            break
        if not more:
            break
        data += more
    return data


def arriving(harness: ProxyHarness) -> bool:
    """A connection is part-way through receiving a request (read on the proxy's own loop)."""
    async def check() -> bool:
        return any(conn.in_message for conn in harness._server.ctx.connections)
    return harness.call(check)


def test_a_client_that_hangs_up_right_after_the_last_event_leaves_a_complete_record(proxy):
    # The openai SDK closes its connection on reading `data: [DONE]`, often before the provider's
    # last chunk has reached Lectr: the answer was whole, so the record must say so.
    script = Script(SSE_HEAD + delta("Hello") + sse(b"[DONE]"), LAST_CHUNK)
    harness = proxy(script)
    harness.events()
    script.release(0)
    client = sdk_client(f"http://127.0.0.1:{harness.port}/v1", **{"X-Lectr-Key": harness.key})
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                                 stream=True))
    assert [c.choices[0].delta.content for c in chunks] == ["Hello"]
    [event] = wait_for(harness.events, timeout=5, message="the stream's event")
    script.release(1)
    assert (event.status_code, event.stream, event.error_type, event.error_origin) == (200, True, None, None)


def test_a_client_that_hangs_up_before_the_last_event_is_still_client_disconnected(proxy):
    script = Script(SSE_HEAD + delta("Hello"), delta(" world") + sse(b"[DONE]") + LAST_CHUNK)
    harness = proxy(script)
    harness.events()
    script.release(0)
    with connect(harness.port) as sock:
        sock.sendall(post(harness))
        read_until(sock, b"Hello")
    [event] = wait_for(harness.events, timeout=5, message="the hang-up's event")
    script.release(1)
    assert (event.status_code, event.error_type, event.error_origin) == (200, "client_disconnected", "client")


def test_a_stream_in_flight_when_the_drain_begins_finishes_and_then_the_connection_closes(proxy):
    script = Script(SSE_HEAD + delta("Hello"), delta(" world"), sse(b"[DONE]") + LAST_CHUNK)
    harness = proxy(script)
    harness.events()
    script.release(0)
    with connect(harness.port) as sock:
        sock.sendall(post(harness))
        read_until(sock, b"Hello")
        drain = begin_drain(harness, 30)
        script.release(2)
        rest = read_until(sock, LAST_CHUNK)
        assert b" world" in rest and rest.endswith(b"[DONE]\n\n\r\n" + LAST_CHUNK)
        assert is_closed(sock)  # nothing more will be read from it: Lectr closes it
    drain.result(20)  # the drain ended because the work did, not at its 30 s deadline
    [event] = harness.events()
    assert (event.status_code, event.stream, event.error_type) == (200, True, None)


def test_a_response_that_starts_during_the_drain_says_connection_close(proxy):
    body = b'{"id":"x","object":"chat.completion","choices":[]}'
    script = Script(json_reply(body))
    harness = proxy(script)
    harness.events()
    with connect(harness.port) as sock:
        sock.sendall(post(harness, b'{"model":"gpt-4o-mini"}'))
        wait_for(lambda: harness._server.ctx.inflight, timeout=5, message="the request in flight")
        drain = begin_drain(harness, 30)
        script.release(0)
        [reply] = read_replies(sock, ["POST"])
        assert (reply.status, reply.body, reply.headers.get("connection")) == (200, body, "close")
        assert is_closed(sock)
    drain.result(20)
    [event] = harness.events()
    assert (event.status_code, event.error_type) == (200, None)


def test_a_request_still_arriving_when_the_drain_begins_is_read_whole_and_answered(proxy):
    body = b'{"id":"x","object":"chat.completion","choices":[]}'
    script = Script(json_reply(body))
    script.release(0)
    harness = proxy(script)
    harness.events()
    raw = post(harness, b'{"model":"gpt-4o-mini","messages":[]}')
    with connect(harness.port) as sock:
        sock.sendall(raw[:-10])
        wait_for(lambda: arriving(harness), timeout=5, message="the request to be arriving")
        drain = begin_drain(harness, 30)
        sock.sendall(raw[-10:])
        [reply] = read_replies(sock, ["POST"])
        assert (reply.status, reply.body, reply.headers.get("connection")) == (200, body, "close")
        assert is_closed(sock)
    drain.result(20)
    [event] = harness.events()
    assert (event.status_code, event.error_type) == (200, None)


def test_idle_and_silent_connections_do_not_hold_up_the_drain(proxy):
    script = Script(json_reply())
    script.release(0)
    harness = proxy(script)
    with connect(harness.port) as kept, connect(harness.port) as silent:
        kept.sendall(request("GET", "/healthz"))
        [reply] = read_replies(kept, ["GET"])
        assert reply.status == 200 and "connection" not in reply.headers  # kept alive
        wait_for(lambda: len(harness._server.ctx.connections) == 2, timeout=5, message="both connections")
        drain = begin_drain(harness, 60)
        drain.result(20)  # not the 60 s deadline: nothing was in flight
        assert is_closed(kept) and is_closed(silent)


def test_the_drain_deadline_cuts_a_stuck_stream_and_records_it_as_lectrs(proxy):
    script = Script(SSE_HEAD + delta("Hello"), sse(b"[DONE]") + LAST_CHUNK)  # the second part never comes
    harness = proxy(script)
    harness.events()
    script.release(0)
    with connect(harness.port) as sock:
        sock.sendall(post(harness))
        got = read_until(sock, b"Hello")
        begin_drain(harness, 0.5).result(20)
        got += read_until(sock, LAST_CHUNK)  # reads until the cut
        assert LAST_CHUNK not in got  # cut, so the client cannot take it for a whole body
    [event] = harness.events()
    assert (event.status_code, event.error_type, event.error_origin) == (200, "shutdown_timeout", "lectr")


def test_the_drain_deadline_answers_a_request_the_provider_never_answered_with_503(proxy):
    script = Script(json_reply())  # never released: the provider sits on the request
    harness = proxy(script)
    harness.events()
    with connect(harness.port) as sock:
        sock.sendall(post(harness, b'{"model":"gpt-4o-mini"}'))
        wait_for(lambda: harness._server.ctx.inflight, timeout=5, message="the request in flight")
        begin_drain(harness, 0.5).result(20)
        [reply] = read_replies(sock, ["POST"])
        assert is_closed(sock)
    error = orjson.loads(reply.body)["error"]
    assert (reply.status, reply.headers.get("connection")) == (503, "close")
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "shutdown_timeout"
    [event] = harness.events()
    assert (event.status_code, event.error_type, event.error_origin) == (503, "shutdown_timeout", "lectr")
    script.release(0)


def test_several_streams_in_flight_all_finish_before_the_drain_ends(proxy):
    script = Script(SSE_HEAD + delta("Hello"), delta(" world") + sse(b"[DONE]") + LAST_CHUNK)
    harness = proxy(script)
    harness.events()
    script.release(0)
    socks = [connect(harness.port) for _ in range(3)]
    try:
        for sock in socks:
            sock.sendall(post(harness))
        for sock in socks:
            read_until(sock, b"Hello")
        drain = begin_drain(harness, 30)
        script.release(1)
        for sock in socks:
            assert read_until(sock, LAST_CHUNK).endswith(LAST_CHUNK)
            assert is_closed(sock)
    finally:
        for sock in socks:
            sock.close()
    drain.result(20)
    events = harness.events()
    assert [(e.status_code, e.error_type) for e in events] == [(200, None)] * 3


def test_sigterm_with_streams_in_flight_on_two_workers_finishes_them_records_them_and_exits_0(
        lectr_factory, mock, database_url):
    server = lectr_factory.start(("drain-workers",), LECTR_WORKERS="2")
    streams = []
    for n in range(3):
        client = sdk_client(server.base_url, **{"X-Lectr-Key": server.extra["key"]})
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True,
            extra_headers={"x-mock-gate": f"drain-workers-{n}", "x-mock-chunks": "3"})
        chunks = iter(stream)
        streams.append((f"drain-workers-{n}", chunks, [next(chunks)]))
    server.proc.send_signal(signal.SIGTERM)
    # Every worker that serves is draining (under load one may still have been starting: the
    # SIGTERM then ends it before it ever serves, which is a clean stop too).
    wait_for(lambda: 0 < (log := server.log_text()).count("shutting down") == log.count(" proxy on "), timeout=30,
             message="every serving worker to be draining")
    for gate, chunks, texts in streams:
        mock.release(gate)
        for chunk in chunks:
            texts.append(chunk)
            mock.release(gate)
        assert "".join(c.choices[0].delta.content or "" for c in texts if c.choices) == "Hello from the"
    assert server.proc.wait(90) == 0, server.log_text()[-4000:]
    rows = org_rows(database_url, "drain-workers")
    assert [(r["status_code"], r["stream"], r["error_type"]) for r in rows] == [(200, True, None)] * 3


@pytest.mark.parametrize(("handler", "code"), [
    ("", 0),  # still starting, no handler yet: the SIGTERM ends it, with nothing in flight to lose
    ("signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))", 0),  # drained and exited 0
    ("signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))", 1),  # its stop failed
])
async def test_the_supervisor_exits_0_only_when_every_child_stopped_cleanly(tmp_path, handler, code):
    supervisor = Supervisor(Settings.from_env({"LECTR_DATA_DIR": str(tmp_path)}), 1)

    async def child(name: str, handler: str):
        ready = tmp_path / name
        script = f"import pathlib, signal, sys, time\n{handler}\npathlib.Path({str(ready)!r}).touch()\ntime.sleep(60)"
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
        while not ready.exists():
            await asyncio.sleep(0.02)
        return proc

    supervisor.procs = {0: await child("worker", handler),
                        COLD: await child("cold", "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))")}
    assert await supervisor._stop([]) == code
    assert all(proc.returncode is not None for proc in supervisor.procs.values())


async def test_a_child_started_just_as_the_supervisor_stops_is_stopped_too(tmp_path, monkeypatch):
    supervisor = Supervisor(Settings.from_env({"LECTR_DATA_DIR": str(tmp_path)}), 2)
    spawn = asyncio.create_subprocess_exec

    async def spawn_as_the_stop_begins(*args, **kwargs):
        supervisor.stopping = True  # _stop has collected the children to stop; this one is not among them
        return await spawn(sys.executable, "-c", "import time; time.sleep(60)")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spawn_as_the_stop_begins)
    await asyncio.wait_for(supervisor._keep_running(0, {}), 30)  # its watcher, which _stop awaits, ends
    assert supervisor.procs[0].returncode is not None
