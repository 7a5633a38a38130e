"""Raw-socket HTTP/1.1 exchanges judged by h11, a strict, independent implementation."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import h11


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    informational: list[int] = field(default_factory=list)
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def connect(port: int, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_replies(sock: socket.socket, methods: list[str]) -> list[Reply]:
    """Read one response per request method sent, in order; h11 rejects any framing error."""
    conn = h11.Connection(h11.CLIENT)
    replies: list[Reply] = []
    for method in methods:
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "lectr")]))
        conn.send(h11.EndOfMessage())
        reply: Reply | None = None
        informational: list[int] = []
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.InformationalResponse):
                informational.append(event.status_code)
            elif isinstance(event, h11.Response):
                reply = Reply(event.status_code, {k.decode().lower(): v.decode() for k, v in event.headers},
                              b"", informational, list(event.headers))
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                reply.body = bytes(body)
                replies.append(reply)
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError("connection closed before the response was complete")
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            break
        conn.start_next_cycle()
    return replies


def exchange(port: int, raw: bytes, methods: list[str] | None = None) -> list[Reply]:
    """Send ``raw`` on a new connection and read one reply per entry of ``methods``."""
    with connect(port) as sock:
        sock.sendall(raw)
        return read_replies(sock, methods or ["GET"])


def is_closed(sock: socket.socket, timeout: float = 5) -> bool:
    """True when the peer closes the connection (EOF or reset) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def request(method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"",
            version: str = "1.1") -> bytes:
    """Bytes of one HTTP request with a Content-Length body (when there is a body)."""
    lines = [f"{method} {target} HTTP/{version}", "Host: lectr"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
