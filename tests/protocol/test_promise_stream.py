""""Streams are relayed chunk by chunk as they arrive": every gap, not the first and last.

The mock sends each event of a gated stream only after the test has received the one before
(``x-mock-gate``), and notes when it sent each. A Lectr that buffered any part of a stream
would hold back an event the mock waits on: the mock then sends on after 5 s, and the event
arrives after the next one was sent, which the assertion below names.
"""

from __future__ import annotations

import uuid

import orjson
import pytest

from tests.rawhttp import exchange
from tests.protocol.test_promise_bytes import MODELS, server  # noqa: F401  (the shared module fixture)


def _gated_stream(port: int, mock, headers: list[tuple[str, str]], model: str, chunks: int):
    gate = uuid.uuid4().hex
    arrivals: list[float] = []

    def on_read(response, data: bytes) -> None:
        # One release per event seen: the mock sends the next only then.
        for _ in range(data.count(b"data: ")):
            arrivals.append(response.reads[-1][0])
            mock.release(gate)

    body = orjson.dumps({"model": model, "stream": True, "stream_options": {"include_usage": True},
                         "messages": [{"role": "user", "content": "x"}]})
    response = exchange(port, "POST", "/v1/chat/completions",
                        [*headers, ("Content-Type", "application/json"), ("x-mock-gate", gate),
                         ("x-mock-chunks", str(chunks))], body, on_read=on_read)
    return response, arrivals, mock.sent_at[gate]


@pytest.mark.parametrize("provider", MODELS, ids=list(MODELS))
def test_every_stream_event_arrives_before_the_next_is_sent(server, mock, provider):
    headers = [("Authorization", "Bearer sk-x"), ("X-Lectr-Key", server.extra["key"])]
    if provider == "azure":
        headers.append(("X-Lectr-Provider", "azure"))
    chunks = 6
    response, arrivals, sent = _gated_stream(server.port, mock, headers, MODELS[provider], chunks)
    events = chunks + 4  # role, the content chunks, finish, usage, [DONE]
    assert len(sent) == events
    assert len(arrivals) == events
    for i in range(events - 1):
        assert arrivals[i] < sent[i + 1], f"event {i} reached the client only after the mock sent event {i + 1}"
    assert response.raw.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
