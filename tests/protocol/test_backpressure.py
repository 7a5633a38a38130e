"""Back-pressure is not the provider's fault: time Lectr spends not reading, because the
client is not reading, never counts against the provider's read deadline."""

from __future__ import annotations

import socket
import time

import orjson
import pytest

from lectr.devtools.mock_provider import stream_events
from tests.conftest import create_org, lectr_env, start_lectr, stop_lectr
from tests.httpcheck import read_replies, request
from tests.e2e.test_recording import wait_for_rows

READ_TIMEOUT = 1.0
CHUNKS = 25_000  # about 5 MB of SSE: far more than every socket buffer on the way holds


@pytest.fixture(scope="module")
def slow_reader_server(database_url, mock, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backpressure")
    env = lectr_env(database_url, mock, tmp, LECTR_FLUSH_INTERVAL="0.2",
                    LECTR_UPSTREAM_READ_TIMEOUT=str(READ_TIMEOUT))
    key = create_org(env, "backpressure")
    server = start_lectr(env, tmp / "serve.log")
    server.extra["key"] = key
    yield server
    stop_lectr(server)


def test_a_client_that_stops_reading_gets_the_whole_stream_and_a_success_row(slow_reader_server, database_url):
    server = slow_reader_server
    body = orjson.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    raw = request("POST", "/v1/chat/completions",
                  {"X-Lectr-Key": server.extra["key"], "Authorization": "Bearer sk-test",
                   "Content-Type": "application/json", "X-Lectr-Feature": "paused-reader",
                   "x-mock-chunks": str(CHUNKS)}, body)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        sock.settimeout(30)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(raw)
        # Not reading, for three read timeouts: Lectr's buffers fill and it pauses the provider.
        time.sleep(3 * READ_TIMEOUT)
        [reply] = read_replies(sock, ["POST"])
    assert reply.status == 200
    assert reply.body == b"".join(stream_events("gpt-4o-mini", CHUNKS, False))
    [row] = wait_for_rows(database_url, "feature = 'paused-reader'", 1)
    assert (row["status_code"], row["error_type"], row["error_origin"]) == (200, None, None)
