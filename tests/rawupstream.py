"""A raw-socket HTTP/1.1 "provider" that logs every request exactly as it arrived, for tests.

Unlike the mock provider it parses nothing it does not have to: each request's request line,
header lines and body are kept as raw bytes, in arrival order, with the connection they came
on. What it answers is scripted per request by a ``behave(request)`` function returning bytes
to send (the connection stays open), or ``RESET`` (read the request whole, then reset the
connection with SO_LINGER 0), or ``CLOSE`` (close it without answering), or a callable that
takes the socket over (a slow stream, a WebSocket tunnel) and after which it is closed.

    with RawUpstream(behave) as upstream:
        ... point Lectr's LECTR_UPSTREAM_OPENAI at upstream.url("/v1") ...
        assert upstream.requests[0].target == b"/v1/chat/completions"
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass
from typing import Callable

RESET = object()
CLOSE = object()


@dataclass(frozen=True)
class RawRequest:
    """One request as it reached the upstream: bytes as sent, and which connection carried it."""

    connection: int  # 0, 1, 2… in the order connections were accepted
    index_on_connection: int  # 0 for the first request on its connection
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw: bytes

    def header(self, name: bytes) -> bytes | None:
        name = name.lower()
        values = [v for k, v in self.headers if k.lower() == name]
        return values[-1] if values else None

    def header_names(self) -> list[bytes]:
        return [k.lower() for k, _ in self.headers]


def json_reply(body: bytes = b'{"ok":true}', status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        status, len(body), body)


def answer_all(request: RawRequest) -> bytes:
    """The default behaviour: a small JSON 200 to everything, keep-alive."""
    return json_reply()


class RawUpstream:
    """The server, on 127.0.0.1 and a free port, one thread per connection."""

    def __init__(self, behave: Callable[[RawRequest], object] = answer_all) -> None:
        self.behave = behave
        self.requests: list[RawRequest] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._open: list[socket.socket] = []
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, name="raw-upstream", daemon=True)

    def url(self, prefix: str = "/v1") -> str:
        return f"http://127.0.0.1:{self.port}{prefix}"

    def start(self) -> RawUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped = True
        try:
            self._sock.close()
        except OSError:
            pass
        with self._lock:
            for conn in self._open:
                try:
                    conn.close()
                except OSError:
                    pass

    def __enter__(self) -> RawUpstream:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def bodies(self) -> list[bytes]:
        with self._lock:
            return [r.body for r in self.requests]

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                number = self.connections
                self.connections += 1
                self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        buffer = b""
        index = 0
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                method, target, _ = lines[0].split(b" ", 2)
                headers = [tuple(part.strip() for part in line.split(b":", 1)) for line in lines[1:]]
                length = 0
                for name, value in headers:
                    if name.lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                body, buffer = buffer[:length], buffer[length:]
                request = RawRequest(number, index, method, target, headers, body, head + b"\r\n\r\n" + body)
                index += 1
                with self._lock:
                    self.requests.append(request)
                action = self.behave(request)
                if action is RESET:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if action is CLOSE:
                    return
                if isinstance(action, (bytes, bytearray)):
                    conn.sendall(action)
                else:  # a callable taking the socket over (streams, tunnels); then it closes
                    action(conn)
                    return
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass
