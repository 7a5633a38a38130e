"""A mock OpenAI-compatible provider over real HTTP, for tests, benchmarks and offline trials.

Any path ending in ``/chat/completions`` answers a completion (or an SSE stream when the body
asks for one); a path ending in ``/models`` lists models. Request headers script the rest:

- ``x-mock-status: 429``  answer with that status and an OpenAI-shaped error
- ``x-mock-delay-ms: 50``  wait before the response head
- ``x-mock-chunk-delay-ms: 20``  wait between stream chunks
- ``x-mock-chunks: 5``  number of content chunks in a stream (default 3)
- ``x-mock-chunk-chars: 1000``  characters of text in each content chunk (default: one word)
- ``x-mock-gzip: 1``  gzip the JSON body (``content-encoding: gzip``)
- ``x-mock-chunked: 1``  send a JSON body chunked instead of with a length
- ``x-mock-close: 1``  close the connection without answering
- ``x-mock-usage: {"prompt_tokens": 250000, ...}``  the ``usage`` object of a JSON completion
- ``x-mock-reply: NAME``  answer with the body registered by ``add_reply(NAME, ...)``, as it is
- ``x-mock-reason: Slow Down``  the reason phrase of the status line
- ``x-mock-header-case: 1``  send the response head's names in mixed case (``Content-Type``)
- ``x-mock-gate: NAME``  in a stream, send each event after the first only once the test
  calls ``release(NAME)`` (or 5 s passed); the send times are kept in ``sent_at[NAME]``

The mock sends no ``Date`` header (nor anything else that changes between two identical
requests), so a response read directly and one read through Lectr can be compared byte for byte.

Streams carry a final usage chunk only when ``stream_options.include_usage`` is true, as
OpenAI's do. Every request is recorded (method, target, headers, body) for tests to inspect;
the last ``record_limit`` are kept, and ``received`` counts every request ever answered (it only
grows, so "nothing reached the provider" can always be checked).
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import time

from collections import deque
from dataclasses import dataclass

import httptools
import orjson

_JSON = b"application/json"
_SSE = b"text/event-stream"
_WORDS = [b"Hello", b" from", b" the", b" mock", b" provider", b".", b" It", b" streams", b" words"]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the mock received it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_names(self) -> list[str]:
        return [k.lower() for k, _ in self.headers]


def completion_body(model: str, prompt_tokens: int = 12, completion_tokens: int = 9,
                    usage: dict | None = None) -> bytes:
    """A chat completion in OpenAI's shape, with usage (``usage`` replaces the default one)."""
    return orjson.dumps({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1767225600, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the mock provider."},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": usage if usage is not None else {
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0}},
    })


def stream_events(model: str, chunks: int, include_usage: bool, chunk_chars: int = 0) -> list[bytes]:
    """The SSE events of a streamed chat completion, ending with ``data: [DONE]``.

    Each content chunk is one word, or ``chunk_chars`` characters of words when that is set.
    """
    def event(delta: dict, finish: str | None = None, usage: dict | None = None, choices: bool = True) -> bytes:
        doc = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1767225600,
               "model": model,
               "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
               if choices else []}
        if include_usage:
            doc["usage"] = usage
        return b"data: " + orjson.dumps(doc) + b"\n\n"

    out = [event({"role": "assistant", "content": ""})]
    words = b"".join(_WORDS).decode() * (chunk_chars // 40 + 2) if chunk_chars else ""
    for i in range(chunks):
        if chunk_chars:
            start = i % 40
            out.append(event({"content": words[start:start + chunk_chars]}))
        else:
            out.append(event({"content": _WORDS[i % len(_WORDS)].decode()}))
    out.append(event({}, "stop"))
    if include_usage:
        out.append(event({}, usage={"prompt_tokens": 12, "completion_tokens": chunks,
                                    "total_tokens": 12 + chunks}, choices=False))
    out.append(b"data: [DONE]\n\n")
    return out


def _head(status: int, content_type: bytes, extra: list[bytes], reason: bytes | None = None,
          mixed_case: bool = False) -> bytes:
    reasons = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found",
               429: b"Too Many Requests", 500: b"Internal Server Error", 503: b"Service Unavailable"}
    head = b"".join([
        b"content-type: " + content_type + b"\r\n",
        b"x-request-id: req_mock\r\nopenai-processing-ms: 1\r\nx-ratelimit-remaining-requests: 9999\r\n",
        *extra,
    ])
    if mixed_case:  # e.g. Content-Type, X-Request-Id: a relay that re-cased names would show
        head = b"\r\n".join(line.split(b":", 1)[0].title() + b":" + line.split(b":", 1)[1] if line else line
                             for line in head.split(b"\r\n"))
    return b"HTTP/1.1 %d %s\r\n" % (status, reason or reasons.get(status, b"Status")) + head + b"\r\n"


