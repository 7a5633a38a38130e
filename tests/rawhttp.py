"""Raw HTTP/1.1 exchanges that keep every byte the peer sent, framing included.

h11 only tells where the response ends; what a test compares is the bytes themselves, so a
re-cased header, a rewritten reason phrase or re-chunked body cannot hide behind a parser.
"""

from __future__ import annotations

import socket
import time

import h11


def raw_request(method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: lectr", *(f"{k}: {v}" for k, v in headers)]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class RawResponse:
    """Every byte of one response, and the monotonic time each of its reads arrived."""

    def __init__(self) -> None:
        self.raw = b""
        self.reads: list[tuple[float, bytes]] = []
        self.events: list = []  # h11 events, to locate the head, body and chunks

    @property
    def head(self) -> bytes:
        return self.raw[: self.raw.index(b"\r\n\r\n") + 4]

    @property
    def status_line(self) -> bytes:
        return self.raw[: self.raw.index(b"\r\n")]


def exchange(port: int, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"",
             on_read=None, timeout: float = 20) -> RawResponse:
    """Send one request on a new connection; read its whole response as raw bytes.

    ``on_read(response, data)`` is called after each ``recv`` (before the next), e.g. to let a
    gated mock send its next event.
    """
    response = RawResponse()
    parser = h11.Connection(h11.CLIENT)
    parser.send(h11.Request(method=method, target=target, headers=[("Host", "lectr")]))
    parser.send(h11.EndOfMessage())
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(raw_request(method, target, headers, body))
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                response.raw += data
                response.reads.append((time.monotonic(), data))
                parser.receive_data(data)
                if on_read is not None and data:
                    on_read(response, data)
                continue
            response.events.append(event)
            if isinstance(event, h11.EndOfMessage):
                return response
            if isinstance(event, h11.ConnectionClosed):
                raise AssertionError(f"connection closed mid-response after {response.raw!r}")


def transfer_coding(head: bytes) -> bytes | None:
    """The value of the head's Transfer-Encoding field (names compared case-blind), if any."""
    lines = [line for line in head.split(b"\r\n") if line.lower().startswith(b"transfer-encoding:")]
    assert len(lines) <= 1
    return lines[0].split(b":", 1)[1].strip() if lines else None


def end_to_end_head(head: bytes) -> bytes:
    """The head less its Transfer-Encoding line: hop-by-hop, which Lectr writes for its own hop
    (README: hop-by-hop headers are removed; the body keeps its chunked framing)."""
    return b"\r\n".join(line for line in head.split(b"\r\n") if not line.lower().startswith(b"transfer-encoding:"))