class _MockConnection(asyncio.Protocol):
    def __init__(self, mock: MockProvider) -> None:
        self.mock = mock
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue = asyncio.Queue()
        self.worker: asyncio.Task | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.worker = asyncio.get_running_loop().create_task(self._serve())

    def connection_lost(self, exc) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.queue.put_nowait((self.parser.get_method(), self._url, self._headers, b"".join(self._body)))

    async def _serve(self) -> None:
        while True:
            method, url, headers, body = await self.queue.get()
            await self.mock.respond(self.transport, method, url, headers, body)


class MockProvider:
    """The mock provider's server; start it on a loop or in a thread of its own."""

    def __init__(self, *, record: bool = True, record_limit: int = 1000) -> None:
        self.record = record
        self.requests: deque[RecordedRequest] = deque(maxlen=record_limit)
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._canned: dict[bytes, bytes] = {}
        self._replies: dict[bytes, bytes] = {}
        self.streams_cut = 0  # streams whose client left before the end
        self.received = 0  # every request ever received; unlike ``requests``, never capped
        self.sent_at: dict[str, list[float]] = {}  # gated streams: time.monotonic() of each event sent
        self._gates: dict[str, asyncio.Semaphore] = {}

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._server = await loop.create_server(lambda: _MockConnection(self), host, port, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _close_server(self) -> None:
        await self.stop()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def start_in_thread(self, host: str = "127.0.0.1") -> int:
        """Run on a private loop in a daemon thread (for synchronous tests); return the port."""
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start(host))
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._close_server())
                loop.close()

        self._thread = threading.Thread(target=run, name="mock-provider", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.port

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def add_reply(self, name: str, parts: list[bytes], *, content_type: bytes = _JSON,
                  headers: tuple[bytes, ...] = ()) -> None:
        """Answer requests carrying ``x-mock-reply: NAME`` with ``parts`` as the body, one chunk each.

        ``headers`` are extra header lines without CRLF (``b"content-encoding: zstd"``); the
        body is sent exactly as given, so a test can script any shape a provider sends.
        """
        framed = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts if part)
        extra = [line + b"\r\n" for line in headers] + [b"transfer-encoding: chunked\r\n"]
        self._replies[name.encode()] = _head(200, content_type, extra) + framed + b"0\r\n\r\n"

    def url(self, prefix: str = "/v1") -> str:
        return f"http://127.0.0.1:{self.port}{prefix}"

    def last(self) -> RecordedRequest:
        return self.requests[-1]

    def _gate(self, name: str) -> asyncio.Semaphore:
        return self._gates.setdefault(name, asyncio.Semaphore(0))

    def release(self, name: str) -> None:
        """Let the gated stream ``name`` send its next event (thread-safe)."""
        self._loop.call_soon_threadsafe(lambda: self._gate(name).release())

    async def respond(self, transport, method: bytes, url: bytes, raw_headers, body: bytes) -> None:
        headers = {k.lower(): v for k, v in raw_headers}
        self.received += 1
        if self.record:
            self.requests.append(RecordedRequest(
                method.decode(), url.decode("latin-1"),
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw_headers], body))
        if headers.get(b"x-mock-close"):
            transport.close()
            return
        delay = int(headers.get(b"x-mock-delay-ms", b"0"))
        if delay:
            await asyncio.sleep(delay / 1000)
        status = int(headers.get(b"x-mock-status", b"200"))
        path = url.partition(b"?")[0]
        style = {"reason": headers.get(b"x-mock-reason"), "mixed_case": bool(headers.get(b"x-mock-header-case"))}
        if status != 200:
            err = orjson.dumps({"error": {"message": f"mock error {status}", "type": "mock_error",
                                          "param": None, "code": f"mock_{status}"}})
            transport.write(_head(status, _JSON, [b"content-length: %d\r\n" % len(err)], **style) + err)
            return
        scripted = self._replies.get(headers.get(b"x-mock-reply", b""))
        if scripted is not None:
            transport.write(scripted)
            return
        if path.endswith(b"/models"):
            doc = orjson.dumps({"object": "list", "data": [
                {"id": "gpt-4o-mini", "object": "model", "created": 1, "owned_by": "mock"}]})
            transport.write(_head(200, _JSON, [b"content-length: %d\r\n" % len(doc)], **style) + doc)
            return
        request = orjson.loads(body) if body[:1] == b"{" else {}
        model = request.get("model", "unknown") if isinstance(request, dict) else "unknown"
        if isinstance(request, dict) and request.get("stream") is True:
            options = request.get("stream_options") or {}
            gate = headers.get(b"x-mock-gate")
            await self._stream(transport, model, int(headers.get(b"x-mock-chunks", b"3")),
                               bool(options.get("include_usage")),
                               int(headers.get(b"x-mock-chunk-delay-ms", b"0")),
                               int(headers.get(b"x-mock-chunk-chars", b"0")),
                               gate.decode() if gate else None, style)
            return
        await self._complete(transport, model, headers, style)

    async def _complete(self, transport, model: str, headers: dict, style: dict) -> None:
        gz = bool(headers.get(b"x-mock-gzip"))
        chunked = bool(headers.get(b"x-mock-chunked"))
        usage = headers.get(b"x-mock-usage")
        if not gz and not chunked and usage is None and not style["reason"] and not style["mixed_case"]:
            cached = self._canned.get(model.encode())
            if cached is None:
                doc = completion_body(model)
                cached = _head(200, _JSON, [b"content-length: %d\r\n" % len(doc)]) + doc
                if len(self._canned) < 256:
                    self._canned[model.encode()] = cached
            transport.write(cached)
            return
        doc = completion_body(model, usage=None if usage is None else orjson.loads(usage))
        extra = []
        if gz:
            doc = gzip.compress(doc, mtime=0)
            extra.append(b"content-encoding: gzip\r\n")
        if chunked:
            half = len(doc) // 2
            extra.append(b"transfer-encoding: chunked\r\n")
            transport.write(_head(200, _JSON, extra, **style))
            for part in (doc[:half], doc[half:]):
                transport.write(b"%x\r\n%s\r\n" % (len(part), part))
            transport.write(b"0\r\n\r\n")
        else:
            extra.append(b"content-length: %d\r\n" % len(doc))
            transport.write(_head(200, _JSON, extra, **style) + doc)

    async def _stream(self, transport, model: str, chunks: int, include_usage: bool, delay_ms: int,
                      chunk_chars: int = 0, gate: str | None = None, style: dict | None = None) -> None:
        transport.write(_head(200, _SSE, [b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n"],
                              **(style or {})))
        sent = self.sent_at.setdefault(gate, []) if gate else None
        try:
            for i, event in enumerate(stream_events(model, chunks, include_usage, chunk_chars)):
                if delay_ms:
                    await asyncio.sleep(delay_ms / 1000)
                if gate and i:
                    try:
                        await asyncio.wait_for(self._gate(gate).acquire(), 5)
                    except asyncio.TimeoutError:
                        pass  # the client never saw the last event: send on, the test will say so
                if sent is not None:
                    sent.append(time.monotonic())
                if transport.is_closing():
                    self.streams_cut += 1
                    return
                transport.write(b"%x\r\n%s\r\n" % (len(event), event))
        except asyncio.CancelledError:
            self.streams_cut += 1
            raise
        transport.write(b"0\r\n\r\n")


async def run_forever(host: str, port: int) -> None:
    """Serve the mock provider until cancelled (``lectr mock-provider``)."""
    mock = MockProvider(record=False)
    await mock.start(host, port)
    print(f"mock provider on http://{host}:{mock.port}/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await mock.stop()




def main(argv: list[str] | None = None) -> None:
    """``python -m lectr.devtools.mock_provider [--host H] [--port P]``: the same as ``lectr mock-provider``."""
    import argparse

    import uvloop

    parser = argparse.ArgumentParser(prog="python -m lectr.devtools.mock_provider",
                                     description="Serve the mock OpenAI-compatible provider "
                                                 "(as `lectr mock-provider`).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args(argv)
    try:
        uvloop.run(run_forever(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
